//! Figures for the benchmarks: one rule for every percentile they report, and the
//! baselines they are compared with.

use std::time::Duration;

/// The index of the `p` percentile (0..=1) of `len` sorted values, by the nearest rank.
fn rank(len: usize, p: f64) -> usize {
    ((len - 1) as f64 * p).round() as usize
}

/// The `p` percentile (0..=1) of `sorted` latencies in milliseconds, by the nearest rank.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted[rank(sorted.len(), p)].as_secs_f64() * 1000.0
}

/// p50 and p99 of values already in milliseconds (differences of timestamps, which may
/// be slightly negative across clocks of millisecond resolution); NaN when there are none.
pub fn p50_p99_ms(mut values: Vec<f64>) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    (
        values[rank(values.len(), 0.5)],
        values[rank(values.len(), 0.99)],
    )
}

/// p50 and p99 of `latencies`, in milliseconds.
pub fn p50_p99(mut latencies: Vec<Duration>) -> (f64, f64) {
    latencies.sort();
    (
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99),
    )
}

/// The pgbench baseline `dev/bench/beside-pgbench.sh` measured before it started this
/// benchmark on the same server: rows per second from `clients` clients committing
/// `rows` one-row INSERTs per transaction (`PGBENCH_<rows>ROWS_<clients>C`). `None` when
/// the benchmark runs without the script or that baseline was not measured.
pub fn pgbench_rows_per_second(rows: u32, clients: u32) -> Option<f64> {
    std::env::var(format!("PGBENCH_{rows}ROWS_{clients}C"))
        .ok()?
        .parse()
        .ok()
}

/// The realistic baseline of `dev/bench/beside-pgbench.sh`: transactions per second from
/// `clients` clients each inserting one event row of the events table's shape and size
/// (`PGBENCH_REALISTIC_<clients>C`).
pub fn pgbench_realistic_per_second(clients: u32) -> Option<f64> {
    std::env::var(format!("PGBENCH_REALISTIC_{clients}C"))
        .ok()?
        .parse()
        .ok()
}

/// `ours / baseline` as a ratio line's text, or what is missing.
pub fn ratio(ours: f64, baseline: Option<f64>) -> String {
    match baseline {
        Some(b) if b > 0.0 => format!("{:.2}", ours / b),
        _ => "n/a (run under dev/bench/beside-pgbench.sh)".to_owned(),
    }
}
