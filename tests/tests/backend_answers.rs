//! The breaker listens to what the backend says (`docs/contract.md`, section
//! 4; `docs/operations.md`, "Health endpoints"): the real `taskman-server`
//! against the real receiver, over OTLP/gRPC and OTLP/HTTP alike (every
//! scenario runs once per protocol, in the `grpc` and `http` modules).
//!
//! - Refused credentials (`UNAUTHENTICATED`, `PERMISSION_DENIED`, 401/403)
//!   open the circuit, health and metrics name the cause, and probing goes
//!   on, so an accepting backend closes the circuit by itself, without
//!   traffic.
//! - A throttle with a delay (`RetryInfo`, `Retry-After` in seconds or as an
//!   HTTP-date) stops every export, probes included, until it ends: the
//!   receiver's own request timestamps show nothing arrived during it, while
//!   `/health/telemetry` warns with the circuit closed.
//! - Spans a partial success rejects are counted as `rejected`, exactly as
//!   many as the receiver rejected, and every ended span is accounted for.
//! - `INVALID_ARGUMENT` on every batch never opens the circuit: every batch
//!   still reaches the backend and fails with cause `invalid`.
//!
//! Everything is counted, at the receiver and in the server's answers.
//! Waits poll against generous deadlines; the one time bound asserted ("no
//! request in the 4 s after a 5 s throttle") is read from the receiver's
//! timestamps, never from a sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// This binary uses part of the support that resilience.rs shares.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::tests::receiver::{ExportRequest, Mode, Outcome, Protocol, Snapshot};
use support::{Call, FinalCounts, Rig, Traffic, WAIT, assert_all_succeeded, terminate};
use telemetry_http::test_util::sample;

/// The delay the backend asks for in the throttle scenarios.
const THROTTLE: Duration = Duration::from_secs(5);

/// How long after a throttled answer nothing may reach the backend: the
/// delay, less a second for the client reading the answer a moment after
/// the receiver stamped it and for `Retry-After`'s whole seconds.
const QUIET: Duration = Duration::from_secs(4);

/// How far an HTTP-date throttle lies beyond the next whole second when the
/// receiver is switched: the delay plus a second, so that it is still at
/// least [`QUIET`] away when the throttled answer comes, even a second late.
const DATE_AHEAD: Duration = Duration::from_secs(6);

/// Deadline for a circuit that closes by idle probes alone: the probe floor
/// doubles from `MIN_PROBE_INTERVAL` with every failed probe, up to
/// `probe_after` (30 s by default).
const RECOVERY: Duration = Duration::from_secs(60);

/// Settings every rig here gets: enough `/metrics` budget for the reads of a
/// scenario, and a queue that no scenario can fill, so no span is lost in it.
const BASE_ENV: [(&str, &str); 2] = [
    ("TASKMAN__METRICS__REQUESTS_PER_MINUTE", "600"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
];

/// Runs each scenario once per protocol; a scenario returns what it
/// measured, which the test prints (`--nocapture`).
macro_rules! for_each_protocol {
    ($($scenario:ident),* $(,)?) => {
        /// The scenarios over OTLP/gRPC.
        mod grpc {
            $(#[test]
            fn $scenario() {
                println!("{}", super::$scenario(super::Protocol::Grpc));
            })*
        }
        /// The scenarios over OTLP/HTTP (protobuf).
        mod http {
            $(#[test]
            fn $scenario() {
                println!("{}", super::$scenario(super::Protocol::Http));
            })*
        }
    };
}

for_each_protocol!(
    refused_credentials_open_the_circuit_and_an_accepting_backend_closes_it_without_traffic,
    a_throttle_stops_every_export_until_it_ends_while_health_warns,
    partially_rejected_spans_are_counted_exactly_and_every_span_is_accounted_for,
    invalid_argument_on_every_batch_never_opens_the_circuit,
);

fn start(protocol: Protocol, env: &[(&str, &str)]) -> Rig {
    let mut all = BASE_ENV.to_vec();
    all.extend_from_slice(env);
    Rig::start_with(protocol, &all)
}

/// `GET /metrics`, which must answer 200.
fn metrics(rig: &Rig) -> String {
    let reply = rig.api.get("/metrics");
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// A counter or gauge in `/metrics` text; panics when the series is missing.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// The index of the first request from `from` on that got `outcome` and was answered.
fn first_answered(seen: &Snapshot, from: usize, outcome: Outcome) -> Option<usize> {
    seen.requests
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, r)| r.outcome == outcome && r.finished_at.is_some())
        .map(|(i, _)| i)
}

