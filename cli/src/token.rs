//! `threadline token`: a development token, signed with the HS256 secret a development
//! stack verifies with (`JWT_HS256_SECRET`; `dev/stack` sets it). A deployment that
//! verifies its issuer's RS256 tokens (`JWT_JWKS_URL`) accepts none of these.

use platform::auth::Role;
use serde_json::json;

use crate::Output;
use crate::api::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The token's tenant (`tenant_id`).
    #[arg(long, default_value = "dev")]
    tenant: String,
    /// The token's subject (`sub`).
    #[arg(long, default_value = "developer")]
    subject: String,
    /// Comma-separated roles: member, admin, auditor, service.
    #[arg(long, value_delimiter = ',', value_parser = role, default_value = "member,admin,auditor")]
    roles: Vec<Role>,
    /// Seconds until it expires.
    #[arg(long = "ttl", default_value_t = 3600)]
    ttl_seconds: i64,
    /// The secret the APIs verify with.
    #[arg(
        long = "jwt-hs256-secret",
        env = "JWT_HS256_SECRET",
        hide_env_values = true
    )]
    secret: String,
}

fn role(text: &str) -> Result<Role, String> {
    serde_json::from_value(json!(text.trim()))
        .map_err(|_| format!("{text:?}: use member, admin, auditor or service"))
}

pub fn run(args: Args, out: Output) -> Result<(), Failure> {
    let token = platform::auth::sign_hs256(
        args.secret.as_bytes(),
        &args.tenant,
        &args.subject,
        &args.roles,
        args.ttl_seconds,
    );
    out.print(
        &json!({"token": token, "tenant": args.tenant, "subject": args.subject, "roles": args.roles, "ttl_seconds": args.ttl_seconds}),
        || format!("{token}\n"),
    );
    Ok(())
}
