//! The dispatcher: claims due messages from the ledger, sends them concurrently (a bounded
//! number in all and per endpoint, so a slow or failing endpoint holds only its own share),
//! records every attempt and the next step of each message's schedule. A message whose
//! schedule runs out is dead: its endpoint's owner is told through an event. An endpoint
//! that has failed without a success for `disable_after` is disabled.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use commands::{CommandError, CommandService, Idempotency, Reach, RequestMeta};
use domain::{DomainError, WebhookCommand, WebhookEndpoint};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;
use webhooks::sealed::Sealer;
use webhooks::signature::Secret;

use crate::client::Client;
use crate::ledger::{self, Attempt, Claimed, Next, Settled};
use crate::{DeliverySettings, endpoints};

/// The subject the dispatcher's commands are recorded under.
pub const SUBJECT: &str = "webhook-delivery";
pub struct Dispatcher {
    pool: PgPool,
    client: Client,
    sealer: Arc<Sealer>,
    commands: CommandService,
    settings: DeliverySettings,
}

/// What an attempt task hands back to the loop, which records outcomes in batches.
struct Done {
    settled: Settled,
    /// Whether the endpoint was enabled when attempted (only an enabled one is disabled
    /// for failing).
    enabled: bool,
}

impl Dispatcher {
    pub fn new(
        pool: PgPool,
        commands: CommandService,
        settings: DeliverySettings,
    ) -> Result<Dispatcher, reqwest::Error> {
        Ok(Dispatcher {
            client: Client::new(settings.webhooks.guard, settings.timeout)?,
            sealer: settings.webhooks.sealer.clone(),
            pool,
            commands,
            settings,
        })
    }

    /// Runs until `stop` turns true. Attempts in flight then get a moment to finish; one
    /// cut short is tried again after its lease.
    ///
    /// Attempt tasks send and hand their outcome back; the loop records every outcome
    /// that is ready in one transaction (one commit for many deliveries) in a task of its
    /// own, one recording at a time, while it claims more and sends: sending does not
    /// wait for the commit of what was sent before (a recorded message stays leased until
    /// its recording commits, so nobody claims it meanwhile).
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let this = Arc::new(self);
        let s = &this.settings;
        let mut held = Held::default();
        let mut tasks: JoinSet<(Uuid, Option<Done>)> = JoinSet::new();
        let mut finished: Vec<Done> = Vec::new();
        let mut recording: Option<tokio::task::JoinHandle<()>> = None;
        // Whether a claim may find something: after the poll interval, after a claim that
        // filled its room, and when an endpoint that had messages waits for more. Not
        // after every attempt: a claim is a statement, and most would find nothing.
        let mut claimable = true;
        let mut failures =
            common::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !*stop.borrow() {
            if !finished.is_empty() && recording.as_ref().is_none_or(|r| r.is_finished()) {
                let (this, finished) = (this.clone(), std::mem::take(&mut finished));
                recording = Some(tokio::spawn(async move { this.record(finished).await }));
            }
            held.start(&this, &mut tasks);
            let room = (s.concurrency * AHEAD).saturating_sub(tasks.len() + held.queued());
            let mut full = room == 0;
            if room > 0 && (claimable || held.low(s.per_endpoint)) {
                let busy = held.busy(s.per_endpoint);
                let claimed = ledger::claim(
                    &this.pool,
                    &busy,
                    (s.per_endpoint * AHEAD) as i64,
                    room as i64,
                    s.lease,
                )
                .await;
                match claimed {
                    Ok(claimed) => {
                        failures.reset();
                        full = claimed.len() == room;
                        claimable = full;
                        held.claimed_for(&claimed, s.per_endpoint * AHEAD, &busy);
                        held.queue(&this, claimed).await;
                        held.start(&this, &mut tasks);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming due webhook messages");
                        tokio::select! {
                            () = tokio::time::sleep(failures.next_delay()) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                }
            }
            let poll = tokio::time::sleep(s.poll);
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    held.collect(&mut finished, done);
                }
                () = poll, if !full => claimable = true,
                // Outcomes wait for the recording before them: start theirs when it ends.
                Some(_) = async {
                    match recording.as_mut() {
                        Some(r) => Some(r.await),
                        None => None,
                    }
                }, if recording.is_some() && !finished.is_empty() =>
                {
                    recording = None;
                }
                _ = stop.changed() => {}
            }
            while let Some(done) = tasks.try_join_next() {
                held.collect(&mut finished, done);
            }
        }
        // Claimed and not started: their lease brings them back.
        let drain = async {
            while let Some(done) = tasks.join_next().await {
                held.collect(&mut finished, done);
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::info!(
                "webhook attempts still in flight at shutdown are retried after their lease"
            );
        }
        if let Some(recording) = recording
            && let Err(e) = recording.await
        {
            tracing::warn!(error = %e, "recording webhook attempts stopped; their lease brings them back");
        }
        this.record(finished).await;
        Ok(())
    }

