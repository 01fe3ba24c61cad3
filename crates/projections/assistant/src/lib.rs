//! The assistant, a process manager: for each user message of a conversation whose
//! assistant is on (and for each reply asked for again after a failure), it retrieves
//! context by semantic search, adds the conversation's history within a token budget,
//! calls the LLM route `reply`, and answers through the command service with an
//! assistant `MessageSent` (model, tokens, latency, sources), or records
//! `AssistantReplyFailed` when every provider failed.
//!
//! Exactly one reply per user message:
//! - the effect ledger skips a reply already made when its event is delivered again;
//! - before calling a model, the conversation is read from the event store: a message
//!   already answered (or failed, or of a conversation that ended or has the assistant
//!   off) is left alone, so a replay never calls a model again;
//! - the command carries an idempotency key derived from the effect, and the aggregate
//!   refuses a second reply to the same message (`NoReplyAwaited`: an answered message
//!   leaves the messages awaiting a reply) whatever the key;
//! - a rebuild replays history: nothing is answered.
//!
//! The same process manager writes the documents asked of an LLM (`DocumentRequested`):
//! the conversation's transcript into the kind's versioned template, the `document`
//! route, then `DocumentGenerated` (model as generator, template version, usage) or
//! `DocumentGenerationFailed`, under the same rules.
//!
//! Replies are streamed when a [`Publisher`] is given: each piece the model writes goes
//! out as a reply delta for the conversation's live streams while the reply is written;
//! the appended `MessageSent` stays the answer.
//!
//! The one window left: a kill after the model answered and before the reply was
//! appended calls the model again for that message when the event is redelivered.

pub mod budget;
pub mod documents;
pub mod prompt;
pub mod read;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use commands::{CommandError, CommandService, Idempotency, NewMessage, Reach, RequestMeta};
use common::config;
use domain::Scope;
use domain::conversation::{Reply, Status};
use domain::{DocumentStatus, DomainError};
use llm::ContextItem;
use llm::router::{RouteError, Router};
use projection::deltas::Publisher;
use projection::{EffectError, EffectId, EffectProjection, Envelope, Pass, Planned};
use schemas::{Event, MessageSource, Role};
use semantic_index::{Search, SearchRequest};
use uuid::Uuid;
use vectors::SourceKind;

pub const NAME: &str = "assistant";

/// The subject the assistant's commands are recorded under.
pub const SUBJECT: &str = "assistant";

/// How much context and history a reply gets.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
#[command(next_help_heading = "Assistant")]
pub struct AssistantSettings {
    /// Retrieved passages given to the model, at most (20 at most are used).
    #[arg(long = "assistant-context-k", env = "ASSISTANT_CONTEXT_K", default_value_t = 5, value_parser = at_most_20)]
    pub context_k: usize,
    /// Passages scoring below this cosine are left out.
    #[arg(
        long = "assistant-min-score",
        env = "ASSISTANT_MIN_SCORE",
        default_value_t = 0.25
    )]
    pub min_score: f32,
    /// Approximate tokens of history given to the model, newest first.
    #[arg(
        long = "assistant-history-tokens",
        env = "ASSISTANT_HISTORY_TOKENS",
        default_value_t = 2_000
    )]
    pub history_tokens: u32,
}

fn at_most_20(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .map(|k| k.min(20))
        .map_err(|e| e.to_string())
}

impl Default for AssistantSettings {
    /// The settings' defaults.
    fn default() -> Self {
        config::defaults()
    }
}

/// One piece of work, with the request that caused it (carried on to the answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub task: Task,
    /// Who caused the event (the user who asked, or asked again): told of a failure.
    pub asked_by: Option<String>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Task {
    /// Answer the user message `message_id` of `conversation_id`.
    Reply {
        conversation_id: Uuid,
        message_id: Uuid,
    },
    /// Write the requested document `document_id`.
    Document { document_id: Uuid },
}

/// What was decided, kept until it is appended: a retry after the event store was
/// unavailable does not call the model again.
#[derive(Debug, Clone)]
enum Decided {
    Reply(NewMessage),
    Fail { reason: String, attempts: i32 },
    Document(documents::Written),
}

pub struct Assistant {
    /// Writes its answers, and is the store it reads conversations through.
    service: Arc<CommandService>,
    search: Arc<Search>,
    router: Arc<Router>,
    settings: AssistantSettings,
    decided: Mutex<HashMap<EffectId, Decided>>,
    /// Where the pieces of a reply go while the model writes it (none: not streamed).
    deltas: Option<Publisher>,
}

