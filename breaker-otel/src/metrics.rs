//! The circuit-breaking metric exporter: a driver that owns the inner
//! [`PushMetricExporter`] and runs each export, in place, through a
//! [`BackendBreaker`] that it may share with the other signals' exporters.
//! Behind it, a `PeriodicReader` whose export hangs goes on exporting.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    Metric, ResourceMetrics as TonicResourceMetrics, ScopeMetrics as TonicScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource as TonicResource;

use crate::OtlpMetricExporter;
use crate::backend::{EmptyProbe, ProbeParts, Seat, on_blocking_thread};
use crate::classify::unclassified;
use crate::{
    AdapterError, BackendBreaker, BackendControl, BackendHandle, ExportReport, ExporterConfig,
    Signal, Unclassified, bounded,
};

/// A metric exporter that says what the backend answered, not only whether
/// the export failed (see [`ReportingSpanExporter`](crate::ReportingSpanExporter)
/// for why the breaker wants to know). Any SDK metric exporter becomes one
/// with [`Unclassified`], which is what [`CircuitBreakerMetricExporter::new`] does.
pub trait ReportingMetricExporter: PushMetricExporter {
    /// Exports `metrics` and reports the backend's answer; a partial success
    /// reports the data points rejected. The breaker bounds it by
    /// `export_timeout` and contains a panic.
    fn report(&self, metrics: &ResourceMetrics) -> impl Future<Output = ExportReport> + Send;
}

impl<E: PushMetricExporter> PushMetricExporter for Unclassified<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.0.export(metrics).await
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.0.temporality()
    }
}

impl<E: PushMetricExporter> ReportingMetricExporter for Unclassified<E> {
    async fn report(&self, metrics: &ResourceMetrics) -> ExportReport {
        unclassified(self.0.export(metrics).await)
    }
}

/// Wraps any push metric exporter with a circuit breaker, alone or shared
/// with the other signals sent to the same backend ([`BackendBreaker`]).
///
/// What it guarantees is what [`CircuitBreakerLogExporter`](crate::CircuitBreakerLogExporter)
/// guarantees, counted in metric data points: a rejected export is dropped
/// at once, a panic is contained and counted as `panic`, an inner export
/// that waits is cut off at `export_timeout` and counted as `timeout`. The
/// metrics are borrowed (and `ResourceMetrics` can be neither cloned nor
/// built outside the SDK), so the inner export is polled in place, on the
/// `PeriodicReader`'s thread, raced against a deadline task.
///
/// That is what keeps a hung backend from stopping the metrics for good:
/// the SDK's `PeriodicReader` "does not enforce a timeout for exports" and,
/// if one never returns, "will stop exporting new metrics". Behind this
/// exporter the hung export ends at `export_timeout`, the reader goes on,
/// and once the backend answers again, metrics flow again. An inner export
/// that blocks its thread inside `export` still holds the reader until it
/// returns (docs/signals.md).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use breaker_otel::{CircuitBreakerMetricExporter, ExporterConfig};
/// use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
///
/// let exporter = CircuitBreakerMetricExporter::new(InMemoryMetricExporter::default(), ExporterConfig::DEFAULT)?;
/// let health = exporter.handle();
/// let provider = SdkMeterProvider::builder()
///     .with_reader(PeriodicReader::builder(exporter).build())
///     .build();
/// # drop((health, provider)); Ok(()) }
/// ```
pub struct CircuitBreakerMetricExporter<E> {
    seat: Seat<E>,
}

impl<E> fmt::Debug for CircuitBreakerMetricExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerMetricExporter")
            .field("backend", &self.seat)
            .finish_non_exhaustive()
    }
}

impl<M: PushMetricExporter> CircuitBreakerMetricExporter<Unclassified<M>> {
    /// Wraps any SDK metric exporter with a breaker of its own, on the
    /// current Tokio runtime. Its results say only success or failure
    /// ([`Unclassified`]).
    ///
    /// # Errors
    ///
    /// [`AdapterError::NoRuntime`] outside a Tokio runtime;
    /// [`AdapterError::ZeroExportTimeout`] for a zero `export_timeout`.
    pub fn new(inner: M, config: ExporterConfig) -> Result<Self, AdapterError> {
        Ok(BackendBreaker::new(config)?.metric_exporter(inner))
    }
}

