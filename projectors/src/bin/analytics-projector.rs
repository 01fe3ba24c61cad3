//! analytics-projector: per-tenant usage facts in hour buckets, for the analytics
//! endpoints of query-api.
//!
//!     analytics-projector            consume until SIGTERM/Ctrl-C
//!     analytics-projector redrive    apply parked events in order, then exit
//!     analytics-projector rebuild    recount everything from the event store into a new
//!                                    generation, switch reads to it, exit

use analytics::Analytics;
use projection::TableSink;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    projector_runtime::service::main("analytics-projector", TableSink(Analytics)).await?;
    Ok(())
}
