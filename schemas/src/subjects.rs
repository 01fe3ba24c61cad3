//! Whose personal data a field is (docs/DATA-PROTECTION.md, "What is personal, and whose
//! it is"): the name of the key it is sealed under, and what an erasure names.

use uuid::Uuid;

/// The person (or pseudo-person) some personal data is about, within one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A person, by the `sub` of their tokens (`user:<sub>`).
    User(String),
    /// A conversation recorded before its starter was (`conversation:<id>`): erased as a
    /// whole.
    Conversation(Uuid),
    /// The tenant itself: company knowledge (`tenant`).
    Tenant,
}

/// A subject's name that is not `user:<sub>`, `conversation:<uuid>` or `tenant`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a subject is user:<sub>, conversation:<uuid> or tenant, not {0:?}")]
pub struct BadSubject(pub String);

/// The longest `sub` a user subject carries (tokens' subjects are far shorter).
pub const MAX_USER_BYTES: usize = 256;

impl Subject {
    pub fn parse(text: &str) -> Result<Subject, BadSubject> {
        let bad = || BadSubject(text.chars().take(64).collect());
        if text == "tenant" {
            return Ok(Subject::Tenant);
        }
        if let Some(sub) = text.strip_prefix("user:") {
            if sub.is_empty() || sub.len() > MAX_USER_BYTES || sub.chars().any(char::is_control) {
                return Err(bad());
            }
            return Ok(Subject::User(sub.to_owned()));
        }
        if let Some(id) = text.strip_prefix("conversation:") {
            return id.parse().map(Subject::Conversation).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::User(sub) => write!(f, "user:{sub}"),
            Subject::Conversation(id) => write!(f, "conversation:{id}"),
            Subject::Tenant => f.write_str("tenant"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_read_back_from_their_names_and_nothing_else_is_one() {
        let id = Uuid::new_v4();
        for subject in [
            Subject::User("alice@example.com".into()),
            Subject::User("user:with:colons".into()),
            Subject::Conversation(id),
            Subject::Tenant,
        ] {
            assert_eq!(Subject::parse(&subject.to_string()), Ok(subject));
        }
        for bad in [
            "",
            "user:",
            "user:a\nb",
            "conversation:x",
            "tenants",
            "User:a",
        ] {
            assert!(Subject::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Subject::parse(&format!("user:{}", "a".repeat(MAX_USER_BYTES + 1))).is_err());
    }
}
