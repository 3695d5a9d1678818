//! Runs the real `taskman-server` binary for end-to-end tests.
//!
//! The binary is built once per test process with `cargo build -p
//! taskman-server` (its path is read from cargo's own JSON messages, so
//! `CARGO_TARGET_DIR` and profiles are honoured), or taken from
//! `TASKMAN_SERVER_BIN` when that is set. Each [`TaskmanServer`] gets its own
//! port (`127.0.0.1:0`), its own temporary database and a clean `OTEL_*` /
//! `TASKMAN_*` environment, so tests never share state. It knows nothing about
//! the server's internals: only its command line, environment and output.

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
    db_dir: tempfile::TempDir,
    exit: Option<ExitStatus>,
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
        let db_dir = tempfile::tempdir().map_err(HarnessError::TempDir)?;
        let db_path = db_dir.path().join("taskman.db");

        let mut command = Command::new(binary);
        // Tests must not pick up a developer's collector or config.
        for (key, _) in std::env::vars_os() {
            if let Some(name) = key.to_str()
                && (name.starts_with("OTEL_") || name.starts_with("TASKMAN_"))
            {
                command.env_remove(&key);
            }
        }
        command
            .args(args)
            .env("TASKMAN__SERVER__BIND", "127.0.0.1:0")
            .env("TASKMAN__STORAGE__PATH", &db_path)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| HarnessError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;

        let (listening_tx, listening_rx) = mpsc::channel();
        let stderr = Output::collect(child.stderr.take(), Some(listening_tx));
        let stdout = Output::collect(child.stdout.take(), None);

        let mut server = Self {
            child,
            // Replaced below; the port is only known once the server says it.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            stdout,
            db_dir,
            exit: None,
        };
        server.addr = server.await_listening(&listening_rx)?;
        Ok(server)
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
        self.db_dir.path().join("taskman.db")
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
}

impl Output {
    fn collect<R: Read + Send + 'static>(
        stream: Option<R>,
        listening: Option<mpsc::Sender<SocketAddr>>,
    ) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let (closed_tx, closed) = mpsc::channel();
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
            let _ = closed_tx.send(());
        });
        Self { text, closed }
    }

    fn text(&self) -> String {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
