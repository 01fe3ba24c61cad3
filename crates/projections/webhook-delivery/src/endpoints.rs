//! Which endpoints an event goes to: those of its tenant that were subscribed to its type
//! when it was committed. Endpoint events and the events they subscribe to travel on
//! different topics, so the fan-out cannot rely on having seen the subscription first;
//! it reads the endpoints' history from the event store instead and folds it up to each
//! event's commit position. When an event at position P is on Kafka, every event before
//! P is committed (the relay publishes nothing past a running transaction), so reading
//! the endpoint events up to P sees all that precede it.

use std::collections::HashMap;

use domain::{WebhookEndpoint, WebhookEvent};
use event_store::log;
use event_store::{StoredEvent, Stream, StreamError};
use schemas::{AggregateKind, CommitPosition};
use sqlx::PgConnection;
use uuid::Uuid;

/// One endpoint event and where it sits.
#[derive(Debug, Clone)]
struct Entry {
    position: CommitPosition,
    event: WebhookEvent,
}

/// Every endpoint event read so far, per tenant and endpoint, in committed order.
#[derive(Debug, Default)]
pub struct Book {
    /// Everything up to here has been read.
    read_up_to: CommitPosition,
    tenants: HashMap<String, HashMap<Uuid, Vec<Entry>>>,
}

fn decode(stored: &StoredEvent) -> Option<(String, Uuid, WebhookEvent)> {
    let tenant = stored.meta("tenant_id")?.to_owned();
    let endpoint: Uuid = stored.aggregate_id.parse().ok()?;
    let event = WebhookEvent::try_from(stored.event().ok()?).ok()?;
    Some((tenant, endpoint, event))
}

impl Book {
    /// Reads the endpoint events up to `until` that were not read yet.
    pub async fn catch_up(
        &mut self,
        db: &mut PgConnection,
        until: CommitPosition,
    ) -> Result<(), sqlx::Error> {
        const PAGE: i64 = 1_000;
        while self.read_up_to < until {
            let page = log::webhook_endpoint_events(&mut *db, self.read_up_to, until, PAGE).await?;
            for stored in &page {
                match decode(stored) {
                    // Reports and redeliveries change no subscription.
                    Some((
                        _,
                        _,
                        WebhookEvent::WebhookMessageFailed(_)
                        | WebhookEvent::WebhookRedeliveryRequested(_),
                    )) => {}
                    Some((tenant, endpoint, event)) => {
                        self.tenants
                            .entry(tenant)
                            .or_default()
                            .entry(endpoint)
                            .or_default()
                            .push(Entry {
                                position: stored.position,
                                event,
                            });
                    }
                    None => tracing::warn!(
                        event_id = %stored.event_id,
                        "a webhook endpoint event does not decode; ignored"
                    ),
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => self.read_up_to = last.position,
                _ => self.read_up_to = until,
            }
        }
        Ok(())
    }

    /// The tenant's endpoints as they were just before `at`, with their ids.
    pub fn endpoints_before(
        &self,
        tenant: &str,
        at: CommitPosition,
    ) -> Vec<(Uuid, WebhookEndpoint)> {
        let Some(endpoints) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        endpoints
            .iter()
            .map(|(id, entries)| {
                let state = WebhookEndpoint::fold(
                    entries
                        .iter()
                        .take_while(|e| e.position < at)
                        .map(|e| e.event.clone()),
                );
                (*id, state)
            })
            .collect()
    }
}

/// One endpoint as it is now, folded from its stream (what the dispatcher sends with).
pub async fn current(
    store: &event_store::Reader,
    endpoint_id: Uuid,
) -> Result<WebhookEndpoint, StreamError> {
    Stream::new(store, AggregateKind::WebhookEndpoint, endpoint_id)
        .fold()
        .await
}
