//! The Subject aggregate: the record of what was erased of one subject of a tenant (a
//! person, a conversation, or the tenant itself; docs/DATA-PROTECTION.md, "Erasure").
//! The keys are emptied by the command service before the command is decided; the
//! aggregate records who asked, why, and what went. Erasing again is recorded again and
//! names what is erased by then (nothing new is emptied).

use schemas::{Subject, SubjectErased};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Command, DomainError, Reach, Version, validate};

/// The id of `subject`'s erasure record in `tenant`.
pub fn subject_id(tenant: &str, subject: &Subject) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x7468_7265_6164_6c69_6e65_0000_0000_00c0);
    // Length-prefixed: no two (tenant, subject) pairs give the same name.
    Uuid::new_v5(
        &NAMESPACE,
        format!("{}:{tenant}/{subject}", tenant.len()).as_bytes(),
    )
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubjectCommand {
    /// Records an erasure whose keys were emptied: `conversations` are those whose keys
    /// are erased (all of them by now, not only this time), `keys_erased` what this time
    /// emptied.
    Erase {
        subject: Subject,
        reason: String,
        conversations: Vec<Uuid>,
        keys_erased: u64,
    },
}

aggregate_events!(SubjectEvent { SubjectErased });

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubjectRecord {
    pub id: Option<Uuid>,
    pub tenant_id: String,
    pub subject: String,
    /// Erasures recorded.
    pub erasures: u64,
    pub version: Version,
}

decided_aggregate!(SubjectRecord, "subject", SubjectCommand, SubjectEvent);

impl SubjectRecord {
    /// The state after `event` (the aggregate's `apply`).
    fn evolve(&mut self, event: SubjectEvent) {
        self.version.0 += 1;
        match event {
            SubjectEvent::SubjectErased(e) => {
                self.id = Some(e.subject_id);
                self.tenant_id = e.tenant_id;
                self.subject = e.subject;
                self.erasures += 1;
            }
        }
    }
}

impl SubjectRecord {
    /// The event an erasure is recorded as, or why it is refused. Pure. Only a caller who
    /// reaches the whole tenant erases (the API admits admins only).
    pub fn decide(&self, command: Command<SubjectCommand>) -> Result<SubjectEvent, DomainError> {
        let Command { ctx, body } = command;
        match body {
            SubjectCommand::Erase {
                subject,
                reason,
                conversations,
                keys_erased,
            } => {
                if ctx.actor.reach != Reach::Tenant {
                    return Err(DomainError::NotFound);
                }
                let reason = validate::text("reason", &reason, validate::REASON_MAX, true)?;
                let id = subject_id(&ctx.tenant_id, &subject);
                if self.id.is_some_and(|mine| mine != id) {
                    return Err(DomainError::NotFound);
                }
                let mut conversation_ids: Vec<String> =
                    conversations.iter().map(Uuid::to_string).collect();
                conversation_ids.sort();
                conversation_ids.dedup();
                Ok(SubjectEvent::SubjectErased(SubjectErased {
                    subject_id: id,
                    tenant_id: ctx.tenant_id,
                    subject: subject.to_string(),
                    conversation_ids,
                    keys_erased: i64::try_from(keys_erased).unwrap_or(i64::MAX),
                    reason,
                    erased_by: ctx.actor.subject,
                    erased_at: ctx.at,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, CommandContext};

    fn ctx(reach: Reach) -> CommandContext {
        CommandContext {
            tenant_id: "acme".into(),
            actor: Actor {
                subject: "root".into(),
                reach,
            },
            expected_version: None,
            at: schemas::timestamp_now(),
        }
    }

    fn erase(reason: &str) -> SubjectCommand {
        SubjectCommand::Erase {
            subject: Subject::User("ann".into()),
            reason: reason.into(),
            conversations: vec![Uuid::from_u128(2), Uuid::from_u128(1), Uuid::from_u128(2)],
            keys_erased: 2,
        }
    }

    #[test]
    fn an_admin_erasure_records_who_why_and_which_conversations() {
        let SubjectEvent::SubjectErased(e) = SubjectRecord::default()
            .decide(Command {
                ctx: ctx(Reach::Tenant),
                body: erase("  ticket 42 "),
            })
            .expect("accepted");
        assert_eq!(
            e.subject_id,
            subject_id("acme", &Subject::User("ann".into()))
        );
        assert_eq!(e.subject, "user:ann");
        assert_eq!(e.reason, "ticket 42");
        assert_eq!(e.erased_by, "root");
        assert_eq!(e.conversations(), [Uuid::from_u128(1), Uuid::from_u128(2)]);
        assert_eq!(e.person(), Some("ann"));
        assert!(!e.is_tenant());
        assert_ne!(
            subject_id("acme", &Subject::User("ann".into())),
            subject_id("acme", &Subject::Tenant)
        );
    }

    #[test]
    fn a_member_or_no_reason_is_refused() {
        let member = SubjectRecord::default().decide(Command {
            ctx: ctx(Reach::Own),
            body: erase("mine"),
        });
        assert_eq!(member, Err(DomainError::NotFound));
        let silent = SubjectRecord::default().decide(Command {
            ctx: ctx(Reach::Tenant),
            body: erase("  "),
        });
        assert!(matches!(
            silent,
            Err(DomainError::Invalid {
                field: "reason",
                ..
            })
        ));
        let garbled = SubjectRecord::default().decide(Command {
            ctx: ctx(Reach::Tenant),
            body: erase("ticket\u{0}42"),
        });
        assert!(
            matches!(
                garbled,
                Err(DomainError::Invalid {
                    field: "reason",
                    ..
                })
            ),
            "{garbled:?}"
        );
    }
}
