//! End-to-end resilience scenarios (`docs/contract.md`, sections 3 to 5 and
//! 7): the real `taskman-server` binary against a real OTLP/gRPC receiver
//! that can accept, refuse connections, answer `UNAVAILABLE` or
//! `RESOURCE_EXHAUSTED`, or hang.
//!
//! What they prove: a telemetry outage never changes what the task API
//! answers or how fast; the circuit opens after `failure_threshold` failed
//! exports, probes with one export request at a time, and closes on the next
//! successful probe; and no ended span goes unaccounted.
//!
//! Every rig exports with `OTEL_BSP_SCHEDULE_DELAY=100` (one batch per 100 ms
//! under traffic). The pipeline turns the OTLP exporter's own retries off
//! (`RetryPolicy::disabled()` in `breaker-otel/src/pipeline.rs`): one batch is
//! exactly one export request, and so is one probe. Timing bounds are
//! deadlines derived from the settings, generous enough for a loaded 2-core
//! machine; measured times are printed (`--nocapture`), not benchmarked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ::tests::receiver::{ExportRequest, Mode, Outcome, Snapshot, SpanKind};
use support::prometheus::{self, Prometheus};
use support::{
    Call, FinalCounts, Rig, SCHEDULE_DELAY, Traffic, WAIT, assert_all_succeeded, median_latency,
    outage, recover, terminate,
};
use telemetry_http::test_util::sample;

/// How long the circuit may take to close once the backend is back: a probe
/// comes after at most `probe_every` batches or `probe_after`, whichever is
/// first; three times their sum plus a few seconds absorbs a loaded machine.
fn recovery_deadline(probe_every: u32, probe_after: Duration) -> Duration {
    (SCHEDULE_DELAY * probe_every + probe_after) * 3 + Duration::from_secs(5)
}

/// Healthy traffic until the receiver has spans from it.
fn warm_up(rig: &Rig) -> Traffic {
    let traffic = Traffic::start(rig.server.base_url());
    rig.receiver_until("spans from the healthy service", |s| {
        s.spans_named("POST /tasks") > 0
    });
    traffic
}

