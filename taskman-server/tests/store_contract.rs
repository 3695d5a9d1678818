//! The store contract: one suite of promises, run against both backends through the same
//! [`Store`] the API uses. SQLite always runs; PostgreSQL runs on a throw-away cluster of the
//! `tests` crate's harness, and is reported as skipped (loudly, never silently passed) where
//! PostgreSQL is not installed, except under `CI`, where it must run.
//!
//! The PostgreSQL-only part checks what SQLite has no counterpart for: migrations raced by
//! replicas starting at once, refused URLs, and a server that goes away and comes back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use taskman_server::storage::{ListQuery, PoolOptions, StorageError, StorageUrl, Store};
use taskman_server::task::{NewTask, TaskChanges, TaskStatus, Title};
use tests::postgres::{PASSWORD, Postgres};

fn new_task(title: &str, status: TaskStatus) -> NewTask {
    NewTask {
        title: Title::new(title.to_owned()).unwrap(),
        description: None,
        status,
    }
}

fn page(limit: u32, offset: u64, status: Option<TaskStatus>) -> ListQuery {
    ListQuery {
        limit,
        offset,
        status,
    }
}

// ---- the contract, for any store ----

async fn create_get_update_delete(store: Store) {
    let created = store
        .create(NewTask {
            description: Some("details".into()),
            ..new_task("write tests", TaskStatus::Todo)
        })
        .await
        .unwrap();
    assert_eq!(created.description.as_deref(), Some("details"));
    assert_eq!(created.created_at, created.updated_at);
    assert!(created.created_at.ends_with('Z'), "{}", created.created_at);
    assert_eq!(store.get(created.id).await.unwrap(), Some(created.clone()));

    // An empty change set changes nothing, not even `updated_at`.
    let unchanged = store
        .update(created.id, TaskChanges::default())
        .await
        .unwrap();
    assert_eq!(unchanged, Some(created.clone()));

    let changes = TaskChanges {
        description: Some(None),
        status: Some(TaskStatus::Done),
        ..TaskChanges::default()
    };
    let updated = store.update(created.id, changes).await.unwrap().unwrap();
    assert_eq!(updated.title, "write tests");
    assert_eq!(updated.description, None);
    assert_eq!(updated.status, TaskStatus::Done);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(store.get(created.id).await.unwrap(), Some(updated));

    assert!(store.delete(created.id).await.unwrap());
    assert!(!store.delete(created.id).await.unwrap());
    assert_eq!(store.get(created.id).await.unwrap(), None);
    assert_eq!(
        store
            .update(created.id, TaskChanges::default())
            .await
            .unwrap(),
        None
    );
    // Ids are not reused after a delete.
    let next = store
        .create(new_task("next", TaskStatus::Todo))
        .await
        .unwrap();
    assert!(next.id > created.id, "{} after {}", next.id, created.id);
}

async fn list_pages_and_filters(store: Store) {
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
    let titles = |items: &[taskman_server::task::Task]| {
        items.iter().map(|t| t.title.clone()).collect::<Vec<_>>()
    };
    let all = store.list(page(100, 0, None)).await.unwrap();
    assert_eq!(titles(&all.items), ["t0", "t1", "t2", "t3", "t4"]);
    assert_eq!(all.total, 5);
    let second = store.list(page(2, 2, None)).await.unwrap();
    assert_eq!(
        (titles(&second.items), second.total),
        (vec!["t2".into(), "t3".into()], 5)
    );
    let todo = store
        .list(page(100, 1, Some(TaskStatus::Todo)))
        .await
        .unwrap();
    assert_eq!(
        (titles(&todo.items), todo.total),
        (vec!["t2".into(), "t4".into()], 3)
    );
    let none = store
        .list(page(0, 0, Some(TaskStatus::InProgress)))
        .await
        .unwrap();
    assert_eq!((none.items.len(), none.total), (0, 0));
    let beyond = store.list(page(10, u64::MAX, None)).await.unwrap();
    assert_eq!((beyond.items.len(), beyond.total), (0, 5));
}

async fn text_is_stored_as_given(store: Store) {
    for title in [
        "Robert'); DROP TABLE tasks;--",
        "naïve café ✓ 漢字",
        "$1 %s ? :name \\ \"quoted\"",
    ] {
        let task = store
            .create(NewTask {
                description: Some(format!("{title}\nsecond line")),
                ..new_task(title, TaskStatus::InProgress)
            })
            .await
            .unwrap();
        let read = store.get(task.id).await.unwrap().unwrap();
        assert_eq!(read.title, title);
        assert_eq!(read, task);
    }
    assert_eq!(store.list(page(10, 0, None)).await.unwrap().total, 3);
}

async fn concurrent_writes_get_distinct_ids_and_all_stay(store: Store) {
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..15 {
                let task = store
                    .create(new_task(&format!("w{w} t{i}"), TaskStatus::Todo))
                    .await
                    .unwrap();
                ids.push(task.id);
            }
            ids
        }));
    }
    let mut ids = BTreeSet::new();
    for writer in writers {
        for id in writer.await.unwrap() {
            assert!(ids.insert(id), "id {id} given twice");
        }
    }
    let listed: BTreeSet<i64> = store
        .list(page(100, 0, None))
        .await
        .unwrap()
        .items
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, ids);
}

async fn check_passes_on_a_working_store(store: Store) {
    store.check().await.unwrap();
}

