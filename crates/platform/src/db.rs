//! The PostgreSQL connection pool.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::{self, ConfigError};

#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `DATABASE_URL`
    pub url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 20)
    pub max_connections: u32,
}

impl DbConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            url: config::required("DATABASE_URL")?,
            max_connections: config::parse_or("DATABASE_MAX_CONNECTIONS", 20)?,
        })
    }

    pub async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.url)
            .await
    }
}
