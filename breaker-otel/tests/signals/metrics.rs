//! `CircuitBreakerMetricExporter` with a breaker of its own: the span
//! exporter's guarantees, counted in metric data points.

use std::time::Duration;

use breaker_otel::test_util::{ScriptedExporter, Step, metric_points};
use breaker_otel::{
    CircuitBreakerMetricExporter, CircuitState, ExporterConfig, FailureCause, Signal,
};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use super::{FLOOR, batches_only, counts, eventually, signal};

fn reporting(
    inner: &ScriptedExporter,
    config: ExporterConfig,
) -> CircuitBreakerMetricExporter<ScriptedExporter> {
    CircuitBreakerMetricExporter::reporting(inner.clone(), config).unwrap()
}

#[tokio::test(start_paused = true)]
async fn exports_while_closed_and_counts_data_points() {
    let metrics = metric_points(3);
    let inner = ScriptedExporter::always(Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    exporter.export(&metrics).await.unwrap();
    exporter.export(&metrics).await.unwrap();
    assert_eq!((inner.calls(), inner.spans_received()), (2, 6));
    let handle = exporter.handle();
    assert_eq!(handle.signals().collect::<Vec<_>>(), [Signal::Metrics]);
    assert_eq!(counts(&handle, Signal::Metrics).exported, 6);
    assert_eq!(exporter.temporality(), Temporality::Cumulative);
    exporter.force_flush().unwrap();
}

#[tokio::test(start_paused = true)]
async fn three_failures_open_the_circuit_and_later_exports_are_dropped_unsent() {
    let metrics = metric_points(2);
    let inner = ScriptedExporter::always(Step::Fail);
    let exporter = reporting(&inner, batches_only());
    for _ in 0..3 {
        assert!(exporter.export(&metrics).await.is_err());
    }
    assert_eq!(exporter.handle().state(), CircuitState::Open);
    for _ in 0..4 {
        let result = exporter.export(&metrics).await;
        assert!(
            matches!(&result, Err(OTelSdkError::InternalFailure(m)) if m.contains("2 metric data points dropped")),
            "{result:?}"
        );
    }
    assert_eq!(inner.calls(), 3);
    let points = counts(&exporter.handle(), Signal::Metrics);
    assert_eq!((points.failed, points.dropped, points.total()), (6, 8, 14));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_exporter_is_contained_and_counted_as_panic() {
    let metrics = metric_points(2);
    let inner = ScriptedExporter::new([Step::Panic], Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    let result = exporter.export(&metrics).await;
    assert!(
        matches!(&result, Err(OTelSdkError::InternalFailure(m)) if m.contains("the inner metric exporter panicked")),
        "{result:?}"
    );
    exporter.export(&metrics).await.unwrap();
    let points = signal(&exporter.handle(), Signal::Metrics);
    assert_eq!(points.failures.get(FailureCause::Panic).batches, 1);
    assert_eq!((points.counts.failed, points.counts.exported), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn an_export_that_never_answers_is_cut_off_at_export_timeout() {
    let metrics = metric_points(1);
    let inner = ScriptedExporter::new([Step::Hang], Step::Succeed);
    let config = ExporterConfig::DEFAULT.export_timeout(Duration::from_secs(10));
    let exporter = reporting(&inner, config);
    let started = tokio::time::Instant::now();
    let result = exporter.export(&metrics).await;
    assert_eq!(started.elapsed(), Duration::from_secs(10), "virtual time");
    assert!(
        matches!(result, Err(OTelSdkError::Timeout(_))),
        "{result:?}"
    );
    exporter.export(&metrics).await.unwrap();
    let points = signal(&exporter.handle(), Signal::Metrics);
    assert_eq!(points.failures.get(FailureCause::Timeout).batches, 1);
    assert_eq!((points.counts.failed, points.counts.exported), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_within_export_timeout_is_exported() {
    let metrics = metric_points(4);
    let inner = ScriptedExporter::always(Step::Succeed);
    let config = ExporterConfig::DEFAULT.export_timeout(Duration::from_secs(10));
    let exporter = reporting(&inner, config);
    inner.set_latency(Duration::from_secs(9));
    exporter.export(&metrics).await.unwrap();
    assert_eq!(counts(&exporter.handle(), Signal::Metrics).exported, 4);
}

#[tokio::test(start_paused = true)]
async fn a_partial_success_counts_the_rejected_data_points_exactly() {
    let metrics = metric_points(5);
    let inner = ScriptedExporter::always(Step::PartialSuccess(2));
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    exporter.export(&metrics).await.unwrap();
    let points = counts(&exporter.handle(), Signal::Metrics);
    assert_eq!((points.exported, points.rejected), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn idle_probes_close_the_circuit_between_two_collections() {
    let metrics = metric_points(1);
    let inner = ScriptedExporter::new([Step::Fail; 3], Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    for _ in 0..3 {
        let _ = exporter.export(&metrics).await;
    }
    let handle = exporter.handle();
    assert!(eventually(FLOOR * 10, || handle.state() == CircuitState::Closed).await);
    assert_eq!((inner.calls(), inner.spans_received()), (4, 0));
    exporter.export(&metrics).await.unwrap();
    assert_eq!(inner.spans_received(), 1);
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_export_and_flush_fail() {
    let metrics = metric_points(1);
    let inner = ScriptedExporter::always(Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    exporter.shutdown().unwrap();
    assert!(matches!(
        exporter.export(&metrics).await,
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert!(matches!(
        exporter.force_flush(),
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert_eq!(inner.calls(), 0);
}
