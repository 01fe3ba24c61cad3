//! A circuit breaker per provider. Closed, it lets every call through and counts
//! consecutive failures; after [`BreakerSettings::failures`] of them it opens for
//! [`BreakerSettings::cooldown`], during which no call is made. Then it is half-open: one
//! trial call goes through (others are still refused); its success closes the breaker,
//! its failure opens it for another cooldown. A call holds a [`Permit`]; a permit dropped
//! without a verdict (the caller gave up) counts as a failure, so a half-open breaker
//! never waits forever for a trial that will not report.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// The longest cooldown honoured (a longer one is shortened to it).
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker (at least 1).
    pub failures: u32,
    /// How long it stays open before a trial call.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// What the breaker is doing, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

pub struct Breaker {
    settings: BreakerSettings,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The trial call is under way.
    HalfOpen,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("settings", &self.settings)
            .field("state", &self.state())
            .finish()
    }
}

impl Breaker {
    pub fn new(settings: BreakerSettings, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Breaker {
            settings: BreakerSettings {
                failures: settings.failures.max(1),
                cooldown: settings.cooldown.min(MAX_COOLDOWN),
            },
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
        })
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { failures } => BreakerState::Closed { failures },
            State::Open { until } => BreakerState::Open { until },
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// A permit to call the provider, or `None` while the breaker is open (or half-open
    /// with its trial call under way).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Some(Permit::new(self)),
            State::Open { until } if self.clock.now() >= until => {
                *state = State::HalfOpen;
                Some(Permit::new(self))
            }
            State::Open { .. } | State::HalfOpen => None,
        }
    }

    fn record(&self, success: bool) {
        let mut state = self.lock();
        let next = match (*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) => {
                let failures = failures.saturating_add(1);
                if failures >= self.settings.failures {
                    State::Open {
                        until: self.clock.now() + self.settings.cooldown,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            (State::HalfOpen, false) => State::Open {
                until: self.clock.now() + self.settings.cooldown,
            },
            // A call that began before the breaker opened: it stays open as it was.
            (open @ State::Open { .. }, false) => open,
        };
        *state = next;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Leave to make one call; report how it went with [`Permit::succeeded`] or
/// [`Permit::failed`] (dropping it unreported counts as a failure).
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    reported: bool,
}

impl Permit {
    fn new(breaker: &Arc<Breaker>) -> Self {
        Permit {
            breaker: Arc::clone(breaker),
            reported: false,
        }
    }

    /// The provider answered (even with a refusal of the request): it is up.
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.record(true);
    }

    /// The provider failed or did not answer.
    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.record(false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn breaker(clock: &Arc<ManualClock>) -> Arc<Breaker> {
        Breaker::new(
            BreakerSettings {
                failures: 2,
                cooldown: Duration::from_secs(30),
            },
            clock.clone(),
        )
    }

    #[test]
    fn it_opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let clock = Arc::new(ManualClock::at(chrono::Utc::now()));
        let b = breaker(&clock);
        b.try_acquire().unwrap().failed();
        b.try_acquire().unwrap().succeeded();
        b.try_acquire().unwrap().failed();
        assert_eq!(b.state(), BreakerState::Closed { failures: 1 });
        b.try_acquire().unwrap().failed();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert!(b.try_acquire().is_none());
        clock.advance(Duration::from_secs(29));
        assert!(b.try_acquire().is_none());
    }

    #[test]
    fn after_the_cooldown_one_trial_goes_through_and_decides() {
        let clock = Arc::new(ManualClock::at(chrono::Utc::now()));
        let b = breaker(&clock);
        b.try_acquire().unwrap().failed();
        b.try_acquire().unwrap().failed();
        clock.advance(Duration::from_secs(30));
        let trial = b.try_acquire().expect("a trial after the cooldown");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire().is_none(), "one trial at a time");
        trial.failed();
        assert!(b.try_acquire().is_none(), "a failed trial opens it again");
        clock.advance(Duration::from_secs(30));
        // A trial abandoned by its caller counts as failed, it does not wedge the breaker.
        drop(b.try_acquire().expect("trial"));
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        clock.advance(Duration::from_secs(30));
        b.try_acquire().expect("trial").succeeded();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert!(b.try_acquire().is_some());
    }
}
