//! notifications-projector: tells users when a document they asked for is ready or a
//! conversation ended (`NOTIFY_CHANNEL` log or http), and keeps their in-app inbox.
//!
//!     notifications-projector            consume until SIGTERM/Ctrl-C
//!     notifications-projector redrive    deliver parked notifications in order, then exit
//!     notifications-projector rebuild    refill the inbox from the event store (sends nothing)

use notifications::{Notifications, NotifySettings};
use projection::EffectSink;
use projector_runtime::service::Cli;

const NAME: &str = "notifications-projector";
const ABOUT: &str = "Tells users when a document they asked for is ready or a conversation ended, and keeps their in-app inbox.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::<NotifySettings>::parse(NAME, ABOUT);
    let sink = EffectSink::new(Notifications::from_settings(cli.projection)?);
    projector_runtime::service::main(NAME, cli.command, cli.runtime, sink).await?;
    Ok(())
}
