//! The log stays quiet during an outage: one warn line when it starts, one
//! info line when it ends, at most one "still open" summary per
//! `log_interval` in between, everything else (failed probes, half-open
//! flips) at debug; none per batch, and none from the SDK's own per-batch
//! error logging, with the real batch span processor in the loop.
//!
//! The first test installs the process-wide subscriber (the batch processor
//! logs from its own thread); the second runs on one thread of paused time
//! under a subscriber scoped to it, which takes precedence there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breaker_otel::test_util::{ScriptedExporter, Step, spans};
use breaker_otel::{CircuitBreakerSpanExporter, CircuitState, ExporterConfig};
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Debug, Clone)]
struct Line {
    target: String,
    level: Level,
    fields: BTreeMap<String, String>,
}

impl Line {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

impl Capture {
    /// The adapter's lines at `level` or more severe.
    fn ours(&self, level: Level) -> Vec<Line> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.target.starts_with("breaker_otel") && l.level <= level)
            .cloned()
            .collect()
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Fields(BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(
                    field.name().to_owned(),
                    format!("{value:?}").trim_matches('"').to_owned(),
                );
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().to_owned(), value.to_owned());
            }
        }
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Line {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields: fields.0,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_logs_one_warn_at_its_start_one_info_at_its_end_and_nothing_per_batch() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .unwrap();

    let inner = ScriptedExporter::always(Step::Fail);
    // Batches follow each other on real time here; without the floor, which
    // batch probes is decided by count alone, not by timing luck.
    let config = ExporterConfig::DEFAULT.breaker(
        ExporterConfig::DEFAULT
            .breaker
            .min_probe_interval(Duration::ZERO),
    );
    let exporter = CircuitBreakerSpanExporter::new(inner.clone(), config).unwrap();
    let handle = exporter.handle();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("test");
    let flush = |batches: usize| {
        let (tracer, provider) = (tracer.clone(), provider.clone());
        tokio::task::spawn_blocking(move || {
            for _ in 0..batches {
                tracer.in_span("work", |_| {});
                let _ = provider.force_flush();
            }
        })
    };

    // 40 batches against a dead backend: 3 failures open the circuit, then
    // 37 attempts of which 0, 10, 20 and 30 probe and fail.
    flush(40).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(
        inner.calls(),
        3 + 4,
        "3 failures, then probes at 0, 10, 20, 30"
    );
    let ours = capture.ours(Level::INFO);
    assert_eq!(ours.len(), 1, "one line while the outage lasts: {ours:#?}");
    assert_eq!(ours[0].level, Level::WARN);
    assert_eq!(ours[0].field("to"), Some("open"));
    assert!(
        ours[0]
            .field("cause")
            .unwrap()
            .contains("scripted backend unavailable"),
        "{ours:#?}"
    );

    // The backend is back: attempts 37 to 39 are dropped, 40 probes and closes.
    inner.set(Step::Succeed);
    flush(4).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
    let snapshot = handle.snapshot();
    let transitions: u64 = snapshot.transitions.iter().map(|(_, _, n)| n).sum();
    assert_eq!(
        transitions,
        1 + 4 * 2 + 2,
        "metrics count every transition: opened, 4 failed probes, 1 that closed"
    );

    let ours = capture.ours(Level::INFO);
    assert_eq!(ours.len(), 2, "{ours:#?}");
    let closed = &ours[1];
    assert_eq!(closed.level, Level::INFO);
    assert_eq!(closed.field("to"), Some("closed"));
    assert_eq!(closed.field("probes"), Some("5"), "{closed:?}");
    assert_eq!(closed.field("spans_dropped"), Some("36"), "{closed:?}");
    assert!(closed.field("outage_secs").is_some(), "{closed:?}");
    let debug = capture.ours(Level::DEBUG).len() - ours.len();
    assert_eq!(debug as u64, transitions - 2, "the rest at debug");

    let lines = capture.0.lock().unwrap().clone();
    let sdk: Vec<_> = lines
        .iter()
        .filter(|l| l.target.starts_with("opentelemetry"))
        .collect();
    assert!(sdk.is_empty(), "the SDK logged per batch: {sdk:#?}");
    drop(provider);
}

#[tokio::test(start_paused = true)]
async fn a_long_outage_logs_one_summary_per_log_interval() {
    let capture = Capture::default();
    let _scoped =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let inner = ScriptedExporter::always(Step::Fail);
    let config = ExporterConfig::DEFAULT.log_interval(Duration::from_secs(60));
    let exporter = CircuitBreakerSpanExporter::new(inner.clone(), config).unwrap();

    // One batch a second for 3 minutes and a half, the backend down.
    for _ in 0..210 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = exporter.export(spans(1)).await;
    }
    assert_eq!(exporter.handle().state(), CircuitState::Open);
    let ours = capture.ours(Level::INFO);
    let levels: Vec<_> = ours.iter().map(|l| l.level).collect();
    assert_eq!(
        levels,
        [Level::WARN, Level::INFO, Level::INFO, Level::INFO],
        "opened, then one summary a minute: {ours:#?}"
    );
    for summary in &ours[1..] {
        assert!(summary.field("to").is_none(), "{summary:?}");
        assert!(summary.field("spans_dropped").is_some(), "{summary:?}");
    }
    let probes = exporter.handle().snapshot().probes;
    assert!(probes >= 5, "{probes} probes, each failed at debug");
}
