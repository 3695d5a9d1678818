//! The real `taskman-server` binary, started as an operator would: bad configuration exits
//! before serving with one line; tasks persist across restarts and `kill -9`; SIGTERM,
//! SIGINT and SIGHUP drain and exit 0 promptly. Every server binds 127.0.0.1:0 and announces its port
//! on stderr; every wait polls against a deadline. The process is run by the crate's one
//! harness, `src/server.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ::tests::server::{Finished, ServerCommand, TaskmanServer};
use serde_json::{Value, json};

/// Generous: a debug build on a loaded 2-core CI machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// What a stop may take beyond `server.shutdown_timeout` on a loaded 2-core
/// machine: well below the waits the timeout exists to cut short.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// The binary with the settings every test here shares, so a developer's
/// `RUST_LOG` cannot change what the test sees.
fn command(env: &[(&str, &str)]) -> ServerCommand {
    ServerCommand::new()
        .expect("taskman-server builds")
        .env(&[("RUST_LOG", "info"), ("TASKMAN__SERVER__WORKERS", "2")])
        .env(env)
}

/// Runs the binary to completion (it must exit on its own) and returns status and output.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let Finished {
        status,
        stdout,
        stderr,
    } = command(env)
        .args(args)
        .run_to_exit(DEADLINE)
        .expect("the process exits on its own");
    (status, stdout, stderr)
}

/// A server on 127.0.0.1:0 with the database at `db`, kept across restarts.
fn start(db: &Path, env: &[(&str, &str)]) -> TaskmanServer {
    command(env)
        .db_path(db)
        .start()
        .unwrap_or_else(|err| panic!("{err}"))
}

fn url(server: &TaskmanServer, path: &str) -> String {
    format!("{}{path}", server.base_url())
}

/// Sends `signal` and returns the exit status and how long the exit took.
fn stop_with(mut server: TaskmanServer, signal: &str) -> (ExitStatus, Duration) {
    let started = Instant::now();
    send_signal(&server, signal);
    let status = server
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("no exit within {DEADLINE:?} of SIG{signal}"));
    (status, started.elapsed())
}

fn send_signal(server: &TaskmanServer, signal: &str) {
    match signal {
        "TERM" => server.sigterm().map_err(|err| err.to_string()),
        "INT" => server.sigint().map_err(|err| err.to_string()),
        // The harness has no SIGHUP of its own; send it as `kill -HUP` would.
        "HUP" => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
                .map_err(|err| format!("SIGHUP: {err}"))
        }
        other => unreachable!("no signal {other} in these tests"),
    }
    .unwrap_or_else(|err| panic!("{err}"));
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
}

/// Status and JSON body (or `Null`).
fn request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), ureq::Error> {
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(url).call()?,
        ("DELETE", _) => agent.delete(url).call()?,
        ("POST", Some(body)) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(body.to_string())?,
        ("PATCH", Some(body)) => agent
            .patch(url)
            .header("content-type", "application/json")
            .send(body.to_string())?,
        _ => unreachable!("unsupported request {method}"),
    };
    let text = resp.body_mut().read_to_string()?;
    Ok((
        resp.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
    ))
}

fn all_tasks(agent: &ureq::Agent, server: &TaskmanServer) -> BTreeMap<i64, Value> {
    let mut tasks = BTreeMap::new();
    loop {
        let url = url(server, &format!("/tasks?limit=100&offset={}", tasks.len()));
        let (status, page) = request(agent, "GET", &url, None).unwrap();
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            return tasks;
        }
        for task in items {
            tasks.insert(task["id"].as_i64().unwrap(), task.clone());
        }
    }
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got {lines:#?}"
    );
    lines[0]
}

/// What is wrong, arguments, environment, exit code, fragments the one line must contain.
type BadStart<'a> = (
    &'a str,
    &'a [&'a str],
    &'a [(&'a str, &'a str)],
    i32,
    &'a [&'a str],
);

