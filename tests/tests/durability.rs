//! Durability of the real `taskman-server` binary when its database's disk or file fails:
//! a write is answered 2xx only once it is stored, a write that cannot be stored is
//! answered 503 `storage_unavailable` with `Retry-After`, the log says so once per outage,
//! and a restart finds exactly the acknowledged tasks.
//!
//! The full file system is real: the server runs under `prlimit --fsize` (util-linux), so
//! its writes beyond the limit fail with `EFBIG` as on a full disk, and the limit is lifted
//! on the running process to end the outage. Waits poll against generous deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ::tests::server::{HarnessError, TaskmanServer, server_binary};
use serde_json::{Value, json};

/// util-linux's `prlimit`, present on Debian and most Linux systems.
const PRLIMIT: &str = "/usr/bin/prlimit";

/// The soft file size limit the full-disk server runs under: room for the database and a
/// few dozen writes to its WAL; the hard limit stays unlimited so it can be lifted.
const FILE_SIZE_LIMIT: &str = "--fsize=262144:unlimited";

/// Deadline for anything that should take a second or two.
const WAIT: Duration = Duration::from_secs(30);

/// The line the server logs when an outage starts, and when it ends.
const OUTAGE_STARTS: &str = "task database unavailable";
const OUTAGE_ENDS: &str = "task database available again";

/// One HTTP answer, headers included.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("not JSON ({err}): {self:?}"))
    }

    /// Asserts the answer for a write or read the database could not serve.
    fn assert_storage_unavailable(&self) {
        assert_eq!(self.status, 503, "{self:?}");
        assert_eq!(self.json()["error"], "storage_unavailable", "{self:?}");
        assert_eq!(self.headers["retry-after"], "5", "{self:?}");
        assert_eq!(self.headers["content-type"], "application/json", "{self:?}");
    }
}

/// A blocking client; error statuses are answers.
struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    fn new(server: &TaskmanServer) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(WAIT))
            .build()
            .into();
        Self {
            agent,
            base: server.base_url(),
        }
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.to_string()),
            ("PATCH", Some(body)) => self
                .agent
                .patch(&url)
                .header("content-type", "application/json")
                .send(body.to_string()),
            other => panic!("no such request: {other:?}"),
        };
        let mut response = response.unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        Reply {
            status: response.status().as_u16(),
            headers,
            body: response.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn create(&self, title: &str) -> Reply {
        self.send("POST", "/tasks", Some(json!({ "title": title })))
    }

    /// Every task, by id, read page by page.
    fn all_tasks(&self) -> BTreeMap<i64, Value> {
        let mut tasks = BTreeMap::new();
        loop {
            let page = self.send(
                "GET",
                &format!("/tasks?limit=100&offset={}", tasks.len()),
                None,
            );
            assert_eq!(page.status, 200, "{page:?}");
            let items = page.json()["items"].as_array().unwrap().clone();
            if items.is_empty() {
                return tasks;
            }
            for task in items {
                let id = task["id"].as_i64().unwrap();
                assert!(tasks.insert(id, task).is_none(), "id {id} listed twice");
            }
        }
    }
}

/// The server on the database `db`, run directly or through `wrapper` (a program and its
/// arguments, the server binary last).
fn start_on(db: &Path, wrapper: Option<(&str, &[&str])>) -> Result<TaskmanServer, HarnessError> {
    let db = db.to_str().unwrap();
    let env = [("TASKMAN__STORAGE__PATH", db), ("RUST_LOG", "info")];
    match wrapper {
        None => TaskmanServer::start(&env),
        Some((binary, args)) => TaskmanServer::start_binary(Path::new(binary), &env, args),
    }
}