    /// Records outcomes in one transaction, then disables the endpoints that have failed
    /// too long. When recording fails the messages stay claimed: their lease brings them
    /// back (sent again: receivers de-duplicate by `webhook-id`).
    async fn record(&self, finished: Vec<Done>) {
        if finished.is_empty() {
            return;
        }
        let mut attempted: HashMap<Uuid, (bool, Claimed, Option<String>)> = HashMap::new();
        for d in &finished {
            let c = &d.settled.claimed;
            let last = d.settled.attempt.as_ref().and_then(|a| a.error.clone());
            attempted.insert(c.endpoint_id, (d.enabled, c.clone(), last));
        }
        let outcomes: Vec<Settled> = finished.into_iter().map(|d| d.settled).collect();
        let failing = match ledger::settle(&self.pool, &outcomes).await {
            Ok(failing) => failing,
            Err(e) => {
                tracing::warn!(error = %e, messages = outcomes.len(),
                    "recording webhook attempts failed; their lease brings them back");
                return;
            }
        };
        for (endpoint_id, since) in failing {
            let Some(since) = since else { continue };
            let Some((true, claimed, last)) = attempted.get(&endpoint_id) else {
                continue;
            };
            if Utc::now() - since < self.settings.disable_after {
                continue;
            }
            let disable = WebhookCommand::Disable {
                automatic: true,
                reason: format!(
                    "every delivery has failed since {} (last: {})",
                    since.to_rfc3339(),
                    last.as_deref().unwrap_or("no answer")
                ),
            };
            let since = since.timestamp_millis();
            let key = format!("webhook-disable:{endpoint_id}:{since}");
            match self.command(claimed, disable, key, &since).await {
                Ok(()) | Err(CommandError::Domain(DomainError::Unchanged(_))) => {}
                Err(e) => {
                    tracing::warn!(error = %e, %endpoint_id, "disabling a failing endpoint")
                }
            }
        }
    }

