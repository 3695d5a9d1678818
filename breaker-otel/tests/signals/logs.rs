//! `CircuitBreakerLogExporter` with a breaker of its own: the span
//! exporter's guarantees, counted in log records.

use std::time::Duration;

use breaker_otel::test_util::{ScriptedExporter, Step, log_records};
use breaker_otel::{
    CircuitBreakerLogExporter, CircuitState, ExporterConfig, FailureCause, Signal, Unclassified,
};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};

use super::{FLOOR, batches_only, counts, eventually, signal};

fn reporting(
    inner: &ScriptedExporter,
    config: ExporterConfig,
) -> CircuitBreakerLogExporter<ScriptedExporter> {
    CircuitBreakerLogExporter::reporting(inner.clone(), config).unwrap()
}

/// Exports a batch of `n` log records.
async fn export<E: LogExporter>(exporter: &E, n: usize) -> OTelSdkResult {
    let records = log_records(n);
    exporter.export(LogBatch::new(&records.batch())).await
}

#[tokio::test(start_paused = true)]
async fn exports_while_closed_and_counts_log_records() {
    let inner = ScriptedExporter::always(Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    for _ in 0..5 {
        export(&exporter, 4).await.unwrap();
    }
    assert_eq!((inner.calls(), inner.spans_received()), (5, 20));
    let handle = exporter.handle();
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.signals().collect::<Vec<_>>(), [Signal::Logs]);
    assert_eq!(counts(&handle, Signal::Logs).exported, 20);
}

