//! The semantic index: what lets users find things by meaning. An effect projection
//! ([`SemanticIndex`]) cuts every message, generated document and knowledge document into
//! windows of tokens, embeds them and upserts one point per window into a vector store;
//! [`search`] answers queries over it, scoped to a tenant and to what the viewer sees.
//!
//! Invariants:
//! * A point's id is the effect id of its window (`EffectId::of(NAME, event_id, window)`),
//!   so redelivery, a restart or a repeated batch rewrites the same points: exactly one
//!   point per window. The projection keeps no effect ledger (`uses_ledger` is false):
//!   every generation gets every point.
//! * Each generation writes its own index, named after the generation and the embedding
//!   model (`index_info` in the generation's schema records which). A model change is a
//!   rebuild into a new generation; searches read the live one until the switch. A
//!   projector whose model is not the generation's refuses to write into it (the batch
//!   waits, nothing is parked) until it is redeployed with the right model.
//! * Message points carry their conversation's current title and starter (kept in the
//!   generation's `conversations` table); a rename retitles them. Knowledge has no
//!   starter: every member of the tenant sees it.

pub mod search;
pub mod setup;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use embeddings::chunk::{self, ChunkConfig};
use embeddings::{EmbedError, Embedder, ModelId};
use event_store::Reader;
use projection::{ApplyError, EffectError, EffectProjection, Envelope, Parallelism, Pass, Planned};
use schemas::{AggregateKind, Event};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;
use vectors::{IndexName, Payload, Point, SourceKind, VectorError, VectorStore};

pub use search::{Search, SearchError, SearchRequest};

/// Consumer-group suffix and generation schema prefix (`semantic_g<N>`).
pub const NAME: &str = "semantic";

/// The index of generation `schema` for vectors of `model`: `<schema>_<model slug>`,
/// shortened with a hash when the model's name is long.
pub fn index_name(schema: &str, model: &ModelId) -> IndexName {
    let full = format!("{schema}_{}", model.slug());
    let name = if full.len() <= 63 {
        full
    } else {
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        format!("{}_{hash:016x}", &full[..46])
    };
    IndexName::new(name).unwrap_or_else(|_| {
        // Unreachable for schema names the runtime makes; a fixed name keeps it total.
        IndexName::new("semantic_index").expect("a valid literal")
    })
}

/// What one event asks of the index.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A conversation started or was renamed: remember its title (and starter); a rename
    /// also retitles the points of its messages.
    Conversation {
        conversation_id: Uuid,
        title: String,
        /// `None` on a rename (the starter does not change).
        started_by: Option<String>,
        renamed: bool,
    },
    /// One window of a text: one point, whose id is this effect's.
    Window {
        kind: SourceKind,
        source_id: Uuid,
        conversation_id: Option<Uuid>,
        /// The document's or knowledge document's title; `None` for a message (its
        /// conversation's title is used).
        title: Option<String>,
        position: i64,
        window: usize,
        text: String,
    },
    /// A knowledge document was removed: its points go.
    Remove { kind: SourceKind, source_id: Uuid },
    /// An erasure: the points of these conversations go (`None`: all of the tenant's),
    /// and what this projection keeps of them is blanked.
    Erase { conversations: Option<Vec<Uuid>> },
}

/// Who started a conversation, and its title now.
#[derive(Debug, Clone, PartialEq)]
struct ConversationInfo {
    title: String,
    started_by: Option<String>,
}

pub struct SemanticIndex {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    chunking: ChunkConfig,
    /// The database (this projection's tables), and the event store for a conversation
    /// the read model does not have yet.
    events: Reader,
    /// Generation schema -> its index, checked against this projector's model and
    /// created in the store once per process.
    indexes: Mutex<HashMap<String, IndexName>>,
}

