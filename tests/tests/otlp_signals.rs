//! `breaker_otel::OtlpLogExporter` and `OtlpMetricExporter` against the real test
//! receiver, over gRPC and OTLP/HTTP: log records and metric data points arrive with
//! their content, gzip or not; refusals are reported with the backend's cause and delay;
//! a partial success reports the rejected count; an export polled with
//! `futures_executor::block_on` outside any runtime (as the SDK polls it) works; and
//! behind the breakers, driven by the SDK's own `BatchLogProcessor` and
//! `PeriodicReader`, a hanging receiver is cut off at `export_timeout`, the request is
//! cancelled, and export resumes once the receiver answers again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use breaker_otel::test_util::{log_records, metric_points};
use breaker_otel::{
    BackendBreaker, BackendHandle, BreakerConfig, CircuitBreakerLogExporter,
    CircuitBreakerMetricExporter, CircuitState, ExportFailure, ExportReport, ExporterConfig,
    FailureCause, OtlpExporterConfig, OtlpLogExporter, OtlpMetricExporter,
    Protocol as ExporterProtocol, Signal as BreakerSignal,
};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter as _, SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use tests::receiver::{Mode, Outcome, Protocol, Receiver, Signal};

/// Generous: only reached when something is broken.
const WAIT: Duration = Duration::from_secs(10);
const SERVICE: &str = "otlp-signals-test";
const BOTH: [Protocol; 2] = [Protocol::Grpc, Protocol::Http];

async fn receiver(protocol: Protocol) -> Receiver {
    match protocol {
        Protocol::Grpc => Receiver::start().await.unwrap(),
        Protocol::Http => Receiver::start_http().await.unwrap(),
    }
}

fn config(receiver: &Receiver, signal: Signal) -> OtlpExporterConfig {
    let protocol = match receiver.protocol() {
        Protocol::Grpc => ExporterProtocol::Grpc,
        Protocol::Http => ExporterProtocol::HttpProtobuf,
    };
    OtlpExporterConfig::new(protocol, receiver.endpoint_for(signal)).timeout(WAIT)
}

fn log_exporter(receiver: &Receiver, gzip: bool) -> OtlpLogExporter {
    let mut exporter = OtlpLogExporter::new(config(receiver, Signal::Logs).gzip(gzip)).unwrap();
    exporter.set_resource(&Resource::builder().with_service_name(SERVICE).build());
    exporter
}

fn metric_exporter(receiver: &Receiver, gzip: bool) -> OtlpMetricExporter {
    OtlpMetricExporter::new(
        config(receiver, Signal::Metrics).gzip(gzip),
        Temporality::Cumulative,
    )
    .unwrap()
}

