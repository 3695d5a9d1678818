//! The SQLite backend: one file, one connection, one process.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so a write is fsynced
//! to the WAL before its commit returns, and the API acknowledges a write only after that.
//! An acknowledged task therefore survives `kill -9` (which `synchronous=NORMAL` would already
//! give: the WAL is in the OS page cache) *and* a power cut or kernel crash (which needs the
//! fsync). The cost is one fsync per write, which this service can afford.
//!
//! Every write runs in an explicit transaction whose `COMMIT` result is checked. An
//! autocommit statement commits when it is reset, and rusqlite drops the error of that
//! reset when a statement is not stepped to its end (`query_row` on `INSERT … RETURNING`):
//! on a full disk such a write looked like a success and its id was handed out again.
//!
//! Availability: a call that fails because of the database's environment (disk full, I/O
//! error, the file deleted or replaced under us, locked by another process) is
//! [`StorageError::Unavailable`], which the API answers with 503. The store logs such an
//! episode once: one `error` line when it starts, `debug` lines while it lasts, one `info`
//! line with its duration and failed-call count when a call succeeds again.
//!
//! The file: the store remembers the `(device, inode)` of the file it opened and compares it
//! with the path's before every call. A database deleted or replaced while the server runs
//! would otherwise keep taking writes into an unlinked inode, lost at the next start; the
//! store refuses them instead and never recreates the file.
//!
//! Identity: `PRAGMA application_id` ([`APPLICATION_ID`]) marks the file as ours and
//! `PRAGMA user_version` counts the migrations applied. [`SqliteStore::open`] refuses, with one
//! line, a file that belongs to someone else or to a newer server, before changing it.
//!
//! Concurrency: one connection behind a [`Mutex`]. SQLite admits one writer at a time anyway,
//! our queries take microseconds, and a single connection is the only way `:memory:` can be
//! shared by all workers. Every call runs on Tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]), never on an async worker thread.
//!
//! Each call runs inside a `storage` tracing span named after the SQL operation, the child of
//! whatever span the request is in.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OptionalExtension as _, Row, Transaction, TransactionBehavior, params,
};

use super::{
    Access, ListQuery, Operation, OutageLog, Page, StorageError, StorageSpan, StorageTracer,
    Unavailable, timestamp,
};
use crate::task::{NewTask, Task, TaskChanges, TaskStatus};

/// `db.system.name` of this backend.
pub(super) const SYSTEM: &str = "sqlite";

/// The path that keeps the database in memory.
pub const IN_MEMORY: &str = ":memory:";

/// `PRAGMA application_id` of a taskman database: the ASCII of `TskM`.
pub const APPLICATION_ID: i32 = i32::from_be_bytes(*b"TskM");

/// Schema migrations, applied in order; `PRAGMA user_version` counts those already applied.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1. Tasks. AUTOINCREMENT so a deleted task's id (and its URL) is never reused.
    "CREATE TABLE tasks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        title       TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
        description TEXT,
        status      TEXT NOT NULL CHECK (status IN ('todo', 'in_progress', 'done')),
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX tasks_by_status ON tasks (status, id);",
];

/// The columns of `tasks` as migration 1 made them: how a database of the release before
/// `application_id` is recognised.
const TASKS_COLUMNS_V1: [&str; 6] = [
    "id",
    "title",
    "description",
    "status",
    "created_at",
    "updated_at",
];

const COLUMNS: &str = "id, title, description, status, created_at, updated_at";

/// How long a statement waits for another process holding the database lock (a backup, a
/// second server on the same file) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's message plus its extended code: "disk I/O error" alone does not say that it was
/// a write (`778`, `SQLITE_IOERR_WRITE`: a full disk or a file size limit) or an fsync.
pub(super) fn with_extended_code(err: &rusqlite::Error) -> String {
    match err.sqlite_extended_error_code() {
        Some(code) => format!("{err} (SQLite code {code})"),
        None => err.to_string(),
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(err: rusqlite::Error) -> Self {
        if is_environmental(&err) {
            Self::Unavailable(Unavailable::Sqlite(err))
        } else {
            Self::Query(err)
        }
    }
}

/// Failures of the disk, the file or its lock, as opposed to a statement's own fault.
fn is_environmental(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::PermissionDenied
                | ErrorCode::NoLargeFileSupport
        )
    )
}

