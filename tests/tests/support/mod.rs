//! What the end-to-end scenarios share: a [`Rig`] (an OTLP receiver, the real
//! `taskman-server` pointed at it, and a runtime for the receiver), a blocking
//! client for the server's HTTP API, background task [`Traffic`], and readers
//! for `/health/telemetry`, `/metrics` and the server's last log line.
//!
//! Everything here observes the server from outside, as an operator would:
//! its HTTP answers, its log, its exit status and what reaches the receiver.
//! Waits poll a condition until a generous deadline ([`WAIT`]); nothing sleeps
//! "long enough".

pub(crate) mod prometheus;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ::tests::receiver::{Mode, Protocol, Receiver, Snapshot};
use ::tests::server::TaskmanServer;
use serde_json::Value;

/// Deadline for anything that should take a second or two: reached only when
/// something is broken, even on a loaded 2-core CI machine.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// `OTEL_BSP_SCHEDULE_DELAY` of every rig: one export attempt per 100 ms
/// while spans keep ending.
pub(crate) const SCHEDULE_DELAY: Duration = Duration::from_millis(100);

/// How often conditions over HTTP are re-checked.
const POLL: Duration = Duration::from_millis(10);

/// Pause between two traffic iterations (a create and a read): about 50
/// requests a second, enough to fill every batch, light enough for 2 cores
/// running two scenarios at once.
const TRAFFIC_PACE: Duration = Duration::from_millis(20);

/// A receiver (OTLP/gRPC unless started with [`Rig::start_with`]), a server
/// exporting to it, and the runtime the receiver runs on.
/// Dropping it kills the server and stops the receiver.
pub(crate) struct Rig {
    // Field order is drop order: the server goes first, the runtime last.
    /// The server under test.
    pub(crate) server: TaskmanServer,
    /// The OTLP receiver the server exports to.
    pub(crate) receiver: Receiver,
    /// A client for the server's HTTP API.
    pub(crate) api: Api,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for Rig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rig")
            .field("server", &self.server.addr())
            .field("receiver", &self.receiver.addr())
            .finish_non_exhaustive()
    }
}

