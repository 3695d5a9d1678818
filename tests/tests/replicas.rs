//! Several `taskman-server` replicas on one PostgreSQL database, as deployed behind a load
//! balancer: three real server processes, a throw-away PostgreSQL cluster
//! (`tests/src/postgres.rs`) and one OTLP receiver (`tests/src/receiver.rs`).
//!
//! What a user of the service would notice is checked: a task written through one replica
//! is read through the others; `kill -9` of a replica during concurrent writes loses no
//! acknowledged write; a PostgreSQL restart under load turns readiness to 503 and back, task
//! requests get 503 `storage_unavailable` (never 500) meanwhile, and nothing acknowledged is
//! lost; every replica's spans, storage spans included, reach the one receiver, each
//! replica with its own `service.instance.id`: the one the operator set, or else the random
//! one each process gives itself and reports in `/health/telemetry` and its listening line.
//! Waits poll against generous deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ::tests::postgres::Postgres;
use ::tests::receiver::Receiver;
use ::tests::server::{ServerCommand, TaskmanServer};
use serde_json::{Value, json};

/// Deadline for anything that should take seconds.
const WAIT: Duration = Duration::from_secs(60);

/// A blocking client; error statuses are answers, a failed connection is `None`.
#[derive(Clone)]
struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    fn new(server: &TaskmanServer) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            agent,
            base: server.base_url(),
        }
    }

    /// `(status, body)`, or `None` when the replica did not answer at all (killed).
    fn create(&self, title: &str) -> Option<(u16, Value)> {
        let response = self
            .agent
            .post(&format!("{}/tasks", self.base))
            .header("content-type", "application/json")
            .send(json!({ "title": title }).to_string());
        let mut response = response.ok()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn ready(&self) -> u16 {
        self.get("/health/ready").0
    }

    /// The `service.instance.id` the replica says its spans carry.
    fn instance_id(&self) -> String {
        let (status, health) = self.get("/health/telemetry");
        assert_eq!(status, 200, "{health}");
        health["service_instance_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no service_instance_id: {health}"))
            .to_owned()
    }

    /// Creates a task as part of the caller's trace `trace_id` (32 hex digits).
    fn create_in_trace(&self, title: &str, trace_id: &str) -> u16 {
        self.agent
            .post(&format!("{}/tasks", self.base))
            .header("content-type", "application/json")
            .header("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .send(json!({ "title": title }).to_string())
            .unwrap_or_else(|err| panic!("POST /tasks: {err}"))
            .status()
            .as_u16()
    }

    /// Every task, by id.
    fn all_tasks(&self) -> BTreeMap<i64, Value> {
        let mut tasks = BTreeMap::new();
        loop {
            let (status, page) = self.get(&format!("/tasks?limit=100&offset={}", tasks.len()));
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().unwrap().clone();
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

/// What concurrent writers saw: acknowledged tasks and every status answered.
#[derive(Default)]
struct Writes {
    acknowledged: BTreeMap<i64, Value>,
    statuses: BTreeMap<u16, u64>,
}

/// Writes through `api` until `stop`, recording every answer.
fn writer(api: Api, name: String, stop: Arc<AtomicBool>, writes: Arc<Mutex<Writes>>) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        match api.create(&format!("{name} {i}")) {
            Some((status, body)) => {
                let mut writes = writes.lock().unwrap();
                *writes.statuses.entry(status).or_default() += 1;
                if status == 201 {
                    let id = body["id"].as_i64().unwrap();
                    assert!(
                        writes.acknowledged.insert(id, body).is_none(),
                        "id {id} twice"
                    );
                } else {
                    assert_eq!(status, 503, "{body}");
                    assert_eq!(body["error"], "storage_unavailable", "{body}");
                    drop(writes);
                    thread::sleep(Duration::from_millis(50));
                }
            }
            // The replica is gone (killed): its writers stop.
            None => return,
        }
    }
}

/// Replica `n` on the database at `url`, named `replica-{n}` by the operator.
fn replica(url: &str, receiver: &Receiver, n: usize) -> TaskmanServer {
    let instance = format!("service.instance.id=replica-{n}");
    replica_with(url, receiver, &[("OTEL_RESOURCE_ATTRIBUTES", &instance)])
}

/// A replica on the database at `url` exporting to `receiver`, with `extra` settings.
fn replica_with(url: &str, receiver: &Receiver, extra: &[(&str, &str)]) -> TaskmanServer {
    ServerCommand::new()
        .unwrap()
        .default_db_path()
        .env(&[
            ("TASKMAN__STORAGE__URL", url),
            ("TASKMAN__STORAGE__ACQUIRE_TIMEOUT", "2s"),
            ("TASKMAN__STORAGE__STATEMENT_TIMEOUT", "5s"),
            ("TASKMAN__STORAGE__POOL_SIZE", "4"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ])
        .env(extra)
        .start()
        .unwrap()
}

/// The `service.instance.id` of every span of `trace_id`, once its server span and its
/// storage span have both arrived.
fn instance_ids_in_trace(receiver: &Receiver, trace_id: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    until(&format!("the two spans of trace {trace_id}"), || {
        let snapshot = receiver.snapshot();
        let spans: Vec<_> = snapshot.spans_in_trace(trace_id).collect();
        ids = spans
            .iter()
            .map(|span| {
                span.resource_attribute("service.instance.id")
                    .unwrap_or("none")
                    .to_owned()
            })
            .collect();
        spans.len() >= 2
    });
    ids
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn run_writers(
    apis: &[Api],
    stop: &Arc<AtomicBool>,
    writes: &Arc<Mutex<Writes>>,
) -> Vec<thread::JoinHandle<()>> {
    apis.iter()
        .enumerate()
        .map(|(n, api)| {
            let (api, stop, writes) = (api.clone(), Arc::clone(stop), Arc::clone(writes));
            thread::spawn(move || writer(api, format!("via {n}"), stop, writes))
        })
        .collect()
}

#[test]
fn three_replicas_share_one_database_through_crashes_and_a_database_restart() {
    let Some(mut cluster) = Postgres::start_or_skip("replicas") else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(Receiver::start()).unwrap();
    let servers: Vec<TaskmanServer> = (0..3).map(|n| replica(&url, &receiver, n)).collect();
    let apis: Vec<Api> = servers.iter().map(Api::new).collect();

    // Written through one, read through the others.
    let (status, task) = apis[0].create("shared").unwrap();
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_i64().unwrap();
    for api in &apis[1..] {
        assert_eq!(api.get(&format!("/tasks/{id}")), (200, task.clone()));
    }

    // kill -9 one replica during concurrent writes through all three.
    let writes = Arc::new(Mutex::new(Writes::default()));
    writes.lock().unwrap().acknowledged.insert(id, task);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = run_writers(&apis, &stop, &writes);
    until("writes through every replica", || {
        writes.lock().unwrap().acknowledged.len() > 30
    });
    servers[2].sigkill().unwrap();
    let after_kill = writes.lock().unwrap().acknowledged.len();
    until("writes after the kill", || {
        writes.lock().unwrap().acknowledged.len() > after_kill + 20
    });

    // Restart PostgreSQL under load: readiness goes 503 and back, writes get 503 meanwhile.
    cluster.stop_now().unwrap();
    until("readiness 503 on both replicas", || {
        apis[..2].iter().all(|api| api.ready() == 503)
    });
    until("task requests answered 503", || {
        writes
            .lock()
            .unwrap()
            .statuses
            .get(&503)
            .copied()
            .unwrap_or(0)
            >= 2
    });
    cluster.start_again().unwrap();
    until("readiness back on both replicas", || {
        apis[..2].iter().all(|api| api.ready() == 200)
    });
    let after_restart = writes.lock().unwrap().acknowledged.len();
    until("writes after the restart", || {
        writes.lock().unwrap().acknowledged.len() > after_restart + 20
    });
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }

    let writes = writes.lock().unwrap();
    // Only 201 and 503 were ever answered: never a 500.
    assert!(
        writes
            .statuses
            .keys()
            .all(|status| [201, 503].contains(status)),
        "{:?}",
        writes.statuses
    );
    // Every acknowledged write is there, through either surviving replica.
    for api in &apis[..2] {
        let stored = api.all_tasks();
        for (id, task) in &writes.acknowledged {
            assert_eq!(stored.get(id), Some(task), "acknowledged task {id} lost");
        }
    }

    // Every replica's spans reached the one receiver, storage spans as PostgreSQL client
    // spans with the database's address.
    let port = cluster.port().to_string();
    until("storage spans of the writes", || {
        receiver.snapshot().received.iter().any(|span| {
            span.name == "INSERT tasks"
                && span.attribute("db.system.name") == Some("postgresql")
                && span.attribute("server.port") == Some(port.as_str())
        })
    });
    let snapshot = receiver.snapshot();
    let insert = snapshot
        .received
        .iter()
        .find(|span| span.name == "INSERT tasks")
        .unwrap();
    assert_eq!(insert.attribute("db.collection.name"), Some("tasks"));
    assert_eq!(insert.attribute("db.operation.name"), Some("INSERT"));
    assert_eq!(insert.attribute("db.query.summary"), Some("INSERT tasks"));
    assert_eq!(insert.attribute("server.address"), Some("127.0.0.1"));
    assert!(
        insert
            .attributes
            .values()
            .all(|value| !value.contains("via ")),
        "a title in the span: {insert:?}"
    );
    drop(writes);

    // The operator's `service.instance.id` wins: the survivors report it, and no span
    // carries any other.
    for (n, api) in apis[..2].iter().enumerate() {
        assert_eq!(api.instance_id(), format!("replica-{n}"));
    }
    let snapshot = receiver.snapshot();
    let instances: BTreeSet<&str> = snapshot
        .received
        .iter()
        .map(|span| {
            span.resource_attribute("service.instance.id")
                .unwrap_or("none")
        })
        .collect();
    assert!(
        instances.contains("replica-0") && instances.contains("replica-1"),
        "{instances:?}"
    );
    assert!(
        instances.iter().all(|id| id.starts_with("replica-")),
        "{instances:?}"
    );
    drop(servers);
}

#[test]
fn replicas_nobody_named_name_themselves_and_say_so() {
    let Some(cluster) = Postgres::start_or_skip("self-named replicas") else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(Receiver::start()).unwrap();
    // No OTEL_RESOURCE_ATTRIBUTES: the harness clears the test's own OTEL_* variables.
    let mut servers: Vec<TaskmanServer> =
        (0..3).map(|_| replica_with(&url, &receiver, &[])).collect();
    let apis: Vec<Api> = servers.iter().map(Api::new).collect();

    let reported: Vec<String> = apis.iter().map(Api::instance_id).collect();
    let distinct: BTreeSet<&String> = reported.iter().collect();
    assert_eq!(distinct.len(), 3, "{reported:?}");
    for (server, id) in servers.iter_mut().zip(&reported) {
        // A UUID v4, as the semantic conventions recommend.
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_eq!(id.as_bytes()[14], b'4', "{id}");
        let listening = server
            .wait_for_stderr("listening on", WAIT)
            .expect("a listening line");
        assert!(listening.contains(id.as_str()), "{listening}");
    }

    // Each replica's spans (its server span and storage span, in a trace of the test's own)
    // carry the id that replica reported, and only that one.
    for (n, (api, id)) in apis.iter().zip(&reported).enumerate() {
        let trace_id = format!("4bf92f3577b34da6a3ce929d0e0e47{n:02x}");
        assert_eq!(api.create_in_trace(&format!("via {n}"), &trace_id), 201);
        assert_eq!(
            instance_ids_in_trace(&receiver, &trace_id),
            BTreeSet::from([id.clone()])
        );
    }
    drop(servers);
}

#[test]
fn a_storage_url_that_cannot_be_used_stops_the_start_with_one_line_and_no_password() {
    let Some(cluster) = Postgres::start_or_skip("refused storage.url") else {
        return;
    };
    let port = cluster.port();
    let wrong = format!("postgres://taskman:not-the-password@127.0.0.1:{port}/postgres");
    for (url, reason) in [
        (wrong.as_str(), "password authentication failed"),
        (
            "mysql://taskman:not-the-password@127.0.0.1/tasks",
            "expected sqlite:<path> or postgres://",
        ),
    ] {
        let run = ServerCommand::new()
            .unwrap()
            .default_db_path()
            .env(&[("TASKMAN__STORAGE__URL", url)])
            .run_to_exit(WAIT)
            .unwrap();
        assert!(!run.status.success(), "{run:?}");
        let stderr = run.stderr.trim();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("storage.url = "), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert!(!stderr.contains("not-the-password"), "{stderr}");
    }
}

// ---- the deployment kit (docs/deploy/): it cannot run here, so its shape is checked ----

mod deploy_kit {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    use yaml_rust2::{Yaml, YamlLoader};

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn load(path: &str) -> Vec<Yaml> {
        let text = std::fs::read_to_string(root().join(path)).unwrap();
        YamlLoader::load_from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    /// Every `TASKMAN__…` variable the configuration reference names.
    fn known_variables() -> BTreeSet<String> {
        let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
        text.split('`')
            .filter(|token| token.starts_with("TASKMAN__") && !token.contains(['=', ' ']))
            .map(str::to_owned)
            .collect()
    }

    /// A mapping with YAML merge keys (`<<: *anchor`) applied, as Compose does.
    fn merged(node: &Yaml) -> BTreeMap<String, Yaml> {
        let mut out = BTreeMap::new();
        if let Some(map) = node.as_hash() {
            if let Some(base) = map.get(&Yaml::String("<<".into())) {
                out.extend(merged(base));
            }
            for (key, value) in map {
                if let Some(key) = key.as_str()
                    && key != "<<"
                {
                    out.insert(key.to_owned(), value.clone());
                }
            }
        }
        out
    }

    fn text(node: &Yaml) -> String {
        match node {
            Yaml::String(s) | Yaml::Real(s) => s.clone(),
            Yaml::Integer(n) => n.to_string(),
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn compose_runs_replicas_on_one_postgres_within_its_connections() {
        let docs = load("docs/deploy/compose.yaml");
        let services = merged(&docs[0]["services"]);
        let command: Vec<String> = services["postgres"]["command"]
            .as_vec()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        let max_connections: u64 = command
            .iter()
            .find_map(|arg| arg.strip_prefix("max_connections="))
            .expect("postgres sets max_connections")
            .parse()
            .unwrap();
        let known = known_variables();
        let mut instances = BTreeSet::new();
        let mut connections = 0;
        let replicas: Vec<_> = services
            .iter()
            .filter(|(name, _)| name.starts_with("taskman-"))
            .collect();
        assert!(replicas.len() >= 2, "{:?}", services.keys());
        for (name, service) in replicas {
            let service = merged(service);
            let env: BTreeMap<String, String> = merged(&service["environment"])
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect();
            let url = &env["TASKMAN__STORAGE__URL"];
            assert!(url.starts_with("postgres://"), "{name}: {url}");
            assert!(url.contains("${"), "{name}: a literal password in {url}");
            assert!(url.contains("@postgres:"), "{name}: {url}");
            for var in env.keys().filter(|var| var.starts_with("TASKMAN__")) {
                assert!(known.contains(var), "{name}: {var} is no setting");
            }
            connections += env["TASKMAN__STORAGE__POOL_SIZE"].parse::<u64>().unwrap();
            let endpoint = &env["OTEL_EXPORTER_OTLP_ENDPOINT"];
            assert!(
                services
                    .keys()
                    .any(|s| endpoint.contains(&format!("//{s}:"))),
                "{name}: {endpoint}"
            );
            assert!(
                instances.insert(env["OTEL_RESOURCE_ATTRIBUTES"].clone()),
                "{name}: service.instance.id shared"
            );
            let health: Vec<String> = service["healthcheck"]["test"]
                .as_vec()
                .unwrap()
                .iter()
                .map(text)
                .collect();
            assert!(
                health.concat().contains("/health/ready"),
                "{name}: {health:?}"
            );
        }
        assert!(
            connections < max_connections,
            "{connections} pooled connections for max_connections = {max_connections}"
        );
    }

    #[test]
    fn kubernetes_probes_pool_and_instance_ids_follow_the_operations_guide() {
        let docs = load("docs/deploy/kubernetes/taskman.yaml");
        let deployment = docs
            .iter()
            .find(|doc| doc["kind"].as_str() == Some("Deployment"))
            .unwrap();
        let spec = &deployment["spec"];
        let replicas = spec["replicas"].as_i64().unwrap();
        let surge = spec["strategy"]["rollingUpdate"]["maxSurge"]
            .as_i64()
            .unwrap();
        let max_connections: i64 = text(
            &deployment["metadata"]["annotations"]["taskman.example/postgres-max-connections"],
        )
        .parse()
        .unwrap();
        let pod = &spec["template"]["spec"];
        assert!(
            pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 10,
            "must outlast server.shutdown_timeout"
        );
        let container = &pod["containers"][0];
        let env: BTreeMap<String, &Yaml> = container["env"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|var| (text(&var["name"]), var))
            .collect();
        let known = known_variables();
        for var in env.keys().filter(|var| var.starts_with("TASKMAN__")) {
            assert!(known.contains(var), "{var} is no setting");
        }
        let url = env["TASKMAN__STORAGE__URL"];
        assert!(
            url["value"].is_badvalue(),
            "the URL (and password) belongs in a Secret"
        );
        assert!(!url["valueFrom"]["secretKeyRef"]["name"].is_badvalue());
        let pool: i64 = text(&env["TASKMAN__STORAGE__POOL_SIZE"]["value"])
            .parse()
            .unwrap();
        assert!(
            (replicas + surge) * pool < max_connections,
            "({replicas} + {surge}) x {pool} >= {max_connections}"
        );
        assert_eq!(
            text(&env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]),
            "metadata.name"
        );
        assert_eq!(
            text(&env["OTEL_RESOURCE_ATTRIBUTES"]["value"]),
            "service.instance.id=$(POD_NAME)"
        );
        assert_eq!(
            text(&container["livenessProbe"]["httpGet"]["path"]),
            "/health"
        );
        assert_eq!(
            text(&container["readinessProbe"]["httpGet"]["path"]),
            "/health/ready"
        );
        let service = docs
            .iter()
            .find(|doc| doc["kind"].as_str() == Some("Service"))
            .unwrap();
        let port_name = text(&container["ports"][0]["name"]);
        assert_eq!(text(&service["spec"]["ports"][0]["targetPort"]), port_name);
    }
}