/// Commits `tx`. Whatever stops a commit, the write did not happen, so any failure here is
/// [`StorageError::Unavailable`].
fn commit(tx: Transaction<'_>) -> Result<(), StorageError> {
    tx.commit()
        .map_err(|err| StorageError::Unavailable(Unavailable::Sqlite(err)))
}

/// The task store: cheap to clone, shared by all workers.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Mutex<Inner>>,
    tracer: StorageTracer,
}

/// Everything behind the store's one lock.
#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// The file opened, `None` in memory.
    file: Option<FileIdentity>,
    /// The unavailability episode in progress, if any.
    outage: OutageLog,
}

/// Which file a path named when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Result<Self, Unavailable> {
        let (device, inode) = device_and_inode(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Unavailable::FileGone {
                path: path.to_path_buf(),
            },
            _ => Unavailable::FileUnreadable {
                path: path.to_path_buf(),
                source,
            },
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            device,
            inode,
        })
    }

    /// Whether the path still names this file. One `stat`, about a microsecond.
    fn still_there(&self) -> Result<(), Unavailable> {
        let now = Self::of(&self.path)?;
        if now == *self {
            Ok(())
        } else {
            Err(Unavailable::FileReplaced {
                path: self.path.clone(),
            })
        }
    }
}

/// Whether the database at `path` is gone while its WAL is not. SQLite would create an
/// empty file, find the WAL of no database and delete it.
fn deleted_in_use(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    matches!(path.try_exists(), Ok(false)) && matches!(Path::new(&wal).try_exists(), Ok(true))
}

impl Drop for Inner {
    /// Closing a connection checkpoints the WAL into the file and deletes the WAL by name.
    /// When the file was deleted, that removes the last sign at the path that tasks were
    /// lost (the next start would begin empty, see [`StorageError::Deleted`]); when it was
    /// replaced, the WAL deleted could be the new file's. So a connection whose file is no
    /// longer at its path is leaked rather than closed: the process is ending anyway.
    fn drop(&mut self) {
        let lost = self
            .file
            .as_ref()
            .is_some_and(|file| file.still_there().is_err());
        if lost && let Ok(placeholder) = Connection::open_in_memory() {
            std::mem::forget(std::mem::replace(&mut self.conn, placeholder));
        }
    }
}