impl Assistant {
    pub fn new(
        service: Arc<CommandService>,
        search: Arc<Search>,
        router: Arc<Router>,
        settings: AssistantSettings,
    ) -> Self {
        Assistant {
            service,
            search,
            router,
            settings,
            decided: Mutex::new(HashMap::new()),
            deltas: None,
        }
    }

    /// Streams replies: each piece the model writes is published as a reply delta for
    /// the conversation's live streams (`projection::deltas`).
    pub fn with_deltas(mut self, publisher: Publisher) -> Self {
        self.deltas = Some(publisher);
        self
    }

    fn decided(&self) -> std::sync::MutexGuard<'_, HashMap<EffectId, Decided>> {
        self.decided.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the assistant's commands are recorded: as the tenant's service, caused by the
    /// event, keyed by the effect.
    fn meta(&self, planned: &Planned<Work>) -> RequestMeta {
        RequestMeta {
            tenant_id: planned.tenant_id.clone(),
            user_id: SUBJECT.to_owned(),
            reach: Reach::Tenant,
            correlation_id: planned
                .effect
                .correlation_id
                .clone()
                .unwrap_or_else(|| planned.event_id.to_string()),
            causation_id: planned.event_id.to_string(),
            traceparent: planned.effect.traceparent.clone(),
            tracestate: None,
            // The request is the effect this reply or document performs; what the model
            // wrote may differ on a retry and is no part of it.
            idempotency: Some(Idempotency::new(
                format!("assistant:{}", planned.id),
                NAME,
                &planned.id.0,
            )),
        }
    }

    /// The decision for `planned`, made once (`decide`) and kept until appended.
    async fn decided_once<F: std::future::Future<Output = Decided>>(
        &self,
        planned: &Planned<Work>,
        decide: impl FnOnce() -> F,
    ) -> Decided {
        let cached = self.decided().get(&planned.id).cloned();
        match cached {
            Some(d) => d,
            None => {
                let d = decide().await;
                self.decided().insert(planned.id, d.clone());
                d
            }
        }
    }

    /// What an append's failure means for the effect: retry later, or done.
    fn appended(
        &self,
        planned: &Planned<Work>,
        outcome: Result<commands::Accepted, CommandError>,
    ) -> Result<(), EffectError> {
        match outcome {
            Ok(accepted) => {
                for event in &accepted.events {
                    count(event);
                }
            }
            Err(CommandError::Unavailable(e)) => {
                return Err(EffectError::Unavailable(format!("appending: {e}")));
            }
            Err(CommandError::Contended(n)) => {
                return Err(EffectError::Unavailable(format!(
                    "the aggregate stayed contended after {n} attempts"
                )));
            }
            // Answered meanwhile (another replica, or an earlier attempt whose key
            // expired), ended, or refused: nothing more to do.
            Err(CommandError::Domain(
                DomainError::NoReplyAwaited | DomainError::DocumentNotPending,
            )) => {}
            Err(e) => {
                tracing::warn!(task = ?planned.effect.task, error = %e, "the answer was refused");
            }
        }
        self.decided().remove(&planned.id);
        Ok(())
    }

    async fn reply(
        &self,
        planned: &Planned<Work>,
        conversation_id: Uuid,
        message_id: Uuid,
    ) -> Result<(), EffectError> {
        let tenant = planned.tenant_id.as_str();
        let loaded = read::load(self.service.reader(), conversation_id)
            .await
            .map_err(|e| EffectError::Unavailable(format!("reading the conversation: {e}")))?;
        let state = &loaded.state;
        let pending = state.assistant
            && state.status == Status::Open
            && state.tenant_id == tenant
            && state.awaiting.get(&message_id) == Some(&Reply::Pending);
        if !pending {
            tracing::debug!(%conversation_id, %message_id, "nothing to answer");
            self.decided().remove(&planned.id);
            return Ok(());
        }
        let decided = self
            .decided_once(planned, || {
                self.decide(tenant, conversation_id, &loaded, message_id)
            })
            .await;
        let meta = self.meta(planned);
        let outcome = match decided {
            Decided::Reply(message) => {
                self.service
                    .send_message(conversation_id, message, None, &meta)
                    .await
            }
            Decided::Fail { reason, attempts } => {
                self.service
                    .fail_reply(
                        conversation_id,
                        message_id,
                        (reason, attempts),
                        planned.effect.asked_by.clone(),
                        &meta,
                    )
                    .await
            }
            Decided::Document(_) => return Ok(()),
        };
        self.appended(planned, outcome)
    }

