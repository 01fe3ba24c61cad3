//! The operators' console in a real browser (Debian's chromium, headless, through
//! chromedriver) against `dev/stack run`: sign in with a token, page through the event
//! stream and open an aggregate's history and state, search, read the relay's and the
//! projectors' status, and redeliver a webhook message to a real receiver. Screenshots
//! of each step go to `target/browser-screenshots/console/`.

use e2e::browser::Browser;
use e2e::caller::Caller;
use e2e::dev_stack::{DevStack, SECRET};
use platform::auth::Role;
use testkit::receiver::Receiver;
use testkit::stack::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_signs_in_pages_searches_reads_status_and_redelivers_in_a_browser() {
    let stack = DevStack::start(&[]).await;
    let (commands, queries) = (
        format!("http://{}", stack.commands),
        format!("http://{}", stack.queries),
    );
    let console = format!("http://{}", stack.console);
    // A receiver subscribed first, then conversations the assistant answers.
    let receiver = Receiver::start().await;
    let admin = Caller::new(SECRET.as_bytes(), "ada", &[Role::Admin]);
    admin.subscribe(&commands, &receiver.url).await;
    let ann = Caller::new(SECRET.as_bytes(), "ann", &[Role::Member]);
    for topic in ["launch budget", "hiring plan", "office move"] {
        let id = ann
            .start_and_ask(&commands, topic, &format!("What about the {topic}?"))
            .await;
        wait_until("the assistant to answer", || async {
            let (_, messages) = ann
                .get(format!("{queries}/v1/conversations/{id}/messages"))
                .await;
            messages["items"].as_array().is_some_and(|m| m.len() == 2)
        })
        .await;
    }

    // Only this origin: the page's policy, and nothing for a caller without a token.
    let page = reqwest::get(format!("{console}/console/"))
        .await
        .expect("the page");
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let anonymous = reqwest::get(format!("{console}/api/status"))
        .await
        .expect("an answer");
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);

    let browser = Browser::start("console").await;
    browser.goto(&format!("{console}/console/")).await;
    browser.screenshot("1-sign-in").await;
    let token = platform::auth::sign_hs256(
        SECRET.as_bytes(),
        "acme",
        "ops",
        &[Role::Admin, Role::Auditor],
        600,
    );
    browser.fill("#token", &token).await;
    browser.click("#sign-in").await;
    browser
        .wait_for(
            "the event stream",
            "return document.querySelectorAll('#events-rows tr').length > 0",
        )
        .await;
    browser.screenshot("2-events").await;

    // Pages of five: the next page starts after the first one's last event.
    browser
        .run("document.getElementById('page-size').value = '5'; return true")
        .await;
    browser.click("#events-filter button[type=submit]").await;
    browser
        .wait_for(
            "a page of five",
            "return document.querySelectorAll('#events-rows tr').length === 5",
        )
        .await;
    let first_page = browser
        .run("return [...document.querySelectorAll('#events-rows tr td:first-child')].map(td => td.textContent)")
        .await;
    browser.click("#events-next").await;
    browser
        .wait_for(
            "the second page",
            &format!(
                "const first = document.querySelector('#events-rows tr td'); return first !== null && !{first_page}.includes(first.textContent)"
            ),
        )
        .await;
    browser.screenshot("3-events-page-2").await;
    // One aggregate: its history and its state at the last version.
    browser.click(".aggregate-link").await;
    browser
        .wait_for(
            "the aggregate's state",
            "return document.getElementById('aggregate-state').textContent.includes('\"state\"')",
        )
        .await;
    // Compared with its first version: what changed since, field by field.
    browser
        .run("const c = document.getElementById('aggregate-compare'); c.value = '1'; c.dispatchEvent(new Event('change')); return true")
        .await;
    browser
        .wait_for(
            "the difference with version 1",
            "return [...document.querySelectorAll('#aggregate-diff tr')].some(tr => tr.textContent.startsWith('version'))",
        )
        .await;
    browser.screenshot("4-aggregate").await;

    // Search: hits with their scores.
    browser.click("nav button[data-tab=search]").await;
    browser.fill("#search-q", "launch budget").await;
    browser.click("#search-form button[type=submit]").await;
    browser.find(".hit").await;
    assert!(browser.text("#search-hits").await.contains("launch budget"));
    browser.screenshot("5-search").await;

    // Status: the relay and every projector.
    browser.click("nav button[data-tab=status]").await;
    browser
        .wait_for(
            "the status",
            &format!(
                "return document.querySelectorAll('#status-rows tr').length === {}",
                stack.projectors.len() + 1
            ),
        )
        .await;
    let status = browser.text("#status-rows").await;
    assert!(status.contains("relay active"), "{status}");
    browser.screenshot("6-status").await;

    // Webhooks: a delivered message sent again.
    browser.click("nav button[data-tab=webhooks]").await;
    browser.click(".endpoint-link").await;
    browser
        .wait_for(
            "a delivered message",
            "return [...document.querySelectorAll('#messages tr')].some(tr => tr.textContent.includes('delivered'))",
        )
        .await;
    let message = browser
        .run(
            "const tr = [...document.querySelectorAll('#messages tr')].find(tr => tr.textContent.includes('delivered'));
             const button = tr.querySelector('button.redeliver'); button.click(); return button.dataset.message",
        )
        .await;
    let message = message.as_str().expect("a message id").to_owned();
    wait_until("the receiver to get it again", || async {
        receiver.delivered_by("webhook-id").get(&message).copied() >= Some(2)
    })
    .await;
    browser.screenshot("7-redelivered").await;
}
