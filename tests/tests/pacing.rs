//! How quiet probing is, end to end (`docs/contract.md`, section 3): the real
//! `taskman-server` against a real OTLP/gRPC receiver, at the default
//! breaker settings and the SDK's default batch delay (5 s).
//!
//! - At full load against a backend that answers `UNAVAILABLE` throughout,
//!   the probe floor, not the traffic, decides how often the backend is
//!   reached, and the log says the outage once.
//! - A quiet service recovers when the backend is back, within about
//!   `min_probe_interval` plus one batch delay.
//!
//! Everything is counted (requests at the receiver, lines in the log), not
//! timed, except the recovery, whose bound is a generous deadline; measured
//! figures are printed (`--nocapture`). The pipeline turns the OTLP
//! exporter's own retries off, so one export or probe is one request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::thread;
use std::time::{Duration, Instant};

use ::tests::load::{self, LoadSpec};
use ::tests::receiver::{Mode, Receiver};
use ::tests::server::TaskmanServer;
use serde_json::Value;

/// The SDK's default `OTEL_BSP_SCHEDULE_DELAY`.
const BATCH_DELAY: Duration = Duration::from_secs(5);

/// The default `breaker.min_probe_interval`.
const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Deadline for what should take a second or two, on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// How often `/health/telemetry` is re-read.
const POLL: Duration = Duration::from_millis(20);

/// A receiver and a server exporting to it at the default settings.
struct Rig {
    // Field order is drop order: the server goes before the receiver's runtime.
    server: TaskmanServer,
    receiver: Receiver,
    agent: ureq::Agent,
    runtime: tokio::runtime::Runtime,
}

impl Rig {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let receiver = runtime.block_on(Receiver::start()).unwrap();
        let endpoint = receiver.endpoint();
        let server = TaskmanServer::start(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // The default level, whatever the developer's environment says.
            ("RUST_LOG", "info"),
            ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
            // The subject is the breaker's pacing, which needs batches to reach it. At the
            // default background priority a saturated machine sheds them in the queue
            // (counted as queue_full) before three have failed: right for the service,
            // but not what these tests measure.
            ("TASKMAN__TELEMETRY__PRIORITY", "normal"),
        ])
        .unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(WAIT))
            .build()
            .into();
        Self {
            server,
            receiver,
            agent,
            runtime,
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.runtime.block_on(self.receiver.set_mode(mode)).unwrap();
    }

    fn get(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.server.base_url());
        let mut reply = self.agent.get(url).call().unwrap();
        let status = reply.status().as_u16();
        (status, reply.body_mut().read_to_string().unwrap())
    }

    fn health(&self) -> Value {
        let (_, body) = self.get("/health/telemetry");
        serde_json::from_str(&body).unwrap()
    }

    fn state(&self) -> String {
        self.health()["circuit_state"]
            .as_str()
            .unwrap_or("missing")
            .to_owned()
    }

    /// Polls the circuit state until it is `state`, for at most `within`;
    /// returns how long that took.
    fn wait_for_state(&self, state: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let seen = self.state();
            if seen == state {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "waited {within:?} for the circuit to be {state}, it is {seen}; receiver: {}\n{}",
                self.receiver.snapshot(),
                self.log()
            );
            thread::sleep(POLL);
        }
    }

    /// Every line the server wrote, stderr and stdout.
    fn log(&self) -> String {
        format!("{}{}", self.server.stderr(), self.server.stdout())
    }

    fn log_lines(&self) -> usize {
        self.log().lines().filter(|l| !l.trim().is_empty()).count()
    }
}

#[test]
fn at_full_load_a_dead_backend_sees_few_exports_and_the_log_few_lines() {
    let rig = Rig::start();
    rig.set_mode(Mode::Unavailable);
    let before = rig.receiver.totals().requests;
    let lines_before = rig.log_lines();

    // 16 connections reading tasks back as fast as the server answers; each
    // creates one task first (the first request of a connection), then reads.
    let spec = LoadSpec {
        post_every: u32::MAX,
        ..LoadSpec::closed_loop(rig.server.addr(), 16, Duration::from_secs(10))
    };
    let report = load::run(&spec);
    let requests = rig.receiver.totals().requests - before;
    let lines = rig.log_lines();
    println!(
        "{} requests in {:?} ({:.0}/s, {} errors); {requests} export requests reached the \
         receiver; {} log lines ({} before the load)",
        report.requests(),
        report.elapsed,
        report.throughput(),
        report.errors,
        lines,
        lines_before
    );
    println!("{}", rig.log());
    assert_eq!(report.errors, 0, "{:?}", report.first_errors);
    // However fast the machine let the load go (printed above), every
    // connection was served, and the breaker dropped batches instead of
    // sending them.
    assert!(report.requests() >= 16, "{} requests", report.requests());
    // Three failed batches open the circuit; then the floor (1 s, then
    // 1-2 s, 2-4 s, 4-8 s) allows a handful of probes in 10 s, whatever
    // the number of batches.
    assert!(
        (3..=12).contains(&requests),
        "{requests} export requests reached the receiver: {}",
        rig.receiver.snapshot()
    );
    let health = rig.health();
    assert_ne!(health["circuit_state"], "closed", "{health}");
    assert!(
        health["spans"]["dropped"].as_u64().unwrap_or(0) > 0,
        "batches were dropped, not sent: {health}"
    );
    // The start-up lines, one warning when the circuit opened, and nothing
    // per batch or per probe.
    assert!(lines <= 6, "{lines} log lines:\n{}", rig.log());
    let log = rig.log();
    assert_eq!(
        log.matches("telemetry circuit opened").count(),
        1,
        "the outage is said once:\n{log}"
    );
}

#[test]
fn a_quiet_service_recovers_within_the_probe_floor_and_a_batch_delay() {
    let rig = Rig::start();
    rig.set_mode(Mode::Unavailable);
    // 10 requests a second: each batch delay (5 s) exports one batch.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spec = LoadSpec {
        rate: Some(10.0),
        post_every: 10,
        stop: Some(std::sync::Arc::clone(&stop)),
        ..LoadSpec::closed_loop(rig.server.addr(), 1, Duration::from_secs(300))
    };
    let traffic = thread::spawn(move || load::run(&spec));

    // Three failed batches, one per batch delay, open the circuit.
    let opened_within = BATCH_DELAY * 3 * 3 + WAIT;
    rig.wait_for_state("open", opened_within);
    rig.set_mode(Mode::Accept);
    let back = Instant::now();
    let deadline = (MIN_PROBE_INTERVAL + BATCH_DELAY) * 3 + Duration::from_secs(5);
    rig.wait_for_state("closed", deadline);
    let recovered = back.elapsed();
    let health = rig.health();
    println!(
        "closed {recovered:?} after the backend came back (expected within \
         {:?}; deadline {deadline:?}); probes: {}",
        MIN_PROBE_INTERVAL + BATCH_DELAY,
        health["probes"]
    );

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = traffic.join().unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.first_errors);
    let log = rig.log();
    assert!(
        log.contains("telemetry circuit closed"),
        "the recovery is logged:\n{log}"
    );
}
