//! One breaker per backend: the log and metric exporters of one endpoint
//! share a `BackendBreaker`, so that the outage is detected once, probed
//! once and logged once, while each signal keeps its own counts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breaker_otel::test_util::{ScriptedExporter, Step, log_records, metric_points};
use breaker_otel::{
    BackendBreaker, CircuitBreakerLogExporter, CircuitBreakerMetricExporter, CircuitState,
    ExporterConfig, FailureCause, Signal,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use super::{FLOOR, batches_only, counts, eventually};

/// A log exporter and a metric exporter sharing one breaker.
struct Pair {
    backend: BackendBreaker,
    logs_inner: ScriptedExporter,
    logs: CircuitBreakerLogExporter<ScriptedExporter>,
    metrics_inner: ScriptedExporter,
    metrics: CircuitBreakerMetricExporter<ScriptedExporter>,
}

impl Pair {
    fn new(config: ExporterConfig, logs: ScriptedExporter, metrics: ScriptedExporter) -> Self {
        let backend = BackendBreaker::builder(config)
            .endpoint("http://user:secret@collector:4318")
            .build()
            .unwrap();
        Self {
            logs: backend.reporting_log_exporter(logs.clone()),
            metrics: backend.reporting_metric_exporter(metrics.clone()),
            logs_inner: logs,
            metrics_inner: metrics,
            backend,
        }
    }

    async fn log(&self, n: usize) -> OTelSdkResult {
        let records = log_records(n);
        self.logs.export(LogBatch::new(&records.batch())).await
    }
}

#[tokio::test(start_paused = true)]
async fn failed_log_exports_open_the_breaker_and_metric_exports_are_dropped_too() {
    let pair = Pair::new(
        batches_only(),
        ScriptedExporter::always(Step::Fail),
        ScriptedExporter::always(Step::Succeed),
    );
    let metrics = metric_points(4);
    pair.metrics.export(&metrics).await.unwrap();
    for _ in 0..3 {
        assert!(pair.log(2).await.is_err());
    }
    let handle = pair.backend.handle();
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(
        pair.metrics.handle().state(),
        CircuitState::Open,
        "the same breaker"
    );
    for _ in 0..3 {
        assert!(pair.metrics.export(&metrics).await.is_err());
    }
    assert_eq!(
        pair.metrics_inner.calls(),
        1,
        "only the export before the outage"
    );

    let snapshot = handle.snapshot();
    assert_eq!(
        snapshot.endpoint.as_deref(),
        Some("http://***@collector:4318")
    );
    assert_eq!(
        handle.signals().collect::<Vec<_>>(),
        [Signal::Logs, Signal::Metrics]
    );
    let logs = snapshot.signal(Signal::Logs).unwrap();
    assert_eq!((logs.counts.failed, logs.counts.dropped), (6, 0));
    assert_eq!(logs.failures.get(FailureCause::Internal).batches, 3);
    let points = snapshot.signal(Signal::Metrics).unwrap();
    assert_eq!((points.counts.exported, points.counts.dropped), (4, 12));
    assert_eq!(
        points.last_failure, None,
        "metrics never failed: they were dropped"
    );
    assert_eq!(snapshot.last_failure, logs.last_failure);
    assert!(snapshot.signal(Signal::Traces).is_none());
}

#[tokio::test(start_paused = true)]
async fn one_probe_serves_every_signal() {
    let pair = Pair::new(
        ExporterConfig::DEFAULT,
        ScriptedExporter::new([Step::Fail; 3], Step::Succeed),
        ScriptedExporter::always(Step::Succeed),
    );
    let metrics = metric_points(2);
    for _ in 0..3 {
        let _ = pair.log(1).await;
    }
    pair.metrics.export(&metrics).await.unwrap_err();
    let handle = pair.backend.handle();
    assert_eq!(handle.state(), CircuitState::Open);
    // No batch comes: the idle prober probes once, through one exporter,
    // and that closes the breaker for both.
    assert!(eventually(FLOOR * 10, || handle.state() == CircuitState::Closed).await);
    assert_eq!(handle.snapshot().probes, 1);
    assert_eq!(
        pair.logs_inner.calls(),
        4,
        "three failures and the one probe"
    );
    assert_eq!(
        pair.metrics_inner.calls(),
        0,
        "the backend saw one probe, not two"
    );
    pair.metrics.export(&metrics).await.unwrap();
    pair.log(3).await.unwrap();
    assert_eq!(counts(&handle, Signal::Metrics).exported, 2);
    assert_eq!(counts(&handle, Signal::Logs).exported, 3);
}

#[tokio::test(start_paused = true)]
async fn a_metric_export_can_be_the_probe_that_closes_the_breaker_for_logs() {
    let pair = Pair::new(
        batches_only(),
        ScriptedExporter::always(Step::Fail),
        ScriptedExporter::always(Step::Succeed),
    );
    for _ in 0..3 {
        let _ = pair.log(1).await;
    }
    tokio::time::advance(FLOOR).await;
    pair.metrics.export(&metric_points(1)).await.unwrap();
    let handle = pair.backend.handle();
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.snapshot().probes, 1);
    pair.logs_inner.set(Step::Succeed);
    pair.log(2).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_throttle_asked_for_on_metrics_holds_the_logs_too() {
    let pair = Pair::new(
        batches_only(),
        ScriptedExporter::always(Step::Succeed),
        ScriptedExporter::always(Step::Throttle(Duration::from_secs(5))),
    );
    assert!(pair.metrics.export(&metric_points(1)).await.is_err());
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(pair.log(3).await.is_err());
    assert_eq!(pair.logs_inner.calls(), 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    pair.log(3).await.unwrap();
    let handle = pair.backend.handle();
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "a throttle opens nothing"
    );
    let logs = counts(&handle, Signal::Logs);
    assert_eq!((logs.dropped, logs.exported), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn when_one_exporter_shuts_down_another_one_probes() {
    let pair = Pair::new(
        ExporterConfig::DEFAULT,
        ScriptedExporter::always(Step::Succeed),
        ScriptedExporter::new([Step::Fail; 3], Step::Succeed),
    );
    let metrics = metric_points(1);
    // The log exporter registers first, then goes away.
    pair.log(1).await.unwrap();
    pair.logs.shutdown().unwrap();
    for _ in 0..3 {
        let _ = pair.metrics.export(&metrics).await;
    }
    let handle = pair.backend.handle();
    assert_eq!(handle.state(), CircuitState::Open);
    assert!(eventually(FLOOR * 10, || handle.state() == CircuitState::Closed).await);
    assert_eq!(pair.metrics_inner.calls(), 4, "the metric exporter probed");
    assert_eq!(pair.logs_inner.calls(), 1);
}

mod accounting {
    use super::*;
    use proptest::prelude::*;

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => Just(Step::Succeed),
            4 => Just(Step::Fail),
            1 => Just(Step::Panic),
            1 => Just(Step::Hang),
            1 => (0u64..4).prop_map(Step::PartialSuccess),
            1 => Just(Step::Invalid),
            1 => (1u64..3).prop_map(|s| Step::Throttle(Duration::from_secs(s))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Per signal, what entered = exported + rejected + dropped +
        /// failed, and what the backend took = exported + rejected, for
        /// any scripts and any interleaving of the two signals.
        #[test]
        fn each_signal_is_accounted_for(
            log_script in proptest::collection::vec(step(), 0..30),
            metric_script in proptest::collection::vec(step(), 0..30),
            exports in proptest::collection::vec((any::<bool>(), 1usize..6), 1..50),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let (entered, snapshot, received) = runtime.block_on(async {
                let pair = Pair::new(
                    batches_only(),
                    ScriptedExporter::new(log_script.clone(), Step::Succeed),
                    ScriptedExporter::new(metric_script.clone(), Step::Succeed),
                );
                let points: Vec<_> = (1..6).map(metric_points).collect();
                let mut entered = [0u64; 2];
                for &(is_log, n) in &exports {
                    tokio::time::advance(Duration::from_millis(700)).await;
                    if is_log {
                        let _ = pair.log(n).await;
                        entered[0] += n as u64;
                    } else {
                        let _ = pair.metrics.export(&points[n - 1]).await;
                        entered[1] += n as u64;
                    }
                }
                let received = [pair.logs_inner.spans_received(), pair.metrics_inner.spans_received()];
                (entered, pair.backend.handle().snapshot(), received)
            });
            for (i, signal) in [Signal::Logs, Signal::Metrics].into_iter().enumerate() {
                let counts = snapshot.signal(signal).unwrap().counts;
                prop_assert_eq!(counts.total(), entered[i], "{}", signal);
                prop_assert_eq!(counts.exported + counts.rejected, received[i] as u64, "{}", signal);
            }
        }
    }
}

mod logging {
    //! One outage of a shared breaker is one warn line when it starts and
    //! one info line when it ends, naming both signals and counting each.

    use tracing::Level;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::*;

    #[derive(Debug, Clone)]
    struct Line {
        level: Level,
        fields: BTreeMap<String, String>,
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Line>>>);

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            struct Fields(BTreeMap<String, String>);
            impl tracing::field::Visit for Fields {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    self.0.insert(
                        field.name().to_owned(),
                        format!("{value:?}").trim_matches('"').to_owned(),
                    );
                }
                fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                    self.0.insert(field.name().to_owned(), value.to_owned());
                }
            }
            if !event.metadata().target().starts_with("breaker_otel") {
                return;
            }
            let mut fields = Fields(BTreeMap::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(Line {
                level: *event.metadata().level(),
                fields: fields.0,
            });
        }
    }

    #[test]
    fn one_outage_is_one_warn_and_one_info_for_every_signal() {
        let capture = Capture::default();
        let _scoped =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let pair = Pair::new(
                ExporterConfig::DEFAULT,
                ScriptedExporter::new([Step::Fail; 3], Step::Fail),
                ScriptedExporter::always(Step::Succeed),
            );
            let metrics = metric_points(2);
            for _ in 0..3 {
                let _ = pair.log(2).await;
            }
            for _ in 0..5 {
                let _ = pair.metrics.export(&metrics).await;
                let _ = pair.log(1).await;
            }
            // Two failed empty probes, then the backend is back.
            let logs = pair.logs_inner.clone();
            assert!(eventually(FLOOR * 10, || logs.calls() >= 5).await);
            pair.logs_inner.set(Step::Succeed);
            let handle = pair.backend.handle();
            assert!(eventually(FLOOR * 30, || handle.state() == CircuitState::Closed).await);
        });
        let lines = capture.0.lock().unwrap().clone();
        let loud: Vec<_> = lines.iter().filter(|l| l.level <= Level::INFO).collect();
        assert_eq!(loud.len(), 2, "{lines:#?}");

        let opened = &loud[0].fields;
        assert_eq!(loud[0].level, Level::WARN);
        assert_eq!(opened["to"], "open");
        assert_eq!(opened["signals"], "logs,metrics");
        assert_eq!(opened["endpoint"], "http://***@collector:4318");
        assert_eq!(opened["log_records_failed"], "6");
        assert_eq!(opened["metric_data_points_failed"], "0");
        assert!(
            !opened.contains_key("spans_failed"),
            "traces are not served"
        );
        assert!(
            opened["cause"].contains("scripted backend unavailable"),
            "{opened:?}"
        );
        assert!(
            opened["message"].contains("log records and metric data points are dropped"),
            "{opened:?}"
        );

        let closed = &loud[1].fields;
        assert_eq!(loud[1].level, Level::INFO);
        assert_eq!(closed["to"], "closed");
        assert_eq!(closed["log_records_dropped"], "5");
        assert_eq!(closed["metric_data_points_dropped"], "10");
        assert_eq!(
            closed["probes"], "3",
            "two failed empty probes and the one that closed"
        );
        assert!(closed.contains_key("outage_secs"));
    }
}
