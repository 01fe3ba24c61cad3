//! Consumer lag from broker watermarks and the group's committed offsets.
//!
//! Measured on a thread of its own: librdkafka's offset and watermark queries block (up
//! to their timeout against a broker that is gone), and a process must be able to exit
//! without waiting for them, which it could not with tokio's blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::util::Timeout;
use tokio::sync::watch;

use crate::ProjectorStatus;

/// The measuring thread; dropping this stops it (at its next check, at most a
/// measurement later).
pub(crate) struct Lag {
    stop: Arc<AtomicBool>,
}

impl Drop for Lag {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Measures lag every `every` until stopped or the consumer is gone.
pub(crate) fn spawn(
    consumer: std::sync::Weak<StreamConsumer>,
    status: watch::Sender<ProjectorStatus>,
    every: Duration,
    name: &'static str,
) -> Lag {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-lag"))
        .spawn(move || {
            loop {
                let next = Instant::now() + every;
                while Instant::now() < next {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let Some(c) = consumer.upgrade() else { return };
                let measured = measure(&c);
                drop(c);
                if let Ok((behind, assigned)) = measured {
                    publish(&status, behind, assigned, name);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the lag thread; lag is not measured");
    }
    Lag { stop }
}

fn measure(c: &StreamConsumer) -> Result<(i64, usize), rdkafka::error::KafkaError> {
    let assignment = c.assignment()?;
    let assigned = assignment.count();
    let committed = c.committed_offsets(assignment, Timeout::After(Duration::from_secs(5)))?;
    let mut behind = 0;
    for tp in committed.elements() {
        let (low, high) = c.fetch_watermarks(
            tp.topic(),
            tp.partition(),
            Timeout::After(Duration::from_secs(5)),
        )?;
        let at = tp.offset().to_raw().filter(|o| *o >= 0).unwrap_or(low);
        behind += (high - at).max(0);
    }
    Ok((behind, assigned))
}

fn publish(
    status: &watch::Sender<ProjectorStatus>,
    behind: i64,
    assigned: usize,
    name: &'static str,
) {
    status.send_modify(|s| {
        s.assigned_partitions = assigned;
        s.lag_events = behind;
        s.lag_seconds = match (behind, s.last_recorded_at) {
            (0, _) | (_, None) => 0.0,
            (_, Some(t)) => (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0,
        };
    });
    let s = status.borrow().clone();
    metrics::gauge!("projector_lag_events", "projector" => name).set(s.lag_events as f64);
    metrics::gauge!("projector_lag_seconds", "projector" => name).set(s.lag_seconds);
}
