//! `threadline status`: the relay (command-api's `/v1/admin/relay`, an admin token) and
//! each projector (its health address's `/status`, no token), and what needs attention.

use ops_report::{Component, Report, named_url};
use serde_json::Value;

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

pub async fn run(apis: &Apis, args: Args, out: Output) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    let relay = match client
        .get_json::<Value>(Api::Commands, "/v1/admin/relay")
        .await
    {
        Ok(s) => Component::relay(s),
        // A token the API refuses is the caller's to fix: say so rather than report.
        Err(Failure::Refused(e)) => return Err(Failure::Refused(e)),
        Err(e) => Component::unreachable("relay", e.to_string()),
    };
    let mut projectors = Vec::new();
    for (name, url) in args.projectors {
        let status = format!("{url}/status");
        projectors.push(match client.get_open_json::<Value>(&status).await {
            Ok(s) => Component::projector(&name, s),
            Err(e) => Component::unreachable(&name, e.to_string()),
        });
    }
    let report = Report { relay, projectors };
    out.print(&report.to_json(), || text(&report));
    if report.healthy() {
        Ok(())
    } else {
        Err(Failure::Attention)
    }
}

fn number(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or(0.0)
}

fn text(report: &Report) -> String {
    let parts: Vec<&Component> = std::iter::once(&report.relay)
        .chain(&report.projectors)
        .collect();
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
                if s["parked_now"].is_u64() {
                    &s["parked_now"]
                } else {
                    &s["parked"]
                },
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
