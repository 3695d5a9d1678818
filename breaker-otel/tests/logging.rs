//! The log stays quiet during an outage: exactly one line per transition
//! from the adapter, none per batch, and none from the SDK's own per-batch
//! error logging, with the real batch span processor in the loop.
//!
//! One test per file: it installs the process-wide tracing subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use breaker_otel::test_util::{ScriptedExporter, Step};
use breaker_otel::{CircuitBreakerSpanExporter, CircuitState, ExporterConfig};
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Debug, Clone)]
struct Line {
    target: String,
    level: Level,
    to: Option<String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct To(Option<String>);
        impl tracing::field::Visit for To {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "to" {
                    self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "to" {
                    self.0 = Some(value.to_owned());
                }
            }
        }
        let mut to = To(None);
        event.record(&mut to);
        self.0.lock().unwrap().push(Line {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            to: to.0,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_logs_one_line_per_transition_and_nothing_per_batch() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .unwrap();

    let inner = ScriptedExporter::always(Step::Fail);
    let exporter =
        CircuitBreakerSpanExporter::new(inner.clone(), ExporterConfig::default()).unwrap();
    let handle = exporter.handle();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("test");

    // 40 batches against a dead backend: 3 failures open the circuit, then
    // 37 attempts of which 0, 10, 20 and 30 probe.
    const BATCHES: usize = 40;
    let flusher = provider.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..BATCHES {
            tracer.in_span("work", |_| {});
            let _ = flusher.force_flush();
        }
    })
    .await
    .unwrap();

    let snapshot = handle.snapshot();
    assert_eq!(snapshot.state, CircuitState::Open);
    assert_eq!(
        inner.calls(),
        3 + 4,
        "3 failures, then probes at 0, 10, 20, 30"
    );
    let transitions: u64 = snapshot.transitions.iter().map(|(_, _, n)| n).sum();
    assert_eq!(
        transitions,
        1 + 4 * 2,
        "opened once; each probe half-opens and reopens"
    );

    let lines = capture.0.lock().unwrap().clone();
    let ours: Vec<_> = lines
        .iter()
        .filter(|l| l.target.starts_with("breaker_otel"))
        .collect();
    assert_eq!(
        ours.len() as u64,
        transitions,
        "one line per transition: {ours:#?}"
    );
    for line in &ours {
        let expected = if line.to.as_deref() == Some("open") {
            Level::WARN
        } else {
            Level::INFO
        };
        assert_eq!(line.level, expected, "{line:?}");
    }
    let sdk: Vec<_> = lines
        .iter()
        .filter(|l| l.target.starts_with("opentelemetry"))
        .collect();
    assert!(sdk.is_empty(), "the SDK logged per batch: {sdk:#?}");
    drop(provider);
}
