//! Who sees what inside a tenant. The product's security rule, written once:
//!
//! - Everything is one tenant's; nobody sees another tenant's anything.
//! - Admins, auditors and services reach the whole tenant ([`Reach::Tenant`]).
//! - A member ([`Reach::Own`]) sees the knowledge base, the conversations they started
//!   (with their messages and documents), those started before conversations recorded
//!   who started them, and their own inbox.
//!
//! The rule is the list [`MEMBER_SEES`] of clauses, any one of which lets a member see a
//! thing. Each place that applies it renders that list and nothing else: [`Scope::sees`]
//! evaluates it in Rust (commands, the in-memory vector index, position checks),
//! [`sql::conversation_visible`] writes it as SQL over a conversations row (the read
//! model), and [`Scope::admission`] hands it to stores that filter by field (Qdrant).
//! A clause added here fails to compile in every rendering until it is written there.
//!
//! Architecture invariant: no I/O and no dependencies; a read or a command that filters
//! by viewer takes a [`Scope`].

/// How much of its tenant a caller reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// Members: what [`MEMBER_SEES`] lets them see.
    Own,
    /// Admins, auditors and services: the whole tenant.
    Tenant,
}

/// Who reads or acts: a subject (a token's `sub`) of a tenant, and their reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope<'a> {
    pub tenant: &'a str,
    pub subject: &'a str,
    pub reach: Reach,
}

/// What a thing is, as far as the rule cares. A conversation's messages and documents
/// are looked at as their conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Conversation,
    /// A knowledge-base document: the whole tenant's.
    Knowledge,
    /// A user's notifications.
    Inbox,
    /// A webhook endpoint: its tenant's administrators'.
    WebhookEndpoint,
}

/// A thing looked at: its tenant, its kind, and whose it is (a conversation's starter,
/// an inbox's user; `None` when that was not recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resource<'a> {
    pub tenant: &'a str,
    pub kind: Kind,
    pub owner: Option<&'a str>,
}

impl<'a> Resource<'a> {
    pub const fn conversation(tenant: &'a str, started_by: Option<&'a str>) -> Self {
        Resource {
            tenant,
            kind: Kind::Conversation,
            owner: started_by,
        }
    }

    pub const fn knowledge(tenant: &'a str) -> Self {
        Resource {
            tenant,
            kind: Kind::Knowledge,
            owner: None,
        }
    }

    pub const fn webhook_endpoint(tenant: &'a str) -> Self {
        Resource {
            tenant,
            kind: Kind::WebhookEndpoint,
            owner: None,
        }
    }

    pub const fn inbox(tenant: &'a str, user: &'a str) -> Self {
        Resource {
            tenant,
            kind: Kind::Inbox,
            owner: Some(user),
        }
    }
}

/// One way a member may see a thing of their tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clause {
    /// It is knowledge.
    Knowledge,
    /// A conversation nobody was recorded as starting (started before that was kept).
    OwnerUnknown,
    /// The member owns it.
    OwnedBySelf,
}

/// The rule for members: any one of these lets them see a thing of their tenant.
pub const MEMBER_SEES: [Clause; 3] = [Clause::Knowledge, Clause::OwnerUnknown, Clause::OwnedBySelf];

impl Clause {
    /// Whether the clause holds for `resource` seen by `subject`.
    pub fn holds(self, resource: &Resource<'_>, subject: &str) -> bool {
        match self {
            Clause::Knowledge => resource.kind == Kind::Knowledge,
            Clause::OwnerUnknown => resource.kind == Kind::Conversation && resource.owner.is_none(),
            Clause::OwnedBySelf => resource.owner == Some(subject),
        }
    }
}

/// What a store that filters by field must admit for a scope, the tenant aside (always
/// one tenant's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission<'a> {
    /// Everything of the tenant.
    Everything,
    /// Only what one of `clauses` lets `subject` see.
    AnyOf {
        subject: &'a str,
        clauses: &'static [Clause],
    },
}

impl<'a> Scope<'a> {
    pub const fn new(tenant: &'a str, subject: &'a str, reach: Reach) -> Self {
        Scope {
            tenant,
            subject,
            reach,
        }
    }

