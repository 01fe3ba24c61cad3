//! Executing commands: the write side's application service. Loads an aggregate from the
//! event store, has it decide, appends its events; serialises commands per aggregate in
//! this process, retries on storage conflicts (another replica wrote first), replays the
//! first answer for a repeated idempotency key, and puts the request's metadata on every
//! event. Side effects a command needs (a document generator that may call an LLM) run
//! here, before the aggregate decides, never inside it.
//!
//! Used by command-api's HTTP handlers, by benchmarks and tests that write events, and by
//! any process manager that answers events with commands.

mod generator;
pub mod intake;
mod recent;
pub mod retention;
pub mod webhooks;

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use common::backoff::Backoff;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope};
use domain::{
    Actor, Command, CommandContext, Conversation, ConversationCommand, Document, DocumentCommand,
    DomainError, Inbox, InboxCommand, Knowledge, KnowledgeCommand, Resource, SubjectCommand,
    SubjectRecord, Transcript, Version, WebhookEndpoint,
};
use event_store::keys::KeyError;
use event_store::protect::{EventAt, ProtectError};
use event_store::{Appender, Reader, Stream, StreamError, blobs, idempotency};
use recent::Aggregates;
pub use recent::SNAPSHOT_EVERY;
use schemas::{AggregateKind, DocumentKind, Event, Role, Subject, VersionToken};
use sqlx::PgPool;
use thiserror::Error;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

pub use domain::Reach;
pub use generator::{DocumentGenerator, TemplateGenerator};
pub use intake::IntakeError;
pub use webhooks::{EndpointChanges, NewEndpoint, WebhookError, WebhookSettings};

/// Who sent a command and how it relates to other work. Stored on every event.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMeta {
    pub tenant_id: String,
    pub user_id: String,
    /// How much of the tenant the caller reaches (members: what they started).
    pub reach: Reach,
    pub correlation_id: String,
    pub causation_id: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub idempotency: Option<Idempotency>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Idempotency {
    pub key: String,
    /// Hash of the request (target, body): the same key with another request is refused.
    pub request_hash: String,
}

impl Idempotency {
    /// `key` for the request `body` sent to `target`. The one way every writer hashes its
    /// request: command-api's target is `METHOD /path` and its body the JSON the client
    /// sent; an internal writer's target names the command and its aggregate, its body
    /// what identifies the work (the effect or message it acts for), never text it
    /// generated, which a retry may word differently.
    pub fn new(key: String, target: &str, body: &impl serde::Serialize) -> Idempotency {
        // Canonical form: serde_json::Value objects keep keys sorted.
        let canonical = serde_json::to_value(body)
            .map(|v| v.to_string())
            .unwrap_or_default();
        let mut hash = Sha256::new();
        hash.update(target.as_bytes());
        hash.update([0]);
        hash.update(canonical.as_bytes());
        Idempotency {
            key,
            request_hash: hex::encode(hash.finalize()),
        }
    }
}

/// How a process's command service is set up, from the settings every writer reads
/// (command-api, assistant-projector, webhooks-projector): one struct, one place.
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(next_help_heading = "Writing commands")]
pub struct ServiceSettings {
    /// Recently used aggregates of each type kept in memory, so a command on a long stream
    /// does not reload it (0: always load; a conversation's state grows with its user
    /// messages, tens of bytes each).
    #[arg(long = "aggregate-cache-size", env = "AGGREGATE_CACHE_SIZE", default_value_t = CACHED_AGGREGATES)]
    pub cached_aggregates: usize,
    /// A snapshot of an aggregate's state every this many of its events (doubled each time
    /// the stream doubles past 32 times this), in `aggregate_snapshots`: a cache, emptying
    /// it only makes loads replay whole streams; a process that has not seen the aggregate
    /// reads only the events after it (0: none written).
    #[arg(long = "snapshot-every", env = "SNAPSHOT_EVERY", default_value_t = SNAPSHOT_EVERY)]
    pub snapshot_every: usize,
    /// The appends of at most this many concurrent commands are written by one statement
    /// and committed together (one WAL flush); a command is answered after the commit that
    /// holds its events, and a conflict fails only its own command (1: every command
    /// commits alone).
    #[arg(long = "group-commit-max", env = "GROUP_COMMIT_MAX", default_value_t = event_store::append::DEFAULT_MAX_UNITS)]
    pub group_commit_max: usize,
    /// Largest file `POST /v1/knowledge` takes, in bytes (413 `body_too_large` above).
    #[arg(long = "knowledge-max-bytes", env = "KNOWLEDGE_MAX_BYTES", default_value_t = intake::DEFAULT_MAX_BYTES)]
    pub knowledge_max_bytes: usize,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            cached_aggregates: CACHED_AGGREGATES,
            snapshot_every: SNAPSHOT_EVERY,
            group_commit_max: event_store::append::DEFAULT_MAX_UNITS,
            knowledge_max_bytes: intake::DEFAULT_MAX_BYTES,
        }
    }
}

