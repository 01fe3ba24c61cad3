//! Executing commands: per-aggregate serialisation, retry on storage conflicts,
//! idempotency keys, and the metadata every event carries.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use postgres_es::PostgresEventRepository;
use schemas::{AggregateKind, DocumentKind, Event, Role};
use sqlx::{PgPool, Row};
use thiserror::Error;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use crate::domain::document::Transcript;
use crate::domain::{
    Command, CommandContext, Conversation, ConversationCommand, ConversationEvent, Document,
    DocumentCommand, DocumentGenerator, DomainError, Version,
};
use crate::store::{self, Store, log};

/// Who sent a command and how it relates to other work. Stored on every event.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMeta {
    pub tenant_id: String,
    pub user_id: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub idempotency: Option<Idempotency>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Idempotency {
    pub key: String,
    /// Hash of the request (method, target, body): the same key with another request is refused.
    pub request_hash: String,
}

impl RequestMeta {
    fn to_metadata(&self, command: &str) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("tenant_id".to_owned(), self.tenant_id.clone()),
            ("user_id".to_owned(), self.user_id.clone()),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
            ("command".to_owned(), command.to_owned()),
        ]);
        let optional = [
            ("traceparent", self.traceparent.as_ref()),
            ("tracestate", self.tracestate.as_ref()),
            ("idempotency_key", self.idempotency.as_ref().map(|i| &i.key)),
            (
                "request_hash",
                self.idempotency.as_ref().map(|i| &i.request_hash),
            ),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                m.insert(k.to_owned(), v.clone());
            }
        }
        m
    }
}

/// What a client can wait for on the query side: this aggregate at this version.
/// Text form `<aggregate>:<id>:<version>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionToken {
    pub kind: AggregateKind,
    pub id: Uuid,
    pub version: Version,
}

impl fmt::Display for PositionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.id, self.version)
    }
}

#[derive(Debug, Error)]
#[error("position token {0:?} is not <aggregate>:<uuid>:<version>")]
pub struct BadToken(String);

impl FromStr for PositionToken {
    type Err = BadToken;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadToken(s.to_owned());
        let mut parts = s.split(':');
        let (Some(kind), Some(id), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(PositionToken {
            kind: AggregateKind::parse(kind).ok_or_else(bad)?,
            id: id.parse().map_err(|_| bad())?,
            version: Version(version.parse().map_err(|_| bad())?),
        })
    }
}

/// An accepted command: the aggregate, its new version, and the events appended.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub kind: AggregateKind,
    pub aggregate_id: Uuid,
    pub version: Version,
    pub events: Vec<Event>,
    /// True when this is the stored outcome of an earlier request with the same
    /// idempotency key; nothing was appended.
    pub replayed: bool,
}

impl Accepted {
    pub fn position(&self) -> PositionToken {
        PositionToken {
            kind: self.kind,
            id: self.aggregate_id,
            version: self.version,
        }
    }
}

#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("the aggregate stayed contended after {0} attempts")]
    Contended(u32),
    #[error("event store: {0}")]
    Storage(String),
}

fn storage(e: impl fmt::Display) -> CommandError {
    CommandError::Storage(e.to_string())
}

/// One async mutex per aggregate, so commands to the same aggregate run one at a time in
/// this process (other replicas are handled by the retry on conflict).
type AggregateKey = (AggregateKind, Uuid);

#[derive(Default)]
struct AggregateLocks {
    map: Mutex<HashMap<AggregateKey, Weak<tokio::sync::Mutex<()>>>>,
}

impl AggregateLocks {
    async fn lock(&self, kind: AggregateKind, id: Uuid) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut map = self
                .map
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if map.len() > 4096 {
                map.retain(|_, m| m.strong_count() > 0);
            }
            match map.get(&(kind, id)).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert((kind, id), Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }
}

struct KeyHit {
    request_hash: String,
    aggregate_type: String,
    aggregate_id: String,
    first_sequence: i64,
    last_sequence: i64,
}

pub struct CommandService {
    pool: PgPool,
    conversations: Store<Conversation>,
    documents: Store<Document>,
    generator: Arc<dyn DocumentGenerator>,
    locks: AggregateLocks,
    max_attempts: u32,
}

/// Input of a new message.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub role: Role,
    pub content: String,
    pub model: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