fn failed(report: ExportReport) -> ExportFailure {
    match report {
        ExportReport::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Polls `done` every 10 ms until it holds or `within` has passed.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_and_metric_points_arrive_with_their_content_gzip_or_not() {
    for protocol in BOTH {
        for gzip in [false, true] {
            let receiver = receiver(protocol).await;
            let logs = log_exporter(&receiver, gzip);
            let records = log_records(3);
            assert_eq!(
                logs.send(LogBatch::new(&records.batch())).await,
                ExportReport::Exported {
                    rejected: 0,
                    message: None
                },
                "{protocol} gzip={gzip}"
            );
            let received = receiver.logs();
            assert_eq!(received.len(), 3, "{protocol} gzip={gzip}");
            let first = &received[0];
            assert_eq!(first.service, SERVICE, "set_resource reached the request");
            assert_eq!(first.body.as_deref(), Some("request 0 served in 3 ms"));
            assert_eq!(
                first.scope, "taskman_server::api",
                "the target names the scope"
            );
            assert_eq!(first.severity_text, "INFO");
            assert_eq!(first.event_name, "request");
            assert_eq!(first.attribute("http.route"), Some("/tasks/{id}"));
            assert_eq!(first.attribute("http.response.status_code"), Some("200"));
            assert_eq!(received[2].attribute("task.id"), Some("task-00000002"));

            let metrics = metric_exporter(&receiver, gzip);
            let collected = metric_points(4);
            assert_eq!(
                metrics.send(&collected).await,
                ExportReport::Exported {
                    rejected: 0,
                    message: None
                },
                "{protocol} gzip={gzip}"
            );
            let points = receiver.metric_points();
            assert_eq!(points.len(), 4, "{protocol} gzip={gzip}");
            assert!(
                points
                    .iter()
                    .all(|p| p.metric == "requests" && p.kind == "sum")
            );
            assert!(points.iter().all(|p| p.value == Some(1.0)), "{points:?}");
            let mut tasks: Vec<_> = points.iter().filter_map(|p| p.attribute("task")).collect();
            tasks.sort_unstable();
            assert_eq!(tasks, ["0", "1", "2", "3"]);
            assert_eq!(receiver.metric_requests().len(), 1);
            assert_eq!(receiver.snapshot().requests.len(), 0, "no span request");
            receiver.stop().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_exports_are_still_sent_because_they_are_the_probe() {
    for protocol in BOTH {
        let receiver = receiver(protocol).await;
        let logs = log_exporter(&receiver, false);
        let metrics = metric_exporter(&receiver, false);
        assert!(logs.export(LogBatch::new(&[])).await.is_ok(), "{protocol}");
        assert!(
            metrics.export(&ResourceMetrics::default()).await.is_ok(),
            "{protocol}"
        );
        for signal in [Signal::Logs, Signal::Metrics] {
            let requests = receiver.requests(signal);
            assert_eq!(requests.len(), 1, "{protocol} {signal}");
            assert_eq!(requests[0].items(), 0, "{protocol} {signal}");
            assert_eq!(requests[0].outcome, Outcome::Accepted);
        }
        receiver.stop().await.unwrap();
    }
}

/// What one mode must come to: (cause, retryable, retry_after) over gRPC and over HTTP.
type Expected = (FailureCause, bool, Option<Duration>);

fn failure_table() -> Vec<(Mode, Expected, Expected)> {
    use FailureCause::*;
    let secs = Duration::from_secs;
    vec![
        (
            Mode::Unavailable,
            (Unavailable, true, None),
            (Unavailable, true, None),
        ),
        (
            Mode::UnavailableRetryAfter(secs(3)),
            (Unavailable, true, Some(secs(3))),
            (Unavailable, true, Some(secs(3))),
        ),
        (
            Mode::ResourceExhausted,
            (Throttled, false, None),
            (Throttled, true, None),
        ),
        (
            Mode::Throttled {
                retry_after: secs(2),
            },
            (Throttled, true, Some(secs(2))),
            (Throttled, true, Some(secs(2))),
        ),
        (
            Mode::Unauthenticated,
            (Unauthenticated, false, None),
            (Unauthenticated, false, None),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_reported_with_the_backends_cause_and_delay() {
    for protocol in BOTH {
        let receiver = receiver(protocol).await;
        let logs = log_exporter(&receiver, false);
        let metrics = metric_exporter(&receiver, false);
        let records = log_records(2);
        let collected = metric_points(2);
        for (mode, grpc, http) in failure_table() {
            receiver.set_mode(mode).await.unwrap();
            let (cause, retryable, retry_after) = match protocol {
                Protocol::Grpc => grpc,
                Protocol::Http => http,
            };
            let reports = [
                ("logs", logs.send(LogBatch::new(&records.batch())).await),
                ("metrics", metrics.send(&collected).await),
            ];
            for (signal, report) in reports {
                let failure = failed(report);
                let what = format!("{protocol} {mode} {signal}: {failure:?}");
                assert_eq!(failure.cause, cause, "{what}");
                assert_eq!(failure.retryable, retryable, "{what}");
                assert_eq!(failure.retry_after, retry_after, "{what}");
            }
        }
        assert_eq!(receiver.log_record_count(), 0, "{protocol}");
        assert_eq!(receiver.metric_point_count(), 0, "{protocol}");
        receiver.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_reports_the_rejected_records_and_points() {
    for protocol in BOTH {
        let receiver = receiver(protocol).await;
        receiver
            .set_mode(Mode::PartialSuccess { rejected: 2 })
            .await
            .unwrap();
        let logs = log_exporter(&receiver, false);
        let ExportReport::Exported { rejected, message } =
            logs.send(LogBatch::new(&log_records(5).batch())).await
        else {
            panic!("{protocol}: a partial success is a success");
        };
        assert_eq!(rejected, 2, "{protocol}");
        assert!(
            message.is_some_and(|m| m.contains("log records")),
            "{protocol}"
        );
        let ExportReport::Exported { rejected, .. } = metric_exporter(&receiver, false)
            .send(&metric_points(5))
            .await
        else {
            panic!("{protocol}: a partial success is a success");
        };
        assert_eq!(rejected, 2, "{protocol}");
        assert_eq!(receiver.signal(Signal::Logs).items, 3, "{protocol}");
        assert_eq!(receiver.signal(Signal::Metrics).rejected, 2, "{protocol}");
        receiver.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_polled_outside_any_runtime_is_sent_on_the_exporters_runtime() {
    for protocol in BOTH {
        let receiver = receiver(protocol).await;
        let logs = Arc::new(log_exporter(&receiver, false));
        let metrics = Arc::new(metric_exporter(&receiver, false));
        // As the SDK's batch processor and reader poll exports: block_on on a plain thread.
        let outcome = std::thread::spawn({
            let (logs, metrics) = (Arc::clone(&logs), Arc::clone(&metrics));
            move || {
                assert!(tokio::runtime::Handle::try_current().is_err());
                let records = log_records(2);
                let logged =
                    futures_executor::block_on(logs.export(LogBatch::new(&records.batch())));
                let measured = futures_executor::block_on(metrics.export(&metric_points(3)));
                (logged, measured)
            }
        });
        let (logged, measured) = tokio::task::spawn_blocking(move || outcome.join().unwrap())
            .await
            .unwrap();
        assert!(logged.is_ok(), "{protocol}: {logged:?}");
        assert!(measured.is_ok(), "{protocol}: {measured:?}");
        assert_eq!(receiver.log_record_count(), 2, "{protocol}");
        assert_eq!(receiver.metric_point_count(), 3, "{protocol}");
        receiver.stop().await.unwrap();
    }
}

/// Exports cut off after 200 ms, probes 50 ms apart at first.
fn quick() -> ExporterConfig {
    ExporterConfig::DEFAULT
        .export_timeout(Duration::from_millis(200))
        .breaker(BreakerConfig::DEFAULT.min_probe_interval(Duration::from_millis(50)))
}

fn timeouts(handle: &BackendHandle, signal: BreakerSignal) -> u64 {
    handle
        .snapshot()
        .signal(signal)
        .map_or(0, |s| s.failures.get(FailureCause::Timeout).batches)
}

/// Waits until the receiver saw a request of `signal` that the client gave up on
/// (cancelled before an answer): the breaker's deadline reached the wire.
async fn a_request_was_cancelled(receiver: &Receiver, signal: Signal) {
    let cancelled = receiver
        .wait_until(WAIT, "a cancelled request", |_| {
            receiver.requests(signal).iter().any(|r| r.cancelled())
        })
        .await;
    assert!(cancelled.is_ok(), "{cancelled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_breaker_a_hung_receiver_is_cut_off_and_logs_flow_again() {
    for protocol in BOTH {
        let receiver = receiver(protocol).await;
        // The client's own timeout is far beyond the test: only the breaker cuts off.
        let otlp =
            OtlpLogExporter::new(config(&receiver, Signal::Logs).timeout(Duration::from_secs(600)))
                .unwrap();
        let exporter = CircuitBreakerLogExporter::reporting(otlp, quick()).unwrap();
        let handle = exporter.handle();
        let processor = BatchLogProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(50))
                    .build(),
            )
            .build();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(processor)
            .build();
        let logger = provider.logger("test");
        let emit = |body: &'static str| {
            let mut record = logger.create_log_record();
            record.set_body(body.into());
            logger.emit(record);
        };

        receiver.set_mode(Mode::Hang).await.unwrap();
        emit("while the receiver hangs");
        assert!(
            eventually(WAIT, || timeouts(&handle, BreakerSignal::Logs) >= 1).await,
            "{protocol}: {:#?}",
            handle.snapshot()
        );
        a_request_was_cancelled(&receiver, Signal::Logs).await;

        receiver.set_mode(Mode::Accept).await.unwrap();
        let flowing = eventually(WAIT, || {
            emit("after the receiver is back");
            receiver
                .logs()
                .iter()
                .any(|l| l.body.as_deref() == Some("after the receiver is back"))
        })
        .await;
        assert!(
            flowing,
            "{protocol}: {:#?} {}",
            handle.snapshot(),
            receiver.snapshot()
        );
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .unwrap()
            .unwrap();
        receiver.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_breaker_a_hung_receiver_no_longer_stops_the_periodic_reader() {
    for protocol in BOTH {
        let receiver = receiver(protocol).await;
        let otlp = OtlpMetricExporter::new(
            config(&receiver, Signal::Metrics).timeout(Duration::from_secs(600)),
            Temporality::Cumulative,
        )
        .unwrap();
        let exporter = CircuitBreakerMetricExporter::reporting(otlp, quick()).unwrap();
        let handle = exporter.handle();
        let reader = PeriodicReader::builder(exporter)
            .with_interval(Duration::from_millis(100))
            .build();
        receiver.set_mode(Mode::Hang).await.unwrap();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        provider
            .meter("test")
            .u64_counter("tasks.created")
            .build()
            .add(1, &[]);

        assert!(
            eventually(WAIT, || timeouts(&handle, BreakerSignal::Metrics) >= 2).await,
            "{protocol}: the reader went on exporting after a hung export: {:#?}",
            handle.snapshot()
        );
        a_request_was_cancelled(&receiver, Signal::Metrics).await;

        receiver.set_mode(Mode::Accept).await.unwrap();
        let flowing = eventually(WAIT, || {
            receiver
                .metric_points()
                .iter()
                .any(|p| p.metric == "tasks.created")
        })
        .await;
        assert!(
            flowing,
            "{protocol}: {:#?} {}",
            handle.snapshot(),
            receiver.snapshot()
        );
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .unwrap()
            .unwrap();
        receiver.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_collector_opens_one_shared_breaker_and_sees_one_probe_stream() {
    for protocol in BOTH {
        let receiver = receiver(protocol).await;
        receiver.set_mode(Mode::Unavailable).await.unwrap();
        let backend = BackendBreaker::new(quick()).unwrap();
        let logs = backend.reporting_log_exporter(log_exporter(&receiver, false));
        let metrics = backend.reporting_metric_exporter(metric_exporter(&receiver, false));
        let records = log_records(1);
        for _ in 0..3 {
            assert!(logs.export(LogBatch::new(&records.batch())).await.is_err());
        }
        let handle = backend.handle();
        assert_eq!(handle.state(), CircuitState::Open, "{protocol}");
        // Open for every signal: the metric export is dropped unsent.
        assert!(metrics.export(&metric_points(2)).await.is_err());
        // No traffic: the idle prober probes through one exporter only. A probe is
        // counted when the breaker lets it go, before its request arrives: wait
        // for the requests themselves.
        assert!(
            eventually(WAIT, || receiver.requests(Signal::Logs).len() >= 3 + 2).await,
            "{protocol}: {:#?}",
            handle.snapshot()
        );
        assert!(handle.snapshot().probes >= 2, "{protocol}");
        let log_requests = receiver.requests(Signal::Logs);
        assert!(log_requests.len() >= 3 + 2, "{protocol}: {log_requests:?}");
        assert!(
            log_requests[3..].iter().all(|r| r.items() == 0),
            "probes are empty"
        );
        assert_eq!(
            receiver.requests(Signal::Metrics).len(),
            0,
            "{protocol}: one probe stream, not two"
        );
        // The collector comes back: a probe closes the breaker for both signals.
        receiver.set_mode(Mode::Accept).await.unwrap();
        assert!(eventually(WAIT, || handle.state() == CircuitState::Closed).await);
        assert!(
            metrics.export(&metric_points(2)).await.is_ok(),
            "{protocol}"
        );
        assert_eq!(receiver.metric_point_count(), 2, "{protocol}");
        receiver.stop().await.unwrap();
    }
}
