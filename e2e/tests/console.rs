//! The operators' console in a real browser (Debian's chromium, headless, through
//! chromedriver) against `dev/stack run` with a model that streams its answers: sign in
//! with a token, page through the event stream and open an aggregate's history and state,
//! watch a reply stream in, search, read the relay's and the projectors' status, re-drive
//! an event a projection parked, redeliver a webhook message to a real receiver, upload
//! and remove a knowledge document, and read the analytics charts. Screenshots of each
//! step go to `target/browser-screenshots/console/`.

use e2e::browser::Browser;
use e2e::caller::Caller;
use e2e::dev_stack::{DevStack, SECRET};
use platform::auth::Role;
use testkit::chat_server::ChatServer;
use testkit::receiver::Receiver;
use testkit::stack::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_signs_in_pages_searches_reads_status_and_redelivers_in_a_browser() {
    // A model that streams each answer in 20 pieces, 50 ms apart.
    let llm = ChatServer::start().await;
    llm.set_chunks(20);
    llm.set_latency(std::time::Duration::from_millis(50));
    let stack = DevStack::start(&[
        ("LLM_PROVIDERS", "primary"),
        ("LLM_PRIMARY_KIND", "openai"),
        ("LLM_PRIMARY_URL", llm.base_url.as_str()),
        ("LLM_PRIMARY_MODEL", "gpt-test"),
    ])
    .await;
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

    // A conversation live: a member asks while the console watches, and the reply
    // arrives piece by piece before it is one message.
    let live = ann.start(&commands, "Watched live").await;
    browser.click("nav button[data-tab=conversations]").await;
    let link = format!(".conversation-link[data-id='{live}']");
    browser
        .wait_for(
            "the conversation listed",
            &format!("const found = document.querySelector(\"{link}\") !== null; if (!found) loadConversations(); return found"),
        )
        .await;
    browser.click(&link).await;
    browser
        .wait_for(
            "the stream open",
            "return Number(document.getElementById('conversation').dataset.events || 0) > 0",
        )
        .await;
    let question = "When is the launch of the console planned";
    ann.ask(&commands, &live, question).await;
    browser
        .wait_for(
            "the reply arriving",
            "return !document.getElementById('live-reply').hidden",
        )
        .await;
    browser.screenshot("5-reply-streaming").await;
    browser
        .wait_for(
            "the reply's message",
            "return document.querySelector('#conversation-messages li[data-role=assistant]') !== null",
        )
        .await;
    let reply = browser
        .run("const li = document.querySelector('#conversation-messages li[data-role=assistant]'); return [li.dataset.pieces || '0', li.querySelector('.content').textContent]")
        .await;
    assert_eq!(reply[0], "20", "every piece was shown as it came: {reply}");
    assert_eq!(reply[1], format!("Answer: {question}"), "{reply}");
    let shown = browser.text("#conversation-messages").await;
    assert!(shown.contains(question), "{shown}");
    browser.screenshot("6-reply-done").await;

    // Search: hits with their scores.
    browser.click("nav button[data-tab=search]").await;
    browser.fill("#search-q", "launch budget").await;
    browser.click("#search-form button[type=submit]").await;
    browser.find(".hit").await;
    assert!(browser.text("#search-hits").await.contains("launch budget"));
    browser.screenshot("7-search").await;

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
    browser.screenshot("8-status").await;

    // A parked event: the read model refuses one title (a fault fixed later), the event
    // is parked, the fault is fixed, and the console's re-drive applies it.
    let db = sqlx::PgPool::connect(&stack.stack_env("DATABASE_URL"))
        .await
        .expect("the stack's database");
    let schema: String =
        sqlx::query_scalar("SELECT schema_name FROM projections WHERE name = 'read_model'")
            .fetch_one(&db)
            .await
            .expect("the read model's live schema");
    sqlx::query(&format!(
        "ALTER TABLE {schema}.conversations ADD CONSTRAINT refused_in_a_test CHECK (title <> 'Parked on purpose')"
    ))
    .execute(&db)
    .await
    .expect("a fault in the read model");
    let parked = ann.start(&commands, "Parked on purpose").await;
    let redrive = "button.redrive-projection[data-projection=read_model]";
    // The read model's re-drive button as `enabled` says (it is enabled while events are
    // parked), the status read again until it is.
    let button = |enabled: bool| {
        format!(
            "const b = document.querySelector('{redrive}'); const seen = b !== null && b.disabled === {}; if (!seen) loadStatus(); return seen",
            !enabled
        )
    };
    browser
        .wait_for("the read model's parked event", &button(true))
        .await;
    let status = browser.text("#status-rows").await;
    assert!(status.contains("1 events parked"), "{status}");
    browser.screenshot("9-parked").await;
    sqlx::query(&format!(
        "ALTER TABLE {schema}.conversations DROP CONSTRAINT refused_in_a_test"
    ))
    .execute(&db)
    .await
    .expect("the fault fixed");
    browser.click(redrive).await;
    wait_until("the parked conversation applied", || async {
        ann.get(format!("{queries}/v1/conversations/{parked}"))
            .await
            .0
            .is_success()
    })
    .await;
    browser.wait_for("nothing parked", &button(false)).await;
    let note = browser.text("#status-note").await;
    assert!(note.contains("Re-drive of read_model requested"), "{note}");
    browser.screenshot("10-redriven").await;

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
    browser.screenshot("11-redelivered").await;

    // The knowledge base: a file uploaded, listed, and removed.
    let file = std::env::temp_dir().join(format!("console-handbook-{}.md", std::process::id()));
    std::fs::write(&file, "# Handbook\n\nRefunds take five working days.\n").expect("a file");
    browser.click("nav button[data-tab=knowledge]").await;
    browser.fill("#knowledge-title", "Console handbook").await;
    browser.upload("#knowledge-file", &file).await;
    browser.click("#knowledge-form button[type=submit]").await;
    browser
        .wait_for(
            "the document listed",
            "return document.getElementById('knowledge-rows').textContent.includes('Console handbook')",
        )
        .await;
    let listed = browser.text("#knowledge-rows").await;
    assert!(listed.contains("text/markdown"), "{listed}");
    browser.screenshot("12-knowledge").await;
    browser
        .run("[...document.querySelectorAll('#knowledge-rows tr')].find(tr => tr.textContent.includes('Console handbook')).querySelector('button.remove-knowledge').click(); return true")
        .await;
    browser
        .wait_for(
            "the document gone",
            "return document.getElementById('knowledge-note').textContent.startsWith('Removed') && !document.getElementById('knowledge-rows').textContent.includes('Console handbook')",
        )
        .await;
    let _ = std::fs::remove_file(&file);

    // Analytics: a chart per metric, with bars for today's messages.
    browser.click("nav button[data-tab=analytics]").await;
    browser
        .wait_for(
            "the charts",
            "return document.querySelectorAll('#charts figure.chart rect').length > 0",
        )
        .await;
    let metrics = browser
        .run("return [...document.querySelectorAll('#charts figure.chart')].map(f => f.dataset.metric)")
        .await;
    assert!(
        metrics.as_array().is_some_and(|m| !m.is_empty()),
        "{metrics}"
    );
    browser.screenshot("13-analytics").await;
}