    /// One message's attempt; `None` when its outcome cannot be recorded now (a dead
    /// message's report failed): its lease brings it back.
    async fn attempt(&self, c: Claimed, endpoint: Arc<WebhookEndpoint>) -> Option<Done> {
        let enabled = endpoint.enabled;
        let done = |claimed: Claimed, attempt: Option<Attempt>, next: Next| {
            Some(Done {
                settled: Settled {
                    claimed,
                    attempt,
                    next,
                },
                enabled,
            })
        };
        if endpoint.id.is_none() || endpoint.deleted {
            return done(c, None, Next::Dropped);
        }
        if !endpoint.enabled {
            return done(c, None, Next::Paused);
        }
        let now = Utc::now();
        let secrets: Result<Vec<Secret>, _> = endpoint
            .signing_secrets(now)
            .into_iter()
            .map(|sealed| self.sealer.open(sealed))
            .collect();
        let attempt = match secrets {
            Ok(secrets) => {
                self.client
                    .send(&endpoint.url, &c.message_id, &secrets, &c.body)
                    .await
            }
            // A key missing from WEBHOOK_SECRET_KEY: an operator's mistake, retried on the
            // schedule so it can be fixed before the message dies.
            Err(e) => Attempt {
                at: now,
                url: endpoint.url.clone(),
                status_code: None,
                latency_ms: 0,
                error: Some(format!("the signing secret does not open: {e}")),
                response: None,
                succeeded: false,
            },
        };
        let outcome = if attempt.succeeded {
            "delivered"
        } else {
            "failed"
        };
        metrics::counter!("webhook_attempts_total", "outcome" => outcome).increment(1);
        metrics::histogram!("webhook_attempt_seconds")
            .record(f64::from(attempt.latency_ms) / 1000.0);
        let made = usize::try_from(c.attempts).unwrap_or(0) + 1;
        let next = if attempt.succeeded {
            Next::Delivered
        } else {
            match self.settings.schedule.after(made) {
                Some(delay) => Next::RetryIn(delay),
                None => Next::Dead,
            }
        };
        if next == Next::Dead {
            let report = WebhookCommand::ReportDeadMessage {
                message_id: c.message_id.clone(),
                event_id: c.event_id,
                event_type: c.event_type.clone(),
                attempts: c.total_attempts + 1,
                last_error: attempt.error.clone().unwrap_or_default(),
            };
            let attempts = c.total_attempts + 1;
            let key = format!("webhook-dead:{}:{attempts}", c.message_id);
            if let Err(e) = self
                .command(&c, report, key, &(&c.message_id, attempts))
                .await
            {
                tracing::warn!(error = %e, message_id = %c.message_id,
                    "reporting a dead webhook message; its lease brings it back");
                return None;
            }
            metrics::counter!("webhook_messages_dead_total").increment(1);
        }
        done(c, Some(attempt), next)
    }

    async fn command(
        &self,
        c: &Claimed,
        body: WebhookCommand,
        key: String,
        request: &impl serde::Serialize,
    ) -> Result<(), CommandError> {
        let meta = RequestMeta {
            tenant_id: c.tenant_id.clone(),
            user_id: SUBJECT.to_owned(),
            reach: Reach::Tenant,
            correlation_id: c.message_id.clone(),
            causation_id: c.event_id.to_string(),
            traceparent: None,
            tracestate: None,
            // The request: this command on this endpoint, for what the key names (a dead
            // message's attempt, the start of a failing streak); the reason's wording (the
            // last error) is no part of it.
            idempotency: Some(Idempotency::new(
                key,
                &format!("{} {}", body.name(), c.endpoint_id),
                request,
            )),
        };
        self.commands
            .webhook_endpoint(c.endpoint_id, body, None, &meta)
            .await
            .map(|_| ())
    }
}

/// Claims taken per endpoint in one claim, in rounds of `per_endpoint` attempts: the
/// claim (a statement) is paid once per this many rounds of sends, and the next round
/// starts from memory as soon as a slot is free.
const AHEAD: usize = 4;

/// What the dispatcher holds: attempts in flight per endpoint, and messages claimed but
/// not started yet (at most `per_endpoint` of an endpoint run at once).
#[derive(Default)]
struct Held {
    in_flight: HashMap<Uuid, usize>,
    waiting: HashMap<Uuid, VecDeque<Waiting>>,
    /// Endpoints whose last claim took as many as it could (they may have more due).
    supplied: std::collections::HashSet<Uuid>,
}

struct Waiting {
    claimed: Claimed,
    endpoint: Arc<WebhookEndpoint>,
    at: Instant,
}