#[tokio::test(start_paused = true)]
async fn three_failures_open_the_circuit_and_later_batches_are_dropped_unsent() {
    let inner = ScriptedExporter::always(Step::Fail);
    let exporter = reporting(&inner, batches_only());
    for _ in 0..3 {
        let result = export(&exporter, 2).await;
        assert!(
            matches!(result, Err(OTelSdkError::InternalFailure(_))),
            "{result:?}"
        );
    }
    assert_eq!(exporter.handle().state(), CircuitState::Open);
    for _ in 0..5 {
        let result = export(&exporter, 3).await;
        assert!(
            matches!(&result, Err(OTelSdkError::InternalFailure(m)) if m.contains("3 log records dropped")),
            "{result:?}"
        );
    }
    assert_eq!(inner.calls(), 3, "dropped batches never reach the backend");
    let logs = counts(&exporter.handle(), Signal::Logs);
    assert_eq!((logs.failed, logs.dropped, logs.total()), (6, 15, 21));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_exporter_is_contained_and_counted_as_panic() {
    let inner = ScriptedExporter::new([Step::Panic], Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    let result = export(&exporter, 2).await;
    assert!(
        matches!(&result, Err(OTelSdkError::InternalFailure(m)) if m.contains("the inner log exporter panicked")),
        "{result:?}"
    );
    export(&exporter, 1).await.unwrap();
    let logs = signal(&exporter.handle(), Signal::Logs);
    assert_eq!(logs.failures.get(FailureCause::Panic).batches, 1);
    assert_eq!((logs.counts.failed, logs.counts.exported), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn an_export_that_never_answers_is_cut_off_at_export_timeout() {
    let inner = ScriptedExporter::new([Step::Hang], Step::Succeed);
    let config = ExporterConfig::DEFAULT.export_timeout(Duration::from_secs(10));
    let exporter = reporting(&inner, config);
    let started = tokio::time::Instant::now();
    let result = export(&exporter, 4).await;
    assert_eq!(started.elapsed(), Duration::from_secs(10), "virtual time");
    assert!(
        matches!(result, Err(OTelSdkError::Timeout(_))),
        "{result:?}"
    );
    export(&exporter, 1).await.unwrap();
    let logs = signal(&exporter.handle(), Signal::Logs);
    assert_eq!(logs.failures.get(FailureCause::Timeout).batches, 1);
    assert_eq!((logs.counts.failed, logs.counts.exported), (4, 1));
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_within_export_timeout_is_exported_and_a_slower_one_is_a_timeout() {
    let inner = ScriptedExporter::always(Step::Succeed);
    let config = ExporterConfig::DEFAULT.export_timeout(Duration::from_secs(10));
    let exporter = reporting(&inner, config);
    inner.set_latency(Duration::from_secs(9));
    export(&exporter, 2).await.unwrap();
    inner.set_latency(Duration::from_secs(11));
    let started = tokio::time::Instant::now();
    let result = export(&exporter, 3).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "cut off, virtual time"
    );
    assert!(
        matches!(result, Err(OTelSdkError::Timeout(_))),
        "{result:?}"
    );
    let logs = counts(&exporter.handle(), Signal::Logs);
    assert_eq!((logs.exported, logs.failed), (2, 3));
    assert_eq!(
        inner.spans_received(),
        2,
        "the slower one never got to its step"
    );
}

#[tokio::test(start_paused = true)]
async fn the_backends_answers_are_classified_as_for_spans() {
    // Refused data: the backend is up, the circuit stays closed.
    let inner = ScriptedExporter::always(Step::Invalid);
    let exporter = reporting(&inner, batches_only());
    for _ in 0..10 {
        assert!(export(&exporter, 1).await.is_err());
    }
    assert_eq!(exporter.handle().state(), CircuitState::Closed);

    // A partial success: exported and rejected, exactly.
    inner.set(Step::PartialSuccess(3));
    export(&exporter, 5).await.unwrap();
    let logs = counts(&exporter.handle(), Signal::Logs);
    assert_eq!((logs.exported, logs.rejected), (2, 3));

    // A throttle keeps every batch away until it ends, without opening.
    inner.set(Step::Throttle(Duration::from_secs(5)));
    assert!(export(&exporter, 1).await.is_err());
    inner.set(Step::Succeed);
    let calls = inner.calls();
    tokio::time::advance(Duration::from_millis(4_900)).await;
    assert!(export(&exporter, 7).await.is_err());
    assert_eq!(
        inner.calls(),
        calls,
        "nothing reaches the backend while throttled"
    );
    tokio::time::advance(Duration::from_millis(100)).await;
    export(&exporter, 1).await.unwrap();
    let snapshot = exporter.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!(snapshot.signal(Signal::Logs).unwrap().counts.dropped, 7);

    // Refused credentials open it, and are named.
    inner.set(Step::Unauthenticated);
    for _ in 0..3 {
        assert!(export(&exporter, 1).await.is_err());
    }
    let snapshot = exporter.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Open);
    assert_eq!(
        snapshot.last_failure.map(|f| f.cause),
        Some(FailureCause::Unauthenticated)
    );
}

#[tokio::test(start_paused = true)]
async fn an_exporter_that_only_returns_a_result_counts_every_error_toward_opening() {
    // The same refusal, through the SDK's Result only: nothing says the backend is up.
    let inner = ScriptedExporter::always(Step::Invalid);
    let exporter: CircuitBreakerLogExporter<Unclassified<ScriptedExporter>> =
        CircuitBreakerLogExporter::new(inner.clone(), batches_only()).unwrap();
    for _ in 0..3 {
        assert!(export(&exporter, 1).await.is_err());
    }
    let snapshot = exporter.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Open);
    assert_eq!(
        snapshot.last_failure.map(|f| f.cause),
        Some(FailureCause::Internal)
    );
}

#[tokio::test(start_paused = true)]
async fn idle_probes_close_a_quiet_circuit_without_a_batch() {
    let inner = ScriptedExporter::new([Step::Fail; 3], Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    for _ in 0..3 {
        let _ = export(&exporter, 2).await;
    }
    let handle = exporter.handle();
    assert_eq!(handle.state(), CircuitState::Open);
    assert!(
        eventually(FLOOR * 10, || handle.state() == CircuitState::Closed).await,
        "closed without any batch"
    );
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.probes, 1);
    assert_eq!(inner.calls(), 4);
    assert_eq!(inner.spans_received(), 0, "the probe carried no record");
    export(&exporter, 2).await.unwrap();
    assert_eq!(inner.spans_received(), 2);
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_export_fails_and_a_hanging_inner_shutdown_is_bounded() {
    let inner = ScriptedExporter::always(Step::Succeed);
    inner.hang_on_shutdown();
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    let result = exporter.shutdown_with_timeout(Duration::from_millis(50));
    assert!(
        matches!(result, Err(OTelSdkError::Timeout(_))),
        "{result:?}"
    );
    assert!(matches!(
        export(&exporter, 1).await,
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert!(matches!(
        exporter.shutdown(),
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert_eq!(inner.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn manual_control_forces_and_resets() {
    let inner = ScriptedExporter::always(Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::DEFAULT);
    let control = exporter.control();
    control.force_open();
    assert!(export(&exporter, 1).await.is_err());
    assert_eq!(inner.calls(), 0);
    control.reset();
    export(&exporter, 1).await.unwrap();
    assert_eq!(exporter.handle().state(), CircuitState::Closed);
}
