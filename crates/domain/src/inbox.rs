//! The Inbox aggregate: one per user of a tenant, recording what they have read of their
//! in-app notifications (the notifications themselves are the notifications projection's;
//! reading them is the user's own act, so it is an event like any other).

use schemas::NotificationsRead;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Command, DomainError, Version};

/// The most notifications one command marks.
pub const READ_MAX: usize = 100;

/// The id of `subject`'s inbox in `tenant`: the same for every command of theirs, and
/// another user's (or another tenant's) is another inbox.
pub fn inbox_id(tenant: &str, subject: &str) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x7468_7265_6164_6c69_6e65_0000_0000_00b0);
    // Length-prefixed: no two (tenant, subject) pairs give the same name.
    Uuid::new_v5(
        &NAMESPACE,
        format!("{}:{tenant}/{subject}", tenant.len()).as_bytes(),
    )
}

#[derive(Debug, Clone, PartialEq)]
pub enum InboxCommand {
    MarkRead { notification_ids: Vec<Uuid> },
}

aggregate_events!(InboxEvent { NotificationsRead });

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inbox {
    pub id: Option<Uuid>,
    pub tenant_id: String,
    pub user_id: String,
    /// Notifications marked read, counted over every command.
    pub read: u64,
    pub version: Version,
}

decided_aggregate!(Inbox, "inbox", InboxCommand, InboxEvent);

impl Inbox {
    /// The state after `event` (the aggregate's `apply`).
    fn evolve(&mut self, event: InboxEvent) {
        self.version.0 += 1;
        match event {
            InboxEvent::NotificationsRead(e) => {
                self.id = Some(e.inbox_id);
                self.tenant_id = e.tenant_id;
                self.user_id = e.user_id;
                self.read += e.notification_ids.len() as u64;
            }
        }
    }
}

impl Inbox {
    /// The event a command produces, or why it is refused. Pure: no I/O. Only the inbox's
    /// own user writes to it: the id is derived from the caller, so another inbox is
    /// never named.
    pub fn decide(&self, command: Command<InboxCommand>) -> Result<InboxEvent, DomainError> {
        let Command { ctx, body } = command;
        let id = inbox_id(&ctx.tenant_id, &ctx.actor.subject);
        if self.id.is_some_and(|mine| mine != id) {
            return Err(DomainError::NotFound);
        }
        match body {
            InboxCommand::MarkRead { notification_ids } => {
                let mut ids: Vec<String> = notification_ids.iter().map(Uuid::to_string).collect();
                ids.sort();
                ids.dedup();
                if ids.is_empty() || ids.len() > READ_MAX {
                    return Err(DomainError::Invalid {
                        field: "notification_ids",
                        reason: format!("name 1 to {READ_MAX} notifications"),
                    });
                }
                Ok(InboxEvent::NotificationsRead(NotificationsRead {
                    inbox_id: id,
                    tenant_id: ctx.tenant_id,
                    user_id: ctx.actor.subject,
                    notification_ids: ids,
                    read_at: ctx.at,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, CommandContext, Reach};

    fn ctx(tenant: &str, subject: &str) -> CommandContext {
        CommandContext {
            tenant_id: tenant.into(),
            actor: Actor {
                subject: subject.into(),
                reach: Reach::Own,
            },
            expected_version: None,
            at: schemas::timestamp_now(),
        }
    }

    #[test]
    fn a_user_marks_their_own_notifications_read() {
        let n = Uuid::new_v4();
        let event = Inbox::default()
            .decide(Command {
                ctx: ctx("acme", "ann"),
                body: InboxCommand::MarkRead {
                    notification_ids: vec![n, n],
                },
            })
            .expect("accepted");
        let InboxEvent::NotificationsRead(e) = event;
        assert_eq!(e.inbox_id, inbox_id("acme", "ann"));
        assert_eq!(e.notification_ids, [n.to_string()]);
        assert_ne!(inbox_id("acme", "ann"), inbox_id("acme", "bob"));
        assert_ne!(inbox_id("ac", "me/ann"), inbox_id("acme", "/ann"));
    }

    #[test]
    fn nothing_or_too_much_is_refused_and_another_users_inbox_is_not_found() {
        let none = Inbox::default().decide(Command {
            ctx: ctx("acme", "ann"),
            body: InboxCommand::MarkRead {
                notification_ids: vec![],
            },
        });
        assert!(matches!(none, Err(DomainError::Invalid { .. })));
        let anns = Inbox {
            id: Some(inbox_id("acme", "ann")),
            ..Default::default()
        };
        let bob = anns.decide(Command {
            ctx: ctx("acme", "bob"),
            body: InboxCommand::MarkRead {
                notification_ids: vec![Uuid::new_v4()],
            },
        });
        assert_eq!(bob, Err(DomainError::NotFound));
    }
}