impl Rig {
    /// Starts a receiver in [`Mode::Accept`] and a server exporting to it with
    /// [`SCHEDULE_DELAY`]; `env` is applied last (`TASKMAN__BREAKER__*`,
    /// `OTEL_BSP_*`, ...).
    pub(crate) fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(Protocol::Grpc, env)
    }

    /// Like [`Rig::start`], with the receiver and the server's exporter
    /// speaking `protocol`.
    pub(crate) fn start_with(protocol: Protocol, env: &[(&str, &str)]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a Tokio runtime for the receiver");
        let receiver = runtime
            .block_on(Receiver::start_with(
                protocol,
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ))
            .expect("the OTLP receiver starts");
        // The base URL for both: the HTTP exporter appends `/v1/traces` itself.
        let endpoint = receiver.base_url();
        let otlp_protocol = match protocol {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http/protobuf",
        };
        let delay = SCHEDULE_DELAY.as_millis().to_string();
        let mut all = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", otlp_protocol),
            ("OTEL_BSP_SCHEDULE_DELAY", delay.as_str()),
            // The accounting reads an info line; a developer's RUST_LOG must not hide it.
            ("RUST_LOG", "info"),
            // The span path alone, so that every export, failure and probe the
            // scenarios count is a span export: the server's log records share the
            // breaker and would take some of them. tests/three_signals.rs turns them on.
            ("OTEL_LOGS_EXPORTER", "none"),
        ];
        all.extend_from_slice(env);
        let server = TaskmanServer::start(&all).expect("taskman-server starts");
        let api = Api::new(server.base_url());
        Self {
            server,
            receiver,
            api,
            runtime,
        }
    }

    /// Runs `future` (a receiver wait) on the receiver's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Switches the receiver's mode; returns once the switch is complete
    /// (for [`Mode::Stopped`]: the port refuses connections; back from it:
    /// the port listens again).
    pub(crate) fn set_mode(&self, mode: Mode) {
        self.runtime
            .block_on(self.receiver.set_mode(mode))
            .unwrap_or_else(|err| panic!("switching the receiver to {mode}: {err}"));
    }

    /// What the receiver has seen so far.
    pub(crate) fn seen(&self) -> Snapshot {
        self.receiver.snapshot()
    }

    /// Waits until `done` holds for the receiver's snapshot.
    pub(crate) fn receiver_until(
        &self,
        what: &str,
        done: impl FnMut(&Snapshot) -> bool,
    ) -> Snapshot {
        self.runtime
            .block_on(self.receiver.wait_until(WAIT, what, done))
            .unwrap_or_else(|err| panic!("{err}\n{}", self.server_log()))
    }

    /// `GET /health/telemetry`.
    pub(crate) fn health(&self) -> Health {
        self.api.health()
    }

    /// Polls `/health/telemetry` until `done` holds, for at most `within`.
    pub(crate) fn health_within(
        &self,
        within: Duration,
        what: &str,
        mut done: impl FnMut(&Health) -> bool,
    ) -> Health {
        let deadline = Instant::now() + within;
        loop {
            let health = self.health();
            if done(&health) {
                return health;
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {within:?} for {what}; last /health/telemetry: {health}\nreceiver: {}\n{}",
                    self.seen(),
                    self.server_log()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Polls `/health/telemetry` until `done` holds, for at most [`WAIT`].
    pub(crate) fn health_until(&self, what: &str, done: impl FnMut(&Health) -> bool) -> Health {
        self.health_within(WAIT, what, done)
    }

    /// Waits until every span the server ended has been handed to the exporter
    /// and its export has finished, and the server ended exactly `spans`: the
    /// pipeline is idle, so counters read now stay put.
    pub(crate) fn settled(&self, spans: u64) -> Health {
        self.health_until(
            &format!("{spans} spans ended and every one of them exported, dropped or failed"),
            |h| h.ended() == spans && h.handed_over() == spans,
        )
    }

    /// The server's log so far, for failure messages.
    pub(crate) fn server_log(&self) -> String {
        format!("server stderr:\n{}", self.server.stderr())
    }
}

/// A blocking client for the server's HTTP API. Error statuses are answers,
/// not errors.
#[derive(Debug)]
pub(crate) struct Api {
    agent: ureq::Agent,
    base: String,
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: u16,
    /// The `Location` header, if any.
    pub(crate) location: Option<String>,
    /// The body as text.
    pub(crate) body: String,
    /// From sending the request to reading the whole body.
    pub(crate) took: Duration,
}

impl Api {
    /// A client for the server at `base` (`http://127.0.0.1:PORT`).
    pub(crate) fn new(base: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(WAIT))
            .build()
            .into();
        Self { agent, base }
    }

    /// `GET path` with extra headers.
    pub(crate) fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let started = Instant::now();
        let mut request = self.agent.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        reply(started, request.call(), "GET", path)
    }

    /// `GET path`.
    pub(crate) fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[])
    }

    /// `POST path` with a JSON body.
    pub(crate) fn post(&self, path: &str, json: &str) -> Reply {
        let started = Instant::now();
        let result = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(json);
        reply(started, result, "POST", path)
    }

    /// `PATCH path` with a JSON body.
    pub(crate) fn patch(&self, path: &str, json: &str) -> Reply {
        let started = Instant::now();
        let result = self
            .agent
            .patch(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(json);
        reply(started, result, "PATCH", path)
    }

    /// `DELETE path`.
    pub(crate) fn delete(&self, path: &str) -> Reply {
        let started = Instant::now();
        let result = self.agent.delete(format!("{}{path}", self.base)).call();
        reply(started, result, "DELETE", path)
    }

    /// `POST /tasks` with this title; panics unless it answers 201 with a
    /// `Location`, which it returns (`/tasks/ID`).
    pub(crate) fn create_task(&self, title: &str) -> String {
        let reply = self.post("/tasks", &serde_json::json!({ "title": title }).to_string());
        assert_eq!(reply.status, 201, "POST /tasks: {reply:?}");
        reply
            .location
            .unwrap_or_else(|| panic!("POST /tasks answered 201 without a Location"))
    }

    /// `GET /health/telemetry`, parsed.
    pub(crate) fn health(&self) -> Health {
        let reply = self.get("/health/telemetry");
        let json = serde_json::from_str(&reply.body)
            .unwrap_or_else(|err| panic!("/health/telemetry is not JSON ({err}): {reply:?}"));
        Health {
            http_status: reply.status,
            json,
        }
    }
}

