//! A projector binary's whole life: `main` of every projector parses its [`Cli`], builds
//! its sink and calls [`main`].
//!
//!     <projector>                 consume until SIGTERM/Ctrl-C (`run` also works)
//!     <projector> redrive         apply parked events in order, print a JSON report, exit
//!     <projector> rebuild         replay the event store into a new generation, switch, exit
//!
//! `redrive` and `rebuild` take `--progress` (a JSON line `{"progress":{"done":…,"total":…}}`
//! on stderr twice a second, what `threadline` draws its bar from) and `--dry-run` (what
//! they would do, as JSON, without doing it).
//!     <projector> check-settings  check the settings without connecting to anything, exit
//!     <projector> --help          every setting, with its variable, default and meaning
//!
//! While consuming it serves `/healthz`, `/readyz`, `/metrics` and `/status` on
//! `PROJECTOR_ADDR`. If the consumer loop ends on its own (it failed), `/healthz` turns
//! 503 and the process exits with an error, so an orchestrator restarts it. A stop signal
//! ends the process within `SHUTDOWN_GRACE_SECS` whatever the broker and the database do.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use kafka::KafkaConfig;
use platform::db::DbConfig;
use platform::http::{self, HttpTimeouts, Liveness};
use platform::shutdown::Shutdown;
use platform::telemetry::{self, TelemetrySettings};
use projection::{ProjectionError, Sink};
use thiserror::Error;
use tokio::sync::watch;

use crate::{ProjectorSettings, Runtime, RuntimeError, Settings};

// The command line of a projector binary: what to do, the projection's own settings (`P`;
// `NoSettings` for none) and the runtime's. (Not a doc comment: clap would show it as
// every projector's description; `parse` takes the binary's own.)
#[derive(Debug, clap::Parser)]
pub struct Cli<P: clap::Args> {
    #[command(subcommand)]
    pub command: Option<Verb>,
    #[command(flatten)]
    pub projection: P,
    #[command(flatten)]
    pub runtime: RuntimeSettings,
}

impl<P: clap::Args> Cli<P> {
    /// The command line of the projector binary `service`, described by `about`, from the
    /// process's arguments and environment (see [`platform::config::parse`]).
    pub fn parse(service: &'static str, about: &'static str) -> Self {
        platform::config::parse_about(service, about)
    }

    /// Whether the binary is only to check its settings: it checks what it resolves
    /// before connecting, then [`main`] reports them valid.
    pub fn checking(&self) -> bool {
        self.command == Some(Verb::CheckSettings)
    }
}

/// A projection without settings of its own.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct NoSettings {}

/// What a projector binary does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Verb {
    /// Consume until SIGTERM/Ctrl-C (also what no command does).
    Run,
    /// Apply the parked events in order, print a JSON report, exit.
    Redrive(Batch),
    /// Replay the event store into a new generation of the projection, switch readers to
    /// it, print a JSON report, exit.
    Rebuild(Batch),
    /// Check the settings without connecting to anything; exit 0 when they hold (what
    /// `dev/validate-deploy` asks of each deployment).
    CheckSettings,
}

/// A projector's `/status`: its runtime's status and its projection's live generation
/// (`null` when the database cannot be asked).
#[derive(Debug, serde::Serialize)]
struct StatusView {
    /// The projection's name (what `POST /v1/admin/projections/{name}/redrive` takes).
    projection: &'static str,
    #[serde(flatten)]
    status: crate::ProjectorStatus,
    generation: Option<i32>,
    /// Events of the live generation parked now (`parked` counts those this process
    /// parked since it started).
    parked_now: Option<u64>,
}

/// How often a consuming projector looks for a re-drive asked for over the API.
const REDRIVE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the re-drive requests of `sink`'s projection (command-api's
/// `POST /v1/admin/projections/{name}/redrive`) and re-drives its parked events, beside
/// the consumer (a re-drive is safe while it consumes), until `stopped` turns true.
async fn redrive_on_request<S: Sink>(
    events: event_store::Reader,
    sink: Arc<S>,
    mut stopped: watch::Receiver<bool>,
) {
    let name = sink.name();
    let mut tick = tokio::time::interval(REDRIVE_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        match projection::take_redrive_request(events.pool(), name).await {
            Ok(true) => {}
            Ok(false) => continue,
            // The database is down: the consumer reports that; look again next time.
            Err(e) => {
                tracing::debug!(error = %e, "looking for a re-drive request failed");
                continue;
            }
        }
        tracing::info!(projection = name, "re-driving the parked events, as asked");
        match projection::redrive(events.clone(), sink.as_ref()).await {
            Ok(report) => tracing::info!(
                projection = name,
                applied = report.applied,
                still_parked = report.still_parked,
                "re-drive done"
            ),
            Err(e) => tracing::warn!(projection = name, error = %e, "re-drive failed; ask again"),
        }
    }
}

