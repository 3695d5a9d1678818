//! Test doubles for code that wraps or feeds an exporter: a
//! [`ScriptedExporter`] whose every answer the test decides, as a span, log
//! or metric exporter; [`spans`], batches of the SDK's own test span data;
//! [`log_records`], records like those the `tracing` bridge makes;
//! [`metric_points`], metrics with a chosen number of data points; and
//! [`otlp_trace_request`], the bytes the OTLP span exporter sends for a batch.
//!
//! Only built with the non-default `test-util` feature; crates enable it in
//! their `[dev-dependencies]`. It is here, next to the adapter, so that the
//! adapter's tests, the HTTP routes' tests and the benchmarks drive one
//! double instead of each writing its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::testing::trace::new_test_export_span_data;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::Notify;

use crate::{
    ExportFailure, ExportReport, FailureCause, ReportingLogExporter, ReportingMetricExporter,
    ReportingSpanExporter,
};

/// What a [`ScriptedExporter`] does with one export call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Accepts the batch.
    Succeed,
    /// Fails with `OTelSdkError::InternalFailure`, as a backend that is down.
    Fail,
    /// Panics inside `export`.
    Panic,
    /// Never returns, as a backend that accepts the connection and never answers.
    Hang,
    /// Accepts the batch but reports this many of its spans rejected (an OTLP
    /// partial success; at most the batch).
    PartialSuccess(u64),
    /// Refuses the data as invalid: the backend is up (`INVALID_ARGUMENT`, 400).
    Invalid,
    /// Refuses our credentials (`UNAUTHENTICATED`, 401).
    Unauthenticated,
    /// Asks us to wait this long (`RESOURCE_EXHAUSTED` with `RetryInfo`, 429 with `Retry-After`).
    Throttle(Duration),
}

/// A span exporter that follows a script of [`Step`]s, then repeats a last
/// step forever; its clones share the script and the counters, so a test
/// keeps one clone while the code under test owns another. It is a log
/// exporter and a push metric exporter too, with the same script: a step
/// then applies to a batch of log records or to the data points of one
/// metrics export.
///
/// Besides the script, exports can be held at the door
/// ([`hold`](Self::hold)) until the test [`release`](Self::release)s them:
/// that is how a test sees the world while an export is in flight. They can
/// also take a while ([`set_latency`](Self::set_latency)), or block the
/// thread that polls them ([`block_threads`](Self::block_threads)), as a
/// blocking HTTP client does.
///
/// ```
/// use breaker_otel::test_util::{ScriptedExporter, Step, spans};
/// use opentelemetry_sdk::trace::SpanExporter as _;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let backend = ScriptedExporter::new([Step::Fail], Step::Succeed);
/// assert!(backend.export(spans(2)).await.is_err());
/// assert!(backend.export(spans(3)).await.is_ok());
/// assert_eq!((backend.calls(), backend.spans_received()), (2, 3));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ScriptedExporter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    script: Mutex<Script>,
    calls: AtomicUsize,
    spans_received: AtomicUsize,
    hold: AtomicBool,
    release: Notify,
    shutdown_hangs: AtomicBool,
    /// How long each export takes before its step, on Tokio's clock.
    latency: Mutex<Duration>,
    /// While true, each export blocks its thread (no `.await`) until false.
    blocking: Mutex<bool>,
    unblocked: Condvar,
    /// Exports blocking their thread now.
    blocked: AtomicUsize,
}

#[derive(Debug)]
struct Script {
    next: VecDeque<Step>,
    then: Step,
}

impl Default for ScriptedExporter {
    /// A backend that accepts everything.
    fn default() -> Self {
        Self::always(Step::Succeed)
    }
}

impl ScriptedExporter {
    /// Does `script` call by call, then `then` on every later call.
    pub fn new(script: impl IntoIterator<Item = Step>, then: Step) -> Self {
        Self {
            shared: Arc::new(Shared {
                script: Mutex::new(Script {
                    next: script.into_iter().collect(),
                    then,
                }),
                calls: AtomicUsize::new(0),
                spans_received: AtomicUsize::new(0),
                hold: AtomicBool::new(false),
                release: Notify::new(),
                shutdown_hangs: AtomicBool::new(false),
                latency: Mutex::new(Duration::ZERO),
                blocking: Mutex::new(false),
                unblocked: Condvar::new(),
                blocked: AtomicUsize::new(0),
            }),
        }
    }

    /// Does `step` on every call.
    pub fn always(step: Step) -> Self {
        Self::new([], step)
    }

    /// Drops what is left of the script: every later call does `step`.
    pub fn set(&self, step: Step) {
        let mut script = self.script();
        script.next.clear();
        script.then = step;
    }

    /// Export calls so far, held and hanging ones included.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Spans in the batches this exporter accepted (log records, or metric
    /// data points, when it serves as a log or metric exporter).
    pub fn spans_received(&self) -> usize {
        self.shared.spans_received.load(Ordering::SeqCst)
    }