#[test]
fn bad_configuration_exits_before_serving_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let db = db.to_str().unwrap();
    let file = dir.path().join("taskman.toml");
    std::fs::write(&file, "[server]\nbnd = \"127.0.0.1:0\"\n").unwrap();
    let file = file.to_str().unwrap();

    #[rustfmt::skip]
    let cases: &[BadStart<'_>] = &[
        ("unknown key", &[], &[("TASKMAN__SERVER__BND", "127.0.0.1:0")], 2, &["config error: unknown key server.bnd", "TASKMAN__SERVER__BND"]),
        ("unknown key in file", &["--config", file], &[], 2, &["config error: unknown key server.bnd", file]),
        ("unknown key in TASKMAN_CONFIG file", &[], &[("TASKMAN_CONFIG", file)], 2, &["unknown key server.bnd", file]),
        ("missing config file", &["--config", "/nonexistent/taskman.toml"], &[], 2, &["cannot read config file /nonexistent/taskman.toml"]),
        ("wrong type", &[], &[("TASKMAN__BREAKER__PROBE_EVERY", "ten")], 2, &["breaker.probe_every = \"ten\"", "expected a whole number"]),
        ("zero threshold", &[], &[("TASKMAN__BREAKER__FAILURE_THRESHOLD", "0")], 2, &["breaker.failure_threshold = 0", "must be at least 1"]),
        ("unparsable duration", &[], &[("TASKMAN__SERVER__SHUTDOWN_TIMEOUT", "soon")], 2, &["server.shutdown_timeout = \"soon\"", "duration"]),
        ("invalid trusted proxy", &[], &[("TASKMAN__METRICS__TRUSTED_PROXIES", "10.0.0.0/8,bogus")], 2, &["metrics.trusted_proxies[1] = \"bogus\"", "`bogus` is not an IPv4 or IPv6 address"]),
        ("unparsable endpoint", &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")], 2, &["OTEL_EXPORTER_OTLP_ENDPOINT = \"not a url\"", "http://"]),
        ("unknown protocol", &[], &[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")], 2, &["OTEL_EXPORTER_OTLP_PROTOCOL = \"carrier-pigeon\""]),
        ("zero batch schedule delay", &[], &[("OTEL_BSP_SCHEDULE_DELAY", "0")], 2, &["config error: OTEL_BSP_SCHEDULE_DELAY = \"0\"", "at least 1"]),
        ("malformed exporter headers", &[], &[("OTEL_EXPORTER_OTLP_HEADERS", "api-key=hunter2,oops")], 2, &["OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***,***\"", "entry 2"]),
        ("endpoint port out of range", &[], &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://u:hunter2@collector:99999")], 2, &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = \"http://***@collector:99999\""]),
        ("bad RUST_LOG", &[], &[("RUST_LOG", "taskman=loud")], 2, &["RUST_LOG = \"taskman=loud\""]),
        ("bad log format", &[], &[("TASKMAN__LOG__FORMAT", "xml")], 2, &["log.format = \"xml\""]),
        ("unopenable database", &[], &[("TASKMAN__STORAGE__PATH", "/nonexistent/dir/tasks.db")], 1, &["storage.path = /nonexistent/dir/tasks.db", "cannot open the task database"]),
    ];
    for (what, args, env, code, fragments) in cases {
        let mut all = vec![
            ("TASKMAN__SERVER__BIND", "127.0.0.1:0"),
            ("TASKMAN__STORAGE__PATH", db),
        ];
        all.extend_from_slice(env);
        let (status, stdout, stderr) = run_to_exit(args, &all);
        assert_eq!(status.code(), Some(*code), "{what}: stderr {stderr:?}");
        let line = one_line(&stderr);
        assert!(line.starts_with("taskman-server: "), "{what}: {line}");
        for fragment in *fragments {
            assert!(
                line.contains(fragment),
                "{what}: {line:?} should contain {fragment:?}"
            );
        }
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "{what}: a secret leaked: {stderr}"
        );
        assert!(
            stdout.is_empty(),
            "{what}: nothing on stdout, got {stdout:?}"
        );
    }
}