impl RequestMeta {
    /// What the caller sees (the `access` crate holds the rule).
    pub fn scope(&self) -> domain::Scope<'_> {
        domain::Scope::new(&self.tenant_id, &self.user_id, self.reach)
    }

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
    /// What a client passes to the query side to read its own write.
    pub fn token(&self) -> VersionToken {
        VersionToken {
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
    #[error("document generation failed: {0}")]
    Generator(String),
    /// An uploaded file the knowledge base does not take.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error("the event would be {bytes} bytes; at most {max} are published")]
    EventTooLarge { bytes: usize, max: usize },
    /// A webhook endpoint's URL, secret or configuration.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// Erasure needs data protection (`DATA_MASTER_KEY`): without it nothing is sealed,
    /// so nothing can be erased by its key.
    #[error("data protection is off (DATA_MASTER_KEY is not set): nothing can be erased")]
    DataProtectionOff,
    #[error("event store: {0}")]
    Storage(String),
    /// The database is unreachable, restarting or overloaded: retry later.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
}

/// Refuses an event whose published form would exceed [`schemas::MAX_EVENT_BYTES`]:
/// nothing that cannot be published is ever stored. Most events are far below it: their
/// size bound ([`Event::encoded_len_bound`]) spares encoding them (the encoding was 6.6%
/// of a command's instructions, docs/benchmarks.md).
fn check_size(event: Event) -> Result<(), CommandError> {
    if event.encoded_len_bound() <= schemas::MAX_EVENT_BYTES {
        return Ok(());
    }
    let bytes = event
        .encode()
        .map_err(|e| CommandError::Storage(format!("event does not encode: {e}")))?
        .len();
    if bytes > schemas::MAX_EVENT_BYTES {
        return Err(CommandError::EventTooLarge {
            bytes,
            max: schemas::MAX_EVENT_BYTES,
        });
    }
    Ok(())
}

/// A command's events as rows of the store, from the sequence after `before`.
fn rows<A: Aggregate>(
    id: &str,
    before: usize,
    events: &[A::Event],
    metadata: &HashMap<String, String>,
) -> Result<Vec<SerializedEvent>, CommandError> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let envelope = EventEnvelope::<A> {
                aggregate_id: id.to_owned(),
                sequence: before + i + 1,
                payload: event.clone(),
                metadata: metadata.clone(),
            };
            SerializedEvent::try_from(&envelope).map_err(storage)
        })
        .collect()
}

fn storage(e: impl fmt::Display) -> CommandError {
    CommandError::Storage(e.to_string())
}

fn protect_error(e: ProtectError) -> CommandError {
    match e {
        ProtectError::Keys(e) => key_error(e),
        other => storage(other),
    }
}

fn key_error(e: KeyError) -> CommandError {
    match e {
        KeyError::Database(e) => db(e),
        other => storage(other),
    }
}

fn stream_error(e: StreamError) -> CommandError {
    match e {
        StreamError::Database(e) => db(e),
        corrupt => storage(corrupt),
    }
}

/// A database error: unavailable (503 and retry) or a storage failure.
fn db(e: sqlx::Error) -> CommandError {
    if event_store::is_unavailable(&e) {
        CommandError::Unavailable(e.to_string())
    } else {
        CommandError::Storage(e.to_string())
    }
}

/// An error cqrs-es boxed: unavailable when it is a database that cannot be reached.
fn aggregate_error(e: AggregateError<DomainError>) -> CommandError {
    match e {
        AggregateError::UserError(e) => e.into(),
        AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e.to_string()),
        AggregateError::UnexpectedError(e) if event_store::is_unavailable_dyn(e.as_ref()) => {
            CommandError::Unavailable(e.to_string())
        }
        other => storage(other),
    }
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

pub struct CommandService {
    /// The store as its one reader reads it (and, with data protection on, seals).
    reader: Reader,
    conversations: Aggregates<Conversation>,
    documents: Aggregates<Document>,
    knowledge: Aggregates<Knowledge>,
    webhook_endpoints: Aggregates<WebhookEndpoint>,
    inboxes: Aggregates<Inbox>,
    subjects: Aggregates<SubjectRecord>,
    /// The erasures seen when the aggregates in memory were last checked
    /// ([`event_store::keys::DataKeys::erasures`]): when that moves, they are dropped.
    erasures_seen: std::sync::atomic::AtomicU64,
    webhooks_settings: Option<WebhookSettings>,
    generator: Arc<dyn DocumentGenerator>,
    locks: AggregateLocks,
    max_attempts: u32,
    knowledge_max_bytes: usize,
    extractor: intake::Extractor,
    /// Each notified after every commit (`with_commit_signal`).
    committed: Vec<Arc<tokio::sync::Notify>>,
    appender: Appender,
    /// Shared by every aggregate type's [`Aggregates`].
    snapshot_every: Arc<AtomicUsize>,
}

/// What an erasure did at once; the projections do the rest when its event reaches them.
#[derive(Debug, Clone, PartialEq)]
pub struct Erasure {
    /// The `SubjectErased` event appended (or, for a repeated idempotency key, the one
    /// appended then).
    pub accepted: Accepted,
    /// Snapshots of the erased aggregates deleted.
    pub snapshots_deleted: u64,
    /// Originals of an erased tenant's knowledge base deleted.
    pub blobs_deleted: u64,
}

/// A file for the knowledge base, as uploaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub title: String,
    /// The `Content-Type` it was sent with.
    pub content_type: String,
    pub bytes: Arc<[u8]>,
}

/// Input of a new message.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub role: Role,
    pub content: String,
    pub model: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    /// The user message an assistant reply answers.
    pub reply_to: Option<Uuid>,
    pub latency_ms: Option<i64>,
    pub sources: Vec<schemas::MessageSource>,
}

impl NewMessage {
    /// A plain message with nothing but its author and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        NewMessage {
            role,
            content: content.into(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            reply_to: None,
            latency_ms: None,
            sources: Vec::new(),
        }
    }
}

/// How a conversation starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationOptions {
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Whether the assistant answers the users' messages (on by default).
    pub assistant: bool,
}

impl Default for ConversationOptions {
    fn default() -> Self {
        ConversationOptions {
            metadata: Default::default(),
            assistant: true,
        }
    }
}

