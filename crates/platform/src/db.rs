//! The PostgreSQL connection pool.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::{self, ConfigError};

#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `DATABASE_URL`
    pub url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 20)
    pub max_connections: u32,
    /// `DATABASE_STATEMENT_TIMEOUT_MS` (default 30000): no statement of a service runs
    /// longer (0: no limit). A slow database then fails a request instead of holding it.
    pub statement_timeout: Duration,
}

impl DbConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            url: config::required("DATABASE_URL")?,
            max_connections: config::parse_or("DATABASE_MAX_CONNECTIONS", 20)?,
            statement_timeout: Duration::from_millis(config::parse_or(
                "DATABASE_STATEMENT_TIMEOUT_MS",
                30_000,
            )?),
        })
    }

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
