//! A throw-away PostgreSQL cluster for tests: `initdb` in a temporary directory, `pg_ctl
//! start` on `127.0.0.1` and a free port, `pg_ctl stop -m immediate` and the directory removed
//! when the [`Postgres`] is dropped, also when the test panics.
//!
//! The binaries come from `PATH` or Debian's `/usr/lib/postgresql/<version>/bin` (package
//! `postgresql`; `cargo xtask ci` installs it when they are missing). PostgreSQL refuses to
//! run as root, and CI runs as root: then every server command runs as the unprivileged
//! [`SERVICE_USER`] through `runuser`, and the directory is handed to that user first.
//!
//! Access: the superuser [`USER`] logs in with [`PASSWORD`] over TCP (SCRAM, so tests can
//! get credentials wrong on purpose) and without one over the Unix socket in the directory,
//! which the harness itself uses to create databases.
//!
//! [`Postgres::start_or_skip`] is how a test asks for one: under `CI` a cluster that cannot
//! start fails the test; elsewhere the test says loudly that it was skipped and how to
//! install PostgreSQL, and returns. It never passes silently.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser of every test cluster.
pub const USER: &str = "taskman";
/// Its password over TCP.
pub const PASSWORD: &str = "taskman-test-password";
/// Who runs the server commands when the tests run as root.
pub const SERVICE_USER: &str = "nobody";
/// How to get the binaries, for messages.
pub const INSTALL_HINT: &str = "install PostgreSQL (Debian: `apt-get install -y postgresql`; \
                                `cargo xtask ci` does it by itself)";

/// Set (by `cargo xtask ci`'s test gate) to make a missing PostgreSQL fail tests, as `CI`
/// does.
pub const REQUIRE_ENV: &str = "TASKMAN_REQUIRE_POSTGRES";

fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os(REQUIRE_ENV).is_some()
}

/// Why a cluster could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// No `initdb` / `pg_ctl` on this machine.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) in PATH or /usr/lib/postgresql/*/bin; {INSTALL_HINT}"
    )]
    NotInstalled,
    /// A command could not be run.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: io::Error,
    },
    /// A command failed.
    #[error("{command} failed ({status}): {output}")]
    Failed {
        /// The command.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed, and the server log when there is one.
        output: String,
    },
    /// The temporary directory could not be made or handed over.
    #[error("cannot prepare the cluster directory: {0}")]
    Dir(io::Error),
}

/// A running PostgreSQL cluster of its own, stopped and removed when dropped.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_user: Option<&'static str>,
    running: bool,
    /// Whether commits are flushed to disk (PostgreSQL's default); off for tests.
    durable: bool,
}

/// Databases made by this process, for unique names.
static DATABASES: AtomicU32 = AtomicU32::new(0);