/// Runs each contract case against a fresh SQLite file and a fresh PostgreSQL database.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::Store::open(&dir.path().join("tasks.db")).unwrap();
                    assert_eq!(store.system(), "sqlite");
                    super::$case(store).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(cluster) = super::Postgres::start_or_skip(stringify!($case)) else {
                        return;
                    };
                    let store = super::connect(&cluster.create_database().unwrap()).await.unwrap();
                    assert_eq!(store.system(), "postgresql");
                    super::$case(store).await;
                }
            )*
        }
    };
}

contract!(
    create_get_update_delete,
    list_pages_and_filters,
    text_is_stored_as_given,
    concurrent_writes_get_distinct_ids_and_all_stay,
    check_passes_on_a_working_store,
);

// ---- PostgreSQL only ----

/// Bounds short enough for an outage to show within seconds, long enough for SCRAM logins
/// of several stores at once on a loaded two-core machine.
fn quick() -> PoolOptions {
    PoolOptions {
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(5),
        ..PoolOptions::default()
    }
}

async fn connect(url: &str) -> Result<Store, StorageError> {
    Store::connect(&url.parse::<StorageUrl>().unwrap(), quick()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_once_and_share_their_tasks() {
    let Some(cluster) = Postgres::start_or_skip("migrations race") else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.unwrap().unwrap());
    }
    let database = url.rsplit('/').next().unwrap();
    assert_eq!(
        cluster
            .sql(database, "SELECT count(*) FROM taskman_migrations")
            .unwrap(),
        "1"
    );
    let task = stores[0]
        .create(new_task("shared", TaskStatus::Todo))
        .await
        .unwrap();
    for store in &stores[1..] {
        assert_eq!(store.get(task.id).await.unwrap(), Some(task.clone()));
    }
    // A later start finds the schema in place and changes nothing.
    drop(connect(&url).await.unwrap());
    assert_eq!(
        cluster
            .sql(database, "SELECT count(*) FROM taskman_migrations")
            .unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_not_ours_or_is_newer_is_refused_with_one_line() {
    let Some(cluster) = Postgres::start_or_skip("foreign databases") else {
        return;
    };
    let foreign = cluster.create_database().unwrap();
    let name = foreign.rsplit('/').next().unwrap();
    cluster
        .sql(name, "CREATE TABLE tasks (id integer, what text)")
        .unwrap();
    let err = connect(&foreign).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "the PostgreSQL database is not a taskman database: it has a tasks table but no \
         taskman_migrations table"
    );

    let newer = cluster.create_database().unwrap();
    drop(connect(&newer).await.unwrap());
    cluster
        .sql(
            newer.rsplit('/').next().unwrap(),
            "INSERT INTO taskman_migrations (version) VALUES (99)",
        )
        .unwrap();
    let err = connect(&newer).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "the task database has schema version 99, newer than this server's 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_a_missing_database_and_no_server_are_refused_without_the_password() {
    let Some(cluster) = Postgres::start_or_skip("refused URLs") else {
        return;
    };
    let port = cluster.port();
    let wrong = format!("postgres://taskman:not-{PASSWORD}@127.0.0.1:{port}/postgres");
    let missing = cluster.url("no_such_database");
    // A port nobody listens on: the cluster's own, once it is stopped.
    let mut stopped = Postgres::start_or_skip("refused URLs (second cluster)").unwrap();
    let nobody = stopped.url("postgres");
    stopped.stop_now().unwrap();
    for (url, expect) in [
        (&wrong, "password authentication failed"),
        (&missing, "does not exist"),
        (&nobody, "cannot use the PostgreSQL task database"),
    ] {
        let started = Instant::now();
        let err = connect(url).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StorageError::Connect(_)), "{text}");
        assert!(text.contains(expect), "{url}: {text}");
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains('\n'), "{text}");
        // Refused within the acquire timeout, with room for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(30), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_unavailable_within_the_bounds_and_recovers_by_itself() {
    let Some(mut cluster) = Postgres::start_or_skip("outage") else {
        return;
    };
    let store = connect(&cluster.create_database().unwrap()).await.unwrap();
    let kept = store
        .create(new_task("kept", TaskStatus::Todo))
        .await
        .unwrap();
    cluster.stop_now().unwrap();

    // Every kind of call says "unavailable" (503), not "failed" (500), and none hangs
    // past acquire + statement timeout (plus generous slack for a loaded machine).
    let bound = quick().acquire_timeout + quick().statement_timeout + Duration::from_secs(10);
    for _ in 0..2 {
        let started = Instant::now();
        let create = store.create(new_task("refused", TaskStatus::Todo)).await;
        assert!(
            create.as_ref().is_err_and(StorageError::is_unavailable),
            "{create:?}"
        );
        let get = store.get(kept.id).await;
        assert!(
            get.as_ref().is_err_and(StorageError::is_unavailable),
            "{get:?}"
        );
        let list = store.list(page(10, 0, None)).await;
        assert!(
            list.as_ref().is_err_and(StorageError::is_unavailable),
            "{list:?}"
        );
        let check = store.check().await;
        assert!(
            check.as_ref().is_err_and(StorageError::is_unavailable),
            "{check:?}"
        );
        assert!(started.elapsed() < 4 * bound, "{:?}", started.elapsed());
    }

    cluster.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        match store.create(new_task("after", TaskStatus::Todo)).await {
            Ok(task) => break task,
            Err(err) => {
                assert!(err.is_unavailable(), "{err}");
                assert!(Instant::now() < deadline, "not back within 60s: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    store.check().await.unwrap();
    let all = store.list(page(100, 0, None)).await.unwrap().items;
    assert_eq!(all.first(), Some(&kept));
    assert_eq!(all.last(), Some(&after));
    assert!(all.iter().all(|t| t.title != "refused"), "{all:?}");
}