#[test]
fn healthy_requests_arrive_as_server_spans_with_storage_children_in_the_callers_trace() {
    let rig = Rig::start(&[]);
    let api = &rig.api;
    // Never traced: none of these may show up as spans below.
    assert_eq!(api.get("/health").status, 200);
    let health = rig.health();
    assert_eq!(health.http_status, 200, "{health}");
    assert!(health.closed(), "{health}");

    let tasks: Vec<String> = (0..4)
        .map(|i| api.create_task(&format!("task {i}")))
        .collect();
    assert_eq!(api.get("/tasks").status, 200);
    for task in &tasks {
        assert_eq!(api.get(task).status, 200);
    }
    assert_eq!(api.patch(&tasks[0], r#"{"status":"done"}"#).status, 200);
    assert_eq!(api.delete(&tasks[1]).status, 204);
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traced = api.get_with(
        &tasks[2],
        &[(
            "traceparent",
            &format!("00-{caller_trace}-{caller_span}-01"),
        )],
    );
    assert_eq!(traced.status, 200);
    let requests: u64 = 4 + 1 + 4 + 1 + 1 + 1;

    // Each task request ends a server span and one storage span.
    let health = rig.settled(2 * requests);
    let seen = rig.seen();
    assert_eq!(seen.spans, 2 * requests, "{seen}");
    assert_eq!(health.exported(), 2 * requests, "{health}");
    assert_eq!(health.dropped() + health.failed(), 0, "{health}");
    assert_eq!(seen.spans_from("taskman"), 2 * requests, "{seen}");
    let expected: BTreeMap<String, u64> = [
        ("POST /tasks", 4),
        ("GET /tasks", 1),
        ("GET /tasks/{id}", 5),
        ("PATCH /tasks/{id}", 1),
        ("DELETE /tasks/{id}", 1),
        ("INSERT tasks", 4),
        ("SELECT tasks", 6),
        ("UPDATE tasks", 1),
        ("DELETE tasks", 1),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_owned(), n))
    .collect();
    assert_eq!(seen.spans_by_name, expected);

    let servers: Vec<_> = seen
        .received
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(servers.len() as u64, requests, "{:#?}", seen.received);
    for server in &servers {
        let (method, route) = server.name.split_once(' ').unwrap();
        assert_eq!(server.attribute("http.route"), Some(route), "{server:?}");
        assert_eq!(
            server.attribute("http.request.method"),
            Some(method),
            "{server:?}"
        );
        assert!(
            server.attribute("http.response.status_code").is_some(),
            "{server:?}"
        );
        let children: Vec<_> = seen.children_of(server).collect();
        let [storage] = children.as_slice() else {
            panic!(
                "{} should have one storage child: {children:#?}",
                server.name
            );
        };
        let operation = match method {
            "POST" => "INSERT",
            "GET" => "SELECT",
            "PATCH" => "UPDATE",
            _ => "DELETE",
        };
        assert_eq!(storage.name, format!("{operation} tasks"), "{storage:?}");
        assert_eq!(storage.kind, SpanKind::Client, "{storage:?}");
        assert_eq!(storage.attribute("db.system.name"), Some("sqlite"));
    }

    // Without a traceparent each request is its own root; with one it continues the caller's trace.
    let continued: Vec<_> = servers
        .iter()
        .filter(|s| s.trace_id == caller_trace)
        .collect();
    let [continued] = continued.as_slice() else {
        panic!("one server span should continue {caller_trace}: {servers:#?}");
    };
    assert_eq!(continued.parent_span_id.as_deref(), Some(caller_span));
    assert_eq!(continued.name, "GET /tasks/{id}");
    let roots: BTreeSet<_> = servers
        .iter()
        .filter(|s| s.trace_id != caller_trace)
        .map(|s| {
            assert_eq!(s.parent_span_id, None, "{s:?}");
            &s.trace_id
        })
        .collect();
    assert_eq!(roots.len() as u64, requests - 1, "one trace per request");

    let health = rig.health();
    assert_eq!(health.http_status, 200, "{health}");
    assert!(health.closed(), "{health}");
    let metrics = api.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(sample(&metrics.body, "circuit_state"), Some(0.0));
}

#[test]
fn refused_connections_open_the_circuit_without_touching_requests_and_the_next_probe_closes_it() {
    const PROBE_EVERY: u32 = 10;
    const PROBE_AFTER: Duration = Duration::from_secs(2);
    let rig = Rig::start(&[
        ("TASKMAN__BREAKER__FAILURE_THRESHOLD", "3"),
        ("TASKMAN__BREAKER__PROBE_EVERY", "10"),
        ("TASKMAN__BREAKER__PROBE_AFTER", "2s"),
    ]);
    let traffic = warm_up(&rig);
    let healthy = rig.health();
    assert!(healthy.closed(), "{healthy}");
    assert_eq!(healthy.failed_batches(), 0, "{healthy}");

    // Outage: nothing listens on the collector's port.
    rig.set_mode(Mode::Stopped);
    let outage_from = Instant::now();
    let opened = rig.health_until("the circuit to open after exactly 3 failed exports", |h| {
        h.open() && h.closed_state_failures_since(&healthy) == 3
    });
    assert_eq!(opened.http_status, 503, "{opened}");
    assert_eq!(opened.json["status"], "fail", "{opened}");
    let metrics = rig.api.get("/metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert_eq!(sample(&metrics.body, "circuit_state"), Some(2.0));
    assert_eq!(
        sample(
            &metrics.body,
            r#"circuit_transitions_total{from="closed",to="open"}"#
        ),
        Some(1.0)
    );
    // While open, batches are dropped and requests go on.
    rig.health_until("spans dropped and a probe failed while open", |h| {
        h.dropped() > 0 && h.probes() > 0
    });
    traffic.wait_for_more(20);
    let before_recovery = rig.seen();
    assert_eq!(
        before_recovery
            .requests_between(outage_from, Instant::now())
            .count(),
        0,
        "nothing reaches a stopped receiver: {before_recovery}"
    );

    // Recovery.
    rig.set_mode(Mode::Accept);
    let back = Instant::now();
    let deadline = recovery_deadline(PROBE_EVERY, PROBE_AFTER);
    let closed = rig.health_within(deadline, "the next probe to close the circuit", |h| {
        h.closed()
    });
    let took = back.elapsed();
    assert_eq!(closed.http_status, 200, "{closed}");
    assert_eq!(closed.json["status"], "pass", "{closed}");
    let seen = rig.receiver_until("spans to arrive again", |s| s.spans > before_recovery.spans);
    let probe = seen
        .requests
        .iter()
        .find(|r| r.received_at >= back)
        .expect("the probe reached the receiver");
    assert_eq!(probe.outcome, Outcome::Accepted);
    println!(
        "recovery: circuit closed {took:?} after the receiver came back (the probe arrived after {:?}); \
         configured: a probe every {PROBE_EVERY} batches x {SCHEDULE_DELAY:?} = {:?} or after probe_after = \
         {PROBE_AFTER:?}, whichever is first (deadline {deadline:?})",
        probe.received_at - back,
        SCHEDULE_DELAY * PROBE_EVERY,
    );

    let calls = traffic.stop();
    assert_all_succeeded(&calls, "refused outage and recovery");
    let during: Vec<&Call> = calls
        .iter()
        .filter(|c| c.at >= outage_from && c.at < back)
        .collect();
    assert!(
        during.len() >= 20,
        "requests were made during the outage: {}",
        during.len()
    );
}

#[test]
fn unavailable_and_resource_exhausted_answers_count_as_failures_and_open_the_circuit() {
    let rig = Rig::start(&[("TASKMAN__BREAKER__PROBE_AFTER", "1s")]);
    let traffic = warm_up(&rig);
    for (mode, outcome) in [
        (Mode::Unavailable, Outcome::Unavailable),
        (Mode::ResourceExhausted, Outcome::ResourceExhausted),
    ] {
        let before = rig.health();
        assert!(before.closed(), "{before}");
        let seen_before = rig.seen();
        rig.set_mode(mode);
        let opened = rig.health_until(
            &format!("the circuit to open after 3 exports answered {outcome}"),
            |h| h.open() && h.closed_state_failures_since(&before) == 3,
        );
        assert_eq!(opened.http_status, 503, "{opened}");
        let at_open = rig.receiver_until(&format!("3 requests answered {outcome}"), |s| {
            s.outcome(outcome).requests >= seen_before.outcome(outcome).requests + 3
        });
        // Probes fail too, and none of it is counted as received.
        let probed = rig.health_until(&format!("a probe answered {outcome}"), |h| {
            h.probes() > opened.probes() && h.failed_batches() > opened.failed_batches()
        });
        let seen = rig.seen();
        assert_eq!(seen.spans, at_open.spans, "{seen}");
        assert_eq!(
            probed.count("/failed_batches/timeout"),
            before.count("/failed_batches/timeout"),
            "an error answer is an error, not a timeout: {probed}"
        );
        recover(&rig);
    }
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "error answers");
}

#[test]
fn a_hanging_backend_is_cut_off_at_export_timeout_and_requests_stay_as_fast() {
    const EXPORT_TIMEOUT: Duration = Duration::from_millis(500);
    const HOLD_SLACK: Duration = Duration::from_secs(5);
    let rig = Rig::start(&[("TASKMAN__BREAKER__EXPORT_TIMEOUT", "500ms")]);
    let traffic = warm_up(&rig);
    traffic.wait_for_more(40);

    let hang_from = Instant::now();
    rig.set_mode(Mode::Hang);
    let opened = rig.health_until("the circuit to open on timeouts", |h| h.open());
    assert_eq!(opened.http_status, 503, "{opened}");
    // The first attempt after opening is a probe: it hangs and is cut off too.
    rig.health_until("a probe to time out", |h| {
        h.count("/failed_batches/timeout") >= 4
    });
    traffic.wait_for_more(40);
    let calls = traffic.stop();

    let health = rig.settled(2 * calls.len() as u64);
    let seen = rig.receiver_until("every hung export to end", |s| {
        s.in_flight == 0 && s.requests.iter().all(|r| r.finished_at.is_some())
    });
    let hung: Vec<&ExportRequest> = seen
        .requests
        .iter()
        .filter(|r| r.outcome == Outcome::Hung)
        .collect();
    assert_eq!(
        hung.len() as u64,
        health.count("/failed_batches/timeout"),
        "each timed-out export is one hung request (the OTLP exporter's retries are off): {health}\n{seen}"
    );
    assert_eq!(
        health.failed_batches(),
        health.count("/failed_batches/timeout"),
        "every failure is a timeout: {health}"
    );
    let longest = hung.iter().filter_map(|r| r.held_for()).max().unwrap();
    for request in &hung {
        assert!(
            request.cancelled(),
            "the exporter gave up on it: {request:?}"
        );
    }
    // The receiver sees the request a moment after the exporter's clock starts,
    // and the cancellation a moment after it stops; on a loaded machine either
    // moment can stretch. Without export_timeout the OTLP exporter's own 10 s
    // timeout would cut the request off: the bound stays well below that.
    assert!(
        longest < EXPORT_TIMEOUT + HOLD_SLACK,
        "a hung export was held {longest:?} with export_timeout {EXPORT_TIMEOUT:?}"
    );

    assert_all_succeeded(&calls, "hang");
    let (healthy, hanging): (Vec<&Call>, Vec<&Call>) = calls.iter().partition(|c| c.at < hang_from);
    let (healthy_median, hanging_median) = (median_latency(&healthy), median_latency(&hanging));
    println!(
        "hang: {} hung exports held at most {longest:?} (export_timeout {EXPORT_TIMEOUT:?}); \
         median request latency {healthy_median:?} healthy ({} requests), {hanging_median:?} \
         while the backend hangs ({} requests)",
        hung.len(),
        healthy.len(),
        hanging.len()
    );
    // A request that waited on the hanging export would take export_timeout
    // at least. Comparing with the healthy median instead would measure the
    // machine's load, which changes between the two phases on a shared host.
    assert!(
        hanging_median < EXPORT_TIMEOUT / 2,
        "requests slowed down while the backend hangs: median {hanging_median:?} against \
         {healthy_median:?} before, export_timeout {EXPORT_TIMEOUT:?}"
    );
}

#[test]
fn during_a_long_outage_only_probes_reach_the_backend_one_request_at_a_time() {
    const PROBE_EVERY: u32 = 5;
    const EXPORT_TIMEOUT: Duration = Duration::from_millis(500);
    let rig = Rig::start(&[
        ("TASKMAN__BREAKER__PROBE_EVERY", "5"),
        // Far away, so that only probe_every decides when to probe.
        ("TASKMAN__BREAKER__PROBE_AFTER", "10m"),
        // A floor far below one batch (it doubles to a few tens of ms over
        // the six probes), so that it never decides either.
        ("TASKMAN__BREAKER__MIN_PROBE_INTERVAL", "1ms"),
        // Batches alone probe here: empty probes would come at the floor.
        ("TASKMAN__BREAKER__IDLE_PROBES", "false"),
        ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "500ms"),
    ]);
    let traffic = warm_up(&rig);
    let healthy = rig.health();
    assert_eq!(healthy.failed_batches(), 0, "{healthy}");

    rig.set_mode(Mode::Unavailable);
    rig.health_until("three probes answered UNAVAILABLE", |h| h.probes() >= 3);
    let hang_from = Instant::now();
    rig.set_mode(Mode::Hang);
    let hanging = rig.health_until("three more probes, into a hang", |h| {
        h.probes() >= 6 && h.count("/failed_batches/timeout") >= 3
    });
    assert!(
        hanging.open() || hanging.state() == "half_open",
        "{hanging}"
    );
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "long outage");

    let health = rig.settled(2 * calls.len() as u64);
    let seen = rig.receiver_until("no export in flight", |s| {
        s.in_flight == 0 && s.requests.iter().all(|r| r.finished_at.is_some())
    });
    // Healthy exports first, then only failures.
    let first_failure = seen
        .requests
        .iter()
        .position(|r| r.outcome != Outcome::Accepted)
        .unwrap();
    let failing: Vec<&ExportRequest> = seen.requests[first_failure..].iter().collect();
    assert!(
        failing.iter().all(|r| r.outcome != Outcome::Accepted),
        "{seen}"
    );
    let probes = health.probes() - healthy.probes();
    assert_eq!(
        failing.len() as u64,
        3 + probes,
        "the receiver should see the 3 failures that opened the circuit and then exactly one request \
         per probe: the pipeline disables the OTLP exporter's own retries, which would otherwise turn \
         each UNAVAILABLE probe into up to 4 requests\n{health}\n{seen}"
    );
    let probe_requests = &failing[3..];
    let most = probe_requests.iter().map(|r| r.concurrent).max().unwrap();
    assert_eq!(most, 1, "probes in flight at once: {probe_requests:#?}");
    assert!(
        seen.max_concurrent_between(hang_from, Instant::now()) <= 1,
        "{seen}"
    );

    // The SDK starts export attempts at least one schedule delay apart, so
    // probes start at least probe_every delays apart. The receiver stamps
    // each one a variable moment later, longer on a loaded machine: two
    // schedule delays of slack per gap (still far more than the one delay
    // between probes if every batch probed), and one for their sum, which
    // telescopes. probe_after is never reached.
    let gaps: Vec<Duration> = probe_requests
        .windows(2)
        .map(|pair| pair[1].received_at - pair[0].received_at)
        .collect();
    let least = SCHEDULE_DELAY * (PROBE_EVERY - 2);
    let most = (SCHEDULE_DELAY * PROBE_EVERY + EXPORT_TIMEOUT) * 4;
    let total: Duration = gaps.iter().sum();
    let least_total =
        SCHEDULE_DELAY * PROBE_EVERY * u32::try_from(gaps.len()).unwrap() - SCHEDULE_DELAY;
    assert!(
        total >= least_total,
        "{} probes came sooner than one per {PROBE_EVERY} batches: {gaps:?}",
        probe_requests.len()
    );
    println!(
        "probes: {probes} in the outage, each one request (answered {}), gaps {gaps:?}; \
         configured: a probe every {PROBE_EVERY} batches x {SCHEDULE_DELAY:?}",
        probe_requests
            .iter()
            .map(|r| r.outcome.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        gaps.iter().all(|gap| *gap >= least && *gap <= most),
        "probes should come about every {PROBE_EVERY} batches ({least:?} to {most:?} apart): {gaps:?}"
    );
    let hung = probe_requests
        .iter()
        .filter(|r| r.outcome == Outcome::Hung)
        .count();
    assert!(hung >= 3, "probes hung: {hung}");
}