/// Lines of the server's log containing `needle`.
fn log_lines(server: &TaskmanServer, needle: &str) -> usize {
    server
        .stderr()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Polls until the server has logged `needle` `count` times (the log is read by a thread).
fn await_log(server: &TaskmanServer, needle: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while log_lines(server, needle) < count {
        assert!(
            Instant::now() < deadline,
            "no {count} x `{needle}` in the log within {WAIT:?}:\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut server: TaskmanServer) {
    server.sigterm().unwrap();
    let status = server.wait_exit(WAIT).expect("the server did not stop");
    assert!(status.success(), "{status}: {}", server.stderr());
}

#[test]
fn on_a_full_file_system_no_acknowledged_write_is_lost_and_the_rest_answer_503() {
    assert!(
        Path::new(PRLIMIT).exists(),
        "{PRLIMIT} (util-linux) is needed to fill the file system for real"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let binary = server_binary().unwrap().to_str().unwrap().to_owned();
    let server = start_on(&db, Some((PRLIMIT, &[FILE_SIZE_LIMIT, &binary]))).unwrap();
    let api = Api::new(&server);

    // What a client was told is stored, by id.
    let mut acknowledged: BTreeMap<i64, Value> = BTreeMap::new();
    let mut refused = 0;
    for i in 0..5000 {
        let reply = api.create(&format!("task {i}"));
        if reply.status == 201 {
            let task = reply.json();
            let id = task["id"].as_i64().unwrap();
            assert_eq!(reply.headers["location"], format!("/tasks/{id}"));
            assert!(
                acknowledged.insert(id, task).is_none(),
                "id {id} handed out twice"
            );
            continue;
        }
        reply.assert_storage_unavailable();
        refused += 1;
        if refused == 1 {
            // The other writes, on the full disk: refused, or stored if they fit.
            let first = *acknowledged.keys().next().expect("no write fit at all");
            let patch = api.send(
                "PATCH",
                &format!("/tasks/{first}"),
                Some(json!({"status": "done"})),
            );
            match patch.status {
                200 => {
                    acknowledged.insert(first, patch.json());
                }
                _ => patch.assert_storage_unavailable(),
            }
            let last = *acknowledged.keys().last().unwrap();
            let delete = api.send("DELETE", &format!("/tasks/{last}"), None);
            match delete.status {
                204 => {
                    acknowledged.remove(&last);
                }
                _ => delete.assert_storage_unavailable(),
            }
        }
        if refused == 30 {
            break;
        }
    }
    assert_eq!(refused, 30, "the file size limit was never reached");
    assert!(!acknowledged.is_empty());
    // Liveness does not depend on the database.
    assert_eq!(api.send("GET", "/health", None).status, 200);
    await_log(&server, OUTAGE_STARTS, 1);
    assert_eq!(log_lines(&server, OUTAGE_STARTS), 1, "{}", server.stderr());
    assert_eq!(log_lines(&server, OUTAGE_ENDS), 0, "{}", server.stderr());

    // Room again: the next write is stored, and the end of the outage logged once.
    let lifted = Command::new(PRLIMIT)
        .args(["--pid", &server.pid().to_string(), "--fsize=unlimited"])
        .status()
        .unwrap();
    assert!(lifted.success(), "prlimit --pid failed: {lifted}");
    let reply = api.create("after the outage");
    assert_eq!(reply.status, 201, "{reply:?}");
    let task = reply.json();
    acknowledged.insert(task["id"].as_i64().unwrap(), task);
    await_log(&server, OUTAGE_ENDS, 1);
    assert_eq!(log_lines(&server, OUTAGE_STARTS), 1, "{}", server.stderr());
    stop(server);

    // Restarted without a limit: exactly the acknowledged tasks, as acknowledged.
    let server = start_on(&db, None).unwrap();
    assert_eq!(Api::new(&server).all_tasks(), acknowledged);
    stop(server);
}

#[test]
fn a_database_file_moved_away_refuses_calls_and_fails_readiness_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let aside = dir.path().join("moved-away.db");
    let server = start_on(&db, None).unwrap();
    let api = Api::new(&server);
    let ready = api.send("GET", "/health/ready", None);
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, r#"{"status":"pass"}"#)
    );
    let mut acknowledged = BTreeMap::new();
    for title in ["one", "two", "three"] {
        let reply = api.create(title);
        assert_eq!(reply.status, 201, "{reply:?}");
        let task = reply.json();
        acknowledged.insert(task["id"].as_i64().unwrap(), task);
    }

    std::fs::rename(&db, &aside).unwrap();
    for _ in 0..5 {
        api.create("into the void").assert_storage_unavailable();
    }
    api.send("PATCH", "/tasks/1", Some(json!({"status": "done"})))
        .assert_storage_unavailable();
    api.send("DELETE", "/tasks/2", None)
        .assert_storage_unavailable();
    let ready = api.send("GET", "/health/ready", None);
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.headers["content-type"], "application/health+json");
    assert_eq!(ready.headers["cache-control"], "no-store");
    assert_eq!(ready.json()["status"], "fail");
    let output = ready.json()["output"].as_str().unwrap().to_owned();
    assert!(
        output.contains("deleted or renamed") && !output.contains('\n'),
        "{output}"
    );
    assert_eq!(api.send("GET", "/health", None).status, 200, "liveness");
    assert!(!db.exists(), "the server recreated its database file");
    await_log(&server, OUTAGE_STARTS, 1);
    assert_eq!(log_lines(&server, OUTAGE_STARTS), 1, "{}", server.stderr());

    std::fs::rename(&aside, &db).unwrap();
    assert_eq!(api.send("GET", "/health/ready", None).status, 200);
    let reply = api.create("four");
    assert_eq!(reply.status, 201, "{reply:?}");
    let task = reply.json();
    acknowledged.insert(task["id"].as_i64().unwrap(), task);
    await_log(&server, OUTAGE_ENDS, 1);
    stop(server);

    let server = start_on(&db, None).unwrap();
    assert_eq!(Api::new(&server).all_tasks(), acknowledged);
    stop(server);
}

/// The server refuses to start on `db` with exactly one line on stderr, which it returns.
fn refused_start(db: &Path) -> String {
    match start_on(db, None) {
        Err(HarnessError::Exited { status, stderr }) => {
            assert!(!status.success(), "{status}");
            assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
            stderr.trim_end().to_owned()
        }
        Ok(server) => panic!("started on {}: {}", db.display(), server.stderr()),
        Err(other) => panic!("{other}"),
    }
}

/// Overwrites four bytes of the database header (big-endian, as SQLite stores them).
fn patch_header(db: &Path, offset: usize, value: u32) {
    let mut bytes = std::fs::read(db).unwrap();
    bytes[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
    std::fs::write(db, bytes).unwrap();
}

/// `user_version` and `application_id` in the SQLite file header.
const USER_VERSION_OFFSET: usize = 60;
const APPLICATION_ID_OFFSET: usize = 68;

#[test]
fn a_newer_schema_another_applications_file_or_an_empty_path_stop_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let server = start_on(&db, None).unwrap();
    assert_eq!(Api::new(&server).create("mine").status, 201);
    // A clean stop checkpoints the WAL into the file, so the header below is the truth.
    stop(server);
    let shown = db.display();

    patch_header(&db, USER_VERSION_OFFSET, 99);
    assert_eq!(
        refused_start(&db),
        format!(
            "taskman-server: storage.path = {shown}: the task database has schema version 99, \
             newer than this server's 1"
        )
    );

    patch_header(&db, USER_VERSION_OFFSET, 1);
    patch_header(&db, APPLICATION_ID_OFFSET, u32::from_be_bytes(*b"OthR"));
    let before = std::fs::read(&db).unwrap();
    assert_eq!(
        refused_start(&db),
        format!(
            "taskman-server: storage.path = {shown}: {shown} is not a taskman database \
             (application_id 0x4f746852, user_version 1, a tasks table this server did not make)"
        )
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a refused file was changed"
    );

    // An empty path would be a temporary database, lost at restart. (An empty variable
    // counts as unset, so the file's value is the one used.)
    let config = dir.path().join("empty-path.toml");
    std::fs::write(&config, "[storage]\npath = \"\"\n").unwrap();
    match TaskmanServer::start_with_args(
        &[("TASKMAN__STORAGE__PATH", "")],
        &["--config", config.to_str().unwrap()],
    ) {
        Err(HarnessError::Exited { status, stderr }) => {
            assert!(!status.success(), "{status}");
            assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
            // The configuration refuses it first, naming the key (exit 2).
            assert_eq!(status.code(), Some(2), "{status}");
            assert!(stderr.contains("storage.path = \"\""), "{stderr}");
            assert!(stderr.contains("must not be empty"), "{stderr}");
        }
        Ok(server) => panic!("started on an empty path: {}", server.stderr()),
        Err(other) => panic!("{other}"),
    }

    // Ours again: the task is still there.
    patch_header(&db, APPLICATION_ID_OFFSET, u32::from_be_bytes(*b"TskM"));
    let server = start_on(&db, None).unwrap();
    assert_eq!(Api::new(&server).all_tasks().len(), 1);
    stop(server);
}

#[test]
fn a_database_deleted_under_the_server_is_never_replaced_by_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let server = start_on(&db, None).unwrap();
    let api = Api::new(&server);
    for title in ["one", "two"] {
        assert_eq!(api.create(title).status, 201);
    }
    std::fs::remove_file(&db).unwrap();
    api.create("into the void").assert_storage_unavailable();
    assert_eq!(api.send("GET", "/health/ready", None).status, 503);
    stop(server);
    assert!(!db.exists(), "the server recreated its database file");

    // Starting empty would hide that two tasks are gone.
    let line = refused_start(&db);
    assert!(
        line.contains("the database was deleted while a server was using it"),
        "{line}"
    );
    assert!(!db.exists(), "the refused start created a database file");
}
