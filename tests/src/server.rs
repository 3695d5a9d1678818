//! Runs the real `taskman-server` binary for end-to-end tests.
//!
//! The binary is built once per test process with `cargo build -p
//! taskman-server` (its path is read from cargo's own JSON messages, so
//! `CARGO_TARGET_DIR` and profiles are honoured), or taken from
//! `TASKMAN_SERVER_BIN` when that is set. Each [`TaskmanServer`] gets its own
//! port (`127.0.0.1:0`), its own temporary database and a clean `OTEL_*` /
//! `TASKMAN_*` environment, so tests never share state. It knows nothing about
//! the server's internals: only its command line, environment and output.
//! [`ServerCommand`] is the long form: a chosen database path kept across
//! restarts, a working directory, or a run to exit (`--help`, a start-up that
//! must fail).

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// What the server prints on stderr once it accepts connections, followed by
/// its address (`listening on http://127.0.0.1:PORT`).
pub const LISTENING_PREFIX: &str = "listening on http://";

/// Set this to a built `taskman-server` to skip the `cargo build`.
pub const SERVER_BIN_ENV: &str = "TASKMAN_SERVER_BIN";

/// How long [`TaskmanServer::start`] waits for the listening line.
const STARTUP_WITHIN: Duration = Duration::from_secs(30);

/// How often [`TaskmanServer::wait_exit`] looks at the process.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// Why the server could not be started or signalled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The binary could not be built or found.
    #[error("cannot build taskman-server: {0}")]
    Build(String),
    /// The temporary database directory could not be made.
    #[error("cannot create a temporary directory: {0}")]
    TempDir(#[source] io::Error),
    /// The process could not be started.
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// Why it did not start.
        source: io::Error,
    },
    /// The process exited before it printed the listening line.
    #[error("taskman-server exited with {status} before listening; stderr:\n{stderr}")]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// Everything it wrote to stderr.
        stderr: String,
    },
    /// No listening line within the start-up deadline.
    #[error(
        "taskman-server printed no `{LISTENING_PREFIX}ADDR` line within {within:?}; stderr:\n{stderr}\nstdout:\n{stdout}"
    )]
    NotListening {
        /// How long it waited.
        within: Duration,
        /// Everything it wrote to stderr.
        stderr: String,
        /// Everything it wrote to stdout.
        stdout: String,
    },
    /// A run that should end on its own was still going at the deadline
    /// (it is killed).
    #[error("taskman-server still running after {within:?}; stderr:\n{stderr}")]
    StillRunning {
        /// How long it waited.
        within: Duration,
        /// Everything it wrote to stderr.
        stderr: String,
    },
    /// A signal could not be delivered.
    #[error("cannot signal taskman-server (pid {pid}): {source}")]
    Signal {
        /// The process id.
        pid: u32,
        /// Why it failed.
        source: nix::Error,
    },
}

/// A running `taskman-server` process, killed when dropped.
#[derive(Debug)]
pub struct TaskmanServer {
    child: Child,
    addr: SocketAddr,
    stderr: Output,
    stdout: Output,
    db_path: PathBuf,
    /// The temporary directory of the database, when the harness chose it.
    _db_dir: Option<tempfile::TempDir>,
    exit: Option<ExitStatus>,
}

/// Where the server's database goes.
#[derive(Debug, Clone)]
enum Database {
    /// A fresh file in a temporary directory removed with the server.
    Temporary,
    /// This file, which outlives the server (restarts reuse it).
    At(PathBuf),
    /// Nothing set: the server's own default.
    ServerDefault,
}

/// How to run `taskman-server`: binary, arguments, environment, database and
/// working directory. [`start`](Self::start) runs a server and waits until it
/// listens; [`run_to_exit`](Self::run_to_exit) runs the binary to its end
/// (`--help`, `--print-config`, a start-up that must fail).
///
/// The process always gets `TASKMAN__SERVER__BIND=127.0.0.1:0` and a clean
/// `OTEL_*` / `TASKMAN_*` environment; [`env`](Self::env) is applied last and
/// may override anything.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    database: Database,
    current_dir: Option<PathBuf>,
}

impl ServerCommand {
    /// The binary this crate builds ([`server_binary`]).
    ///
    /// # Errors
    /// When the binary cannot be built.
    pub fn new() -> Result<Self, HarnessError> {
        Ok(Self::with_binary(server_binary()?))
    }

    /// Another build of the server (benchmarks compare two).
    #[must_use]
    pub fn with_binary(binary: &Path) -> Self {
        Self {
            binary: binary.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            database: Database::Temporary,
            current_dir: None,
        }
    }

    /// Adds command-line arguments.
    #[must_use]
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// Sets environment variables, after the harness's own.
    #[must_use]
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env.extend(
            env.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        self
    }

    /// Uses this database file, which outlives the server: a later server
    /// given the same path sees what this one stored.
    #[must_use]
    pub fn db_path(mut self, path: &Path) -> Self {
        self.database = Database::At(path.to_path_buf());
        self
    }

    /// Sets no database path, so the server uses its own default (relative
    /// to its working directory).
    #[must_use]
    pub fn default_db_path(mut self) -> Self {
        self.database = Database::ServerDefault;
        self
    }

