//! `threadline rebuild PROJECTION` and `threadline redrive PROJECTION`: the projector's
//! own binary does the work (`<projection>-projector rebuild --progress`), reading the
//! event store and writing the projection's tables, so it needs the projector's settings
//! (`DATABASE_URL`, `DATA_MASTER_KEY` when set, ...) in the environment. This is the one
//! place the command line reaches the database, and only through the projector's code.
//! Its progress lines become a bar on a terminal; its report is printed at the end.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::Output;
use crate::api::Failure;
use crate::progress;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The projection: `read-model`, `notifications`, `embeddings`, `assistant`,
    /// `analytics` or `webhooks` (its binary is `<projection>-projector`).
    projection: String,
    /// Print what would be done (the generation, the events or parked events) and change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// The projector's binary (default: `<projection>-projector` beside `threadline`,
    /// else on `PATH`).
    #[arg(long = "projector-bin", env = "THREADLINE_PROJECTOR_BIN")]
    bin: Option<PathBuf>,
}

/// Which one-off work.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    Rebuild,
    Redrive,
}

impl Work {
    fn verb(self) -> &'static str {
        match self {
            Work::Rebuild => "rebuild",
            Work::Redrive => "redrive",
        }
    }

    fn counted(self) -> &'static str {
        match self {
            Work::Rebuild => "events",
            Work::Redrive => "parked events",
        }
    }
}

/// `<projection>-projector` beside this executable, else its bare name (found on `PATH`).
fn locate(projection: &str) -> PathBuf {
    let name = if projection.ends_with("-projector") {
        projection.to_owned()
    } else {
        format!("{projection}-projector")
    };
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
        .filter(|beside| beside.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

pub async fn run(work: Work, args: Args, out: Output) -> Result<(), Failure> {
    let bin = args.bin.clone().unwrap_or_else(|| locate(&args.projection));
    let mut command = tokio::process::Command::new(&bin);
    command
        .arg(work.verb())
        .arg("--progress")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if args.dry_run {
        command.arg("--dry-run");
    }
    let mut child = command
        .spawn()
        .map_err(|e| Failure::Other(format!("{}: {e}", bin.display())))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Failure::other("the projector's output is not piped"));
    };
    let bar = progress::bar(work.counted());
    // Its progress drawn, anything else it says (its log) passed on.
    let follow = async {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let progress = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v.get("progress").cloned());
            match progress {
                Some(p) => {
                    bar.set_length(p["total"].as_u64().unwrap_or(0));
                    bar.set_position(p["done"].as_u64().unwrap_or(0));
                }
                None => bar.suspend(|| eprintln!("{line}")),
            }
        }
    };
    let mut printed = String::new();
    let read = async {
        let mut stdout = stdout;
        stdout.read_to_string(&mut printed).await
    };
    let ((), read) = tokio::join!(follow, read);
    let status = child.wait().await.map_err(Failure::other)?;
    bar.finish_and_clear();
    read.map_err(Failure::other)?;
    if !status.success() {
        // Its log (on its stdout) says why.
        eprint!("{printed}");
        return Err(Failure::Other(format!(
            "{} {} failed ({status}); its log is above",
            bin.display(),
            work.verb()
        )));
    }
    // The report is its last line that is not a log line (those have a level).
    let report: Value = printed
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.is_object() && v.get("level").is_none())
        .ok_or_else(|| Failure::Other(format!("{} printed no report: {printed}", bin.display())))?;
    out.print(&report, || text(work, args.dry_run, &report));
    Ok(())
}

fn text(work: Work, dry_run: bool, r: &Value) -> String {
    match (work, dry_run) {
        (Work::Rebuild, true) => format!(
            "would rebuild {} into generation {} (live: {}), replaying {} events\n",
            r["projection"], r["next_generation"], r["live_generation"], r["events"]
        ),
        (Work::Rebuild, false) => format!(
            "rebuilt into generation {} ({}): {} events replayed, {} parked, {:.1} s\n",
            r["generation"],
            r["schema"].as_str().unwrap_or("?"),
            r["replayed"],
            r["parked"],
            r["seconds"].as_f64().unwrap_or(0.0)
        ),
        (Work::Redrive, true) => format!(
            "{}: {} events parked\n",
            r["projection"].as_str().unwrap_or("?"),
            r["parked"]
        ),
        (Work::Redrive, false) => format!(
            "re-drove: {} applied, {} still parked\n",
            r["applied"], r["still_parked"]
        ),
    }
}
