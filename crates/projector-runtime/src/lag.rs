//! Consumer lag from broker watermarks and the group's committed offsets.

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::util::Timeout;
use tokio::sync::watch;

use crate::ProjectorStatus;

/// Measures lag every `every` until the consumer is gone.
pub(crate) async fn measure(
    consumer: std::sync::Weak<StreamConsumer>,
    status: watch::Sender<ProjectorStatus>,
    every: Duration,
    name: &'static str,
) {
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = consumer.upgrade() else { return };
        let measured = tokio::task::spawn_blocking(
            move || -> Result<(i64, usize), rdkafka::error::KafkaError> {
                let assignment = c.assignment()?;
                let assigned = assignment.count();
                let committed =
                    c.committed_offsets(assignment, Timeout::After(Duration::from_secs(5)))?;
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
            },
        )
        .await;
        let Ok(Ok((behind, assigned))) = measured else {
            continue;
        };
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
}
