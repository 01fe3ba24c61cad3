//! read-model-projector: keeps the conversations/messages/documents read model.
//!
//!     read-model-projector            consume until SIGTERM/Ctrl-C
//!     read-model-projector redrive    apply parked events in order, then exit
//!     read-model-projector rebuild    replay the event store into a new generation, switch, exit

use projection::TableSink;
use read_model::ReadModel;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    projector_runtime::service::main("read-model-projector", TableSink(ReadModel)).await?;
    Ok(())
}