impl SemanticIndex {
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn VectorStore>,
        chunking: ChunkConfig,
        events: impl Into<Reader>,
    ) -> Self {
        let events: Reader = events.into();
        SemanticIndex {
            embedder,
            store,
            chunking,
            events,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    pub fn model(&self) -> &ModelId {
        self.embedder.model()
    }

    fn windows(&self, text: &str) -> Vec<chunk::Chunk> {
        chunk::chunks(text, &self.embedder.token_spans(text), self.chunking)
    }

    /// The index of generation `schema`, if it was built with this projector's model.
    async fn index_for(&self, schema: &str) -> Result<IndexName, EffectError> {
        if let Some(index) = self.cached_index(schema) {
            return Ok(index);
        }
        let recorded = index_info(self.events.pool(), schema)
            .await
            .map_err(unavailable)?;
        let Some(IndexInfo {
            model,
            dimension,
            name,
            created_at,
            recorded_since,
        }) = recorded
        else {
            return Err(EffectError::Unavailable(format!(
                "{schema} records no index"
            )));
        };
        let mine = self.embedder.model();
        if model != mine.name || dimension as usize != mine.dimension {
            return Err(EffectError::Unavailable(format!(
                "{schema} is indexed with {model} ({dimension} dimensions) but this projector embeds with {mine}: redeploy it with that model, or rebuild"
            )));
        }
        let index = IndexName::new(name).map_err(|e| EffectError::Rejected(e.to_string()))?;
        // An index this generation created and the store no longer has was lost (the
        // collection deleted, the store started on empty storage): creating it again would
        // leave every earlier point missing for good. Nothing is written until a rebuild.
        if let Some(created_at) = created_at
            && !self.store.exists(&index).await.map_err(store_failed)?
        {
            return Err(EffectError::Unavailable(lost(&index, Some(created_at))));
        }
        self.store
            .create_index(&index, mine.dimension)
            .await
            .map_err(store_failed)?;
        if created_at.is_none() {
            if !recorded_since {
                // A generation from before `created_at` gets the column, once.
                sqlx::query(&format!(
                    "ALTER TABLE {schema}.index_info ADD COLUMN IF NOT EXISTS created_at timestamptz"
                ))
                .execute(self.events.pool())
                .await
                .map_err(unavailable)?;
            }
            sqlx::query(&format!(
                "UPDATE {schema}.index_info SET created_at = now() WHERE created_at IS NULL"
            ))
            .execute(self.events.pool())
            .await
            .map_err(unavailable)?;
        }
        self.indexes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(schema.to_owned(), index.clone());
        Ok(index)
    }

    fn cached_index(&self, schema: &str) -> Option<IndexName> {
        self.indexes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(schema)
            .cloned()
    }

    /// A conversation's title and starter: from this batch, the generation's table, or
    /// (a document whose conversation this generation has not seen yet, e.g. on another
    /// partition) the conversation's first event in the store.
    async fn conversation(
        &self,
        schema: &str,
        tenant: &str,
        id: Uuid,
        known: &HashMap<Uuid, ConversationInfo>,
    ) -> Result<ConversationInfo, EffectError> {
        if let Some(info) = known.get(&id) {
            return Ok(info.clone());
        }
        let row: Option<(String, Option<String>)> = sqlx::query_as(&format!(
            "SELECT title, started_by FROM {schema}.conversations WHERE conversation_id = $1 AND tenant_id = $2"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(self.events.pool())
        .await
        .map_err(unavailable)?;
        if let Some((title, started_by)) = row {
            return Ok(ConversationInfo { title, started_by });
        }
        let first = event_store::Stream::new(&self.events, AggregateKind::Conversation, id)
            .of_tenant(tenant)
            .first()
            .await
            .map_err(|e| match e {
                event_store::StreamError::Database(e) => unavailable(e),
                corrupt => EffectError::Rejected(corrupt.to_string()),
            })?;
        match first.map(|e| e.event()) {
            Some(Ok(Event::ConversationStarted(c))) => Ok(ConversationInfo {
                title: c.title,
                started_by: c.started_by,
            }),
            // A document of a conversation that is not the tenant's cannot be: refuse it
            // rather than index it visible to every member.
            _ => Err(EffectError::Rejected(format!(
                "conversation {id} of tenant {tenant} is not in the event store"
            ))),
        }
    }

    /// Embeds and upserts the pending windows.
    async fn flush(&self, index: &IndexName, pending: &mut Vec<Point>) -> Result<(), EffectError> {
        if pending.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = pending.iter().map(|p| p.payload.text.clone()).collect();
        let vectors = self.embedder.embed(&texts).await.map_err(embed_failed)?;
        if vectors.len() != pending.len() {
            return Err(EffectError::Unavailable(format!(
                "the embedder returned {} vectors for {} texts",
                vectors.len(),
                pending.len()
            )));
        }
        for (point, vector) in pending.iter_mut().zip(vectors) {
            point.vector = vector;
        }
        self.store
            .upsert(index, pending)
            .await
            .map_err(store_failed)?;
        tracing::debug!(points = pending.len(), %index, "points upserted");
        pending.clear();
        Ok(())
    }
}

/// A generation's `index_info`: the model and its dimension, the index, and when the
/// projector first created the index in the store (none before that).
pub(crate) struct IndexInfo {
    pub model: String,
    pub dimension: i32,
    pub name: String,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the table has the `created_at` column (generations made before it do not).
    pub recorded_since: bool,
}

/// The generation `schema`'s `index_info`: the one reader of it, for the projector and
/// for search. Read through `to_jsonb`, so that a generation from before `created_at`
/// reads too (and no reader has to add the column, which would lock the table).
pub(crate) async fn index_info(
    pool: &PgPool,
    schema: &str,
) -> Result<Option<IndexInfo>, sqlx::Error> {
    let row: Option<(String, i32, String, Option<String>, bool)> = sqlx::query_as(&format!(
        "SELECT model, dimension, index_name, to_jsonb(i) ->> 'created_at',
                to_jsonb(i) ? 'created_at'
           FROM {schema}.index_info i"
    ))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(model, dimension, name, created_at, recorded_since)| IndexInfo {
            model,
            dimension,
            name,
            created_at: created_at
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            recorded_since,
        },
    ))
}

/// What a lost index is called, by the projector and by search.
pub fn lost(index: &IndexName, created_at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    let created = created_at.map_or_else(String::new, |t| format!(", created at {t},"));
    format!(
        "the vector index {index}{created} is gone from the vector store (the collection was deleted or the store lost its storage): run `embeddings-projector rebuild` to fill a new generation from the event store"
    )
}

fn unavailable(e: sqlx::Error) -> EffectError {
    EffectError::Unavailable(format!("database: {e}"))
}

/// An embedding failure never parks an event: a provider that is down, throttling,
/// answering nonsense or misconfigured delays the index until it is fixed (the lag
/// shows it). Only a refusal of the input itself counts against the attempts.
fn embed_failed(e: EmbedError) -> EffectError {
    match e {
        EmbedError::Rejected(r) => EffectError::Rejected(r),
        other => EffectError::Unavailable(other.to_string()),
    }
}

fn store_failed(e: VectorError) -> EffectError {
    match e {
        VectorError::Rejected(r) => EffectError::Rejected(r),
        // Every write follows `index_for`, which made sure the index exists: it was lost.
        VectorError::NoIndex(index) => EffectError::Unavailable(lost(&index, None)),
        other => EffectError::Unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl EffectProjection for SemanticIndex {
    type Effect = Effect;

    fn name(&self) -> &'static str {
        NAME
    }

    fn uses_ledger(&self) -> bool {
        false
    }

    /// Texts of many aggregates are embedded in one request.
    fn parallelism(&self) -> Parallelism {
        Parallelism::Batches
    }

    /// As many requests at once as the embedder gains from (1 for the local model).
    fn concurrency(&self) -> usize {
        self.embedder.parallel_calls()
    }

    async fn create_tables(&self, db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
        let model = self.embedder.model();
        for ddl in [
            format!(
                "CREATE TABLE {s}.index_info (
                    model      text    NOT NULL,
                    dimension  integer NOT NULL,
                    index_name text    NOT NULL,
                    created_at timestamptz,
                    single     boolean PRIMARY KEY DEFAULT true CHECK (single))"
            ),
            format!(
                "CREATE TABLE {s}.conversations (
                    conversation_id uuid PRIMARY KEY,
                    tenant_id       text NOT NULL,
                    title           text NOT NULL,
                    started_by      text)"
            ),
        ] {
            sqlx::query(&ddl).execute(&mut *db).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO {s}.index_info (model, dimension, index_name) VALUES ($1, $2, $3)"
        ))
        .bind(&model.name)
        .bind(model.dimension as i32)
        .bind(index_name(s, model).as_str())
        .execute(&mut *db)
        .await?;
        Ok(())
    }

    fn plan(&self, e: &Envelope) -> Vec<Effect> {
        let windows = |kind, source_id, conversation_id, title: Option<&str>, text: &str| {
            if e.erased {
                // An erased text is indexed as nothing: a rebuild after an erasure finds
                // none of it.
                return Vec::new();
            }
            self.windows(text)
                .into_iter()
                .map(|w| Effect::Window {
                    kind,
                    source_id,
                    conversation_id,
                    title: title.map(str::to_owned),
                    position: e.sequence,
                    window: w.index,
                    text: w.text,
                })
                .collect()
        };
        match &e.event {
            Event::ConversationStarted(c) => vec![Effect::Conversation {
                conversation_id: c.conversation_id,
                title: c.title.clone(),
                started_by: c.started_by.clone(),
                renamed: false,
            }],
            Event::ConversationRenamed(r) => vec![Effect::Conversation {
                conversation_id: r.conversation_id,
                title: r.title.clone(),
                started_by: None,
                renamed: true,
            }],
            Event::MessageSent(m) => windows(
                SourceKind::Message,
                m.message_id,
                Some(m.conversation_id),
                None,
                &m.content,
            ),
            Event::DocumentGenerated(d) => windows(
                SourceKind::Document,
                d.document_id,
                Some(d.conversation_id),
                Some(&d.title),
                &d.content,
            ),
            Event::KnowledgeDocumentAdded(k) => windows(
                SourceKind::Knowledge,
                k.knowledge_id,
                None,
                Some(&k.title),
                &k.text,
            ),
            Event::KnowledgeDocumentRemoved(k) => vec![Effect::Remove {
                kind: SourceKind::Knowledge,
                source_id: k.knowledge_id,
            }],
            Event::ConversationEnded(_)
            | Event::AssistantReplyFailed(_)
            | Event::AssistantReplyRequested(_)
            | Event::DocumentRequested(_)
            | Event::DocumentGenerationFailed(_)
            | Event::WebhookEndpointCreated(_)
            | Event::WebhookEndpointUpdated(_)
            | Event::WebhookSecretRotated(_)
            | Event::WebhookEndpointDisabled(_)
            | Event::WebhookEndpointEnabled(_)
            | Event::WebhookEndpointDeleted(_)
            | Event::WebhookMessageFailed(_)
            | Event::WebhookRedeliveryRequested(_)
            | Event::NotificationsRead(_) => Vec::new(),
            Event::SubjectErased(x) => vec![Effect::Erase {
                conversations: (!x.is_tenant()).then(|| x.conversations()),
            }],
        }
    }

    async fn perform(
        &self,
        schema: &str,
        effects: &[Planned<Effect>],
        _pass: Pass,
    ) -> Result<(), EffectError> {
        // Derived data: a rebuild indexes history again, into its own generation's index.
        let index = self.index_for(schema).await?;
        let mut known: HashMap<Uuid, ConversationInfo> = HashMap::new();
        let mut pending: Vec<Point> = Vec::new();
        for planned in effects {
            let tenant = planned.tenant_id.as_str();
            match &planned.effect {
                Effect::Conversation {
                    conversation_id,
                    title,
                    started_by,
                    renamed,
                } => {
                    if *renamed {
                        // Points written before the rename take the new title too.
                        self.flush(&index, &mut pending).await?;
                        let before = self
                            .conversation(schema, tenant, *conversation_id, &known)
                            .await?;
                        self.store
                            .set_conversation_title(&index, tenant, *conversation_id, title)
                            .await
                            .map_err(store_failed)?;
                        known.insert(
                            *conversation_id,
                            ConversationInfo {
                                title: title.clone(),
                                started_by: before.started_by,
                            },
                        );
                    } else {
                        known.insert(
                            *conversation_id,
                            ConversationInfo {
                                title: title.clone(),
                                started_by: started_by.clone(),
                            },
                        );
                    }
                }
                Effect::Window {
                    kind,
                    source_id,
                    conversation_id,
                    title,
                    position,
                    window,
                    text,
                } => {
                    let (title, started_by) = match conversation_id {
                        Some(c) => {
                            let info = self.conversation(schema, tenant, *c, &known).await?;
                            (title.clone().unwrap_or(info.title), info.started_by)
                        }
                        None => (title.clone().unwrap_or_default(), None),
                    };
                    pending.push(Point {
                        id: planned.id.0,
                        vector: Vec::new(),
                        payload: Payload {
                            tenant_id: tenant.to_owned(),
                            source_kind: *kind,
                            source_id: *source_id,
                            conversation_id: *conversation_id,
                            started_by,
                            title,
                            event_id: planned.event_id,
                            position: *position,
                            chunk: i32::try_from(*window).unwrap_or(i32::MAX),
                            text: text.clone(),
                        },
                    });
                }
                Effect::Remove { kind, source_id } => {
                    self.flush(&index, &mut pending).await?;
                    self.store
                        .delete_source(&index, tenant, *kind, *source_id)
                        .await
                        .map_err(store_failed)?;
                }
                Effect::Erase { conversations } => {
                    self.flush(&index, &mut pending).await?;
                    self.store
                        .erase(&index, tenant, conversations.as_deref())
                        .await
                        .map_err(store_failed)?;
                    known.retain(|id, _| conversations.as_ref().is_some_and(|c| !c.contains(id)));
                }
            }
        }
        self.flush(&index, &mut pending).await
    }

    async fn record(
        &self,
        db: &mut PgConnection,
        s: &str,
        applied: &[(Envelope, Vec<Planned<Effect>>)],
        _pass: Pass,
    ) -> Result<(), ApplyError> {
        for planned in applied.iter().flat_map(|(_, p)| p) {
            if let Effect::Erase { conversations } = &planned.effect {
                sqlx::query(&format!(
                    "UPDATE {s}.conversations
                        SET title = $3, started_by = CASE WHEN started_by IS NULL THEN NULL ELSE $3 END
                      WHERE tenant_id = $1 AND ($2::uuid[] IS NULL OR conversation_id = ANY($2))"
                ))
                .bind(&planned.tenant_id)
                .bind(conversations)
                .bind(schemas::personal::ERASED)
                .execute(&mut *db)
                .await?;
                continue;
            }
            let Effect::Conversation {
                conversation_id,
                title,
                started_by,
                renamed,
            } = &planned.effect
            else {
                continue;
            };
            if *renamed {
                sqlx::query(&format!(
                    "UPDATE {s}.conversations SET title = $3 WHERE conversation_id = $1 AND tenant_id = $2"
                ))
                .bind(conversation_id)
                .bind(&planned.tenant_id)
                .bind(title)
                .execute(&mut *db)
                .await?;
            } else {
                sqlx::query(&format!(
                    "INSERT INTO {s}.conversations (conversation_id, tenant_id, title, started_by)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id) DO NOTHING"
                ))
                .bind(conversation_id)
                .bind(&planned.tenant_id)
                .bind(title)
                .bind(started_by)
                .execute(&mut *db)
                .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_fit_and_stay_stable_for_long_model_names() {
        let short = ModelId {
            name: "local/all-MiniLM-L6-v2".into(),
            dimension: 384,
        };
        assert_eq!(
            index_name("semantic_g2", &short).as_str(),
            "semantic_g2_local_all_minilm_l6_v2_384"
        );
        let long = ModelId {
            name: "openai/a-very-long-embedding-model-name-from-some-provider-v3-large".into(),
            dimension: 3072,
        };
        let name = index_name("semantic_g12", &long);
        assert!(name.as_str().len() <= 63, "{name}");
        assert_eq!(name, index_name("semantic_g12", &long));
        assert_ne!(name, index_name("semantic_g13", &long));
    }
}
