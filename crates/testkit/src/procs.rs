//! What `/proc` says of a process, for tests that bound what a process and its children
//! do (the extractor's children of command-api, say).

use std::time::{Duration, Instant};

/// Children of `parent` running now (an exited child not yet waited for runs no more:
/// it is not counted).
pub fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            out.push(pid);
        }
    }
    out
}

/// Waits until `parent` has no child running, `within` at most.
pub async fn until_no_children(parent: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while !children(parent).is_empty() {
        assert!(
            Instant::now() < deadline,
            "children still running: {:?}",
            children(parent)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU seconds of `pid`'s children that it waited for (cutime + cstime).
pub fn children_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    // After the comm: state is field 3 of the man page, cutime 16 and cstime 17.
    let ticks =
        fields[13].parse::<u64>().expect("cutime") + fields[14].parse::<u64>().expect("cstime");
    ticks as f64 / 100.0
}

/// A `field` of `/proc/<pid>/status` given in KiB (`VmHWM:`, the peak resident memory).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"))
}
