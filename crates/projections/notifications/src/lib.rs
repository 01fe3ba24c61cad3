//! The notifications projection, a side-effect projection: when a document a user asked
//! for is generated, a conversation ends, the assistant cannot answer a user's message,
//! or a webhook endpoint a user created loses a message or is disabled for failing, the
//! user is told through a channel (a log
//! line, or an HTTP POST to a configured endpoint), and the notification lands in the
//! user's in-app inbox (a table of this projection's generation).
//!
//! Each notification's id is its effect id: stable for an event, sent as the
//! `Idempotency-Key` header, so a receiver sees each notification once however often a
//! crash makes the runtime send it. A rebuild refills the inbox and sends nothing.

mod channel;
pub mod queries;

use chrono::{DateTime, Utc};
use common::config::{self, ConfigError};
use projection::{ApplyError, EffectError, EffectProjection, Envelope, Pass, Planned};
use schemas::Event;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

pub use channel::Channel;

pub const NAME: &str = "notifications";

/// Notifications sent at once by one process, unless `PROJECTOR_CONCURRENCY` says
/// otherwise.
pub const CONCURRENCY: usize = 64;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    DocumentReady,
    ConversationEnded,
    /// The assistant could not answer the recipient's message.
    AssistantReplyFailed,
    /// A webhook message to an endpoint the recipient created failed its last attempt.
    WebhookMessageFailed,
    /// An endpoint the recipient created was disabled because it kept failing.
    WebhookEndpointDisabled,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DocumentReady => "document_ready",
            Kind::ConversationEnded => "conversation_ended",
            Kind::AssistantReplyFailed => "assistant_reply_failed",
            Kind::WebhookMessageFailed => "webhook_message_failed",
            Kind::WebhookEndpointDisabled => "webhook_endpoint_disabled",
        }
    }
}

/// One notification to one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub kind: Kind,
    /// The user to tell: the one whose command caused the event.
    pub recipient: String,
    pub subject: String,
    pub conversation_id: Option<Uuid>,
    pub document_id: Option<Uuid>,
    pub endpoint_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
}

/// The body a channel sends: the notification with its id and tenant.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    /// Stable per event: the `Idempotency-Key` a receiver de-duplicates by.
    pub id: Uuid,
    pub tenant_id: &'a str,
    #[serde(flatten)]
    pub notification: &'a Notification,
}

pub struct Notifications {
    channel: Channel,
}

impl Notifications {
    pub fn new(channel: Channel) -> Self {
        Notifications { channel }
    }

    /// The channel `settings` choose (a CA file is read here).
    pub fn from_settings(s: NotifySettings) -> Result<Self, ConfigError> {
        let timeout = s.timeout;
        let channel = match s.channel.as_str() {
            "http" => {
                let url = s.http_url.ok_or(ConfigError::Missing {
                    name: "NOTIFY_HTTP_URL",
                })?;
                Channel::http(url.clone(), timeout)
                    .map_err(|reason| ConfigError::invalid("NOTIFY_HTTP_URL", url, reason))?
            }
            "email" => {
                let url = s.smtp_url.ok_or(ConfigError::Missing {
                    name: "NOTIFY_SMTP_URL",
                })?;
                let from = s.email_from.ok_or(ConfigError::Missing {
                    name: "NOTIFY_EMAIL_FROM",
                })?;
                let ca = match s.smtp_ca_file {
                    None => None,
                    Some(path) => Some(std::fs::read(&path).map_err(|e| {
                        ConfigError::invalid(
                            "NOTIFY_SMTP_CA_FILE",
                            path.display().to_string(),
                            format!("cannot read it: {e}"),
                        )
                    })?),
                };
                Channel::email(&url, &from, s.email_to, timeout, ca.as_deref())
                    // The URL may carry a password.
                    .map_err(|reason| ConfigError::invalid("NOTIFY_SMTP_URL", "***", reason))?
            }
            _ => Channel::Log,
        };
        Ok(Notifications::new(channel))
    }
}

