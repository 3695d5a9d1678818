//! Task persistence: one [`Store`] in front of two backends, chosen by `storage.url`.
//!
//! | `storage.url` | backend | for |
//! |---|---|---|
//! | `sqlite:<path>` (the default, `sqlite:taskman.db`) | [`SqliteStore`]: one file, one process | one replica |
//! | `postgres://user:password@host:port/database` | [`PostgresStore`]: a connection pool | several replicas on one database |
//!
//! The API code sees only [`Store`] and its promises, which both backends keep and one
//! contract test suite (`taskman-server/tests/store_contract.rs`) checks against both:
//!
//! - a write is acknowledged (`Ok`) only once its commit has succeeded; a commit that failed,
//!   or whose outcome is unknown (the connection was lost during `COMMIT`), is an error;
//! - a failure of the database's environment (disk, file, lock, network, server, pool) is
//!   [`StorageError::Unavailable`], which the API answers with 503 and `Retry-After`; only a
//!   statement's own fault (a bug) is another error, answered with 500;
//! - ids are never reused, not even after a delete;
//! - an unavailability episode is logged once when it starts and once when it ends
//!   (`OutageLog`), whichever backend it is;
//! - every call runs inside a `storage` span that follows OpenTelemetry's database
//!   conventions (`StorageSpan`).

mod postgres;
mod sqlite;

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};

pub use self::postgres::{MIGRATION_LOCK, PostgresStore};
pub use self::sqlite::{APPLICATION_ID, IN_MEMORY, SqliteStore, handle_file_size_signal};
use crate::task::{NewTask, Task, TaskChanges, TaskStatus};

/// Where tasks are kept: the value of `storage.url`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageUrl {
    /// `sqlite:<path>`: an SQLite file (or [`IN_MEMORY`]).
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`: a PostgreSQL database.
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection URL, checked by the driver's own parser. Its `Debug` and
/// `Display` mask the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    text: String,
}

/// The URL schemes `storage.url` accepts, for error messages.
pub const URL_SCHEMES: &str =
    "expected sqlite:<path> or postgres://user:password@host:port/database";

impl FromStr for StorageUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sqlite:") {
            // `sqlite:///var/lib/x.db` is the URL form of `sqlite:/var/lib/x.db`.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.trim().is_empty() {
                return Err("the SQLite path after sqlite: must not be empty (use \
                            sqlite::memory: to keep tasks in memory only)"
                    .to_owned());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return PostgresUrl::new(text).map(Self::Postgres);
        }
        Err(URL_SCHEMES.to_owned())
    }
}

impl StorageUrl {
    /// The URL as written, password included: for `--print-config` only, which must be
    /// accepted back. Everything else prints the masked [`Display`](fmt::Display).
    #[must_use]
    pub fn unmasked(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite:{}", path.display()),
            Self::Postgres(url) => url.text.clone(),
        }
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageUrl({self})")
    }
}

impl PostgresUrl {
    /// Checks `text` with the driver's parser; the error names what is wrong, never the
    /// password.
    pub fn new(text: &str) -> Result<Self, String> {
        text.parse::<tokio_postgres::Config>()
            .map_err(|err| format!("not a PostgreSQL URL: {}", mask_in(&err.to_string(), text)))?;
        Ok(Self {
            text: text.to_owned(),
        })
    }

    /// The driver's configuration.
    pub(crate) fn config(&self) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        self.text.parse()
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_password(&self.text))
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// `postgres://user:secret@host/db?password=secret` → `postgres://user:***@host/db?password=***`.
#[must_use]
pub fn mask_password(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            // The userinfo ends at the last `@` before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{hosts}{path}"),
                    None => format!("{scheme}://{userinfo}@{hosts}{path}"),
                },
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// `message` with any password of `url` in it masked: a parser may quote what it read.
fn mask_in(message: &str, url: &str) -> String {
    let masked = mask_password(url);
    let mut out = message.replace(url, &masked);
    if let Ok(config) = url.parse::<tokio_postgres::Config>()
        && let Some(password) = config.get_password()
        && let Ok(password) = std::str::from_utf8(password)
        && !password.is_empty()
    {
        out = out.replace(password, "***");
    }
    out
}