    /// Runs the server in `dir`.
    #[must_use]
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.current_dir = Some(dir.to_path_buf());
        self
    }

    /// Starts the server and waits for it to print where it listens.
    ///
    /// # Errors
    /// When the binary cannot be started, or exits or stays silent instead of
    /// listening.
    pub fn start(&self) -> Result<TaskmanServer, HarnessError> {
        TaskmanServer::spawn(self)
    }

    /// Runs the binary until it exits on its own, for at most `within`, and
    /// returns how it ended and what it printed.
    ///
    /// # Errors
    /// When it cannot be started, or is still running at the deadline (it is
    /// killed then).
    pub fn run_to_exit(&self, within: Duration) -> Result<Finished, HarnessError> {
        let (child, db_path, db_dir) = self.spawn_child()?;
        let mut run = TaskmanServer::collecting(child, db_path, db_dir, None);
        match run.wait_exit(within) {
            Some(status) => Ok(Finished {
                status,
                stdout: run.stdout(),
                stderr: run.stderr(),
            }),
            None => Err(HarnessError::StillRunning {
                within,
                stderr: run.stderr(),
            }),
        }
    }

    fn spawn_child(&self) -> Result<(Child, PathBuf, Option<tempfile::TempDir>), HarnessError> {
        let (db_path, db_dir) = match &self.database {
            Database::Temporary => {
                let dir = tempfile::tempdir().map_err(HarnessError::TempDir)?;
                (dir.path().join("taskman.db"), Some(dir))
            }
            Database::At(path) => (path.clone(), None),
            Database::ServerDefault => (
                self.current_dir
                    .clone()
                    .unwrap_or_default()
                    .join("taskman.db"),
                None,
            ),
        };
        let mut command = Command::new(&self.binary);
        // Tests must not pick up a developer's collector or config.
        for (key, _) in std::env::vars_os() {
            if let Some(name) = key.to_str()
                && (name.starts_with("OTEL_") || name.starts_with("TASKMAN_"))
            {
                command.env_remove(&key);
            }
        }
        command
            .args(&self.args)
            .env("TASKMAN__SERVER__BIND", "127.0.0.1:0")
            .env("NO_COLOR", "1");
        if !matches!(self.database, Database::ServerDefault) {
            command.env("TASKMAN__STORAGE__PATH", &db_path);
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().map_err(|source| HarnessError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        Ok((child, db_path, db_dir))
    }
}

/// How a [`ServerCommand::run_to_exit`] ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl TaskmanServer {
    /// Starts the server on `127.0.0.1:0` with a fresh database and waits for
    /// it to print where it listens.
    ///
    /// `env` is applied last, so it may override the defaults
    /// (`TASKMAN__SERVER__BIND`, `TASKMAN__STORAGE__PATH`).
    ///
    /// # Errors
    /// When the binary cannot be built or started, or exits or stays silent
    /// instead of listening.
    pub fn start(env: &[(&str, &str)]) -> Result<Self, HarnessError> {
        Self::start_with_args(env, &[])
    }

    /// Like [`TaskmanServer::start`], with command-line arguments.
    ///
    /// # Errors
    /// As [`TaskmanServer::start`].
    pub fn start_with_args(env: &[(&str, &str)], args: &[&str]) -> Result<Self, HarnessError> {
        Self::start_binary(server_binary()?, env, args)
    }

    /// Like [`TaskmanServer::start_with_args`], running `binary` rather than
    /// the one this crate builds (benchmarks compare two builds).
    ///
    /// # Errors
    /// As [`TaskmanServer::start`].
    pub fn start_binary(
        binary: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Self, HarnessError> {
        ServerCommand::with_binary(binary)
            .env(env)
            .args(args)
            .start()
    }

    fn spawn(command: &ServerCommand) -> Result<Self, HarnessError> {
        let (child, db_path, db_dir) = command.spawn_child()?;
        let (listening_tx, listening_rx) = mpsc::channel();
        let mut server = Self::collecting(child, db_path, db_dir, Some(listening_tx));
        server.addr = server.await_listening(&listening_rx)?;
        Ok(server)
    }

    /// Starts copying the child's output; the address is not known yet.
    fn collecting(
        mut child: Child,
        db_path: PathBuf,
        db_dir: Option<tempfile::TempDir>,
        listening: Option<mpsc::Sender<SocketAddr>>,
    ) -> Self {
        let stderr = Output::collect(child.stderr.take(), listening);
        let stdout = Output::collect(child.stdout.take(), None);
        Self {
            child,
            // Replaced once the server says where it listens.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            stdout,
            db_path,
            _db_dir: db_dir,
            exit: None,
        }
    }

    fn await_listening(
        &mut self,
        listening: &mpsc::Receiver<SocketAddr>,
    ) -> Result<SocketAddr, HarnessError> {
        let deadline = Instant::now() + STARTUP_WITHIN;
        loop {
            match listening.recv_timeout(EXIT_POLL) {
                Ok(addr) => return Ok(addr),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.wait_exit(Duration::ZERO) {
                        return Err(HarnessError::Exited {
                            status,
                            stderr: self.stderr(),
                        });
                    }
                }
                // stderr closed without the line: the process is gone or going.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if let Some(status) = self.wait_exit(remaining) {
                        return Err(HarnessError::Exited {
                            status,
                            stderr: self.stderr(),
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotListening {
                    within: STARTUP_WITHIN,
                    stderr: self.stderr(),
                    stdout: self.stdout(),
                });
            }
        }
    }

    /// The address the server listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The database file this server was given (unless `env` overrode it).
    #[must_use]
    pub fn db_path(&self) -> PathBuf {
        self.db_path.clone()
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has written to stderr so far, the listening line included.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Everything the server has written to stdout so far.
    #[must_use]
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Waits up to `within` for a stderr line containing `needle` and
    /// returns the first such line (also one printed before this call);
    /// `None` at the deadline or when stderr closed without it.
    pub fn wait_for_stderr(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            if self.stderr.is_closed() || Instant::now() >= deadline {
                // One last look: the line may have landed with the close.
                return self
                    .stderr()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_owned);
            }
            thread::sleep(EXIT_POLL);
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    ///
    /// # Errors
    /// When the signal cannot be delivered (for example, the process is gone).
    pub fn sigterm(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGINT.
    ///
    /// # Errors
    /// When the signal cannot be delivered.
    pub fn sigint(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGINT)
    }

    /// Sends SIGKILL: a crash, for durability tests.
    ///
    /// # Errors
    /// When the signal cannot be delivered.
    pub fn sigkill(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        let pid = self.child.id();
        let raw = i32::try_from(pid).map_err(|_| HarnessError::Signal {
            pid,
            source: nix::Error::ESRCH,
        })?;
        signal::kill(Pid::from_raw(raw), signal)
            .map_err(|source| HarnessError::Signal { pid, source })
    }

    /// Waits up to `within` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                // Lets the last lines land in the buffers before a test reads them.
                self.stderr.wait_closed(Duration::from_secs(1));
                self.stdout.wait_closed(Duration::from_secs(1));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(EXIT_POLL);
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            // An error here means the child was already reaped, which we record.
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }
}

impl Drop for TaskmanServer {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One output stream of the child, copied into a buffer by a thread.
#[derive(Debug)]
struct Output {
    text: Arc<Mutex<String>>,
    closed: mpsc::Receiver<()>,
    is_closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Output {
    fn collect<R: Read + Send + 'static>(
        stream: Option<R>,
        listening: Option<mpsc::Sender<SocketAddr>>,
    ) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let (closed_tx, closed) = mpsc::channel();
        let is_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed_flag = Arc::clone(&is_closed);
        let buffer = Arc::clone(&text);
        thread::spawn(move || {
            if let Some(stream) = stream {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                // Lines are read as bytes so stray non-UTF-8 output cannot stop the copy.
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let text = String::from_utf8_lossy(&line);
                    if let (Some(tx), Some(addr)) = (&listening, listening_addr(&text)) {
                        let _ = tx.send(addr);
                    }
                    buffer
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_str(&text);
                    line.clear();
                }
            }
            closed_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = closed_tx.send(());
        });
        Self {
            text,
            closed,
            is_closed,
        }
    }

    fn text(&self) -> String {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn is_closed(&self) -> bool {
        self.is_closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn wait_closed(&self, within: Duration) {
        let _ = self.closed.recv_timeout(within);
    }
}

/// The address in a listening line, wherever the line's log prefix puts it.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find(LISTENING_PREFIX)? + LISTENING_PREFIX.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | ','))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The `taskman-server` binary: `TASKMAN_SERVER_BIN`, or built once per process.
///
/// # Errors
/// When `cargo build -p taskman-server` fails or names no executable.
pub fn server_binary() -> Result<&'static Path, HarnessError> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| match std::env::var_os(SERVER_BIN_ENV) {
            Some(path) => Ok(PathBuf::from(path)),
            None => build_server(),
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|reason| HarnessError::Build(reason.clone()))
}

/// Builds the server in this test's profile and returns the executable that
/// cargo reports.
fn build_server() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the tests crate has no parent directory")?;
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--package",
            "taskman-server",
            "--bin",
            "taskman-server",
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null());
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build -p taskman-server` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == "taskman-server"
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo built taskman-server but named no executable".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address_with_or_without_a_log_prefix() {
        let addr: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        assert_eq!(
            listening_addr("listening on http://127.0.0.1:41234\n"),
            Some(addr)
        );
        assert_eq!(
            listening_addr(
                "2026-01-01T00:00:00Z  INFO taskman: listening on http://127.0.0.1:41234"
            ),
            Some(addr)
        );
        assert_eq!(
            listening_addr(r#"{"message":"listening on http://127.0.0.1:41234"}"#),
            Some(addr)
        );
        assert_eq!(
            listening_addr("listening on http://127.0.0.1:41234, http://[::1]:41234"),
            Some(addr)
        );
        assert_eq!(listening_addr("listening on http://not-an-address"), None);
        assert_eq!(listening_addr("starting up"), None);
    }
}
