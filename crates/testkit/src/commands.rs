//! Writing events through the command service, as tests and benchmarks do.

use std::sync::Arc;

use commands::{CommandService, NewMessage, RequestMeta};

/// Request metadata for commands sent straight to the service in tests.
pub fn meta(tenant: &str) -> RequestMeta {
    RequestMeta {
        tenant_id: tenant.into(),
        user_id: "writer".into(),
        reach: commands::Reach::Own,
        correlation_id: format!("corr-{}", uuid::Uuid::new_v4()),
        causation_id: format!("cause-{}", uuid::Uuid::new_v4()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: None,
        idempotency: None,
    }
}

/// Request metadata of an admin of `tenant` (subject `ada`), who sees the whole tenant.
pub fn admin_meta(tenant: &str) -> RequestMeta {
    RequestMeta {
        user_id: "ada".into(),
        reach: commands::Reach::Tenant,
        ..meta(tenant)
    }
}

/// Starts `n` conversations of `tenant` titled `c0`, `c1`, ...; returns their ids.
pub async fn start_conversations(
    service: &CommandService,
    tenant: &str,
    n: usize,
) -> Vec<uuid::Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let started = service
            .start_conversation(format!("c{i}"), Default::default(), &meta(tenant))
            .await
            .expect("start conversation");
        ids.push(started.aggregate_id);
    }
    ids
}

/// Sends the user messages `m<n>` for each `n` in `range`, message `n` to
/// `ids[n % ids.len()]`, from `tasks` concurrent writers. Returns once all are accepted.
pub async fn send_messages(
    service: Arc<CommandService>,
    tenant: &str,
    ids: Arc<Vec<uuid::Uuid>>,
    range: std::ops::Range<usize>,
    tasks: usize,
) {
    let writers: Vec<_> = (0..tasks)
        .map(|t| {
            let (service, ids, tenant) = (service.clone(), ids.clone(), tenant.to_owned());
            let range = range.clone();
            tokio::spawn(async move {
                for n in range.skip(t).step_by(tasks) {
                    let message = user_message(&format!("m{n}"));
                    service
                        .send_message(ids[n % ids.len()], message, None, &meta(&tenant))
                        .await
                        .expect("send message");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
}

/// A user message with `content`.
pub fn user_message(content: &str) -> NewMessage {
    NewMessage::new(schemas::Role::User, content)
}

/// A whole conversation of `tenant`: started (titled `c<n>`), one user message, a summary
/// generated, ended. Returns its id.
pub async fn summarised_and_ended(service: &CommandService, tenant: &str, n: usize) -> uuid::Uuid {
    let id = service
        .start_conversation(format!("c{n}"), Default::default(), &meta(tenant))
        .await
        .expect("start conversation")
        .aggregate_id;
    service
        .send_message(id, user_message("hello"), None, &meta(tenant))
        .await
        .expect("send message");
    service
        .generate_document(id, schemas::DocumentKind::Summary, None, &meta(tenant))
        .await
        .expect("generate document");
    service
        .end_conversation(id, None, None, &meta(tenant))
        .await
        .expect("end conversation");
    id
}

/// Adds a file to `tenant`'s knowledge base, as an admin would.
pub async fn add_knowledge(
    service: &CommandService,
    tenant: &str,
    title: &str,
    content_type: &str,
    bytes: &[u8],
) -> commands::Accepted {
    let mut meta = meta(tenant);
    meta.reach = commands::Reach::Tenant;
    let upload = commands::Upload {
        title: title.into(),
        content_type: content_type.into(),
        bytes: Arc::from(bytes),
    };
    service
        .add_knowledge(upload, &meta)
        .await
        .expect("add a knowledge document")
}
