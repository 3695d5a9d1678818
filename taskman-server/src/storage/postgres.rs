//! The PostgreSQL backend: a pool of connections to one database that several server
//! processes (replicas) share.
//!
//! Driver: `tokio-postgres` with `deadpool-postgres`'s pool, both plain async Rust on the
//! server's Tokio runtime; no TLS (`sslmode=disable` or `prefer` work, `require` is refused
//! at start): the database is expected on a private network or loopback.
//!
//! Bounds: every call waits at most `storage.acquire_timeout` for a connection and then at
//! most `storage.statement_timeout` for its statements, so a database that is down, full of
//! connections or hanging makes task requests fail with 503 within the sum of the two, never
//! hang. The statement timeout is enforced twice: by the client (a stopped server answers
//! nothing, not even a timeout) and by the server (`-c statement_timeout`, so a statement the
//! client gave up on does not hold its locks).
//!
//! Acknowledgement: every write is one transaction whose `COMMIT` result is checked; only an
//! `Ok` from `COMMIT` acknowledges it. A connection lost during `COMMIT` leaves the outcome
//! unknown ([`Unavailable::CommitUnknown`]): it is not acknowledged either (the write may be
//! stored, but no client was told so).
//!
//! Failures: an error without an SQLSTATE (I/O, a closed connection), or of the classes that
//! describe the server's state rather than the statement (08 connection, 53 resources,
//! 57 operator intervention such as a shutdown, 58 system, serialization and deadlock
//! failures, a read-only standby) is [`StorageError::Unavailable`]: 503. Anything else is a
//! statement's fault: 500. A connection that failed is dropped from the pool, not reused.
//!
//! Schema: migrations run at start, in one transaction holding a transaction-scoped advisory
//! lock ([`MIGRATION_LOCK`]), so replicas that start at once apply each migration exactly
//! once; `taskman_migrations` records them. A database with a `tasks` table but no
//! `taskman_migrations` is refused, as is one migrated by a newer server.

use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio_postgres::config::Host;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{IsolationLevel, NoTls, Row};

use super::{
    Access, ListQuery, Operation, OutageLog, Page, PoolOptions, PostgresUrl, ServerAddress,
    StorageError, StorageSpan, StorageTracer, Unavailable, timestamp,
};
use crate::task::{NewTask, Task, TaskChanges, TaskStatus};

/// `db.system.name` of this backend.
pub(super) const SYSTEM: &str = "postgresql";

/// The key of the advisory lock held while migrating: the ASCII of `TskM`, as the SQLite
/// backend's `application_id`.
pub const MIGRATION_LOCK: i64 = 0x5473_6b4d;

/// Schema migrations, applied in order; `taskman_migrations` records those applied.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1. Tasks. An identity column never hands out an id twice, not even after a delete or
    // a rolled-back insert. Timestamps are text in the SQLite backend's fixed-width format,
    // so a task reads the same from either backend.
    "CREATE TABLE tasks (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        title       TEXT NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
        description TEXT,
        status      TEXT NOT NULL CHECK (status IN ('todo', 'in_progress', 'done')),
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX tasks_by_status ON tasks (status, id);",
];

const COLUMNS: &str = "id, title, description, status, created_at, updated_at";

/// The task store on PostgreSQL: cheap to clone, shared by all workers.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pool: Pool,
    server: ServerAddress,
    options: PoolOptions,
    outage: Mutex<OutageLog>,
    tracer: StorageTracer,
}

