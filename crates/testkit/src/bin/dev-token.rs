//! Prints an HS256 token for local development and benchmarks:
//!
//!     JWT_HS256_SECRET=... dev-token <tenant> <subject> <role>[,<role>...] [ttl-seconds]
//!
//! Roles: member, admin, auditor, service. Never use HS256 dev tokens in production.

use platform::auth::Role;
use testkit::tokens::hs256_token;

/// Prints an HS256 token for local development and benchmarks (never use one in
/// production).
#[derive(Debug, clap::Parser)]
struct Cli {
    /// The token's tenant (`tenant_id`).
    tenant: String,
    /// The token's subject (`sub`).
    subject: String,
    /// Comma-separated roles: member, admin, auditor, service.
    #[arg(value_parser = roles)]
    roles: ::std::vec::Vec<Role>,
    /// Seconds until it expires.
    #[arg(default_value_t = 3600)]
    ttl_seconds: i64,
    /// The secret the APIs verify with (`dev/stack` sets it).
    #[arg(
        long = "jwt-hs256-secret",
        env = "JWT_HS256_SECRET",
        hide_env_values = true
    )]
    secret: String,
}

fn roles(text: &str) -> Result<Vec<Role>, String> {
    text.split(',')
        .map(|r| {
            serde_json::from_value(serde_json::Value::String(r.trim().to_owned()))
                .map_err(|_| format!("{r:?}: use member, admin, auditor or service"))
        })
        .collect()
}

fn main() {
    let cli: Cli = platform::config::parse("dev-token");
    println!(
        "{}",
        hs256_token(
            cli.secret.as_bytes(),
            &cli.tenant,
            &cli.subject,
            &cli.roles,
            cli.ttl_seconds
        )
    );
}
