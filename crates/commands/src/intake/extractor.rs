//! The `extractor` program (top-level `extractor/`) run as a child process under
//! operating-system limits: the only way an uploaded file reaches a parser. Whatever the
//! file does to the parser (recursion until the stack is gone, an allocation bomb, a
//! loop), it ends the child, never this process.
//!
//! Limits on each run, set between fork and exec:
//! - address space (`RLIMIT_AS`, [`ExtractorSettings::memory_bytes`]): a Flate bomb's
//!   allocation fails and the child aborts;
//! - CPU seconds (`RLIMIT_CPU`), a wall-clock deadline after which the child is killed,
//!   and a kill when the caller stops waiting (the request was refused or dropped);
//! - no core dumps, no file writes (`RLIMIT_FSIZE` 0), few descriptors, no new
//!   privileges, death with its parent, an empty environment (no secrets), `/` as its
//!   directory, and a network namespace of its own (no network) where the kernel lets
//!   this process make one;
//! - its text is read up to [`ExtractorSettings::max_output`] bytes, its stderr up to
//!   4 KiB (logged, never shown to the uploader);
//! - at most [`ExtractorSettings::concurrency`] run at once in this process; a permit is
//!   held until its child is gone.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::IntakeError;

/// The extractor's exit status for a file it could not parse (its protocol: `extractor/`).
const EXIT_UNREADABLE: i32 = 3;

/// The program's file name, looked up beside the running executable.
const PROGRAM: &str = "extractor";

/// Stderr kept for the log.
const STDERR_MAX: usize = 4096;

/// How the extractor is run. Settings: `EXTRACTOR_PATH`, `EXTRACT_MEMORY_MB`,
/// `EXTRACT_CPU_SECS`, `EXTRACT_TIMEOUT_MS`, `EXTRACT_CONCURRENCY`.
#[derive(Debug, Clone)]
pub struct ExtractorSettings {
    /// The `extractor` program; by default beside the running executable.
    pub path: PathBuf,
    /// Address space of one run (default 512 MiB).
    pub memory_bytes: u64,
    /// CPU seconds of one run (default 20).
    pub cpu_secs: u64,
    /// Wall-clock time of one run, start to exit (default 20 s: under the request timeout,
    /// so the uploader gets the reason, not a 408).
    pub timeout: Duration,
    /// Runs at once in this process (default 2).
    pub concurrency: usize,
    /// Largest text read back (default 8 MiB; a knowledge document holds at most 400,000
    /// characters once its layout noise is gone).
    pub max_output: usize,
}

/// Largest text read back: a knowledge document holds at most 400,000 characters once its
/// layout noise is gone.
const MAX_OUTPUT: usize = 8 * 1024 * 1024;

impl Default for ExtractorSettings {
    /// The settings' defaults.
    fn default() -> Self {
        config::defaults::<ExtractorArgs>().into()
    }
}

/// The settings of [`ExtractorSettings`] (command-api reads them).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Uploaded files")]
pub struct ExtractorArgs {
    /// The program that reads uploaded PDFs, run as a child process per upload (the only
    /// code that parses uploaded files); by default `extractor` beside the command-api
    /// binary.
    #[arg(long = "extractor-path", env = "EXTRACTOR_PATH")]
    pub path: Option<PathBuf>,
    /// One extraction's address space in MiB; a file that needs more is refused (422
    /// `file_too_complex`) and its process is gone.
    #[arg(long = "extract-memory-mb", env = "EXTRACT_MEMORY_MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(64..))]
    pub memory_mb: u64,
    /// One extraction's CPU seconds (the same when exceeded).
    #[arg(long = "extract-cpu-secs", env = "EXTRACT_CPU_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub cpu_secs: u64,
    /// One extraction's wall-clock milliseconds, start to exit (under the request timeout,
    /// so the uploader gets the reason, not a 408).
    #[arg(long = "extract-timeout-ms", env = "EXTRACT_TIMEOUT_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Extractions running at once (others wait their turn within the request's time).
    #[arg(id = "extract-concurrency", long = "extract-concurrency", env = "EXTRACT_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
}