impl PostgresStore {
    /// Builds the pool, connects once (within `options.acquire_timeout`) and migrates the
    /// schema. Every failure is [`StorageError::Connect`] (unreachable, refused, bad
    /// credentials, no such database), [`StorageError::NewerSchema`] or
    /// [`StorageError::NotOursPostgres`]; none of them quotes the password.
    pub async fn connect(url: &PostgresUrl, options: PoolOptions) -> Result<Self, StorageError> {
        let mut config = url
            .config()
            .map_err(|err| StorageError::Connect(err.to_string()))?;
        config.connect_timeout(options.acquire_timeout);
        let statement_ms = options.statement_timeout.as_millis();
        let server_options = match config.get_options() {
            Some(own) => format!("{own} -c statement_timeout={statement_ms}"),
            None => format!("-c statement_timeout={statement_ms}"),
        };
        config.options(server_options);
        if config.get_application_name().is_none() {
            // Names our sessions in `pg_stat_activity`.
            config.application_name("taskman-server");
        }
        let server = ServerAddress {
            address: match config.get_hosts().first() {
                Some(Host::Tcp(host)) => host.clone(),
                #[cfg(unix)]
                Some(Host::Unix(path)) => path.display().to_string(),
                None => "localhost".to_owned(),
            },
            port: config.get_ports().first().copied().unwrap_or(5432),
        };
        let manager_config = ManagerConfig {
            // A pooled connection whose server went away is closed by its connection task;
            // `Fast` sees that without a round trip, and a call that fails drops its
            // connection.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = Manager::from_config(config, NoTls, manager_config);
        let size = usize::try_from(options.pool_size.get()).unwrap_or(usize::MAX);
        let pool = Pool::builder(manager)
            .max_size(size)
            .build()
            .map_err(|err| StorageError::Connect(err.to_string()))?;
        let store = Self {
            shared: Arc::new(Shared {
                pool,
                server,
                options,
                outage: Mutex::new(OutageLog::default()),
                tracer: StorageTracer::from_global(),
            }),
        };
        let mut client = store.acquire().await.map_err(|err| match err {
            StorageError::Unavailable(why) => StorageError::Connect(why.to_string()),
            other => other,
        })?;
        let migrated = tokio::time::timeout(
            options.acquire_timeout + options.statement_timeout,
            migrate(&mut client),
        )
        .await
        .unwrap_or_else(|_| {
            Err(StorageError::Connect(
                "migrating the schema took longer than storage.acquire_timeout + \
                 storage.statement_timeout"
                    .to_owned(),
            ))
        });
        match migrated {
            Ok(()) => Ok(store),
            Err(err @ (StorageError::NewerSchema { .. } | StorageError::NotOursPostgres)) => {
                Err(err)
            }
            Err(StorageError::Connect(why)) => Err(StorageError::Connect(why)),
            Err(other) => Err(StorageError::Connect(format!(
                "migrating the schema: {other}"
            ))),
        }
    }

    /// Stores a new task and returns it with its id and timestamps.
    pub async fn create(&self, task: NewTask) -> Result<Task, StorageError> {
        self.call(Operation::Insert, Access::Write, async move |client| {
            let tx = client.transaction().await.map_err(classify)?;
            let now = timestamp();
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO tasks (title, description, status, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $4) RETURNING {COLUMNS}"
                    ),
                    &[&task.title.as_str(), &task.description, &task.status, &now],
                )
                .await
                .map_err(classify)?;
            let created = task_from_row(&row)?;
            tx.commit().await.map_err(commit_failed)?;
            Ok(created)
        })
        .await
    }

    /// The task with this id, if there is one.
    pub async fn get(&self, id: i64) -> Result<Option<Task>, StorageError> {
        self.call(Operation::Select, Access::Read, async move |client| {
            select_one(client, id, "").await
        })
        .await
    }

    /// A page of tasks in id order, and how many match in total, from one snapshot.
    pub async fn list(&self, query: ListQuery) -> Result<Page, StorageError> {
        self.call(Operation::Select, Access::Read, async move |client| {
            // One snapshot for both statements, so `total` agrees with `items`.
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(classify)?;
            let status = query.status;
            let total: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM tasks WHERE $1::text IS NULL OR status = $1",
                    &[&status],
                )
                .await
                .map_err(classify)?
                .try_get(0)
                .map_err(StorageError::PostgresQuery)?;
            let limit = i64::from(query.limit);
            let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
            let rows = tx
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM tasks WHERE $1::text IS NULL OR status = $1
                         ORDER BY id LIMIT $2 OFFSET $3"
                    ),
                    &[&status, &limit, &offset],
                )
                .await
                .map_err(classify)?;
            let items = rows
                .iter()
                .map(task_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().await.map_err(classify)?;
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
        self.call(Operation::Update, Access::Write, async move |client| {
            let tx = client.transaction().await.map_err(classify)?;
            // The row lock keeps a concurrent PATCH through another replica from being
            // overwritten with what this one read.
            let Some(mut task) = select_one(&tx, id, " FOR UPDATE").await? else {
                return Ok(None);
            };
            if changes.is_empty() {
                return Ok(Some(task));
            }
            changes.apply_to(&mut task);
            task.updated_at = timestamp();
            tx.execute(
                "UPDATE tasks SET title = $2, description = $3, status = $4, updated_at = $5
                 WHERE id = $1",
                &[
                    &id,
                    &task.title,
                    &task.description,
                    &task.status,
                    &task.updated_at,
                ],
            )
            .await
            .map_err(classify)?;
            tx.commit().await.map_err(commit_failed)?;
            Ok(Some(task))
        })
        .await
    }

    /// Deletes the task with this id; false if there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, StorageError> {
        self.call(Operation::Delete, Access::Write, async move |client| {
            let tx = client.transaction().await.map_err(classify)?;
            let deleted = tx
                .execute("DELETE FROM tasks WHERE id = $1", &[&id])
                .await
                .map_err(classify)?
                == 1;
            tx.commit().await.map_err(commit_failed)?;
            Ok(deleted)
        })
        .await
    }

    /// Whether the database answers: a connection from the pool (within
    /// `storage.acquire_timeout`) and `SELECT 1` on it (within `storage.statement_timeout`).
    pub async fn check(&self) -> Result<(), StorageError> {
        self.run(StorageSpan::none(), Access::Probe, async |client| {
            client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(classify)
        })
        .await
    }

    /// Runs `f` on a pooled connection inside a storage span for `operation`.
    async fn call<T>(
        &self,
        operation: Operation,
        access: Access,
        f: impl AsyncFnOnce(&mut Object) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let span = self
            .shared
            .tracer
            .start(SYSTEM, operation, Some(&self.shared.server));
        self.run(span, access, f).await
    }

    /// Acquires a connection, runs `f` on it within the statement timeout, drops the
    /// connection if the call failed because of it, and keeps the outage log.
    async fn run<T>(
        &self,
        span: StorageSpan,
        access: Access,
        f: impl AsyncFnOnce(&mut Object) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let limit = self.shared.options.statement_timeout;
        let result = async {
            let mut client = self.acquire().await?;
            match tokio::time::timeout(limit, f(&mut client)).await {
                Ok(result) => {
                    if matches!(&result, Err(err) if err.is_unavailable()) {
                        // Broken or suspect: a fresh connection serves the next call.
                        drop(Object::take(client));
                    }
                    result
                }
                Err(_elapsed) => {
                    // The server may still be working on it; this connection is in an
                    // unknown state and must not serve another call.
                    drop(Object::take(client));
                    Err(StorageError::Unavailable(Unavailable::StatementTimeout(
                        limit,
                    )))
                }
            }
        }
        .await;
        span.finish(&result);
        // Any call that succeeds shows the server is back: unlike a full disk, a database
        // server that answers reads also takes writes, so reads end an outage too.
        let access = match access {
            Access::Probe => Access::Probe,
            Access::Read | Access::Write => Access::Write,
        };
        self.shared
            .outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(access, &result);
        result
    }

    /// A connection from the pool, within `storage.acquire_timeout`.
    async fn acquire(&self) -> Result<Object, StorageError> {
        let limit = self.shared.options.acquire_timeout;
        match tokio::time::timeout(limit, self.shared.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(PoolError::Backend(err))) => {
                Err(StorageError::Unavailable(Unavailable::Postgres(err)))
            }
            Ok(Err(_)) | Err(_) => Err(StorageError::Unavailable(Unavailable::AcquireTimeout(
                limit,
            ))),
        }
    }
}

