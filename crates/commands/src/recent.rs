//! Recently used aggregates, kept in memory at the sequence they were read or written at,
//! so a command on a long stream does not reload it.
//!
//! Invariants:
//! - An entry is taken out for the length of one command (commands of one aggregate are
//!   serialised in the process by `AggregateLocks`) and put back only with the state the
//!   store holds: after a commit, the state `handle` left (cqrs-es applies each event as
//!   it is written); after a fresh load, as loaded. A command that fails to commit leaves
//!   nothing behind.
//! - Another process may have written the aggregate since: the state is then behind, the
//!   commit of its next sequence is a conflict, and the command reloads from the store. A
//!   refusal decided on a cached state is decided again on a fresh load before it is
//!   answered (the caller's `If-Match` may be newer than what this process saw).
//! - At most `capacity` entries; the oldest inserted goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{Aggregate, AggregateError, EventStore};
use event_store::Store;

/// An aggregate type's event store with its recently used aggregates.
pub(crate) struct Aggregates<A: Aggregate> {
    pub(crate) store: Store<A>,
    recent: Mutex<Recent<A>>,
}

struct Recent<A> {
    capacity: usize,
    entries: HashMap<String, (A, usize)>,
    /// Insertion order, for eviction; may name ids no longer in `entries`.
    order: VecDeque<String>,
}

/// A loaded aggregate, and whether it came from memory (it may be behind the store).
pub(crate) struct Loaded<A: Aggregate> {
    pub(crate) context: EventStoreAggregateContext<A>,
    pub(crate) cached: bool,
}

impl<A: Aggregate> Aggregates<A> {
    pub(crate) fn new(store: Store<A>, capacity: usize) -> Self {
        Self {
            store,
            recent: Mutex::new(Recent {
                capacity,
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Keeps at most `capacity` aggregates from now on (0: none).
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let mut recent = self.recent();
        recent.capacity = capacity;
        recent.entries.clear();
        recent.order.clear();
    }

    /// What is kept for `id`, without taking it out.
    #[cfg(test)]
    pub(crate) fn kept(&self, id: &str) -> Option<(A, usize)>
    where
        A: Clone,
    {
        self.recent().entries.get(id).cloned()
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent<A>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The aggregate, taken out of memory if it is there, else loaded from the store.
    pub(crate) async fn take(&self, id: &str) -> Result<Loaded<A>, AggregateError<A::Error>> {
        if let Some((aggregate, sequence)) = self.recent().entries.remove(id) {
            return Ok(Loaded {
                context: EventStoreAggregateContext {
                    aggregate_id: id.to_owned(),
                    aggregate,
                    current_sequence: sequence,
                    current_snapshot: None,
                },
                cached: true,
            });
        }
        let context = self.store.load_aggregate(id).await?;
        Ok(Loaded {
            context,
            cached: false,
        })
    }

    /// Keeps `aggregate`, as the store holds it at `sequence`.
    pub(crate) fn put(&self, id: &str, aggregate: A, sequence: usize) {
        let mut recent = self.recent();
        if recent.capacity == 0 {
            return;
        }
        if recent
            .entries
            .insert(id.to_owned(), (aggregate, sequence))
            .is_none()
        {
            recent.order.push_back(id.to_owned());
        }
        while recent.entries.len() > recent.capacity {
            let Some(oldest) = recent.order.pop_front() else {
                break;
            };
            recent.entries.remove(&oldest);
        }
        // Ids taken out and never put back pile up in `order`: drop them now and then.
        if recent.order.len() > 2 * recent.capacity.max(16) {
            let Recent { entries, order, .. } = &mut *recent;
            order.retain(|id| entries.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Inbox;

    fn aggregates(capacity: usize) -> Aggregates<Inbox> {
        // Never connects: these tests stay in memory.
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("lazy");
        Aggregates::new(event_store::store(pool), capacity)
    }

    #[tokio::test]
    async fn an_entry_is_taken_out_once_and_the_oldest_goes_first() {
        let a = aggregates(2);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            a.put(id, Inbox::default(), i + 1);
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
            a.put(&format!("x{i}"), Inbox::default(), 1);
            let _ = a.take(&format!("x{i}")).await.expect("in memory");
        }
        assert!(a.recent().order.len() <= 2 * 16 + 1);
    }

    #[tokio::test]
    async fn a_capacity_of_zero_keeps_nothing() {
        let a = aggregates(0);
        a.put("a", Inbox::default(), 1);
        assert!(a.recent().entries.is_empty());
    }
}