/// Traffic until the receiver has accepted spans beyond what it had.
fn traffic_accepted(rig: &Rig) -> Traffic {
    let had = rig.seen().spans;
    let traffic = Traffic::start(rig.server.base_url());
    rig.receiver_until("spans from the traffic", |s| s.spans > had);
    traffic
}

fn refused_credentials_open_the_circuit_and_an_accepting_backend_closes_it_without_traffic(
    protocol: Protocol,
) -> String {
    let rig = start(
        protocol,
        // A short probe floor, so that the idle probes that close the
        // circuit come within seconds.
        &[("TASKMAN__BREAKER__MIN_PROBE_INTERVAL", "250ms")],
    );
    let mut calls_made = 0;
    let mut report = Vec::new();
    for (mode, cause) in [
        (Mode::Unauthenticated, "unauthenticated"),
        (Mode::PermissionDenied, "permission_denied"),
    ] {
        let traffic = traffic_accepted(&rig);
        let before = rig.health();
        assert!(before.closed(), "{before}");
        let exports_failed = format!(r#"span_exports_failed_total{{cause="{cause}"}}"#);
        let failed_before = value(&metrics(&rig), &exports_failed);

        rig.set_mode(mode);
        let opened = rig.health_until(
            &format!("the circuit to open after exactly 3 exports answered {mode}"),
            |h| h.open() && h.closed_state_failures_since(&before) == 3,
        );
        assert_eq!(opened.http_status, 503, "{opened}");
        assert_eq!(opened.json["status"], "fail", "{opened}");
        assert_eq!(opened.json["last_failure"]["cause"], cause, "{opened}");
        let output = opened.json["output"].as_str().unwrap_or_default();
        assert!(
            output.contains("credentials") && output.contains(cause),
            "the output says our credentials are refused: {opened}"
        );
        let text = metrics(&rig);
        assert_eq!(value(&text, "circuit_state"), 2.0);
        assert!(
            value(&text, &exports_failed) >= failed_before + 3.0,
            "{exports_failed} counts the exports that opened the circuit:\n{text}"
        );

        // Probing goes on, since tokens rotate: a probe is refused the same way.
        let probed = rig.health_until(&format!("a probe answered {mode}"), |h| {
            h.probes() > opened.probes()
                && h.count(&format!("/failed_batches/{cause}"))
                    > opened.count(&format!("/failed_batches/{cause}"))
        });
        assert!(!probed.closed(), "{probed}");

        // No traffic from here on, and nothing left in the pipeline: only an
        // idle probe can close the circuit.
        let calls = traffic.stop();
        assert_all_succeeded(&calls, &format!("backend answering {mode}"));
        calls_made += calls.len() as u64;
        rig.settled(2 * calls_made);
        rig.set_mode(Mode::Accept);
        let back = Instant::now();
        let closed = rig.health_within(RECOVERY, "an idle probe to close the circuit", |h| {
            h.closed()
        });
        let took = back.elapsed();
        assert_eq!(closed.http_status, 200, "{closed}");
        assert_eq!(closed.json["status"], "pass", "{closed}");
        assert_eq!(closed.ended(), 2 * calls_made, "no span ended: {closed}");
        let seen = rig.seen();
        let after: Vec<&ExportRequest> = seen
            .requests
            .iter()
            .filter(|r| r.received_at >= back)
            .collect();
        let probe = after.first().expect("the probe reached the receiver");
        assert_eq!(probe.outcome, Outcome::Accepted, "{seen}");
        assert_eq!(
            probe.spans, 0,
            "the closing probe was an empty export: {seen}"
        );
        let text = metrics(&rig);
        assert_eq!(value(&text, "circuit_state"), 0.0);
        assert_eq!(
            value(&text, &exports_failed),
            closed.count(&format!("/failed_batches/{cause}")) as f64,
            "every refused export is counted once, in health and metrics alike"
        );
        report.push(format!(
            "{protocol} {mode}: opened after 3 refused exports, {} probes refused, closed {took:?} \
             after the backend accepted again (an empty probe, {} requests since)",
            probed.probes() - before.probes(),
            after.len()
        ));
    }
    report.join("\n")
}

/// How a throttled answer says how long to wait.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// gRPC `RetryInfo` or HTTP `Retry-After: 5`.
    Delay,
    /// HTTP `Retry-After: <HTTP-date>`.
    Date,
}

