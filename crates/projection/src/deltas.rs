//! Reply deltas: the pieces of an answer while a model is still writing it, from the
//! process that calls the model to every process serving the conversation's live stream.
//!
//! They travel on PostgreSQL's `NOTIFY` (channel [`CHANNEL`]): every process of the
//! stack already talks to the database, query-api already listens on it for commit
//! announcements ([`crate::progress::Announcements`], which also receives these), and a
//! notification reaches every listener of the database within milliseconds, whichever
//! replica called the model and whichever serves the stream. The [`Publisher`] gathers
//! the deltas of every reply of its process for a few milliseconds into one notification
//! (payloads stay under PostgreSQL's 8,000 bytes), so many replies at once cost tens of
//! notifications a second, not one per piece.
//!
//! Deltas are ephemeral: never stored as events, never replayed, lost when nobody
//! listens; the reply's `MessageSent` stays the one truth, and a client that reconnects
//! gets it from the event stream.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The notification channel of reply deltas (the payload: a JSON array of [`Delta`]).
pub const CHANNEL: &str = "threadline_reply_deltas";

/// How long the publisher gathers deltas after the first before it notifies.
const GATHER: Duration = Duration::from_millis(15);

/// The largest payload sent (PostgreSQL refuses 8,000 bytes and more).
const MAX_PAYLOAD: usize = 7_500;

/// The longest text of one delta; a longer piece is sent as several.
const MAX_TEXT: usize = 1_500;

/// Deltas waiting to be published, at most; more are dropped (they are a preview).
const QUEUE: usize = 10_000;

/// One piece of a reply being written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub tenant_id: String,
    pub conversation_id: Uuid,
    /// The user message the reply answers.
    pub reply_to: Uuid,
    /// The model call the piece comes from: a retry or a fallback starts a new attempt,
    /// whose pieces replace the earlier attempts'.
    pub attempt: u32,
    /// The piece's place in its attempt, from 0.
    pub seq: u32,
    pub text: String,
}

/// What the publishing task is given: a delta, or a request to publish what it holds now.
#[derive(Debug)]
enum Queued {
    Delta(Delta),
    /// Publish everything queued before this, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Sends this process's deltas, gathered into few notifications.
#[derive(Clone, Debug)]
pub struct Publisher {
    queue: mpsc::Sender<Queued>,
}

impl Publisher {
    /// Starts the task that publishes on `pool` until every clone is dropped.
    pub fn start(pool: PgPool) -> Publisher {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish(pool, rx));
        Publisher { queue }
    }

    /// Queues `delta` (dropped when the queue is full: a preview may lose pieces, the
    /// final message never does).
    fn send(&self, delta: Delta) {
        if self.queue.try_send(Queued::Delta(delta)).is_err() {
            tracing::debug!("reply delta dropped: the publisher is behind");
        }
    }

    /// Returns once every delta queued before the call is published (or dropped), so a
    /// reply committed afterwards reaches listeners after its last piece: notifications
    /// arrive in commit order.
    pub async fn flush(&self) {
        let (done, flushed) = tokio::sync::oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// The deltas of one reply being written: to the user message `reply_to` of
    /// `conversation_id`.
    pub fn reply<'a>(
        &'a self,
        tenant: &'a str,
        conversation_id: Uuid,
        reply_to: Uuid,
    ) -> Reply<'a> {
        Reply {
            publisher: self,
            tenant,
            conversation_id,
            reply_to,
            next: Mutex::new((0, 0)),
        }
    }
}

/// One reply's pieces as deltas: numbered from 0 within each attempt, a long one cut.
pub struct Reply<'a> {
    publisher: &'a Publisher,
    tenant: &'a str,
    conversation_id: Uuid,
    reply_to: Uuid,
    /// The attempt of the last piece and the next piece's number in it.
    next: Mutex<(u32, u32)>,
}

impl Reply<'_> {
    /// Publishes `text`, a piece of attempt `attempt`.
    pub fn send(&self, attempt: u32, text: &str) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if next.0 != attempt {
            *next = (attempt, 0);
        }
        for piece in pieces(text) {
            self.publisher.send(Delta {
                tenant_id: self.tenant.to_owned(),
                conversation_id: self.conversation_id,
                reply_to: self.reply_to,
                attempt,
                seq: next.1,
                text: piece.to_owned(),
            });
            next.1 += 1;
        }
    }
}

async fn publish(pool: PgPool, mut rx: mpsc::Receiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut gathered = Vec::new();
        let mut flushes = Vec::new();
        match first {
            Queued::Delta(delta) => gathered.push(delta),
            Queued::Flush(done) => flushes.push(done),
        }
        let until = tokio::time::Instant::now() + GATHER;
        // Gathers for a few milliseconds, unless someone waits for what is gathered.
        while flushes.is_empty() {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(Queued::Delta(delta))) => gathered.push(delta),
                Ok(Some(Queued::Flush(done))) => flushes.push(done),
                Ok(None) | Err(_) => break,
            }
        }
        for payload in payloads(&gathered) {
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "reply deltas not published");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// JSON arrays of `deltas`, in order, each under [`MAX_PAYLOAD`] bytes.
fn payloads(deltas: &[Delta]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = 2;
    for delta in deltas {
        let Ok(json) = serde_json::to_string(delta) else {
            continue;
        };
        if json.len() + 3 > MAX_PAYLOAD {
            tracing::debug!(len = json.len(), "reply delta too large to notify; dropped");
            continue;
        }
        if size + json.len() + 1 > MAX_PAYLOAD {
            out.push(format!("[{}]", current.join(",")));
            current.clear();
            size = 2;
        }
        size += json.len() + 1;
        current.push(json);
    }
    if !current.is_empty() {
        out.push(format!("[{}]", current.join(",")));
    }
    out
}

/// The deltas a notification's payload carries (none when it is not ours).
pub fn parse(payload: &str) -> Vec<Delta> {
    serde_json::from_str(payload).unwrap_or_default()
}

/// `text` cut into pieces of at most [`MAX_TEXT`] characters (one piece when it fits).
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.chars().count() > MAX_TEXT {
        let (cut, _) = rest
            .char_indices()
            .nth(MAX_TEXT)
            .unwrap_or((rest.len(), ' '));
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(seq: u32, text: &str) -> Delta {
        Delta {
            tenant_id: "acme".into(),
            conversation_id: Uuid::nil(),
            reply_to: Uuid::nil(),
            attempt: 0,
            seq,
            text: text.into(),
        }
    }

    #[test]
    fn payloads_stay_under_the_limit_and_keep_the_order() {
        let deltas: Vec<Delta> = (0..50).map(|i| delta(i, &"x".repeat(700))).collect();
        let payloads = payloads(&deltas);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < MAX_PAYLOAD));
        let back: Vec<Delta> = payloads.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(back, deltas);
    }

    #[test]
    fn long_text_is_cut_into_pieces_that_join_up_again() {
        let text = "é".repeat(MAX_TEXT * 2 + 3);
        let pieces = pieces(&text);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_TEXT));
        assert_eq!(pieces.concat(), text);
        assert_eq!(super::pieces("short"), vec!["short"]);
    }
}