impl<E: ReportingMetricExporter> CircuitBreakerMetricExporter<E> {
    /// Wraps an exporter that reports what the backend answered, with a
    /// breaker of its own on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`new`](CircuitBreakerMetricExporter::new).
    pub fn reporting(inner: E, config: ExporterConfig) -> Result<Self, AdapterError> {
        Ok(BackendBreaker::new(config)?.reporting_metric_exporter(inner))
    }

    fn on(backend: &BackendBreaker, inner: E) -> Self {
        Self {
            seat: Seat::new(backend, Signal::Metrics, inner),
        }
    }

    /// A read-only handle on the breaker (shared, if it is).
    #[must_use]
    pub fn handle(&self) -> BackendHandle {
        self.seat.handle()
    }

    /// Manual control over the breaker (shared, if it is).
    #[must_use]
    pub fn control(&self) -> BackendControl {
        self.seat.control()
    }

    fn register_probe(&self) {
        self.seat
            .register_probe(|seat| Arc::new(MetricProbe { seat }));
    }
}

impl BackendBreaker {
    /// A metric exporter on this breaker for any SDK push metric exporter,
    /// whose results say only success or failure ([`Unclassified`]).
    pub fn metric_exporter<M: PushMetricExporter>(
        &self,
        inner: M,
    ) -> CircuitBreakerMetricExporter<Unclassified<M>> {
        CircuitBreakerMetricExporter::on(self, Unclassified(inner))
    }

    /// A metric exporter on this breaker for an exporter that reports what
    /// the backend answered.
    pub fn reporting_metric_exporter<E: ReportingMetricExporter>(
        &self,
        inner: E,
    ) -> CircuitBreakerMetricExporter<E> {
        CircuitBreakerMetricExporter::on(self, inner)
    }
}

/// The metric exporter's empty export, as the breaker's probe.
struct MetricProbe<E> {
    seat: ProbeParts<E>,
}

impl<E: ReportingMetricExporter> EmptyProbe for MetricProbe<E> {
    fn signal(&self) -> Signal {
        Signal::Metrics
    }

    fn is_shut_down(&self) -> bool {
        self.seat.is_shut_down()
    }

    fn probe(self: Arc<Self>) -> BoxFuture<'static, ExportReport> {
        let runtime = self.seat.backend.runtime.clone();
        on_blocking_thread(&runtime, move || {
            let nothing = ResourceMetrics::default();
            futures_executor::block_on(bounded::in_place(
                || self.seat.inner.report(&nothing),
                &self.seat.backend.runtime,
                self.seat.backend.export_timeout,
                "metric",
            ))
        })
    }
}

/// How many data points `metrics` holds: what the metric exporter counts,
/// as the semantic conventions' `otel.sdk.exporter.metric_data_point.*` do.
fn data_points(metrics: &ResourceMetrics) -> u64 {
    fn of<T>(data: &MetricData<T>) -> usize {
        match data {
            MetricData::Gauge(gauge) => gauge.data_points().count(),
            MetricData::Sum(sum) => sum.data_points().count(),
            MetricData::Histogram(histogram) => histogram.data_points().count(),
            MetricData::ExponentialHistogram(histogram) => histogram.data_points().count(),
        }
    }
    metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .map(|metric| match metric.data() {
            AggregatedMetrics::F64(data) => of(data),
            AggregatedMetrics::U64(data) => of(data),
            AggregatedMetrics::I64(data) => of(data),
        } as u64)
        .sum()
}

