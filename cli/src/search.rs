//! `threadline search`: query-api's `/v1/search`, the hits with their scores and sources.

use serde_json::Value;

use crate::Output;
use crate::api::{Api, Apis, Client, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to look for, in words.
    query: String,
    /// `messages`, `documents`, `knowledge` or `all`.
    #[arg(long, default_value = "all")]
    scope: String,
    /// How many hits at most (1-50).
    #[arg(long, default_value_t = 10)]
    limit: u32,
}

pub async fn run(apis: &Apis, args: Args, out: Output) -> Result<(), Failure> {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &args.query)
        .append_pair("scope", &args.scope)
        .append_pair("limit", &args.limit.to_string())
        .finish();
    let results: Value = Client::new(apis)?
        .get_json(Api::Queries, &format!("/v1/search?{query}"))
        .await?;
    out.print(&results, || text(&results));
    Ok(())
}

fn text(results: &Value) -> String {
    let hits = results["items"].as_array().cloned().unwrap_or_default();
    if hits.is_empty() {
        return "no hits\n".to_owned();
    }
    let mut lines = String::new();
    for hit in &hits {
        let source = &hit["source"];
        lines.push_str(&format!(
            "{:.3}  {} {}  {}\n       {}\n",
            hit["score"].as_f64().unwrap_or(0.0),
            source["kind"].as_str().unwrap_or("?"),
            source["id"].as_str().unwrap_or("?"),
            hit["title"].as_str().unwrap_or(""),
            hit["snippet"].as_str().unwrap_or("").replace('\n', " ")
        ));
    }
    lines
}
