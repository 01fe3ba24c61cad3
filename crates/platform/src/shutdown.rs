//! Stopping within a bounded time, whatever the state of the broker and the database.
//!
//! Graceful shutdown finishes in-flight requests, commits consumer offsets and flushes
//! producers; each of those can wait on a peer that no longer answers (librdkafka retries
//! a final offset commit against a dead broker for as long as it is allowed to). So once a
//! stop is requested, the process ends after the grace period even if something is still
//! waiting, and a second signal ends it at once.

use std::time::Duration;

use crate::config;

/// Exit status when the grace period runs out or a second signal arrives.
pub const FORCED_EXIT: i32 = 130;

#[derive(Debug, Clone, Copy, clap::Args)]
#[command(next_help_heading = "Process")]
pub struct Shutdown {
    /// Seconds a graceful stop may take after SIGINT/SIGTERM: the process ends within
    /// this whatever the broker and the database do; a second signal ends it at once.
    /// Keep it under the orchestrator's own limit (Kubernetes'
    /// `terminationGracePeriodSeconds`, 30).
    #[arg(long = "shutdown-grace-secs", env = "SHUTDOWN_GRACE_SECS", default_value = "8", value_parser = config::secs)]
    pub grace: Duration,
}

impl Shutdown {
    /// Resolves on the first SIGINT or SIGTERM. From then on the process is bound to end:
    /// after `grace`, or at the next signal.
    pub async fn requested(self) {
        signal().await;
        tracing::info!(
            grace_secs = self.grace.as_secs_f64(),
            "stop requested; shutting down"
        );
        let grace = self.grace;
        // A plain thread: it fires even if every async worker is blocked.
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            tracing::error!("graceful shutdown did not finish in time; exiting");
            eprintln!("graceful shutdown did not finish within {grace:?}; exiting");
            std::process::exit(FORCED_EXIT);
        });
        tokio::spawn(async {
            signal().await;
            eprintln!("second stop signal; exiting now");
            std::process::exit(FORCED_EXIT);
        });
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
