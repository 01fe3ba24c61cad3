//! `threadline status`: the relay (command-api's `/v1/admin/relay`, an admin token) and
//! each projector (its health address's `/status`, no token), and what needs attention.

use serde_json::{Value, json};

use crate::Output;
use crate::api::{Api, Apis, Client, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Each projector as NAME=URL of its health address, comma-separated (`dev/stack run`
    /// writes them to `.stack/<name>/threadline.env`).
    #[arg(
        long = "projector",
        env = "THREADLINE_PROJECTORS",
        value_delimiter = ',',
        value_parser = named_url
    )]
    projectors: Vec<(String, String)>,
}

fn named_url(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, url)) if !name.trim().is_empty() && !url.trim().is_empty() => {
            Ok((name.trim().to_owned(), url.trim().to_owned()))
        }
        _ => Err(format!("{text:?}: use NAME=URL")),
    }
}

/// One component's line of the report.
struct Part {
    name: String,
    /// What it reported, or why it could not be asked.
    reported: Result<Value, String>,
    /// Reasons it needs attention.
    attention: Vec<String>,
}

impl Part {
    fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "ok": self.attention.is_empty(), "attention": self.attention});
        match &self.reported {
            Ok(status) => v["status"] = status.clone(),
            Err(error) => v["error"] = json!(error),
        }
        v
    }
}

fn number(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or(0.0)
}

fn relay_attention(s: &Value) -> Vec<String> {
    let mut why = Vec::new();
    if s["stuck"] == true {
        why.push(format!(
            "stuck since {}: {}",
            s["failing_since"].as_str().unwrap_or("?"),
            s["last_error"].as_str().unwrap_or("?")
        ));
    }
    if number(s, "parked") > 0.0 {
        why.push(format!("{} events parked", s["parked"]));
    }
    if s["active"] != true && s["standby"] != true {
        why.push("neither publishing nor standing by".to_owned());
    }
    why
}

fn projector_attention(s: &Value) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(outage) = s["waiting_on"].as_str() {
        why.push(format!("waiting on an outage: {outage}"));
    }
    if number(s, "parked") > 0.0 {
        why.push(format!("{} events parked since it started", s["parked"]));
    }
    if number(s, "dead_lettered") > 0.0 {
        why.push(format!("{} events dead-lettered", s["dead_lettered"]));
    }
    why
}

pub async fn run(apis: &Apis, args: Args, out: Output) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    let mut parts = Vec::new();
    let relay = client
        .get_json::<Value>(Api::Commands, "/v1/admin/relay")
        .await;
    parts.push(match relay {
        Ok(s) => Part {
            name: "relay".to_owned(),
            attention: relay_attention(&s),
            reported: Ok(s),
        },
        // A token the API refuses is the caller's to fix: say so rather than report.
        Err(Failure::Refused(e)) => return Err(Failure::Refused(e)),
        Err(e) => Part {
            name: "relay".to_owned(),
            attention: vec!["unreachable".to_owned()],
            reported: Err(e.to_string()),
        },
    });
    for (name, url) in args.projectors {
        let status = format!("{}/status", url.trim_end_matches('/'));
        parts.push(match client.get_open_json::<Value>(&status).await {
            Ok(s) => Part {
                name,
                attention: projector_attention(&s),
                reported: Ok(s),
            },
            Err(e) => Part {
                name,
                attention: vec!["unreachable".to_owned()],
                reported: Err(e.to_string()),
            },
        });
    }
    let healthy = parts.iter().all(|p| p.attention.is_empty());
    let report = json!({
        "healthy": healthy,
        "relay": parts[0].to_json(),
        "projectors": parts[1..].iter().map(Part::to_json).collect::<Vec<_>>(),
    });
    out.print(&report, || text(&parts));
    if healthy {
        Ok(())
    } else {
        Err(Failure::Attention)
    }
}

fn text(parts: &[Part]) -> String {
    let width = parts.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let mut lines = String::new();
    for part in parts {
        let summary = match &part.reported {
            Err(e) => e.clone(),
            Ok(s) if part.name == "relay" => format!(
                "{} published {}  lag {} events ({:.1} s)  parked {}",
                if s["active"] == true {
                    "active"
                } else {
                    "standby"
                },
                s["published"],
                s["lag_events"],
                number(s, "lag_seconds"),
                s["parked"]
            ),
            Ok(s) => format!(
                "generation {}  applied {}  lag {} events ({:.1} s)  in flight {}  waiting {}  parked {}  partitions {}",
                s["generation"],
                s["applied"],
                s["lag_events"],
                number(s, "lag_seconds"),
                s["load"]["records_in_flight"],
                s["load"]["waiting"],
                s["parked"],
                s["assigned_partitions"]
            ),
        };
        let flag = if part.attention.is_empty() {
            "ok  "
        } else {
            "ATTN"
        };
        lines.push_str(&format!("{flag} {:width$}  {summary}\n", part.name));
        for why in &part.attention {
            lines.push_str(&format!("     {:width$}  ! {why}\n", ""));
        }
    }
    lines
}
