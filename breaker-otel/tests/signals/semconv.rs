//! What the semantic conventions' exporter metrics read from the handle:
//! items in flight, export durations by `error.type`, items by `error.type`,
//! and the names (`otel.component.*`, `server.*`) of each signal's exporter.

use std::time::Duration;

use breaker_otel::test_util::{ScriptedExporter, Step, log_records, metric_points};
use breaker_otel::{
    BackendBreaker, CircuitState, ExportDurations, ExportErrorType, FailureCause, Protocol, Signal,
};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use super::{batches_only, eventually, signal};

fn backend() -> BackendBreaker {
    BackendBreaker::builder(batches_only())
        .endpoint("http://user:secret@collector:4318")
        .protocol(Protocol::HttpProtobuf)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_in_flight_from_admission_until_its_export_ends() {
    let backend = backend();
    let inner = ScriptedExporter::always(Step::Succeed);
    inner.hold();
    let logs = backend.reporting_log_exporter(inner.clone());
    let handle = backend.handle();
    let records = log_records(5);
    let batch = records.batch();
    let export = logs.export(LogBatch::new(&batch));
    let watch = async {
        let seen = eventually(Duration::from_secs(1), || {
            signal(&handle, Signal::Logs).inflight == 5
        })
        .await;
        inner.release();
        seen
    };
    let (result, seen) = tokio::join!(export, watch);
    assert!(seen, "the held batch's five records are in flight");
    result.unwrap();
    let logs_now = signal(&handle, Signal::Logs);
    assert_eq!(logs_now.inflight, 0);
    assert_eq!(logs_now.counts.exported, 5);
}

#[tokio::test(start_paused = true)]
async fn an_export_abandoned_by_its_caller_is_no_longer_in_flight() {
    let backend = backend();
    let inner = ScriptedExporter::always(Step::Succeed);
    inner.hold();
    let logs = backend.reporting_log_exporter(inner.clone());
    let records = log_records(3);
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        logs.export(LogBatch::new(&records.batch())),
    )
    .await;
    assert!(abandoned.is_err(), "the caller gave up first");
    assert_eq!(signal(&backend.handle(), Signal::Logs).inflight, 0);
}

#[tokio::test(start_paused = true)]
async fn export_durations_are_filed_by_error_type_in_the_fixed_buckets() {
    let backend = backend();
    let inner = ScriptedExporter::new(
        [Step::Succeed, Step::PartialSuccess(1), Step::Hang],
        Step::Invalid,
    );
    inner.set_latency(Duration::from_millis(30));
    let logs = backend.reporting_log_exporter(inner.clone());
    let records = log_records(4);
    for _ in 0..4 {
        let _ = logs.export(LogBatch::new(&records.batch())).await;
    }
    let durations = signal(&backend.handle(), Signal::Logs).durations;

    let success = durations.get(None).unwrap();
    assert_eq!(
        (success.count(), success.sum()),
        (1, Duration::from_millis(30))
    );
    let buckets: Vec<(Duration, u64)> = success.cumulative().collect();
    assert_eq!(buckets.len(), ExportDurations::BOUNDS.len());
    assert_eq!(
        buckets[1],
        (Duration::from_millis(10), 0),
        "30 ms is over 10 ms"
    );
    assert_eq!(buckets[2], (Duration::from_millis(25), 0));
    assert_eq!(
        buckets[3],
        (Duration::from_millis(50), 1),
        "and at most 50 ms"
    );
    assert_eq!(buckets[13], (Duration::from_secs(10), 1));

    let rejected = durations.get(Some(ExportErrorType::Rejected)).unwrap();
    assert_eq!(
        rejected.count(),
        1,
        "a partial success is not a full success"
    );
    let timeout = durations
        .get(Some(ExportErrorType::Failed(FailureCause::Timeout)))
        .unwrap();
    assert_eq!(
        (timeout.count(), timeout.sum()),
        (1, batches_only().export_timeout),
        "a hang is timed until the deadline cut it off"
    );
    let invalid = durations
        .get(Some(ExportErrorType::Failed(FailureCause::Invalid)))
        .unwrap();
    assert_eq!(invalid.count(), 1);
    let timed: u64 = durations.iter().map(|(_, h)| h.count()).sum();
    assert_eq!(timed, 4, "one observation per export, none elsewhere");
}

