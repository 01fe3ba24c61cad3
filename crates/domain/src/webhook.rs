//! The WebhookEndpoint aggregate: a tenant's subscription of an HTTPS endpoint to its
//! events, kept as events so its history (who pointed deliveries where, when) is
//! auditable. The signing secret arrives sealed (the command service generates and
//! seals it; the aggregate never sees it in clear). Delivery outcomes that people must
//! hear of (a dead message, an automatic disable) are recorded here too.

use chrono::{DateTime, Duration, Utc};
use schemas::{
    EventType, WebhookEndpointCreated, WebhookEndpointDeleted, WebhookEndpointDisabled,
    WebhookEndpointEnabled, WebhookEndpointUpdated, WebhookMessageFailed,
    WebhookRedeliveryRequested, WebhookSecretRotated,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{self, REASON_MAX};
use super::{Command, DomainError, Version, check_access};

/// The longest endpoint URL, in characters.
pub const URL_MAX: usize = 2_048;
/// The longest description, in characters.
pub const DESCRIPTION_MAX: usize = 500;
/// The subscription to every webhook type.
pub const ALL_TYPES: &str = "*";
/// The longest a rotated-out secret may keep signing.
pub const GRACE_MAX: Duration = Duration::days(7);

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookCommand {
    Create {
        endpoint_id: Uuid,
        url: String,
        event_types: Vec<String>,
        description: Option<String>,
        sealed_secret: String,
    },
    /// Changes what is given; `None` keeps it.
    Update {
        url: Option<String>,
        event_types: Option<Vec<String>>,
        description: Option<String>,
    },
    /// A new secret; the current one keeps signing for `grace`.
    RotateSecret {
        sealed_secret: String,
        grace: Duration,
    },
    Disable {
        automatic: bool,
        reason: String,
    },
    Enable,
    Delete,
    /// A message failed its last attempt.
    ReportDeadMessage {
        message_id: String,
        event_id: Uuid,
        event_type: String,
        attempts: i32,
        last_error: String,
    },
    /// Send again one message, or the dead messages created in `[since, until)`.
    Redeliver {
        message_id: Option<String>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    },
}

impl WebhookCommand {
    /// The command's name, stored on its events.
    pub fn name(&self) -> &'static str {
        match self {
            WebhookCommand::Create { .. } => "CreateWebhookEndpoint",
            WebhookCommand::Update { .. } => "UpdateWebhookEndpoint",
            WebhookCommand::RotateSecret { .. } => "RotateWebhookSecret",
            WebhookCommand::Disable { .. } => "DisableWebhookEndpoint",
            WebhookCommand::Enable => "EnableWebhookEndpoint",
            WebhookCommand::Delete => "DeleteWebhookEndpoint",
            WebhookCommand::ReportDeadMessage { .. } => "ReportDeadWebhookMessage",
            WebhookCommand::Redeliver { .. } => "RedeliverWebhookMessages",
        }
    }
}

aggregate_events!(WebhookEvent {
    WebhookEndpointCreated,
    WebhookEndpointUpdated,
    WebhookSecretRotated,
    WebhookEndpointDisabled,
    WebhookEndpointEnabled,
    WebhookEndpointDeleted,
    WebhookMessageFailed,
    WebhookRedeliveryRequested,
});

impl TryFrom<schemas::Event> for WebhookEvent {
    type Error = schemas::Event;

    /// The endpoint's own events; any other event is handed back.
    fn try_from(e: schemas::Event) -> Result<Self, schemas::Event> {
        use schemas::Event as E;
        Ok(match e {
            E::WebhookEndpointCreated(e) => WebhookEvent::WebhookEndpointCreated(e),
            E::WebhookEndpointUpdated(e) => WebhookEvent::WebhookEndpointUpdated(e),
            E::WebhookSecretRotated(e) => WebhookEvent::WebhookSecretRotated(e),
            E::WebhookEndpointDisabled(e) => WebhookEvent::WebhookEndpointDisabled(e),
            E::WebhookEndpointEnabled(e) => WebhookEvent::WebhookEndpointEnabled(e),
            E::WebhookEndpointDeleted(e) => WebhookEvent::WebhookEndpointDeleted(e),
            E::WebhookMessageFailed(e) => WebhookEvent::WebhookMessageFailed(e),
            E::WebhookRedeliveryRequested(e) => WebhookEvent::WebhookRedeliveryRequested(e),
            other => return Err(other),
        })
    }
}

