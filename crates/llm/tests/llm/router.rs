//! The router against real providers: fallback, retries honouring `Retry-After`, every
//! provider down, circuit breakers, the daily token budget, the offline default.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use llm::breaker::{BreakerSettings, BreakerState};
use llm::budget::InMemoryBudget;
use llm::clock::ManualClock;
use llm::config::LlmConfig;
use llm::router::{BuildError, Outcome, ProviderPolicy, RouteError, Router, RouterSettings};
use llm::{ChatProvider, ContextItem, ProviderError};
use uuid::Uuid;

use crate::server::{Reply, Server, openai_answer};
use crate::{ends, openai, question};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

fn settings(failures: u32) -> RouterSettings {
    RouterSettings {
        breaker: BreakerSettings {
            failures,
            cooldown: Duration::from_secs(30),
        },
        max_retry_after: Duration::from_secs(10),
        backoff_first: FIRST_BACKOFF,
        backoff_max: Duration::from_secs(1),
    }
}

fn policy(retries: u32) -> ProviderPolicy {
    ProviderPolicy {
        timeout: Duration::from_millis(300),
        retries,
        ..ProviderPolicy::default()
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at(
        Utc.with_ymd_and_hms(2026, 3, 1, 15, 0, 0).unwrap(),
    ))
}

/// Route `reply`: `a` (with `retries`), then `b`.
fn two_providers(
    a: &Server,
    b: &Server,
    retries: u32,
    failures: u32,
    clock: &Arc<ManualClock>,
) -> Router {
    let a: Arc<dyn ChatProvider> = Arc::new(openai("a", a, None, Duration::from_secs(5)));
    let b: Arc<dyn ChatProvider> = Arc::new(openai("b", b, None, Duration::from_secs(5)));
    Router::builder(settings(failures))
        .provider(a, policy(retries))
        .provider(b, policy(0))
        .route("reply", ["a", "b"])
        .clock(clock.clone())
        .build()
        .expect("router")
}

fn outcomes(attempts: &[llm::router::Attempt]) -> Vec<(String, Outcome)> {
    attempts
        .iter()
        .map(|a| (a.provider.clone(), a.outcome.clone()))
        .collect()
}

#[tokio::test]
async fn the_route_falls_back_to_the_next_provider_on_500_a_timeout_and_a_long_429() {
    let b = Server::start(Reply::Json(openai_answer("from b", 10, 3))).await;
    for (reply, error, sleeps) in [
        (
            Reply::Status(500),
            ProviderError::unavailable("the provider answered 500 Internal Server Error"),
            1,
        ),
        (
            Reply::Stall,
            ProviderError::TimedOut {
                after: Duration::from_millis(300),
            },
            1,
        ),
        (
            // Asked to wait longer than allowed: straight to the next provider.
            Reply::RetryAfter(429, "3600"),
            ProviderError::Unavailable {
                reason: "the provider answered 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(3600)),
            },
            0,
        ),
    ] {
        let a = Server::start(reply.clone()).await;
        let clock = clock();
        let router = two_providers(&a, &b, 1, 5, &clock);
        let routed = ends(router.route("reply", "t1", &question("hi")))
            .await
            .expect("the second provider answered");
        assert_eq!(routed.completion.text, "from b");
        assert_eq!(routed.completion.provider, "b");
        let tries_of_a = if sleeps == 0 { 1 } else { 2 };
        let mut want = vec![("a".to_owned(), Outcome::Failed(error.clone())); tries_of_a];
        want.push(("b".to_owned(), Outcome::Completed));
        assert_eq!(outcomes(&routed.attempts), want, "{reply:?}");
        assert_eq!(a.calls(), tries_of_a, "{reply:?}");
        let slept = clock.slept();
        assert_eq!(slept.len(), sleeps, "{reply:?}");
        for s in slept {
            assert!(s >= FIRST_BACKOFF / 2 && s <= FIRST_BACKOFF, "{s:?}");
        }
    }
}

#[tokio::test]
async fn retries_honour_retry_after_and_recover_on_the_same_provider() {
    let a = Server::start(Reply::Json(openai_answer("from a", 10, 3))).await;
    let b = Server::start(Reply::Json(openai_answer("from b", 10, 3))).await;
    a.script([Reply::RetryAfter(429, "2"), Reply::Status(503)]);
    let clock = clock();
    let router = two_providers(&a, &b, 2, 5, &clock);
    let routed = ends(router.route("reply", "t1", &question("hi")))
        .await
        .expect("answered");
    assert_eq!(routed.completion.text, "from a");
    assert_eq!((a.calls(), b.calls()), (3, 0));
    let kinds: Vec<bool> = routed
        .attempts
        .iter()
        .map(|x| x.outcome == Outcome::Completed)
        .collect();
    assert_eq!(kinds, [false, false, true]);
    let slept = clock.slept();
    assert_eq!(
        slept[0],
        Duration::from_secs(2),
        "Retry-After: 2 was honoured"
    );
    assert!(
        slept[1] >= FIRST_BACKOFF / 2 && slept[1] <= FIRST_BACKOFF,
        "{slept:?}"
    );
    assert_eq!(slept.len(), 2);
}