/// How the PostgreSQL store bounds its calls; the SQLite store has one connection and
/// ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections per server process.
    pub pool_size: NonZeroU32,
    /// The longest a call waits for a connection (a free one, or a new one connected).
    pub acquire_timeout: Duration,
    /// The longest a call's statements may take once it has a connection.
    pub statement_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            pool_size: NonZeroU32::MIN.saturating_add(7),
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// A storage failure. Every variant is the server's fault or the database's, never the
/// client's: "no such task" is `Ok(None)`, not an error. Messages include their cause (there
/// is no `source()` chain to repeat it), so one `Display` is the whole story, in logs and on
/// stderr; none of them carries a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The path is empty, which SQLite would take as "a temporary database".
    #[error(
        "the database path is empty; SQLite would use a temporary database and lose every \
         task at restart (give a file, or :memory: on purpose)"
    )]
    EmptyPath,
    /// The database file is missing but its write-ahead log is not: the file was deleted
    /// while a server was using it. Starting empty would hide the loss of every task.
    #[error(
        "{} is missing but its write-ahead log {}-wal is there: the database was deleted \
         while a server was using it; restore it, or delete the -wal and -shm files to start \
         with no tasks",
        path.display(),
        path.display()
    )]
    Deleted {
        /// The configured path.
        path: PathBuf,
    },
    /// The SQLite database could not be opened or prepared.
    #[error("cannot open the task database: {0}")]
    Open(rusqlite::Error),
    /// The PostgreSQL database could not be reached, logged into or migrated at start.
    #[error("cannot use the PostgreSQL task database: {0}")]
    Connect(String),
    /// The database file cannot be written.
    #[error("the task database is read-only")]
    ReadOnly,
    /// The file is an SQLite database, but not one this server made.
    #[error(
        "{} is not a taskman database (application_id 0x{:08x}, user_version {user_version}, \
         {found})",
        path.display(),
        *application_id as u32
    )]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// Its `application_id`.
        application_id: i32,
        /// Its `user_version`.
        user_version: i64,
        /// What it holds instead of our tasks table, in a few words.
        found: &'static str,
    },
    /// The PostgreSQL database has a `tasks` table this server did not make.
    #[error(
        "the PostgreSQL database is not a taskman database: it has a tasks table but no \
         taskman_migrations table"
    )]
    NotOursPostgres,
    /// A newer server has migrated this database.
    #[error("the task database has schema version {found}, newer than this server's {known}")]
    NewerSchema {
        /// The database's schema version.
        found: i64,
        /// The last migration this server knows.
        known: i64,
    },
    /// The database cannot serve calls right now: its file, disk, lock, network or server is
    /// at fault, not the statement. Writes were not acknowledged. Retrying later may succeed.
    #[error("the task database is unavailable: {0}")]
    Unavailable(Unavailable),
    /// An SQLite statement failed.
    #[error("task database query failed: {0}")]
    Query(rusqlite::Error),
    /// A PostgreSQL statement failed.
    #[error("task database query failed: {}", postgres::describe(.0))]
    PostgresQuery(tokio_postgres::Error),
    /// The blocking task never reported back (the runtime is shutting down, or it panicked).
    #[error("task database call did not complete: {0}")]
    Interrupted(tokio::task::JoinError),
}

