//! Recently used aggregates, kept in memory at the sequence they were read or written at,
//! so a command on a long stream does not reload it.
//!
//! Invariants:
//! - An entry is taken out for the time a command decides (commands of one aggregate are
//!   serialised in the process by `AggregateLocks` while they decide) and put back with
//!   the state its events lead to: after their commit, or, when other commands wait for
//!   the aggregate, as soon as they are queued for the group commit, with their
//!   [`Ticket`]: the next command may then decide on that state before it is committed,
//!   and its append follows the first or fails with it. An entry whose append failed
//!   is never taken again (the next command loads from the store); a command refused or
//!   failing before it queued anything leaves nothing behind.
//! - Another process may have written the aggregate since: the state is then behind, the
//!   commit of its next sequence is a conflict, and the command reloads from the store. A
//!   refusal decided on a cached state is decided again on a fresh load, once what this
//!   process queued for the aggregate has settled (the caller's `If-Match` may be newer
//!   than what this process saw).
//! - At most `capacity` entries; the oldest inserted goes first.
//!
//! Snapshots, for what is not in memory:
//! - A load starts from the aggregate's snapshot of the type's [`SnapshotFormat`] and
//!   applies the events after it; without one (or when it does not deserialize) it
//!   replays the whole stream.
//! - A snapshot is written, after the commit, when a command's events cross a multiple of
//!   `snapshot_every`, and when a load had to apply more events than that. It is the state
//!   the store holds at its sequence (the same state the memory keeps), so snapshot plus
//!   the events after it equals a full replay: a test holds every aggregate type to it.
//! - Architecture invariant: an aggregate's state is bounded whatever its stream's length
//!   (a conversation keeps only the replies still awaited), so a snapshot costs the same
//!   at the hundredth event as at the millionth and a load applies at most
//!   `snapshot_every` events after it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{Aggregate, AggregateError};
use domain::{Conversation, Document, Inbox, Knowledge, SubjectRecord, WebhookEndpoint};
use event_store::append::{Settled, Ticket};
use event_store::snapshots::{self, Snapshot};
use event_store::{Reader, Stream};
use schemas::AggregateKind;
use uuid::Uuid;

/// Snapshots every this many events, by default.
pub const SNAPSHOT_EVERY: usize = 100;

/// How an aggregate type's state is written in its snapshots. Bump it whenever the
/// state's fields or what `apply` makes of an event change: snapshots of the old format
/// are then ignored (and replaced) instead of being read as something they are not. The
/// field lists pinned in this module's tests fail on a changed state, as a reminder.
pub(crate) trait SnapshotFormat: Aggregate {
    const FORMAT: i32;
}

impl SnapshotFormat for Conversation {
    // 2: `awaiting` (the replies still awaited) replaced `replies` (every user message's).
    const FORMAT: i32 = 2;
}
impl SnapshotFormat for Document {
    const FORMAT: i32 = 1;
}
impl SnapshotFormat for Knowledge {
    const FORMAT: i32 = 1;
}
impl SnapshotFormat for WebhookEndpoint {
    const FORMAT: i32 = 1;
}
impl SnapshotFormat for Inbox {
    const FORMAT: i32 = 1;
}
impl SnapshotFormat for SubjectRecord {
    const FORMAT: i32 = 1;
}

/// An aggregate type's event store with its recently used aggregates.
pub(crate) struct Aggregates<A: Aggregate> {
    reader: Reader,
    recent: Mutex<Recent<A>>,
    /// 0: no snapshots are written (those there are still read). Shared by the
    /// aggregate types of a service.
    snapshot_every: Arc<AtomicUsize>,
}

struct Recent<A> {
    capacity: usize,
    entries: HashMap<String, Entry<A>>,
    /// Every put in order, for eviction: an id and the stamp of that put. Only the pair
    /// whose stamp is its entry's current one counts; the others (an id taken out and
    /// put back since, or taken out for good) are dropped when this grows past twice the
    /// capacity, so it stays bounded however often one aggregate is used.
    order: VecDeque<(String, u64)>,
    /// The next put's stamp.
    stamp: u64,
}