impl CommandService {
    pub fn new(pool: PgPool, generator: Arc<dyn DocumentGenerator>) -> Self {
        Self {
            conversations: store::store(pool.clone()),
            documents: store::store(pool.clone()),
            pool,
            generator,
            locks: AggregateLocks::default(),
            max_attempts: 10,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn ctx(meta: &RequestMeta, expected_version: Option<Version>) -> CommandContext {
        CommandContext {
            tenant_id: meta.tenant_id.clone(),
            expected_version,
            at: schemas::timestamp_now(),
        }
    }

    pub async fn start_conversation(
        &self,
        title: String,
        metadata: std::collections::BTreeMap<String, String>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let id = Uuid::now_v7();
        let body = ConversationCommand::Start {
            conversation_id: id,
            title,
            metadata,
        };
        self.conversation(id, body, None, meta).await
    }

    pub async fn send_message(
        &self,
        id: Uuid,
        message: NewMessage,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let body = ConversationCommand::SendMessage {
            message_id: Uuid::now_v7(),
            role: message.role,
            content: message.content,
            model: message.model,
            prompt_tokens: message.prompt_tokens,
            completion_tokens: message.completion_tokens,
        };
        self.conversation(id, body, expected, meta).await
    }

    pub async fn rename_conversation(
        &self,
        id: Uuid,
        title: String,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        self.conversation(id, ConversationCommand::Rename { title }, expected, meta)
            .await
    }

    pub async fn end_conversation(
        &self,
        id: Uuid,
        reason: Option<String>,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        self.conversation(id, ConversationCommand::End { reason }, expected, meta)
            .await
    }

    async fn conversation(
        &self,
        id: Uuid,
        body: ConversationCommand,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let name = match &body {
            ConversationCommand::Start { .. } => "StartConversation",
            ConversationCommand::SendMessage { .. } => "SendMessage",
            ConversationCommand::Rename { .. } => "RenameConversation",
            ConversationCommand::End { .. } => "EndConversation",
        };
        let command = Command {
            ctx: Self::ctx(meta, expected),
            body,
        };
        self.execute(
            &self.conversations,
            &(),
            AggregateKind::Conversation,
            id,
            name,
            command,
            meta,
        )
        .await
    }

    /// Generates a document from a conversation of the caller's tenant.
    pub async fn generate_document(
        &self,
        conversation_id: Uuid,
        kind: DocumentKind,
        title: Option<String>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let transcript = self.transcript(conversation_id, &meta.tenant_id).await?;
        let document_id = Uuid::now_v7();
        let command = Command {
            ctx: Self::ctx(meta, None),
            body: DocumentCommand::Generate {
                document_id,
                kind,
                title,
                transcript,
            },
        };
        self.execute(
            &self.documents,
            &self.generator,
            AggregateKind::Document,
            document_id,
            "GenerateDocument",
            command,
            meta,
        )
        .await
    }

    async fn transcript(&self, id: Uuid, tenant_id: &str) -> Result<Transcript, CommandError> {
        let events = self
            .conversations
            .load_events(&id.to_string())
            .await
            .map_err(storage)?;
        let mut transcript: Option<Transcript> = None;
        for envelope in events {
            match envelope.payload {
                ConversationEvent::ConversationStarted(e) if e.tenant_id == tenant_id => {
                    transcript = Some(Transcript {
                        conversation_id: id,
                        title: e.title,
                        messages: Vec::new(),
                    })
                }
                ConversationEvent::MessageSent(m) => {
                    if let Some(t) = transcript.as_mut() {
                        t.messages.push((m.role, m.content));
                    }
                }
                ConversationEvent::ConversationRenamed(r) => {
                    if let Some(t) = transcript.as_mut() {
                        t.title = r.title;
                    }
                }
                _ => {}
            }
        }
        transcript.ok_or(CommandError::Domain(DomainError::NotFound))
    }

    /// Load, decide, append; retried on a storage conflict (another replica wrote the
    /// same aggregate, or a concurrent request with the same idempotency key won).
    #[allow(clippy::too_many_arguments)]
    async fn execute<A>(
        &self,
        store: &PersistedEventStore<PostgresEventRepository, A>,
        services: &A::Services,
        kind: AggregateKind,
        id: Uuid,
        name: &str,
        command: A::Command,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError>
    where
        A: Aggregate<Error = DomainError>,
        A::Command: Clone,
        A::Event: Into<Event>,
    {
        let _serialised = self.locks.lock(kind, id).await;
        if let Some(idem) = &meta.idempotency
            && let Some(done) = self.replay(&meta.tenant_id, idem).await?
        {
            return Ok(done);
        }
        let metadata = meta.to_metadata(name);
        for attempt in 1..=self.max_attempts {
            let mut context = store
                .load_aggregate(&id.to_string())
                .await
                .map_err(storage)?;
            let sink = EventSink::default();
            context
                .aggregate()
                .handle(command.clone(), services, &sink)
                .await?;
            let events = sink.collect().await;
            match store.commit(events, context, metadata.clone()).await {
                Ok(committed) => {
                    let version = committed.last().map_or(0, |e| e.sequence as u64);
                    return Ok(Accepted {
                        kind,
                        aggregate_id: id,
                        version: Version(version),
                        events: committed.into_iter().map(|e| e.payload.into()).collect(),
                        replayed: false,
                    });
                }
                Err(AggregateError::AggregateConflict) => {
                    if let Some(idem) = &meta.idempotency
                        && let Some(done) = self.replay(&meta.tenant_id, idem).await?
                    {
                        return Ok(done);
                    }
                    tracing::debug!(%kind, %id, attempt, "storage conflict, retrying");
                    let jitter = u64::from(id.as_u128() as u8 % 8);
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3 + jitter))
                        .await;
                }
                Err(AggregateError::UserError(e)) => return Err(e.into()),
                Err(e) => return Err(storage(e)),
            }
        }
        Err(CommandError::Contended(self.max_attempts))
    }

    /// The outcome of an earlier request with this idempotency key, if there was one.
    async fn replay(
        &self,
        tenant_id: &str,
        idem: &Idempotency,
    ) -> Result<Option<Accepted>, CommandError> {
        let Some(hit) = self.find_key(tenant_id, &idem.key).await? else {
            return Ok(None);
        };
        if hit.request_hash != idem.request_hash {
            return Err(CommandError::IdempotencyKeyReused);
        }
        let kind = AggregateKind::parse(&hit.aggregate_type)
            .ok_or_else(|| storage("unknown aggregate type"))?;
        let aggregate_id: Uuid = hit.aggregate_id.parse().map_err(storage)?;
        let stored = log::aggregate_events(
            &self.pool,
            &hit.aggregate_type,
            &hit.aggregate_id,
            hit.first_sequence..=hit.last_sequence,
        )
        .await
        .map_err(storage)?;
        let events = stored
            .into_iter()
            .map(|e| serde_json::from_value::<Event>(e.payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok(Some(Accepted {
            kind,
            aggregate_id,
            version: Version(hit.last_sequence as u64),
            events,
            replayed: true,
        }))
    }

    /// Forgets idempotency keys older than `ttl`; a request with a forgotten key is a new
    /// request. Returns how many were removed.
    pub async fn expire_idempotency_keys(&self, ttl: Duration) -> Result<u64, CommandError> {
        let removed =
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval")
                .bind(format!("{} milliseconds", ttl.as_millis()))
                .execute(&self.pool)
                .await
                .map_err(storage)?;
        Ok(removed.rows_affected())
    }

    async fn find_key(&self, tenant_id: &str, key: &str) -> Result<Option<KeyHit>, CommandError> {
        let row = sqlx::query(
            "SELECT request_hash, aggregate_type, aggregate_id, first_sequence, last_sequence \
             FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
        )
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        row.map(|r| {
            Ok(KeyHit {
                request_hash: r.try_get("request_hash")?,
                aggregate_type: r.try_get("aggregate_type")?,
                aggregate_id: r.try_get("aggregate_id")?,
                first_sequence: r.try_get("first_sequence")?,
                last_sequence: r.try_get("last_sequence")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| storage(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_tokens_round_trip_and_reject_garbage() {
        let t = PositionToken {
            kind: AggregateKind::Conversation,
            id: Uuid::new_v4(),
            version: Version(7),
        };
        assert_eq!(t.to_string().parse::<PositionToken>().unwrap(), t);
        for bad in [
            "",
            "conversation",
            "chat:00000000-0000-0000-0000-000000000000:1",
            "conversation:x:1",
            "conversation:00000000-0000-0000-0000-000000000000:1:2",
        ] {
            assert!(bad.parse::<PositionToken>().is_err(), "{bad}");
        }
    }
}
