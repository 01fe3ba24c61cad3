//! How a batch of events changes the read model's tables, in a handful of statements
//! whatever the batch's length.
//!
//! The frequent events (a conversation's start, messages, renames, ends, the assistant's
//! reply states) are folded first: each conversation the batch touches becomes one row
//! change (inserted whole when the batch started it, otherwise one update carrying what
//! the batch changed), the batch's messages one multi-row insert, and each message's
//! final reply state one update. The rare events (documents, the knowledge base, webhook
//! endpoints) write their own statement each, in order; they touch other tables, so
//! writing them before the folded changes keeps every table's order.
//!
//! A batch whose fold cannot be written as a whole (a conversation changed before its
//! start, started twice, or missing) fails as a whole; the runtime then applies its
//! events one by one, which names the failing event. One event in a batch is the same
//! code with nothing to fold: the test `batches_write_what_one_event_at_a_time_writes`
//! holds the two to the same tables.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use projection::{ApplyError, Envelope};
use schemas::{ConversationStarted, Event, MessageSent};
use sqlx::PgConnection;
use uuid::Uuid;

/// Applies `events` (each aggregate's in sequence order) to the tables in schema `s`.
pub(crate) async fn apply(
    db: &mut PgConnection,
    s: &str,
    events: &[Envelope],
) -> Result<(), ApplyError> {
    let mut fold = Fold::default();
    for e in events {
        match &e.event {
            // The inbox is the notifications projection's.
            Event::NotificationsRead(_) => {}
            // What the batch folded so far is written first: an erasure blanks it too.
            Event::SubjectErased(x) => {
                std::mem::take(&mut fold).write(db, s).await?;
                erase(db, s, x).await?;
            }
            Event::ConversationStarted(c) => fold.start(e, c)?,
            Event::MessageSent(m) => fold.message(e, m)?,
            Event::ConversationRenamed(r) => {
                fold.change(e, r.conversation_id, r.renamed_at).title = Some(r.title.clone());
            }
            Event::ConversationEnded(x) => {
                fold.change(e, x.conversation_id, x.ended_at).ended_at = Some(x.ended_at);
            }
            Event::AssistantReplyFailed(f) => {
                fold.change(e, f.conversation_id, f.failed_at);
                fold.reply(f.message_id, "failed", Some(&f.reason));
            }
            Event::AssistantReplyRequested(r) => {
                fold.change(e, r.conversation_id, r.requested_at);
                fold.reply(r.message_id, "pending", None);
            }
            Event::DocumentGenerated(_)
            | Event::DocumentRequested(_)
            | Event::DocumentGenerationFailed(_)
            | Event::KnowledgeDocumentAdded(_)
            | Event::KnowledgeDocumentRemoved(_)
            | Event::WebhookEndpointCreated(_)
            | Event::WebhookEndpointUpdated(_)
            | Event::WebhookSecretRotated(_)
            | Event::WebhookEndpointDisabled(_)
            | Event::WebhookEndpointEnabled(_)
            | Event::WebhookEndpointDeleted(_)
            | Event::WebhookMessageFailed(_)
            | Event::WebhookRedeliveryRequested(_) => write_one(db, s, e).await?,
        }
    }
    fold.write(db, s).await
}

/// A conversation the batch started: its row as the start wrote it.
struct Started {
    tenant_id: String,
    title: String,
    metadata: serde_json::Value,
    started_at: DateTime<Utc>,
    started_by: Option<String>,
    assistant: bool,
}

/// What a batch did to one conversation's row.
struct Change {
    /// Set when the batch started the conversation: the row is inserted, not updated.
    started: Option<Started>,
    /// The first event of the batch that changed it, named if its row is missing.
    first: String,
    messages: i64,
    version: i64,
    last_activity_at: DateTime<Utc>,
    title: Option<String>,
    ended_at: Option<DateTime<Utc>>,
}