/// A state kept in memory, at the sequence its last events take it to; `pending`: those
/// events are queued and not yet committed.
struct Entry<A> {
    state: A,
    sequence: usize,
    pending: Option<Ticket>,
    /// Which of `Recent::order`'s pairs is this entry's.
    stamp: u64,
}

/// A loaded aggregate, and whether it came from memory (it may be behind the store, or
/// ahead of it by the queued append of `pending`).
pub(crate) struct Loaded<A: Aggregate> {
    pub(crate) context: EventStoreAggregateContext<A>,
    pub(crate) cached: bool,
    pub(crate) pending: Option<Ticket>,
}

impl<A: SnapshotFormat> Aggregates<A> {
    pub(crate) fn new(reader: &Reader, capacity: usize, snapshot_every: Arc<AtomicUsize>) -> Self {
        Self {
            reader: reader.clone(),
            recent: Mutex::new(Recent {
                capacity,
                entries: HashMap::new(),
                order: VecDeque::new(),
                stamp: 0,
            }),
            snapshot_every,
        }
    }

    /// Keeps at most `capacity` aggregates from now on (0: none).
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let mut recent = self.recent();
        recent.capacity = capacity;
        recent.entries.clear();
        recent.order.clear();
    }

    /// Drops every aggregate kept (an erasure: they may hold what is erased now).
    pub(crate) fn clear(&self) {
        let mut recent = self.recent();
        recent.entries.clear();
        recent.order.clear();
    }

    /// What is kept for `id`, without taking it out.
    #[cfg(test)]
    pub(crate) fn kept(&self, id: &str) -> Option<(A, usize)>
    where
        A: Clone,
    {
        self.recent()
            .entries
            .get(id)
            .map(|e| (e.state.clone(), e.sequence))
    }

    /// The queued append the kept state of `id` includes, if any (it may have settled
    /// since).
    pub(crate) fn pending(&self, id: &str) -> Option<Ticket> {
        self.recent()
            .entries
            .get(id)
            .and_then(|e| e.pending.clone())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent<A>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The aggregate, taken out of memory if it is there (unless it was decided on an
    /// append that failed), else loaded from the store.
    pub(crate) async fn take(&self, id: &str) -> Result<Loaded<A>, AggregateError<A::Error>> {
        let kept = self.recent().entries.remove(id);
        if let Some(entry) = kept
            && entry
                .pending
                .as_ref()
                .is_none_or(|p| p.state() != Settled::Failed)
        {
            let pending = entry.pending.filter(|p| p.state() == Settled::Pending);
            return Ok(Loaded {
                context: EventStoreAggregateContext {
                    aggregate_id: id.to_owned(),
                    aggregate: entry.state,
                    current_sequence: entry.sequence,
                    current_snapshot: None,
                },
                cached: true,
                pending,
            });
        }
        let snapshot = match snapshots::latest(self.reader.pool(), A::TYPE, id, A::FORMAT).await {
            Ok(found) => found,
            Err(e) => return Err(AggregateError::UnexpectedError(Box::new(e))),
        };
        let (context, applied) = match snapshot
            .map(|s| (s.sequence, serde_json::from_value(s.state)))
        {
            Some((sequence, Ok(state))) => self.tail(id, state, sequence).await?,
            Some((sequence, Err(e))) => {
                tracing::warn!(aggregate_type = A::TYPE, aggregate_id = id, sequence, error = %e,
                    "snapshot does not deserialize: replaying the whole stream");
                self.replay(id).await?
            }
            None => self.replay(id).await?,
        };
        let every = self.snapshot_every.load(Ordering::Relaxed);
        if every > 0
            && applied >= every
            && let Some(snapshot) = snapshot_of(&context.aggregate, context.current_sequence)
        {
            self.save_snapshot(id, snapshot);
        }
        Ok(Loaded {
            context,
            cached: false,
            pending: None,
        })
    }

    /// The whole stream replayed (through the one reader, a page at a time), and how
    /// many events that was.
    async fn replay(
        &self,
        id: &str,
    ) -> Result<(EventStoreAggregateContext<A>, usize), AggregateError<A::Error>> {
        self.tail(id, A::default(), 0).await
    }

    /// `state` as of `sequence` with the events after it applied, and how many.
    async fn tail(
        &self,
        id: &str,
        mut state: A,
        sequence: i64,
    ) -> Result<(EventStoreAggregateContext<A>, usize), AggregateError<A::Error>> {
        let unexpected = |e: String| AggregateError::UnexpectedError(e.into());
        let kind = AggregateKind::parse(A::TYPE)
            .ok_or_else(|| unexpected(format!("no aggregate kind {}", A::TYPE)))?;
        let uuid = id
            .parse::<Uuid>()
            .map_err(|e| unexpected(format!("aggregate id {id}: {e}")))?;
        let mut stream = Stream::new(&self.reader, kind, uuid).sequences(sequence + 1..=i64::MAX);
        let mut applied = 0;
        let mut current = sequence;
        while let Some(page) = stream
            .next_page()
            .await
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?
        {
            for recorded in page {
                let event: A::Event = recorded
                    .decode()
                    .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
                state.apply(event);
                current = recorded.sequence();
                applied += 1;
            }
        }
        let context = EventStoreAggregateContext {
            aggregate_id: id.to_owned(),
            aggregate: state,
            current_sequence: current as usize,
            current_snapshot: None,
        };
        Ok((context, applied))
    }

    /// A snapshot of `state` when the events that took it from `before` to `after`
    /// cross a multiple of `snapshot_every` (to save once they are committed).
    pub(crate) fn due_snapshot(&self, state: &A, before: usize, after: usize) -> Option<Snapshot> {
        let every = self.snapshot_every.load(Ordering::Relaxed);
        if every == 0 {
            return None;
        }
        (before / every != after / every)
            .then(|| snapshot_of(state, after))
            .flatten()
    }

    /// Writes `snapshot` in the background: the command does not wait for it, and a
    /// failure only means a longer load later.
    pub(crate) fn save_snapshot(&self, id: &str, snapshot: Snapshot) {
        let (pool, id) = (self.reader.pool().clone(), id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = snapshots::save(&pool, A::TYPE, &id, A::FORMAT, &snapshot).await {
                tracing::warn!(aggregate_type = A::TYPE, aggregate_id = %id, error = %e, "snapshot not written");
            }
        });
    }

    /// Keeps `aggregate` at `sequence`: as the store holds it, or as it will once the
    /// append of `pending` is committed.
    pub(crate) fn put(&self, id: &str, aggregate: A, sequence: usize, pending: Option<Ticket>) {
        let mut recent = self.recent();
        if recent.capacity == 0 {
            return;
        }
        let stamp = recent.stamp;
        recent.stamp += 1;
        let entry = Entry {
            state: aggregate,
            sequence,
            pending,
            stamp,
        };
        recent.entries.insert(id.to_owned(), entry);
        recent.order.push_back((id.to_owned(), stamp));
        let Recent {
            capacity,
            entries,
            order,
            ..
        } = &mut *recent;
        let current = |entries: &HashMap<String, Entry<A>>, (id, stamp): &(String, u64)| {
            entries.get(id).is_some_and(|e| e.stamp == *stamp)
        };
        // Evict the least recently put.
        while entries.len() > *capacity {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            if current(entries, &oldest) {
                entries.remove(&oldest.0);
            }
        }
        // Leaves at most one pair per kept entry: amortised, a put costs O(1).
        if order.len() > 2 * (*capacity).max(16) {
            order.retain(|pair| current(entries, pair));
        }
    }
}