/// The identity checked, exactly, after a clean shutdown: `spans_ended = received +
/// dropped + failed + queue_full`, where `received` (the receiver's count of spans in
/// requests it answered OK) must equal the server's `exported`, and `queue_full` are the
/// spans the full batch queue discarded before the exporter saw them, counted where they
/// were lost. Returns `queue_full`.
fn check_identity(counts: FinalCounts, received: u64, calls: &[Call]) -> u64 {
    assert_eq!(
        counts.ended,
        2 * calls.len() as u64,
        "every task request ends two spans, each counted once: {counts:?}"
    );
    assert_eq!(
        received, counts.exported,
        "spans the receiver accepted must be exactly those the breaker counts exported: {counts:?}"
    );
    assert_eq!(
        counts.ended,
        counts.exported + counts.rejected + counts.dropped + counts.failed + counts.queue_full,
        "every ended span is exported, rejected, dropped, failed or counted lost in the queue: {counts:?}"
    );
    counts.queue_full
}

#[test]
fn after_outages_and_a_clean_shutdown_every_ended_span_is_accounted_for() {
    // A queue larger than every span this test ends cannot overflow: lost must be 0.
    const QUEUE: u64 = 65_536;
    let mut rig = Rig::start(&[
        // probe_after counts from the start of the last probe: longer than
        // export_timeout, or a hung probe would make every next batch a probe.
        ("TASKMAN__BREAKER__PROBE_AFTER", "2s"),
        ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "1s"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
    ]);
    let traffic = warm_up(&rig);
    for mode in [
        Mode::Stopped,
        Mode::Unavailable,
        Mode::ResourceExhausted,
        Mode::Hang,
    ] {
        let before = rig.health();
        outage(&rig, mode);
        rig.health_until(&format!("spans dropped with the receiver {mode}"), |h| {
            h.dropped() > before.dropped()
        });
        recover(&rig);
    }
    let last = rig.seen().spans;
    rig.receiver_until("spans after the last recovery", |s| s.spans > last);
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "outages");

    let (status, took) = terminate(&mut rig, WAIT);
    assert!(status.success(), "{status}\n{}", rig.server_log());
    let log = rig.server.stderr();
    let counts = FinalCounts::from_log(&log)
        .unwrap_or_else(|| panic!("no `tracing shut down` line with counts:\n{log}"));
    let seen = rig.seen();
    let lost = check_identity(counts, seen.spans, &calls);
    assert!(counts.ended < QUEUE, "{counts:?}");
    assert_eq!(
        lost, 0,
        "with a queue of {QUEUE} no span can be lost before the exporter: {counts:?}, received {}",
        seen.spans
    );
    assert!(counts.dropped > 0 && counts.failed > 0, "{counts:?}");
    // A request answered with an error, or hung and abandoned, is a failure,
    // never a reception. The one way a span could be both received and
    // failed is an export the receiver accepts after the exporter's deadline:
    // Hang mode never accepts (a released request is answered UNAVAILABLE),
    // and an accepted export takes milliseconds on loopback against a 1 s
    // export_timeout, so `received == exported` must hold exactly.
    let refused: u64 = [
        Outcome::Unavailable,
        Outcome::ResourceExhausted,
        Outcome::Hung,
    ]
    .into_iter()
    .map(|o| seen.outcome(o).spans)
    .sum();
    assert!(refused <= counts.failed, "{counts:?} {seen}");
    println!(
        "accounting: spans_ended {} = received {} + dropped {} + failed {} + queue_full {lost} \
         (received == exported == {}); shut down in {took:?}",
        counts.ended, seen.spans, counts.dropped, counts.failed, counts.exported
    );
}