/// Recently used aggregates kept in memory per aggregate type, by default. What pays is
/// the hot ones; a count, not bytes, bounds the memory, and a conversation's state grows
/// with its messages (a reply state per user message), so the default stays modest.
pub const CACHED_AGGREGATES: usize = 1_000;

impl CommandService {
    /// A service whose aggregates share one group commit (its writers start on the
    /// current Tokio runtime), reading and writing through `store` (a pool alone: without
    /// data protection).
    pub fn new(store: impl Into<Reader>, generator: Arc<dyn DocumentGenerator>) -> Self {
        let reader: Reader = store.into();
        let appender = Appender::start(reader.pool().clone());
        let every = Arc::new(AtomicUsize::new(SNAPSHOT_EVERY));
        Self {
            conversations: Aggregates::new(&reader, CACHED_AGGREGATES, every.clone()),
            documents: Aggregates::new(&reader, CACHED_AGGREGATES, every.clone()),
            knowledge: Aggregates::new(&reader, CACHED_AGGREGATES, every.clone()),
            webhook_endpoints: Aggregates::new(&reader, CACHED_AGGREGATES, every.clone()),
            inboxes: Aggregates::new(&reader, CACHED_AGGREGATES, every.clone()),
            subjects: Aggregates::new(&reader, CACHED_AGGREGATES, every.clone()),
            erasures_seen: std::sync::atomic::AtomicU64::new(0),
            snapshot_every: every.clone(),
            appender,
            webhooks_settings: None,
            reader,
            generator,
            locks: AggregateLocks::default(),
            max_attempts: 10,
            knowledge_max_bytes: intake::DEFAULT_MAX_BYTES,
            extractor: intake::Extractor::default(),
            committed: Vec::new(),
        }
    }

    /// A service set up as `settings` say: what every process that writes builds.
    pub fn from_settings(
        store: impl Into<Reader>,
        generator: Arc<dyn DocumentGenerator>,
        settings: &ServiceSettings,
    ) -> Self {
        CommandService::new(store, generator)
            .with_cached_aggregates(settings.cached_aggregates)
            .with_snapshots_every(settings.snapshot_every)
            .with_group_commit(settings.group_commit_max)
            .with_knowledge_max_bytes(settings.knowledge_max_bytes)
    }

    /// With data protection on, seals the personal fields of `rows` (what is stored, and
    /// every copy made from it, holds them only sealed) and names who acted by their
    /// pseudonym: in the metadata (so in the `user_id` header and the idempotency
    /// record) and in the payload fields naming them.
    async fn seal(
        &self,
        meta: &RequestMeta,
        rows: &mut [SerializedEvent],
    ) -> Result<(), CommandError> {
        let Some(protector) = self.reader.protector() else {
            return Ok(());
        };
        let tenant = meta.tenant_id.as_str();
        let actor = serde_json::Value::String(self.stored_actor(meta).await?);
        for row in rows {
            if let Some(metadata) = row.metadata.as_object_mut() {
                metadata.insert("user_id".to_owned(), actor.clone());
            }
            let at = EventAt {
                tenant,
                aggregate_type: &row.aggregate_type,
                aggregate_id: &row.aggregate_id,
                sequence: row.sequence as i64,
                event_type: &row.event_type,
            };
            protector
                .seal(&at, &mut row.payload)
                .await
                .map_err(protect_error)?;
        }
        Ok(())
    }

    /// How the caller of `meta` is named in what is stored: their pseudonym with data
    /// protection on, else their id.
    async fn stored_actor(&self, meta: &RequestMeta) -> Result<String, CommandError> {
        match self.reader.protector() {
            Some(protector) => protector
                .pseudonym(&meta.tenant_id, &meta.user_id)
                .await
                .map_err(protect_error),
            None => Ok(meta.user_id.clone()),
        }
    }

    /// The store as this service reads it: what a process that writes through this
    /// service reads aggregates with too.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Notifies `signal` after every commit (each signal given is notified): an outbox
    /// relay in the same process waits on it to publish at once instead of at its next
    /// poll, and so does the audit chain's keeper.
    pub fn with_commit_signal(mut self, signal: Arc<tokio::sync::Notify>) -> Self {
        self.committed.push(signal);
        self
    }

    /// Keeps at most `n` recently used aggregates of each type in memory (default
    /// [`CACHED_AGGREGATES`]; 0: every command loads its aggregate from the store).
    pub fn with_cached_aggregates(self, n: usize) -> Self {
        self.conversations.set_capacity(n);
        self.documents.set_capacity(n);
        self.knowledge.set_capacity(n);
        self.webhook_endpoints.set_capacity(n);
        self.inboxes.set_capacity(n);
        self.subjects.set_capacity(n);
        self
    }

    /// Writes a snapshot of an aggregate every `n` of its events, so a process that has
    /// not seen it reads only the events after the snapshot (default
    /// [`SNAPSHOT_EVERY`]; 0: none written).
    pub fn with_snapshots_every(self, n: usize) -> Self {
        self.snapshot_every.store(n, Ordering::Relaxed);
        self
    }

    /// Commits the events of at most `n` concurrent commands together (default
    /// [`event_store::append::DEFAULT_MAX_UNITS`]; 1: each command commits alone).
    pub fn with_group_commit(self, n: usize) -> Self {
        self.appender.set_max_units(n);
        self
    }

    /// The largest file the knowledge base takes (default [`intake::DEFAULT_MAX_BYTES`]).
    pub fn with_knowledge_max_bytes(mut self, max: usize) -> Self {
        self.knowledge_max_bytes = max;
        self
    }

    /// Runs uploaded files' text extraction as `extractor` says (default: the program
    /// beside this executable, with [`intake::ExtractorSettings`]'s default limits).
    pub fn with_extractor(mut self, extractor: intake::Extractor) -> Self {
        self.extractor = extractor;
        self
    }

