//! threadline: the operators' command line. It talks to the APIs with a bearer token
//! (`--token` or `THREADLINE_TOKEN`) and to each projector's health address; nothing
//! here reads the database (`rebuild` and `redrive` run the projector's own binary,
//! which does). Text for people on stdout, or with `--json` one JSON
//! document (NDJSON for replays) whose fields only ever grow; progress goes to stderr
//! and only when stderr is a terminal. Exit codes are in [`EXIT_CODES`].

mod api;
mod batch;
mod progress;
mod protection;
mod replay;
mod search;
mod status;
mod token;
mod webhooks;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::api::{Apis, Failure};

/// What the exit code says, as `--help` prints it (and the README).
const EXIT_CODES: &str = "Exit codes:
  0  done
  1  failed otherwise (a file could not be written, a rebuild or re-drive failed: what
     the projector said is printed above)
  2  the command line is wrong
  3  the API refused (the token, its roles, a missing aggregate, a bad argument)
  4  unavailable (an API could not be reached or answered 5xx; retry)
  5  status: something needs attention (stuck, parked, waiting on an outage, unreachable)
  6  verify: the audit chain is broken (the first break is printed)";

/// The operators' command line of Threadline.
#[derive(Debug, Parser)]
#[command(name = "threadline", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    apis: Apis,
    /// Print JSON for scripts instead of text (fields are added, never renamed or removed).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The relay and every projector: lag, parked events, work in flight, outages.
    Status(status::Args),
    /// The tenant's events (or one aggregate's) as NDJSON, resumed until complete.
    Replay(replay::Args),
    /// Rebuilds a projection: replays the event store into a new generation and switches
    /// readers to it (runs `<projection>-projector rebuild`, with its database settings).
    Rebuild(batch::Args),
    /// Applies a projection's parked events again, each aggregate's in order (runs
    /// `<projection>-projector redrive`, with its database settings).
    Redrive(batch::Args),
    /// Follows the tenant's events as they are committed, as NDJSON, until Ctrl-C.
    Tail(replay::TailArgs),
    /// Webhook endpoints, their delivery ledger, and redelivery.
    #[command(subcommand)]
    Webhooks(webhooks::Args),
    /// Semantic search over the tenant's conversations, documents and knowledge.
    Search(search::Args),
    /// Verifies the tenant's tamper-evident audit chain; names the first break (exit 6).
    Verify(protection::VerifyArgs),
    /// Erases a person, a conversation's starter's data, or the whole tenant (data
    /// protection: their keys are destroyed, so their data reads as erased everywhere).
    #[command(subcommand)]
    Erase(protection::EraseArgs),
    /// Everything held about a person (or a conversation) as NDJSON (GDPR Art. 15/20).
    Export(protection::ExportArgs),
    /// The tenant's retention policy: shown, or set with `--days` or `--off`.
    Retention(protection::RetentionArgs),
    /// Prints a development token signed with the stack's HS256 secret.
    Token(token::Args),
    /// Prints the shell completion script for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("threadline: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !matches!(failure, Failure::Attention | Failure::Broken) {
                eprintln!("threadline: {failure}");
            }
            ExitCode::from(failure.code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Output { json: cli.json };
    match cli.command {
        Command::Status(args) => status::run(&cli.apis, args, out).await,
        Command::Replay(args) => replay::run(&cli.apis, args).await,
        Command::Search(args) => search::run(&cli.apis, args, out).await,
        Command::Tail(args) => replay::tail(&cli.apis, args).await,
        Command::Webhooks(args) => webhooks::run(&cli.apis, args, out).await,
        Command::Rebuild(args) => batch::run(batch::Work::Rebuild, args, out).await,
        Command::Redrive(args) => batch::run(batch::Work::Redrive, args, out).await,
        Command::Token(args) => token::run(args, out),
        Command::Verify(args) => protection::verify(&cli.apis, args, out).await,
        Command::Erase(args) => protection::erase(&cli.apis, args, out).await,
        Command::Export(args) => protection::export(&cli.apis, args).await,
        Command::Retention(args) => protection::retention(&cli.apis, args, out).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "threadline",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON, or `text` for people.
    pub fn print(self, value: &serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            print!("{}", text());
        }
    }
}
