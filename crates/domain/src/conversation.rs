//! The Conversation aggregate: started, messages sent, renamed, ended.

use std::collections::BTreeMap;

use schemas::{
    AssistantReplyFailed, AssistantReplyRequested, ConversationEnded, ConversationRenamed,
    ConversationStarted, MessageSent, MessageSource, Role,
};
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
        /// Whether the assistant answers the users' messages.
        assistant: bool,
    },
    SendMessage {
        message_id: Uuid,
        role: Role,
        content: String,
        model: Option<String>,
        prompt_tokens: Option<i32>,
        completion_tokens: Option<i32>,
        /// The user message an assistant reply answers.
        reply_to: Option<Uuid>,
        latency_ms: Option<i64>,
        sources: Vec<MessageSource>,
    },
    /// The assistant could not answer `message_id`.
    FailReply {
        message_id: Uuid,
        reason: String,
        attempts: i32,
        /// Who asked (told of the failure).
        asked_by: Option<String>,
    },
    /// Try again to answer `message_id`, whose reply failed.
    RequestReply {
        message_id: Uuid,
    },
    Rename {
        title: String,
    },
    End {
        reason: Option<String>,
    },
}

aggregate_events!(
    /// The stored and published events of a conversation.
    ConversationEvent {
        ConversationStarted,
        MessageSent,
        ConversationRenamed,
        ConversationEnded,
        AssistantReplyFailed,
        AssistantReplyRequested,
    }
);

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
    /// Whether the assistant answers the users' messages.
    #[serde(default)]
    pub assistant: bool,
    /// The user messages awaiting the assistant's reply (only with the assistant on),
    /// and whether its last attempt failed. An answered message leaves the map: the
    /// state holds what decisions need, so it does not grow with the conversation, and
    /// a second reply is refused because its message no longer awaits one.
    #[serde(default)]
    pub awaiting: BTreeMap<Uuid, Reply>,
}

/// Where the assistant's reply to a user message awaiting it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Not answered yet (or asked again after a failure).
    Pending,
    Failed,
}

decided_aggregate!(
    Conversation,
    "conversation",
    ConversationCommand,
    ConversationEvent
);

impl Conversation {
    /// The state after `event` (the aggregate's `apply`).
    fn evolve(&mut self, event: ConversationEvent) {
        self.version.0 += 1;
        match event {
            ConversationEvent::ConversationStarted(e) => {
                self.id = Some(e.conversation_id);
                self.tenant_id = e.tenant_id;
                self.title = e.title;
                self.started_by = e.started_by;
                self.assistant = e.assistant;
                self.status = Status::Open;
            }
            ConversationEvent::MessageSent(e) => {
                self.message_count += 1;
                if e.role == Role::User && self.assistant {
                    self.awaiting.insert(e.message_id, Reply::Pending);
                }
                if let Some(answered) = e.reply_to {
                    self.awaiting.remove(&answered);
                }
            }
            ConversationEvent::AssistantReplyFailed(e) => {
                if let Some(reply) = self.awaiting.get_mut(&e.message_id) {
                    *reply = Reply::Failed;
                }
            }
            ConversationEvent::AssistantReplyRequested(e) => {
                if let Some(reply) = self.awaiting.get_mut(&e.message_id) {
                    *reply = Reply::Pending;
                }
            }
            ConversationEvent::ConversationRenamed(e) => self.title = e.title,
            ConversationEvent::ConversationEnded(_) => self.status = Status::Ended,
        }
    }
}