/// How a one-off `redrive` or `rebuild` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::Args)]
pub struct Batch {
    /// Print progress as JSON lines on stderr (`{"progress":{"done":…,"total":…}}`), twice
    /// a second.
    #[arg(long)]
    pub progress: bool,
    /// Print what would be done, as JSON, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How often `--progress` prints.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Prints `progress` as JSON lines on stderr every [`PROGRESS_EVERY`] until its sender
/// is dropped (the work ended), then once more.
async fn print_progress(progress: watch::Receiver<projection::WorkDone>) {
    use tokio::io::AsyncWriteExt;
    let mut stderr = tokio::io::stderr();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tick.tick().await;
        let ended = progress.has_changed().is_err();
        let line = format!("{}\n", serde_json::json!({"progress": *progress.borrow()}));
        let _ = stderr.write_all(line.as_bytes()).await;
        if ended {
            return;
        }
    }
}

/// The progress of one-off work, printed when `--progress` asks, and its report.
struct Reported {
    tx: watch::Sender<projection::WorkDone>,
    printer: Option<tokio::task::JoinHandle<()>>,
}

impl Reported {
    fn start(batch: Batch) -> Reported {
        let (tx, rx) = watch::channel(projection::WorkDone::default());
        let printer = batch.progress.then(|| tokio::spawn(print_progress(rx)));
        Reported { tx, printer }
    }

    /// Prints the last progress line, then the work's report (JSON on stdout).
    async fn end(
        self,
        report: Result<impl serde::Serialize, ProjectionError>,
    ) -> Result<(), ServiceError> {
        drop(self.tx);
        if let Some(printer) = self.printer {
            let _ = printer.await;
        }
        println!("{}", serde_json::json!(report?));
        Ok(())
    }
}

/// The settings every projector reads.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeSettings {
    #[command(flatten)]
    pub database: DbConfig,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub projector: ProjectorSettings,
    #[command(flatten)]
    pub http: HttpTimeouts,
    #[command(flatten)]
    pub shutdown: Shutdown,
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    #[command(flatten)]
    pub data: event_store::DataProtection,
}

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("DATA_MASTER_KEY: {0}")]
    MasterKey(String),
    #[error("migrating projector tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving health endpoints: {0}")]
    Serve(#[source] std::io::Error),
    #[error("the consumer stopped: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("the consumer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("the companion task stopped: {0}")]
    Companion(String),
}

/// A task that runs beside the consumer while the projector consumes (the webhook
/// dispatcher beside the fan-out projection): given the store as the consumer reads it
/// (one pool, one cache of keys in the process) and the stop signal, it runs until the
/// signal turns true. If it ends on its own it failed: the process turns unhealthy and
/// exits, like a failed consumer.
pub type Companion = Box<
    dyn FnOnce(
            event_store::Reader,
            watch::Receiver<bool>,
        ) -> futures::future::BoxFuture<'static, Result<(), String>>
        + Send,
>;

/// What `check-settings` answers once the settings are resolved.
pub fn settings_ok(service: &str) {
    println!("{service}: settings ok");
}

/// Runs the projector `service` around `sink`, as `command` says.
pub async fn main<S: Sink>(
    service: &'static str,
    command: Option<Verb>,
    settings: RuntimeSettings,
    sink: S,
) -> Result<(), ServiceError> {
    main_with(service, command, settings, sink, None).await
}

/// [`main`] with a [`Companion`] task running beside the consumer.
pub async fn main_with<S: Sink>(
    service: &'static str,
    command: Option<Verb>,
    settings: RuntimeSettings,
    sink: S,
    companion: Option<Companion>,
) -> Result<(), ServiceError> {
    start(service, command, settings, None, sink, companion).await
}

/// [`main`] on a store the binary opened already (its sink writes through it too: one
/// pool, one cache of keys and one erasure listener in the process).
pub async fn main_on<S: Sink>(
    service: &'static str,
    command: Option<Verb>,
    settings: RuntimeSettings,
    store: event_store::Reader,
    sink: S,
) -> Result<(), ServiceError> {
    start(service, command, settings, Some(store), sink, None).await
}

async fn start<S: Sink>(
    service: &'static str,
    command: Option<Verb>,
    settings: RuntimeSettings,
    store: Option<event_store::Reader>,
    sink: S,
    companion: Option<Companion>,
) -> Result<(), ServiceError> {
    if command == Some(Verb::CheckSettings) {
        settings_ok(service);
        return Ok(());
    }
    let telemetry = telemetry::init(service, &settings.telemetry);
    let result = run(
        command.unwrap_or(Verb::Run),
        settings,
        store,
        Arc::new(sink),
        companion,
    )
    .await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "{service} failed");
    }
    telemetry.shutdown().await;
    result
}

