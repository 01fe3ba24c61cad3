//! notifications-projector: tells users when a document they asked for is ready or a
//! conversation ended (`NOTIFY_CHANNEL` log or http), and keeps their in-app inbox.
//!
//!     notifications-projector            consume until SIGTERM/Ctrl-C
//!     notifications-projector redrive    deliver parked notifications in order, then exit
//!     notifications-projector rebuild    refill the inbox from the event store (sends nothing)

use notifications::Notifications;
use projection::EffectSink;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sink = EffectSink::new(Notifications::from_env()?);
    projector_runtime::service::main("notifications-projector", sink).await?;
    Ok(())
}
