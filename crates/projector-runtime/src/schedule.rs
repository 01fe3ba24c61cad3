//! Which records go to the sink next, and which offsets may be committed: key-ordered
//! concurrency in the manner of Confluent's Parallel Consumer. Pure bookkeeping, no I/O.
//!
//! - Records wait in a queue per aggregate (their Kafka key); an aggregate is in at most
//!   one call at a time, so its events take effect in order, while calls for different
//!   aggregates run side by side, at most `concurrency` at once.
//! - Aggregates with waiting records are taken tenant by tenant, round-robin, and no
//!   tenant has more than `tenant_concurrency` calls in flight: one tenant's burst
//!   delays another tenant's work by at most the calls already running.
//! - A call carries one aggregate's waiting records ([`Parallelism::PerAggregate`]) or
//!   several aggregates' ([`Parallelism::Batches`]), up to `batch_max` records.
//! - Offsets: per partition, the next offset to commit is the lowest record not finished
//!   (waiting or in flight), or one past the highest finished. A record redelivered while
//!   its first copy is still here (a partition that came back after a rebalance) is
//!   counted twice and the offset moves past it only when both are finished.
//! - `buffered` counts records received and not finished: the runtime stops fetching
//!   while it is at the bound, which bounds memory and how far commits can trail.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use projection::Parallelism;

/// A record's partition.
pub(crate) type Partition = (Arc<str>, i32);

/// An aggregate: its type and id (the record's key).
pub(crate) type Key = (Arc<str>, Arc<str>);

/// One record and what the scheduler needs of it.
#[derive(Debug)]
pub(crate) struct Item<T> {
    pub partition: Partition,
    pub offset: i64,
    pub tenant: Arc<str>,
    pub key: Key,
    pub payload: T,
}

/// Records handed to one call: each aggregate's in order.
#[derive(Debug)]
pub(crate) struct Unit<T> {
    pub id: u64,
    pub items: Vec<Item<T>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub concurrency: usize,
    pub tenant_concurrency: usize,
    pub batch_max: usize,
    pub parallelism: Parallelism,
}

/// What a finished call gives back: where its records were.
#[derive(Debug)]
struct Running {
    tenants: Vec<Arc<str>>,
    keys: Vec<Key>,
    records: Vec<(Partition, i64)>,
}

#[derive(Debug, Default)]
struct Track {
    /// Offsets not finished, how many copies of each, and when the first arrived.
    open: BTreeMap<i64, (usize, Instant)>,
    /// One past the highest finished offset.
    after_finished: i64,
    /// What was last handed out to commit.
    committed: i64,
}

impl Track {
    fn commit_point(&self) -> i64 {
        match self.open.first_key_value() {
            Some((offset, _)) => *offset,
            None => self.after_finished,
        }
    }
}

/// A summary for `/status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Load {
    /// Calls of the sink running now.
    pub calls_in_flight: usize,
    /// Records in those calls.
    pub records_in_flight: usize,
    /// Records received and waiting for their aggregate's turn or a free call.
    pub waiting: usize,
    /// Waiting records of the tenants with the most, most first (at most ten).
    pub waiting_by_tenant: Vec<(String, usize)>,
    /// Age of the oldest record not finished, in seconds (what holds the commit point).
    pub oldest_unfinished_seconds: f64,
}

pub(crate) struct Scheduler<T> {
    limits: Limits,
    queues: HashMap<Key, VecDeque<Item<T>>>,
    busy: HashSet<Key>,
    /// Aggregates with waiting records and no call, per tenant, oldest first.
    ready: HashMap<Arc<str>, VecDeque<Key>>,
    /// Tenants with ready aggregates, in turn order.
    turn: VecDeque<Arc<str>>,
    tenant_calls: HashMap<Arc<str>, usize>,
    waiting_by_tenant: HashMap<Arc<str>, usize>,
    running: HashMap<u64, Running>,
    records_in_flight: usize,
    waiting: usize,
    tracks: HashMap<Partition, Track>,
    next_id: u64,
}

impl<T> Scheduler<T> {
    pub(crate) fn new(limits: Limits) -> Self {
        Scheduler {
            limits: Limits {
                concurrency: limits.concurrency.max(1),
                tenant_concurrency: limits.tenant_concurrency.max(1),
                batch_max: limits.batch_max.max(1),
                parallelism: limits.parallelism,
            },
            queues: HashMap::new(),
            busy: HashSet::new(),
            ready: HashMap::new(),
            turn: VecDeque::new(),
            tenant_calls: HashMap::new(),
            waiting_by_tenant: HashMap::new(),
            running: HashMap::new(),
            records_in_flight: 0,
            waiting: 0,
            tracks: HashMap::new(),
            next_id: 0,
        }
    }