#[test]
fn spans_lost_in_a_full_queue_are_counted_where_they_are_lost() {
    let mut rig = Rig::start(&[
        ("TASKMAN__BREAKER__PROBE_AFTER", "2s"),
        ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "1s"),
        // While an export hangs for a second, traffic ends far more than 16 spans.
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
    ]);
    let traffic = warm_up(&rig);
    outage(&rig, Mode::Hang);
    recover(&rig);
    let last = rig.seen().spans;
    rig.receiver_until("spans after recovery", |s| s.spans > last);
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "full queue");

    let (status, _) = terminate(&mut rig, WAIT);
    assert!(status.success(), "{status}\n{}", rig.server_log());
    let log = rig.server.stderr();
    let counts = FinalCounts::from_log(&log)
        .unwrap_or_else(|| panic!("no `tracing shut down` line with counts:\n{log}"));
    let received = rig.seen().spans;
    let lost = check_identity(counts, received, &calls);
    assert!(
        lost > 0,
        "a 16-span queue behind hung exports should have overflowed: {counts:?}"
    );
    println!(
        "full queue: spans_ended {} = received {received} + dropped {} + failed {} + queue_full {lost}",
        counts.ended, counts.dropped, counts.failed
    );
}

#[test]
fn shutdown_during_a_hang_exits_0_within_the_shutdown_timeout() {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
    // Signal delivery and process exit on a loaded machine; far below the 30 s
    // the hanging export would take if shutdown waited for it.
    const SLACK: Duration = Duration::from_secs(10);
    let mut rig = Rig::start(&[
        ("TASKMAN__SERVER__SHUTDOWN_TIMEOUT", "2s"),
        ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "30s"),
    ]);
    let traffic = warm_up(&rig);
    rig.set_mode(Mode::Hang);
    // Not just any request in flight: an accepted one may still be finishing.
    let hanging = |s: &Snapshot| {
        s.requests
            .iter()
            .any(|r| r.outcome == Outcome::Hung && r.finished_at.is_none())
    };
    rig.receiver_until("an export to hang", hanging);
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "before shutdown");
    assert!(
        hanging(&rig.seen()),
        "the export still hangs: {}",
        rig.seen()
    );

    let (status, took) = terminate(&mut rig, SHUTDOWN_TIMEOUT + WAIT);
    println!(
        "shutdown during a hang: exited with {status} after {took:?} (server.shutdown_timeout {SHUTDOWN_TIMEOUT:?})"
    );
    assert!(status.success(), "{status}\n{}", rig.server_log());
    assert!(
        took <= SHUTDOWN_TIMEOUT + SLACK,
        "took {took:?} to exit with shutdown_timeout {SHUTDOWN_TIMEOUT:?}\n{}",
        rig.server_log()
    );
    assert!(
        !rig.server.stderr().contains("panicked"),
        "{}",
        rig.server_log()
    );
}