    /// From now on each export waits for [`release`](Self::release) before
    /// doing its step.
    pub fn hold(&self) {
        self.shared.hold.store(true, Ordering::SeqCst);
    }

    /// Stops holding and lets one held export (or, if none waits yet, the
    /// next one to arrive) go on to its step.
    pub fn release(&self) {
        self.shared.hold.store(false, Ordering::SeqCst);
        self.shared.release.notify_one();
    }

    /// Makes `shutdown_with_timeout` block its thread for an hour, as an
    /// exporter stuck flushing to a dead backend.
    pub fn hang_on_shutdown(&self) {
        self.shared.shutdown_hangs.store(true, Ordering::SeqCst);
    }

    /// Makes every later export wait `latency` on Tokio's clock before its
    /// step (virtual time under `tokio::time::pause`): a slow backend. The
    /// export must then be polled where Tokio's timers work.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// From now on each export blocks the thread that polls it, without
    /// yielding, until [`unblock_threads`](Self::unblock_threads): an
    /// exporter stuck in a blocking call.
    pub fn block_threads(&self) {
        *lock(&self.shared.blocking) = true;
    }

    /// Lets every blocked export go on to its step, and stops blocking.
    pub fn unblock_threads(&self) {
        *lock(&self.shared.blocking) = false;
        self.shared.unblocked.notify_all();
    }

    /// Exports blocking their thread now ([`block_threads`](Self::block_threads)).
    pub fn blocked_threads(&self) -> usize {
        self.shared.blocked.load(Ordering::SeqCst)
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        // A panicking step poisons nothing we cannot go on with.
        lock(&self.shared.script)
    }

