//! The PostgreSQL connection pool.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config;

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "PostgreSQL")]
pub struct DbConfig {
    /// PostgreSQL URL, e.g. `postgres://user:password@host:5432/threadline` (`dev/stack`
    /// sets it).
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub url: String,
    /// Connections in this process's pool.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 20
    )]
    pub max_connections: u32,
    /// Longest statement, in milliseconds (0: no limit): a slow database then fails a
    /// request instead of holding it.
    #[arg(long = "database-statement-timeout-ms", env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value = "30000", value_parser = config::millis)]
    pub statement_timeout: Duration,
}

impl DbConfig {
    /// Connection settings: the URL, plus the session limits every connection gets
    /// (statement timeout; a transaction left idle is ended after 60 s, as it would hold
    /// back every reader of the event log).
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let options: PgConnectOptions = self.url.parse()?;
        Ok(options.options([
            (
                "statement_timeout",
                self.statement_timeout.as_millis().to_string(),
            ),
            ("idle_in_transaction_session_timeout", "60000".to_owned()),
        ]))
    }

    pub async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(self.connect_options()?)
            .await
    }
}