#[test]
fn a_real_prometheus_scrapes_the_circuit_state() {
    let Some(program) = prometheus::program() else {
        assert!(
            std::env::var(prometheus::REQUIRE_ENV).as_deref() != Ok("1"),
            "prometheus not found and {} is 1: {}",
            prometheus::REQUIRE_ENV,
            prometheus::INSTALL_HINT
        );
        println!("NOT CHECKED: {}", prometheus::INSTALL_HINT);
        return;
    };
    // One scrape a second is 60 a minute: inside a limit of 120.
    let rig = Rig::start(&[("TASKMAN__METRICS__REQUESTS_PER_MINUTE", "120")]);
    let prometheus = Prometheus::start(&program, rig.server.addr(), Duration::from_secs(1));
    let instance = rig.server.addr().to_string();
    let value = |series: &[serde_json::Value]| -> Option<String> {
        let [one] = series else { return None };
        assert_eq!(one["metric"]["job"], "taskman", "{one}");
        assert_eq!(one["metric"]["instance"], instance.as_str(), "{one}");
        one["value"][1].as_str().map(str::to_owned)
    };
    prometheus.wait_for(WAIT, "circuit_state", "circuit_state 0", |s| {
        value(s).as_deref() == Some("0")
    });

    let traffic = warm_up(&rig);
    rig.set_mode(Mode::Stopped);
    rig.health_until("the circuit to open", |h| h.open());
    prometheus.wait_for(WAIT, "circuit_state", "circuit_state 2", |s| {
        value(s).as_deref() == Some("2")
    });
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "while Prometheus scrapes");
    // Every scrape succeeded: none was rate limited.
    let up = prometheus.query("min_over_time(up[5m])");
    assert_eq!(value(&up).as_deref(), Some("1"), "{up:?}");
}