fn reply(
    started: Instant,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    method: &str,
    path: &str,
) -> Reply {
    let mut response = result.unwrap_or_else(|err| panic!("{method} {path}: {err}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let location = header("location");
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|err| panic!("{method} {path}: reading the body: {err}"));
    Reply {
        status: response.status().as_u16(),
        location,
        body,
        took: started.elapsed(),
    }
}

/// A `/health/telemetry` answer.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    /// 200 when the circuit is closed, 503 otherwise.
    pub(crate) http_status: u16,
    /// The body.
    pub(crate) json: Value,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.http_status, self.json)
    }
}

impl Health {
    /// `circuit_state`: `closed`, `open` or `half_open`.
    pub(crate) fn state(&self) -> &str {
        self.json["circuit_state"]
            .as_str()
            .unwrap_or_else(|| panic!("no circuit_state in {self}"))
    }

    /// Whether the circuit is closed.
    pub(crate) fn closed(&self) -> bool {
        self.state() == "closed"
    }

    /// Whether the circuit is open (not half-open).
    pub(crate) fn open(&self) -> bool {
        self.state() == "open"
    }

    /// A count at a JSON pointer such as `/spans/exported`.
    pub(crate) fn count(&self, pointer: &str) -> u64 {
        self.json
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no count at {pointer} in {self}"))
    }

    /// Spans that ended in the server (counted before the SDK's queue).
    pub(crate) fn ended(&self) -> u64 {
        self.count("/spans/ended")
    }

    /// Spans the backend accepted.
    pub(crate) fn exported(&self) -> u64 {
        self.count("/spans/exported")
    }

    /// Spans dropped unsent because the circuit was open.
    pub(crate) fn dropped(&self) -> u64 {
        self.count("/spans/dropped")
    }

    /// Spans whose export failed.
    pub(crate) fn failed(&self) -> u64 {
        self.count("/spans/failed")
    }

    /// Spans the backend took and said it rejected (partial success).
    pub(crate) fn rejected(&self) -> u64 {
        self.count("/spans/rejected")
    }

    /// Spans handed to the exporter: exported, rejected, dropped or failed.
    pub(crate) fn handed_over(&self) -> u64 {
        self.exported() + self.rejected() + self.dropped() + self.failed()
    }

    /// Failed export batches, whatever the cause (every cause is listed).
    pub(crate) fn failed_batches(&self) -> u64 {
        self.json["failed_batches"]
            .as_object()
            .map_or(0, |by_cause| {
                by_cause.values().filter_map(|v| v.as_u64()).sum()
            })
    }

    /// Probe exports attempted while the circuit was open.
    pub(crate) fn probes(&self) -> u64 {
        self.count("/probes")
    }

    /// Failed exports since `before` that were not probes: those that counted
    /// towards opening the closed circuit. Exact while nothing succeeds and no
    /// probe is in flight (a probe is counted when it starts, its failure when
    /// it ends).
    pub(crate) fn closed_state_failures_since(&self, before: &Self) -> i64 {
        let delta =
            |now: u64, then: u64| i64::try_from(now).unwrap() - i64::try_from(then).unwrap();
        delta(self.failed_batches(), before.failed_batches())
            - delta(self.probes(), before.probes())
    }
}

/// One task request made by [`Traffic`].
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// When it was sent.
    pub(crate) at: Instant,
    /// The route template, as the server span is named.
    pub(crate) route: &'static str,
    /// The status code.
    pub(crate) status: u16,
    /// How long it took.
    pub(crate) took: Duration,
}

impl Call {
    /// The status the route answers when all is well.
    pub(crate) fn expected_status(&self) -> u16 {
        match self.route {
            "POST /tasks" => 201,
            _ => 200,
        }
    }
}

