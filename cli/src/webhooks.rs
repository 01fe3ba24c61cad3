//! `threadline webhooks`: the tenant's endpoints (query-api), an endpoint's delivery
//! ledger, and a redelivery (command-api). An admin or auditor token reads; an admin's
//! redelivers.

use serde_json::{Value, json};

use crate::Output;
use crate::api::{Api, Apis, Client, Failure};

#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// The tenant's endpoints: URL, event types, enabled, dead messages.
    List,
    /// An endpoint's messages, newest first.
    Messages {
        /// The endpoint's id.
        endpoint: String,
        /// Only messages in this state: `pending`, `paused`, `delivered`, `dead` or `dropped`.
        #[arg(long)]
        status: Option<String>,
        /// How many at most (1-100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Sends messages of an endpoint again: one by its id, or the dead ones of a time range.
    Redeliver {
        /// The endpoint's id.
        endpoint: String,
        /// The message (its `webhook-id`) to send again, whatever became of it.
        #[arg(long, conflicts_with_all = ["since", "until"], required_unless_present = "since")]
        message: Option<String>,
        /// The dead messages created from this time on (RFC 3339)...
        #[arg(long)]
        since: Option<String>,
        /// ...until this time (default: now).
        #[arg(long, requires = "since")]
        until: Option<String>,
    },
}

pub async fn run(apis: &Apis, args: Args, out: Output) -> Result<(), Failure> {
    let client = Client::new(apis)?;
    match args {
        Args::List => {
            let page: Value = client
                .get_json(Api::Queries, "/v1/webhooks/endpoints?limit=100")
                .await?;
            out.print(&page, || {
                let mut lines = String::new();
                for e in page["items"].as_array().into_iter().flatten() {
                    lines.push_str(&format!(
                        "{}  {}  {}  {}  dead {}\n",
                        e["endpoint_id"].as_str().unwrap_or("?"),
                        if e["enabled"] == true {
                            "enabled "
                        } else {
                            "disabled"
                        },
                        e["url"].as_str().unwrap_or("?"),
                        e["event_types"],
                        e["dead_messages"]
                    ));
                }
                if lines.is_empty() {
                    lines.push_str("no endpoints\n");
                }
                lines
            });
        }
        Args::Messages {
            endpoint,
            status,
            limit,
        } => {
            let status = status.map(|s| format!("&status={s}")).unwrap_or_default();
            let page: Value = client
                .get_json(
                    Api::Queries,
                    &format!("/v1/webhooks/endpoints/{endpoint}/messages?limit={limit}{status}"),
                )
                .await?;
            out.print(&page, || {
                let mut lines = String::new();
                for m in page["items"].as_array().into_iter().flatten() {
                    lines.push_str(&format!(
                        "{}  {:9}  {}  attempts {}  {}\n",
                        m["message_id"].as_str().unwrap_or("?"),
                        m["status"].as_str().unwrap_or("?"),
                        m["event_type"].as_str().unwrap_or("?"),
                        m["attempts"],
                        m["last_error"].as_str().unwrap_or("")
                    ));
                }
                if lines.is_empty() {
                    lines.push_str("no messages\n");
                }
                lines
            });
        }
        Args::Redeliver {
            endpoint,
            message,
            since,
            until,
        } => {
            let body = json!({"message_id": message, "since": since, "until": until});
            let key = crate::api::run_key();
            let accepted = client
                .post_json(
                    Api::Commands,
                    &format!("/v1/webhooks/endpoints/{endpoint}/redeliver"),
                    &body,
                    &key,
                )
                .await?;
            out.print(&accepted, || "redelivery requested\n".to_owned());
        }
    }
    Ok(())
}