    /// Enables creating endpoints and rotating their secrets (sealing key, URL rules).
    pub fn with_webhooks(mut self, settings: WebhookSettings) -> Self {
        self.webhooks_settings = Some(settings);
        self
    }

    pub fn knowledge_max_bytes(&self) -> usize {
        self.knowledge_max_bytes
    }

    pub fn pool(&self) -> &PgPool {
        self.reader.pool()
    }

    fn actor(meta: &RequestMeta) -> Actor {
        Actor {
            subject: meta.user_id.clone(),
            reach: meta.reach,
        }
    }

    fn ctx(meta: &RequestMeta, expected_version: Option<Version>) -> CommandContext {
        CommandContext {
            tenant_id: meta.tenant_id.clone(),
            actor: Self::actor(meta),
            expected_version,
            at: schemas::timestamp_now(),
        }
    }

    pub async fn start_conversation(
        &self,
        title: String,
        options: ConversationOptions,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let id = Uuid::now_v7();
        let body = ConversationCommand::Start {
            conversation_id: id,
            title,
            metadata: options.metadata,
            assistant: options.assistant,
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
            reply_to: message.reply_to,
            latency_ms: message.latency_ms,
            sources: message.sources,
        };
        self.conversation(id, body, expected, meta).await
    }

    /// Records that the assistant could not answer the user message `message_id`, which
    /// `asked_by` sent (or asked to be answered again): they are told.
    pub async fn fail_reply(
        &self,
        id: Uuid,
        message_id: Uuid,
        (reason, attempts): (String, i32),
        asked_by: Option<String>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let body = ConversationCommand::FailReply {
            message_id,
            reason,
            attempts,
            asked_by,
        };
        self.conversation(id, body, None, meta).await
    }