/// The wall-clock time of `at`, given a moment read on both clocks.
fn wall_time(at: Instant, (instant, wall): (Instant, SystemTime)) -> SystemTime {
    if at >= instant {
        wall + (at - instant)
    } else {
        wall - (instant - at)
    }
}

/// The next whole second at or after `time`, so that an HTTP-date (whole
/// seconds) names it exactly.
fn whole_second_after(time: SystemTime) -> SystemTime {
    let since = time.duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(since.as_secs() + u64::from(since.subsec_nanos() > 0))
}

fn a_throttle_stops_every_export_until_it_ends_while_health_warns(protocol: Protocol) -> String {
    let waits: &[Wait] = match protocol {
        Protocol::Grpc => &[Wait::Delay],
        Protocol::Http => &[Wait::Delay, Wait::Date],
    };
    let rig = start(protocol, &[]);
    let traffic = traffic_accepted(&rig);
    let mut report = Vec::new();
    for &wait in waits {
        let before = rig.health();
        assert_eq!(before.json["status"], "pass", "{before}");
        let from = rig.seen().requests.len();
        let clocks = (Instant::now(), SystemTime::now());
        let (mode, until) = match wait {
            Wait::Delay => (
                Mode::Throttled {
                    retry_after: THROTTLE,
                },
                None,
            ),
            Wait::Date => {
                let until = whole_second_after(clocks.1) + DATE_AHEAD;
                (Mode::ThrottledUntil(until), Some(until))
            }
        };
        rig.set_mode(mode);
        let seen = rig.receiver_until(&format!("an export answered {mode}"), |s| {
            first_answered(s, from, Outcome::Throttled).is_some()
        });
        // Whatever comes after the throttle is accepted: exports resume.
        rig.set_mode(Mode::Accept);
        let index = first_answered(&seen, from, Outcome::Throttled).unwrap();
        let answered = seen.requests[index].finished_at.unwrap();

        // The circuit stays closed and health warns, with HTTP 200.
        let warned = rig.health_until("throttled_until in /health/telemetry", |h| {
            h.json["throttled_until"].is_string()
        });
        assert_eq!(warned.http_status, 200, "{warned}");
        assert!(
            warned.closed(),
            "a throttle does not open the circuit: {warned}"
        );
        assert_eq!(warned.json["status"], "warn", "{warned}");
        assert_eq!(
            warned.json["last_failure"]["cause"], "throttled",
            "{warned}"
        );
        let output = warned.json["output"].as_str().unwrap_or_default();
        assert!(output.contains("send nothing until"), "{warned}");
        let shown = warned.json["throttled_until"].as_str().unwrap();
        let shown_at = humantime::parse_rfc3339(shown).unwrap();
        match until {
            // The date the backend named is the date we show.
            Some(until) => assert_eq!(shown_at, until, "{warned}"),
            None => {
                // The client counts the delay from when it read the answer,
                // shown in whole seconds.
                let earliest = wall_time(answered, clocks) + THROTTLE - Duration::from_secs(1);
                assert!(shown_at >= earliest, "{shown} for {mode}: {warned}");
            }
        }
        let text = metrics(&rig);
        let gauge = value(&text, "circuit_throttled_until_timestamp_seconds");
        let shown_secs = shown_at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(
            (gauge - shown_secs).abs() < 1.0,
            "the gauge ({gauge}) and health ({shown}) name the same time"
        );
        assert_eq!(
            sample(
                &text,
                r#"circuit_transitions_total{from="closed",to="open"}"#
            ),
            Some(0.0)
        );

        // Exports resume after the throttle, and not one request came before.
        let resumed = rig.receiver_until("exports to resume after the throttle", |s| {
            s.requests.len() > index + 1
        });
        let next = &resumed.requests[index + 1];
        let quiet_for = next.received_at.saturating_duration_since(answered);
        assert_eq!(
            resumed.requests_between(answered, answered + QUIET).count(),
            0,
            "nothing may reach the backend in the {QUIET:?} after it asked for {THROTTLE:?}; the \
             next request came {quiet_for:?} after the throttled answer: {resumed}"
        );
        assert!(quiet_for >= QUIET, "{quiet_for:?}");
        assert_eq!(next.outcome, Outcome::Accepted, "{next:?}");
        assert!(next.spans > 0, "a batch, not a probe: {next:?}");
        if let Some(until) = until {
            // Nor before the date; the pairing of the two clocks is off by microseconds.
            let until_at = clocks.0 + until.duration_since(clocks.1).unwrap();
            assert!(
                next.received_at + Duration::from_millis(100) >= until_at,
                "the next export came {:?} before the date",
                until_at.saturating_duration_since(next.received_at)
            );
        }
        let passed = rig.health_until("the warning to end with the throttle", |h| {
            h.json["status"] == "pass"
        });
        assert!(passed.json["throttled_until"].is_null(), "{passed}");
        assert!(passed.closed(), "{passed}");
        assert_eq!(passed.probes(), 0, "a throttle is no outage: {passed}");
        assert!(
            passed.dropped() > before.dropped(),
            "the batches of the throttle were dropped, not sent: {passed}"
        );
        assert_eq!(
            passed.count("/failed_batches/throttled"),
            rig.seen().outcome(Outcome::Throttled).requests,
            "one failed export per throttled answer: {passed}"
        );
        report.push(format!(
            "{protocol} {mode}: the next export request came {quiet_for:?} after the throttled \
             answer (asked: {}), {} spans dropped meanwhile",
            match until {
                Some(until) => format!(
                    "until {}, {:?} after the answer",
                    rfc3339(until),
                    (clocks.0 + until.duration_since(clocks.1).unwrap())
                        .saturating_duration_since(answered)
                ),
                None => format!("{THROTTLE:?}"),
            },
            passed.dropped() - before.dropped()
        ));
    }
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "throttled backend");
    report.join("\n")
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The accounting identity after a clean stop: `ended = exported + rejected
/// + dropped + failed + lost in the SDK queue`; returns what was lost.
fn lost_in_queue(counts: FinalCounts, calls: &[Call]) -> u64 {
    assert_eq!(
        counts.ended,
        2 * calls.len() as u64,
        "every task request ends two spans: {counts:?}"
    );
    let handed = counts.exported + counts.rejected + counts.dropped + counts.failed;
    assert!(handed <= counts.ended, "{counts:?}");
    counts.ended - handed
}

