//! Latency figures for the benchmarks: one rule for every percentile they report.

use std::time::Duration;

/// The `p` percentile (0..=1) of `sorted` latencies in milliseconds, by the nearest rank.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// p50 and p99 of `latencies`, in milliseconds.
pub fn p50_p99(mut latencies: Vec<Duration>) -> (f64, f64) {
    latencies.sort();
    (
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99),
    )
}