/// A rotated-out secret and until when it still signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub sealed: String,
    pub valid_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: Option<Uuid>,
    pub tenant_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub sealed_secret: String,
    pub previous_secret: Option<PreviousSecret>,
    pub enabled: bool,
    pub deleted: bool,
    pub created_by: String,
    pub version: Version,
}

impl WebhookEndpoint {
    /// Whether deliveries of `webhook_type` go to this endpoint now.
    pub fn wants(&self, webhook_type: &str) -> bool {
        self.id.is_some()
            && self.enabled
            && !self.deleted
            && self
                .event_types
                .iter()
                .any(|t| t == ALL_TYPES || t == webhook_type)
    }

    /// The sealed secrets that sign at `now`: the current one, and the previous one
    /// during its grace window.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.sealed_secret.as_str()];
        if let Some(p) = &self.previous_secret
            && now < p.valid_until
        {
            secrets.push(&p.sealed);
        }
        secrets
    }

    /// The state after `events`, in order (what the delivery service folds from the store).
    pub fn fold(events: impl IntoIterator<Item = WebhookEvent>) -> WebhookEndpoint {
        let mut endpoint = WebhookEndpoint::default();
        for e in events {
            endpoint.evolve(e);
        }
        endpoint
    }
}

decided_aggregate!(
    WebhookEndpoint,
    "webhook_endpoint",
    WebhookCommand,
    WebhookEvent
);

