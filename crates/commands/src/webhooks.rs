//! Webhook endpoint commands: the service generates and seals the signing secret (the
//! aggregate only ever sees it sealed), checks the URL against the SSRF guard (form and
//! the addresses its host resolves to now; delivery checks again), then lets the
//! WebhookEndpoint aggregate decide. The secret in clear leaves only in the answer to the
//! admin who created or rotated it.

use std::sync::Arc;

use chrono::Duration;
use common::config::ConfigError;
use domain::{Version, WebhookCommand};
use schemas::{AggregateKind, Event};
use thiserror::Error;
use uuid::Uuid;
use webhooks::sealed::{SealError, Sealer};
use webhooks::signature::Secret;
use webhooks::ssrf::{Guard, Refused};

use crate::{Accepted, CommandError, CommandService, RequestMeta};

/// What webhook commands need: the key secrets are sealed with, and the address rules.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub sealer: Arc<Sealer>,
    pub guard: Guard,
}

/// The settings of [`WebhookSettings`] (command-api and webhooks-projector read them).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Webhooks")]
pub struct WebhookKeys {
    /// Base64 of 32 random bytes that seals the endpoints' signing secrets; comma-separated
    /// to rotate it (the first seals, all open). Unset: command-api cannot create webhook
    /// endpoints (`dev/stack` sets a fixed local key); webhooks-projector requires it.
    #[arg(
        long = "webhook-secret-key",
        env = "WEBHOOK_SECRET_KEY",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
    /// Allow endpoints on loopback addresses (tests and local use only).
    #[arg(long = "webhook-allow-loopback", env = "WEBHOOK_ALLOW_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_loopback: bool,
    /// Allow plain `http` endpoints (tests and local use only).
    #[arg(long = "webhook-allow-http", env = "WEBHOOK_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_http: bool,
}

impl WebhookSettings {
    /// `None` when no key is set: webhooks are off.
    pub fn from_keys(keys: WebhookKeys) -> Result<Option<WebhookSettings>, ConfigError> {
        let Some(secret) = keys.secret_key else {
            return Ok(None);
        };
        let sealer = Sealer::from_keys(&secret)
            .map_err(|e| ConfigError::invalid("WEBHOOK_SECRET_KEY", "***", e))?;
        let guard = Guard {
            allow_loopback: keys.allow_loopback,
            allow_http: keys.allow_http,
        };
        Ok(Some(WebhookSettings {
            sealer: Arc::new(sealer),
            guard,
        }))
    }
}

#[derive(Debug, Error)]
pub enum WebhookError {
    #[error("webhooks are not configured on this server (WEBHOOK_SECRET_KEY is not set)")]
    NotConfigured,
    #[error(transparent)]
    UrlRefused(#[from] Refused),
    #[error("the signing secret could not be sealed or opened: {0}")]
    Seal(#[from] SealError),
}

/// A new endpoint's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
}

/// Changes to an endpoint; `None` keeps what it has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
}

impl CommandService {
    fn webhook_settings(&self) -> Result<&WebhookSettings, CommandError> {
        self.webhooks_settings
            .as_ref()
            .ok_or(CommandError::Webhook(WebhookError::NotConfigured))
    }

    /// The URL's form, and the addresses its host resolves to now. A host that does not
    /// resolve yet is accepted: every delivery resolves and checks again.
    async fn check_endpoint_url(&self, url: &str) -> Result<(), CommandError> {
        let guard = self.webhook_settings()?.guard;
        let parsed = guard.check_url(url).map_err(WebhookError::from)?;
        match guard.resolve(&parsed).await {
            Ok(_) | Err(Refused::Unresolved(_)) => Ok(()),
            Err(refused) => {
                if let Refused::Address { host, ip, reason } = &refused {
                    tracing::info!(%host, %ip, reason, "webhook endpoint refused: its host resolves to a forbidden address");
                }
                Err(WebhookError::from(refused).into())
            }
        }
    }

    fn new_sealed_secret(&self) -> Result<String, CommandError> {
        let secret =
            Secret::generate().map_err(|e| CommandError::Webhook(WebhookError::Seal(e.into())))?;
        Ok(self
            .webhook_settings()?
            .sealer
            .seal(&secret)
            .map_err(WebhookError::from)?)
    }

    /// The signing secret an accepted create or rotation recorded, opened to show once
    /// to its admin (also when the answer is replayed for a repeated idempotency key).
    pub fn revealed_secret(&self, accepted: &Accepted) -> Result<Option<Secret>, CommandError> {
        let sealer = &self.webhook_settings()?.sealer;
        let sealed = accepted.events.iter().rev().find_map(|e| match e {
            Event::WebhookEndpointCreated(c) => Some(&c.sealed_secret),
            Event::WebhookSecretRotated(r) => Some(&r.sealed_secret),
            _ => None,
        });
        sealed
            .map(|s| sealer.open(s))
            .transpose()
            .map_err(|e| WebhookError::from(e).into())
    }

    pub async fn create_webhook_endpoint(
        &self,
        endpoint: NewEndpoint,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        self.check_endpoint_url(&endpoint.url).await?;
        let endpoint_id = Uuid::now_v7();
        let body = WebhookCommand::Create {
            endpoint_id,
            url: endpoint.url,
            event_types: endpoint.event_types,
            description: endpoint.description,
            sealed_secret: self.new_sealed_secret()?,
        };
        self.webhook_endpoint(endpoint_id, body, None, meta).await
    }

    pub async fn update_webhook_endpoint(
        &self,
        id: Uuid,
        changes: EndpointChanges,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        if let Some(url) = &changes.url {
            self.check_endpoint_url(url).await?;
        }
        let body = WebhookCommand::Update {
            url: changes.url,
            event_types: changes.event_types,
            description: changes.description,
        };
        self.webhook_endpoint(id, body, expected, meta).await
    }

    /// A new secret; the current one keeps signing for `grace`.
    pub async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        grace: Duration,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let body = WebhookCommand::RotateSecret {
            sealed_secret: self.new_sealed_secret()?,
            grace,
        };
        self.webhook_endpoint(id, body, expected, meta).await
    }

    /// Any other endpoint command (disable, enable, delete, a dead message's report, a
    /// redelivery): nothing to prepare outside the aggregate. Needs no webhook settings,
    /// so the delivery service can report without the sealing key's holder in between.
    pub async fn webhook_endpoint(
        &self,
        id: Uuid,
        body: WebhookCommand,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let name = body.name();
        let command = domain::Command {
            ctx: Self::ctx(meta, expected),
            body,
        };
        self.execute(
            &self.webhook_endpoints,
            AggregateKind::WebhookEndpoint,
            id,
            name,
            command,
            meta,
        )
        .await
    }
}