#[tokio::test(start_paused = true)]
async fn dropped_batches_are_circuit_open_and_never_timed() {
    let backend = backend();
    let inner = ScriptedExporter::always(Step::Fail);
    let metrics = backend.reporting_metric_exporter(inner.clone());
    let points = metric_points(2);
    for _ in 0..5 {
        assert!(metrics.export(&points).await.is_err());
    }
    let handle = backend.handle();
    assert_eq!(handle.state(), CircuitState::Open);
    let snapshot = signal(&handle, Signal::Metrics);
    let by_type: Vec<(Option<&str>, u64)> = snapshot
        .by_error_type()
        .map(|(t, n)| (t.map(ExportErrorType::as_str), n))
        .filter(|&(_, n)| n > 0)
        .collect();
    assert_eq!(
        by_type,
        [(Some("circuit_open"), 4), (Some("internal"), 6)],
        "three failed exports of two points, then two dropped"
    );
    assert_eq!(
        snapshot.durations.get(Some(ExportErrorType::CircuitOpen)),
        None
    );
    let timed: u64 = snapshot.durations.iter().map(|(_, h)| h.count()).sum();
    assert_eq!(timed, 3, "only the exports that were sent");
    let listed: u64 = snapshot.by_error_type().map(|(_, n)| n).sum();
    assert_eq!(listed, snapshot.counts.total());
    assert_eq!(
        snapshot.by_error_type().count(),
        3 + FailureCause::ALL.len(),
        "every error type is listed, zero counts included"
    );
}

#[tokio::test(start_paused = true)]
async fn each_signal_is_named_as_the_conventions_name_its_exporter() {
    let backend = backend();
    let _logs = backend.reporting_log_exporter(ScriptedExporter::default());
    let _metrics = backend.reporting_metric_exporter(ScriptedExporter::default());
    let snapshot = backend.handle().snapshot();
    assert_eq!(snapshot.server_address.as_deref(), Some("collector"));
    assert_eq!(snapshot.server_port, Some(4318));
    let logs = snapshot.signal(Signal::Logs).unwrap();
    assert_eq!(logs.component_type, "otlp_http_log_exporter");
    assert!(
        logs.component_name.starts_with("otlp_http_log_exporter/"),
        "{}",
        logs.component_name
    );
    let metrics = snapshot.signal(Signal::Metrics).unwrap();
    assert_eq!(metrics.component_type, "otlp_http_metric_exporter");

    let second = BackendBreaker::builder(batches_only())
        .endpoint("http://collector:4318")
        .protocol(Protocol::HttpProtobuf)
        .build()
        .unwrap();
    let _more_logs = second.reporting_log_exporter(ScriptedExporter::default());
    let second = second.handle().snapshot();
    assert_ne!(
        second.signal(Signal::Logs).unwrap().component_name,
        logs.component_name,
        "two breakers' log exporters are two instances"
    );
}

#[tokio::test(start_paused = true)]
async fn the_server_comes_from_the_endpoint_and_the_type_from_the_protocol() {
    let grpc = BackendBreaker::builder(batches_only())
        .endpoint("https://[::1]")
        .protocol(Protocol::Grpc)
        .build()
        .unwrap();
    let _spans_elsewhere = grpc.reporting_log_exporter(ScriptedExporter::default());
    let snapshot = grpc.handle().snapshot();
    assert_eq!(snapshot.server_address.as_deref(), Some("::1"));
    assert_eq!(snapshot.server_port, Some(443), "the scheme's port");
    assert_eq!(
        snapshot.signal(Signal::Logs).unwrap().component_type,
        "otlp_grpc_log_exporter"
    );

    let unnamed = BackendBreaker::new(batches_only()).unwrap();
    let _logs = unnamed.reporting_log_exporter(ScriptedExporter::default());
    let snapshot = unnamed.handle().snapshot();
    assert_eq!(
        (snapshot.server_address.as_deref(), snapshot.server_port),
        (None, None)
    );
    assert_eq!(
        snapshot.signal(Signal::Logs).unwrap().component_type,
        "breaker_otel::CircuitBreakerLogExporter",
        "not an exporter the conventions name: our type's name"
    );
}

#[tokio::test(start_paused = true)]
async fn a_signal_with_a_protocol_of_its_own_is_named_after_it() {
    let backend = BackendBreaker::builder(batches_only())
        .endpoint("http://collector:4317")
        .protocol(Protocol::Grpc)
        .signal_protocol(Signal::Logs, Protocol::HttpProtobuf)
        .build()
        .unwrap();
    let _logs = backend.reporting_log_exporter(ScriptedExporter::default());
    let _metrics = backend.reporting_metric_exporter(ScriptedExporter::default());
    let snapshot = backend.handle().snapshot();
    assert_eq!(
        snapshot.signal(Signal::Logs).unwrap().component_type,
        "otlp_http_log_exporter"
    );
    assert_eq!(
        snapshot.signal(Signal::Metrics).unwrap().component_type,
        "otlp_grpc_metric_exporter"
    );
}