impl Held {
    /// Messages claimed and not started, of every endpoint.
    fn queued(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// How many messages of `endpoint` are in flight or waiting.
    fn holding(&self, endpoint: &Uuid) -> usize {
        self.in_flight.get(endpoint).copied().unwrap_or(0)
            + self.waiting.get(endpoint).map_or(0, VecDeque::len)
    }

    /// Endpoints holding two rounds or more: not claimed for now.
    fn busy(&self, per_endpoint: usize) -> Vec<Uuid> {
        let mut held: Vec<Uuid> = self.in_flight.keys().copied().collect();
        held.extend(
            self.waiting
                .keys()
                .filter(|id| !self.in_flight.contains_key(id)),
        );
        held.retain(|id| self.holding(id) >= 2 * per_endpoint);
        held
    }

    /// Whether an endpoint that may have more due messages holds less than two rounds.
    fn low(&self, per_endpoint: usize) -> bool {
        self.supplied
            .iter()
            .any(|id| self.holding(id) < 2 * per_endpoint)
    }

    /// Notes which endpoints may have more due after a claim that passed over `busy`:
    /// those it took `limit` of, and those it passed over that may have had more. Any
    /// other had no more due when claimed (the poll finds what comes due later).
    fn claimed_for(&mut self, claimed: &[Claimed], limit: usize, busy: &[Uuid]) {
        let mut taken: HashMap<Uuid, usize> = HashMap::new();
        for c in claimed {
            *taken.entry(c.endpoint_id).or_default() += 1;
        }
        self.supplied.retain(|id| busy.contains(id));
        self.supplied.extend(
            taken
                .into_iter()
                .filter(|(_, n)| *n >= limit)
                .map(|(id, _)| id),
        );
    }

    /// Keeps `claimed` to start, reading each endpoint once for the batch. A message
    /// whose endpoint cannot be read now is left to its lease.
    async fn queue(&mut self, dispatcher: &Dispatcher, claimed: Vec<Claimed>) {
        let mut states: HashMap<Uuid, Option<Arc<WebhookEndpoint>>> = HashMap::new();
        let at = Instant::now();
        for c in claimed {
            let endpoint = match states.get(&c.endpoint_id) {
                Some(state) => state.clone(),
                None => {
                    let state = endpoints::current(dispatcher.commands.reader(), c.endpoint_id)
                        .await
                        .map(Arc::new)
                        .inspect_err(|e| tracing::warn!(error = %e, "reading a webhook endpoint"))
                        .ok();
                    states.insert(c.endpoint_id, state.clone());
                    state
                }
            };
            let Some(endpoint) = endpoint else { continue };
            self.waiting
                .entry(c.endpoint_id)
                .or_default()
                .push_back(Waiting {
                    claimed: c,
                    endpoint,
                    at,
                });
        }
    }

    /// Starts waiting messages while their endpoint and the dispatcher have room. One
    /// that waited half its lease is let go unsent: its lease brings it back, so this
    /// process never sends it while another may have claimed it again.
    fn start(&mut self, this: &Arc<Dispatcher>, tasks: &mut JoinSet<(Uuid, Option<Done>)>) {
        let s = &this.settings;
        let stale = s.lease / 2;
        for (id, waiting) in self.waiting.iter_mut() {
            let running = self.in_flight.entry(*id).or_default();
            while *running < s.per_endpoint && tasks.len() < s.concurrency {
                let Some(w) = waiting.pop_front() else { break };
                if w.at.elapsed() > stale {
                    continue;
                }
                *running += 1;
                let (this, id) = (this.clone(), *id);
                tasks.spawn(async move { (id, this.attempt(w.claimed, w.endpoint).await) });
            }
        }
        self.waiting.retain(|_, waiting| !waiting.is_empty());
        self.in_flight.retain(|_, n| *n > 0);
    }

    /// An attempt's end: its endpoint's slot is free, its outcome to be recorded.
    fn collect(
        &mut self,
        finished: &mut Vec<Done>,
        joined: Result<(Uuid, Option<Done>), tokio::task::JoinError>,
    ) {
        let Ok((id, done)) = joined else {
            tracing::error!("a webhook attempt panicked; its lease brings it back");
            return;
        };
        if let Some(n) = self.in_flight.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&id);
            }
        }
        finished.extend(done);
    }
}