impl From<ExtractorArgs> for ExtractorSettings {
    fn from(args: ExtractorArgs) -> Self {
        ExtractorSettings {
            path: args.path.unwrap_or_else(default_path),
            memory_bytes: args.memory_mb << 20,
            cpu_secs: args.cpu_secs,
            timeout: Duration::from_millis(args.timeout_ms),
            concurrency: usize::try_from(args.concurrency).unwrap_or(usize::MAX),
            max_output: MAX_OUTPUT,
        }
    }
}

/// `extractor` beside the running executable, or one directory up (a test binary runs
/// from `target/<profile>/deps`, the programs are in `target/<profile>`).
fn default_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let beside = dir.join(PROGRAM);
    if beside.exists() {
        return beside;
    }
    match dir.parent() {
        Some(up) if dir.file_name().is_some_and(|n| n == "deps") => up.join(PROGRAM),
        _ => beside,
    }
}

/// Runs the extractor, bounded as the settings say.
#[derive(Debug, Clone)]
pub struct Extractor {
    settings: Arc<ExtractorSettings>,
    running: Arc<Semaphore>,
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor::new(ExtractorSettings::default())
    }
}

/// How a run ended.
enum Ended {
    Exited(ExitStatus, Vec<u8>),
    OutputTooLarge,
    TimedOut,
}

impl Extractor {
    pub fn new(settings: ExtractorSettings) -> Self {
        let running = Arc::new(Semaphore::new(settings.concurrency));
        Extractor {
            settings: Arc::new(settings),
            running,
        }
    }

    pub fn settings(&self) -> &ExtractorSettings {
        &self.settings
    }

    /// Fails when the program is not there or not executable: a deployment error a
    /// service reports at start, not at the first upload.
    pub fn check(&self) -> Result<(), IntakeError> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&self.settings.path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            _ => Err(IntakeError::ExtractorUnavailable(format!(
                "{} is not an executable file (set EXTRACTOR_PATH, or build it: cargo build -p extractor)",
                self.settings.path.display()
            ))),
        }
    }

    /// The raw text of a PDF. Cancel-safe: dropping the future kills the child.
    pub async fn pdf(&self, bytes: Arc<[u8]>) -> Result<String, IntakeError> {
        let _permit = self
            .running
            .acquire()
            .await
            .map_err(|_| IntakeError::ExtractorUnavailable("shut down".into()))?;
        let mut command = tokio::process::Command::new(&self.settings.path);
        command
            .arg("pdf")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let limits = Limits::of(&self.settings);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (setrlimit, prctl, unshare) on values copied in.
        unsafe {
            command.pre_exec(move || limits.enter());
        }
        let mut child = command.spawn().map_err(|e| {
            IntakeError::ExtractorUnavailable(format!(
                "starting {}: {e}",
                self.settings.path.display()
            ))
        })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(IntakeError::ExtractorUnavailable("no pipes".into()));
        };
        let max_output = self.settings.max_output;
        let feed = async move {
            // The child may stop reading (it died or has what it needs): not our error.
            let _ = stdin.write_all(&bytes).await;
            drop(stdin);
            Ok::<(), Overflow>(())
        };
        let mut log = Vec::new();
        let ended = {
            let run = async {
                let (_, out, _) = tokio::try_join!(
                    feed,
                    read_capped(stdout, max_output),
                    drain_keeping(stderr, &mut log, STDERR_MAX),
                )?;
                let status = child.wait().await.map_err(|_| Overflow)?;
                Ok::<_, Overflow>((status, out))
            };
            match tokio::time::timeout(self.settings.timeout, run).await {
                Err(_) => Ended::TimedOut,
                Ok(Err(Overflow)) => Ended::OutputTooLarge,
                Ok(Ok((status, out))) => Ended::Exited(status, out),
            }
        };
        let log = String::from_utf8_lossy(&log).trim().to_owned();
        match ended {
            Ended::Exited(status, out) if status.success() => {
                Ok(String::from_utf8_lossy(&out).into_owned())
            }
            Ended::Exited(status, _) if status.code() == Some(EXIT_UNREADABLE) => {
                tracing::info!(reason = %log, "an uploaded PDF is malformed");
                Err(IntakeError::Unreadable)
            }
            Ended::Exited(status, _) => {
                tracing::warn!(%status, stderr = %log, "the extractor ended on an uploaded PDF's limits");
                Err(IntakeError::TooComplex(
                    "it needs more memory or time than allowed",
                ))
            }
            Ended::OutputTooLarge => {
                kill(&mut child).await;
                Err(IntakeError::TooComplex("its text is longer than allowed"))
            }
            Ended::TimedOut => {
                kill(&mut child).await;
                tracing::warn!(timeout = ?self.settings.timeout, "the extractor ran out of time on an uploaded PDF");
                Err(IntakeError::TooComplex(
                    "it needs more memory or time than allowed",
                ))
            }
        }
    }
}

