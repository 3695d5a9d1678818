//! The circuit-breaking log exporter: a driver that owns the inner
//! [`LogExporter`] and runs each export, in place, through a
//! [`BackendBreaker`] that it may share with the other signals' exporters.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use opentelemetry::logs::Severity;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};

use crate::backend::{EmptyProbe, ProbeParts, Seat, on_blocking_thread};
use crate::classify::unclassified;
use crate::{
    AdapterError, BackendBreaker, BackendControl, BackendHandle, ExportReport, ExporterConfig,
    Signal, Unclassified, bounded,
};

/// A log exporter that says what the backend answered, not only whether the
/// export failed (see [`ReportingSpanExporter`](crate::ReportingSpanExporter)
/// for why the breaker wants to know). Any SDK log exporter becomes one with
/// [`Unclassified`], which is what [`CircuitBreakerLogExporter::new`] does.
pub trait ReportingLogExporter: LogExporter {
    /// Exports `batch` and reports the backend's answer; a partial success
    /// reports the log records rejected. The breaker bounds it by
    /// `export_timeout` and contains a panic.
    fn report(&self, batch: LogBatch<'_>) -> impl Future<Output = ExportReport> + Send;
}

impl<E: LogExporter> LogExporter for Unclassified<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.0.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn event_enabled(&self, level: Severity, target: &str, name: Option<&str>) -> bool {
        self.0.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

impl<E: LogExporter> ReportingLogExporter for Unclassified<E> {
    async fn report(&self, batch: LogBatch<'_>) -> ExportReport {
        unclassified(self.0.export(batch).await)
    }
}

/// Wraps any log exporter with a circuit breaker, alone or shared with the
/// other signals sent to the same backend ([`BackendBreaker`]).
///
/// A permitted batch goes to the inner exporter and its answer is reported
/// to the breaker, classified as the span exporter's are; a rejected batch
/// is dropped at once (never queued, never retried) and `export` returns an
/// error. `export` never panics: the inner exporter's panic is caught and
/// counted as a failure with cause `panic`. An inner export that waits
/// (returns `Pending`: a backend that never answers) is cut off at
/// `export_timeout` and counted as a `timeout`.
///
/// The batch is borrowed, so the inner export is polled in place, on the
/// thread that polls this one (the SDK's batch processor thread), and raced
/// against a deadline task: no log record is copied. An inner exporter that
/// blocks its thread inside `export` (a blocking HTTP client, a full pipe)
/// keeps it until it returns, as it would without the breaker; what
/// becomes of its answer then is what it says. docs/signals.md has the
/// whole story.
///
/// With `idle_probes` on, the breaker probes with an export of no log record
/// when a probe is due and no batch came to be one.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use breaker_otel::{CircuitBreakerLogExporter, ExporterConfig};
/// use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
///
/// let exporter = CircuitBreakerLogExporter::new(InMemoryLogExporter::default(), ExporterConfig::DEFAULT)?;
/// let health = exporter.handle();
/// let provider = SdkLoggerProvider::builder().with_batch_exporter(exporter).build();
/// # drop((health, provider)); Ok(()) }
/// ```
pub struct CircuitBreakerLogExporter<E> {
    seat: Seat<E>,
}

impl<E> fmt::Debug for CircuitBreakerLogExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLogExporter")
            .field("backend", &self.seat)
            .finish_non_exhaustive()
    }
}

impl<L: LogExporter + 'static> CircuitBreakerLogExporter<Unclassified<L>> {
    /// Wraps any SDK log exporter with a breaker of its own, on the current
    /// Tokio runtime. Its results say only success or failure
    /// ([`Unclassified`]).
    ///
    /// # Errors
    ///
    /// [`AdapterError::NoRuntime`] outside a Tokio runtime;
    /// [`AdapterError::ZeroExportTimeout`] for a zero `export_timeout`.
    pub fn new(inner: L, config: ExporterConfig) -> Result<Self, AdapterError> {
        Ok(BackendBreaker::new(config)?.log_exporter(inner))
    }
}

impl<E: ReportingLogExporter + 'static> CircuitBreakerLogExporter<E> {
    /// Wraps an exporter that reports what the backend answered, with a
    /// breaker of its own on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`new`](CircuitBreakerLogExporter::new).
    pub fn reporting(inner: E, config: ExporterConfig) -> Result<Self, AdapterError> {
        Ok(BackendBreaker::new(config)?.reporting_log_exporter(inner))
    }

    fn on(backend: &BackendBreaker, inner: E) -> Self {
        Self {
            seat: Seat::new(backend, Signal::Logs, inner),
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
        self.seat.register_probe(|seat| Arc::new(LogProbe { seat }));
    }
}

impl BackendBreaker {
    /// A log exporter on this breaker for any SDK log exporter, whose
    /// results say only success or failure ([`Unclassified`]).
    pub fn log_exporter<L: LogExporter + 'static>(
        &self,
        inner: L,
    ) -> CircuitBreakerLogExporter<Unclassified<L>> {
        CircuitBreakerLogExporter::on(self, Unclassified(inner))
    }

    /// A log exporter on this breaker for an exporter that reports what the
    /// backend answered.
    pub fn reporting_log_exporter<E: ReportingLogExporter + 'static>(
        &self,
        inner: E,
    ) -> CircuitBreakerLogExporter<E> {
        CircuitBreakerLogExporter::on(self, inner)
    }
}

/// The log exporter's empty export, as the breaker's probe.
struct LogProbe<E> {
    seat: ProbeParts<E>,
}

impl<E: ReportingLogExporter + 'static> EmptyProbe for LogProbe<E> {
    fn signal(&self) -> Signal {
        Signal::Logs
    }

    fn is_shut_down(&self) -> bool {
        self.seat.is_shut_down()
    }

    fn probe(self: Arc<Self>) -> BoxFuture<'static, ExportReport> {
        let runtime = self.seat.backend.runtime.clone();
        on_blocking_thread(&runtime, move || {
            futures_executor::block_on(bounded::in_place(
                || self.seat.inner.report(LogBatch::new(&[])),
                &self.seat.backend.runtime,
                self.seat.backend.export_timeout,
                "log",
            ))
        })
    }
}

impl<E: ReportingLogExporter + 'static> LogExporter for CircuitBreakerLogExporter<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        if self.seat.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.register_probe();
        let records = batch.iter().count() as u64;
        let permit = self.seat.backend.admit(Signal::Logs, records)?;
        let inner = &self.seat.inner;
        let report = bounded::in_place(
            || inner.report(batch),
            &self.seat.backend.runtime,
            self.seat.backend.export_timeout,
            "log",
        )
        .await;
        self.seat
            .backend
            .conclude(Signal::Logs, records, permit, &report);
        bounded::sdk_result(&report, self.seat.backend.export_timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if !self.seat.mark_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let inner = Arc::clone(&self.seat.inner);
        bounded::on_thread(timeout, "log", move || inner.shutdown_with_timeout(timeout))
    }

    fn event_enabled(&self, level: Severity, target: &str, name: Option<&str>) -> bool {
        // Asked for every record: a panic here would reach the caller of
        // the log macro. Enabled is what the SDK assumes by default.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.seat.inner.event_enabled(level, target, name)
        }))
        .unwrap_or(true)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once while the provider is built, before any export holds
        // a reference to the inner exporter.
        match Arc::get_mut(&mut self.seat.inner) {
            Some(inner) => inner.set_resource(resource),
            None => {
                tracing::warn!("resource not passed to the inner log exporter: export in flight")
            }
        }
    }
}
