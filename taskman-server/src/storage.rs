//! SQLite persistence for tasks.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so a write is fsynced
//! to the WAL before its statement returns, and the API acknowledges a write only after that.
//! An acknowledged task therefore survives `kill -9` (which `synchronous=NORMAL` would already
//! give: the WAL is in the OS page cache) *and* a power cut or kernel crash (which needs the
//! fsync). The cost is one fsync per write, which this service can afford.
//!
//! Every write runs in an explicit transaction whose `COMMIT` result is checked: that is
//! where a full disk or an I/O error shows, and an unchecked commit would acknowledge a
//! task that was never stored (and hand its id out again).
//!
//! Concurrency: one connection behind a [`Mutex`]. SQLite admits one writer at a time anyway,
//! our queries take microseconds, and a single connection is the only way `:memory:` can be
//! shared by all workers. Every call runs on Tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]), never on an async worker thread.
//!
//! Each call runs inside a `storage` tracing span named after the SQL operation, the child of
//! whatever span the request is in.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use tracing::Span;

use crate::task::{NewTask, Task, TaskChanges, TaskStatus};

/// The path that keeps the database in memory.
pub const IN_MEMORY: &str = ":memory:";

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

const COLUMNS: &str = "id, title, description, status, created_at, updated_at";

/// How long a statement waits for another process holding the database lock (a backup, a
/// second server on the same file) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A storage failure. Every variant is the server's fault or the disk's, never the client's:
/// "no such task" is `Ok(None)`, not an error. Messages include their cause (there is no
/// `source()` chain to repeat it), so one `Display` is the whole story, in logs and on stderr.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database could not be opened or prepared.
    #[error("cannot open the task database: {0}")]
    Open(rusqlite::Error),
    /// The database file cannot be written.
    #[error("the task database is read-only")]
    ReadOnly,
    /// A newer server has migrated this database.
    #[error("the task database has schema version {found}, newer than this server's {known}")]
    NewerSchema {
        /// The database's `user_version`.
        found: i64,
        /// The last migration this server knows.
        known: i64,
    },
    /// A statement failed.
    #[error("task database query failed: {0}")]
    Query(rusqlite::Error),
    /// The blocking task never reported back (the runtime is shutting down, or it panicked).
    #[error("task database call did not complete: {0}")]
    Interrupted(tokio::task::JoinError),
}

impl From<rusqlite::Error> for StorageError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Query(err)
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

/// The task store: cheap to clone, shared by all workers.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`; [`IN_MEMORY`] keeps
    /// it in memory. Blocking: call it from a blocking context.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let in_memory = path == Path::new(IN_MEMORY);
        let mut conn = if in_memory {
            Connection::open_in_memory()
        } else {
            Connection::open(path)
        }
        .map_err(StorageError::Open)?;
        prepare(&mut conn, in_memory)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Stores a new task and returns it with its id and timestamps.
    pub async fn create(&self, task: NewTask) -> Result<Task, StorageError> {
        self.call(db_span("INSERT", "INSERT tasks"), move |conn| {
            // An explicit transaction whose commit is checked: an autocommit `INSERT …
            // RETURNING` read with `query_row` commits when the statement is reset, and
            // rusqlite drops that error, so a failed commit (disk full) looked like success.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let created = {
                let mut stmt = tx.prepare(&format!(
                    "INSERT INTO tasks (title, description, status, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?4) RETURNING {COLUMNS}"
                ))?;
                let now = timestamp();
                let params = params![task.title.as_str(), task.description, task.status, now];
                // Stepped to the end, so every error of the statement is seen here.
                let mut rows = stmt
                    .query_map(params, task_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.pop().ok_or(rusqlite::Error::QueryReturnedNoRows)?
            };
            tx.commit()?;
            Ok(created)
        })
        .await
    }

    /// The task with this id, if there is one.
    pub async fn get(&self, id: i64) -> Result<Option<Task>, StorageError> {
        self.call(db_span("SELECT", "SELECT tasks"), move |conn| {
            Ok(select_one(conn, id)?)
        })
        .await
    }

    /// A page of tasks in id order, and how many match in total.
    pub async fn list(&self, query: ListQuery) -> Result<Page, StorageError> {
        self.call(db_span("SELECT", "SELECT tasks"), move |conn| {
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
            tx.commit()?;
            Ok(Page {
                items,
                total: u64::try_from(total).unwrap_or(0),
            })
        })
        .await
    }

    /// Applies `changes` to the task with this id and returns it, or `None` if there is no
    /// such task. `updated_at` moves only when something was asked to change.
    pub async fn update(
        &self,
        id: i64,
        changes: TaskChanges,
    ) -> Result<Option<Task>, StorageError> {
        self.call(db_span("UPDATE", "UPDATE tasks"), move |conn| {
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
            tx.commit()?;
            Ok(Some(task))
        })
        .await
    }

    /// Deletes the task with this id; false if there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, StorageError> {
        self.call(db_span("DELETE", "DELETE tasks"), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let deleted = tx.execute("DELETE FROM tasks WHERE id = ?1", [id])? == 1;
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    /// Runs `f` with the connection on the blocking pool, inside `span`.
    async fn call<T, F>(&self, span: Span, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            // A panic while locked cannot leave the connection half-written: an open
            // transaction rolls back when dropped. So a poisoned lock is safe to reuse.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let result = f(&mut conn);
            if let Err(err) = &result {
                tracing::error!(error = %err, "task database call failed");
            }
            result
        })
        .await?
    }
}