/// Why the database is [`StorageError::Unavailable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// SQLite reported a failure of the disk, the file or its lock (full, I/O error,
    /// busy), or a commit failed.
    #[error("{}", sqlite::with_extended_code(.0))]
    Sqlite(rusqlite::Error),
    /// The file the server opened is no longer at its path.
    #[error("{} was deleted or renamed while the server was using it", path.display())]
    FileGone {
        /// The configured path.
        path: PathBuf,
    },
    /// Another file is at the path now.
    #[error("{} was replaced by another file while the server was using it", path.display())]
    FileReplaced {
        /// The configured path.
        path: PathBuf,
    },
    /// The path cannot be examined.
    #[error("cannot examine {}: {source}", path.display())]
    FileUnreadable {
        /// The configured path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// PostgreSQL, or the network to it, failed: connection refused or lost, the server
    /// shutting down or out of resources, a statement cancelled by `statement_timeout`.
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    /// No connection became free, or could be made, within `storage.acquire_timeout`.
    #[error("no database connection within storage.acquire_timeout ({})", humantime::format_duration(*.0))]
    AcquireTimeout(Duration),
    /// The call's statements did not finish within `storage.statement_timeout`; a write among
    /// them was not acknowledged (it may or may not have been committed).
    #[error("the database did not answer within storage.statement_timeout ({})", humantime::format_duration(*.0))]
    StatementTimeout(Duration),
    /// The connection failed during `COMMIT`: the write may or may not be stored, so it is
    /// not acknowledged.
    #[error("the outcome of COMMIT is unknown: {}", postgres::describe(.0))]
    CommitUnknown(tokio_postgres::Error),
}

impl StorageError {
    /// Whether this is [`StorageError::Unavailable`]: the database's environment failed,
    /// and a retry later may succeed.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<tokio::task::JoinError> for StorageError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Interrupted(err)
    }
}

/// Which tasks to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    /// At most this many items.
    pub limit: u32,
    /// Skip this many items first (in id order).
    pub offset: u64,
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
}

/// One page of tasks and the number of tasks matching the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Tasks in id order.
    pub items: Vec<Task>,
    /// All tasks matching the status filter, regardless of paging.
    pub total: u64,
}

/// The task store: cheap to clone, shared by all workers; which backend is behind it is
/// `storage.url`'s business, not the caller's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Store {
    /// One SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database through a connection pool.
    Postgres(PostgresStore),
}

impl Store {
    /// Opens the SQLite database at `path` (see [`SqliteStore::open`]). Blocking.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        SqliteStore::open(path).map(Self::Sqlite)
    }

    /// Opens the store `url` names: SQLite on the blocking pool, PostgreSQL by connecting
    /// once (bounded by `options.acquire_timeout`) and migrating its schema.
    pub async fn connect(url: &StorageUrl, options: PoolOptions) -> Result<Self, StorageError> {
        match url {
            StorageUrl::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || Self::open(&path)).await?
            }
            StorageUrl::Postgres(url) => PostgresStore::connect(url, options)
                .await
                .map(Self::Postgres),
        }
    }

    /// `db.system.name` of the backend: `sqlite` or `postgresql`.
    #[must_use]
    pub fn system(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => sqlite::SYSTEM,
            Self::Postgres(_) => postgres::SYSTEM,
        }
    }

    /// Stores a new task and returns it with its id and timestamps.
    pub async fn create(&self, task: NewTask) -> Result<Task, StorageError> {
        match self {
            Self::Sqlite(store) => store.create(task).await,
            Self::Postgres(store) => store.create(task).await,
        }
    }

    /// The task with this id, if there is one.
    pub async fn get(&self, id: i64) -> Result<Option<Task>, StorageError> {
        match self {
            Self::Sqlite(store) => store.get(id).await,
            Self::Postgres(store) => store.get(id).await,
        }
    }

    /// A page of tasks in id order, and how many match in total, from one snapshot.
    pub async fn list(&self, query: ListQuery) -> Result<Page, StorageError> {
        match self {
            Self::Sqlite(store) => store.list(query).await,
            Self::Postgres(store) => store.list(query).await,
        }
    }

    /// Applies `changes` to the task with this id and returns it, or `None` if there is no
    /// such task. `updated_at` moves only when something was asked to change.
    pub async fn update(
        &self,
        id: i64,
        changes: TaskChanges,
    ) -> Result<Option<Task>, StorageError> {
        match self {
            Self::Sqlite(store) => store.update(id, changes).await,
            Self::Postgres(store) => store.update(id, changes).await,
        }
    }

    /// Deletes the task with this id; false if there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, StorageError> {
        match self {
            Self::Sqlite(store) => store.delete(id).await,
            Self::Postgres(store) => store.delete(id).await,
        }
    }

    /// Whether the store can serve calls, cheaply: for readiness probes.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self {
            Self::Sqlite(store) => store.check().await,
            Self::Postgres(store) => store.check().await,
        }
    }
}

