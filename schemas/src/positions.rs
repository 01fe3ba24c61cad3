//! The three ways an event or an aggregate is located, each with one name and one text
//! form. The text forms are part of the public contract: clients send them back, and the
//! Kafka headers carry them.
//!
//! * [`CommitPosition`]: a place in the event store's committed global order
//!   (`<tx_id>.<global_position>`). Audit cursors and the `commit_position` header.
//! * [`Version`]: how many events an aggregate has, which is the `sequence` of its latest
//!   event. `ETag`/`If-Match` and the `sequence` header.
//! * [`VersionToken`]: an aggregate at a version (`<aggregate>:<id>:<version>`). A command
//!   answers with one (the REST field is named `position`); a read given one waits until
//!   the read model has that version.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::topics::AggregateKind;

/// A place in the committed global order: events sort by the id of the transaction that
/// wrote them, then by their global position. `CommitPosition::START` is before every event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct CommitPosition {
    pub tx_id: u64,
    pub global: i64,
}

impl CommitPosition {
    pub const START: CommitPosition = CommitPosition {
        tx_id: 0,
        global: 0,
    };
}

impl fmt::Display for CommitPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx_id, self.global)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("commit position {0:?} is not <tx_id>.<global_position>")]
pub struct BadCommitPosition(pub String);

impl FromStr for CommitPosition {
    type Err = BadCommitPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCommitPosition(s.to_owned());
        let (tx, global) = s.split_once('.').ok_or_else(bad)?;
        Ok(CommitPosition {
            tx_id: tx.parse().map_err(|_| bad())?,
            global: global.parse().map_err(|_| bad())?,
        })
    }
}

/// Number of events an aggregate has; the sequence of its latest event (0: none).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An aggregate at a version: what a client waits for on the query side.
/// Text form `<aggregate>:<id>:<version>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionToken {
    pub kind: AggregateKind,
    pub id: Uuid,
    pub version: Version,
}

impl fmt::Display for VersionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.id, self.version)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("position token {0:?} is not <aggregate>:<uuid>:<version>")]
pub struct BadVersionToken(pub String);

impl FromStr for VersionToken {
    type Err = BadVersionToken;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersionToken(s.to_owned());
        let mut parts = s.split(':');
        let (Some(kind), Some(id), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(VersionToken {
            kind: AggregateKind::parse(kind).ok_or_else(bad)?,
            id: id.parse().map_err(|_| bad())?,
            version: Version(version.parse().map_err(|_| bad())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_positions_order_by_transaction_then_position_and_round_trip_as_text() {
        let a = CommitPosition {
            tx_id: 5,
            global: 90,
        };
        let b = CommitPosition {
            tx_id: 6,
            global: 10,
        };
        assert!(CommitPosition::START < a && a < b);
        assert_eq!("5.90".parse::<CommitPosition>().unwrap(), a);
        for bad in ["5", "x.1", "-1.1", ""] {
            assert!(bad.parse::<CommitPosition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn version_tokens_round_trip_and_reject_garbage() {
        let t = VersionToken {
            kind: AggregateKind::Conversation,
            id: Uuid::new_v4(),
            version: Version(7),
        };
        assert_eq!(t.to_string().parse::<VersionToken>().unwrap(), t);
        for bad in [
            "",
            "conversation",
            "chat:00000000-0000-0000-0000-000000000000:1",
            "conversation:x:1",
            "conversation:00000000-0000-0000-0000-000000000000:1:2",
        ] {
            assert!(bad.parse::<VersionToken>().is_err(), "{bad}");
        }
    }
}