fn prepare(conn: &mut Connection, in_memory: bool) -> Result<(), StorageError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(StorageError::Open)?;
    if conn.is_readonly("main").map_err(StorageError::Open)? {
        return Err(StorageError::ReadOnly);
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(StorageError::Open)?;
    if !in_memory && !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "the file system does not support WAL; writes are still durable but slower");
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(StorageError::Open)?;
    migrate(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    // Immediate: two servers starting on one file must not both migrate it.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StorageError::Open)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StorageError::Open)?;
    if found > known {
        return Err(StorageError::NewerSchema { found, known });
    }
    let applied = usize::try_from(found).unwrap_or(0);
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql).map_err(StorageError::Open)?;
    }
    tx.pragma_update(None, "user_version", known)
        .map_err(StorageError::Open)?;
    tx.commit().map_err(StorageError::Open)
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

/// Now, as RFC 3339 UTC with microseconds: fixed width, so text order is time order.
fn timestamp() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// A span for one storage call, with the attributes OpenTelemetry's database conventions name
/// (`otel.*` fields are read by `tracing-opentelemetry` and ignored by plain logs).
fn db_span(operation: &'static str, summary: &'static str) -> Span {
    tracing::info_span!(
        "storage",
        otel.name = summary,
        otel.kind = "client",
        db.system.name = "sqlite",
        db.collection.name = "tasks",
        db.operation.name = operation,
    )
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

    fn memory() -> Store {
        Store::open(Path::new(IN_MEMORY)).unwrap()
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
        let store = Store::open(path).unwrap();
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
        let store = Store::open(&path).unwrap();
        let veto = Arc::new(AtomicBool::new(false));
        let hook = Arc::clone(&veto);
        store
            .conn
            .lock()
            .unwrap()
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
        let store = Store::open(&path).unwrap();
        {
            let conn = store.conn.lock().unwrap();
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
                Err(_) => refused += 1,
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
        let store = Store::open(&path).unwrap();
        {
            let conn = store.conn.lock().unwrap();
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

        let reopened = Store::open(&path).unwrap();
        assert_eq!(
            runtime.block_on(reopened.get(created.id)).unwrap(),
            Some(created)
        );
    }

    #[test]
    fn refuses_a_database_from_a_newer_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            "the task database has schema version 99, newer than this server's 1"
        );
    }

    #[test]
    fn missing_directory_is_an_open_error() {
        let err = Store::open(Path::new("/nonexistent/dir/tasks.db")).unwrap_err();
        assert!(matches!(err, StorageError::Open(_)), "{err}");
    }
}