/// Background task requests: create a task, read it back, pause, repeat.
/// Every request is valid and reaches storage, so each one ends exactly two
/// spans (the server span and its storage child).
#[derive(Debug)]
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    calls: Arc<Mutex<Vec<Call>>>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    /// Starts sending requests to the server at `base`.
    pub(crate) fn start(base: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, made, calls) = (Arc::clone(&stop), Arc::clone(&made), Arc::clone(&calls));
            thread::spawn(move || {
                let api = Api::new(base);
                let record = |route, reply: &Reply, at| {
                    calls
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Call {
                            at,
                            route,
                            status: reply.status,
                            took: reply.took,
                        });
                    made.fetch_add(1, Ordering::SeqCst);
                };
                let mut n = 0_u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let at = Instant::now();
                    let created = api.post(
                        "/tasks",
                        &serde_json::json!({ "title": format!("traffic {n}") }).to_string(),
                    );
                    record("POST /tasks", &created, at);
                    if let Some(location) = &created.location {
                        let at = Instant::now();
                        record("GET /tasks/{id}", &api.get(location), at);
                    }
                    thread::sleep(TRAFFIC_PACE);
                }
            })
        };
        Self {
            stop,
            made,
            calls,
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub(crate) fn made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }

    /// Waits until `more` requests have been answered after this call.
    pub(crate) fn wait_for_more(&self, more: usize) {
        let target = self.made() + more;
        let deadline = Instant::now() + WAIT;
        while self.made() < target {
            assert!(
                Instant::now() < deadline,
                "traffic made {} requests in {WAIT:?}, waiting for {target}",
                self.made()
            );
            thread::sleep(POLL);
        }
    }

    /// Stops after the request in progress and returns every request made.
    pub(crate) fn stop(mut self) -> Vec<Call> {
        self.halt();
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
            && !thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Panics unless every call got its route's usual status.
pub(crate) fn assert_all_succeeded(calls: &[Call], phase: &str) {
    let wrong: Vec<_> = calls
        .iter()
        .filter(|c| c.status != c.expected_status())
        .collect();
    assert!(
        wrong.is_empty(),
        "{phase}: {} of {} task requests did not get their usual status: {wrong:?}",
        wrong.len(),
        calls.len()
    );
}

/// The median latency of `calls`.
pub(crate) fn median_latency(calls: &[&Call]) -> Duration {
    let mut took: Vec<_> = calls.iter().map(|c| c.took).collect();
    took.sort_unstable();
    took.get(took.len() / 2).copied().unwrap_or_default()
}

/// The counts of the server's last line, `tracing shut down spans_ended=..
/// spans_exported=.. spans_rejected=.. spans_dropped=.. spans_failed=..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FinalCounts {
    /// Sampled spans that ended, counted before the SDK's queue.
    pub(crate) ended: u64,
    /// Accepted by the backend.
    pub(crate) exported: u64,
    /// In accepted batches, but rejected by the backend's partial success.
    pub(crate) rejected: u64,
    /// Dropped because the circuit was open.
    pub(crate) dropped: u64,
    /// Sent, but the export failed.
    pub(crate) failed: u64,
    /// Lost because the batch queue was full when they ended.
    pub(crate) queue_full: u64,
}

impl FinalCounts {
    /// Reads the counts from the server's log; `None` without the line.
    pub(crate) fn from_log(log: &str) -> Option<Self> {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("tracing shut down"))?;
        let field = |key: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))?
                .trim_matches('"')
                .parse()
                .ok()
        };
        Some(Self {
            ended: field("spans_ended")?,
            exported: field("spans_exported")?,
            rejected: field("spans_rejected")?,
            dropped: field("spans_dropped")?,
            failed: field("spans_failed")?,
            queue_full: field("spans_queue_full")?,
        })
    }
}

/// Sends SIGTERM and waits for the exit; returns how long it took.
pub(crate) fn terminate(rig: &mut Rig, within: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    rig.server.sigterm().expect("SIGTERM reaches the server");
    let status = rig.server.wait_exit(within).unwrap_or_else(|| {
        panic!(
            "taskman-server still running {within:?} after SIGTERM\n{}",
            rig.server_log()
        )
    });
    (status, started.elapsed())
}

/// Switches the receiver into `mode`; it must be accepting, with the circuit closed.
pub(crate) fn outage(rig: &Rig, mode: Mode) {
    assert_eq!(rig.receiver.mode(), Mode::Accept);
    rig.set_mode(mode);
    rig.health_until(
        &format!("the circuit to open with the receiver {mode}"),
        |h| h.open(),
    );
}

/// Brings the receiver back and waits for the circuit to close.
pub(crate) fn recover(rig: &Rig) {
    rig.set_mode(Mode::Accept);
    rig.health_until("the circuit to close with the receiver accepting", |h| {
        h.closed()
    });
}
