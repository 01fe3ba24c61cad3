//! read-model-projector: keeps the conversations/messages/documents read model.
//!
//!     read-model-projector            consume until SIGTERM/Ctrl-C
//!     read-model-projector redrive    apply parked events in order, then exit
//!     read-model-projector rebuild    replay the event store into a new generation, switch, exit
//!     read-model-projector --help     every setting, and the other commands

use projection::TableSink;
use projector_runtime::service::{Cli, NoSettings};
use read_model::ReadModel;

const NAME: &str = "read-model-projector";
const ABOUT: &str = "Keeps the conversations, messages and documents read model.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::<NoSettings>::parse(NAME, ABOUT);
    projector_runtime::service::main(NAME, cli.command, cli.runtime, TableSink(ReadModel)).await?;
    Ok(())
}