/// Where notifications go (notifications-projector reads these).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Notifications")]
pub struct NotifySettings {
    /// `log` writes one structured log line per notification, `http` POSTs each as JSON,
    /// `email` mails it through SMTP.
    #[arg(long = "notify-channel", env = "NOTIFY_CHANNEL", default_value = "log", value_parser = ["log", "http", "email"])]
    pub channel: String,
    /// `http`, required: where notifications go (JSON, `Idempotency-Key` header; a 2xx is
    /// success).
    #[arg(long = "notify-http-url", env = "NOTIFY_HTTP_URL")]
    pub http_url: Option<String>,
    /// `email`, required: the relay, `smtp://host:25`,
    /// `smtp://user:password@host:587?tls=required` (STARTTLS) or `smtps://…:465`.
    #[arg(
        long = "notify-smtp-url",
        env = "NOTIFY_SMTP_URL",
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,
    /// `email`: a PEM file of certificate authorities to trust besides the public roots (a
    /// relay whose certificate a private CA issued); the URL must use TLS. A certificate
    /// the channel does not trust is not waited out as an outage: each notification is
    /// tried `PROJECTOR_MAX_ATTEMPTS` times, then parked; `notifications-projector
    /// redrive` sends them once the setting is fixed.
    #[arg(long = "notify-smtp-ca-file", env = "NOTIFY_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<std::path::PathBuf>,
    /// `email`, required: the sender. `Message-ID` is `<notification id@threadline>`.
    #[arg(long = "notify-email-from", env = "NOTIFY_EMAIL_FROM")]
    pub email_from: Option<String>,
    /// `email`: the recipient, with `{user}` for the notified subject (the default suits
    /// tokens whose `sub` is an address).
    #[arg(
        long = "notify-email-to",
        env = "NOTIFY_EMAIL_TO",
        default_value = "{user}"
    )]
    pub email_to: String,
    /// Milliseconds per notification request (HTTP or SMTP).
    #[arg(id = "notify-http-timeout-ms", long = "notify-http-timeout-ms", env = "NOTIFY_HTTP_TIMEOUT_MS", default_value = "10000", value_parser = config::millis)]
    pub timeout: std::time::Duration,
}

#[async_trait::async_trait]
impl EffectProjection for Notifications {
    type Effect = Notification;

    /// A mail relay or one HTTP endpoint takes fewer calls at once than a model provider.
    fn concurrency(&self) -> usize {
        CONCURRENCY
    }

    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_tables(&self, db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
        for ddl in [
            format!(
                "CREATE TABLE {s}.inbox (
                    notification_id uuid        PRIMARY KEY,
                    tenant_id       text        NOT NULL,
                    recipient       text        NOT NULL,
                    kind            text        NOT NULL,
                    subject         text        NOT NULL,
                    conversation_id uuid,
                    document_id     uuid,
                    endpoint_id     uuid,
                    occurred_at     timestamptz NOT NULL,
                    read_at         timestamptz)"
            ),
            format!("CREATE INDEX ON {s}.inbox (tenant_id, recipient, occurred_at DESC)"),
        ] {
            sqlx::query(&ddl).execute(&mut *db).await?;
        }
        Ok(())
    }

    async fn upgrade_tables(&self, db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
        // Notifications about webhook endpoints concern no conversation.
        sqlx::query(&format!(
            "ALTER TABLE {s}.inbox ALTER COLUMN conversation_id DROP NOT NULL,
                 ADD COLUMN IF NOT EXISTS endpoint_id uuid,
                 ADD COLUMN IF NOT EXISTS read_at timestamptz"
        ))
        .execute(&mut *db)
        .await?;
        Ok(())
    }

    fn plan(&self, e: &Envelope) -> Vec<Notification> {
        let caller = e.user_id.clone();
        let notification = match &e.event {
            // Who asked for it (schema v3), else who caused the event (a template
            // document is made by the asker's own command).
            Event::DocumentGenerated(d) => Notification {
                kind: Kind::DocumentReady,
                recipient: d.requested_by.clone().or(caller).unwrap_or_default(),
                subject: format!("Your document \"{}\" is ready", d.title),
                conversation_id: Some(d.conversation_id),
                document_id: Some(d.document_id),
                endpoint_id: None,
                occurred_at: d.generated_at,
            },
            Event::ConversationEnded(c) => Notification {
                kind: Kind::ConversationEnded,
                recipient: caller.unwrap_or_default(),
                subject: "The conversation has ended".to_owned(),
                conversation_id: Some(c.conversation_id),
                document_id: None,
                endpoint_id: None,
                occurred_at: c.ended_at,
            },
            // Who asked (schema v2); a failure recorded before it names nobody.
            Event::AssistantReplyFailed(f) => Notification {
                kind: Kind::AssistantReplyFailed,
                recipient: f.asked_by.clone().unwrap_or_default(),
                subject: format!("The assistant could not answer your message: {}", f.reason),
                conversation_id: Some(f.conversation_id),
                document_id: None,
                endpoint_id: None,
                occurred_at: f.failed_at,
            },
            // The endpoint's creator hears of its failures, whoever recorded them.
            Event::WebhookMessageFailed(w) => Notification {
                kind: Kind::WebhookMessageFailed,
                recipient: w.owner.clone(),
                subject: format!(
                    "A {} webhook could not be delivered after {} attempts ({})",
                    w.event_type, w.attempts, w.last_error
                ),
                conversation_id: None,
                document_id: None,
                endpoint_id: Some(w.endpoint_id),
                occurred_at: w.failed_at,
            },
            Event::WebhookEndpointDisabled(w) if w.automatic => Notification {
                kind: Kind::WebhookEndpointDisabled,
                recipient: w.owner.clone(),
                subject: format!("Your webhook endpoint was disabled: {}", w.reason),
                conversation_id: None,
                document_id: None,
                endpoint_id: Some(w.endpoint_id),
                occurred_at: w.disabled_at,
            },
            _ => return Vec::new(),
        };
        if notification.recipient.is_empty() {
            return Vec::new();
        }
        vec![notification]
    }

    async fn perform(
        &self,
        _schema: &str,
        effects: &[Planned<Notification>],
        pass: Pass,
    ) -> Result<(), EffectError> {
        if pass.is_replay() {
            // History: these users were told when it happened.
            return Ok(());
        }
        for planned in effects {
            let message = Message {
                id: planned.id.0,
                tenant_id: &planned.tenant_id,
                notification: &planned.effect,
            };
            self.channel.send(&message).await?;
        }
        Ok(())
    }

    async fn record(
        &self,
        db: &mut PgConnection,
        s: &str,
        applied: &[(Envelope, Vec<Planned<Notification>>)],
        _pass: Pass,
    ) -> Result<(), ApplyError> {
        // What users read: their own notifications only (the recipient must match).
        for (e, _) in applied {
            if let Event::NotificationsRead(r) = &e.event {
                let ids: Vec<Uuid> = r
                    .notification_ids
                    .iter()
                    .filter_map(|id| id.parse().ok())
                    .collect();
                sqlx::query(&format!(
                    "UPDATE {s}.inbox SET read_at = COALESCE(read_at, $4)
                     WHERE tenant_id = $1 AND recipient = $2 AND notification_id = ANY($3)"
                ))
                .bind(&r.tenant_id)
                .bind(&r.user_id)
                .bind(&ids)
                .bind(r.read_at)
                .execute(&mut *db)
                .await?;
            }
        }
        for planned in applied.iter().flat_map(|(_, p)| p) {
            let n = &planned.effect;
            sqlx::query(&format!(
                "INSERT INTO {s}.inbox (notification_id, tenant_id, recipient, kind, subject, conversation_id, document_id, endpoint_id, occurred_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"
            ))
            .bind(planned.id.0)
            .bind(&planned.tenant_id)
            .bind(&n.recipient)
            .bind(n.kind.as_str())
            .bind(&n.subject)
            .bind(n.conversation_id)
            .bind(n.document_id)
            .bind(n.endpoint_id)
            .bind(n.occurred_at)
            .execute(&mut *db)
            .await?;
        }
        // Erasures last: they reach what this batch wrote before them too.
        for (e, _) in applied {
            if let Event::SubjectErased(x) = &e.event {
                erase(db, s, x).await?;
            }
        }
        Ok(())
    }
}

