//! threadline: the operators' command line. It talks to the APIs with a bearer token
//! (`--token` or `THREADLINE_TOKEN`) and to each projector's health address; nothing
//! here reads the database. Text for people on stdout, or with `--json` one JSON
//! document (NDJSON for replays) whose fields only ever grow; progress goes to stderr
//! and only when stderr is a terminal. Exit codes are in [`EXIT_CODES`].

mod api;
mod progress;
mod replay;
mod search;
mod status;
mod token;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::api::{Apis, Failure};

/// What the exit code says, as `--help` prints it (and the README).
const EXIT_CODES: &str = "Exit codes:
  0  done
  1  failed otherwise (a file could not be written, an answer did not parse)
  2  the command line is wrong
  3  the API refused (the token, its roles, a missing aggregate, a bad argument)
  4  unavailable (an API could not be reached or answered 5xx; retry)
  5  status: something needs attention (stuck, parked, waiting on an outage, unreachable)";

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
    /// Semantic search over the tenant's conversations, documents and knowledge.
    Search(search::Args),
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
            if !matches!(failure, Failure::Attention) {
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
        Command::Token(args) => token::run(args, out),
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
