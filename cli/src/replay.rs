//! `threadline replay`: the tenant's events in committed order (query-api's
//! `/v1/audit/events`), or one aggregate's, as NDJSON on stdout or into a file. A stream
//! the API ends early (its time limit, a database failure) or a dropped connection is
//! resumed after the last event received, so the output is every event once, in order;
//! `--resume` continues a file a previous run left unfinished.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::api::{Api, Apis, Client, Failure};
use crate::progress;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One aggregate, as TYPE/ID (`conversation/<uuid>`), instead of the whole tenant.
    #[arg(long, value_parser = aggregate)]
    aggregate: Option<(String, String)>,
    /// Start after this position (`<tx_id>.<global_position>`, an event's `position`).
    #[arg(long, conflicts_with = "aggregate")]
    after: Option<String>,
    /// Stop at this position, inclusive: with `--after`, a range.
    #[arg(long, conflicts_with = "aggregate")]
    until: Option<String>,
    /// Only these event types, comma-separated (`MessageSent,ConversationStarted`).
    #[arg(long, conflicts_with = "aggregate")]
    types: Option<String>,
    /// Write the events to FILE instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Continue the file of `--output` after its last complete event (a line cut short
    /// by an interrupted run is dropped first).
    #[arg(long, requires = "output", conflicts_with_all = ["after", "aggregate"])]
    resume: bool,
}

fn aggregate(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((kind, id)) if !kind.is_empty() && !id.is_empty() => {
            Ok((kind.to_owned(), id.to_owned()))
        }
        _ => Err(format!("{text:?}: use TYPE/ID, e.g. conversation/<uuid>")),
    }
}

/// Times a tenant stream is resumed after a failure before giving up.
const RETRIES: u32 = 5;

pub async fn run(apis: &Apis, args: Args) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    let mut after = args.after.clone();
    let mut out: Box<dyn AsyncWrite + Unpin> = match &args.output {
        None => Box::new(tokio::io::stdout()),
        Some(path) if args.resume => {
            let (file, last) = reopen(path)
                .await
                .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
            after = last;
            Box::new(file)
        }
        Some(path) => Box::new(
            tokio::fs::File::create(path)
                .await
                .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?,
        ),
    };
    let bar = progress::counter("events");
    let mut count = 0u64;
    let mut failures = 0;
    let ended = loop {
        let path = match &args.aggregate {
            Some((kind, id)) => format!("/v1/audit/{kind}/{id}/events"),
            None => tenant_path(&[
                ("after", after.as_deref()),
                ("until", args.until.as_deref()),
                ("types", args.types.as_deref()),
            ]),
        };
        let before = count;
        let read = stream(&client, &path, &mut out, &bar, &mut count, &mut after).await?;
        let read = match read {
            // A limit reached with nothing read would be reached again and again.
            Read::TimeLimit if count == before => {
                Read::Cut("the stream reached its time limit before any event".into())
            }
            read => read,
        };
        match read {
            Read::End(end) => break end,
            Read::Cut(why) => {
                failures += 1;
                if args.aggregate.is_some() || failures > RETRIES {
                    bar.finish_and_clear();
                    return Err(Failure::Unavailable(format!(
                        "{why}; {count} events written{}",
                        after
                            .as_deref()
                            .map(|a| format!(", resume with --after {a}"))
                            .unwrap_or_default()
                    )));
                }
                bar.set_message(format!("resuming: {why}"));
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
            Read::TimeLimit => failures = 0,
        }
    };
    out.flush().await.map_err(Failure::other)?;
    bar.finish_and_clear();
    let summary = json!({"count": count, "last_position": after, "end": end_of(&ended)});
    eprintln!(
        "replayed {count} events{}",
        after
            .as_deref()
            .map(|a| format!(", last position {a}"))
            .unwrap_or_default()
    );
    if args.output.is_some() {
        println!("{summary}");
    }
    Ok(())
}

fn end_of(end: &Value) -> Value {
    end.get("end").cloned().unwrap_or(Value::Null)
}

/// What `threadline tail` takes.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Start after this position (default: events recorded from now on).
    #[arg(long)]
    after: Option<String>,
    /// Only these event types, comma-separated.
    #[arg(long)]
    types: Option<String>,
    /// How often to look for new events, in milliseconds.
    #[arg(long = "every-ms", default_value_t = 500)]
    every_ms: u64,
}