impl Postgres {
    /// A cluster, or `None` after saying on stderr why the test is skipped. Under `CI` or
    /// [`REQUIRE_ENV`], a cluster that cannot start panics instead: there the test must not
    /// pass without having run.
    ///
    /// # Panics
    /// Under `CI` or [`REQUIRE_ENV`], when the cluster cannot be started.
    #[must_use]
    pub fn start_or_skip(test: &str) -> Option<Self> {
        match Self::start() {
            Ok(cluster) => Some(cluster),
            Err(err) if required() => {
                panic!("{test} needs PostgreSQL, and {REQUIRE_ENV} or CI is set: {err}")
            }
            Err(err) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "SKIPPED {test}: it needs PostgreSQL, which cannot start here: {err}"
                    );
                }
                None
            }
        }
    }

    /// Makes a new cluster in a temporary directory and starts it, with `fsync` off: a test
    /// cluster need not survive a power cut.
    ///
    /// # Errors
    /// When the binaries are missing or a step fails (the message has the server log).
    pub fn start() -> Result<Self, PostgresError> {
        Self::start_with(false)
    }

    /// Like [`start`](Self::start), but with PostgreSQL's own default, `fsync` on: every
    /// commit waits for its WAL to reach the disk, as in production. For benchmarks that
    /// compare it with SQLite, which the server runs with `synchronous=FULL`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_durable() -> Result<Self, PostgresError> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self, PostgresError> {
        let bin = find_binaries().ok_or(PostgresError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("taskman-pg-")
            .tempdir()
            .map_err(PostgresError::Dir)?;
        let as_user = running_as_root().then_some(SERVICE_USER);
        if let Some(user) = as_user {
            run(Command::new("chown").arg(user).arg(dir.path()), "chown")?;
        }
        let mut cluster = Self {
            bin,
            dir,
            port: 0,
            as_user,
            running: false,
            durable,
        };
        let pwfile = cluster.dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).map_err(PostgresError::Dir)?;
        if let Some(user) = as_user {
            run(Command::new("chown").arg(user).arg(&pwfile), "chown")?;
        }
        let data = cluster.data_dir();
        let mut initdb = cluster.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--no-locale", "--no-sync"]);
        run(&mut initdb, "initdb")?;
        // A port that was free a moment ago can be taken by now: try a few.
        let mut last = None;
        for _ in 0..3 {
            cluster.port = free_port().map_err(PostgresError::Dir)?;
            match cluster.start_again() {
                Ok(()) => return Ok(cluster),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or(PostgresError::NotInstalled))
    }

    /// Starts the cluster again after [`stop_now`](Self::stop_now), on the same port.
    ///
    /// # Errors
    /// When `pg_ctl start` fails.
    pub fn start_again(&mut self) -> Result<(), PostgresError> {
        let options = format!(
            // fsync off: a test cluster need not survive a power cut, and it saves the
            // shared CI machine a flush per commit; an immediate stop loses nothing
            // committed (the WAL is in the page cache).
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync={} -c max_connections=100",
            self.port,
            self.dir.path().display(),
            if self.durable { "on" } else { "off" },
        );
        let mut start = self.server_command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        match run(&mut start, "pg_ctl start") {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(PostgresError::Failed {
                command,
                status,
                output,
            }) => Err(PostgresError::Failed {
                command,
                status,
                output: format!("{output}\nserver log:\n{}", self.log()),
            }),
            Err(other) => Err(other),
        }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): connections drop, nothing
    /// committed is lost.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub fn stop_now(&mut self) -> Result<(), PostgresError> {
        let mut stop = self.server_command("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "-m", "immediate", "stop"]);
        run(&mut stop, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// The TCP port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the server (the postmaster, parent of every connection's
    /// backend), from its `postmaster.pid`; `None` while it is stopped.
    #[must_use]
    pub fn server_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The URL of `database` with the superuser's password, as `storage.url` takes it.
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a new, empty database and returns its URL.
    ///
    /// # Errors
    /// When `createdb` fails.
    pub fn create_database(&self) -> Result<String, PostgresError> {
        let name = format!(
            "tasks_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in `database` with `psql` over the Unix socket and returns what it
    /// printed (unaligned, tuples only).
    ///
    /// # Errors
    /// When `psql` fails.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String, PostgresError> {
        let mut psql = Command::new(self.bin.join("psql"));
        if !self.bin.join("psql").exists() {
            psql = Command::new("psql");
        }
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ]);
        let out = run(&mut psql, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The server log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `program` from the server's binaries, run as [`SERVICE_USER`] when we are root.
    fn server_command(&self, program: &str) -> Command {
        let binary = self.bin.join(program);
        let mut command = match self.as_user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        // The test's own directory may be closed to that user; the cluster's is not.
        command.current_dir(self.dir.path());
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            // Best effort: the directory goes with the TempDir either way.
            let _ = self.stop_now();
        }
    }
}

/// The directory holding `initdb` and `pg_ctl`: `PATH` first, then the newest
/// `/usr/lib/postgresql/<version>/bin`.
#[must_use]
pub fn find_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // Debian links them into /usr/local/bin or similar: the real directory has
                // psql and friends beside them.
                let real = std::fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or(dir);
                return Some(real);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(command: &mut Command, name: &str) -> Result<Output, PostgresError> {
    let out = command.output().map_err(|source| PostgresError::Spawn {
        command: name.to_owned(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(PostgresError::Failed {
            command: name.to_owned(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_owned(),
        })
    }
}