/// One message row.
struct Message {
    tenant_id: String,
    conversation_id: Uuid,
    message_id: Uuid,
    sequence: i64,
    role: &'static str,
    content: String,
    model: Option<String>,
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
    sent_at: DateTime<Utc>,
    reply_to: Option<Uuid>,
    latency_ms: Option<i64>,
    sources: serde_json::Value,
}

#[derive(Default)]
struct Fold {
    conversations: BTreeMap<Uuid, Change>,
    messages: Vec<Message>,
    /// Each message's reply state as the batch leaves it: (status, error).
    replies: BTreeMap<Uuid, (&'static str, Option<String>)>,
}

fn describe(e: &Envelope) -> String {
    format!(
        "{} {} sequence {}",
        e.aggregate_type, e.aggregate_id, e.sequence
    )
}

fn json<T: serde::Serialize>(e: &Envelope, value: &T) -> Result<serde_json::Value, ApplyError> {
    serde_json::to_value(value)
        .map_err(|err| ApplyError::Rejected(format!("{}: {err}", describe(e))))
}

impl Fold {
    fn start(&mut self, e: &Envelope, c: &ConversationStarted) -> Result<(), ApplyError> {
        if self.conversations.contains_key(&c.conversation_id) {
            return Err(ApplyError::Rejected(format!(
                "{}: conversation {} started after it changed in the same batch",
                describe(e),
                c.conversation_id
            )));
        }
        let started = Started {
            tenant_id: c.tenant_id.clone(),
            title: c.title.clone(),
            metadata: json(e, &c.metadata)?,
            started_at: c.started_at,
            started_by: c.started_by.clone(),
            assistant: c.assistant,
        };
        self.conversations.insert(
            c.conversation_id,
            Change {
                started: Some(started),
                first: describe(e),
                messages: 0,
                version: e.sequence,
                last_activity_at: c.started_at,
                title: None,
                ended_at: None,
            },
        );
        Ok(())
    }

    /// The conversation's change, its version and last activity moved to `e`.
    fn change(&mut self, e: &Envelope, conversation_id: Uuid, at: DateTime<Utc>) -> &mut Change {
        let change = self
            .conversations
            .entry(conversation_id)
            .or_insert_with(|| Change {
                started: None,
                first: describe(e),
                messages: 0,
                version: e.sequence,
                last_activity_at: at,
                title: None,
                ended_at: None,
            });
        change.version = e.sequence;
        change.last_activity_at = at;
        change
    }

    fn message(&mut self, e: &Envelope, m: &MessageSent) -> Result<(), ApplyError> {
        // A state recorded for this message before its row existed changed nothing.
        self.replies.remove(&m.message_id);
        self.messages.push(Message {
            tenant_id: e.tenant_id.clone(),
            conversation_id: m.conversation_id,
            message_id: m.message_id,
            sequence: e.sequence,
            role: m.role.as_str(),
            content: m.content.clone(),
            model: m.model.clone(),
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            sent_at: m.sent_at,
            reply_to: m.reply_to,
            latency_ms: m.latency_ms,
            sources: json(e, &m.sources)?,
        });
        if let Some(answered) = m.reply_to {
            self.reply(answered, "replied", None);
        }
        self.change(e, m.conversation_id, m.sent_at).messages += 1;
        Ok(())
    }

    fn reply(&mut self, message_id: Uuid, status: &'static str, error: Option<&str>) {
        self.replies
            .insert(message_id, (status, error.map(str::to_owned)));
    }

