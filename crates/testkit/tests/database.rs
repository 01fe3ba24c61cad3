//! The test environment hands each test its own, empty PostgreSQL database.

use testkit::env as testenv;

#[tokio::test]
async fn each_test_gets_its_own_empty_database() {
    let a = testenv::database().await;
    let b = testenv::database().await;
    assert_ne!(a.name, b.name);
    sqlx::query("CREATE TABLE marker (id int)")
        .execute(&a.pool)
        .await
        .expect("create table in a");
    let (in_b,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'marker'",
    )
    .fetch_one(&b.pool)
    .await
    .expect("query b");
    assert_eq!(in_b, 0, "b does not see a's tables");
    let (version,): (i32,) = sqlx::query_as("SELECT current_setting('server_version_num')::int")
        .fetch_one(&a.pool)
        .await
        .expect("version");
    assert!(version >= 150000, "PostgreSQL 15 or newer, got {version}");
}