#[tokio::test]
async fn every_provider_down_is_all_failed_with_every_attempt() {
    let a = Server::start(Reply::Status(500)).await;
    let b = Server::start(Reply::Status(400)).await;
    let router = two_providers(&a, &b, 2, 10, &clock());
    let e = ends(router.route("reply", "t1", &question("hi")))
        .await
        .unwrap_err();
    let RouteError::AllFailed { route, attempts } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(route, "reply");
    let providers: Vec<&str> = attempts.iter().map(|x| x.provider.as_str()).collect();
    assert_eq!(providers, ["a", "a", "a", "b"], "a refusal is not retried");
    assert!(matches!(
        &attempts[3].outcome,
        Outcome::Failed(ProviderError::Rejected(_))
    ));
    assert_eq!((a.calls(), b.calls()), (3, 1));
    let message = e.to_string();
    assert!(
        message.contains("a: provider unavailable: the provider answered 500")
            && message.contains("b: provider refused the request: the provider answered 400"),
        "{message}"
    );
}

#[tokio::test]
async fn the_breaker_opens_so_no_call_reaches_the_provider_and_closes_after_the_cooldown() {
    let a = Server::start(Reply::Status(500)).await;
    let b = Server::start(Reply::Json(openai_answer("from b", 10, 3))).await;
    let clock = clock();
    let router = two_providers(&a, &b, 0, 2, &clock);
    let req = question("hi");
    for _ in 0..2 {
        ends(router.route("reply", "t1", &req))
            .await
            .expect("b answered");
    }
    assert_eq!(a.calls(), 2);
    assert!(matches!(
        router.breaker_state("a"),
        Some(BreakerState::Open { .. })
    ));
    for _ in 0..3 {
        let routed = ends(router.route("reply", "t1", &req))
            .await
            .expect("b answered");
        assert_eq!(routed.attempts[0].outcome, Outcome::CircuitOpen);
        assert_eq!(routed.completion.provider, "b");
    }
    assert_eq!(a.calls(), 2, "no call reached a while its breaker was open");

    // After the cooldown one trial goes through; a failed trial opens it again.
    clock.advance(Duration::from_secs(30));
    ends(router.route("reply", "t1", &req))
        .await
        .expect("b answered");
    assert_eq!(a.calls(), 3);
    ends(router.route("reply", "t1", &req))
        .await
        .expect("b answered");
    assert_eq!(a.calls(), 3, "open again after the failed trial");

    // a recovers: the next trial succeeds and closes the breaker.
    a.set_default(Reply::Json(openai_answer("from a", 10, 3)));
    clock.advance(Duration::from_secs(30));
    let routed = ends(router.route("reply", "t1", &req))
        .await
        .expect("a answered");
    assert_eq!(routed.completion.provider, "a");
    assert_eq!(
        router.breaker_state("a"),
        Some(BreakerState::Closed { failures: 0 })
    );
    ends(router.route("reply", "t1", &req))
        .await
        .expect("a answered");
    assert_eq!(a.calls(), 5);
}

