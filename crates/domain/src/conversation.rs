//! The Conversation aggregate: started, messages sent, renamed, ended.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemas::{ConversationEnded, ConversationRenamed, ConversationStarted, MessageSent, Role};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{self, CONTENT_MAX, MODEL_MAX, REASON_MAX, TITLE_MAX};
use super::{Command, DomainError, Version, check_access};

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    Start {
        conversation_id: Uuid,
        title: String,
        metadata: BTreeMap<String, String>,
    },
    SendMessage {
        message_id: Uuid,
        role: Role,
        content: String,
        model: Option<String>,
        prompt_tokens: Option<i32>,
        completion_tokens: Option<i32>,
    },
    Rename {
        title: String,
    },
    End {
        reason: Option<String>,
    },
}

/// The stored and published events of a conversation. The serde form (externally tagged
/// by event type) is the same as `schemas::Event`'s, so the relay reads it as that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    ConversationStarted(ConversationStarted),
    MessageSent(MessageSent),
    ConversationRenamed(ConversationRenamed),
    ConversationEnded(ConversationEnded),
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        schemas::Event::from(self.clone())
            .event_type()
            .as_str()
            .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

impl From<ConversationEvent> for schemas::Event {
    fn from(e: ConversationEvent) -> Self {
        match e {
            ConversationEvent::ConversationStarted(e) => e.into(),
            ConversationEvent::MessageSent(e) => e.into(),
            ConversationEvent::ConversationRenamed(e) => e.into(),
            ConversationEvent::ConversationEnded(e) => e.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    New,
    Open,
    Ended,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: Option<Uuid>,
    pub tenant_id: String,
    pub title: String,
    pub status: Status,
    pub version: Version,
    pub message_count: u64,
    /// Who started it (`None` before schema v2: every member sees it).
    #[serde(default)]
    pub started_by: Option<String>,
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "conversation";
    type Command = Command<ConversationCommand>;
    type Event = ConversationEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version.0 += 1;
        match event {
            ConversationEvent::ConversationStarted(e) => {
                self.id = Some(e.conversation_id);
                self.tenant_id = e.tenant_id;
                self.title = e.title;
                self.started_by = e.started_by;
                self.status = Status::Open;
            }
            ConversationEvent::MessageSent(_) => self.message_count += 1,
            ConversationEvent::ConversationRenamed(e) => self.title = e.title,
            ConversationEvent::ConversationEnded(_) => self.status = Status::Ended,
        }
    }
}

impl Conversation {
    /// The event a command produces, or why it is refused. Pure: no I/O.
    pub fn decide(
        &self,
        command: Command<ConversationCommand>,
    ) -> Result<ConversationEvent, DomainError> {
        let Command { ctx, body } = command;
        if let ConversationCommand::Start {
            conversation_id,
            title,
            metadata,
        } = body
        {
            if self.status != Status::New {
                return Err(DomainError::AlreadyExists);
            }
            return Ok(ConversationEvent::ConversationStarted(
                ConversationStarted {
                    conversation_id,
                    tenant_id: ctx.tenant_id,
                    title: validate::text("title", &title, TITLE_MAX, false)?,
                    metadata: validate::metadata(&metadata)?,
                    started_at: ctx.at,
                    started_by: Some(ctx.actor.subject),
                },
            ));
        }
        check_access(
            self.status != Status::New,
            &self.tenant_id,
            self.started_by.as_deref(),
            self.version,
            &ctx,
        )?;
        let conversation_id = self.id.ok_or(DomainError::NotFound)?;
        if self.status == Status::Ended {
            return Err(DomainError::ConversationEnded);
        }
        Ok(match body {
            ConversationCommand::Start { .. } => return Err(DomainError::AlreadyExists),
            ConversationCommand::SendMessage {
                message_id,
                role,
                content,
                model,
                prompt_tokens,
                completion_tokens,
            } => ConversationEvent::MessageSent(MessageSent {
                conversation_id,
                message_id,
                role,
                // Message bodies keep their whitespace; only blank ones are refused.
                content: {
                    validate::text("content", &content, CONTENT_MAX, true)?;
                    content
                },
                model: validate::optional_text("model", model.as_deref(), MODEL_MAX)?,
                prompt_tokens: validate::tokens("prompt_tokens", prompt_tokens)?,
                completion_tokens: validate::tokens("completion_tokens", completion_tokens)?,
                sent_at: ctx.at,
            }),
            ConversationCommand::Rename { title } => {
                let title = validate::text("title", &title, TITLE_MAX, false)?;
                if title == self.title {
                    return Err(DomainError::Invalid {
                        field: "title",
                        reason: "is the current title".into(),
                    });
                }
                ConversationEvent::ConversationRenamed(ConversationRenamed {
                    conversation_id,
                    title,
                    previous_title: self.title.clone(),
                    renamed_at: ctx.at,
                })
            }
            ConversationCommand::End { reason } => {
                ConversationEvent::ConversationEnded(ConversationEnded {
                    conversation_id,
                    reason: validate::optional_text("reason", reason.as_deref(), REASON_MAX)?,
                    ended_at: ctx.at,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommandContext;

    fn ctx(tenant: &str, expected: Option<u64>) -> CommandContext {
        as_member(tenant, "ann", expected)
    }

    fn as_member(tenant: &str, subject: &str, expected: Option<u64>) -> CommandContext {
        CommandContext {
            tenant_id: tenant.into(),
            actor: crate::Actor {
                subject: subject.into(),
                scope: crate::Scope::Own,
            },
            expected_version: expected.map(Version),
            at: schemas::timestamp_now(),
        }
    }

    fn started() -> Conversation {
        let mut c = Conversation::default();
        let e = c
            .decide(Command {
                ctx: ctx("acme", None),
                body: ConversationCommand::Start {
                    conversation_id: Uuid::new_v4(),
                    title: "  Plan ".into(),
                    metadata: BTreeMap::new(),
                },
            })
            .expect("start");
        c.apply(e);
        c
    }

    fn send(content: &str) -> ConversationCommand {
        ConversationCommand::SendMessage {
            message_id: Uuid::new_v4(),
            role: Role::User,
            content: content.into(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
        }
    }

    #[test]
    fn start_trims_the_title_and_opens_the_conversation() {
        let c = started();
        assert_eq!(
            (c.title.as_str(), c.status, c.version),
            ("Plan", Status::Open, Version(1))
        );
    }

    #[test]
    fn messages_are_refused_when_blank_oversized_or_after_the_end() {
        let mut c = started();
        for bad in ["", "   \n ", &"x".repeat(CONTENT_MAX + 1)] {
            let err = c
                .decide(Command {
                    ctx: ctx("acme", None),
                    body: send(bad),
                })
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    DomainError::Invalid {
                        field: "content",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        let end = c
            .decide(Command {
                ctx: ctx("acme", None),
                body: ConversationCommand::End { reason: None },
            })
            .expect("end");
        c.apply(end);
        assert_eq!(
            c.decide(Command {
                ctx: ctx("acme", None),
                body: send("hi")
            }),
            Err(DomainError::ConversationEnded)
        );
    }

    #[test]
    fn another_tenant_sees_not_found_and_versions_are_checked() {
        let c = started();
        assert_eq!(
            c.decide(Command {
                ctx: ctx("other", None),
                body: send("hi")
            }),
            Err(DomainError::NotFound)
        );
        assert_eq!(
            c.decide(Command {
                ctx: ctx("acme", Some(3)),
                body: send("hi")
            }),
            Err(DomainError::VersionMismatch {
                expected: Version(3),
                current: Version(1)
            })
        );
        assert!(
            c.decide(Command {
                ctx: ctx("acme", Some(1)),
                body: send("hi")
            })
            .is_ok()
        );
        assert_eq!(
            Conversation::default().decide(Command {
                ctx: ctx("acme", None),
                body: send("hi")
            }),
            Err(DomainError::NotFound)
        );
    }

    #[test]
    fn a_member_changes_only_the_conversations_they_started() {
        let c = started();
        assert_eq!(c.started_by.as_deref(), Some("ann"));
        let by = |subject: &str, scope| Command {
            ctx: CommandContext {
                actor: crate::Actor {
                    subject: subject.into(),
                    scope,
                },
                ..ctx("acme", None)
            },
            body: send("hi"),
        };
        assert!(c.decide(by("ann", crate::Scope::Own)).is_ok());
        assert_eq!(
            c.decide(by("bob", crate::Scope::Own)),
            Err(DomainError::NotFound),
            "another member's conversation does not exist for bob"
        );
        assert!(
            c.decide(by("assistant", crate::Scope::Tenant)).is_ok(),
            "an admin or the assistant sees the whole tenant"
        );
        let mut legacy = c.clone();
        legacy.started_by = None;
        assert!(
            legacy.decide(by("bob", crate::Scope::Own)).is_ok(),
            "conversations from before owners were recorded stay shared"
        );
    }
}
