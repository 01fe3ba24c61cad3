//! Kafka topics of the contract: one topic per aggregate type, keyed by aggregate id.

use std::fmt;

/// The aggregate types whose events are published. Each has its own topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    Conversation,
    Document,
    /// A document of the tenant's knowledge base.
    Knowledge,
    /// A tenant's webhook subscription.
    WebhookEndpoint,
    /// A user's in-app notification inbox (what they have read).
    Inbox,
    /// Whose personal data was erased (a person, a conversation, the tenant).
    Subject,
}

impl AggregateKind {
    pub const ALL: [AggregateKind; 6] = [
        AggregateKind::Conversation,
        AggregateKind::Document,
        AggregateKind::Knowledge,
        AggregateKind::WebhookEndpoint,
        AggregateKind::Inbox,
        AggregateKind::Subject,
    ];

    /// The `aggregate_type` stored in the event store for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateKind::Conversation => "conversation",
            AggregateKind::Document => "document",
            AggregateKind::Knowledge => "knowledge",
            AggregateKind::WebhookEndpoint => "webhook_endpoint",
            AggregateKind::Inbox => "inbox",
            AggregateKind::Subject => "subject",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Topic name under a deployment prefix, e.g. `threadline.` gives
    /// `threadline.conversation.events`.
    pub fn topic(self, prefix: &str) -> String {
        format!("{prefix}{}.events", self.as_str())
    }
}

impl fmt::Display for AggregateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