#[tokio::test]
async fn a_spent_budget_refuses_before_any_call_and_says_when_it_resets() {
    let a = Server::start(Reply::Json(openai_answer("from a", 20, 15))).await;
    let clock = clock();
    let provider: Arc<dyn ChatProvider> = Arc::new(openai("a", &a, None, Duration::from_secs(5)));
    let router = Router::builder(settings(5))
        .provider(provider, policy(0))
        .route("reply", ["a"])
        .budget(Arc::new(InMemoryBudget::new(Some(30))))
        .clock(clock.clone())
        .build()
        .expect("router");
    let req = question("hi");
    ends(router.route("reply", "t1", &req))
        .await
        .expect("within budget");
    let e = ends(router.route("reply", "t1", &req)).await.unwrap_err();
    let RouteError::BudgetExhausted {
        tenant,
        limit,
        resets_at,
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!((tenant.as_str(), *limit), ("t1", 30));
    assert_eq!(
        *resets_at,
        Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
    );
    assert_eq!(
        e.to_string(),
        "tenant t1 has used its daily budget of 30 LLM tokens; it resets at 2026-03-02 00:00:00 UTC"
    );
    assert_eq!(a.calls(), 1, "refused before any provider was called");
    // Another tenant has its own budget; the next day t1 has its budget again.
    ends(router.route("reply", "t2", &req))
        .await
        .expect("t2 within budget");
    clock.advance(Duration::from_secs(9 * 3600));
    ends(router.route("reply", "t1", &req))
        .await
        .expect("a new day");
    assert_eq!(a.calls(), 3);
}

#[tokio::test]
async fn unknown_routes_and_inconsistent_routers_are_refused() {
    let router = LlmConfig::from_vars(Vec::<(String, String)>::new())
        .unwrap()
        .build()
        .unwrap();
    let e = router
        .route("summary", "t1", &question("hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RouteError::UnknownRoute(r) if r == "summary"),
        "{e:?}"
    );

    let local = || -> Arc<dyn ChatProvider> { Arc::new(llm::local::LocalProvider::new("local")) };
    let build = |b: llm::router::RouterBuilder| b.build().unwrap_err();
    assert_eq!(
        build(
            Router::builder(settings(5))
                .provider(local(), policy(0))
                .route("reply", ["gpt"])
        ),
        BuildError::UnknownProvider {
            route: "reply".into(),
            provider: "gpt".into()
        }
    );
    assert_eq!(
        build(
            Router::builder(settings(5))
                .provider(local(), policy(0))
                .provider(local(), policy(0))
        ),
        BuildError::DuplicateProvider("local".into())
    );
    assert_eq!(
        build(Router::builder(settings(5)).route("reply", Vec::<String>::new())),
        BuildError::EmptyRoute("reply".into())
    );
}

#[tokio::test]
async fn the_offline_default_answers_from_the_context_and_says_so() {
    let router = LlmConfig::from_vars(Vec::<(String, String)>::new())
        .unwrap()
        .build()
        .unwrap();
    let source = Uuid::from_u128(42);
    let mut req = question("How long do refunds take?");
    req.context = vec![ContextItem {
        source_id: source,
        title: "Refund policy".into(),
        text: "Refunds take 14 days. Shipping is free.".into(),
        score: 0.8,
    }];
    let first = router.route("reply", "t1", &req).await.expect("answered");
    let again = router
        .route("document", "t1", &req)
        .await
        .expect("answered");
    assert_eq!(first.completion.model, "local/extractive-v1");
    assert_eq!(first.completion.provider, "local");
    assert_eq!(first.completion.text, again.completion.text);
    assert!(
        first.completion.text.contains(&format!(
            "From \"Refund policy\" ({source}): Refunds take 14 days."
        )),
        "{}",
        first.completion.text
    );
    assert!(!first.completion.text.contains("Shipping"));
}

#[tokio::test]
async fn a_retry_after_pauses_that_provider_for_every_caller_and_no_other() {
    let a = Server::start(Reply::Json(openai_answer("from a", 10, 3))).await;
    let b = Server::start(Reply::Json(openai_answer("from b", 10, 3))).await;
    a.script([Reply::RetryAfter(429, "5")]);
    let clock = clock();
    let pa: Arc<dyn ChatProvider> = Arc::new(openai("a", &a, None, Duration::from_secs(5)));
    let pb: Arc<dyn ChatProvider> = Arc::new(openai("b", &b, None, Duration::from_secs(5)));
    let router = Router::builder(settings(100))
        .provider(pa, policy(0))
        .provider(pb, policy(0))
        .route("ra", ["a"])
        .route("rb", ["b"])
        .clock(clock.clone())
        .build()
        .expect("router");
    // The 429 fails this call (no retries) and pauses `a` for 5 s.
    let failed = ends(router.route("ra", "t1", &question("hi"))).await;
    assert!(failed.is_err(), "{failed:?}");
    // Another provider is not slowed down.
    let other = ends(router.route("rb", "t2", &question("hi")))
        .await
        .expect("b answers");
    assert_eq!(other.completion.text, "from b");
    assert!(clock.slept().is_empty(), "{:?}", clock.slept());
    // The next caller of `a`, whoever it is, waits out the pause before `a` sees it.
    let later = ends(router.route("ra", "t3", &question("hi")))
        .await
        .expect("a answers after its pause");
    assert_eq!(later.completion.text, "from a");
    assert_eq!(clock.slept(), vec![Duration::from_secs(5)]);
    assert_eq!(a.calls(), 2);
}

#[tokio::test]
async fn a_pause_longer_than_the_router_waits_sends_callers_to_the_next_provider() {
    let a = Server::start(Reply::Json(openai_answer("from a", 10, 3))).await;
    let b = Server::start(Reply::Json(openai_answer("from b", 10, 3))).await;
    a.script([Reply::RetryAfter(429, "3600")]);
    let clock = clock();
    let router = two_providers(&a, &b, 0, 100, &clock);
    let first = ends(router.route("reply", "t1", &question("hi")))
        .await
        .expect("b answers");
    assert_eq!(first.completion.text, "from b");
    // The next call does not even try `a`: it is paused for an hour.
    let second = ends(router.route("reply", "t1", &question("hi")))
        .await
        .expect("b answers");
    assert_eq!(second.completion.text, "from b");
    assert_eq!(a.calls(), 1);
    assert!(matches!(second.attempts[0].outcome, Outcome::Paused(_)));
}
