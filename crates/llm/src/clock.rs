//! Time as the router sees it: a monotonic instant (circuit-breaker cooldowns), the UTC
//! wall clock (budget days) and sleeping (backoff, `Retry-After`). [`SystemClock`] is the
//! real one; [`ManualClock`] moves only when told or when slept on, so breaker, budget
//! and retry behaviour can be tested without waiting.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now, in UTC.
    fn utc(&self) -> DateTime<Utc>;
    /// Waits `duration`.
    async fn sleep(&self, duration: Duration);
}

/// The real clock: `Instant::now`, `Utc::now`, `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn utc(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it. Sleeping on it
/// returns at once, advances it by the duration and is recorded ([`ManualClock::slept`]).
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_utc: DateTime<Utc>,
    state: Mutex<ManualState>,
}

#[derive(Debug, Default)]
struct ManualState {
    elapsed: Duration,
    slept: Vec<Duration>,
}

impl ManualClock {
    /// A clock showing `utc` now.
    pub fn at(utc: DateTime<Utc>) -> Self {
        ManualClock {
            start: Instant::now(),
            start_utc: utc,
            state: Mutex::new(ManualState::default()),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut state = self.state();
        state.elapsed = state.elapsed.saturating_add(by);
    }

    /// Every sleep asked of this clock, in order.
    pub fn slept(&self) -> Vec<Duration> {
        self.state().slept.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.state().elapsed
    }

    fn utc(&self) -> DateTime<Utc> {
        let elapsed =
            chrono::TimeDelta::from_std(self.state().elapsed).unwrap_or(chrono::TimeDelta::MAX);
        self.start_utc
            .checked_add_signed(elapsed)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    async fn sleep(&self, duration: Duration) {
        {
            let mut state = self.state();
            state.elapsed = state.elapsed.saturating_add(duration);
            state.slept.push(duration);
        }
        tokio::task::yield_now().await;
    }
}