/// Follows the tenant's events as they are committed, as NDJSON on stdout, until stopped
/// (Ctrl-C). Each look is a replay after the last event seen; before the first, of the
/// events recorded since it started.
pub async fn tail(apis: &Apis, args: TailArgs) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut after = args.after;
    let mut out = tokio::io::stdout();
    let bar = indicatif::ProgressBar::hidden();
    let mut count = 0;
    let mut failures = 0u32;
    loop {
        let path = tenant_path(&[
            ("after", after.as_deref()),
            ("types", args.types.as_deref()),
            // Until the first event is seen: those recorded since it started.
            ("from_time", after.is_none().then_some(since.as_str())),
        ]);
        let read = stream(&client, &path, &mut out, &bar, &mut count, &mut after).await?;
        out.flush().await.map_err(Failure::other)?;
        let pause = match read {
            Read::End(_) => {
                failures = 0;
                args.every_ms
            }
            Read::TimeLimit => 0,
            Read::Cut(why) => {
                failures += 1;
                eprintln!("threadline: {why}; looking again");
                (args.every_ms * u64::from(failures)).min(10_000)
            }
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// The tenant's replay with those of `params` that are given.
fn tenant_path(params: &[(&str, Option<&str>)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
        .collect();
    if query.is_empty() {
        "/v1/audit/events".to_owned()
    } else {
        format!("/v1/audit/events?{}", query.join("&"))
    }
}

/// How one request's stream ended.
enum Read {
    /// Its `end` trailer: complete.
    End(Value),
    /// The API's time limit: resume at once.
    TimeLimit,
    /// An `error` trailer or a lost connection: resume after a pause.
    Cut(String),
}

/// Reads one stream to its end, writing its events and moving `after` past each.
async fn stream(
    client: &Client,
    path: &str,
    out: &mut (impl AsyncWrite + Unpin),
    bar: &indicatif::ProgressBar,
    count: &mut u64,
    after: &mut Option<String>,
) -> Result<Read, Failure> {
    let mut response = match client.get(Api::Queries, path, false).await {
        Ok(response) => response,
        Err(Failure::Unavailable(why)) => return Ok(Read::Cut(why)),
        Err(e) => return Err(e),
    };
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(Read::Cut("the stream ended without its trailer".into())),
            Err(e) => return Ok(Read::Cut(format!("the connection was lost: {e}"))),
        };
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(newline) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + newline + 1];
            start += newline + 1;
            if let Some(ended) = event_or_trailer(line, out, count, after).await? {
                return Ok(ended);
            }
        }
        pending.drain(..start);
        bar.set_position(*count);
    }
}

/// Writes `line` when it is an event; the stream's end when it is a trailer.
async fn event_or_trailer(
    line: &[u8],
    out: &mut (impl AsyncWrite + Unpin),
    count: &mut u64,
    after: &mut Option<String>,
) -> Result<Option<Read>, Failure> {
    // Events begin with their id; trailers with `end` or `error`.
    if line.starts_with(b"{\"event_id\"") {
        if let Some(position) = position_of(line) {
            *after = Some(position);
        }
        out.write_all(line).await.map_err(Failure::other)?;
        *count += 1;
        return Ok(None);
    }
    let trailer: Value = serde_json::from_slice(line)
        .map_err(|e| Failure::Other(format!("a line of the stream does not parse: {e}")))?;
    if trailer.get("end").is_some() {
        return Ok(Some(Read::End(trailer)));
    }
    let error = &trailer["error"];
    Ok(Some(if error["code"] == "stream_time_limit" {
        Read::TimeLimit
    } else {
        Read::Cut(format!(
            "the stream was cut: {}",
            error["detail"].as_str().unwrap_or("no detail")
        ))
    }))
}

/// The `position` of an event line, without parsing the rest of it.
fn position_of(line: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"position\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = line[at..].iter().position(|b| *b == b'"')?;
    String::from_utf8(line[at..at + end].to_vec()).ok()
}

/// Opens `path` to append after its last complete line, cutting an incomplete one off;
/// the position of that line's event.
async fn reopen(path: &PathBuf) -> std::io::Result<(tokio::fs::File, Option<String>)> {
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .await?;
    let len = file.metadata().await?.len();
    // The last event is within the file's tail (an event is at most a few hundred KiB).
    let tail = len.min(4 * 1024 * 1024);
    file.seek(SeekFrom::Start(len - tail)).await?;
    let mut bytes = Vec::with_capacity(tail as usize);
    file.read_to_end(&mut bytes).await?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let keep = len - tail + complete as u64;
    file.set_len(keep).await?;
    file.seek(SeekFrom::Start(keep)).await?;
    let last_line = bytes[..complete]
        .strip_suffix(b"\n")
        .and_then(|b| b.rsplit(|c| *c == b'\n').next());
    Ok((file, last_line.and_then(position_of)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_read_from_an_event_line() {
        let line = br#"{"event_id":"e","aggregate_type":"conversation","position":"1016.6","recorded_at":"x"}"#;
        assert_eq!(position_of(line).as_deref(), Some("1016.6"));
        assert_eq!(position_of(br#"{"end":{}}"#), None);
    }

    #[tokio::test]
    async fn a_file_cut_short_resumes_after_its_last_complete_event() {
        let dir = std::env::temp_dir().join(format!("threadline-resume-{}", std::process::id()));
        tokio::fs::create_dir_all(&dir).await.expect("dir");
        let path = dir.join("events.ndjson");
        let written = "{\"event_id\":\"a\",\"position\":\"5.1\"}\n{\"event_id\":\"b\",\"position\":\"5.2\"}\n{\"event_id\":\"c\",\"pos";
        tokio::fs::write(&path, written).await.expect("write");
        let (_file, after) = reopen(&path).await.expect("reopens");
        assert_eq!(after.as_deref(), Some("5.2"));
        let kept = tokio::fs::read_to_string(&path).await.expect("read");
        assert!(kept.ends_with("\"5.2\"}\n"), "{kept}");
        tokio::fs::remove_dir_all(&dir).await.expect("clean");
    }
}
