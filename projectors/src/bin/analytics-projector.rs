//! analytics-projector: per-tenant usage facts in hour buckets, for the analytics
//! endpoints of query-api.
//!
//!     analytics-projector            consume until SIGTERM/Ctrl-C
//!     analytics-projector redrive    apply parked events in order, then exit
//!     analytics-projector rebuild    recount everything from the event store into a new
//!                                    generation, switch reads to it, exit

use analytics::Analytics;
use projection::TableSink;
use projector_runtime::service::{Cli, NoSettings};

const NAME: &str = "analytics-projector";
const ABOUT: &str =
    "Keeps per-tenant usage facts in hour buckets, for the analytics endpoints of query-api.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::<NoSettings>::parse(NAME, ABOUT);
    projector_runtime::service::main(NAME, cli.command, cli.runtime, TableSink(Analytics)).await?;
    Ok(())
}
