//! The command API over HTTP on loopback, in front of a fresh [`Stack`] (database, topic
//! prefix, command service) of the stack `dev/stack test` provides.

use std::ops::Deref;

use command_api::http::{AppState, router};
use testkit::Stack;
use tokio::task::JoinHandle;

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub stack: Stack,
    server: JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Deref for TestApp {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let stack = Stack::new().await;
        let limits = platform::http::HttpLimits {
            header_read: std::time::Duration::from_secs(10),
            request: std::time::Duration::from_secs(30),
            body: command_api::http::transport_body_limit(&stack.service),
        };
        let app = router(AppState {
            service: stack.service.clone(),
            auth: testkit::tokens::authenticator(),
            relay: None,
            relay_name: "test".into(),
            edge: platform::edge::EdgeConfig::permissive(),
        });
        let (base, server) = testkit::serve_with(app, limits).await;
        TestApp {
            base,
            stack,
            server,
        }
    }
}
