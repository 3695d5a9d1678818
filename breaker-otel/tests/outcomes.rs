//! What the breaker makes of what the backend says, with a scripted inner
//! exporter that reports like the OTLP exporters do, on paused Tokio time:
//! refused credentials open the circuit and are named, refused data does
//! not, a partial success is counted exactly, and a throttle keeps every
//! export away from the backend until it ends, probes included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use breaker_otel::test_util::{ScriptedExporter, Step, spans};
use breaker_otel::{CircuitBreakerSpanExporter, CircuitState, ExporterConfig, FailureCause};
use opentelemetry_sdk::trace::SpanExporter;

fn reporting(
    inner: &ScriptedExporter,
    config: ExporterConfig,
) -> CircuitBreakerSpanExporter<ScriptedExporter> {
    CircuitBreakerSpanExporter::reporting(inner.clone(), config).unwrap()
}

/// Batches only, so that what each batch does is all that reaches the backend.
fn batches_only() -> ExporterConfig {
    ExporterConfig::DEFAULT.idle_probes(false)
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_open_the_circuit_and_are_named_as_the_cause() {
    let inner = ScriptedExporter::always(Step::Unauthenticated);
    let exporter = reporting(&inner, batches_only());
    let before = SystemTime::now();
    for _ in 0..3 {
        assert!(exporter.export(spans(2)).await.is_err());
    }
    let snapshot = exporter.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Open);
    let last = snapshot.last_failure.unwrap();
    assert_eq!(last.cause, FailureCause::Unauthenticated);
    assert!(last.at >= before - Duration::from_secs(1));
    let counts = snapshot.failures.get(FailureCause::Unauthenticated);
    assert_eq!((counts.batches, counts.spans), (3, 6));
    assert_eq!(snapshot.spans.failed, 6);

    // A rotated token: the next probe succeeds and closes the circuit.
    inner.set(Step::Succeed);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(exporter.export(spans(1)).await.is_ok());
    assert_eq!(exporter.handle().state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn invalid_data_on_every_batch_never_opens_the_circuit() {
    let inner = ScriptedExporter::always(Step::Invalid);
    let exporter = reporting(&inner, batches_only());
    for _ in 0..20 {
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(exporter.export(spans(3)).await.is_err());
    }
    let snapshot = exporter.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!(inner.calls(), 20, "every batch was sent: the backend is up");
    assert_eq!(snapshot.failures.get(FailureCause::Invalid).spans, 60);
    assert_eq!(snapshot.spans.failed, 60);
    assert_eq!(snapshot.spans.dropped, 0);
}

#[tokio::test(start_paused = true)]
async fn a_partial_success_counts_the_rejected_spans_exactly() {
    let inner = ScriptedExporter::new(
        [Step::PartialSuccess(2), Step::PartialSuccess(40)],
        Step::Succeed,
    );
    let exporter = reporting(&inner, batches_only());
    assert!(exporter.export(spans(5)).await.is_ok());
    assert!(
        exporter.export(spans(4)).await.is_ok(),
        "more rejected than sent"
    );
    assert!(exporter.export(spans(3)).await.is_ok());
    let snapshot = exporter.handle().snapshot();
    assert_eq!(snapshot.spans.rejected, 2 + 4);
    assert_eq!(snapshot.spans.exported, 3 + 3);
    assert_eq!(
        snapshot.spans.total(),
        12,
        "each span in exactly one outcome"
    );
    assert_eq!(snapshot.state, CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_throttle_keeps_every_batch_away_until_it_ends_and_the_circuit_stays_closed() {
    let inner = ScriptedExporter::new([Step::Throttle(Duration::from_secs(5))], Step::Succeed);
    let exporter = reporting(&inner, ExporterConfig::default());
    assert!(exporter.export(spans(1)).await.is_err());
    let until = exporter.handle().snapshot().throttled_until.unwrap();
    let asked = until.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(asked > Duration::from_secs(4), "{asked:?}");
    // Steady traffic for the next 4.9 s: nothing reaches the backend.
    for _ in 0..49 {
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(exporter.export(spans(2)).await.is_err());
    }
    let snapshot = exporter.handle().snapshot();
    assert_eq!(inner.calls(), 1, "nothing was sent while throttled");
    assert_eq!(
        snapshot.state,
        CircuitState::Closed,
        "a throttle is no outage"
    );
    assert_eq!(snapshot.spans.dropped, 98);
    assert_eq!(snapshot.failures.get(FailureCause::Throttled).batches, 1);
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(exporter.export(spans(2)).await.is_ok(), "the wait is over");
    assert_eq!(inner.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_throttle_holds_the_probes_of_an_open_circuit_too() {
    let inner = ScriptedExporter::new(
        [
            Step::Fail,
            Step::Fail,
            Step::Fail,
            Step::Throttle(Duration::from_secs(20)),
        ],
        Step::Succeed,
    );
    // Idle probes on: with no traffic at all, only they could reach the backend.
    let exporter = reporting(&inner, ExporterConfig::default());
    for _ in 0..3 {
        assert!(exporter.export(spans(1)).await.is_err());
    }
    assert_eq!(exporter.handle().state(), CircuitState::Open);
    // The first probe (an empty export, after the 1 s floor) is throttled.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(inner.calls(), 4);
    assert!(exporter.handle().snapshot().throttled_until.is_some());
    tokio::time::sleep(Duration::from_secs(18)).await;
    assert_eq!(inner.calls(), 4, "no probe before the throttle ends");
    assert_eq!(exporter.handle().state(), CircuitState::Open);
    // After it ends the next probe goes out and closes the circuit.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(inner.calls(), 5);
    assert_eq!(exporter.handle().state(), CircuitState::Closed);
}