    /// Records received and not finished.
    pub(crate) fn buffered(&self) -> usize {
        self.waiting + self.records_in_flight
    }

    /// A record that needs no call (it was dealt with on arrival) still holds its place
    /// until it is finished here.
    pub(crate) fn finished_now(&mut self, partition: Partition, offset: i64, at: Instant) {
        self.open(&partition, offset, at);
        self.close(&partition, offset);
    }

    pub(crate) fn push(&mut self, item: Item<T>, at: Instant) {
        self.open(&item.partition, item.offset, at);
        *self
            .waiting_by_tenant
            .entry(item.tenant.clone())
            .or_default() += 1;
        self.waiting += 1;
        let key = item.key.clone();
        let tenant = item.tenant.clone();
        let queue = self.queues.entry(key.clone()).or_default();
        queue.push_back(item);
        if queue.len() == 1 && !self.busy.contains(&key) {
            self.make_ready(tenant, key);
        }
    }

    /// The next call to make, if the limits allow one and a record waits for it.
    pub(crate) fn next_unit(&mut self) -> Option<Unit<T>> {
        if self.running.len() >= self.limits.concurrency {
            return None;
        }
        let mut items = Vec::new();
        let mut running = Running {
            tenants: Vec::new(),
            keys: Vec::new(),
            records: Vec::new(),
        };
        // Each pass over the turn order takes one aggregate from every tenant that may
        // have one more call; a batch goes round until it is full.
        let mut tries = self.turn.len();
        while tries > 0 && items.len() < self.limits.batch_max {
            tries -= 1;
            let Some(tenant) = self.turn.pop_front() else {
                break;
            };
            let calls = self.tenant_calls.get(&tenant).copied().unwrap_or(0);
            let already = running.tenants.contains(&tenant);
            if !already && calls >= self.limits.tenant_concurrency {
                self.turn.push_back(tenant);
                continue;
            }
            let Some(key) = self.ready.get_mut(&tenant).and_then(VecDeque::pop_front) else {
                self.ready.remove(&tenant);
                continue;
            };
            if self.ready.get(&tenant).is_some_and(|r| !r.is_empty()) {
                self.turn.push_back(tenant.clone());
                tries += usize::from(self.limits.parallelism == Parallelism::Batches);
            } else {
                self.ready.remove(&tenant);
            }
            self.busy.insert(key.clone());
            let queue = self.queues.get_mut(&key).expect("a ready key has a queue");
            let room = self.limits.batch_max - items.len();
            let take = queue.len().min(room);
            for item in queue.drain(..take) {
                running.records.push((item.partition.clone(), item.offset));
                if let Some(n) = self.waiting_by_tenant.get_mut(&item.tenant) {
                    *n -= 1;
                    if *n == 0 {
                        self.waiting_by_tenant.remove(&item.tenant);
                    }
                }
                items.push(item);
            }
            if queue.is_empty() {
                self.queues.remove(&key);
            }
            running.keys.push(key);
            if !already {
                *self.tenant_calls.entry(tenant.clone()).or_default() += 1;
                running.tenants.push(tenant);
            }
            if self.limits.parallelism == Parallelism::PerAggregate {
                break;
            }
        }
        if items.is_empty() {
            return None;
        }
        self.waiting -= items.len();
        self.records_in_flight += items.len();
        self.next_id += 1;
        let id = self.next_id;
        self.running.insert(id, running);
        Some(Unit { id, items })
    }