    async fn document(
        &self,
        planned: &Planned<Work>,
        document_id: Uuid,
    ) -> Result<(), EffectError> {
        let tenant = planned.tenant_id.as_str();
        let state = read::document(self.service.reader(), document_id)
            .await
            .map_err(|e| EffectError::Unavailable(format!("reading the document: {e}")))?;
        let (Some(conversation_id), Some((kind, _))) = (state.conversation_id, state.requested)
        else {
            self.decided().remove(&planned.id);
            return Ok(());
        };
        if state.status != DocumentStatus::Requested || state.tenant_id != tenant {
            self.decided().remove(&planned.id);
            return Ok(());
        }
        let meta = self.meta(planned);
        let decided = self
            .decided_once(planned, || async {
                let transcript = match self.service.transcript(conversation_id, &meta).await {
                    Ok(t) => t,
                    Err(e) => {
                        return Decided::Fail {
                            reason: format!("the conversation cannot be read: {e}"),
                            attempts: 0,
                        };
                    }
                };
                let request = documents::request(kind, &transcript);
                match self.router.route("document", tenant, &request).await {
                    Ok(routed) if !routed.completion.text.trim().is_empty() => {
                        Decided::Document(documents::written(kind, &transcript, &routed.completion))
                    }
                    Ok(routed) => Decided::Fail {
                        reason: format!("{} wrote nothing", routed.completion.provider),
                        attempts: routed.attempts.len() as i32,
                    },
                    Err(e) => {
                        tracing::warn!(
                            document = %documents::describe(document_id, kind),
                            error = %e,
                            "no document"
                        );
                        Decided::Fail {
                            reason: truncate(&e.to_string(), 900),
                            attempts: attempts_of(&e),
                        }
                    }
                }
            })
            .await;
        let outcome = match decided {
            Decided::Document(w) => {
                self.service
                    .complete_document(document_id, w.source_message_count, w.document, &meta)
                    .await
            }
            Decided::Fail { reason, attempts } => {
                self.service
                    .fail_document(document_id, reason, attempts, &meta)
                    .await
            }
            Decided::Reply(_) => return Ok(()),
        };
        self.appended(planned, outcome)
    }

    /// Retrieval, prompt, model: the reply, or why there is none.
    async fn decide(
        &self,
        tenant: &str,
        conversation_id: Uuid,
        loaded: &read::Loaded,
        message_id: Uuid,
    ) -> Decided {
        let Some(position) = loaded.messages.iter().position(|m| m.id == message_id) else {
            return Decided::Fail {
                reason: "the message is not in the conversation's history".into(),
                attempts: 0,
            };
        };
        let question = loaded.messages[position].said.content.clone();
        let history: Vec<prompt::Said> = loaded.messages[..position]
            .iter()
            .map(|m| m.said.clone())
            .collect();
        let (context, sources) = self
            .retrieve(
                tenant,
                loaded.state.started_by.as_deref(),
                &question,
                message_id,
            )
            .await;
        let request =
            prompt::reply_request(&question, &history, context, self.settings.history_tokens);
        let routed = match &self.deltas {
            None => self.router.route("reply", tenant, &request).await,
            Some(publisher) => {
                let pieces = publisher.reply(tenant, conversation_id, message_id);
                let sink = |attempt: u32, text: &str| pieces.send(attempt, text);
                let routed = self
                    .router
                    .route_streaming("reply", tenant, &request, &sink)
                    .await;
                // The last piece is out before the reply is committed: a live stream shows
                // every piece before the message they make.
                publisher.flush().await;
                routed
            }
        };
        match routed {
            Ok(routed) => {
                let c = routed.completion;
                let text = c.text.trim();
                if text.is_empty() {
                    return Decided::Fail {
                        reason: format!("{} answered nothing", c.provider),
                        attempts: routed.attempts.len() as i32,
                    };
                }
                Decided::Reply(NewMessage {
                    model: Some(truncate(&c.model, domain::MODEL_MAX)),
                    prompt_tokens: Some(c.usage.prompt_tokens.min(i32::MAX as u32) as i32),
                    completion_tokens: Some(c.usage.completion_tokens.min(i32::MAX as u32) as i32),
                    reply_to: Some(message_id),
                    latency_ms: Some(c.latency.as_millis().min(i64::MAX as u128) as i64),
                    sources,
                    ..NewMessage::new(Role::Assistant, truncate(text, domain::CONTENT_MAX))
                })
            }
            Err(e) => {
                let attempts = attempts_of(&e);
                tracing::warn!(tenant, %message_id, error = %e, "no reply");
                Decided::Fail {
                    reason: truncate(&e.to_string(), 900),
                    attempts,
                }
            }
        }
    }