#[test]
fn address_in_use_is_one_line_naming_server_bind() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(&dir.path().join("a.db"), &[]);
    let taken = first.addr().to_string();
    let db = dir.path().join("b.db");
    let (status, _, stderr) = run_to_exit(
        &[],
        &[
            ("TASKMAN__SERVER__BIND", &taken),
            ("TASKMAN__STORAGE__PATH", db.to_str().unwrap()),
        ],
    );
    assert!(!status.success());
    let line = one_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "taskman-server: server.bind = {taken}: cannot listen"
        )),
        "{line}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn tasks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let agent = agent();

    let server = start(&db, &[]);
    for title in ["one", "two", "three"] {
        let (status, _) = request(
            &agent,
            "POST",
            &url(&server, "/tasks"),
            Some(&json!({ "title": title })),
        )
        .unwrap();
        assert_eq!(status, 201);
    }
    let (status, _) = request(
        &agent,
        "PATCH",
        &url(&server, "/tasks/2"),
        Some(&json!({ "status": "done" })),
    )
    .unwrap();
    assert_eq!(status, 200);
    let (status, _) = request(&agent, "DELETE", &url(&server, "/tasks/3"), None).unwrap();
    assert_eq!(status, 204);
    let before = all_tasks(&agent, &server);
    let (exit, _) = stop_with(server, "TERM");
    assert!(exit.success(), "{exit:?}");

    let server = start(&db, &[]);
    let after = all_tasks(&agent, &server);
    assert_eq!(after, before);
    assert_eq!(after.len(), 2);
    assert_eq!(after[&2]["status"], "done");
    // A deleted id stays unused after the restart.
    let (_, created) = request(
        &agent,
        "POST",
        &url(&server, "/tasks"),
        Some(&json!({ "title": "four" })),
    )
    .unwrap();
    assert_eq!(created["id"], 4);
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    const WRITERS: usize = 3;
    const BEFORE_KILL: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let mut server = start(&db, &[]);

    let acknowledged: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = url(&server, "/tasks");
            let acknowledged = Arc::clone(&acknowledged);
            thread::spawn(move || {
                let agent = agent();
                for n in 0.. {
                    let title = format!("writer {w} task {n}");
                    match request(&agent, "POST", &url, Some(&json!({ "title": title }))) {
                        Ok((201, task)) => acknowledged
                            .lock()
                            .unwrap()
                            .push((task["id"].as_i64().unwrap(), title)),
                        // The server is gone: the write was never acknowledged.
                        Ok(_) | Err(_) => return,
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + DEADLINE;
    while acknowledged.lock().unwrap().len() < BEFORE_KILL {
        assert!(Instant::now() < deadline, "writers too slow");
        thread::sleep(Duration::from_millis(5));
    }
    server.sigkill().unwrap(); // mid-write-loop
    server
        .wait_exit(DEADLINE)
        .expect("SIGKILL ends the process");
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    drop(server);

    let server = start(&db, &[]);
    let stored = all_tasks(&agent(), &server);
    for (id, title) in &acknowledged {
        let task = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged task {id} lost"));
        assert_eq!(task["title"], title.as_str());
    }
    assert!(stored.len() >= acknowledged.len());
}

/// A POST whose body is not yet sent when the signal arrives still completes, and the process
/// then exits 0.
#[test]
fn sigterm_sigint_and_sighup_drain_requests_in_flight_and_exit_0() {
    // SIGHUP is a stop too: the server has nothing to reload, and its default action would
    // cut the request below.
    for signal in ["TERM", "INT", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(
            &dir.path().join("tasks.db"),
            &[("TASKMAN__SERVER__SHUTDOWN_TIMEOUT", "5s")],
        );

        // `Expect: 100-continue` makes the server say when the request has reached the
        // application: only then is it in flight. (A request still in the listen backlog, or
        // not yet parsed, is not drained: the connection is closed.)
        let body = json!({ "title": format!("sent across SIG{signal}") }).to_string();
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        assert!(read_response(&mut stream).starts_with("HTTP/1.1 100 Continue"));

        send_signal(&server, signal);
        server
            .wait_for_stderr("stopping", DEADLINE)
            .unwrap_or_else(|| panic!("SIG{signal} not acted on: {}", server.stderr()));
        // New connections are refused once stopping began...
        let addr = server.addr();
        let refused = wait_until(|| TcpStream::connect(addr).is_err());
        assert!(refused, "SIG{signal}: still accepting connections");
        // ...while the request in flight is finished.
        stream.write_all(body.as_bytes()).unwrap();
        let response = read_response(&mut stream);
        assert!(
            response.starts_with("HTTP/1.1 201"),
            "SIG{signal}: {response}"
        );
        assert!(response.contains("sent across"), "SIG{signal}: {response}");

        let status = server.wait_exit(DEADLINE).expect("no exit after draining");
        assert_eq!(status.code(), Some(0), "SIG{signal}");
        assert!(server.wait_for_stderr("stopped", DEADLINE).is_some());
    }
}

/// One HTTP/1.1 response with a `Content-Length` body, as text.
fn read_response(stream: &mut TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

/// A request that never finishes (its body never comes) holds the stop for
/// `server.shutdown_timeout`, no longer, and the exit is still 0.
#[test]
fn a_stuck_request_delays_exit_by_the_shutdown_timeout_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("tasks.db"),
        &[("TASKMAN__SERVER__SHUTDOWN_TIMEOUT", "2s")],
    );
    let mut stuck = TcpStream::connect(server.addr()).unwrap();
    stuck.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stuck,
        "POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    assert!(read_response(&mut stuck).starts_with("HTTP/1.1 100 Continue"));

    let (status, took) = stop_with(server, "TERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_secs(2),
        "did not wait for the request: {took:?}"
    );
    // Without the 2 s timeout the drain would hold until DEADLINE; the rest
    // is slack for signal delivery and exit on a loaded machine.
    assert!(
        took < Duration::from_secs(2) + STOP_SLACK,
        "waited past the timeout: {took:?}"
    );
}

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn defaults_need_no_configuration() {
    // Only the port is overridden (8080 may be taken on this machine): the database lands in
    // the working directory as taskman.db and text logs go to stderr.
    let dir = tempfile::tempdir().unwrap();
    let server = command(&[])
        .default_db_path()
        .current_dir(dir.path())
        .start()
        .unwrap_or_else(|err| panic!("{err}"));
    let (status, _) = request(
        &agent(),
        "POST",
        &url(&server, "/tasks"),
        Some(&json!({ "title": "hello" })),
    )
    .unwrap();
    assert_eq!(status, 201);
    assert!(dir.path().join("taskman.db").exists());
    let log = server.stderr();
    assert!(!log.lines().any(|l| l.starts_with('{')), "text logs: {log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        &dir.path().join("tasks.db"),
        &[("TASKMAN__LOG__FORMAT", "json")],
    );
    let line = server.wait_for_stderr("listening on", DEADLINE).unwrap();
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    assert_eq!(event["level"], "INFO");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("listening on http://127.0.0.1:")
    );
    for line in server.stderr().lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

#[test]
fn print_config_shows_effective_values_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("taskman.toml");
    std::fs::write(&file, "[breaker]\nprobe_after = \"45s\"\n").unwrap();
    let (status, stdout, stderr) = run_to_exit(
        &["--print-config", "--config", file.to_str().unwrap()],
        &[
            ("TASKMAN__SERVER__BIND", "0.0.0.0:9999"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=hunter2"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://user:hunter2@collector:4317",
            ),
        ],
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("bind = \"0.0.0.0:9999\""), "{stdout}");
    assert!(stdout.contains("probe_after = \"45s\""), "{stdout}");
    assert!(stdout.contains("failure_threshold = 3"), "{stdout}");
    assert!(
        stdout.contains("OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = \"http://***@collector:4317\""),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn help_describes_the_options_and_configuration() {
    let (status, stdout, _) = run_to_exit(&["--help"], &[]);
    assert!(status.success());
    for expected in [
        "--config <PATH>",
        "--print-config",
        "TASKMAN__SECTION__KEY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "SIGTERM",
    ] {
        assert!(
            stdout.contains(expected),
            "--help should mention {expected}: {stdout}"
        );
    }
}

/// An OTLP endpoint that accepts connections and never answers; counts connections.
fn black_hole() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, accepted)
}

#[test]
fn sigterm_exits_0_within_the_shutdown_timeout_while_the_backend_hangs() {
    let (otlp, accepted) = black_hole();
    let endpoint = format!("http://{otlp}");
    let dir = tempfile::tempdir().unwrap();
    // The export timeout is longer than the shutdown timeout: the worst case, where an
    // export is still stuck on the backend when the stop signal comes.
    let server = start(
        &dir.path().join("tasks.db"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "60s"),
            ("TASKMAN__SERVER__SHUTDOWN_TIMEOUT", "3s"),
        ],
    );
    let agent = agent();
    for i in 0..5 {
        let (status, _) = request(
            &agent,
            "POST",
            &url(&server, "/tasks"),
            Some(&json!({ "title": format!("task {i}") })),
        )
        .unwrap();
        assert_eq!(
            status, 201,
            "requests are unaffected by the hanging backend"
        );
    }
    assert!(
        wait_until(|| accepted.load(std::sync::atomic::Ordering::SeqCst) > 0),
        "the exporter never reached the backend"
    );
    let (status, took) = stop_with(server, "TERM");
    assert_eq!(status.code(), Some(0));
    // 3 s of budget, and slack for signal delivery and exit on a loaded
    // machine; waiting for the hanging export would take 60 s.
    assert!(
        took < Duration::from_secs(3) + STOP_SLACK,
        "exit took {took:?}"
    );
}