impl WebhookEndpoint {
    /// The state after `event` (the aggregate's `apply`).
    fn evolve(&mut self, event: WebhookEvent) {
        self.version.0 += 1;
        match event {
            WebhookEvent::WebhookEndpointCreated(e) => {
                self.id = Some(e.endpoint_id);
                self.tenant_id = e.tenant_id;
                self.url = e.url;
                self.event_types = e.event_types;
                self.description = e.description;
                self.sealed_secret = e.sealed_secret;
                self.created_by = e.created_by;
                self.enabled = true;
            }
            WebhookEvent::WebhookEndpointUpdated(e) => {
                self.url = e.url;
                self.event_types = e.event_types;
                self.description = e.description;
            }
            WebhookEvent::WebhookSecretRotated(e) => {
                let old = std::mem::replace(&mut self.sealed_secret, e.sealed_secret);
                self.previous_secret = Some(PreviousSecret {
                    sealed: old,
                    valid_until: e.previous_valid_until,
                });
            }
            WebhookEvent::WebhookEndpointDisabled(_) => self.enabled = false,
            WebhookEvent::WebhookEndpointEnabled(_) => self.enabled = true,
            WebhookEvent::WebhookEndpointDeleted(_) => self.deleted = true,
            WebhookEvent::WebhookMessageFailed(_) | WebhookEvent::WebhookRedeliveryRequested(_) => {
            }
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_url(url: &str) -> Result<String, DomainError> {
    let url = validate::text("url", url, URL_MAX, false)?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(invalid("url", "must be an https URL"));
    }
    Ok(url)
}

/// One or more known webhook types (or `*`), without repeats, sorted.
fn check_types(types: Vec<String>) -> Result<Vec<String>, DomainError> {
    if types.is_empty() {
        return Err(invalid(
            "event_types",
            "name at least one webhook type, or * for all",
        ));
    }
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let t = t.trim().to_owned();
        if t != ALL_TYPES && !EventType::webhook_types().any(|known| known == t) {
            let known: Vec<&str> = EventType::webhook_types().collect();
            return Err(invalid(
                "event_types",
                format!("unknown type {t:?}; known: *, {}", known.join(", ")),
            ));
        }
        out.push(t);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_description(d: Option<String>) -> Result<String, DomainError> {
    match d.as_deref().map(str::trim) {
        None | Some("") => Ok(String::new()),
        Some(d) => validate::text("description", d, DESCRIPTION_MAX, false),
    }
}

impl WebhookEndpoint {
    /// The event a command produces, or why it is refused. Pure: no I/O.
    pub fn decide(&self, command: Command<WebhookCommand>) -> Result<WebhookEvent, DomainError> {
        let Command { ctx, body } = command;
        if let WebhookCommand::Create {
            endpoint_id,
            url,
            event_types,
            description,
            sealed_secret,
        } = body
        {
            if self.id.is_some() {
                return Err(DomainError::AlreadyExists);
            }
            return Ok(WebhookEvent::WebhookEndpointCreated(
                WebhookEndpointCreated {
                    endpoint_id,
                    tenant_id: ctx.tenant_id,
                    url: check_url(&url)?,
                    event_types: check_types(event_types)?,
                    description: check_description(description)?,
                    sealed_secret,
                    created_by: ctx.actor.subject,
                    created_at: ctx.at,
                },
            ));
        }
        check_access(self.id.is_some(), &self.tenant_id, None, self.version, &ctx)?;
        let endpoint_id = self.id.ok_or(DomainError::NotFound)?;
        if self.deleted {
            return Err(DomainError::NotFound);
        }
        Ok(match body {
            WebhookCommand::Create { .. } => return Err(DomainError::AlreadyExists),
            WebhookCommand::Update {
                url,
                event_types,
                description,
            } => WebhookEvent::WebhookEndpointUpdated(WebhookEndpointUpdated {
                endpoint_id,
                url: match url {
                    Some(u) => check_url(&u)?,
                    None => self.url.clone(),
                },
                event_types: match event_types {
                    Some(t) => check_types(t)?,
                    None => self.event_types.clone(),
                },
                description: match description {
                    Some(d) => check_description(Some(d))?,
                    None => self.description.clone(),
                },
                updated_at: ctx.at,
            }),
            WebhookCommand::RotateSecret {
                sealed_secret,
                grace,
            } => {
                if grace < Duration::zero() || grace > GRACE_MAX {
                    return Err(invalid(
                        "grace_seconds",
                        format!("must be 0 to {} seconds", GRACE_MAX.num_seconds()),
                    ));
                }
                WebhookEvent::WebhookSecretRotated(WebhookSecretRotated {
                    endpoint_id,
                    sealed_secret,
                    previous_valid_until: ctx.at + grace,
                    rotated_at: ctx.at,
                })
            }
            WebhookCommand::Disable { automatic, reason } => {
                if !self.enabled {
                    return Err(DomainError::Unchanged("the endpoint is already disabled"));
                }
                WebhookEvent::WebhookEndpointDisabled(WebhookEndpointDisabled {
                    endpoint_id,
                    automatic,
                    reason: validate::text("reason", &reason, REASON_MAX, true)?,
                    owner: self.created_by.clone(),
                    disabled_at: ctx.at,
                })
            }
            WebhookCommand::Enable => {
                if self.enabled {
                    return Err(DomainError::Unchanged("the endpoint is already enabled"));
                }
                WebhookEvent::WebhookEndpointEnabled(WebhookEndpointEnabled {
                    endpoint_id,
                    enabled_at: ctx.at,
                })
            }
            WebhookCommand::Delete => {
                WebhookEvent::WebhookEndpointDeleted(WebhookEndpointDeleted {
                    endpoint_id,
                    deleted_at: ctx.at,
                })
            }
            WebhookCommand::ReportDeadMessage {
                message_id,
                event_id,
                event_type,
                attempts,
                last_error,
            } => WebhookEvent::WebhookMessageFailed(WebhookMessageFailed {
                endpoint_id,
                message_id,
                event_id,
                event_type,
                attempts,
                last_error: last_error.chars().take(REASON_MAX).collect(),
                owner: self.created_by.clone(),
                failed_at: ctx.at,
            }),
            WebhookCommand::Redeliver {
                message_id,
                since,
                until,
            } => {
                if message_id.is_none() && since.is_none() {
                    return Err(invalid("since", "name a message_id, or a range from since"));
                }
                if let (Some(s), Some(u)) = (since, until)
                    && u <= s
                {
                    return Err(invalid("until", "must be after since"));
                }
                WebhookEvent::WebhookRedeliveryRequested(WebhookRedeliveryRequested {
                    endpoint_id,
                    message_id,
                    since,
                    until,
                    requested_by: ctx.actor.subject,
                    requested_at: ctx.at,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::Aggregate;

    use super::*;
    use crate::{Actor, CommandContext, Reach};

    fn ctx(tenant: &str) -> CommandContext {
        CommandContext {
            tenant_id: tenant.into(),
            actor: Actor {
                subject: "ann".into(),
                reach: Reach::Tenant,
            },
            expected_version: None,
            at: schemas::timestamp_now(),
        }
    }

    fn run(e: &mut WebhookEndpoint, body: WebhookCommand) -> Result<WebhookEvent, DomainError> {
        let event = e.decide(Command {
            ctx: ctx("acme"),
            body,
        })?;
        e.apply(event.clone());
        Ok(event)
    }

    fn created() -> WebhookEndpoint {
        let mut e = WebhookEndpoint::default();
        run(
            &mut e,
            WebhookCommand::Create {
                endpoint_id: Uuid::new_v4(),
                url: "https://hooks.example.com/x".into(),
                event_types: vec!["message.sent".into(), "message.sent".into()],
                description: None,
                sealed_secret: "v1.k.s1".into(),
            },
        )
        .expect("created");
        e
    }

    #[test]
    fn an_endpoint_wants_what_it_subscribed_to_while_enabled() {
        let mut e = created();
        assert_eq!(e.event_types, ["message.sent"]);
        assert!(e.wants("message.sent"));
        assert!(!e.wants("document.generated"));
        run(
            &mut e,
            WebhookCommand::Disable {
                automatic: false,
                reason: "maintenance".into(),
            },
        )
        .expect("disabled");
        assert!(!e.wants("message.sent"));
        assert_eq!(
            run(
                &mut e,
                WebhookCommand::Disable {
                    automatic: true,
                    reason: "again".into()
                }
            ),
            Err(DomainError::Unchanged("the endpoint is already disabled"))
        );
        run(&mut e, WebhookCommand::Enable).expect("enabled");
        run(
            &mut e,
            WebhookCommand::Update {
                url: None,
                event_types: Some(vec!["*".into()]),
                description: None,
            },
        )
        .expect("updated");
        assert!(e.wants("document.generated"));
        run(&mut e, WebhookCommand::Delete).expect("deleted");
        assert!(!e.wants("document.generated"));
        assert_eq!(
            run(&mut e, WebhookCommand::Enable),
            Err(DomainError::NotFound)
        );
    }

    #[test]
    fn unknown_types_bad_urls_and_long_graces_are_refused() {
        let mut e = WebhookEndpoint::default();
        let create = |url: &str, types: Vec<&str>| WebhookCommand::Create {
            endpoint_id: Uuid::new_v4(),
            url: url.into(),
            event_types: types.into_iter().map(String::from).collect(),
            description: None,
            sealed_secret: "v1.k.s".into(),
        };
        for (url, types, field) in [
            ("https://h.example/x", vec!["message.sen"], "event_types"),
            ("https://h.example/x", vec![], "event_types"),
            (
                "https://h.example/x",
                vec!["WebhookEndpointCreated"],
                "event_types",
            ),
            ("ftp://h.example/x", vec!["*"], "url"),
            ("", vec!["*"], "url"),
        ] {
            assert!(
                matches!(run(&mut e, create(url, types)), Err(DomainError::Invalid { field: f, .. }) if f == field),
                "{url} {field}"
            );
        }
        let mut e = created();
        assert!(matches!(
            run(
                &mut e,
                WebhookCommand::RotateSecret {
                    sealed_secret: "v1.k.s2".into(),
                    grace: Duration::days(8)
                }
            ),
            Err(DomainError::Invalid { .. })
        ));
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends() {
        let mut e = created();
        let event = run(
            &mut e,
            WebhookCommand::RotateSecret {
                sealed_secret: "v1.k.s2".into(),
                grace: Duration::hours(1),
            },
        )
        .expect("rotated");
        let WebhookEvent::WebhookSecretRotated(r) = event else {
            panic!("not a rotation: {event:?}")
        };
        assert_eq!(e.signing_secrets(r.rotated_at), ["v1.k.s2", "v1.k.s1"]);
        assert_eq!(
            e.signing_secrets(r.rotated_at + Duration::hours(2)),
            ["v1.k.s2"]
        );
    }

    #[test]
    fn another_tenant_does_not_see_the_endpoint() {
        let e = created();
        let refused = e.decide(Command {
            ctx: ctx("globex"),
            body: WebhookCommand::Delete,
        });
        assert_eq!(refused, Err(DomainError::NotFound));
    }
}
