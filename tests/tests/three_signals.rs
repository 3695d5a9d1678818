//! All three signals from the real `taskman-server` to one real OTLP receiver that serves
//! the trace, logs and metrics services (docs/signals.md, docs/contract.md): spans, the
//! server's own log records and, opted in with `OTEL_METRICS_EXPORTER=otlp`, its metrics.
//!
//! What they prove: each signal arrives; the records about the pipeline itself never do;
//! a hung collector leaves the task API untouched and metrics flow again once it answers;
//! and one collector refusing every signal is one breaker, one outage line and one probe
//! stream, not three.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use ::tests::receiver::{ExportRequest, Mode, Protocol, Signal};
use support::{Rig, Traffic, WAIT, assert_all_succeeded, recover, terminate};

/// Every signal exported quickly, metrics opted in.
const THREE_SIGNALS: &[(&str, &str)] = &[
    ("OTEL_LOGS_EXPORTER", "otlp"),
    ("OTEL_METRICS_EXPORTER", "otlp"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
];

fn healthy_service_sends_spans_its_logs_and_its_metrics(protocol: Protocol) {
    let mut rig = Rig::start_with(protocol, THREE_SIGNALS);
    for i in 0..3 {
        rig.api.create_task(&format!("task {i}"));
    }
    rig.receiver_until("the task spans", |s| s.spans_named("POST /tasks") >= 3);
    rig.block_on(rig.receiver.wait_for_log_records(1, WAIT))
        .unwrap();
    until("the request counter with the three creates", || {
        rig.receiver.metric_points().iter().any(|p| {
            p.metric == "http_server_requests"
                && p.attribute("route") == Some("/tasks")
                && p.attribute("method") == Some("POST")
                && p.value.is_some_and(|v| v >= 3.0)
        })
    });

    let logs = rig.receiver.logs();
    let listening = logs
        .iter()
        .find(|l| {
            l.body
                .as_deref()
                .is_some_and(|b| b.contains("listening on"))
        })
        .unwrap_or_else(|| panic!("no 'listening on' record in {logs:#?}"));
    assert_eq!(listening.service, "taskman");
    assert_eq!(listening.severity_text, "INFO");
    assert!(
        listening.resource.contains_key("service.instance.id"),
        "{listening:?}"
    );
    assert!(
        logs.iter()
            .all(|l| !l.scope.starts_with("breaker_otel") && !l.scope.starts_with("opentelemetry")),
        "the pipeline's own records never loop back: {logs:#?}"
    );
    let points = rig.receiver.metric_points();
    let histogram = points
        .iter()
        .find(|p| p.metric == "http_server_request_duration_seconds")
        .unwrap_or_else(|| panic!("no duration histogram in {points:#?}"));
    assert_eq!(
        (histogram.kind, histogram.unit.as_str()),
        ("histogram", "s")
    );
    assert!(points.iter().all(|p| p.service == "taskman"));

    let (status, _) = terminate(&mut rig, WAIT);
    assert!(status.success(), "{}", rig.server_log());
}

#[test]
fn healthy_over_grpc_the_receiver_gets_every_signal() {
    healthy_service_sends_spans_its_logs_and_its_metrics(Protocol::Grpc);
}

#[test]
fn healthy_over_http_the_receiver_gets_every_signal() {
    healthy_service_sends_spans_its_logs_and_its_metrics(Protocol::Http);
}

#[test]
fn without_the_opt_in_no_metrics_are_pushed() {
    // The server's default: logs exported, metrics not.
    let mut rig = Rig::start(&[
        ("OTEL_LOGS_EXPORTER", ""),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
    ]);
    rig.api.create_task("one");
    rig.receiver_until("the task span", |s| s.spans_named("POST /tasks") >= 1);
    rig.block_on(rig.receiver.wait_for_log_records(1, WAIT))
        .unwrap();
    // Ten intervals: a push would have come.
    std::thread::sleep(Duration::from_secs(1));
    assert!(rig.receiver.requests(Signal::Metrics).is_empty());
    let (status, _) = terminate(&mut rig, WAIT);
    assert!(status.success());
}

#[test]
fn a_hung_collector_never_reaches_the_api_and_metrics_flow_again_after_it() {
    let mut rig = Rig::start(&[
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "300ms"),
        ("TASKMAN__BREAKER__PROBE_AFTER", "1s"),
        ("TASKMAN__SERVER__SHUTDOWN_TIMEOUT", "5s"),
    ]);
    rig.block_on(rig.receiver.wait_for_metric_points(1, WAIT))
        .unwrap();

    let traffic = Traffic::start(rig.server.base_url());
    rig.set_mode(Mode::Hang);
    rig.health_until("the circuit to open against the hung collector", |h| {
        h.open()
    });
    // Under traffic while it hangs.
    traffic.wait_for_more(100);
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "while the collector hangs");

    let before = rig.receiver.metric_point_count();
    recover(&rig);
    until("metric points after the collector came back", || {
        rig.receiver.metric_point_count() > before
    });

    let (status, took) = terminate(&mut rig, Duration::from_secs(10));
    assert!(status.success(), "{}", rig.server_log());
    assert!(
        took < Duration::from_secs(5) + Duration::from_secs(2),
        "{took:?}"
    );
}

