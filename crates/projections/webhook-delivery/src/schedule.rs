//! When a message is tried again: the delays between attempts, persisted as the message's
//! `next_attempt_at`, so a restart resumes the schedule where it was.

use std::time::Duration;

use thiserror::Error;

/// The default schedule, after the best delivery services: the first attempt at once,
/// then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h later (8 attempts over about a day).
pub const DEFAULT: &str = "0s,5s,5m,30m,2h,5h,10h,10h";

/// Delays before each attempt: the first is the delay before the first attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    delays: Vec<Duration>,
    /// Up to this fraction of a delay is added or removed at random, so retries of many
    /// messages do not arrive together.
    jitter: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a retry schedule is a comma-separated list of delays such as 0s,5s,5m,2h (got {0:?})")]
pub struct BadSchedule(String);

fn parse_delay(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, BadSchedule> {
        let delays: Option<Vec<Duration>> = text.split(',').map(parse_delay).collect();
        match delays {
            Some(delays) if !delays.is_empty() => Ok(Schedule {
                delays,
                jitter: 0.1,
            }),
            _ => Err(BadSchedule(text.to_owned())),
        }
    }

    /// Without jitter (tests that check exact steps).
    pub fn without_jitter(mut self) -> Schedule {
        self.jitter = 0.0;
        self
    }

    /// How many attempts a message gets in all.
    pub fn attempts(&self) -> usize {
        self.delays.len()
    }

    /// The delay before the first attempt.
    pub fn first(&self) -> Duration {
        self.delays[0]
    }

    /// After `made` failed attempts, the delay before the next one; `None` when the
    /// schedule is over and the message is dead.
    pub fn after(&self, made: usize) -> Option<Duration> {
        let base = *self.delays.get(made)?;
        if self.jitter == 0.0 || base.is_zero() {
            return Some(base);
        }
        let mut bytes = [0u8; 8];
        // Without randomness the delay is simply not jittered.
        let unit = match getrandom::fill(&mut bytes) {
            Ok(()) => (u64::from_le_bytes(bytes) as f64 / u64::MAX as f64) * 2.0 - 1.0,
            Err(_) => 0.0,
        };
        Some(base.mul_f64(1.0 + self.jitter * unit))
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::parse(DEFAULT).unwrap_or(Schedule {
            delays: vec![Duration::ZERO],
            jitter: 0.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_the_documented_one() {
        let s = Schedule::default().without_jitter();
        let minutes: Vec<u64> = (0..s.attempts())
            .map(|i| s.after(i).expect("a delay").as_secs())
            .collect();
        assert_eq!(minutes, [0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(s.after(8), None);
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let s = Schedule::default();
        for _ in 0..100 {
            let d = s.after(2).expect("a delay").as_secs_f64();
            assert!((270.0..=330.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn schedules_parse_with_units_and_refuse_nonsense() {
        let s = Schedule::parse("0s, 500ms,2m")
            .expect("parses")
            .without_jitter();
        assert_eq!(s.after(1), Some(Duration::from_millis(500)));
        assert_eq!(s.after(2), Some(Duration::from_secs(120)));
        for bad in ["", "5", "5x", "s", "1s,,2s", "-1s"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
