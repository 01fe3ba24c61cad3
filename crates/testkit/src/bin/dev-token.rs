//! Prints an HS256 token for local development and benchmarks:
//!
//!     JWT_HS256_SECRET=... dev-token <tenant> <subject> <role>[,<role>...] [ttl-seconds]
//!
//! Roles: member, admin, auditor, service. Never use HS256 dev tokens in production.

use platform::auth::Role;
use testkit::tokens::hs256_token;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(tenant), Some(subject), Some(roles)) = (args.first(), args.get(1), args.get(2))
    else {
        eprintln!("usage: dev-token <tenant> <subject> <role>[,<role>...] [ttl-seconds]");
        std::process::exit(2);
    };
    let Some(secret) = platform::config::var("JWT_HS256_SECRET") else {
        eprintln!("JWT_HS256_SECRET is not set");
        std::process::exit(2);
    };
    let roles: Result<Vec<Role>, _> = roles
        .split(',')
        .map(|r| serde_json::from_value(serde_json::Value::String(r.trim().to_owned())))
        .collect();
    let Ok(roles) = roles else {
        eprintln!("unknown role in {roles:?}: use member, admin, auditor, service");
        std::process::exit(2);
    };
    let ttl = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(3600);
    println!(
        "{}",
        hs256_token(secret.as_bytes(), tenant, subject, &roles, ttl)
    );
}
