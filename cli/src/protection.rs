//! Data protection from the command line: `verify` (the tenant's audit chain, query-api's
//! `/v1/audit/verify`, resumed until it is checked to its end), `erase` (a person, a
//! conversation or the tenant, command-api's `/v1/admin/.../erase`), `export` (what is
//! held about a subject, query-api's `/v1/subjects/{subject}/export`) and `retention`
//! (command-api's `/v1/admin/retention`). docs/DATA-PROTECTION.md says what each does.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::Output;
use crate::api::{Api, Apis, Client, Failure, run_key};
use crate::progress;

/// Times a verification is resumed after a failure before giving up.
const RETRIES: u32 = 5;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Start after this link (the `through` an interrupted run printed); default: the
    /// chain's first link.
    #[arg(long, default_value_t = 0)]
    after: i64,
}

/// Reads `response` line by line, handing each complete line to `line`; stops when it
/// says so (`Some`), or at the end of the body (`None`: the stream ended without a
/// trailer, or the connection was lost: the second value says which).
async fn lines<T>(
    mut response: reqwest::Response,
    mut line: impl FnMut(&[u8]) -> Result<Option<T>, Failure>,
) -> Result<Result<T, String>, Failure> {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(Err("the stream ended without its trailer".into())),
            Err(e) => return Ok(Err(format!("the connection was lost: {e}"))),
        };
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(newline) = pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + newline;
            if let Some(done) = line(&pending[start..end])? {
                return Ok(Ok(done));
            }
            start = end + 1;
        }
        pending.drain(..start);
    }
}

/// How one verification request ended.
enum Verified {
    /// Every link holds (its `end` line).
    End(Value),
    /// The first link that does not (its `broken` line).
    Broken(Value),
    /// An `error` line: resume after its `through` (at once after a time limit).
    Cut { detail: String, time_limit: bool },
}

