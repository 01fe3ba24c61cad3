//! `dev/stack run` as a process group, the way a developer starts it: on a test database
//! of its own, a broker of its own, free ports, and a known token secret.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::net::{free_addr, free_port};

/// The HS256 secret the stack's services accept.
pub const SECRET: &str = "e2e-dev-stack-secret-e2e-dev-stack-secret";

/// The repository's root.
pub fn repo() -> PathBuf {
    testkit::workspace::root()
}

/// Makes sure the service binaries in `target/debug` are built from the code under test.
/// `dev/stack test` has built them already with these very settings, so this is a
/// freshness check that takes a moment; run alone, a test builds what is stale.
fn build_binaries(root: &Path) {
    let mut cargo = Command::new(env!("CARGO"));
    // Cargo sets these for a test process; a build script that watches one of them
    // (ring watches CARGO_MANIFEST_DIR) would count as changed and rebuild everything.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || matches!(
                name.as_str(),
                "CARGO_TARGET_TMPDIR" | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            cargo.env_remove(name);
        }
    }
    let status = cargo
        // What `cargo nextest run --workspace` and `cargo test --workspace` build first.
        .args(["test", "--workspace", "--no-run", "--quiet"])
        .current_dir(root)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the service binaries failed");
}

/// Sends `signal` to every process of group `pgid`; false when the group is empty.
pub fn signal_group(pgid: u32, signal: &str) -> bool {
    kill(signal, &format!("-{pgid}"))
}

/// Sends `signal` to process `pid`; false when it is gone.
pub fn signal_process(pid: u32, signal: &str) -> bool {
    kill(signal, &pid.to_string())
}