/// `state` at `sequence` as a snapshot (`None`, with a warning, if it does not serialise).
fn snapshot_of<A: Aggregate>(state: &A, sequence: usize) -> Option<Snapshot> {
    match serde_json::to_value(state) {
        Ok(state) => Some(Snapshot {
            sequence: sequence as i64,
            state,
        }),
        Err(e) => {
            tracing::warn!(aggregate_type = A::TYPE, error = %e, "snapshot not serialisable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aggregates(capacity: usize) -> Aggregates<Inbox> {
        // Never connects: these tests stay in memory.
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("lazy");
        let every = Arc::new(AtomicUsize::new(SNAPSHOT_EVERY));
        Aggregates::new(&Reader::plain(pool), capacity, every)
    }

    #[tokio::test]
    async fn an_entry_is_taken_out_once_and_the_oldest_goes_first() {
        let a = aggregates(2);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            a.put(id, Inbox::default(), i + 1, None);
        }
        assert!(
            !a.recent().entries.contains_key("a"),
            "over capacity: the oldest left"
        );
        let b = a.take("b").await.expect("in memory");
        assert!(b.cached);
        assert_eq!(b.context.current_sequence, 2);
        assert!(
            !a.recent().entries.contains_key("b"),
            "taken out while in use"
        );
        // Taken out and never put back (a failed commit): its order entry is trimmed.
        for i in 0..100 {
            a.put(&format!("x{i}"), Inbox::default(), 1, None);
            let _ = a.take(&format!("x{i}")).await.expect("in memory");
        }
        assert!(a.recent().order.len() <= 2 * 16 + 1);
    }

    /// One hot aggregate taken and put back by every command: what is kept for eviction
    /// stays bounded (it once grew by one id per command, and each put scanned it all).
    #[tokio::test]
    async fn one_aggregate_used_again_and_again_keeps_the_eviction_order_bounded() {
        let a = aggregates(2);
        a.put("other", Inbox::default(), 1, None);
        a.put("hot", Inbox::default(), 1, None);
        for sequence in 2..=10_000 {
            let hot = a.take("hot").await.expect("in memory");
            assert!(hot.cached);
            a.put("hot", Inbox::default(), sequence, None);
        }
        assert!(
            a.recent().order.len() <= 2 * 16 + 1,
            "{}",
            a.recent().order.len()
        );
        // The order still says which is the oldest: "other", put before every "hot".
        a.put("new", Inbox::default(), 1, None);
        let recent = a.recent();
        assert!(!recent.entries.contains_key("other"), "the oldest left");
        assert!(recent.entries.contains_key("hot") && recent.entries.contains_key("new"));
    }

    /// The fields of each state, as its snapshots are written. This test fails when a
    /// state changes: bump the type's `FORMAT` (older snapshots are then passed over)
    /// and write the new list here.
    #[test]
    fn a_changed_state_changes_its_snapshot_format() {
        fn shape<A: SnapshotFormat>() -> (&'static str, i32, Vec<String>) {
            let state = serde_json::to_value(A::default()).expect("a state serialises");
            let fields = state
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            (A::TYPE, A::FORMAT, fields)
        }
        let pinned = |t, f, fields: &[&str]| (t, f, fields.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            shape::<Conversation>(),
            pinned(
                "conversation",
                2,
                &[
                    "assistant",
                    "awaiting",
                    "id",
                    "message_count",
                    "started_by",
                    "status",
                    "tenant_id",
                    "title",
                    "version"
                ]
            )
        );
        assert_eq!(
            shape::<Document>(),
            pinned(
                "document",
                1,
                &[
                    "conversation_id",
                    "id",
                    "requested",
                    "requested_by",
                    "status",
                    "tenant_id",
                    "version"
                ]
            )
        );
        assert_eq!(
            shape::<Knowledge>(),
            pinned(
                "knowledge",
                1,
                &["id", "removed", "sha256", "tenant_id", "title", "version"]
            )
        );
        assert_eq!(
            shape::<WebhookEndpoint>(),
            pinned(
                "webhook_endpoint",
                1,
                &[
                    "created_by",
                    "deleted",
                    "description",
                    "enabled",
                    "event_types",
                    "id",
                    "previous_secret",
                    "sealed_secret",
                    "tenant_id",
                    "url",
                    "version"
                ]
            )
        );
        assert_eq!(
            shape::<Inbox>(),
            pinned(
                "inbox",
                1,
                &["id", "read", "tenant_id", "user_id", "version"]
            )
        );
    }

    #[tokio::test]
    async fn a_capacity_of_zero_keeps_nothing() {
        let a = aggregates(0);
        a.put("a", Inbox::default(), 1, None);
        assert!(a.recent().entries.is_empty());
    }
}