/// A stretch of time in which calls fail with [`StorageError::Unavailable`].
#[derive(Debug)]
struct Outage {
    since: Instant,
    failed_calls: u64,
    /// A write failed: a read that succeeds (a full disk still reads) does not end it.
    writes_failed: bool,
}

/// What a call does to the database, for the outage bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only, or a write that changed nothing.
    Read,
    /// Wrote something.
    Write,
    /// The readiness check: it may start an outage, never end one (it writes nothing).
    Probe,
}

/// The unavailability episode in progress, if any: logged once when it starts (`error`),
/// at `debug` while it lasts, once when a call succeeds again (`info`, with its duration and
/// failed-call count).
#[derive(Debug, Default)]
pub(crate) struct OutageLog {
    outage: Option<Outage>,
}

impl OutageLog {
    /// Whether an episode is in progress.
    #[cfg(test)]
    pub(crate) fn active(&self) -> bool {
        self.outage.is_some()
    }

    /// Logs the start of an outage once, and its end once.
    pub(crate) fn record<T>(&mut self, access: Access, result: &Result<T, StorageError>) {
        match result {
            Err(err @ StorageError::Unavailable(_)) => match &mut self.outage {
                None => {
                    tracing::error!(
                        error = %err,
                        "task database unavailable: task requests answer 503 until it recovers"
                    );
                    self.outage = Some(Outage {
                        since: Instant::now(),
                        failed_calls: 1,
                        writes_failed: access == Access::Write,
                    });
                }
                Some(outage) => {
                    outage.failed_calls += 1;
                    outage.writes_failed |= access == Access::Write;
                    tracing::debug!(
                        error = %err,
                        failed_calls = outage.failed_calls,
                        "task database still unavailable"
                    );
                }
            },
            Err(err) => tracing::error!(error = %err, "task database call failed"),
            Ok(_) => {
                let ends = self.outage.as_ref().is_some_and(|outage| match access {
                    Access::Write => true,
                    Access::Read => !outage.writes_failed,
                    Access::Probe => false,
                });
                if let Some(outage) = self.outage.take_if(|_| ends) {
                    let lasted = Duration::from_millis(
                        u64::try_from(outage.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    );
                    tracing::info!(
                        unavailable_for = %humantime::format_duration(lasted),
                        failed_calls = outage.failed_calls,
                        "task database available again"
                    );
                }
            }
        }
    }
}

/// The database operation of a storage call, for its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Insert,
    Select,
    Update,
    Delete,
}

impl Operation {
    /// `db.operation.name`: the SQL keyword.
    fn name(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Select => "SELECT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }

    /// `db.query.summary` and the span name: `{operation} {collection}`, low-cardinality and
    /// free of parameters, as the database conventions define it.
    fn summary(self) -> &'static str {
        match self {
            Self::Insert => "INSERT tasks",
            Self::Select => "SELECT tasks",
            Self::Update => "UPDATE tasks",
            Self::Delete => "DELETE tasks",
        }
    }
}

/// Where a network database is, for `server.address` / `server.port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerAddress {
    pub(crate) address: String,
    pub(crate) port: u16,
}

/// The span of one storage call, with the attributes of OpenTelemetry's database semantic
/// conventions: `db.system.name`, `db.operation.name`, `db.collection.name` (`tasks`),
/// `db.query.summary`, and `server.address` / `server.port` for a database over the network;
/// a failed call adds `error.type` (`unavailable` or `internal`) and an error status. No SQL
/// text or parameter goes into it: the summary says all a trace needs, and a task's title is
/// the user's data.
///
/// Made with the OpenTelemetry API directly, a child of the request's server span (the
/// current OpenTelemetry context where the call starts), and ended by [`finish`](Self::finish)
/// or when dropped. A `tracing` span bridged by `tracing-opentelemetry` cost about four
/// times as much CPU per span (`tests/benches/span_path.rs`, `docs/benchmarks.md`).
pub(crate) struct StorageSpan(Option<BoxedSpan>);