impl Conversation {
    /// Where the reply to `message_id` stands, if it awaits the assistant's reply.
    fn awaiting(&self, message_id: Uuid) -> Result<Reply, DomainError> {
        self.awaiting
            .get(&message_id)
            .copied()
            .ok_or(DomainError::NoReplyAwaited)
    }

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
            assistant,
        } = body
        {
            if self.status != Status::New {
                return Err(DomainError::AlreadyExists);
            }
            return Ok(ConversationEvent::ConversationStarted(
                ConversationStarted {
                    sealed: None,
                    conversation_id,
                    tenant_id: ctx.tenant_id,
                    title: validate::text("title", &title, TITLE_MAX, false)?,
                    metadata: validate::metadata(&metadata)?,
                    started_at: ctx.at,
                    started_by: Some(ctx.actor.subject),
                    assistant,
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
                reply_to,
                latency_ms,
                sources,
            } => ConversationEvent::MessageSent(MessageSent {
                sealed: None,
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
                reply_to: match reply_to {
                    Some(_) if role != Role::Assistant => {
                        return Err(DomainError::Invalid {
                            field: "reply_to",
                            reason: "only an assistant message answers another".into(),
                        });
                    }
                    Some(id) => {
                        self.awaiting(id)?;
                        Some(id)
                    }
                    None => None,
                },
                latency_ms: match latency_ms {
                    Some(ms) if ms < 0 => {
                        return Err(DomainError::Invalid {
                            field: "latency_ms",
                            reason: "must not be negative".into(),
                        });
                    }
                    other => other,
                },
                sources: validate::sources(sources)?,
            }),
            ConversationCommand::FailReply {
                message_id,
                reason,
                attempts,
                asked_by,
            } => {
                self.awaiting(message_id)?;
                ConversationEvent::AssistantReplyFailed(AssistantReplyFailed {
                    sealed: None,
                    conversation_id,
                    message_id,
                    reason: validate::text("reason", &reason, REASON_MAX, false)?,
                    attempts: attempts.max(0),
                    failed_at: ctx.at,
                    asked_by,
                })
            }
            ConversationCommand::RequestReply { message_id } => {
                if !self.assistant {
                    return Err(DomainError::Invalid {
                        field: "assistant",
                        reason: "the assistant is off in this conversation".into(),
                    });
                }
                if self.awaiting(message_id)? != Reply::Failed {
                    return Err(DomainError::ReplyNotFailed);
                }
                ConversationEvent::AssistantReplyRequested(AssistantReplyRequested {
                    sealed: None,
                    conversation_id,
                    message_id,
                    requested_by: ctx.actor.subject,
                    requested_at: ctx.at,
                })
            }
            ConversationCommand::Rename { title } => {
                let title = validate::text("title", &title, TITLE_MAX, false)?;
                if title == self.title {
                    return Err(DomainError::Invalid {
                        field: "title",
                        reason: "is the current title".into(),
                    });
                }
                ConversationEvent::ConversationRenamed(ConversationRenamed {
                    sealed: None,
                    conversation_id,
                    title,
                    previous_title: self.title.clone(),
                    renamed_at: ctx.at,
                })
            }
            ConversationCommand::End { reason } => {
                ConversationEvent::ConversationEnded(ConversationEnded {
                    sealed: None,
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
    use cqrs_es::Aggregate;

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
                reach: crate::Reach::Own,
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
                    assistant: true,
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
            reply_to: None,
            latency_ms: None,
            sources: Vec::new(),
        }
    }

    fn reply_to(message_id: Uuid) -> ConversationCommand {
        ConversationCommand::SendMessage {
            message_id: Uuid::new_v4(),
            role: Role::Assistant,
            content: "May.".into(),
            model: Some("local/extractive-v1".into()),
            prompt_tokens: Some(10),
            completion_tokens: Some(2),
            reply_to: Some(message_id),
            latency_ms: Some(3),
            sources: vec![MessageSource {
                kind: "knowledge".into(),
                id: Uuid::new_v4(),
                title: "Plan".into(),
                score: 0.5,
            }],
        }
    }

    /// Decides as the tenant-wide assistant and applies what was decided.
    fn run(c: &mut Conversation, body: ConversationCommand) -> Result<(), DomainError> {
        let mut context = ctx("acme", None);
        context.actor.reach = crate::Reach::Tenant;
        context.actor.subject = "assistant".into();
        let e = c.decide(Command { ctx: context, body })?;
        c.apply(e);
        Ok(())
    }

    fn user_message(c: &mut Conversation) -> Uuid {
        let body = send("when do we ship?");
        let ConversationCommand::SendMessage { message_id, .. } = body else {
            unreachable!("send makes a SendMessage")
        };
        run(c, body).expect("send");
        message_id
    }

    #[test]
    fn a_user_message_gets_one_reply_at_most() {
        let mut c = started();
        let asked = user_message(&mut c);
        assert_eq!(c.awaiting[&asked], Reply::Pending);
        run(&mut c, reply_to(asked)).expect("the reply");
        assert!(c.awaiting.is_empty(), "an answered message awaits nothing");
        assert_eq!(
            run(&mut c, reply_to(asked)),
            Err(DomainError::NoReplyAwaited)
        );
        let fail = ConversationCommand::FailReply {
            message_id: asked,
            reason: "down".into(),
            attempts: 1,
            asked_by: None,
        };
        assert_eq!(run(&mut c, fail), Err(DomainError::NoReplyAwaited));
        assert_eq!(
            run(
                &mut c,
                ConversationCommand::RequestReply { message_id: asked }
            ),
            Err(DomainError::NoReplyAwaited)
        );
    }

    #[test]
    fn a_failed_reply_can_be_requested_again_once_and_then_answered() {
        let mut c = started();
        let asked = user_message(&mut c);
        assert_eq!(
            run(
                &mut c,
                ConversationCommand::RequestReply { message_id: asked }
            ),
            Err(DomainError::ReplyNotFailed),
            "nothing failed yet"
        );
        let fail = ConversationCommand::FailReply {
            message_id: asked,
            reason: "every provider is down".into(),
            attempts: 3,
            asked_by: Some("ann".into()),
        };
        run(&mut c, fail).expect("failed");
        assert_eq!(c.awaiting[&asked], Reply::Failed);
        run(
            &mut c,
            ConversationCommand::RequestReply { message_id: asked },
        )
        .expect("again");
        assert_eq!(c.awaiting[&asked], Reply::Pending);
        assert_eq!(
            run(
                &mut c,
                ConversationCommand::RequestReply { message_id: asked }
            ),
            Err(DomainError::ReplyNotFailed),
            "already asked"
        );
        run(&mut c, reply_to(asked)).expect("answered");
        assert!(!c.awaiting.contains_key(&asked));
    }

    #[test]
    fn replies_answer_user_messages_of_this_conversation_only() {
        let mut c = started();
        let asked = user_message(&mut c);
        // Not a message of this conversation.
        assert_eq!(
            run(&mut c, reply_to(Uuid::new_v4())),
            Err(DomainError::NoReplyAwaited)
        );
        // Only an assistant message answers.
        let mut by_user = send("me too");
        if let ConversationCommand::SendMessage { reply_to, .. } = &mut by_user {
            *reply_to = Some(asked);
        }
        assert!(matches!(
            run(&mut c, by_user),
            Err(DomainError::Invalid {
                field: "reply_to",
                ..
            })
        ));
        // Sources are checked.
        let mut bad = reply_to(user_message(&mut c));
        if let ConversationCommand::SendMessage { sources, .. } = &mut bad {
            sources[0].score = f32::NAN;
        }
        assert!(matches!(
            run(&mut c, bad),
            Err(DomainError::Invalid {
                field: "sources",
                ..
            })
        ));
    }

    #[test]
    fn with_the_assistant_off_no_message_awaits_a_reply() {
        let mut c = Conversation::default();
        let e = c
            .decide(Command {
                ctx: ctx("acme", None),
                body: ConversationCommand::Start {
                    conversation_id: Uuid::new_v4(),
                    title: "Quiet".into(),
                    metadata: BTreeMap::new(),
                    assistant: false,
                },
            })
            .expect("start");
        c.apply(e);
        assert!(!c.assistant);
        let asked = user_message(&mut c);
        assert!(c.awaiting.is_empty());
        assert_eq!(
            run(
                &mut c,
                ConversationCommand::FailReply {
                    message_id: asked,
                    reason: "x".into(),
                    attempts: 0,
                    asked_by: None,
                },
            ),
            Err(DomainError::NoReplyAwaited)
        );
        assert!(matches!(
            run(
                &mut c,
                ConversationCommand::RequestReply { message_id: asked }
            ),
            Err(DomainError::Invalid {
                field: "assistant",
                ..
            })
        ));
    }

    #[test]
    fn the_state_stays_the_same_size_however_many_messages_were_answered() {
        let mut c = started();
        for _ in 0..1_000 {
            let asked = user_message(&mut c);
            run(&mut c, reply_to(asked)).expect("answered");
        }
        let pending = user_message(&mut c);
        assert_eq!(c.message_count, 2_001);
        assert_eq!(c.awaiting.keys().collect::<Vec<_>>(), vec![&pending]);
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
        let by = |subject: &str, reach| Command {
            ctx: CommandContext {
                actor: crate::Actor {
                    subject: subject.into(),
                    reach,
                },
                ..ctx("acme", None)
            },
            body: send("hi"),
        };
        assert!(c.decide(by("ann", crate::Reach::Own)).is_ok());
        assert_eq!(
            c.decide(by("bob", crate::Reach::Own)),
            Err(DomainError::NotFound),
            "another member's conversation does not exist for bob"
        );
        assert!(
            c.decide(by("assistant", crate::Reach::Tenant)).is_ok(),
            "an admin or the assistant sees the whole tenant"
        );
        let mut legacy = c.clone();
        legacy.started_by = None;
        assert!(
            legacy.decide(by("bob", crate::Reach::Own)).is_ok(),
            "conversations from before owners were recorded stay shared"
        );
    }
}