    /// Writes the fold: new conversations, then messages (whose reply state reads their
    /// conversation), then the other conversations' changes, then reply states.
    async fn write(self, db: &mut PgConnection, s: &str) -> Result<(), ApplyError> {
        let (started, changed): (Vec<_>, Vec<_>) = self
            .conversations
            .into_iter()
            .partition(|(_, c)| c.started.is_some());
        insert_conversations(db, s, started).await?;
        insert_messages(db, s, self.messages).await?;
        update_conversations(db, s, changed).await?;
        set_replies(db, s, self.replies).await
    }
}

async fn insert_conversations(
    db: &mut PgConnection,
    s: &str,
    rows: Vec<(Uuid, Change)>,
) -> Result<(), ApplyError> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (mut tenants, mut ids, mut titles, mut statuses, mut counts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (
        mut metadata,
        mut versions,
        mut started_at,
        mut started_by,
        mut last_activity,
        mut ended_at,
        mut assistant,
    ) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, change) in rows {
        let Some(start) = change.started else {
            continue;
        };
        tenants.push(start.tenant_id);
        ids.push(id);
        titles.push(change.title.unwrap_or(start.title));
        statuses.push(if change.ended_at.is_some() {
            "ended"
        } else {
            "open"
        });
        counts.push(change.messages);
        metadata.push(start.metadata);
        versions.push(change.version);
        started_at.push(start.started_at);
        started_by.push(start.started_by);
        last_activity.push(change.last_activity_at);
        ended_at.push(change.ended_at);
        assistant.push(start.assistant);
    }
    sqlx::query(&format!(
        "INSERT INTO {s}.conversations (tenant_id, conversation_id, title, status, message_count, metadata, version,
                                        started_at, started_by, last_activity_at, ended_at, assistant)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], $5::int8[], $6::jsonb[], $7::int8[],
                              $8::timestamptz[], $9::text[], $10::timestamptz[], $11::timestamptz[], $12::bool[])"
    ))
    .bind(tenants)
    .bind(ids)
    .bind(titles)
    .bind(statuses)
    .bind(counts)
    .bind(metadata)
    .bind(versions)
    .bind(started_at)
    .bind(started_by)
    .bind(last_activity)
    .bind(ended_at)
    .bind(assistant)
    .execute(&mut *db)
    .await?;
    Ok(())
}

async fn insert_messages(
    db: &mut PgConnection,
    s: &str,
    rows: Vec<Message>,
) -> Result<(), ApplyError> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (
        mut tenants,
        mut conversations,
        mut ids,
        mut sequences,
        mut roles,
        mut contents,
        mut models,
    ) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut prompt, mut completion, mut sent_at, mut reply_to, mut latency, mut sources) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for m in rows {
        tenants.push(m.tenant_id);
        conversations.push(m.conversation_id);
        ids.push(m.message_id);
        sequences.push(m.sequence);
        roles.push(m.role);
        contents.push(m.content);
        models.push(m.model);
        prompt.push(m.prompt_tokens);
        completion.push(m.completion_tokens);
        sent_at.push(m.sent_at);
        reply_to.push(m.reply_to);
        latency.push(m.latency_ms);
        sources.push(m.sources);
    }
    // A user message waits for the assistant's reply when its conversation has the
    // assistant on (never changed after the start, so reading it now is reading it then).
    sqlx::query(&format!(
        "INSERT INTO {s}.messages (tenant_id, conversation_id, message_id, sequence, role, content, model, prompt_tokens,
                                   completion_tokens, sent_at, reply_to, latency_ms, sources, reply_status)
         SELECT u.tenant_id, u.conversation_id, u.message_id, u.sequence, u.role, u.content, u.model, u.prompt_tokens,
                u.completion_tokens, u.sent_at, u.reply_to, u.latency_ms, u.sources,
                CASE WHEN u.role = 'user' THEN (SELECT CASE WHEN c.assistant THEN 'pending' END
                                                FROM {s}.conversations c WHERE c.conversation_id = u.conversation_id) END
         FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::int4[],
                     $9::int4[], $10::timestamptz[], $11::uuid[], $12::int8[], $13::jsonb[])
              WITH ORDINALITY AS u(tenant_id, conversation_id, message_id, sequence, role, content, model, prompt_tokens,
                                   completion_tokens, sent_at, reply_to, latency_ms, sources, n)
         ORDER BY u.n"
    ))
    .bind(tenants)
    .bind(conversations)
    .bind(ids)
    .bind(sequences)
    .bind(roles)
    .bind(contents)
    .bind(models)
    .bind(prompt)
    .bind(completion)
    .bind(sent_at)
    .bind(reply_to)
    .bind(latency)
    .bind(sources)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Conversations the batch changed but did not start: one update each, in one statement.
