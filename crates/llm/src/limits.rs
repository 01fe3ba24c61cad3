//! A provider's own limits, kept by the router for every caller of this process: calls
//! in flight at once, requests and tokens per minute (token buckets refilled
//! continuously), and a pause when the provider answered `Retry-After`. A call that does
//! not fit waits its turn instead of failing; only a pause longer than the router is
//! willing to wait sends the call to the next provider of its route.
//!
//! Tokens are counted before the call from an estimate (the prompt's words and the answer
//! allowed) and corrected with what the provider reports afterwards.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::Clock;
use crate::{ChatRequest, approximate_tokens};

/// What one provider allows this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Calls in flight at once (`None`: no bound).
    pub max_concurrency: Option<usize>,
    /// Requests per minute (`None`: no bound).
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute, prompt and answer (`None`: no bound).
    pub tokens_per_minute: Option<u32>,
}

/// Answer tokens counted for a request that does not say how many it allows.
const DEFAULT_ANSWER_TOKENS: u32 = 512;

/// A bucket of `capacity` that refills at `capacity` per minute.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Self {
        Bucket {
            capacity: f64::from(per_minute.max(1)),
            level: f64::from(per_minute.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.capacity / 60.0).min(self.capacity);
        self.at = now;
    }

    /// How long until `amount` fits (zero: now). An amount above the capacity waits for a
    /// full bucket and then takes it all.
    fn wait_for(&self, amount: f64) -> Duration {
        let wanted = amount.min(self.capacity);
        if self.level >= wanted {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((wanted - self.level) * 60.0 / self.capacity)
    }
}

#[derive(Debug)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    /// Nothing is sent before this (the provider's `Retry-After`).
    paused_until: Option<Instant>,
}

/// The limits of one provider, shared by every call to it.
pub(crate) struct Limiter {
    clock: Arc<dyn Clock>,
    calls: Option<Arc<Semaphore>>,
    state: Mutex<State>,
}

/// A call let through: it holds a call slot until dropped, and its token estimate until
/// [`Limiter::settle`] corrects it.
pub(crate) struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
    tokens: f64,
}