    /// Plays the next step on a batch of `items` items.
    async fn play(&self, items: usize) -> ExportReport {
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        if self.shared.hold.load(Ordering::SeqCst) {
            self.shared.release.notified().await;
        }
        let latency = *lock(&self.shared.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        {
            let mut blocking = lock(&self.shared.blocking);
            if *blocking {
                self.shared.blocked.fetch_add(1, Ordering::SeqCst);
                while *blocking {
                    blocking = self
                        .shared
                        .unblocked
                        .wait(blocking)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                self.shared.blocked.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let step = {
            let mut script = self.script();
            let then = script.then;
            script.next.pop_front().unwrap_or(then)
        };
        let failed = |cause, retryable, retry_after, message: &str| {
            ExportReport::Failed(ExportFailure {
                cause,
                retryable,
                retry_after,
                message: message.to_owned(),
            })
        };
        match step {
            Step::Succeed | Step::PartialSuccess(_) => {
                let rejected = match step {
                    Step::PartialSuccess(n) => n.min(items as u64),
                    _ => 0,
                };
                self.shared
                    .spans_received
                    .fetch_add(items, Ordering::SeqCst);
                ExportReport::Exported {
                    rejected,
                    message: (rejected > 0).then(|| "scripted partial success".to_owned()),
                }
            }
            Step::Fail => failed(
                FailureCause::Internal,
                true,
                None,
                "scripted backend unavailable",
            ),
            Step::Invalid => failed(FailureCause::Invalid, false, None, "scripted invalid data"),
            Step::Unauthenticated => failed(
                FailureCause::Unauthenticated,
                false,
                None,
                "scripted expired token",
            ),
            Step::Throttle(wait) => failed(
                FailureCause::Throttled,
                true,
                Some(wait),
                "scripted throttle",
            ),
            Step::Panic => panic!("scripted exporter panic"),
            Step::Hang => std::future::pending().await,
        }
    }
}

/// A lock whose data a panicking step leaves usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The SDK's answer for a report: what a plain exporter would return.
fn sdk_result(report: ExportReport) -> OTelSdkResult {
    match report {
        ExportReport::Exported { .. } => Ok(()),
        ExportReport::Failed(failure) => Err(OTelSdkError::InternalFailure(failure.to_string())),
    }
}

impl SpanExporter for ScriptedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match ReportingSpanExporter::report(self, batch).await {
            ExportReport::Exported { .. } => Ok(()),
            ExportReport::Failed(failure) => {
                Err(OTelSdkError::InternalFailure(failure.to_string()))
            }
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shared.shutdown_hangs.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Ok(())
    }
}

/// As a backend that says what it did: the steps that only fail report
/// [`FailureCause::Internal`], as a plain SDK exporter would.
impl ReportingSpanExporter for ScriptedExporter {
    async fn report(&self, batch: Vec<SpanData>) -> ExportReport {
        self.play(batch.len()).await
    }
}

impl LogExporter for ScriptedExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        sdk_result(ReportingLogExporter::report(self, batch).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        SpanExporter::shutdown_with_timeout(self, timeout)
    }
}

/// As the span exporter, per batch of log records.
impl ReportingLogExporter for ScriptedExporter {
    async fn report(&self, batch: LogBatch<'_>) -> ExportReport {
        self.play(batch.iter().count()).await
    }
}

impl PushMetricExporter for ScriptedExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        sdk_result(ReportingMetricExporter::report(self, metrics).await)
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        SpanExporter::shutdown_with_timeout(self, timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// As the span exporter, per metrics export; its items are data points.
impl ReportingMetricExporter for ScriptedExporter {
    async fn report(&self, metrics: &ResourceMetrics) -> ExportReport {
        let points = metrics
            .scope_metrics()
            .flat_map(|scope| scope.metrics())
            .map(|metric| data_points(metric.data()))
            .sum();
        self.play(points).await
    }
}

fn data_points(data: &opentelemetry_sdk::metrics::data::AggregatedMetrics) -> usize {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    fn of<T>(data: &MetricData<T>) -> usize {
        match data {
            MetricData::Gauge(gauge) => gauge.data_points().count(),
            MetricData::Sum(sum) => sum.data_points().count(),
            MetricData::Histogram(histogram) => histogram.data_points().count(),
            MetricData::ExponentialHistogram(histogram) => histogram.data_points().count(),
        }
    }
    match data {
        AggregatedMetrics::F64(data) => of(data),
        AggregatedMetrics::U64(data) => of(data),
        AggregatedMetrics::I64(data) => of(data),
    }
}

/// `n` finished spans, each the SDK's own
/// `opentelemetry_sdk::testing::trace::new_test_export_span_data()`.
pub fn spans(n: usize) -> Vec<SpanData> {
    (0..n).map(|_| new_test_export_span_data()).collect()
}

/// The protobuf bytes of the OTLP trace export request that
/// [`OtlpSpanExporter`](crate::OtlpSpanExporter) sends for `batch` from a process with
/// `resource` (before any gzip), encoded straight from the spans: what
/// `tests/benches/span_path.rs` measures against `opentelemetry-proto`'s transform and
/// prost, and what they encode to, byte for byte.
pub fn otlp_trace_request(batch: Vec<SpanData>, resource: &Resource) -> Vec<u8> {
    use prost::Message as _;
    crate::otlp::encode::SpanBatch::new(&batch, resource).encode_to_vec()
}

/// Owned log records with their scopes, to lend out as a [`LogBatch`]:
/// `exporter.export(LogBatch::new(&records.batch()))`.
#[derive(Debug, Clone)]
pub struct LogRecords(Vec<(SdkLogRecord, InstrumentationScope)>);

impl LogRecords {
    /// The records as the slice a [`LogBatch`] borrows.
    pub fn batch(&self) -> Vec<(&SdkLogRecord, &InstrumentationScope)> {
        self.0
            .iter()
            .map(|(record, scope)| (record, scope))
            .collect()
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `n` log records like those the `tracing` bridge makes of a server's
/// request line: a target, an INFO severity, timestamps, an owned message
/// body and four attributes (two of them owned strings, a 100-byte user
/// agent among them), each with the bridge's instrumentation scope.
pub fn log_records(n: usize) -> LogRecords {
    let provider = SdkLoggerProvider::builder().build();
    let scope = InstrumentationScope::builder("opentelemetry-appender-tracing")
        .with_version("0.33.0")
        .build();
    let logger = provider.logger_with_scope(scope.clone());
    let records = (0..n)
        .map(|i| {
            let mut record = logger.create_log_record();
            let now = SystemTime::now();
            record.set_target("taskman_server::api");
            record.set_event_name("request");
            record.set_severity_number(Severity::Info);
            record.set_severity_text("INFO");
            record.set_timestamp(now);
            record.set_observed_timestamp(now);
            record.set_body(AnyValue::from(format!("request {i} served in 3 ms")));
            record.add_attribute("http.route", "/tasks/{id}");
            record.add_attribute("http.response.status_code", 200_i64);
            record.add_attribute("task.id", format!("task-{i:08}"));
            record.add_attribute("user_agent.original", "x".repeat(100));
            (record, scope.clone())
        })
        .collect();
    LogRecords(records)
}

/// Metrics as a `PeriodicReader` would hand them to its exporter, with
/// exactly `points` data points (one counter, one attribute set per point),
/// collected by a real meter provider into the SDK's in-memory exporter.
///
/// # Panics
///
/// If the SDK does not collect them: a broken test setup, not an input.
pub fn metric_points(points: usize) -> ResourceMetrics {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let counter = provider.meter("test").u64_counter("requests").build();
    for i in 0..points {
        counter.add(1, &[KeyValue::new("task", i as i64)]);
    }
    #[allow(clippy::expect_used)]
    {
        provider.force_flush().expect("the SDK collects");
        let _ = provider.shutdown();
        exporter
            .get_finished_metrics()
            .expect("the in-memory exporter answers")
            .pop()
            .expect("one collection")
    }
}