    /// The passages the viewer who started the conversation may see, best first; none
    /// when search cannot answer (the reply is then written without context).
    async fn retrieve(
        &self,
        tenant: &str,
        started_by: Option<&str>,
        question: &str,
        message_id: Uuid,
    ) -> (Vec<ContextItem>, Vec<MessageSource>) {
        let request = SearchRequest {
            // What the person asking may see: their conversations and the knowledge base.
            scope: Scope::new(tenant, started_by.unwrap_or(""), Reach::Own),
            text: question,
            kinds: &SourceKind::ALL,
            conversation_id: None,
            // The question itself is likely the best hit: ask for one more.
            limit: self.settings.context_k + 1,
            min_score: Some(self.settings.min_score),
        };
        let hits = match self.search.search(&request).await {
            Ok(found) => found.hits,
            Err(e) => {
                tracing::warn!(tenant, error = %e, "retrieval failed: replying without context");
                Vec::new()
            }
        };
        let mut context = Vec::new();
        let mut sources: Vec<MessageSource> = Vec::new();
        for hit in hits
            .into_iter()
            .filter(|h| h.payload.source_id != message_id)
            .take(self.settings.context_k)
        {
            let p = hit.payload;
            if !sources.iter().any(|s| s.id == p.source_id) {
                sources.push(MessageSource {
                    kind: p.source_kind.as_str().to_owned(),
                    id: p.source_id,
                    title: truncate(&p.title, domain::TITLE_MAX),
                    score: hit.score.clamp(-1.0, 1.0),
                });
            }
            context.push(ContextItem {
                source_id: p.source_id,
                title: p.title,
                text: p.text,
                score: hit.score,
            });
        }
        (context, sources)
    }
}

/// Live business metrics of what the assistant appended (the analytics projection keeps
/// the exact counts): `assistant_answers_total{task, outcome}` and
/// `llm_tokens_total{model, type}`.
fn count(event: &Event) {
    let (task, outcome, model, prompt, completion) = match event {
        Event::MessageSent(m) => (
            "reply",
            "answered",
            m.model.clone(),
            m.prompt_tokens,
            m.completion_tokens,
        ),
        Event::AssistantReplyFailed(_) => ("reply", "failed", None, None, None),
        Event::DocumentGenerated(d) => (
            "document",
            "answered",
            Some(d.generator.name.clone()),
            d.prompt_tokens,
            d.completion_tokens,
        ),
        Event::DocumentGenerationFailed(_) => ("document", "failed", None, None, None),
        _ => return,
    };
    metrics::counter!("assistant_answers_total", "task" => task, "outcome" => outcome).increment(1);
    let model = model.unwrap_or_default();
    for (kind, n) in [("prompt", prompt), ("completion", completion)] {
        if let Some(n) = n {
            metrics::counter!("llm_tokens_total", "model" => model.clone(), "type" => kind)
                .increment(n.max(0) as u64);
        }
    }
}

/// Provider calls a failed route made (open breakers and paused providers made none).
fn attempts_of(e: &RouteError) -> i32 {
    match e {
        RouteError::AllFailed { attempts, .. } => {
            attempts.iter().filter(|a| a.outcome.called()).count() as i32
        }
        _ => 0,
    }
}

/// At most `max` characters, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

#[async_trait::async_trait]
impl EffectProjection for Assistant {
    type Effect = Work;

    fn name(&self) -> &'static str {
        NAME
    }

    fn plan(&self, e: &Envelope) -> Vec<Work> {
        let task = match &e.event {
            Event::MessageSent(m) if m.role == Role::User => Task::Reply {
                conversation_id: m.conversation_id,
                message_id: m.message_id,
            },
            Event::AssistantReplyRequested(r) => Task::Reply {
                conversation_id: r.conversation_id,
                message_id: r.message_id,
            },
            Event::DocumentRequested(d) => Task::Document {
                document_id: d.document_id,
            },
            _ => return Vec::new(),
        };
        vec![Work {
            task,
            asked_by: e.user_id.clone(),
            correlation_id: e.correlation_id.clone(),
            traceparent: e.traceparent.clone(),
        }]
    }

    async fn perform(
        &self,
        _schema: &str,
        effects: &[Planned<Work>],
        pass: Pass,
    ) -> Result<(), EffectError> {
        // History: those messages were answered (or not) long ago.
        if pass == Pass::Rebuild {
            return Ok(());
        }
        for planned in effects {
            match planned.effect.task {
                Task::Reply {
                    conversation_id,
                    message_id,
                } => self.reply(planned, conversation_id, message_id).await?,
                Task::Document { document_id } => self.document(planned, document_id).await?,
            }
        }
        Ok(())
    }
}