    /// The rule, in Rust.
    pub fn sees(&self, resource: &Resource<'_>) -> bool {
        if resource.tenant != self.tenant {
            return false;
        }
        match self.admission() {
            Admission::Everything => true,
            Admission::AnyOf { subject, clauses } => {
                clauses.iter().any(|c| c.holds(resource, subject))
            }
        }
    }

    /// The rule for stores that filter by field.
    pub fn admission(&self) -> Admission<'a> {
        match self.reach {
            Reach::Tenant => Admission::Everything,
            Reach::Own => Admission::AnyOf {
                subject: self.subject,
                clauses: &MEMBER_SEES,
            },
        }
    }

    /// The value to bind to the parameter of [`sql::conversation_visible`]: the member's
    /// subject, or `None` (SQL NULL) for the whole tenant.
    pub fn only(&self) -> Option<&'a str> {
        match self.reach {
            Reach::Tenant => None,
            Reach::Own => Some(self.subject),
        }
    }
}

/// The rule in SQL.
pub mod sql {
    use super::{Clause, MEMBER_SEES};

    /// A condition over a conversations row (or anything that goes with one) whose owner
    /// is the column `owner`, given [`super::Scope::only`] as parameter `$param`: true for
    /// every row when it is NULL (the whole tenant), else [`MEMBER_SEES`] for a
    /// conversation. The tenant is filtered apart, as every query does.
    pub fn conversation_visible(owner: &str, param: u8) -> String {
        let mut any = vec![format!("${param}::text IS NULL")];
        for clause in MEMBER_SEES {
            match clause {
                // A conversations row is no knowledge.
                Clause::Knowledge => {}
                Clause::OwnerUnknown => any.push(format!("{owner} IS NULL")),
                Clause::OwnedBySelf => any.push(format!("{owner} = ${param}")),
            }
        }
        format!("({})", any.join(" OR "))
    }
}

/// The table every rendering of the rule is checked against: who, what, seen or not.
/// The read model runs it through its SQL, the vector stores through their filters, the
/// query API through HTTP; a change of the rule changes this table first.
pub mod conformance {
    use super::{Reach, Resource, Scope};

    const ANN: Scope<'static> = Scope::new("acme", "ann", Reach::Own);
    const ROOT: Scope<'static> = Scope::new("acme", "root", Reach::Tenant);

    pub const CASES: &[(Scope<'static>, Resource<'static>, bool)] = &[
        (ANN, Resource::conversation("acme", Some("ann")), true),
        (ANN, Resource::conversation("acme", Some("bob")), false),
        (ANN, Resource::conversation("acme", None), true),
        (ANN, Resource::conversation("other", Some("ann")), false),
        (ANN, Resource::conversation("other", None), false),
        (ANN, Resource::knowledge("acme"), true),
        (ANN, Resource::knowledge("other"), false),
        (ANN, Resource::inbox("acme", "ann"), true),
        (ANN, Resource::inbox("acme", "bob"), false),
        (ANN, Resource::webhook_endpoint("acme"), false),
        (ROOT, Resource::conversation("acme", Some("bob")), true),
        (ROOT, Resource::conversation("acme", None), true),
        (ROOT, Resource::conversation("other", Some("root")), false),
        (ROOT, Resource::knowledge("acme"), true),
        (ROOT, Resource::knowledge("other"), false),
        (ROOT, Resource::inbox("acme", "bob"), true),
        (ROOT, Resource::inbox("other", "root"), false),
        (ROOT, Resource::webhook_endpoint("acme"), true),
        (ROOT, Resource::webhook_endpoint("other"), false),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_in_rust() {
        for (scope, resource, seen) in conformance::CASES {
            assert_eq!(scope.sees(resource), *seen, "{scope:?} {resource:?}");
        }
    }

    #[test]
    fn the_rule_in_sql() {
        assert_eq!(
            sql::conversation_visible("c.started_by", 3),
            "($3::text IS NULL OR c.started_by IS NULL OR c.started_by = $3)"
        );
    }
}