async fn kill(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// More output than allowed, or a pipe that failed.
struct Overflow;

async fn read_capped(pipe: impl AsyncRead + Unpin, max: usize) -> Result<Vec<u8>, Overflow> {
    let mut out = Vec::new();
    pipe.take(max as u64 + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|_| Overflow)?;
    if out.len() > max {
        return Err(Overflow);
    }
    Ok(out)
}

/// Reads `pipe` to its end, keeping its first `max` bytes in `out` (a child must never
/// block on a full pipe nobody reads).
async fn drain_keeping(
    mut pipe: impl AsyncRead + Unpin,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), Overflow> {
    let mut buf = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buf).await.map_err(|_| Overflow)?;
        if n == 0 {
            return Ok(());
        }
        let room = max.saturating_sub(out.len()).min(n);
        out.extend_from_slice(&buf[..room]);
    }
}

/// The limits a child enters between fork and exec (plain values: nothing is allocated
/// after the fork).
#[derive(Clone, Copy)]
struct Limits {
    memory_bytes: u64,
    cpu_secs: u64,
}

impl Limits {
    fn of(settings: &ExtractorSettings) -> Self {
        Limits {
            memory_bytes: settings.memory_bytes,
            cpu_secs: settings.cpu_secs,
        }
    }

    /// In the child, before exec.
    fn enter(self) -> std::io::Result<()> {
        use libc::{
            RLIMIT_AS, RLIMIT_CORE, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, c_int, rlim_t,
        };
        fn set(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
            let limit = libc::rlimit {
                rlim_cur: soft as rlim_t,
                rlim_max: hard as rlim_t,
            };
            // SAFETY: setrlimit reads the struct it is given.
            if unsafe { libc::setrlimit(resource, &limit) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        set(RLIMIT_AS, self.memory_bytes, self.memory_bytes)?;
        // SIGXCPU at the soft limit, SIGKILL one second later.
        set(RLIMIT_CPU, self.cpu_secs, self.cpu_secs + 1)?;
        set(RLIMIT_CORE, 0, 0)?;
        set(RLIMIT_FSIZE, 0, 0)?;
        set(RLIMIT_NOFILE, 32, 32)?;
        // SAFETY: prctl and unshare take plain integers.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // No network: a namespace of its own with nothing but a down loopback. Root
            // (or CAP_SYS_ADMIN) makes one directly, others through a user namespace
            // where the kernel allows unprivileged ones; else it runs without.
            let net: c_int = libc::CLONE_NEWNET;
            if libc::unshare(net) != 0 {
                let _ = libc::unshare(libc::CLONE_NEWUSER | net);
            }
        }
        Ok(())
    }
}