fn kill(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", target])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until the projector whose status is at `url` has partitions assigned: it has
/// filled its projection from the store and consumes.
async fn wait_consuming(http: &reqwest::Client, url: &str, deadline: Instant) {
    loop {
        if let Ok(r) = http.get(url).send().await
            && let Ok(status) = r.json::<serde_json::Value>().await
            && status["assigned_partitions"]
                .as_u64()
                .is_some_and(|n| n > 0)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not start consuming");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str, deadline: Instant) {
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running `dev/stack run`; dropping it kills whatever is left of it.
pub struct DevStack {
    pub child: Child,
    /// `host:port` of each API.
    pub commands: String,
    pub queries: String,
    /// `host:port` of the console.
    pub console: String,
    /// `host:port` of each projector's `/healthz`, `/metrics`, `/status`, by binary name.
    pub projectors: Vec<(String, String)>,
    /// `.stack/<name>`: its logs and pid files.
    pub state: PathBuf,
    /// `KAFKA_TOPIC_PREFIX` of its services.
    pub topic_prefix: String,
    /// The script's own stderr.
    output: PathBuf,
    _db: Option<testkit::env::TestDatabase>,
}

impl Drop for DevStack {
    fn drop(&mut self) {
        if self._db.is_none() {
            // A stack with a cluster and a broker of its own stops them itself (the script
            // does on SIGTERM); a SIGKILL would leave them running.
            signal_group(self.child.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        signal_group(self.child.id(), "-KILL");
        if std::thread::panicking() {
            self.print_log_tails();
        }
        // A named run keeps its cluster's data; where the repository is out of the
        // cluster user's reach it lives in /tmp, named in pg.path.
        if let Ok(data) = std::fs::read_to_string(self.state.join("pg.path")) {
            let _ = std::fs::remove_dir_all(data.trim());
        }
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_file(&self.output);
    }
}

fn stack_output(path: &Path) -> Stdio {
    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

impl DevStack {
    /// Starts `dev/stack run` on a database of the test cluster and the test broker, and
    /// waits until both APIs are ready. `env` adds settings (a log level, say).
    pub async fn start(env: &[(&str, &str)]) -> DevStack {
        Self::launch(env, true, false).await
    }

    /// Like [`DevStack::start`], but the stack starts a PostgreSQL cluster and a broker of
    /// its own, as `dev/stack run` does on a developer's machine (durable, the broker's
    /// topics in that cluster): for a test that kills or restarts them.
    pub async fn start_alone(env: &[(&str, &str)]) -> DevStack {
        Self::launch(env, false, false).await
    }

    /// Like [`DevStack::start`], as the background job of a script: the script runs with
    /// SIGINT ignored (its services still take a Ctrl-C sent to the group).
    pub async fn start_ignoring_sigint(env: &[(&str, &str)]) -> DevStack {
        Self::launch(env, true, true).await
    }

    async fn launch(env: &[(&str, &str)], shared_infra: bool, ignore_sigint: bool) -> DevStack {
        let root = repo();
        build_binaries(&root);
        let db = if shared_infra {
            Some(testkit::env::database().await)
        } else {
            None
        };
        let name = format!("e2e-{}", uuid_simple());
        // What the script itself says (a service that exited, say), kept beside the state.
        let output = std::env::temp_dir().join(format!("threadline-{name}.out"));
        let (commands, queries, console) = (free_addr(), free_addr(), free_addr());
        // Every projector binary, each on an address of this test's own, named as
        // dev/stack names it (read-model-projector listens on READ_MODEL_PROJECTOR_ADDR).
        let projectors: Vec<(String, String, String)> = testkit::workspace::projector_binaries()
            .into_iter()
            .map(|bin| {
                let var = format!("{}_ADDR", bin.replace('-', "_").to_uppercase());
                (bin, var, free_addr())
            })
            .collect();
        let mut stack = if ignore_sigint {
            // What a shell does to a background job: SIGINT ignored, and a signal ignored
            // when bash starts cannot be trapped by the script either.
            let mut c = Command::new("bash");
            c.args(["-c", "trap '' INT; exec \"$0\" run"])
                .arg(root.join("dev/stack"));
            c
        } else {
            let mut c = Command::new(root.join("dev/stack"));
            c.arg("run");
            c
        };
        stack
            .current_dir(&root)
            .env_remove("DATABASE_URL")
            .env_remove("KAFKA_BROKERS")
            // The stack's PostgreSQL and broker too, on ports none of its services has.
            .env("THREADLINE_PG_PORT", free_port().to_string())
            .env("THREADLINE_KAFKA_PORT", free_port().to_string())
            .env("THREADLINE_STACK_NAME", &name)
            .env("THREADLINE_NO_BUILD", "1")
            .env("JWT_HS256_SECRET", SECRET)
            .env("COMMAND_API_ADDR", &commands)
            .env("QUERY_API_ADDR", &queries)
            .env("CONSOLE_ADDR", &console)
            .envs(
                projectors
                    .iter()
                    .map(|(_, var, addr)| (var.as_str(), addr.as_str())),
            )
            .env("KAFKA_TOPIC_PREFIX", format!("{name}."))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stack_output(&output))
            // Its own process group, like a shell job: Ctrl-C signals all of it.
            .process_group(0);
        if let Some(db) = &db {
            stack.env("DATABASE_URL", &db.config.url);
        }
        let child = stack.spawn().expect("start dev/stack run");
        let dev = DevStack {
            child,
            commands,
            queries,
            console,
            projectors: projectors
                .into_iter()
                .map(|(bin, _, addr)| (bin, addr))
                .collect(),
            state: root.join(".stack").join(&name),
            topic_prefix: format!("{name}."),
            output,
            _db: db,
        };
        // Eight debug binaries start at once, two of them loading the embedding model,
        // while other tests keep both cores busy: one generous deadline for both APIs.
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        for api in [&dev.commands, &dev.queries] {
            wait_ready(&http, &format!("http://{api}/readyz"), deadline).await;
        }
        // And every projector consuming: a new projector first fills its projection from
        // the event store as history (a side-effect projector sends nothing for it), so
        // a test's first command must come after that, or the assistant never answers it.
        for (_, addr) in &dev.projectors {
            wait_consuming(&http, &format!("http://{addr}/status"), deadline).await;
        }
        dev
    }

    /// The last lines of every service's log, on stderr: what a failed test leaves to
    /// read, since the state directory goes with the stack.
    fn print_log_tails(&self) {
        let said = std::fs::read_to_string(&self.output).unwrap_or_default();
        eprintln!("--- dev/stack run said:\n{said}");
        let Ok(entries) = std::fs::read_dir(&self.state) else {
            eprintln!("no logs: {} is missing", self.state.display());
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            eprintln!("--- {} (last {} lines)", log.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }

    /// `DATABASE_URL`, `KAFKA_BROKERS` and `DATA_MASTER_KEY` of the running stack, as it
    /// wrote them.
    pub fn stack_env(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.state.join("stack.env")).expect("stack.env");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{name} is not in stack.env"))
            .to_owned()
    }

    /// The pid of a service (`command-api`, `read-model-projector`, ...), of `broker`, or
    /// of `postgres` (the postmaster of a stack started alone), as running now.
    pub fn pid(&self, what: &str) -> u32 {
        self.try_pid(what)
            .unwrap_or_else(|| panic!("no pid recorded for {what}"))
    }

    /// [`DevStack::pid`], or `None` while none is recorded (a restart in progress).
    pub fn try_pid(&self, what: &str) -> Option<u32> {
        let file = match what {
            "postgres" => {
                let data = std::fs::read_to_string(self.state.join("pg.path"))
                    .map(|p| PathBuf::from(p.trim()))
                    .unwrap_or_else(|_| self.state.join("pg"));
                data.join("postmaster.pid")
            }
            "broker" => self.state.join("broker.pid"),
            service => self.state.join(format!("{service}.pid")),
        };
        let text = std::fs::read_to_string(&file).ok()?;
        text.lines().next().and_then(|l| l.trim().parse().ok())
    }

    /// The Kafka settings of the running stack (its broker and topic prefix), for a test
    /// that reads the topics.
    pub fn kafka(&self) -> kafka::KafkaConfig {
        kafka::KafkaConfig {
            brokers: self.stack_env("KAFKA_BROKERS"),
            topic_prefix: self.topic_prefix.clone(),
            ..testkit::env::kafka()
        }
    }

    /// Runs `target/debug/<binary> <args>` against the running stack (its database,
    /// broker, topics and master key) to its end; panics unless it succeeds. Returns its
    /// standard output.
    pub fn run_against(&self, binary: &str, args: &[&str]) -> String {
        let out = Command::new(repo().join("target/debug").join(binary))
            .args(args)
            .env("DATABASE_URL", self.stack_env("DATABASE_URL"))
            .env("KAFKA_BROKERS", self.stack_env("KAFKA_BROKERS"))
            .env("DATA_MASTER_KEY", self.stack_env("DATA_MASTER_KEY"))
            .env("KAFKA_TOPIC_PREFIX", &self.topic_prefix)
            .output()
            .unwrap_or_else(|e| panic!("run {binary}: {e}"));
        assert!(
            out.status.success(),
            "{binary} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The process group (the script's pid).
    pub fn group(&self) -> u32 {
        self.child.id()
    }
}

fn uuid_simple() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}
