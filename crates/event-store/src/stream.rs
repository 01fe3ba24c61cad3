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
//! payload decoded as the reader asks, its sealed personal fields opened by the
//! [`Reader`] (or read as erased).

use std::ops::RangeInclusive;

use schemas::{AggregateKind, Event, EventHeaders};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::keys::KeyError;
use crate::log::{self, StoredEvent};
use crate::protect::{Opened, ProtectError};
use crate::reader::Reader;

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
    erased: bool,
}

impl Recorded {
    /// The event's number in its aggregate's stream (1 for the first).
    pub fn sequence(&self) -> i64 {
        self.headers.sequence
    }

    pub fn tenant(&self) -> &str {
        &self.headers.tenant_id
    }

    /// Whether its personal fields were erased (they read as `"[erased]"`, `{}`, `[]`).
    pub fn erased(&self) -> bool {
        self.erased
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

    async fn from_stored(
        reader: &Reader,
        kind: AggregateKind,
        id: Uuid,
        mut stored: StoredEvent,
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
        let opened = reader.open_stored(&mut stored).await.map_err(|e| match e {
            ProtectError::Keys(KeyError::Database(e)) => StreamError::Database(e),
            other => StreamError::Corrupt {
                kind,
                id,
                sequence: stored.sequence,
                reason: other.to_string(),
            },
        })?;
        Ok(Recorded {
            kind,
            id,
            headers,
            payload: stored.payload,
            erased: opened == Opened::Erased,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row the contract cannot read (or whose sealed fields do not open): a
    /// defect, a tampered store or a missing master key, never input.
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
    reader: &'a Reader,
    kind: AggregateKind,
    id: Uuid,
    tenant: Option<&'a str>,
    next: i64,
    last: i64,
    done: bool,
}

impl<'a> Stream<'a> {
    /// The whole stream of aggregate `id` of `kind`.
    pub fn new(reader: &'a Reader, kind: AggregateKind, id: Uuid) -> Self {
        Stream {
            reader,
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
        let stored =
            log::aggregate_events(self.reader.pool(), self.kind.as_str(), &id, start..=end).await?;
        // A short page is the end of the stream as it stands.
        self.done = (stored.len() as i64) < end - start + 1;
        let mut page = Vec::with_capacity(stored.len());
        for s in stored {
            page.push(Recorded::from_stored(self.reader, self.kind, self.id, s).await?);
        }
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