fn partially_rejected_spans_are_counted_exactly_and_every_span_is_accounted_for(
    protocol: Protocol,
) -> String {
    const REJECTED: u64 = 3;
    const REQUESTS: u64 = 20;
    let mut rig = start(protocol, &[]);
    rig.set_mode(Mode::PartialSuccess { rejected: REJECTED });
    let traffic = Traffic::start(rig.server.base_url());
    rig.receiver_until(
        &format!("{REQUESTS} partially accepted export requests"),
        |s| s.outcome(Outcome::PartialSuccess).requests >= REQUESTS,
    );
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "partial success");

    let health = rig.settled(2 * calls.len() as u64);
    let seen = rig.seen();
    assert!(
        seen.requests
            .iter()
            .all(|r| r.outcome == Outcome::PartialSuccess
                && r.rejected_spans as u64 == REJECTED.min(r.spans as u64)),
        "each request had {REJECTED} of its spans rejected: {seen}"
    );
    assert!(seen.rejected_spans >= REQUESTS, "{seen}");
    assert_eq!(health.rejected(), seen.rejected_spans, "{health}\n{seen}");
    assert_eq!(health.exported(), seen.spans, "{health}\n{seen}");
    assert_eq!(health.dropped() + health.failed(), 0, "{health}");
    assert_eq!(
        health.http_status, 200,
        "a partial success is a success: {health}"
    );
    assert_eq!(health.json["status"], "pass", "{health}");
    assert!(health.json["last_failure"].is_null(), "{health}");
    let text = metrics(&rig);
    assert_eq!(
        value(&text, r#"spans_processed_total{outcome="rejected"}"#),
        seen.rejected_spans as f64
    );
    assert_eq!(
        value(&text, r#"spans_processed_total{outcome="exported"}"#),
        seen.spans as f64
    );

    let (status, _) = terminate(&mut rig, WAIT);
    assert!(status.success(), "{status}\n{}", rig.server_log());
    let log = rig.server.stderr();
    let counts = FinalCounts::from_log(&log)
        .unwrap_or_else(|| panic!("no `tracing shut down` line with counts:\n{log}"));
    let seen = rig.seen();
    assert_eq!(counts.rejected, seen.rejected_spans, "{counts:?}\n{seen}");
    assert_eq!(counts.exported, seen.spans, "{counts:?}\n{seen}");
    let lost = lost_in_queue(counts, &calls);
    assert_eq!(lost, 0, "a queue this large loses nothing: {counts:?}");
    format!(
        "{protocol} partial success: spans_ended {} = exported {} + rejected {} + dropped {} + \
         failed {} + lost {lost}; the receiver accepted {} and rejected {} in {} requests",
        counts.ended,
        counts.exported,
        counts.rejected,
        counts.dropped,
        counts.failed,
        seen.spans,
        seen.rejected_spans,
        seen.requests.len()
    )
}

fn invalid_argument_on_every_batch_never_opens_the_circuit(protocol: Protocol) -> String {
    // Many times failure_threshold (3).
    const REQUESTS: u64 = 30;
    let rig = start(protocol, &[]);
    rig.set_mode(Mode::InvalidArgument);
    let traffic = Traffic::start(rig.server.base_url());
    rig.receiver_until(
        &format!("{REQUESTS} export requests refused as invalid"),
        |s| s.outcome(Outcome::InvalidArgument).requests >= REQUESTS,
    );
    let during = rig.health();
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "invalid argument");

    let health = rig.settled(2 * calls.len() as u64);
    let seen = rig.seen();
    let invalid = seen.outcome(Outcome::InvalidArgument);
    assert_eq!(
        seen.requests.len() as u64,
        invalid.requests,
        "every request was refused, nothing else came: {seen}"
    );
    for h in [&during, &health] {
        assert!(h.closed(), "{h}");
        assert_eq!(h.http_status, 200, "{h}");
        assert_eq!(h.json["last_failure"]["cause"], "invalid", "{h}");
    }
    assert_eq!(health.probes(), 0, "{health}");
    // Every span went to the backend and failed there: none was dropped.
    assert_eq!(health.dropped(), 0, "{health}");
    assert_eq!(health.exported() + health.rejected(), 0, "{health}");
    assert_eq!(health.failed(), health.ended(), "{health}");
    assert_eq!(health.failed(), invalid.spans, "{health}\n{seen}");
    assert_eq!(
        health.count("/failed_spans/invalid"),
        invalid.spans,
        "{health}"
    );
    assert_eq!(
        health.count("/failed_batches/invalid"),
        invalid.requests,
        "{health}\n{seen}"
    );
    assert_eq!(
        health.failed_batches(),
        invalid.requests,
        "only invalid: {health}"
    );
    let text = metrics(&rig);
    assert_eq!(
        value(
            &text,
            r#"circuit_transitions_total{from="closed",to="open"}"#
        ),
        0.0,
        "the circuit never opened, not even for a moment"
    );
    assert_eq!(value(&text, "circuit_state"), 0.0);
    assert_eq!(
        value(&text, r#"span_exports_failed_total{cause="invalid"}"#),
        invalid.requests as f64
    );
    assert_eq!(
        value(&text, r#"spans_failed_total{cause="invalid"}"#),
        invalid.spans as f64
    );
    format!(
        "{protocol} invalid argument: {} export requests with {} spans all reached the backend and \
         failed as invalid; the circuit stayed closed",
        invalid.requests, invalid.spans
    )
}

#[test]
fn the_next_whole_second_is_exact_for_an_http_date() {
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
    assert_eq!(
        whole_second_after(at),
        UNIX_EPOCH + Duration::from_secs(1_700_000_001)
    );
    let whole = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(whole_second_after(whole), whole);
}

#[test]
fn wall_times_follow_the_monotonic_clock_both_ways() {
    let clocks = (Instant::now(), SystemTime::now());
    let later = clocks.0 + Duration::from_secs(2);
    assert_eq!(wall_time(later, clocks), clocks.1 + Duration::from_secs(2));
    if let Some(earlier) = clocks.0.checked_sub(Duration::from_millis(5)) {
        assert_eq!(
            wall_time(earlier, clocks),
            clocks.1 - Duration::from_millis(5)
        );
    }
}