/// An erasure: the notifications about the erased conversations and the documents made
/// from them go, and so does an erased person's whole inbox (a tenant's: all of it).
async fn erase(
    db: &mut PgConnection,
    s: &str,
    x: &schemas::SubjectErased,
) -> Result<(), ApplyError> {
    sqlx::query(&format!(
        "DELETE FROM {s}.inbox
          WHERE tenant_id = $1 AND ($2 OR conversation_id = ANY($3) OR recipient = $4)"
    ))
    .bind(&x.tenant_id)
    .bind(x.is_tenant())
    .bind(x.conversations())
    .bind(x.person())
    .execute(&mut *db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{
        AssistantReplyFailed, DocumentFormat, DocumentGenerated, DocumentKind, Generator,
    };
    use testkit::projection::envelope;

    #[test]
    fn the_one_who_asked_is_told_not_the_assistant_that_answered() {
        let n = Notifications::new(Channel::Log);
        let document = DocumentGenerated {
            sealed: None,
            document_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            conversation_id: Uuid::new_v4(),
            kind: DocumentKind::MeetingNotes,
            title: "Notes".into(),
            format: DocumentFormat::Markdown,
            content: "# Notes".into(),
            source_message_count: 3,
            generator: Generator {
                name: "local".into(),
                version: "meeting_notes-v1".into(),
            },
            generated_at: schemas::timestamp_now(),
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: None,
            requested_by: Some("ann".into()),
        };
        let planned = n.plan(&envelope(Event::DocumentGenerated(document), "assistant"));
        assert_eq!(planned.len(), 1);
        assert_eq!(
            (planned[0].kind, planned[0].recipient.as_str()),
            (Kind::DocumentReady, "ann")
        );

        let failed = |asked_by: Option<&str>| AssistantReplyFailed {
            sealed: None,
            conversation_id: Uuid::new_v4(),
            message_id: Uuid::new_v4(),
            reason: "every provider is down".into(),
            attempts: 2,
            failed_at: schemas::timestamp_now(),
            asked_by: asked_by.map(str::to_owned),
        };
        let planned = n.plan(&envelope(
            Event::AssistantReplyFailed(failed(Some("bob"))),
            "assistant",
        ));
        assert_eq!(
            (planned[0].kind, planned[0].recipient.as_str()),
            (Kind::AssistantReplyFailed, "bob")
        );
        // Recorded before the event named the asker: nobody to tell.
        assert!(
            n.plan(&envelope(
                Event::AssistantReplyFailed(failed(None)),
                "assistant"
            ))
            .is_empty()
        );
    }
}
