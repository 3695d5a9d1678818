//! Span memory is bounded by bytes, not only by span count
//! (`docs/operations.md`, "Memory bound"): the real `taskman-server` binary,
//! its OTLP backend hanging, and every request carrying a 60 KB
//! `User-Agent`. The SDK queue holds at most `OTEL_BSP_MAX_QUEUE_SIZE` spans
//! and one batch is in flight, but a span's size is set by its attributes:
//! without the cut to `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` (256 bytes by
//! default, `breaker-otel/src/pipeline.rs`) each server span would keep the
//! whole header, and the queue alone would hold over 60 MB of them.
//!
//! What it proves, as an operator sees it: the server's resident memory
//! (`VmRSS`) grows by only a few megabytes over a warmed-up baseline while
//! 10,000 such requests end 20,000 spans into a queue that cannot drain, and
//! the spans that do reach the backend carry the header cut to exactly the
//! limit. Loopback only; the server binds 127.0.0.1:0; every wait polls
//! against a generous deadline; the figures are printed (`--nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ::tests::process_stats::resident_bytes;
use ::tests::receiver::{Mode, Outcome, ReceivedSpan, Receiver, Snapshot};
use ::tests::server::{ServerCommand, TaskmanServer};

/// Generous: a debug build on a loaded 2-core CI machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// The size of the hostile `User-Agent` header.
const USER_AGENT_BYTES: usize = 60 * 1024;

/// The server's default `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`.
const VALUE_LIMIT: usize = 256;

/// Requests during the outage; each ends a server span (which carries the
/// `User-Agent`) and a storage span.
const REQUESTS: usize = 10_000;

/// Requests before the outage, exported normally: they warm up the server's
/// connection buffers and allocator arenas with requests of the same size, so
/// the baseline already contains what any such request costs by itself.
const WARM_UP: usize = 500;

/// Concurrent keep-alive clients, one thread each.
const CLIENTS: usize = 4;

/// `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (the SDK's
/// defaults, which the test does not change).
const QUEUE: u64 = 2048;
const BATCH: u64 = 512;

/// The most the server's resident memory may grow over the baseline while the
/// queue is full.
///
/// What the pipeline may hold here: `QUEUE` spans waiting and one batch of
/// `BATCH` in flight, encoded once more for the request; count the batch three
/// times for slack: 2048 + 3 × 512 = 3584 spans. A server span of this route arrives with ten
/// attributes (method, route, path, scheme, protocol version, server address
/// and port, client address, status, user agent; printed below): the user
/// agent is cut to 256 bytes, the others are short, so they take about
/// 10 × (56-byte `KeyValue` + ~24 bytes of text) + 256 ≈ 1.1 KB; `SpanData`
/// itself (ids, name, times, status, empty event and link lists, scope) is
/// about 0.5 KB. Half the spans are storage spans, which are smaller, so 2 KB
/// per span is an upper bound: 3584 × 2 KB ≈ 7 MiB. (Even with all ten values
/// at the limit, 10 × (256 + 56) B + 0.5 KiB ≈ 3.5 KiB a span, it is 12.5 MiB.)
///
/// The allowance is twice that plus 2 MiB for allocator slack (freed memory
/// glibc keeps in its per-thread arenas, page granularity): 16 MiB. Without
/// the cut, each server span keeps the whole 60 KB header: 1024 waiting
/// server spans alone are 60 MiB. Measured on a debug build (printed below):
/// 5–8 MiB of growth with the cut, 66 MiB with
/// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT=1000000`.
const GROWTH_BOUND: u64 = 16 * 1024 * 1024;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A receiver and the runtime it runs on.
struct Backend {
    receiver: Receiver,
    runtime: tokio::runtime::Runtime,
}

impl Backend {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a Tokio runtime for the receiver");
        let receiver = runtime
            .block_on(Receiver::start())
            .expect("the OTLP receiver starts");
        Self { receiver, runtime }
    }

    fn set_mode(&self, mode: Mode) {
        self.runtime
            .block_on(self.receiver.set_mode(mode))
            .unwrap_or_else(|err| panic!("switching the receiver to {mode}: {err}"));
    }

    fn until(
        &self,
        server: &TaskmanServer,
        what: &str,
        done: impl FnMut(&Snapshot) -> bool,
    ) -> Snapshot {
        self.runtime
            .block_on(self.receiver.wait_until(DEADLINE, what, done))
            .unwrap_or_else(|err| panic!("{err}\nserver stderr:\n{}", server.stderr()))
    }
}

/// `GET /tasks/{id}` server spans whose `User-Agent` consists of `fill`.
fn server_spans_from(seen: &Snapshot, fill: u8) -> Vec<&ReceivedSpan> {
    seen.received
        .iter()
        .filter(|span| span.name == "GET /tasks/{id}")
        .filter(|span| {
            span.attribute("user_agent.original")
                .is_some_and(|ua| ua.as_bytes().first() == Some(&fill))
        })
        .collect()
}

/// Asserts that every span carries exactly the first `VALUE_LIMIT` bytes of a
/// header made of `fill`.
fn assert_cut_to_the_limit(spans: &[&ReceivedSpan], fill: u8) {
    let expected = String::from_utf8(vec![fill; VALUE_LIMIT]).unwrap();
    for span in spans {
        let ua = span.attribute("user_agent.original").unwrap();
        assert_eq!(
            ua.len(),
            VALUE_LIMIT,
            "user_agent.original should be cut to {VALUE_LIMIT} bytes: {span:?}"
        );
        assert_eq!(ua, expected, "{span:?}");
    }
}