/// A conversation without a row (its start is missing) fails the batch.
async fn update_conversations(
    db: &mut PgConnection,
    s: &str,
    rows: Vec<(Uuid, Change)>,
) -> Result<(), ApplyError> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (mut ids, mut messages, mut versions, mut at, mut titles, mut ended_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, change) in &rows {
        ids.push(*id);
        messages.push(change.messages);
        versions.push(change.version);
        at.push(change.last_activity_at);
        titles.push(change.title.as_deref());
        ended_at.push(change.ended_at);
    }
    let updated: Vec<Uuid> = sqlx::query_scalar(&format!(
        "UPDATE {s}.conversations c
            SET message_count = c.message_count + u.messages, version = u.version, last_activity_at = u.at,
                title = coalesce(u.title, c.title),
                status = CASE WHEN u.ended_at IS NULL THEN c.status ELSE 'ended' END,
                ended_at = coalesce(u.ended_at, c.ended_at)
           FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::timestamptz[], $5::text[], $6::timestamptz[])
                AS u(id, messages, version, at, title, ended_at)
          WHERE c.conversation_id = u.id
         RETURNING c.conversation_id"
    ))
    .bind(&ids)
    .bind(messages)
    .bind(versions)
    .bind(at)
    .bind(titles)
    .bind(ended_at)
    .fetch_all(&mut *db)
    .await?;
    if updated.len() < rows.len() {
        let missing = rows
            .iter()
            .find(|(id, _)| !updated.contains(id))
            .map_or_else(String::new, |(_, c)| c.first.clone());
        // An update of a conversation the read model does not have: its start is missing.
        return Err(ApplyError::Rejected(format!("{missing}: no row to update")));
    }
    Ok(())
}

