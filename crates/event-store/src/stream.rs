//! Reading one aggregate's events from the store: the one way this codebase folds an
//! aggregate outside cqrs-es (a document's transcript, the assistant's view of a
//! conversation, a webhook endpoint as the dispatcher sends with it, the audit's state at
//! a version or time, what a position token names).
//!
//! A [`Stream`] is read a page at a time ([`PAGE`] events), so memory stays bounded
//! however long the aggregate is; it may be scoped to a tenant ([`Stream::of_tenant`]),
//! and then another tenant's aggregate reads as one that does not exist. Its rows are
//! typed ([`Recorded`]): the aggregate's kind and id, the contract's headers with the
//! tenant required (a row without one is corrupt, as it is to a projection), and the
//! payload decoded as the reader asks.

use std::ops::RangeInclusive;

use schemas::{AggregateKind, Event, EventHeaders};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::log::{self, StoredEvent};

/// Events read per query.
pub const PAGE: i64 = 500;

/// One stored event of an aggregate, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub kind: AggregateKind,
    pub id: Uuid,
    /// Its headers as the relay publishes them; `tenant_id` is never empty.
    pub headers: EventHeaders,
    payload: serde_json::Value,
}

impl Recorded {
    /// The event's number in its aggregate's stream (1 for the first).
    pub fn sequence(&self) -> i64 {
        self.headers.sequence
    }

    pub fn tenant(&self) -> &str {
        &self.headers.tenant_id
    }

    /// The payload as the contract's event.
    pub fn event(&self) -> Result<Event, StreamError> {
        self.decode()
    }

    /// The payload as `E` (an aggregate's own event type, which stores the same form).
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, StreamError> {
        E::deserialize(&self.payload).map_err(|e| self.corrupt(e.to_string()))
    }

    fn corrupt(&self, reason: String) -> StreamError {
        StreamError::Corrupt {
            kind: self.kind,
            id: self.id,
            sequence: self.headers.sequence,
            reason,
        }
    }

    fn from_stored(
        kind: AggregateKind,
        id: Uuid,
        stored: StoredEvent,
    ) -> Result<Self, StreamError> {
        let headers = stored.headers();
        if headers.tenant_id.is_empty() {
            return Err(StreamError::Corrupt {
                kind,
                id,
                sequence: stored.sequence,
                reason: "no tenant_id in its metadata".into(),
            });
        }
        Ok(Recorded {
            kind,
            id,
            headers,
            payload: stored.payload,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row the contract cannot read: a defect or a tampered store, never input.
    #[error("{} {id} event {sequence}: {reason}", kind.as_str())]
    Corrupt {
        kind: AggregateKind,
        id: Uuid,
        sequence: i64,
        reason: String,
    },
}

/// One aggregate's events in sequence order, read a page at a time.
#[derive(Debug, Clone)]
pub struct Stream<'a> {
    db: &'a sqlx::PgPool,
    kind: AggregateKind,
    id: Uuid,
    tenant: Option<&'a str>,
    next: i64,
    last: i64,
    done: bool,
}

impl<'a> Stream<'a> {
    /// The whole stream of aggregate `id` of `kind`.
    pub fn new(db: &'a sqlx::PgPool, kind: AggregateKind, id: Uuid) -> Self {
        Stream {
            db,
            kind,
            id,
            tenant: None,
            next: 1,
            last: i64::MAX,
            done: false,
        }
    }

    /// Only if the aggregate is `tenant`'s: another tenant's reads as no events at all.
    pub fn of_tenant(mut self, tenant: &'a str) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Only the events whose sequence is in `sequences`.
    pub fn sequences(mut self, sequences: RangeInclusive<i64>) -> Self {
        self.next = (*sequences.start()).max(1);
        self.last = *sequences.end();
        self
    }

    /// The next page of events, `None` once the stream (or its range) is read.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Recorded>>, StreamError> {
        if self.done || self.next > self.last {
            return Ok(None);
        }
        let start = self.next;
        let end = start.saturating_add(PAGE - 1).min(self.last);
        let id = self.id.to_string();
        let stored = log::aggregate_events(self.db, self.kind.as_str(), &id, start..=end).await?;
        // A short page is the end of the stream as it stands.
        self.done = (stored.len() as i64) < end - start + 1;
        let page = stored
            .into_iter()
            .map(|s| Recorded::from_stored(self.kind, self.id, s))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = page.last() else {
            self.done = true;
            return Ok(None);
        };
        self.next = last.sequence().saturating_add(1);
        // Every event of an aggregate is its tenant's: the first one tells.
        if let Some(tenant) = self.tenant
            && page[0].tenant() != tenant
        {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(page))
    }

    /// The aggregate `A` folded from the stream's events (its default when there are none),
    /// a page at a time.
    pub async fn fold<A: cqrs_es::Aggregate>(mut self) -> Result<A, StreamError> {
        let mut aggregate = A::default();
        while let Some(page) = self.next_page().await? {
            for recorded in page {
                aggregate.apply(recorded.decode::<A::Event>()?);
            }
        }
        Ok(aggregate)
    }

    /// The first event of the stream (or of its range), if any.
    pub async fn first(mut self) -> Result<Option<Recorded>, StreamError> {
        self.last = self.last.min(self.next);
        Ok(self
            .next_page()
            .await?
            .and_then(|page| page.into_iter().next()))
    }
}
