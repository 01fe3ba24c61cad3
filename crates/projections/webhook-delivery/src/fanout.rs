//! The fan-out projection: for each event of a tenant, one message per endpoint that was
//! subscribed to its type when it was committed, written with the projection's progress
//! in one transaction (so an event fans out exactly once however often it is delivered).
//! It also applies the endpoint events that change what is due: enabling resumes paused
//! messages, deleting drops undelivered ones, a redelivery request makes messages due.
//!
//! A rebuild writes nothing: its events are history, and their messages (if any were
//! due) were written when they were news. The ledger lives outside the generations.

use std::time::Duration;

use projection::{ApplyError, Envelope, Pass, TableProjection};
use schemas::Event;
use sqlx::PgConnection;
use tokio::sync::Mutex;

use crate::endpoints::Book;
use crate::ledger::{self, NewMessage};
use crate::message;

pub const NAME: &str = "webhooks";

pub struct Fanout {
    book: Mutex<Book>,
    /// Delay before a new message's first attempt (the schedule's first step).
    first_delay: Duration,
}

impl Fanout {
    pub fn new(first_delay: Duration) -> Fanout {
        Fanout {
            book: Mutex::new(Book::default()),
            first_delay,
        }
    }
}

#[async_trait::async_trait]
impl TableProjection for Fanout {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_tables(
        &self,
        _db: &mut PgConnection,
        _schema: &str,
    ) -> Result<(), sqlx::Error> {
        // The ledger is not per generation (migration 5001).
        Ok(())
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        _schema: &str,
        events: &[Envelope],
        pass: Pass,
    ) -> Result<(), ApplyError> {
        if pass.is_replay() {
            return Ok(());
        }
        let Some(until) = events.iter().map(|e| e.commit_position).max() else {
            return Ok(());
        };
        let mut book = self.book.lock().await;
        book.catch_up(db, until).await?;
        let mut messages = Vec::new();
        for e in events {
            match &e.event {
                Event::WebhookEndpointEnabled(x) => {
                    ledger::resume_endpoint(&mut *db, x.endpoint_id).await?;
                }
                Event::WebhookEndpointDeleted(x) => {
                    ledger::drop_endpoint(&mut *db, x.endpoint_id).await?;
                }
                Event::SubjectErased(x) => {
                    // What the batch fanned out so far is written first: erased too.
                    ledger::insert_messages(db, &std::mem::take(&mut messages), self.first_delay)
                        .await?;
                    ledger::erase(db, &x.tenant_id, &x.conversations(), x.is_tenant()).await?;
                    // External systems hear of it as `subject.erased`.
                    fan_out(&book, e, &mut messages);
                }
                Event::WebhookRedeliveryRequested(r) => {
                    ledger::redeliver(
                        &mut *db,
                        r.endpoint_id,
                        r.message_id.as_deref(),
                        r.since,
                        r.until,
                    )
                    .await?;
                }
                _ => fan_out(&book, e, &mut messages),
            }
        }
        ledger::insert_messages(db, &messages, self.first_delay).await?;
        metrics::counter!("webhook_messages_created_total").increment(messages.len() as u64);
        Ok(())
    }
}

/// The messages of `e`: one per endpoint subscribed to its webhook type when it was
/// committed.
fn fan_out(book: &Book, e: &Envelope, messages: &mut Vec<NewMessage>) {
    let Some(webhook_type) = e.event.event_type().webhook_type() else {
        return;
    };
    for (endpoint_id, endpoint) in book.endpoints_before(&e.tenant_id, e.commit_position) {
        if endpoint.wants(webhook_type) {
            messages.push(NewMessage {
                message_id: message::message_id(e.event_id, endpoint_id),
                tenant_id: e.tenant_id.clone(),
                endpoint_id,
                event_id: e.event_id,
                event_type: webhook_type.to_owned(),
                body: message::body(webhook_type, e),
                conversation_id: e.event.conversation_id(),
            });
        }
    }
}
