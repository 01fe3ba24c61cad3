//! The daily token budget in PostgreSQL: one budget per tenant for every replica.

use std::sync::Arc;

use assistant::budget::{PgBudget, migrate};
use chrono::NaiveDate;
use llm::budget::Budget;
use llm::clock::SystemClock;
use llm::config::LlmConfig;
use llm::router::RouteError;
use llm::{ChatMessage, ChatRequest, ContextItem};
use uuid::Uuid;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, d).expect("a date")
}

#[tokio::test]
async fn replicas_spend_from_one_budget_per_tenant_and_day() {
    let db = testkit::env::database().await;
    migrate(&db.pool).await.expect("migrate");
    let (a, b) = (
        PgBudget::new(db.pool.clone(), Some(100)),
        PgBudget::new(db.pool.clone(), Some(100)),
    );
    a.spend("acme", day(2), 60).await.expect("spend");
    let seen = b
        .remaining("acme", day(2))
        .await
        .expect("read")
        .expect("limited");
    assert_eq!(
        (seen.spent, seen.remaining()),
        (60, 40),
        "the other replica sees it"
    );
    b.spend("acme", day(2), 50).await.expect("spend");
    let after = a
        .remaining("acme", day(2))
        .await
        .expect("read")
        .expect("limited");
    assert_eq!((after.spent, after.remaining()), (110, 0));
    let other = a
        .remaining("globex", day(2))
        .await
        .expect("read")
        .expect("limited");
    assert_eq!(other.spent, 0, "another tenant's budget is its own");
    let tomorrow = a
        .remaining("acme", day(3))
        .await
        .expect("read")
        .expect("limited");
    assert_eq!(tomorrow.spent, 0, "a new day, a new budget");
    let unlimited = PgBudget::new(db.pool.clone(), None);
    unlimited.spend("acme", day(2), 1_000).await.expect("spend");
    assert_eq!(
        unlimited.remaining("acme", day(2)).await.expect("read"),
        None
    );
    assert_eq!(
        a.remaining("acme", day(2))
            .await
            .expect("read")
            .map(|x| x.spent),
        Some(110),
        "without a limit nothing is counted"
    );
}

#[tokio::test]
async fn a_budget_spent_through_one_router_refuses_the_next_call_on_another() {
    let db = testkit::env::database().await;
    migrate(&db.pool).await.expect("migrate");
    let config = LlmConfig::from_vars([("LLM_PROVIDERS", "local")]).expect("settings");
    let router = |pool: sqlx::PgPool| {
        config
            .build_with(
                Arc::new(PgBudget::new(pool, Some(5))),
                Arc::new(SystemClock),
            )
            .expect("router")
    };
    let (first, second) = (router(db.pool.clone()), router(db.pool.clone()));
    let request = ChatRequest {
        messages: vec![ChatMessage::user("when do we ship to the harbour?")],
        max_tokens: None,
        temperature: None,
        context: vec![ContextItem {
            source_id: Uuid::nil(),
            title: "Plan".into(),
            text: "We ship to the harbour in May, by truck, on a Tuesday.".into(),
            score: 0.9,
        }],
    };
    first
        .route("reply", "acme", &request)
        .await
        .expect("the first call fits the budget");
    match second.route("reply", "acme", &request).await {
        Err(RouteError::BudgetExhausted { tenant, limit, .. }) => {
            assert_eq!((tenant.as_str(), limit), ("acme", 5));
        }
        other => panic!("expected the budget to refuse, got {other:?}"),
    }
    second
        .route("reply", "globex", &request)
        .await
        .expect("another tenant still has its budget");
}