    /// Asks the assistant to answer again a user message whose reply failed.
    pub async fn request_reply(
        &self,
        id: Uuid,
        message_id: Uuid,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let body = ConversationCommand::RequestReply { message_id };
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
            ConversationCommand::FailReply { .. } => "FailReply",
            ConversationCommand::RequestReply { .. } => "RequestReply",
        };
        let command = Command {
            ctx: Self::ctx(meta, expected),
            body,
        };
        self.execute(
            &self.conversations,
            AggregateKind::Conversation,
            id,
            name,
            command,
            meta,
        )
        .await
    }

    async fn document(
        &self,
        id: Uuid,
        body: DocumentCommand,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let name = match &body {
            DocumentCommand::Generate { .. } => "GenerateDocument",
            DocumentCommand::Request { .. } => "RequestDocument",
            DocumentCommand::Complete { .. } => "CompleteDocument",
            DocumentCommand::Fail { .. } => "FailDocument",
        };
        let command = Command {
            ctx: Self::ctx(meta, expected),
            body,
        };
        self.execute(
            &self.documents,
            AggregateKind::Document,
            id,
            name,
            command,
            meta,
        )
        .await
    }

    async fn knowledge_document(
        &self,
        id: Uuid,
        body: KnowledgeCommand,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let name = match &body {
            KnowledgeCommand::Add { .. } => "AddKnowledgeDocument",
            KnowledgeCommand::Remove => "RemoveKnowledgeDocument",
        };
        let command = Command {
            ctx: Self::ctx(meta, expected),
            body,
        };
        self.execute(
            &self.knowledge,
            AggregateKind::Knowledge,
            id,
            name,
            command,
            meta,
        )
        .await
    }

    /// Generates a document from a conversation of the caller's tenant: reads the
    /// transcript, has the generator write the document (outside the aggregate, which
    /// stays pure), then lets the Document aggregate decide.
    pub async fn generate_document(
        &self,
        conversation_id: Uuid,
        kind: DocumentKind,
        title: Option<String>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let transcript = self.transcript(conversation_id, meta).await?;
        transcript.check_generatable()?;
        let generated = self
            .generator
            .generate(kind, &transcript)
            .await
            .map_err(CommandError::Generator)?;
        let document_id = Uuid::now_v7();
        let body = DocumentCommand::Generate {
            document_id,
            conversation_id,
            kind,
            title,
            source_message_count: transcript.total_messages,
            generated,
        };
        self.document(document_id, body, None, meta).await
    }

    /// Asks an LLM generator for a document of a conversation of the caller's tenant: the
    /// documents process manager answers with [`CommandService::complete_document`] or
    /// [`CommandService::fail_document`].
    pub async fn request_document(
        &self,
        conversation_id: Uuid,
        kind: DocumentKind,
        title: Option<String>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        self.transcript(conversation_id, meta)
            .await?
            .check_generatable()?;
        let document_id = Uuid::now_v7();
        let body = DocumentCommand::Request {
            document_id,
            conversation_id,
            kind,
            title,
        };
        self.document(document_id, body, None, meta).await
    }

    /// The generator's document for a requested one.
    pub async fn complete_document(
        &self,
        document_id: Uuid,
        source_message_count: usize,
        generated: domain::GeneratedDocument,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let body = DocumentCommand::Complete {
            source_message_count,
            generated,
        };
        self.document(document_id, body, None, meta).await
    }

    /// Records that a requested document could not be generated.
    pub async fn fail_document(
        &self,
        document_id: Uuid,
        reason: String,
        attempts: i32,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let body = DocumentCommand::Fail { reason, attempts };
        self.document(document_id, body, None, meta).await
    }

    /// Adds a file to the tenant's knowledge base: checks it against its media type,
    /// extracts its text, stores the original content-addressed (outside the event), then
    /// lets the Knowledge aggregate decide. A refused file leaves nothing behind.
    pub async fn add_knowledge(
        &self,
        upload: Upload,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let media_type = intake::media_type(&upload.content_type)?;
        let text = intake::extract(
            &self.extractor,
            media_type,
            upload.bytes.clone(),
            self.knowledge_max_bytes,
        )
        .await?;
        let sha256 = blobs::store(&self.reader, &meta.tenant_id, media_type, &upload.bytes)
            .await
            .map_err(|e| match e {
                blobs::BlobError::Database(e) => db(e),
                blobs::BlobError::Keys(e) => key_error(e),
                other => storage(other),
            })?;
        let knowledge_id = Uuid::now_v7();
        let body = KnowledgeCommand::Add {
            knowledge_id,
            title: upload.title,
            media_type: media_type.to_owned(),
            sha256,
            size_bytes: upload.bytes.len() as u64,
            text,
        };
        self.knowledge_document(knowledge_id, body, None, meta)
            .await
    }

    /// Marks notifications of the caller's own inbox read (ids of other users'
    /// notifications change nothing: the projection matches them to the recipient).
    pub async fn mark_notifications_read(
        &self,
        notification_ids: Vec<Uuid>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let id = domain::inbox::inbox_id(&meta.tenant_id, &meta.user_id);
        let command = Command {
            ctx: Self::ctx(meta, None),
            body: InboxCommand::MarkRead { notification_ids },
        };
        self.execute(
            &self.inboxes,
            AggregateKind::Inbox,
            id,
            "MarkNotificationsRead",
            command,
            meta,
        )
        .await
    }

    /// Erases `subject`'s personal data (docs/DATA-PROTECTION.md, "Erasure"): the keys
    /// that sealed it are emptied (so everything read from the store afterwards reads
    /// `[erased]`, and every process drops the keys and aggregates it holds of the tenant),
    /// the snapshots of what they sealed deleted, and a `SubjectErased` event appended,
    /// from which the projections remove the copies they made. Erasing again is harmless
    /// and recorded again.
    pub async fn erase(
        &self,
        subject: Subject,
        reason: String,
        meta: &RequestMeta,
    ) -> Result<Erasure, CommandError> {
        let Some(protector) = self.reader.protector() else {
            return Err(CommandError::DataProtectionOff);
        };
        let id = domain::subject::subject_id(&meta.tenant_id, &subject);
        let command = |conversations, keys_erased| Command {
            ctx: Self::ctx(meta, None),
            body: SubjectCommand::Erase {
                subject: subject.clone(),
                reason: reason.clone(),
                conversations,
                keys_erased,
            },
        };
        // Refused (not an admin, no reason) before anything is erased.
        SubjectRecord::default().decide(command(Vec::new(), 0))?;
        let keys = protector.keys();
        let tenant = meta.tenant_id.as_str();
        let whole = subject == Subject::Tenant;
        let erased = if whole {
            keys.erase_tenant(tenant).await
        } else {
            keys.erase_subject(tenant, &subject).await
        }
        .map_err(key_error)?;
        let conversations: Vec<Uuid> = if whole {
            Vec::new()
        } else {
            keys.erased_subjects(tenant, &subject)
                .await
                .map_err(key_error)?
                .into_iter()
                .filter_map(|s| match s {
                    Subject::Conversation(id) => Some(id),
                    Subject::User(_) | Subject::Tenant => None,
                })
                .collect()
        };
        let snapshots =
            event_store::snapshots::erase(self.reader.pool(), tenant, &conversations, whole)
                .await
                .map_err(db)?;
        let blobs = if whole {
            let mut conn = self.reader.pool().acquire().await.map_err(db)?;
            blobs::erase_tenant(&mut conn, tenant).await.map_err(db)?
        } else {
            0
        };
        self.drop_aggregates_after_erasures();
        let accepted = self
            .execute(
                &self.subjects,
                AggregateKind::Subject,
                id,
                "EraseSubject",
                command(conversations, erased.subject_keys + erased.tenant_keys),
                meta,
            )
            .await?;
        Ok(Erasure {
            accepted,
            snapshots_deleted: snapshots,
            blobs_deleted: blobs,
        })
    }

    /// Drops the aggregates kept in memory once an erasure has been seen since they were
    /// last checked (this process's own or another's): they may hold what it erased.
    fn drop_aggregates_after_erasures(&self) {
        let Some(protector) = self.reader.protector() else {
            return;
        };
        use std::sync::atomic::Ordering;
        let now = protector.keys().erasures();
        // Every command passes here: a read, and a write only when an erasure came (a
        // write per command would bounce the line between cores).
        if self.erasures_seen.load(Ordering::Acquire) != now
            && self.erasures_seen.swap(now, Ordering::AcqRel) != now
        {
            self.conversations.clear();
            self.documents.clear();
            self.knowledge.clear();
        }
    }

    /// Removes a document from the tenant's knowledge base (its original stays stored:
    /// the event stream still names it).
    pub async fn remove_knowledge(
        &self,
        id: Uuid,
        expected: Option<Version>,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let body = KnowledgeCommand::Remove;
        self.knowledge_document(id, body, expected, meta).await
    }

    /// The conversation as a generator reads it (what the caller may see of it), read page
    /// by page: memory stays bounded by the page and
    /// [`domain::document::TRANSCRIPT_MAX_MESSAGES`], however long it is.
    pub async fn transcript(
        &self,
        id: Uuid,
        meta: &RequestMeta,
    ) -> Result<Transcript, CommandError> {
        let scope = meta.scope();
        let mut transcript: Option<Transcript> = None;
        let mut stream =
            Stream::new(&self.reader, AggregateKind::Conversation, id).of_tenant(&meta.tenant_id);
        while let Some(page) = stream.next_page().await.map_err(stream_error)? {
            for recorded in page {
                match recorded.event().map_err(stream_error)? {
                    // Another tenant's, or another member's: it does not exist for this caller.
                    Event::ConversationStarted(e)
                        if scope.sees(&Resource::conversation(
                            &e.tenant_id,
                            e.started_by.as_deref(),
                        )) =>
                    {
                        transcript = Some(Transcript::new(id, e.title));
                    }
                    Event::MessageSent(m) => {
                        if let Some(t) = transcript.as_mut() {
                            t.push(m.role, m.content);
                        }
                    }
                    Event::ConversationRenamed(r) => {
                        if let Some(t) = transcript.as_mut() {
                            t.title = r.title;
                        }
                    }
                    _ => {}
                }
            }
            // Another tenant's conversation: no need to read on.
            if transcript.is_none() {
                break;
            }
        }
        transcript.ok_or(CommandError::Domain(DomainError::NotFound))
    }

    /// Load, decide, append; retried on a storage conflict (another replica wrote the
    /// same aggregate, a concurrent request with the same idempotency key won, or the
    /// append this one was decided after failed).
    ///
    /// When other commands wait for the aggregate, it is held only while deciding: once
    /// the events are queued for the group commit, the state they lead to is kept for
    /// the next command, which may decide on it before they are committed (its append
    /// then waits for theirs, and fails with it). Each command is answered after its own
    /// commit.
    async fn execute<A>(
        &self,
        aggregates: &Aggregates<A>,
        kind: AggregateKind,
        id: Uuid,
        name: &str,
        command: A::Command,
        meta: &RequestMeta,
    ) -> Result<Accepted, CommandError>
    where
        A: recent::SnapshotFormat + Aggregate<Error = DomainError, Services = ()>,
        A::Command: Clone,
        A::Event: Into<Event>,
    {
        self.drop_aggregates_after_erasures();
        let metadata = meta.to_metadata(name);
        // Random jitter: replicas contending for one aggregate do not retry in step.
        let mut backoff = Backoff::new(Duration::from_millis(4), Duration::from_millis(100));
        let key = id.to_string();
        for attempt in 1..=self.max_attempts {
            let serialised = self.locks.lock(kind, id).await;
            if let Some(idem) = &meta.idempotency {
                // The key may be in an append of this aggregate still queued.
                if let Some(queued) = aggregates.pending(&key) {
                    queued.settled().await;
                }
                if let Some(done) = self.replay(meta, idem).await? {
                    return Ok(done);
                }
            }
            let recent::Loaded {
                mut context,
                cached,
                pending,
            } = aggregates.take(&key).await.map_err(aggregate_error)?;
            let sink = EventSink::default();
            if let Err(refused) = context
                .aggregate()
                .handle(command.clone(), &(), &sink)
                .await
            {
                if cached {
                    // Decided on what this process last saw, perhaps not yet committed:
                    // decide again on the store's, once that is settled.
                    if let Some(queued) = pending {
                        queued.settled().await;
                    }
                    continue;
                }
                aggregates.put(&key, context.aggregate, context.current_sequence, None);
                return Err(refused.into());
            }
            let events = sink.collect().await;
            for event in &events {
                check_size(event.clone().into())?;
            }
            // `handle` applied its events to the state as it wrote them (cqrs-es's
            // `EventSink::write`): it is the state they lead to.
            let state = std::mem::take(&mut context.aggregate);
            let before = context.current_sequence;
            let after = before + events.len();
            let mut rows = rows::<A>(&key, before, &events, &metadata)?;
            self.seal(meta, &mut rows).await?;
            let snapshot = aggregates.due_snapshot(&state, before, after);
            let queued = self.appender.queue(rows, pending);
            // Other commands wait for this aggregate: let them decide on the state these
            // events lead to while they are committed. Alone, keep it until the commit
            // (measured: putting it back early cost a third of the throughput of many
            // clients on distinct aggregates, for nothing to gain there).
            let others_wait = Arc::strong_count(OwnedMutexGuard::mutex(&serialised)) > 1;
            let held = if others_wait {
                aggregates.put(&key, state, after, Some(queued.ticket()));
                drop(serialised);
                None
            } else {
                Some((state, serialised))
            };
            let outcome = queued.outcome().await;
            if let Some((state, _serialised)) = held
                && outcome.is_ok()
            {
                aggregates.put(&key, state, after, None);
            }
            match outcome {
                Ok(()) => {
                    for signal in &self.committed {
                        signal.notify_one();
                    }
                    if let Some(snapshot) = snapshot {
                        aggregates.save_snapshot(&key, snapshot);
                    }
                    return Ok(Accepted {
                        kind,
                        aggregate_id: id,
                        version: Version(after as u64),
                        events: events.into_iter().map(Into::into).collect(),
                        replayed: false,
                    });
                }
                Err(PersistenceError::OptimisticLockError) => {
                    if let Some(idem) = &meta.idempotency
                        && let Some(done) = self.replay(meta, idem).await?
                    {
                        return Ok(done);
                    }
                    tracing::debug!(%kind, %id, attempt, "storage conflict, retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(aggregate_error(e.into())),
            }
        }
        Err(CommandError::Contended(self.max_attempts))
    }

    /// The outcome of an earlier request with this idempotency key, if there was one.
    async fn replay(
        &self,
        meta: &RequestMeta,
        idem: &Idempotency,
    ) -> Result<Option<Accepted>, CommandError> {
        let owner = self.stored_actor(meta).await?;
        let Some(hit) = idempotency::find(self.reader.pool(), &meta.tenant_id, &owner, &idem.key)
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        if hit.request_hash != idem.request_hash {
            return Err(CommandError::IdempotencyKeyReused);
        }
        let kind = AggregateKind::parse(&hit.aggregate_type)
            .ok_or_else(|| storage("unknown aggregate type"))?;
        let aggregate_id: Uuid = hit.aggregate_id.parse().map_err(storage)?;
        let mut stream = Stream::new(&self.reader, kind, aggregate_id)
            .sequences(hit.first_sequence..=hit.last_sequence);
        let mut events = Vec::new();
        while let Some(page) = stream.next_page().await.map_err(stream_error)? {
            for recorded in page {
                events.push(recorded.event().map_err(stream_error)?);
            }
        }
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
        idempotency::expire(self.reader.pool(), ttl)
            .await
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::EventStore;

    /// One hash for one request, whoever writes: the body's canonical JSON (object keys
    /// in any order) under its target; another body or target is another request.
    #[test]
    fn a_request_hashes_the_same_however_its_json_is_ordered() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"title":"Plan","metadata":{"b":1,"a":2}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"metadata":{"a":2,"b":1},"title":"Plan"}"#).unwrap();
        let hash = |target: &str, body: &serde_json::Value| {
            Idempotency::new("k".into(), target, body).request_hash
        };
        assert_eq!(
            hash("POST /v1/conversations", &a),
            hash("POST /v1/conversations", &b)
        );
        assert_ne!(
            hash("POST /v1/conversations", &a),
            hash("POST /v1/documents", &a)
        );
        let other: serde_json::Value = serde_json::from_str(r#"{"title":"Other"}"#).unwrap();
        assert_ne!(
            hash("POST /v1/conversations", &a),
            hash("POST /v1/conversations", &other)
        );
        assert_eq!(Idempotency::new("k".into(), "t", &a).key, "k");
    }

    fn test_meta() -> RequestMeta {
        RequestMeta {
            tenant_id: "acme".into(),
            user_id: "writer".into(),
            reach: Reach::Own,
            correlation_id: "corr".into(),
            causation_id: "cause".into(),
            traceparent: None,
            tracestate: None,
            idempotency: None,
        }
    }

    /// A new conversation with `messages` user messages, every third one's reply failed.
    async fn conversation_with_failed_replies(
        service: &CommandService,
        meta: &RequestMeta,
        messages: usize,
    ) -> Uuid {
        let c = service
            .start_conversation("Plan".into(), ConversationOptions::default(), meta)
            .await
            .expect("start")
            .aggregate_id;
        for n in 0..messages {
            let sent = service
                .send_message(c, NewMessage::new(Role::User, format!("m{n}")), None, meta)
                .await
                .expect("send");
            let Some(Event::MessageSent(m)) = sent.events.first() else {
                panic!("{sent:?}");
            };
            if n % 3 == 0 {
                service
                    .fail_reply(c, m.message_id, ("down".into(), 3), None, meta)
                    .await
                    .expect("fail reply");
            }
        }
        c
    }

    /// What a service keeps in memory after a mix of commands (accepted and refused) is
    /// what a full replay of the store gives.
    #[tokio::test]
    async fn the_aggregates_kept_in_memory_equal_a_full_replay() {
        let db = testkit::env::database().await;
        event_store::migrate(&db.pool).await.expect("migrate");
        let service = CommandService::new(db.pool.clone(), Arc::new(TemplateGenerator));
        let meta = test_meta();
        let c = conversation_with_failed_replies(&service, &meta, 20).await;
        for _ in 0..5 {
            // Refused (a stale If-Match): changes nothing, kept state included.
            assert!(
                service
                    .rename_conversation(c, "Late".into(), Some(Version(1)), &meta)
                    .await
                    .is_err()
            );
        }
        service
            .rename_conversation(c, "Renamed".into(), None, &meta)
            .await
            .expect("rename");
        service
            .generate_document(c, DocumentKind::Summary, None, &meta)
            .await
            .expect("summary");
        service
            .end_conversation(c, None, None, &meta)
            .await
            .expect("end");
        let key = c.to_string();
        let (kept, sequence) = service.conversations.kept(&key).expect("kept in memory");
        let replayed = event_store::store::<Conversation>(&service.appender)
            .load_aggregate(&key)
            .await
            .expect("replay");
        assert_eq!(kept, replayed.aggregate);
        assert_eq!(sequence, replayed.current_sequence);
    }

    /// What a process that has not seen an aggregate loads (its snapshot plus the events
    /// after it) is what a full replay gives, for every aggregate type; a snapshot of
    /// another format, or one that does not deserialize, is passed over for a replay.
    #[tokio::test]
    async fn a_snapshot_and_the_events_after_it_equal_a_full_replay() {
        let db = testkit::env::database().await;
        event_store::migrate(&db.pool).await.expect("migrate");
        let sealer = ::webhooks::sealed::Sealer::from_keys(
            &::webhooks::sealed::Sealer::generate_key().expect("key"),
        )
        .expect("sealer");
        let service = CommandService::new(db.pool.clone(), Arc::new(TemplateGenerator))
            .with_snapshots_every(2)
            .with_webhooks(WebhookSettings {
                sealer: Arc::new(sealer),
                guard: ::webhooks::ssrf::Guard {
                    allow_loopback: true,
                    allow_http: true,
                },
            });
        let meta = test_meta();
        let c = conversation_with_failed_replies(&service, &meta, 10).await;
        service
            .rename_conversation(c, "Renamed".into(), None, &meta)
            .await
            .expect("rename");
        service
            .send_message(c, NewMessage::new(Role::User, "last"), None, &meta)
            .await
            .expect("send");
        let d = service
            .request_document(c, DocumentKind::Summary, None, &meta)
            .await
            .expect("request")
            .aggregate_id;
        service
            .fail_document(d, "no model".into(), 2, &meta)
            .await
            .expect("fail");
        let k = service
            .add_knowledge(
                Upload {
                    title: "Notes".into(),
                    content_type: "text/plain".into(),
                    bytes: Arc::from(&b"Opening hours are nine to five."[..]),
                },
                &meta,
            )
            .await
            .expect("add")
            .aggregate_id;
        service
            .remove_knowledge(k, None, &meta)
            .await
            .expect("remove");
        let admin = RequestMeta {
            reach: Reach::Tenant,
            ..test_meta()
        };
        let w = service
            .create_webhook_endpoint(
                NewEndpoint {
                    url: "http://127.0.0.1:9/hook".into(),
                    event_types: vec!["*".into()],
                    description: None,
                },
                &admin,
            )
            .await
            .expect("endpoint")
            .aggregate_id;
        for n in 0..4 {
            let changes = EndpointChanges {
                url: None,
                event_types: None,
                description: Some(format!("d{n}")),
            };
            service
                .update_webhook_endpoint(w, changes, None, &admin)
                .await
                .expect("update");
        }
        for _ in 0..5 {
            service
                .mark_notifications_read(vec![Uuid::now_v7()], &meta)
                .await
                .expect("read");
        }
        let inbox = domain::inbox::inbox_id(&meta.tenant_id, &meta.user_id);

        let fresh = || CommandService::new(db.pool.clone(), Arc::new(TemplateGenerator));
        assert_loads_as_replayed(&db.pool, &fresh().conversations, c, true).await;
        assert_loads_as_replayed(&db.pool, &fresh().documents, d, false).await;
        assert_loads_as_replayed(&db.pool, &fresh().knowledge, k, false).await;
        assert_loads_as_replayed(&db.pool, &fresh().webhook_endpoints, w, true).await;
        assert_loads_as_replayed(&db.pool, &fresh().inboxes, inbox, true).await;

        // A snapshot of another format, however plausible, is not read...
        let forged = |format: i32, state: serde_json::Value| {
            sqlx::query(
                "UPDATE aggregate_snapshots SET format = $1, state = $2 WHERE aggregate_id = $3",
            )
            .bind(format)
            .bind(state)
            .bind(c.to_string())
            .execute(&db.pool)
        };
        let mut plausible = serde_json::to_value(Conversation::default()).expect("state");
        plausible["title"] = "Forged".into();
        let service = fresh().with_snapshots_every(0);
        let reader_format = <Conversation as recent::SnapshotFormat>::FORMAT;
        // ...nor one of the reader's format that does not deserialize.
        for (format, state) in [
            (99, plausible),
            (reader_format, serde_json::json!({"garbage": true})),
        ] {
            forged(format, state).await.expect("forge");
            let loaded = service
                .conversations
                .take(&c.to_string())
                .await
                .expect("load");
            assert_eq!(loaded.context.aggregate.title, "Renamed");
            assert_eq!(loaded.context.current_sequence, 17);
        }
    }

    /// `aggregates` (of a service that has not seen `id`) loads it from its snapshot, the
    /// events after it applied (some, when `tail`), equal to a full replay.
    async fn assert_loads_as_replayed<A>(
        pool: &PgPool,
        aggregates: &Aggregates<A>,
        id: Uuid,
        tail: bool,
    ) where
        A: recent::SnapshotFormat + PartialEq + fmt::Debug,
    {
        let key = id.to_string();
        // The whole stream replayed by cqrs-es's own reader, not the service's.
        let replayed = event_store::store::<A>(&event_store::Appender::start(pool.clone()))
            .load_aggregate(&key)
            .await
            .expect("replay");
        let every = 2;
        // Written after the commit that crossed a multiple of `every`, in the background.
        let mut snapshot = None;
        for _ in 0..200 {
            snapshot = event_store::snapshots::latest(pool, A::TYPE, &key, A::FORMAT)
                .await
                .expect("snapshot");
            if snapshot
                .as_ref()
                .is_some_and(|s| s.sequence as usize + every > replayed.current_sequence)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let snapshot = snapshot.unwrap_or_else(|| panic!("no snapshot of {} {key}", A::TYPE));
        assert_eq!(
            tail,
            (snapshot.sequence as usize) < replayed.current_sequence,
            "{} at {} with a snapshot at {}",
            A::TYPE,
            replayed.current_sequence,
            snapshot.sequence
        );
        let loaded = aggregates.take(&key).await.expect("load");
        assert!(!loaded.cached);
        assert_eq!(loaded.context.aggregate, replayed.aggregate, "{}", A::TYPE);
        assert_eq!(loaded.context.current_sequence, replayed.current_sequence);
    }

    #[test]
    fn an_event_larger_than_the_contract_allows_is_refused_before_it_is_stored() {
        let message = |content: String| {
            Event::MessageSent(schemas::MessageSent {
                sealed: None,
                conversation_id: Uuid::nil(),
                message_id: Uuid::nil(),
                role: Role::User,
                content,
                model: None,
                prompt_tokens: None,
                completion_tokens: None,
                sent_at: schemas::timestamp_now(),
                reply_to: None,
                latency_ms: None,
                sources: Vec::new(),
            })
        };
        assert!(check_size(message("fits".into())).is_ok());
        assert!(matches!(
            check_size(message("x".repeat(schemas::MAX_EVENT_BYTES))),
            Err(CommandError::EventTooLarge { max, .. }) if max == schemas::MAX_EVENT_BYTES
        ));
    }
}