#[cfg(unix)]
fn device_and_inode(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn device_and_inode(path: &Path) -> io::Result<(u64, u64)> {
    // No inode to compare: notice a deleted file, not a replaced one.
    std::fs::metadata(path).map(|_| (0, 0))
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`; [`IN_MEMORY`] keeps
    /// it in memory. Refuses an empty path, a file another application made and a schema
    /// newer than this server's, without changing the file. Blocking: call it from a
    /// blocking context.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        if path.as_os_str().is_empty() {
            return Err(StorageError::EmptyPath);
        }
        let in_memory = path == Path::new(IN_MEMORY);
        if !in_memory && deleted_in_use(path) {
            return Err(StorageError::Deleted {
                path: path.to_path_buf(),
            });
        }
        let mut conn = if in_memory {
            Connection::open_in_memory()
        } else {
            Connection::open(path)
        }
        .map_err(StorageError::Open)?;
        prepare(&mut conn, path, in_memory)?;
        let file = if in_memory {
            None
        } else {
            Some(FileIdentity::of(path).map_err(StorageError::Unavailable)?)
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                file,
                outage: OutageLog::default(),
            })),
            tracer: StorageTracer::from_global(),
        })
    }

    /// Stores a new task and returns it with its id and timestamps.
    pub async fn create(&self, task: NewTask) -> Result<Task, StorageError> {
        self.call(
            self.tracer.start(SYSTEM, Operation::Insert, None),
            Access::Write,
            move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let created = {
                    let mut stmt = tx.prepare(&format!(
                        "INSERT INTO tasks (title, description, status, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?4) RETURNING {COLUMNS}"
                    ))?;
                    let now = timestamp();
                    let params = params![task.title.as_str(), task.description, task.status, now];
                    // Stepped to the end, so the statement's every error is seen here.
                    let mut rows = stmt
                        .query_map(params, task_from_row)?
                        .collect::<Result<Vec<_>, _>>()?;
                    rows.pop().ok_or(rusqlite::Error::QueryReturnedNoRows)?
                };
                commit(tx)?;
                Ok(created)
            },
        )
        .await
    }

    /// The task with this id, if there is one.
    pub async fn get(&self, id: i64) -> Result<Option<Task>, StorageError> {
        self.call(
            self.tracer.start(SYSTEM, Operation::Select, None),
            Access::Read,
            move |conn| Ok(select_one(conn, id)?),
        )
        .await
    }

    /// A page of tasks in id order, and how many match in total.
    pub async fn list(&self, query: ListQuery) -> Result<Page, StorageError> {
        self.call(
            self.tracer.start(SYSTEM, Operation::Select, None),
            Access::Read,
            move |conn| {
                // One snapshot for both statements, so `total` agrees with `items`.
                let tx = conn.transaction()?;
                let status = query.status;
                let total: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM tasks WHERE ?1 IS NULL OR status = ?1",
                    params![status],
                    |row| row.get(0),
                )?;
                let items = {
                    let mut stmt = tx.prepare(&format!(
                        "SELECT {COLUMNS} FROM tasks WHERE ?1 IS NULL OR status = ?1
                         ORDER BY id LIMIT ?2 OFFSET ?3"
                    ))?;
                    let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
                    stmt.query_map(params![status, query.limit, offset], task_from_row)?
                        .collect::<Result<Vec<_>, _>>()?
                };
                commit(tx)?;
                Ok(Page {
                    items,
                    total: u64::try_from(total).unwrap_or(0),
                })
            },
        )
        .await
    }

    /// Applies `changes` to the task with this id and returns it, or `None` if there is no
    /// such task. `updated_at` moves only when something was asked to change.
    pub async fn update(
        &self,
        id: i64,
        changes: TaskChanges,
    ) -> Result<Option<Task>, StorageError> {
        self.call(
            self.tracer.start(SYSTEM, Operation::Update, None),
            Access::Write,
            move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(mut task) = select_one(&tx, id)? else {
                    return Ok(None);
                };
                if changes.is_empty() {
                    return Ok(Some(task));
                }
                changes.apply_to(&mut task);
                task.updated_at = timestamp();
                tx.execute(
                    "UPDATE tasks SET title = ?2, description = ?3, status = ?4, updated_at = ?5
                     WHERE id = ?1",
                    params![
                        id,
                        task.title,
                        task.description,
                        task.status,
                        task.updated_at
                    ],
                )?;
                commit(tx)?;
                Ok(Some(task))
            },
        )
        .await
    }

    /// Deletes the task with this id; false if there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, StorageError> {
        self.call(
            self.tracer.start(SYSTEM, Operation::Delete, None),
            Access::Write,
            move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let deleted = tx.execute("DELETE FROM tasks WHERE id = ?1", [id])? == 1;
                commit(tx)?;
                Ok(deleted)
            },
        )
        .await
    }

    /// Whether the store can serve calls: its file is still the one it opened and the
    /// database still carries our [`APPLICATION_ID`]. Cheap (a `stat` and a header read);
    /// for readiness probes. It cannot see a full disk, which only a write reveals.
    pub async fn check(&self) -> Result<(), StorageError> {
        self.call(StorageSpan::none(), Access::Probe, |conn| {
            let id: i32 = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
            if id == APPLICATION_ID {
                Ok(())
            } else {
                Err(StorageError::Unavailable(Unavailable::FileReplaced {
                    path: conn.path().map(PathBuf::from).unwrap_or_default(),
                }))
            }
        })
        .await
    }

    /// Runs `f` with the connection on the blocking pool, once the file is known to be still
    /// ours, and ends `span` with its result.
    async fn call<T, F>(&self, span: StorageSpan, access: Access, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || {
            // A panic while locked cannot leave the connection half-written: an open
            // transaction rolls back when dropped. So a poisoned lock is safe to reuse.
            let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
            let inner = &mut *inner;
            let changes_before = inner.conn.total_changes();
            let result = match inner.file.as_ref().map(FileIdentity::still_there) {
                Some(Err(gone)) => Err(StorageError::Unavailable(gone)),
                Some(Ok(())) | None => f(&mut inner.conn),
            };
            // A write that changed nothing (an empty PATCH, deleting a missing task) wrote
            // nothing to the disk, so proves nothing about it.
            let access = match access {
                Access::Write if inner.conn.total_changes() == changes_before => Access::Read,
                other => other,
            };
            inner.outage.record(access, &result);
            result
        })
        .await
        .map_err(StorageError::from)
        .and_then(|result| result);
        span.finish(&result);
        result
    }
}

/// Makes a write beyond the process's file size limit (`ulimit -f`, `prlimit --fsize`) fail
/// with `EFBIG`, which SQLite reports and the API answers with 503, instead of killing the
/// server: SIGXFSZ's default action terminates the process, losing every request in flight
/// without a word in the log. Registering a handler replaces that default for the rest of
/// the process (Tokio never unregisters it); the task only drains the notifications. Safe
/// code: `tokio::signal` installs the handler, no `sigaction` of our own. Needs a Tokio
/// runtime with signals enabled; a no-op off Unix.
pub fn handle_file_size_signal() -> io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        /// SIGXFSZ on Linux (but MIPS) and the BSDs; `libc` is not a dependency of this crate.
        const SIGXFSZ: i32 = 25;
        let mut file_too_large = signal(SignalKind::from_raw(SIGXFSZ))?;
        tokio::spawn(async move {
            while file_too_large.recv().await.is_some() {
                tracing::debug!("SIGXFSZ: a write went beyond the file size limit");
            }
        });
    }
    Ok(())
}

fn prepare(conn: &mut Connection, path: &Path, in_memory: bool) -> Result<(), StorageError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(StorageError::Open)?;
    if conn.is_readonly("main").map_err(StorageError::Open)? {
        return Err(StorageError::ReadOnly);
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(StorageError::Open)?;
    // Before anything is written: a file that is not ours must be left as it was found, and
    // switching to WAL would already change it.
    migrate(conn, path)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(StorageError::Open)?;
    if !in_memory && !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "the file system does not support WAL; writes are still durable but slower");
    }
    Ok(())
}

/// Identifies the database (see [`identify`]) and applies the migrations it lacks, in one
/// transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StorageError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    // Immediate: two servers starting on one file must not both migrate it.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StorageError::Open)?;
    let found = identify(&tx, path, known)?;
    if found.user_version == known && found.application_id == APPLICATION_ID {
        // Nothing to write: an unchanged database is not rewritten at every start.
        return tx.commit().map_err(StorageError::Open);
    }
    let applied = usize::try_from(found.user_version).unwrap_or(0);
    for sql in MIGRATIONS.get(applied..).unwrap_or_default() {
        tx.execute_batch(sql).map_err(StorageError::Open)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(StorageError::Open)?;
    tx.pragma_update(None, "user_version", known)
        .map_err(StorageError::Open)?;
    tx.commit().map_err(StorageError::Open)
}

/// What [`identify`] read from a database's header.
#[derive(Debug)]
struct Identity {
    application_id: i32,
    user_version: i64,
}

/// Decides whether `conn` holds a database this server may use:
///
/// | `application_id` | `user_version` | holds | verdict |
/// |---|---|---|---|
/// | 0 | 0 | nothing at all | new: initialise |
/// | ours | up to ours | | migrate |
/// | ours | newer | | [`StorageError::NewerSchema`] |
/// | 0 | 1 | a `tasks` table of migration 1's shape | the release before `application_id`: adopt |
/// | anything else | | | [`StorageError::NotOurs`] |
fn identify(conn: &Connection, path: &Path, known: i64) -> Result<Identity, StorageError> {
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(StorageError::Open)?;
    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StorageError::Open)?;
    let identity = Identity {
        application_id,
        user_version,
    };
    if application_id == APPLICATION_ID {
        return if user_version > known {
            Err(StorageError::NewerSchema {
                found: user_version,
                known,
            })
        } else {
            Ok(identity)
        };
    }
    let objects: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(StorageError::Open)?;
    let columns = {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('tasks') ORDER BY cid")
            .map_err(StorageError::Open)?;
        stmt.query_map([], |row| row.get::<_, String>(0))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(StorageError::Open)?
    };
    let ours_v1 = columns == TASKS_COLUMNS_V1;
    match (application_id, user_version) {
        (0, 0) if objects == 0 => return Ok(identity),
        (0, 1) if ours_v1 => return Ok(identity),
        _ => {}
    }
    let found = if columns.is_empty() {
        "no tasks table"
    } else if ours_v1 {
        "a tasks table this server did not make"
    } else {
        "a tasks table of another shape"
    };
    Err(StorageError::NotOurs {
        path: path.to_path_buf(),
        application_id,
        user_version,
        found,
    })
}

fn select_one(conn: &Connection, id: i64) -> rusqlite::Result<Option<Task>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
        [id],
        task_from_row,
    )
    .optional()
}

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: row.get(0)?,
        title: row.get(1)?,
        description: row.get(2)?,
        status: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
    })
}

impl ToSql for TaskStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for TaskStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|err| FromSqlError::Other(Box::new(err)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::task::Title;

    fn memory() -> SqliteStore {
        SqliteStore::open(Path::new(IN_MEMORY)).unwrap()
    }

    fn new_task(title: &str, status: TaskStatus) -> NewTask {
        NewTask {
            title: Title::new(title.to_owned()).unwrap(),
            description: None,
            status,
        }
    }

    #[tokio::test]
    async fn create_get_update_delete() {
        let store = memory();
        let created = store
            .create(NewTask {
                description: Some("details".into()),
                ..new_task("write tests", TaskStatus::Todo)
            })
            .await
            .unwrap();
        assert_eq!(created.id, 1);
        assert_eq!(created.description.as_deref(), Some("details"));
        assert_eq!(created.created_at, created.updated_at);
        assert!(created.created_at.ends_with('Z'), "{}", created.created_at);
        assert_eq!(store.get(1).await.unwrap(), Some(created.clone()));

        let unchanged = store.update(1, TaskChanges::default()).await.unwrap();
        assert_eq!(unchanged, Some(created.clone()));

        let changes = TaskChanges {
            description: Some(None),
            status: Some(TaskStatus::Done),
            ..TaskChanges::default()
        };
        let updated = store.update(1, changes).await.unwrap().unwrap();
        assert_eq!(updated.title, "write tests");
        assert_eq!(updated.description, None);
        assert_eq!(updated.status, TaskStatus::Done);
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(store.get(1).await.unwrap(), Some(updated));

        assert!(store.delete(1).await.unwrap());
        assert!(!store.delete(1).await.unwrap());
        assert_eq!(store.get(1).await.unwrap(), None);
        assert_eq!(store.update(1, TaskChanges::default()).await.unwrap(), None);
        // Ids are not reused after a delete.
        assert_eq!(
            store
                .create(new_task("next", TaskStatus::Todo))
                .await
                .unwrap()
                .id,
            2
        );
    }

    #[tokio::test]
    async fn list_pages_and_filters() {
        let store = memory();
        for i in 0..5 {
            let status = if i % 2 == 0 {
                TaskStatus::Todo
            } else {
                TaskStatus::Done
            };
            store
                .create(new_task(&format!("t{i}"), status))
                .await
                .unwrap();
        }
        let page = |limit, offset, status| ListQuery {
            limit,
            offset,
            status,
        };
        let titles = |p: &Page| p.items.iter().map(|t| t.title.clone()).collect::<Vec<_>>();

        let all = store.list(page(100, 0, None)).await.unwrap();
        assert_eq!(
            (titles(&all), all.total),
            (
                vec!["t0", "t1", "t2", "t3", "t4"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                5
            )
        );
        let second = store.list(page(2, 2, None)).await.unwrap();
        assert_eq!(
            (titles(&second), second.total),
            (vec!["t2".to_owned(), "t3".to_owned()], 5)
        );
        let todo = store
            .list(page(100, 1, Some(TaskStatus::Todo)))
            .await
            .unwrap();
        assert_eq!(
            (titles(&todo), todo.total),
            (vec!["t2".to_owned(), "t4".to_owned()], 3)
        );
        let none = store
            .list(page(0, 0, Some(TaskStatus::InProgress)))
            .await
            .unwrap();
        assert_eq!((none.items.len(), none.total), (0, 0));
        let beyond = store.list(page(10, u64::MAX, None)).await.unwrap();
        assert_eq!((beyond.items.len(), beyond.total), (0, 5));
    }

    /// Every task in the database at `path`, read by a fresh store.
    async fn all_tasks(path: &Path) -> Vec<Task> {
        let store = SqliteStore::open(path).unwrap();
        let page = |offset| ListQuery {
            limit: 100,
            offset,
            status: None,
        };
        let mut tasks = Vec::new();
        loop {
            let items = store.list(page(tasks.len() as u64)).await.unwrap().items;
            if items.is_empty() {
                return tasks;
            }
            tasks.extend(items);
        }
    }

    fn distinct_ids(tasks: &[Task]) -> bool {
        tasks.iter().map(|t| t.id).collect::<BTreeSet<_>>().len() == tasks.len()
    }

    /// The commit hook runs at the commit itself, after every statement of the transaction
    /// has succeeded: a vetoed commit fails exactly where a full disk fails (writing the WAL
    /// at COMMIT). That is the failure the old `query_row` on `INSERT … RETURNING` lost,
    /// which acknowledged the task and handed its id out again; `max_page_count` (below)
    /// fails earlier, at the statement, which even that code reported.
    #[tokio::test]
    async fn a_write_whose_commit_fails_is_never_acknowledged_and_no_id_is_given_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let store = SqliteStore::open(&path).unwrap();
        let veto = Arc::new(AtomicBool::new(false));
        let hook = Arc::clone(&veto);
        store
            .inner
            .lock()
            .unwrap()
            .conn
            .commit_hook(Some(move || hook.load(Ordering::SeqCst)))
            .unwrap();

        let kept = store
            .create(new_task("kept", TaskStatus::Todo))
            .await
            .unwrap();
        let doomed = store
            .create(new_task("doomed", TaskStatus::Todo))
            .await
            .unwrap();
        veto.store(true, Ordering::SeqCst);
        for i in 0..5 {
            let lost = store
                .create(new_task(&format!("lost {i}"), TaskStatus::Todo))
                .await;
            assert!(
                lost.is_err(),
                "an uncommitted create was acknowledged: {lost:?}"
            );
        }
        let done = TaskChanges {
            status: Some(TaskStatus::Done),
            ..TaskChanges::default()
        };
        let update = store.update(kept.id, done).await;
        assert!(
            update.is_err(),
            "an uncommitted update was acknowledged: {update:?}"
        );
        let delete = store.delete(doomed.id).await;
        assert!(
            delete.is_err(),
            "an uncommitted delete was acknowledged: {delete:?}"
        );
        veto.store(false, Ordering::SeqCst);
        let after = store
            .create(new_task("after", TaskStatus::Todo))
            .await
            .unwrap();
        drop(store);

        let stored = all_tasks(&path).await;
        assert_eq!(stored, vec![kept, doomed, after]);
        assert!(distinct_ids(&stored), "{stored:?}");
    }

    /// A database that cannot grow (`max_page_count`, SQLite's deterministic SQLITE_FULL):
    /// whatever each write answered, after a reopen the database holds exactly the
    /// acknowledged tasks, acknowledged updates and deletes included, each id once.
    #[tokio::test]
    async fn a_full_database_holds_exactly_what_it_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let store = SqliteStore::open(&path).unwrap();
        {
            let inner = store.inner.lock().unwrap();
            let conn = &inner.conn;
            let pages: i64 = conn
                .pragma_query_value(None, "page_count", |r| r.get(0))
                .unwrap();
            conn.pragma_update(None, "max_page_count", pages + 8)
                .unwrap();
        }
        let mut acknowledged = BTreeMap::new();
        let mut refused = 0;
        for i in 0..200 {
            let task = NewTask {
                description: Some("x".repeat(1500)),
                ..new_task(&format!("task {i}"), TaskStatus::Todo)
            };
            match store.create(task).await {
                Ok(task) => {
                    assert!(
                        acknowledged.insert(task.id, task).is_none(),
                        "id given twice"
                    );
                }
                Err(err) => {
                    assert!(err.is_unavailable(), "{err}");
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "the database never filled up");
        let ids: Vec<i64> = acknowledged.keys().copied().collect();
        for id in &ids {
            let grow = TaskChanges {
                description: Some(Some("y".repeat(3000))),
                ..TaskChanges::default()
            };
            if let Ok(Some(task)) = store.update(*id, grow).await {
                acknowledged.insert(*id, task);
            }
        }
        if store.delete(ids[0]).await.unwrap_or(false) {
            acknowledged.remove(&ids[0]);
        }
        drop(store);

        let stored = all_tasks(&path).await;
        assert!(distinct_ids(&stored), "{stored:?}");
        assert_eq!(stored, acknowledged.into_values().collect::<Vec<_>>());
    }

    #[test]
    fn file_database_uses_wal_and_full_sync_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let store = SqliteStore::open(&path).unwrap();
        {
            let inner = store.inner.lock().unwrap();
            let conn = &inner.conn;
            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            let sync: i64 = conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            assert_eq!(sync, 2, "synchronous=FULL");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let created = runtime
            .block_on(store.create(new_task("persisted", TaskStatus::InProgress)))
            .unwrap();
        drop(store);

        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(
            runtime.block_on(reopened.get(created.id)).unwrap(),
            Some(created)
        );
    }

    #[test]
    fn refuses_a_database_from_a_newer_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            "the task database has schema version 99, newer than this server's 1"
        );
    }

    #[test]
    fn missing_directory_is_an_open_error() {
        let err = SqliteStore::open(Path::new("/nonexistent/dir/tasks.db")).unwrap_err();
        assert!(matches!(err, StorageError::Open(_)), "{err}");
    }

    #[test]
    fn an_empty_path_is_refused_rather_than_a_temporary_database() {
        let err = SqliteStore::open(Path::new("")).unwrap_err();
        assert!(matches!(err, StorageError::EmptyPath), "{err}");
    }

    fn header(path: &Path) -> (i32, i64) {
        let conn = Connection::open(path).unwrap();
        let id = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        let version = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        (id, version)
    }

    #[test]
    fn a_new_database_carries_our_application_id_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(header(&path), (APPLICATION_ID, 1));
        assert_eq!(format!("{APPLICATION_ID:08x}"), "54736b4d");
    }

    #[tokio::test]
    async fn a_database_of_the_release_before_application_id_is_adopted_with_its_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        {
            // What the previous release left: migration 1, user_version 1, no application_id.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute(
                "INSERT INTO tasks (title, status, created_at, updated_at)
                 VALUES ('old', 'todo', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get(1).await.unwrap().unwrap().title, "old");
        drop(store);
        assert_eq!(header(&path), (APPLICATION_ID, 1));
    }

    /// Opens a file made by `setup` and returns the refusal, checking the file was left
    /// byte for byte as it was.
    fn refusal(setup: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(setup)
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert_eq!(std::fs::read(&path).unwrap(), before, "refused but changed");
        assert!(!err.contains('\n'), "{err}");
        err.replace(&path.display().to_string(), "/path/x.db")
    }

    #[test]
    fn someone_elses_sqlite_file_is_refused_with_one_line_and_left_alone() {
        assert_eq!(
            refusal("CREATE TABLE notes (body TEXT); PRAGMA user_version = 1;"),
            "/path/x.db is not a taskman database (application_id 0x00000000, user_version 1, \
             no tasks table)"
        );
        assert_eq!(
            refusal(&format!("{} PRAGMA user_version = 0;", MIGRATIONS[0])),
            "/path/x.db is not a taskman database (application_id 0x00000000, user_version 0, \
             a tasks table this server did not make)"
        );
        assert_eq!(
            refusal("CREATE TABLE tasks (id INTEGER, what TEXT); PRAGMA user_version = 1;"),
            "/path/x.db is not a taskman database (application_id 0x00000000, user_version 1, \
             a tasks table of another shape)"
        );
        assert_eq!(
            refusal(&format!(
                "{} PRAGMA user_version = 1; PRAGMA application_id = 1179403647;",
                MIGRATIONS[0]
            )),
            "/path/x.db is not a taskman database (application_id 0x464c457f, user_version 1, \
             a tasks table this server did not make)"
        );
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(
            &path,
            "just some text, long enough to be looked at by SQLite ".repeat(20),
        )
        .unwrap();
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert_eq!(err, "cannot open the task database: file is not a database");
    }

    #[tokio::test]
    async fn a_deleted_file_refuses_every_call_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let aside = dir.path().join("aside.db");
        let store = SqliteStore::open(&path).unwrap();
        let kept = store
            .create(new_task("kept", TaskStatus::Todo))
            .await
            .unwrap();
        store.check().await.unwrap();

        std::fs::rename(&path, &aside).unwrap();
        let gone = store
            .create(new_task("lost", TaskStatus::Todo))
            .await
            .unwrap_err();
        assert!(
            matches!(
                gone,
                StorageError::Unavailable(Unavailable::FileGone { .. })
            ),
            "{gone}"
        );
        assert!(store.delete(kept.id).await.unwrap_err().is_unavailable());
        assert!(store.get(kept.id).await.unwrap_err().is_unavailable());
        assert!(store.check().await.unwrap_err().is_unavailable());
        assert!(!path.exists(), "the store recreated the file");

        // Someone else's file at the path is not ours either.
        std::fs::write(&path, b"").unwrap();
        let replaced = store
            .create(new_task("lost", TaskStatus::Todo))
            .await
            .unwrap_err();
        assert!(
            matches!(
                replaced,
                StorageError::Unavailable(Unavailable::FileReplaced { .. })
            ),
            "{replaced}"
        );
        assert!(store.check().await.is_err());

        // The same file back: business as usual, nothing lost, nothing extra.
        std::fs::rename(&aside, &path).unwrap();
        store.check().await.unwrap();
        let after = store
            .create(new_task("after", TaskStatus::Todo))
            .await
            .unwrap();
        drop(store);
        assert_eq!(all_tasks(&path).await, vec![kept, after]);
    }

    #[tokio::test]
    async fn a_database_deleted_in_use_is_not_silently_started_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .create(new_task("lost", TaskStatus::Todo))
            .await
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            store
                .create(new_task("refused", TaskStatus::Todo))
                .await
                .is_err()
        );
        drop(store);

        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StorageError::Deleted { .. }), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(!path.exists(), "the refused start created a database");
    }

    #[tokio::test]
    async fn a_clean_close_leaves_nothing_that_looks_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .create(new_task("kept", TaskStatus::Todo))
            .await
            .unwrap();
        drop(store);
        assert_eq!(all_tasks(&path).await.len(), 1);
    }

    /// Captures what `tracing` logs on this thread.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let mut inner = Inner {
            conn: Connection::open_in_memory().unwrap(),
            file: None,
            outage: OutageLog::default(),
        };
        let full = || {
            Err::<(), _>(StorageError::Unavailable(Unavailable::FileGone {
                path: PathBuf::from("/data/tasks.db"),
            }))
        };
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..10 {
                inner.outage.record(Access::Write, &full());
                // A full disk still reads: that ends nothing.
                inner.outage.record(Access::Read, &Ok(()));
                inner.outage.record(Access::Probe, &Ok(()));
            }
            inner.outage.record(Access::Probe, &full());
            inner.outage.record(Access::Write, &Ok(()));
            // A new episode, started and ended by reads.
            inner.outage.record(Access::Read, &full());
            inner.outage.record(Access::Read, &Ok(()));
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        assert!(
            lines[0].contains("ERROR") && lines[0].contains("deleted or renamed"),
            "{log}"
        );
        assert!(
            lines[1].contains("INFO") && lines[1].contains("available again"),
            "{log}"
        );
        assert!(lines[1].contains("failed_calls=11"), "{log}");
        assert!(
            lines[2].contains("ERROR") && lines[3].contains("failed_calls=1"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn a_write_that_changes_nothing_does_not_end_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let store = SqliteStore::open(&path).unwrap();
        let task = store
            .create(new_task("kept", TaskStatus::Todo))
            .await
            .unwrap();
        let veto = Arc::new(AtomicBool::new(true));
        let hook = Arc::clone(&veto);
        store
            .inner
            .lock()
            .unwrap()
            .conn
            .commit_hook(Some(move || hook.load(Ordering::SeqCst)))
            .unwrap();
        let outage = || store.inner.lock().unwrap().outage.active();

        assert!(
            store
                .create(new_task("refused", TaskStatus::Todo))
                .await
                .is_err()
        );
        assert!(outage());
        // Calls that write nothing succeed on a full disk too: they must not end it.
        veto.store(false, Ordering::SeqCst);
        store.update(task.id, TaskChanges::default()).await.unwrap();
        assert!(!store.delete(task.id + 100).await.unwrap());
        store.get(task.id).await.unwrap();
        assert!(outage(), "ended by calls that wrote nothing");
        store
            .create(new_task("stored", TaskStatus::Todo))
            .await
            .unwrap();
        assert!(!outage());
    }
}