impl StorageSpan {
    /// No span: for readiness probes, which are not part of a request.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Ends the span, marking it failed if `result` is an error.
    pub(crate) fn finish<T>(self, result: &Result<T, StorageError>) {
        let Some(mut span) = self.0 else {
            return;
        };
        if let Err(err) = result {
            let kind = if err.is_unavailable() {
                "unavailable"
            } else {
                "internal"
            };
            span.set_attribute(KeyValue::new("error.type", kind));
            span.set_status(Status::error(kind));
        }
        span.end();
    }
}

impl fmt::Debug for StorageSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StorageSpan")
            .field(&self.0.as_ref().map(|span| span.span_context().span_id()))
            .finish()
    }
}

/// The tracer of a store's spans: the global provider's when the store opened (the server
/// installs its provider before it opens the store; so do the tests of the spans). Kept by
/// the store rather than taken per span: taking one costs a read lock, an instrumentation
/// scope and an allocation, some 550 instructions per request under callgrind, a third of
/// what starting the span cost (`docs/pipeline.md`).
#[derive(Clone)]
pub(crate) struct StorageTracer(Arc<BoxedTracer>);

impl StorageTracer {
    /// The global provider's tracer, as it is now (without one, as in tests of the store
    /// alone, spans are not recorded).
    pub(crate) fn from_global() -> Self {
        Self(Arc::new(opentelemetry::global::tracer("taskman-server")))
    }

    /// Starts the span of a call of `operation` on `system`.
    pub(crate) fn start(
        &self,
        system: &'static str,
        operation: Operation,
        server: Option<&ServerAddress>,
    ) -> StorageSpan {
        let tracer = &*self.0;
        let mut attributes = Vec::with_capacity(6);
        attributes.extend([
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.collection.name", "tasks"),
            KeyValue::new("db.operation.name", operation.name()),
            KeyValue::new("db.query.summary", operation.summary()),
        ]);
        if let Some(server) = server {
            attributes.push(KeyValue::new("server.address", server.address.clone()));
            attributes.push(KeyValue::new("server.port", i64::from(server.port)));
        }
        let span = tracer
            .span_builder(operation.summary())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start(tracer);
        StorageSpan(Some(span))
    }
}

impl fmt::Debug for StorageTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageTracer")
    }
}

/// Now, as RFC 3339 UTC with microseconds: fixed width, so text order is time order. Both
/// backends store it as text, so a task reads the same from either.
pub(crate) fn timestamp() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend_and_never_show_the_password() {
        assert_eq!(
            "sqlite:taskman.db".parse::<StorageUrl>().unwrap(),
            StorageUrl::Sqlite(PathBuf::from("taskman.db"))
        );
        assert_eq!(
            "sqlite:///var/lib/t.db".parse::<StorageUrl>().unwrap(),
            StorageUrl::Sqlite(PathBuf::from("/var/lib/t.db"))
        );
        assert_eq!(
            "sqlite::memory:".parse::<StorageUrl>().unwrap(),
            StorageUrl::Sqlite(PathBuf::from(IN_MEMORY))
        );
        let url: StorageUrl = "postgres://app:s3cret@db.internal:5433/tasks"
            .parse()
            .unwrap();
        assert_eq!(url.to_string(), "postgres://app:***@db.internal:5433/tasks");
        assert_eq!(
            format!("{url:?}"),
            "StorageUrl(postgres://app:***@db.internal:5433/tasks)"
        );
        assert_eq!(
            url.unmasked(),
            "postgres://app:s3cret@db.internal:5433/tasks"
        );
        assert_eq!(
            mask_password("postgresql://app@h/db?password=s3cret&sslmode=disable"),
            "postgresql://app@h/db?password=***&sslmode=disable"
        );
        assert_eq!(
            "mysql://app:s3cret@h/db".parse::<StorageUrl>().unwrap_err(),
            URL_SCHEMES
        );
        assert!("sqlite:".parse::<StorageUrl>().is_err());
        let bad = "postgres://app:s3cret@h:notaport/db"
            .parse::<StorageUrl>()
            .unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
    }
}