/// Applies the migrations the database lacks, under the migration lock.
async fn migrate(client: &mut Object) -> Result<(), StorageError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let tx = client.transaction().await.map_err(classify)?;
    // Released at COMMIT or ROLLBACK, also when this process dies mid-way.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(classify)?;
    let found = tx
        .query_one(
            "SELECT to_regclass('taskman_migrations') IS NOT NULL, to_regclass('tasks') IS NOT NULL",
            &[],
        )
        .await
        .map_err(classify)?;
    let (has_migrations, has_tasks): (bool, bool) = (
        found.try_get(0).map_err(StorageError::PostgresQuery)?,
        found.try_get(1).map_err(StorageError::PostgresQuery)?,
    );
    if !has_migrations {
        if has_tasks {
            return Err(StorageError::NotOursPostgres);
        }
        tx.batch_execute(
            "CREATE TABLE taskman_migrations (
                version    BIGINT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(classify)?;
    }
    let applied: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM taskman_migrations",
            &[],
        )
        .await
        .map_err(classify)?
        .try_get(0)
        .map_err(StorageError::PostgresQuery)?;
    if applied > known {
        return Err(StorageError::NewerSchema {
            found: applied,
            known,
        });
    }
    let start = usize::try_from(applied).unwrap_or(usize::MAX);
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.batch_execute(sql).await.map_err(classify)?;
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO taskman_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(classify)?;
    }
    tx.commit().await.map_err(classify)
}

async fn select_one(
    client: &impl deadpool_postgres::GenericClient,
    id: i64,
    lock: &str,
) -> Result<Option<Task>, StorageError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM tasks WHERE id = $1{lock}"),
            &[&id],
        )
        .await
        .map_err(classify)?;
    row.as_ref().map(task_from_row).transpose()
}

