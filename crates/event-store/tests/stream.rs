//! Reading one aggregate's stream (`event_store::Stream`) against a real PostgreSQL: page
//! by page however long it is, a range of it, scoped to its tenant, and a row without a
//! tenant refused as corrupt.

use event_store::{Stream, StreamError};
use schemas::AggregateKind;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Appends events `first..=last` of conversation `id` with `metadata`.
async fn append(pool: &PgPool, id: Uuid, first: i64, last: i64, metadata: serde_json::Value) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'conversation', $1, n, 'Probe', '1', jsonb_build_object('n', n), $2
         FROM generate_series($3::bigint, $4::bigint) AS n",
    )
    .bind(id.to_string())
    .bind(metadata)
    .bind(first)
    .bind(last)
    .execute(pool)
    .await
    .expect("append");
}

/// Every sequence the stream yields, page by page, and the pages' sizes.
async fn read(mut stream: Stream<'_>) -> (Vec<i64>, Vec<usize>) {
    let (mut sequences, mut pages) = (Vec::new(), Vec::new());
    while let Some(page) = stream.next_page().await.expect("a page") {
        pages.push(page.len());
        for recorded in page {
            let payload: serde_json::Value = recorded.decode().expect("the payload");
            assert_eq!(payload["n"], recorded.sequence());
            assert_eq!(recorded.tenant(), "acme");
            sequences.push(recorded.sequence());
        }
    }
    (sequences, pages)
}

#[tokio::test]
async fn a_stream_reads_page_by_page_within_its_range_and_its_tenant() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    let pool = &db.pool;
    let id = Uuid::new_v4();
    let total = event_store::stream::PAGE * 2 + 7;
    append(pool, id, 1, total, json!({"tenant_id": "acme"})).await;
    let reader = event_store::Reader::plain(pool.clone());
    let stream = || Stream::new(&reader, AggregateKind::Conversation, id);

    let (sequences, pages) = read(stream()).await;
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
    let page = event_store::stream::PAGE as usize;
    assert_eq!(pages, [page, page, 7]);

    let (sequences, _) = read(stream().sequences(498..=503)).await;
    assert_eq!(sequences, [498, 499, 500, 501, 502, 503]);
    let (sequences, _) = read(stream().of_tenant("acme").sequences(total - 1..=i64::MAX)).await;
    assert_eq!(sequences, [total - 1, total]);
    // Another tenant's aggregate reads as one that does not exist.
    assert_eq!(
        read(stream().of_tenant("globex")).await.0,
        Vec::<i64>::new()
    );
    assert!(
        stream()
            .of_tenant("globex")
            .first()
            .await
            .expect("read")
            .is_none()
    );
    let first = stream().first().await.expect("read").expect("an event");
    assert_eq!(
        (first.sequence(), first.kind, first.id),
        (1, AggregateKind::Conversation, id)
    );
    // Nothing there: no page.
    let missing = Stream::new(&reader, AggregateKind::Conversation, Uuid::new_v4());
    assert_eq!(read(missing).await.0, Vec::<i64>::new());

    // A row without a tenant is corrupt, not another tenant's or nobody's.
    let orphan = Uuid::new_v4();
    append(pool, orphan, 1, 1, json!({})).await;
    let refused = Stream::new(&reader, AggregateKind::Conversation, orphan)
        .next_page()
        .await
        .expect_err("refused");
    assert!(
        matches!(&refused, StreamError::Corrupt { sequence: 1, .. }),
        "{refused}"
    );
}