/// Polls `done` until it holds, failing after [`WAIT`].
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The longest that two of `requests` overlapped (0 or 1 in flight at once means a single
/// stream of probes).
fn most_in_flight(requests: &[ExportRequest]) -> usize {
    requests
        .iter()
        .map(|r| {
            let end = r.finished_at.unwrap_or_else(Instant::now);
            requests
                .iter()
                .filter(|o| o.received_at < end && o.finished_at.is_none_or(|f| f > r.received_at))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn one_refusing_collector_is_one_breaker_one_outage_and_one_probe_stream() {
    let mut rig = Rig::start(&[
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("TASKMAN__BREAKER__PROBE_AFTER", "300ms"),
        ("TASKMAN__BREAKER__MIN_PROBE_INTERVAL", "300ms"),
    ]);
    rig.block_on(rig.receiver.wait_for_metric_points(1, WAIT))
        .unwrap();
    let traffic = Traffic::start(rig.server.base_url());
    rig.set_mode(Mode::Unavailable);
    rig.health_until("the circuit to open", |h| h.open());
    let opened = Instant::now();
    let probes_at_open = rig.health().probes();
    // Every signal has something to send all along: spans and metrics each 100 ms,
    // and the server logs nothing per request, so logs probe only if they are the
    // ones the breaker picks.
    std::thread::sleep(Duration::from_secs(3));
    // At background priority on a machine busy with other work, the probes come later:
    // the window lasts until two have come.
    rig.health_until("two probes after opening", |h| {
        h.probes() >= probes_at_open + 2
    });
    let seen = rig.receiver.totals();
    let probes = rig.health().probes() - probes_at_open;
    let _calls = traffic.stop();

    let during: Vec<ExportRequest> = Signal::ALL
        .into_iter()
        .flat_map(|signal| rig.receiver.requests(signal))
        .filter(|r| r.received_at >= opened)
        .collect();
    assert!(probes >= 2, "probes went on: {probes}");
    assert!(
        during.len() as u64 <= probes + 1,
        "each request while open is one of the breaker's probes, whatever its signal: \
         {} requests, {probes} probes\n{seen:?}",
        during.len()
    );
    assert!(
        most_in_flight(&during) <= 1,
        "one probe at a time: {during:#?}"
    );

    let log = rig.server_log();
    let opened_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("telemetry circuit opened"))
        .collect();
    assert_eq!(opened_lines.len(), 1, "one outage, one line: {log}");
    assert!(
        opened_lines[0].contains("traces,logs,metrics"),
        "{}",
        opened_lines[0]
    );

    // The semantic conventions' exporter series say the same, by signal and error.type.
    let metrics = rig.api.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    let value = |family: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for (family, component) in [
        (
            "otel_sdk_exporter_span_exported_total",
            "otel_component_type=\"otlp_grpc_span_exporter\"",
        ),
        (
            "otel_sdk_exporter_metric_data_point_exported_total",
            "otel_component_type=\"otlp_grpc_metric_exporter\"",
        ),
    ] {
        assert!(
            value(family, &[component, "error_type=\"circuit_open\""]) > 0.0,
            "{family}: items dropped while open\n{text}"
        );
    }
    let points = "otel_sdk_exporter_metric_data_point_exported_total";
    assert!(
        value(points, &[]) > value(points, &["error_type="]),
        "data points exported before the outage, without error_type\n{text}"
    );
    assert!(
        value(
            "otel_sdk_exporter_operation_duration_seconds_count",
            &["error_type=\"unavailable\""]
        ) > 0.0,
        "the failed exports are timed with their error.type\n{text}"
    );
    let state = value(
        "backend_circuit_state",
        &["signals=\"traces,logs,metrics\""],
    );
    assert!(
        state == 2.0 || state == 1.0,
        "one breaker for all three signals, open (2) or half-open (1) while a probe is out: \
         {state}\n{text}"
    );
    promtool_checks(&text);

    recover(&rig);
    let (status, _) = terminate(&mut rig, WAIT);
    assert!(status.success());
}

/// `promtool check metrics` on `text`, when promtool is installed (CI requires it).
fn promtool_checks(text: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let program = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let child = Command::new(&program)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var("TASKMAN_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "TASKMAN_REQUIRE_PROMTOOL=1 and promtool ({program}) cannot run"
        );
        eprintln!("promtool not on PATH: /metrics NOT checked by promtool");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_while_the_collector_hangs_every_signal_exits_0_within_the_shutdown_timeout() {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
    // Signal delivery and process exit on a loaded machine; far below the 30 s
    // the hanging exports would take if shutdown waited for them.
    const SLACK: Duration = Duration::from_secs(10);
    let mut rig = Rig::start(&[
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("TASKMAN__SERVER__SHUTDOWN_TIMEOUT", "2s"),
        ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "30s"),
    ]);
    rig.block_on(rig.receiver.wait_for_metric_points(1, WAIT))
        .unwrap();
    let traffic = Traffic::start(rig.server.base_url());
    rig.set_mode(Mode::Hang);
    // An export in flight that will not end: the final flushes of every signal
    // then meet a hung collector.
    until("an export to hang", || {
        Signal::ALL
            .into_iter()
            .flat_map(|s| rig.receiver.requests(s))
            .any(|r| r.finished_at.is_none())
    });
    let calls = traffic.stop();
    assert_all_succeeded(&calls, "while the collector hangs");

    let (status, took) = terminate(&mut rig, SHUTDOWN_TIMEOUT + WAIT);
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