fn task_from_row(row: &Row) -> Result<Task, StorageError> {
    let get = |err| StorageError::PostgresQuery(err);
    Ok(Task {
        id: row.try_get(0).map_err(get)?,
        title: row.try_get(1).map_err(get)?,
        description: row.try_get(2).map_err(get)?,
        status: row.try_get(3).map_err(get)?,
        created_at: row.try_get(4).map_err(get)?,
        updated_at: row.try_get(5).map_err(get)?,
    })
}

/// The driver's error on one line, with the server's own message: its `Display` of a
/// server error is only "db error".
pub(super) fn describe(err: &tokio_postgres::Error) -> String {
    let text = match err.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text = format!("{text}: {cause_text}");
                }
                source = cause.source();
            }
            text
        }
    };
    text.replace('\n', " ")
}

/// A statement's error: the server's state ([`StorageError::Unavailable`]) or the
/// statement's fault.
fn classify(err: tokio_postgres::Error) -> StorageError {
    if is_environmental(&err) {
        StorageError::Unavailable(Unavailable::Postgres(err))
    } else {
        StorageError::PostgresQuery(err)
    }
}

/// A failed `COMMIT`: never acknowledged. Without an SQLSTATE the connection broke while
/// the commit was on its way, so nobody knows whether it happened.
fn commit_failed(err: tokio_postgres::Error) -> StorageError {
    if err.code().is_none() {
        StorageError::Unavailable(Unavailable::CommitUnknown(err))
    } else {
        StorageError::Unavailable(Unavailable::Postgres(err))
    }
}

fn is_environmental(err: &tokio_postgres::Error) -> bool {
    let Some(state) = err.code() else {
        // No SQLSTATE: the connection, not the statement (I/O, closed, timed out). A value
        // that fails to convert has none either, but rows are read with `try_get`, whose
        // errors are mapped to `PostgresQuery` without passing here.
        return true;
    };
    let code = state.code();
    ["08", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        // serialization_failure, deadlock_detected, read_only_sql_transaction (a standby)
        || matches!(code, "40001" | "40P01" | "25006")
}

impl ToSql for TaskStatus {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for TaskStatus {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::{Duration, Instant};

    use ::tests::postgres::Postgres;

    use super::*;
    use crate::storage::StorageUrl;

    /// A store on a fresh database with `options`' pool size and timeouts. It connects and
    /// migrates with generous bounds (a loaded machine may take seconds to log in), then
    /// serves calls through the same pool with `options`' own.
    async fn store(cluster: &Postgres, options: PoolOptions) -> PostgresStore {
        let url = cluster.create_database().unwrap();
        let Ok(StorageUrl::Postgres(url)) = url.parse::<StorageUrl>() else {
            panic!("{url}")
        };
        let generous = PoolOptions {
            pool_size: options.pool_size,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(30),
        };
        let connected = PostgresStore::connect(&url, generous).await.unwrap();
        PostgresStore {
            shared: Arc::new(Shared {
                pool: connected.shared.pool.clone(),
                server: connected.shared.server.clone(),
                options,
                outage: Mutex::new(OutageLog::default()),
                tracer: StorageTracer::from_global(),
            }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_with_no_free_connection_answers_unavailable_after_the_acquire_timeout() {
        let Some(cluster) = Postgres::start_or_skip("full pool") else {
            return;
        };
        let options = PoolOptions {
            pool_size: NonZeroU32::MIN,
            acquire_timeout: Duration::from_millis(300),
            ..PoolOptions::default()
        };
        let store = store(&cluster, options).await;
        let held = store.acquire().await.unwrap();
        let started = Instant::now();
        let err = store.get(1).await.unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Unavailable(Unavailable::AcquireTimeout(_))
            ),
            "{err}"
        );
        assert!(started.elapsed() >= options.acquire_timeout);
        assert!(store.check().await.unwrap_err().is_unavailable());
        drop(held);
        assert_eq!(store.get(1).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_slower_than_the_statement_timeout_is_unavailable_and_does_not_hang() {
        let Some(cluster) = Postgres::start_or_skip("slow statement") else {
            return;
        };
        let options = PoolOptions {
            pool_size: NonZeroU32::MIN,
            statement_timeout: Duration::from_millis(300),
            ..PoolOptions::default()
        };
        let store = store(&cluster, options).await;
        let started = Instant::now();
        let slow = store
            .run(StorageSpan::none(), Access::Read, async |client| {
                client
                    .simple_query("SELECT pg_sleep(60)")
                    .await
                    .map(drop)
                    .map_err(classify)
            })
            .await;
        assert!(
            slow.as_ref().is_err_and(StorageError::is_unavailable),
            "{slow:?}"
        );
        // Far below the minute the statement asked for, even on a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        // The one connection of the pool was not left busy: the next call is served.
        assert_eq!(store.get(1).await.unwrap(), None);
    }
}