async fn set_replies(
    db: &mut PgConnection,
    s: &str,
    replies: BTreeMap<Uuid, (&'static str, Option<String>)>,
) -> Result<(), ApplyError> {
    if replies.is_empty() {
        return Ok(());
    }
    let (mut ids, mut statuses, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (id, (status, error)) in replies {
        ids.push(id);
        statuses.push(status);
        errors.push(error);
    }
    sqlx::query(&format!(
        "UPDATE {s}.messages m SET reply_status = u.status, reply_error = u.error
           FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS u(id, status, error)
          WHERE m.message_id = u.id"
    ))
    .bind(ids)
    .bind(statuses)
    .bind(errors)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// An erasure (docs/DATA-PROTECTION.md, "Erasure"): the personal fields of the
/// conversations it names (a tenant's: of all its rows) read as a rebuild reads them from
/// the store once their keys are gone, [`schemas::personal::ERASED`] and empty maps and
/// lists; ids, times, counts and statuses stay.
async fn erase(
    db: &mut PgConnection,
    s: &str,
    x: &schemas::SubjectErased,
) -> Result<(), ApplyError> {
    let tenant = x.tenant_id.as_str();
    let whole = x.is_tenant();
    let conversations = x.conversations();
    let blank =
        |column: &str| format!("{column} = CASE WHEN {column} IS NULL THEN NULL ELSE $3 END");
    let which = "tenant_id = $1 AND ($4 OR conversation_id = ANY($2))";
    for statement in [
        format!(
            "UPDATE {s}.conversations SET title = $3, metadata = '{{}}', {} WHERE {which}",
            blank("started_by")
        ),
        format!(
            "UPDATE {s}.messages SET content = $3, sources = '[]', {} WHERE {which}",
            blank("reply_error")
        ),
        format!(
            "UPDATE {s}.documents SET title = $3, content = CASE WHEN content = '' THEN '' ELSE $3 END, {}
              WHERE {which}",
            blank("failure")
        ),
        // Company knowledge goes with the tenant only.
        format!(
            "UPDATE {s}.knowledge SET title = $3, text = $3, {} WHERE tenant_id = $1 AND $4",
            blank("added_by")
        ),
    ] {
        sqlx::query(&statement)
            .bind(tenant)
            .bind(&conversations)
            .bind(schemas::personal::ERASED)
            .bind(whole)
            .execute(&mut *db)
            .await?;
    }
    // Where a person acted (a webhook endpoint they created), they are no longer named.
    if let Some(person) = x.person() {
        sqlx::query(&format!(
            "UPDATE {s}.webhook_endpoints SET created_by = $3 WHERE tenant_id = $1 AND created_by = $2"
        ))
        .bind(tenant)
        .bind(person)
        .bind(schemas::personal::ERASED)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// One of the rare events: a statement of its own. An update that finds no row fails
/// (its creation is missing).
async fn write_one(db: &mut PgConnection, s: &str, e: &Envelope) -> Result<(), ApplyError> {
    let done = match &e.event {
        Event::NotificationsRead(_)
        | Event::SubjectErased(_)
        | Event::ConversationStarted(_)
        | Event::MessageSent(_)
        | Event::ConversationRenamed(_)
        | Event::ConversationEnded(_)
        | Event::AssistantReplyFailed(_)
        | Event::AssistantReplyRequested(_) => return Ok(()), // folded (see `apply`)
        Event::DocumentGenerated(d) => sqlx::query(&format!(
            "INSERT INTO {s}.documents (tenant_id, document_id, conversation_id, kind, title, format, content,
                                        source_message_count, generator_name, generator_version, generated_at,
                                        status, prompt_tokens, completion_tokens, latency_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'generated', $12, $13, $14)
             ON CONFLICT (document_id) DO UPDATE SET
                title = EXCLUDED.title, format = EXCLUDED.format, content = EXCLUDED.content,
                source_message_count = EXCLUDED.source_message_count,
                generator_name = EXCLUDED.generator_name, generator_version = EXCLUDED.generator_version,
                generated_at = EXCLUDED.generated_at, status = 'generated', failure = NULL,
                prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
                latency_ms = EXCLUDED.latency_ms"
        ))
        .bind(&d.tenant_id)
        .bind(d.document_id)
        .bind(d.conversation_id)
        .bind(kind_name(d.kind))
        .bind(&d.title)
        .bind(serde_json::to_value(d.format).ok().and_then(|v| v.as_str().map(str::to_owned)))
        .bind(&d.content)
        .bind(d.source_message_count)
        .bind(&d.generator.name)
        .bind(&d.generator.version)
        .bind(d.generated_at)
        .bind(d.prompt_tokens)
        .bind(d.completion_tokens)
        .bind(d.latency_ms)
        .execute(&mut *db)
        .await?,
        Event::DocumentRequested(d) => sqlx::query(&format!(
            "INSERT INTO {s}.documents (tenant_id, document_id, conversation_id, kind, title, format, content,
                                        source_message_count, generator_name, generator_version, generated_at, status)
             VALUES ($1, $2, $3, $4, $5, 'markdown', '', 0, '', '', $6, 'requested')"
        ))
        .bind(&d.tenant_id)
        .bind(d.document_id)
        .bind(d.conversation_id)
        .bind(kind_name(d.kind))
        .bind(d.title.as_deref().unwrap_or_default())
        .bind(d.requested_at)
        .execute(&mut *db)
        .await?,
        Event::DocumentGenerationFailed(f) => sqlx::query(&format!(
            "UPDATE {s}.documents SET status = 'failed', failure = $2 WHERE document_id = $1"
        ))
        .bind(f.document_id)
        .bind(&f.reason)
        .execute(&mut *db)
        .await?,
        Event::KnowledgeDocumentAdded(k) => sqlx::query(&format!(
            "INSERT INTO {s}.knowledge (tenant_id, knowledge_id, title, media_type, sha256, size_bytes, text, added_by, added_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&k.tenant_id)
        .bind(k.knowledge_id)
        .bind(&k.title)
        .bind(&k.media_type)
        .bind(&k.sha256)
        .bind(k.size_bytes)
        .bind(&k.text)
        .bind(&k.added_by)
        .bind(k.added_at)
        .execute(&mut *db)
        .await?,
        Event::KnowledgeDocumentRemoved(k) => sqlx::query(&format!(
            "UPDATE {s}.knowledge SET removed_at = $2 WHERE knowledge_id = $1"
        ))
        .bind(k.knowledge_id)
        .bind(k.removed_at)
        .execute(&mut *db)
        .await?,
        Event::WebhookEndpointCreated(w) => sqlx::query(&format!(
            "INSERT INTO {s}.webhook_endpoints (tenant_id, endpoint_id, url, event_types, description, enabled, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, true, $6, $7, $7)"
        ))
        .bind(&w.tenant_id)
        .bind(w.endpoint_id)
        .bind(&w.url)
        .bind(&w.event_types)
        .bind(&w.description)
        .bind(&w.created_by)
        .bind(w.created_at)
        .execute(&mut *db)
        .await?,
        Event::WebhookEndpointUpdated(w) => sqlx::query(&format!(
            "UPDATE {s}.webhook_endpoints SET url = $2, event_types = $3, description = $4, updated_at = $5
             WHERE endpoint_id = $1"
        ))
        .bind(w.endpoint_id)
        .bind(&w.url)
        .bind(&w.event_types)
        .bind(&w.description)
        .bind(w.updated_at)
        .execute(&mut *db)
        .await?,
        Event::WebhookSecretRotated(w) => sqlx::query(&format!(
            "UPDATE {s}.webhook_endpoints SET secret_rotated_at = $2, previous_secret_until = $3, updated_at = $2
             WHERE endpoint_id = $1"
        ))
        .bind(w.endpoint_id)
        .bind(w.rotated_at)
        .bind(w.previous_valid_until)
        .execute(&mut *db)
        .await?,
        Event::WebhookEndpointDisabled(w) => sqlx::query(&format!(
            "UPDATE {s}.webhook_endpoints SET enabled = false, disabled_reason = $2, disabled_automatic = $3, updated_at = $4
             WHERE endpoint_id = $1"
        ))
        .bind(w.endpoint_id)
        .bind(&w.reason)
        .bind(w.automatic)
        .bind(w.disabled_at)
        .execute(&mut *db)
        .await?,
        Event::WebhookEndpointEnabled(w) => sqlx::query(&format!(
            "UPDATE {s}.webhook_endpoints SET enabled = true, disabled_reason = NULL, disabled_automatic = NULL, updated_at = $2
             WHERE endpoint_id = $1"
        ))
        .bind(w.endpoint_id)
        .bind(w.enabled_at)
        .execute(&mut *db)
        .await?,
        Event::WebhookEndpointDeleted(w) => sqlx::query(&format!(
            "UPDATE {s}.webhook_endpoints SET deleted_at = $2, enabled = false, updated_at = $2 WHERE endpoint_id = $1"
        ))
        .bind(w.endpoint_id)
        .bind(w.deleted_at)
        .execute(&mut *db)
        .await?,
        Event::WebhookMessageFailed(w) => sqlx::query(&format!(
            "UPDATE {s}.webhook_endpoints SET last_dead_at = $2 WHERE endpoint_id = $1"
        ))
        .bind(w.endpoint_id)
        .bind(w.failed_at)
        .execute(&mut *db)
        .await?,
        Event::WebhookRedeliveryRequested(w) => sqlx::query(&format!(
            "UPDATE {s}.webhook_endpoints SET updated_at = updated_at WHERE endpoint_id = $1"
        ))
        .bind(w.endpoint_id)
        .execute(&mut *db)
        .await?,
    };
    if done.rows_affected() == 0 {
        return Err(ApplyError::Rejected(format!(
            "{}: no row to update",
            describe(e)
        )));
    }
    Ok(())
}

fn kind_name(kind: schemas::DocumentKind) -> Option<String> {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}