/// Sends `requests` `GET path` with a `User-Agent` of `fill` repeated, over
/// [`CLIENTS`] keep-alive connections; panics on any answer but 200.
fn send(base: &str, path: &str, requests: usize, fill: u8) {
    let user_agent = String::from_utf8(vec![fill; USER_AGENT_BYTES]).unwrap();
    let url = format!("{base}{path}");
    let remaining = Arc::new(AtomicU64::new(requests as u64));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, user_agent, remaining) =
                (url.clone(), user_agent.clone(), Arc::clone(&remaining));
            thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(DEADLINE))
                    .build()
                    .into();
                while remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let mut answer = agent
                        .get(&url)
                        .header("user-agent", &user_agent)
                        .call()
                        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
                    let body = answer.body_mut().read_to_string().unwrap();
                    assert_eq!(answer.status(), 200, "GET {url}: {body}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client thread panicked");
    }
}

/// `GET /health/telemetry`, parsed.
fn health(base: &str) -> serde_json::Value {
    let mut answer = ureq::get(format!("{base}/health/telemetry"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
}

fn count(health: &serde_json::Value, pointer: &str) -> u64 {
    health
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no count at {pointer} in {health}"))
}

/// Records the highest `VmRSS` of a process until stopped.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<u64>,
}

impl PeakSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::SeqCst) {
                peak = peak.max(resident_bytes(pid).unwrap());
                // A sampling period, not a wait for anything: the peak is
                // also read once more after the load.
                thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        Self { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the sampler panicked")
    }
}

#[test]
fn a_hung_backend_and_60_kb_user_agents_grow_the_server_by_megabytes_not_the_whole_headers() {
    let backend = Backend::start();
    let endpoint = backend.receiver.endpoint();
    let server = ServerCommand::new()
        .expect("taskman-server builds")
        .env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            // Exports hang for a minute, so the queue fills and stays full.
            ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "60s"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            // On a loaded machine the load outlasts a few hung exports; the
            // circuit must stay closed, or it would drop the queued spans
            // the end of the test waits for (and the queue would not stay full).
            ("TASKMAN__BREAKER__FAILURE_THRESHOLD", "1000"),
            ("TASKMAN__SERVER__WORKERS", "2"),
            ("RUST_LOG", "info"),
        ])
        .start()
        .unwrap_or_else(|err| panic!("{err}"));
    let base = server.base_url();

    let created = ureq::post(format!("{base}/tasks"))
        .header("content-type", "application/json")
        .send(r#"{"title":"memory"}"#)
        .unwrap();
    assert_eq!(created.status(), 201);
    let task = created
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("POST /tasks answers with a Location")
        .to_owned();

    // Warm-up, exported normally: its spans show the cut on the wire.
    send(&base, &task, WARM_UP, b'w');
    let seen = backend.until(&server, "every warm-up server span", |s| {
        server_spans_from(s, b'w').len() >= WARM_UP
    });
    let warm = server_spans_from(&seen, b'w');
    assert_cut_to_the_limit(&warm, b'w');
    eprintln!(
        "memory: a server span arrives with {} attributes: {:?}",
        warm[0].attributes.len(),
        warm[0].attributes.keys().collect::<Vec<_>>()
    );

    // The outage: every export from now on hangs for `export_timeout`.
    backend.set_mode(Mode::Hang);
    let baseline = resident_bytes(server.pid()).unwrap();
    let sampler = PeakSampler::start(server.pid());
    let started = Instant::now();
    send(&base, &task, REQUESTS, b'h');
    let sent_in = started.elapsed();
    let after = resident_bytes(server.pid()).unwrap();
    let peak = sampler.stop().max(after);
    let growth = peak.saturating_sub(baseline);

    // The queue really was full: an export hangs, and more spans ended than
    // the queue and one batch can hold without being handed to the exporter.
    let hung = backend.until(&server, "a hung export", |s| {
        s.outcome(Outcome::Hung).requests > 0
    });
    let during = health(&base);
    let ended = count(&during, "/spans/ended");
    let handed_over = count(&during, "/spans/exported")
        + count(&during, "/spans/dropped")
        + count(&during, "/spans/failed");
    eprintln!(
        "memory: {REQUESTS} requests with a {USER_AGENT_BYTES}-byte User-Agent in {sent_in:.1?}; \
         VmRSS baseline {:.1} MiB, after {:.1} MiB, peak {:.1} MiB: growth {:.1} MiB \
         (bound {:.1} MiB); spans ended {ended}, handed to the exporter {handed_over}, \
         hung exports {}",
        mib(baseline),
        mib(after),
        mib(peak),
        mib(growth),
        mib(GROWTH_BOUND),
        hung.outcome(Outcome::Hung).requests,
    );
    assert!(
        ended - handed_over > QUEUE + BATCH,
        "the queue never filled: {during}"
    );
    assert!(
        growth < GROWTH_BOUND,
        "VmRSS grew by {:.1} MiB (from {:.1} to a peak of {:.1}), more than the {:.1} MiB \
         the queue may hold with {VALUE_LIMIT}-byte attribute values",
        mib(growth),
        mib(baseline),
        mib(peak),
        mib(GROWTH_BOUND),
    );

    // The backend is back: the spans queued during the outage arrive, cut too.
    backend.set_mode(Mode::Accept);
    let seen = backend.until(&server, "server spans queued during the outage", |s| {
        !server_spans_from(s, b'h').is_empty()
    });
    let queued = server_spans_from(&seen, b'h');
    eprintln!(
        "memory: {} spans from the outage reached the receiver",
        queued.len()
    );
    assert_cut_to_the_limit(&queued, b'h');
}