pub async fn verify(apis: &Apis, args: VerifyArgs, out: Output) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    let bar = progress::counter("links");
    let (mut after, mut checked, mut heads) = (args.after, 0u64, 0u64);
    let mut failures = 0;
    let outcome = loop {
        let path = format!("/v1/audit/verify?after={after}");
        // Progress of this request (its counts start again at each request).
        let (mut now_checked, mut now_through) = (0u64, after);
        let read = match client.get(Api::Queries, &path, false).await {
            Ok(response) => {
                lines(response, |line| {
                    let v: Value = serde_json::from_slice(line).map_err(|e| {
                        Failure::Other(format!("a line of the verification does not parse: {e}"))
                    })?;
                    let part = |key: &str| v.get(key).cloned();
                    let counts = |p: &Value| {
                        (
                            p["checked"].as_u64().unwrap_or(0),
                            p["through"].as_i64().unwrap_or(after),
                        )
                    };
                    if let Some(p) = part("progress") {
                        (now_checked, now_through) = counts(&p);
                        bar.set_position(checked + now_checked);
                        return Ok(None);
                    }
                    if let Some(end) = part("end") {
                        return Ok(Some(Verified::End(end)));
                    }
                    if let Some(broken) = part("broken") {
                        return Ok(Some(Verified::Broken(broken)));
                    }
                    let error = part("error").unwrap_or_default();
                    (now_checked, now_through) = counts(&error);
                    Ok(Some(Verified::Cut {
                        detail: error["detail"].as_str().unwrap_or("no detail").to_owned(),
                        time_limit: error["code"] == "stream_time_limit",
                    }))
                })
                .await?
            }
            Err(Failure::Unavailable(why)) => Err(why),
            Err(e) => return Err(e),
        };
        let read = read.unwrap_or_else(|detail| Verified::Cut {
            detail,
            time_limit: false,
        });
        match read {
            Verified::End(end) => break Ok(end),
            Verified::Broken(broken) => break Err(broken),
            Verified::Cut { detail, time_limit } => {
                checked += now_checked;
                after = now_through;
                if time_limit && now_checked > 0 {
                    failures = 0;
                    continue;
                }
                failures += 1;
                if failures > RETRIES {
                    bar.finish_and_clear();
                    return Err(Failure::Unavailable(format!(
                        "{detail}; {checked} links checked, resume with --after {after}"
                    )));
                }
                bar.set_message(format!("resuming: {detail}"));
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
        }
    };
    bar.finish_and_clear();
    match outcome {
        Ok(end) => {
            heads += end["heads_matched"].as_u64().unwrap_or(0);
            let total = checked + end["checked"].as_u64().unwrap_or(0);
            let report = json!({
                "verified": true,
                "checked": total,
                "through": end["through"],
                "link": end["link"],
                "heads_matched": heads,
            });
            out.print(&report, || {
                format!(
                    "the audit chain holds: {total} links checked through link {}, {heads} recorded heads matched; last link {}\n",
                    end["through"],
                    end["link"].as_str().unwrap_or("?")
                )
            });
            Ok(())
        }
        Err(broken) => {
            let report = json!({"verified": false, "broken": broken});
            out.print(&report, || {
                format!(
                    "BROKEN at link {}: {} ({}/{} sequence {}, event {})\n",
                    broken["n"],
                    broken["reason"].as_str().unwrap_or("?"),
                    broken["aggregate_type"].as_str().unwrap_or("?"),
                    broken["aggregate_id"].as_str().unwrap_or("?"),
                    broken["sequence"],
                    broken["event_id"].as_str().unwrap_or("?")
                )
            });
            Err(Failure::Broken)
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum EraseArgs {
    /// A person: everything they wrote or own (SUB is their token's `sub`).
    Person {
        sub: String,
        /// Why (kept in the erasure's audit event).
        #[arg(long)]
        reason: String,
    },
    /// One conversation's data: its messages and the documents made from it.
    Conversation {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// The whole tenant of the token (offboarding): everyone's data.
    Tenant {
        #[arg(long)]
        reason: String,
        /// Yes, the whole tenant (required).
        #[arg(long, required = true)]
        yes: bool,
    },
}

pub async fn erase(apis: &Apis, args: EraseArgs, out: Output) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    let (path, reason) = match args {
        EraseArgs::Person { sub, reason } => {
            (format!("/v1/admin/subjects/user:{sub}/erase"), reason)
        }
        EraseArgs::Conversation { id, reason } => (
            format!("/v1/admin/subjects/conversation:{id}/erase"),
            reason,
        ),
        EraseArgs::Tenant { reason, .. } => ("/v1/admin/tenant/erase".to_owned(), reason),
    };
    let erased = client
        .post_json(Api::Commands, &path, &json!({"reason": reason}), &run_key())
        .await?;
    out.print(&erased, || {
        let conversations = erased["conversation_ids"].as_array().map_or(0, Vec::len);
        format!(
            "erased {}: {} keys destroyed, {conversations} conversations, {} snapshots and {} blobs deleted; projections: {}\n",
            erased["subject"].as_str().unwrap_or("?"),
            erased["keys_erased"],
            erased["snapshots_deleted"],
            erased["blobs_deleted"],
            erased["projections"]
                .as_array()
                .map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        )
    });
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// `user:<sub>` (a person) or `conversation:<uuid>`; a bare `<sub>` is a person.
    subject: String,
    /// Write the archive to FILE instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub async fn export(apis: &Apis, args: ExportArgs) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    let subject = if args.subject.contains(':') {
        args.subject.clone()
    } else {
        format!("user:{}", args.subject)
    };
    let mut out: Box<dyn AsyncWrite + Unpin> = match &args.output {
        None => Box::new(tokio::io::stdout()),
        Some(path) => Box::new(
            tokio::fs::File::create(path)
                .await
                .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?,
        ),
    };
    let response = client
        .get(
            Api::Queries,
            &format!("/v1/subjects/{subject}/export"),
            false,
        )
        .await?;
    let bar = progress::counter("events");
    let mut written: Vec<u8> = Vec::new();
    let mut events = 0u64;
    let ended = lines(response, |line| {
        written.extend_from_slice(line);
        written.push(b'\n');
        if line.starts_with(b"{\"event_id\"") {
            events += 1;
            bar.set_position(events);
        }
        // The archive is complete with its `end` trailer; an `error` one cuts it.
        Ok(if line.starts_with(b"{\"end\"") {
            Some(Ok(()))
        } else if line.starts_with(b"{\"error\"") {
            Some(Err(String::from_utf8_lossy(line).into_owned()))
        } else {
            None
        })
    })
    .await?;
    bar.finish_and_clear();
    out.write_all(&written).await.map_err(Failure::other)?;
    out.flush().await.map_err(Failure::other)?;
    match ended {
        Ok(Ok(())) => {
            eprintln!("exported {events} events of {subject}");
            Ok(())
        }
        Ok(Err(why)) | Err(why) => Err(Failure::Unavailable(format!(
            "the export of {subject} was cut ({why}); run it again"
        ))),
    }
}

#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Erase conversations ended more than DAYS days ago, from now on.
    #[arg(long, conflicts_with = "off")]
    days: Option<u32>,
    /// Keep conversations for ever (no policy).
    #[arg(long)]
    off: bool,
}

pub async fn retention(apis: &Apis, args: RetentionArgs, out: Output) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    let view: Value = match (args.days, args.off) {
        (None, false) => {
            client
                .get_json(Api::Commands, "/v1/admin/retention")
                .await?
        }
        (days, _) => {
            client
                .send_json(
                    reqwest::Method::PUT,
                    Api::Commands,
                    "/v1/admin/retention",
                    &json!({"conversations_ended_days": days}),
                    &run_key(),
                )
                .await?
        }
    };
    out.print(&view, || {
        let policy = match view["conversations_ended_days"].as_u64() {
            Some(days) => format!("conversations ended more than {days} days ago are erased"),
            None => "no retention policy: conversations are kept".to_owned(),
        };
        let applied = view["last_applied_at"]
            .as_str()
            .map(|t| format!("; last applied {t}"))
            .unwrap_or_default();
        format!(
            "{policy}{applied}; {} erased by it in all\n",
            view["erased_total"]
        )
    });
    Ok(())
}