impl Limiter {
    pub(crate) fn new(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Limiter {
            calls: limits
                .max_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            state: Mutex::new(State {
                requests: limits.requests_per_minute.map(|n| Bucket::new(n, now)),
                tokens: limits.tokens_per_minute.map(|n| Bucket::new(n, now)),
                paused_until: None,
            }),
            clock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `req` may be sent: a free call slot, room in this minute's requests and
    /// tokens, the end of a pause. `Err(wait)` when the provider is paused for longer than
    /// `max_pause` (the caller moves on to another provider).
    pub(crate) async fn admit(
        &self,
        req: &ChatRequest,
        max_pause: Duration,
    ) -> Result<Admitted, Duration> {
        let tokens = f64::from(estimate(req));
        let slot = match &self.calls {
            Some(calls) => Some(
                Arc::clone(calls)
                    .acquire_owned()
                    .await
                    .map_err(|_| Duration::MAX)?,
            ),
            None => None,
        };
        loop {
            let wait = {
                let now = self.clock.now();
                let mut state = self.state();
                let paused = state
                    .paused_until
                    .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
                if paused > max_pause {
                    return Err(paused);
                }
                if let Some(b) = state.requests.as_mut() {
                    b.refill(now);
                }
                if let Some(b) = state.tokens.as_mut() {
                    b.refill(now);
                }
                let wait = paused
                    .max(
                        state
                            .requests
                            .as_ref()
                            .map_or(Duration::ZERO, |b| b.wait_for(1.0)),
                    )
                    .max(
                        state
                            .tokens
                            .as_ref()
                            .map_or(Duration::ZERO, |b| b.wait_for(tokens)),
                    );
                if wait.is_zero() {
                    if let Some(b) = state.requests.as_mut() {
                        b.level -= 1.0;
                    }
                    if let Some(b) = state.tokens.as_mut() {
                        b.level -= tokens.min(b.capacity);
                    }
                    return Ok(Admitted {
                        _slot: slot,
                        tokens,
                    });
                }
                wait
            };
            self.clock.sleep(wait).await;
        }
    }

    /// Corrects the token estimate of a call with what it cost.
    pub(crate) fn settle(&self, admitted: &Admitted, used: u64) {
        let mut state = self.state();
        let now = self.clock.now();
        if let Some(b) = state.tokens.as_mut() {
            b.refill(now);
            b.level = (b.level + admitted.tokens - used as f64).min(b.capacity);
        }
    }

    /// The provider asked to wait `for_`: nothing more is sent to it until then.
    pub(crate) fn pause(&self, for_: Duration) {
        let until = self.clock.now() + for_;
        let mut state = self.state();
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
    }
}

/// The tokens a request may cost: its words, a third more (a token is shorter than a
/// word), and the answer it allows.
fn estimate(req: &ChatRequest) -> u32 {
    let words = req
        .messages
        .iter()
        .map(|m| approximate_tokens(&m.content))
        .fold(0u32, u32::saturating_add);
    words
        .saturating_add(words / 3)
        .saturating_add(req.max_tokens.unwrap_or(DEFAULT_ANSWER_TOKENS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChatMessage;
    use crate::clock::ManualClock;

    fn request(words: usize) -> ChatRequest {
        ChatRequest {
            messages: vec![ChatMessage::user(vec!["word"; words].join(" "))],
            max_tokens: Some(100),
            ..ChatRequest::default()
        }
    }

    fn limiter(limits: Limits) -> (Limiter, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(chrono::Utc::now()));
        (Limiter::new(limits, clock.clone()), clock)
    }

    #[tokio::test]
    async fn requests_beyond_the_minute_wait_for_the_bucket_to_refill() {
        let (limiter, clock) = limiter(Limits {
            requests_per_minute: Some(60),
            ..Limits::default()
        });
        for _ in 0..60 {
            limiter
                .admit(&request(1), Duration::ZERO)
                .await
                .expect("within the minute");
        }
        assert!(clock.slept().is_empty());
        limiter
            .admit(&request(1), Duration::ZERO)
            .await
            .expect("the 61st waits");
        // One request per second comes back.
        assert_eq!(clock.slept(), vec![Duration::from_secs(1)]);
    }

    #[tokio::test]
    async fn tokens_are_counted_from_the_estimate_and_corrected_by_the_usage() {
        let (limiter, clock) = limiter(Limits {
            tokens_per_minute: Some(600),
            ..Limits::default()
        });
        // 300 words -> 400 tokens, plus 100 allowed for the answer: 500 of 600.
        let first = limiter
            .admit(&request(300), Duration::ZERO)
            .await
            .expect("fits");
        assert!(clock.slept().is_empty());
        // It cost only 100: 500 are free again, so the next one fits at once.
        limiter.settle(&first, 100);
        limiter
            .admit(&request(300), Duration::ZERO)
            .await
            .expect("fits");
        assert!(clock.slept().is_empty());
        // Now 0 are left: 500 more take 50 seconds at 10 a second.
        limiter
            .admit(&request(300), Duration::ZERO)
            .await
            .expect("waits");
        assert_eq!(clock.slept(), vec![Duration::from_secs(50)]);
    }

    #[tokio::test]
    async fn a_pause_holds_every_caller_and_a_long_one_sends_them_elsewhere() {
        let (limiter, clock) = limiter(Limits::default());
        limiter.pause(Duration::from_secs(3));
        assert_eq!(
            limiter
                .admit(&request(1), Duration::from_secs(2))
                .await
                .err(),
            Some(Duration::from_secs(3))
        );
        limiter
            .admit(&request(1), Duration::from_secs(5))
            .await
            .expect("waits the pause out");
        assert_eq!(clock.slept(), vec![Duration::from_secs(3)]);
    }

    #[tokio::test]
    async fn calls_in_flight_are_bounded() {
        let (limiter, _) = limiter(Limits {
            max_concurrency: Some(2),
            ..Limits::default()
        });
        let a = limiter
            .admit(&request(1), Duration::ZERO)
            .await
            .expect("one");
        let _b = limiter
            .admit(&request(1), Duration::ZERO)
            .await
            .expect("two");
        let one_word = request(1);
        let third = limiter.admit(&one_word, Duration::ZERO);
        tokio::pin!(third);
        assert!(
            futures::poll!(third.as_mut()).is_pending(),
            "a third call waits for a slot"
        );
        drop(a);
        third.await.expect("a slot came back");
    }
}
