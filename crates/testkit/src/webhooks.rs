//! Webhook settings for tests: one sealing key per test process, and the address rules
//! that let deliveries reach a receiver on loopback over plain http (never the default).

use std::sync::{Arc, LazyLock};

use ::commands::WebhookSettings;
use ::webhooks::sealed::Sealer;
use ::webhooks::ssrf::Guard;

/// The sealing key, in `WEBHOOK_SECRET_KEY`'s form (to hand to a service under test).
pub static KEY: LazyLock<String> =
    LazyLock::new(|| Sealer::generate_key().expect("randomness for a test key"));

/// What command-api and the delivery service get in tests.
pub fn settings() -> WebhookSettings {
    WebhookSettings {
        sealer: Arc::new(Sealer::from_keys(&KEY).expect("the test key")),
        guard: Guard {
            allow_loopback: true,
            allow_http: true,
        },
    }
}