async fn run<S: Sink>(
    command: Verb,
    settings: RuntimeSettings,
    store: Option<event_store::Reader>,
    sink: Arc<S>,
    companion: Option<Companion>,
) -> Result<(), ServiceError> {
    let events = match store {
        Some(store) => store,
        None => {
            let pool = settings
                .database
                .connect()
                .await
                .map_err(ServiceError::Connect)?;
            let master = settings
                .data
                .keyring()
                .map_err(|e| ServiceError::MasterKey(e.to_string()))?;
            event_store::Reader::new(pool, master)
        }
    };
    let pool = events.pool().clone();
    // Projectors read the event store (gap fills, bootstraps, rebuilds): it must exist
    // even when they start before command-api. Migrations take a lock; running them from
    // every service at once is safe.
    event_store::migrate(&pool).await?;
    projection::migrate(&pool).await?;
    match command {
        Verb::Run => consume(settings, pool, events, sink, companion).await,
        Verb::CheckSettings => Ok(()),
        Verb::Redrive(batch) if batch.dry_run => {
            let parked = projection::parked_now(&events, sink.as_ref()).await?;
            println!(
                "{}",
                serde_json::json!({"projection": sink.name(), "parked": parked})
            );
            Ok(())
        }
        Verb::Redrive(batch) => {
            let progress = Reported::start(batch);
            let report = projection::redrive_watched(events, sink.as_ref(), &progress.tx).await;
            progress.end(report).await
        }
        Verb::Rebuild(batch) if batch.dry_run => {
            let plan = projection::rebuild_plan(&events, sink.as_ref()).await?;
            println!("{}", serde_json::json!(plan));
            Ok(())
        }
        Verb::Rebuild(batch) => {
            let progress = Reported::start(batch);
            let report = projection::rebuild_watched(events, sink.as_ref(), &progress.tx).await;
            progress.end(report).await
        }
    }
}

async fn consume<S: Sink>(
    settings: RuntimeSettings,
    pool: sqlx::PgPool,
    events: event_store::Reader,
    sink: Arc<S>,
    companion: Option<Companion>,
) -> Result<(), ServiceError> {
    let shutdown = settings.shutdown;
    let addr = settings.projector.addr;
    let kafka = settings.kafka;
    let limits = http::HttpLimits::new(settings.http, 16 * 1024);
    let settings = Settings::new(&settings.projector, sink.name(), sink.batch_max());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Bind { addr, source })?;

    let name = sink.name();
    let (stop, stopped) = watch::channel(false);
    let redriver = tokio::spawn(redrive_on_request(
        events.clone(),
        sink.clone(),
        stopped.clone(),
    ));
    let (runtime, status) = Runtime::new(events.clone(), sink, kafka, settings);
    let mut consumer = tokio::spawn(runtime.run(stopped.clone()));
    let mut companion = match companion {
        Some(task) => tokio::spawn(task(events, stopped.clone())),
        // Nothing beside the consumer: a task that waits for the stop signal.
        None => {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let _ = stopped.wait_for(|s| *s).await;
                Ok(())
            })
        }
    };

    let liveness = Liveness::default();
    let status_pool = pool.clone();
    let app = http::health_routes(pool, liveness.clone(), true).route(
        "/status",
        get(move || {
            let status = status.borrow().clone();
            let pool = status_pool.clone();
            async move {
                // The live generation and its parked events as the database has them (a
                // rebuild switches it, a re-drive empties it).
                let (generation, parked_now) = match pool.acquire().await {
                    Ok(mut conn) => {
                        let generation =
                            projection::generation::live_generation(&mut conn, name).await;
                        let parked = projection::parked_in(&mut conn, name).await;
                        (generation.ok().flatten(), parked.ok())
                    }
                    Err(_) => (None, None),
                };
                axum::Json(StatusView {
                    projection: name,
                    status,
                    generation,
                    parked_now,
                })
            }
        }),
    );
    let mut server_stop = stopped;
    let server = tokio::spawn(http::serve(listener, app, limits, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));

    let result = tokio::select! {
        () = shutdown.requested() => {
            let _ = stop.send(true);
            // The runtime commits and leaves within its own bound; the grace period
            // started by the signal covers anything that still hangs.
            let consumed = match consumer.await {
                Ok(result) => result.map_err(ServiceError::from),
                Err(e) => Err(e.into()),
            };
            match companion.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "companion task failed while stopping"),
                Err(e) => tracing::warn!(error = %e, "companion task panicked while stopping"),
                Ok(Ok(())) => {}
            }
            consumed
        }
        ended = &mut companion => {
            let error = ServiceError::Companion(match ended {
                Ok(Ok(())) => "it ended on its own".to_owned(),
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            });
            liveness.fail(error.to_string());
            let _ = stop.send(true);
            let _ = consumer.await;
            Err(error)
        }
        ended = &mut consumer => {
            // The consumer only ends on its own when it failed: nothing is consumed any more.
            let error = match ended {
                Ok(Ok(())) => RuntimeError::Consume(rdkafka::error::KafkaError::Canceled).into(),
                Ok(Err(e)) => ServiceError::from(e),
                Err(e) => ServiceError::from(e),
            };
            liveness.fail(error.to_string());
            let _ = stop.send(true);
            let _ = companion.await;
            Err(error)
        }
    };
    redriver.abort();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "health server failed"),
        Err(e) => tracing::warn!(error = %e, "health server task failed"),
    }
    result
}