impl<E: ReportingMetricExporter> PushMetricExporter for CircuitBreakerMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        if self.seat.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.register_probe();
        let points = data_points(metrics);
        let permit = self.seat.backend.admit(Signal::Metrics, points)?;
        let inner = &self.seat.inner;
        let report = bounded::in_place(
            || inner.report(metrics),
            &self.seat.backend.runtime,
            self.seat.backend.export_timeout,
            "metric",
        )
        .await;
        self.seat
            .backend
            .conclude(Signal::Metrics, points, permit, &report);
        bounded::sdk_result(&report, self.seat.backend.export_timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.seat.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let inner = Arc::clone(&self.seat.inner);
        bounded::on_thread(self.seat.backend.export_timeout, "metric", move || {
            inner.force_flush()
        })
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if !self.seat.mark_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let inner = Arc::clone(&self.seat.inner);
        bounded::on_thread(timeout, "metric", move || {
            inner.shutdown_with_timeout(timeout)
        })
    }

    fn temporality(&self) -> Temporality {
        // Asked once, while the reader is built: a panic would take the
        // meter provider's construction with it.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.seat.inner.temporality()))
            .unwrap_or_default()
    }
}

/// Pushes metrics that are OTLP messages already (a Prometheus registry's, converted)
/// through a pipeline's metric breaker, with the pipeline's resource: what a service does
/// when its instruments live outside the OpenTelemetry SDK and must not be defined twice
/// ([`TracingPipeline::metric_push`](crate::TracingPipeline::metric_push)).
///
/// Each push is one export: admitted or dropped by the breaker, bounded by its
/// `export_timeout`, counted in data points under [`Signal::Metrics`] and classified like
/// every other export. Cloning shares the exporter.
#[derive(Clone)]
pub struct MetricPush {
    exporter: Arc<CircuitBreakerMetricExporter<OtlpMetricExporter>>,
    resource: TonicResource,
    scope: InstrumentationScope,
    interval: Duration,
}

impl fmt::Debug for MetricPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricPush")
            .field("exporter", &self.exporter)
            .field("scope", &self.scope.name)
            .finish_non_exhaustive()
    }
}

impl MetricPush {
    /// Pushes through `exporter`, as `scope`, with `resource`.
    pub(crate) fn new(
        exporter: CircuitBreakerMetricExporter<OtlpMetricExporter>,
        resource: &Resource,
        scope: &str,
        interval: Duration,
    ) -> Self {
        Self {
            exporter: Arc::new(exporter),
            resource: resource.into(),
            scope: InstrumentationScope {
                name: scope.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..InstrumentationScope::default()
            },
            interval,
        }
    }

    /// How often to push: `OTEL_METRIC_EXPORT_INTERVAL` (60 s by default).
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Exports `metrics` as one request.
    ///
    /// # Errors
    ///
    /// As a metric export through the breaker: dropped while the circuit is open, a
    /// timeout at `export_timeout`, or the backend's refusal; after shutdown,
    /// `AlreadyShutdown`. Each is counted; none needs more than logging at debug.
    pub async fn push(&self, metrics: Vec<Metric>) -> OTelSdkResult {
        let exporter = &self.exporter;
        if exporter.seat.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        exporter.register_probe();
        let points = metrics.iter().map(proto_data_points).sum::<u64>();
        let permit = exporter.seat.backend.admit(Signal::Metrics, points)?;
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![TonicResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![TonicScopeMetrics {
                    scope: Some(self.scope.clone()),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let inner = &exporter.seat.inner;
        let report = bounded::in_place(
            || inner.send_request(request),
            &exporter.seat.backend.runtime,
            exporter.seat.backend.export_timeout,
            "metric",
        )
        .await;
        exporter
            .seat
            .backend
            .conclude(Signal::Metrics, points, permit, &report);
        bounded::sdk_result(&report, exporter.seat.backend.export_timeout)
    }

    /// Stops pushing: later pushes fail with `AlreadyShutdown`.
    ///
    /// # Errors
    ///
    /// `AlreadyShutdown` the second time.
    pub fn shutdown(&self) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(Duration::from_secs(1))
    }

    /// A read-only handle on the breaker the pushes go through.
    #[must_use]
    pub fn handle(&self) -> BackendHandle {
        self.exporter.handle()
    }
}

/// The data points of one OTLP metric.
fn proto_data_points(metric: &Metric) -> u64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    (match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }) as u64
}