    /// The call `id` finished: its records are done, its aggregates free again.
    pub(crate) fn finish(&mut self, id: u64) {
        let Some(running) = self.running.remove(&id) else {
            return;
        };
        for tenant in &running.tenants {
            if let Some(n) = self.tenant_calls.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    self.tenant_calls.remove(tenant);
                }
            }
        }
        self.records_in_flight -= running.records.len();
        for (partition, offset) in &running.records {
            self.close(partition, *offset);
        }
        for key in running.keys {
            self.busy.remove(&key);
            if let Some(next) = self.queues.get(&key).and_then(|q| q.front()) {
                let tenant = next.tenant.clone();
                self.make_ready(tenant, key);
            }
        }
    }

    /// Partitions whose commit point moved since they were last handed out, and where
    /// to (the offset of the next record to read).
    pub(crate) fn commits(&mut self) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for (partition, track) in &mut self.tracks {
            let point = track.commit_point();
            if point > track.committed {
                track.committed = point;
                out.push((partition.clone(), point));
            }
        }
        out
    }

    /// Every partition's commit point (what shutdown commits).
    pub(crate) fn commit_points(&self) -> Vec<(Partition, i64)> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.commit_point() > 0)
            .map(|(p, t)| (p.clone(), t.commit_point()))
            .collect()
    }

    pub(crate) fn load(&self, now: Instant) -> Load {
        let oldest = self
            .tracks
            .values()
            .filter_map(|t| t.open.first_key_value().map(|(_, (_, at))| *at))
            .min();
        let mut by_tenant: Vec<(String, usize)> = self
            .waiting_by_tenant
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect();
        by_tenant.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        by_tenant.truncate(10);
        Load {
            calls_in_flight: self.running.len(),
            records_in_flight: self.records_in_flight,
            waiting: self.waiting,
            waiting_by_tenant: by_tenant,
            oldest_unfinished_seconds: oldest
                .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64()),
        }
    }

    fn make_ready(&mut self, tenant: Arc<str>, key: Key) {
        let ready = self.ready.entry(tenant.clone()).or_default();
        ready.push_back(key);
        if ready.len() == 1 && !self.turn.contains(&tenant) {
            self.turn.push_back(tenant);
        }
    }

    fn open(&mut self, partition: &Partition, offset: i64, at: Instant) {
        let track = self.tracks.entry(partition.clone()).or_default();
        track.open.entry(offset).or_insert((0, at)).0 += 1;
    }

    fn close(&mut self, partition: &Partition, offset: i64) {
        let Some(track) = self.tracks.get_mut(partition) else {
            return;
        };
        if let Some((n, _)) = track.open.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                track.open.remove(&offset);
            }
        }
        track.after_finished = track.after_finished.max(offset + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrency: usize, tenant: usize, batch: usize, p: Parallelism) -> Limits {
        Limits {
            concurrency,
            tenant_concurrency: tenant,
            batch_max: batch,
            parallelism: p,
        }
    }

    fn item(tenant: &str, key: &str, offset: i64) -> Item<&'static str> {
        Item {
            partition: (Arc::from("t"), 0),
            offset,
            tenant: Arc::from(tenant),
            key: (Arc::from("conversation"), Arc::from(key)),
            payload: "",
        }
    }

    fn keys(unit: &Unit<&'static str>) -> Vec<(String, i64)> {
        unit.items
            .iter()
            .map(|i| (i.key.1.to_string(), i.offset))
            .collect()
    }

    #[test]
    fn one_aggregate_is_in_one_call_at_a_time_and_its_records_stay_in_order() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(8, 8, 10, Parallelism::PerAggregate));
        s.push(item("a", "k1", 0), now);
        s.push(item("a", "k2", 1), now);
        let first = s.next_unit().expect("k1");
        assert_eq!(keys(&first), vec![("k1".into(), 0)]);
        s.push(item("a", "k1", 2), now);
        let second = s.next_unit().expect("k2");
        assert_eq!(keys(&second), vec![("k2".into(), 1)]);
        // k1 is busy: its second record waits however many calls are free.
        assert!(s.next_unit().is_none());
        s.finish(first.id);
        let third = s.next_unit().expect("k1 again");
        assert_eq!(keys(&third), vec![("k1".into(), 2)]);
    }

    #[test]
    fn an_aggregates_waiting_records_go_together_up_to_the_batch() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(8, 8, 2, Parallelism::PerAggregate));
        for offset in 0..3 {
            s.push(item("a", "k1", offset), now);
        }
        let first = s.next_unit().expect("two of k1");
        assert_eq!(keys(&first), vec![("k1".into(), 0), ("k1".into(), 1)]);
        assert!(s.next_unit().is_none(), "k1 is busy");
        s.finish(first.id);
        assert_eq!(
            keys(&s.next_unit().expect("the third")),
            vec![("k1".into(), 2)]
        );
    }

    #[test]
    fn calls_are_bounded_and_tenants_take_turns() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(3, 3, 10, Parallelism::PerAggregate));
        for i in 0..5 {
            s.push(item("a", &format!("a{i}"), i), now);
        }
        s.push(item("b", "b0", 5), now);
        let taken: Vec<String> = (0..3)
            .map(|_| s.next_unit().expect("a call").items[0].tenant.to_string())
            .collect();
        // b's one aggregate is taken as soon as its turn comes, not after a's five.
        assert_eq!(taken, vec!["a", "b", "a"]);
        assert!(s.next_unit().is_none(), "three calls at most");
        assert_eq!(s.load(now).calls_in_flight, 3);
    }

    #[test]
    fn a_tenant_at_its_cap_waits_while_others_go() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(10, 2, 10, Parallelism::PerAggregate));
        for i in 0..5 {
            s.push(item("a", &format!("a{i}"), i), now);
        }
        let a1 = s.next_unit().expect("a");
        let _a2 = s.next_unit().expect("a");
        assert!(s.next_unit().is_none(), "a has two calls, its cap");
        s.push(item("b", "b0", 9), now);
        assert_eq!(&*s.next_unit().expect("b").items[0].tenant, "b");
        s.finish(a1.id);
        assert_eq!(&*s.next_unit().expect("a again").items[0].tenant, "a");
    }

    #[test]
    fn a_batch_takes_many_aggregates_round_robin_across_tenants() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(2, 2, 4, Parallelism::Batches));
        for i in 0..4 {
            s.push(item("a", &format!("a{i}"), i), now);
        }
        s.push(item("b", "b0", 4), now);
        let unit = s.next_unit().expect("a batch");
        let got: Vec<String> = unit.items.iter().map(|i| i.key.1.to_string()).collect();
        assert_eq!(got, vec!["a0", "b0", "a1", "a2"]);
        let rest = s.next_unit().expect("the rest");
        assert_eq!(keys(&rest), vec![("a3".into(), 3)]);
    }

    #[test]
    fn commits_stop_below_the_oldest_unfinished_record() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(8, 8, 10, Parallelism::PerAggregate));
        for offset in 0..3 {
            s.push(item("a", &format!("k{offset}"), offset), now);
        }
        let u0 = s.next_unit().expect("k0");
        let u1 = s.next_unit().expect("k1");
        let u2 = s.next_unit().expect("k2");
        s.finish(u1.id);
        s.finish(u2.id);
        // Offset 0 is still running: nothing may be committed past it.
        assert!(s.commits().is_empty());
        assert_eq!(s.commit_points(), vec![]);
        s.finish(u0.id);
        assert_eq!(s.commits(), vec![((Arc::from("t"), 0), 3)]);
        assert!(s.commits().is_empty(), "handed out once");
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn a_record_dealt_with_on_arrival_moves_the_commit_point_in_its_turn() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(8, 8, 10, Parallelism::PerAggregate));
        s.push(item("a", "k0", 0), now);
        s.finished_now((Arc::from("t"), 0), 1, now);
        assert!(s.commits().is_empty(), "offset 0 is not finished");
        let u = s.next_unit().expect("k0");
        s.finish(u.id);
        assert_eq!(s.commits(), vec![((Arc::from("t"), 0), 2)]);
    }

    #[test]
    fn a_redelivered_record_holds_the_commit_point_until_both_copies_finish() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(8, 8, 10, Parallelism::PerAggregate));
        s.push(item("a", "k0", 0), now);
        let first = s.next_unit().expect("first copy");
        s.push(item("a", "k0", 0), now);
        s.finish(first.id);
        assert!(s.commits().is_empty());
        let second = s.next_unit().expect("second copy");
        s.finish(second.id);
        assert_eq!(s.commits(), vec![((Arc::from("t"), 0), 1)]);
    }

    #[test]
    fn the_load_names_what_waits_and_how_old_the_oldest_is() {
        let then = Instant::now();
        let mut s = Scheduler::new(limits(1, 1, 10, Parallelism::PerAggregate));
        s.push(item("a", "k0", 0), then);
        s.push(item("a", "k1", 1), then);
        s.push(item("b", "k2", 2), then);
        let _running = s.next_unit().expect("one call");
        let load = s.load(then + std::time::Duration::from_secs(3));
        assert_eq!(load.calls_in_flight, 1);
        assert_eq!(load.records_in_flight, 1);
        assert_eq!(load.waiting, 2);
        assert_eq!(
            load.waiting_by_tenant,
            vec![("a".to_owned(), 1), ("b".to_owned(), 1)]
        );
        assert_eq!(load.oldest_unfinished_seconds, 3.0);
    }
}
