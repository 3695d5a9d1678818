//! The circuit-breaking span exporter: it owns the inner exporter and runs
//! each export as a bounded task through a [`BackendBreaker`], its own or one
//! it shares with the other signals' exporters, which owns the breaker, the
//! clock, the lock and the idle prober.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use breaker_core::BreakerConfig;
use futures_util::future::{BoxFuture, Either, select};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::Handle;

use crate::backend::{EmptyProbe, ProbeParts, Seat};
use crate::bounded;
use crate::classify::unclassified;
use crate::handle::BreakerHandle;
use crate::{
    BackendBreaker, BackendControl, BackendHandle, ExportFailure, ExportReport, FailureCause,
    Signal,
};

/// Where the adapter reads the time. The default follows Tokio's clock, so a
/// test on paused Tokio time drives the breaker and the export timeout
/// together.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current monotonic time.
    fn now(&self) -> Instant;
}

/// Tokio's clock: real time, or virtual time under `tokio::time::pause`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

breaker_core::settings! {
    /// Settings of [`CircuitBreakerSpanExporter`]: the breaker's own
    /// ([`BreakerConfig`], embedded, not copied) and the export deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_otel::ExporterConfig;
    ///
    /// let config = ExporterConfig::DEFAULT.export_timeout(Duration::from_secs(2));
    /// assert_eq!(config.breaker.failure_threshold.get(), 3);
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ExporterConfig {
        /// The state machine's settings.
        breaker: nested BreakerConfig = BreakerConfig::DEFAULT,
        /// The longest one export may take, whatever the inner exporter does; then it counts as failed.
        export_timeout: duration Duration = Duration::from_secs(10),
        /// While the circuit stays open, at most one "still open" summary is logged per this long.
        ///
        /// The outage's start (warn) and end (info) are always logged; what
        /// happens in between (failed probes, half-open flips) is at debug.
        /// Zero turns the summary off.
        log_interval: duration Duration = Duration::from_secs(300),
        /// While open, probe with an export of no spans when a probe is due and no batch came to be one, so that a quiet service recovers without waiting for traffic.
        ///
        /// The empty probe starts as soon as the time floor allows
        /// (`min_probe_interval`, backing off to `probe_after`); batches
        /// still probe by the count rule when they get there first. Off:
        /// only batches probe. Also off while `min_probe_interval` is zero,
        /// since nothing would then pace probes against a dead backend.
        idle_probes: flag bool = true,
    }
}

/// A span exporter that says what the backend answered, not only whether
/// the export failed: what the breaker needs to tell an outage from a
/// refused token, a throttle or refused data (docs/contract.md, section 4).
///
/// [`OtlpSpanExporter`](crate::OtlpSpanExporter) is one. Any other SDK
/// exporter becomes one with [`Unclassified`], which is what
/// [`CircuitBreakerSpanExporter::new`] does.
pub trait ReportingSpanExporter: SpanExporter {
    /// Exports `batch` and reports the backend's answer. The adapter bounds
    /// it by `export_timeout` and contains a panic.
    fn report(&self, batch: Vec<SpanData>) -> impl Future<Output = ExportReport> + Send;
}

/// Any SDK span exporter as a [`ReportingSpanExporter`] that knows only what
/// its `Result` says: `Ok` is exported, a timeout is
/// [`FailureCause::Timeout`], any other error [`FailureCause::Internal`],
/// and every error counts toward opening, since nothing says the backend is up.
#[derive(Debug, Clone)]
pub struct Unclassified<E>(pub E);

impl<E: SpanExporter> SpanExporter for Unclassified<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

impl<E: SpanExporter> ReportingSpanExporter for Unclassified<E> {
    async fn report(&self, batch: Vec<SpanData>) -> ExportReport {
        unclassified(self.0.export(batch).await)
    }
}

/// Why the adapter could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// No Tokio runtime to run exports on.
    #[error(
        "the circuit-breaking exporter needs a Tokio runtime: build it inside one or pass a runtime handle"
    )]
    NoRuntime,
    /// `export_timeout` was zero.
    #[error("export_timeout must be longer than zero")]
    ZeroExportTimeout,
}

/// Wraps any span exporter with a circuit breaker.
///
/// A permitted batch goes to the inner exporter and its outcome is reported
/// to the breaker; a rejected batch is dropped at once (never queued, never
/// retried) and `export` returns an error. `export` never panics and never
/// takes longer than `export_timeout`: the inner export runs as a task on a
/// Tokio runtime, its panic is caught and its hang is cut off, both counted
/// as failures.
///
/// What the backend answered decides what the breaker learns
/// ([`ReportingSpanExporter`]): with [`OtlpSpanExporter`](crate::OtlpSpanExporter)
/// (built with [`reporting`](Self::reporting)) a refused token, a throttle
/// (`RetryInfo`, `Retry-After`: nothing is sent until it ends, probes
/// included), refused data and a partial success each count as what they
/// are; any other exporter (built with [`new`](Self::new)) says only
/// success or failure.
///
/// # Probes without traffic
///
/// With `idle_probes` on (the default), the breaker's idle prober, started
/// by the first export, sleeps until the breaker's next probe is due
/// ([`breaker_core::CircuitBreaker::next_probe_at`]) or its probe times out, and then, if
/// no batch has taken the probe slot meanwhile, exports an empty batch as
/// the probe: an empty OTLP request is valid and carries nothing to lose.
/// It is bounded, contained and recorded like a batch's probe, and logged
/// the same way. A batch that arrives while it is in flight is dropped, as
/// during any probe; what this can cost is the one batch that would itself
/// have been the probe, and only when it comes within the empty export's
/// round trip (docs/contract.md, section 3). The prober holds the exporter
/// weakly and stops probing through it at shutdown or drop.
///
/// # One breaker per backend
///
/// [`new`](Self::new) and [`reporting`](Self::reporting) give the exporter a
/// breaker of its own. [`BackendBreaker::span_exporter`] and
/// [`BackendBreaker::reporting_span_exporter`] put it on a breaker shared with
/// the log and metric exporters of the same backend, which then detects,
/// probes and reports an outage once for all of them (docs/signals.md).
/// Either way [`handle`](Self::handle) describes the span path alone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use breaker_otel::{ExporterConfig, CircuitBreakerSpanExporter};
/// use opentelemetry_sdk::trace::SdkTracerProvider;
///
/// let otlp = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
/// let exporter = CircuitBreakerSpanExporter::new(otlp, ExporterConfig::default())?;
/// let health = exporter.handle(); // read it from health checks and metrics
/// let provider = SdkTracerProvider::builder()
///     .with_batch_exporter(exporter)
///     .build();
/// # drop((health, provider)); Ok(()) }
/// ```
pub struct CircuitBreakerSpanExporter<E> {
    seat: Seat<E>,
}

impl<E> fmt::Debug for CircuitBreakerSpanExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerSpanExporter")
            .field("backend", &self.seat)
            .finish_non_exhaustive()
    }
}

/// Manual control over the breaker of one span exporter, for operators and
/// tests: separate from [`BreakerHandle`] so that read-only users cannot
/// change anything. On a shared breaker it controls every signal's exports.
#[derive(Debug, Clone)]
pub struct BreakerControl {
    backend: BackendControl,
}

impl BreakerControl {
    /// Holds the circuit open: every batch is dropped, nothing probes.
    pub fn force_open(&self) {
        self.backend.force_open();
    }

    /// Holds the circuit closed: every batch is exported, failures never open it.
    pub fn force_closed(&self) {
        self.backend.force_closed();
    }

    /// Back to automatic, closed, with no failures counted.
    pub fn reset(&self) {
        self.backend.reset();
    }
}

impl<S: SpanExporter + 'static> CircuitBreakerSpanExporter<Unclassified<S>> {
    /// Wraps any SDK span exporter with a breaker of its own, running
    /// exports on the current Tokio runtime and reading Tokio's clock. Its
    /// results say only success or failure ([`Unclassified`]); for an
    /// exporter that says more, use [`reporting`](CircuitBreakerSpanExporter::reporting).
    ///
    /// # Errors
    ///
    /// [`AdapterError::NoRuntime`] outside a Tokio runtime;
    /// [`AdapterError::ZeroExportTimeout`] for a zero `export_timeout`.
    pub fn new(inner: S, config: ExporterConfig) -> Result<Self, AdapterError> {
        CircuitBreakerSpanExporter::reporting(Unclassified(inner), config)
    }

    /// As [`new`](Self::new), with an explicit runtime for exports and clock
    /// for the breaker (the seam tests use for virtual time).
    ///
    /// # Errors
    ///
    /// [`AdapterError::ZeroExportTimeout`] for a zero `export_timeout`.
    pub fn with_runtime(
        inner: S,
        config: ExporterConfig,
        runtime: Handle,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AdapterError> {
        CircuitBreakerSpanExporter::reporting_with_runtime(
            Unclassified(inner),
            config,
            runtime,
            clock,
        )
    }
}

impl<E: ReportingSpanExporter + 'static> CircuitBreakerSpanExporter<E> {
    /// Wraps an exporter that reports what the backend answered, with a
    /// breaker of its own, running exports on the current Tokio runtime and
    /// reading Tokio's clock.
    ///
    /// # Errors
    ///
    /// [`AdapterError::NoRuntime`] outside a Tokio runtime;
    /// [`AdapterError::ZeroExportTimeout`] for a zero `export_timeout`.
    pub fn reporting(inner: E, config: ExporterConfig) -> Result<Self, AdapterError> {
        Ok(BackendBreaker::new(config)?.reporting_span_exporter(inner))
    }

    /// As [`reporting`](Self::reporting), with an explicit runtime and clock.
    ///
    /// # Errors
    ///
    /// [`AdapterError::ZeroExportTimeout`] for a zero `export_timeout`.
    pub fn reporting_with_runtime(
        inner: E,
        config: ExporterConfig,
        runtime: Handle,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AdapterError> {
        Ok(BackendBreaker::builder(config)
            .runtime(runtime, clock)
            .build()?
            .reporting_span_exporter(inner))
    }

    fn on(backend: &BackendBreaker, inner: E) -> Self {
        Self {
            seat: Seat::new(backend, Signal::Traces, inner),
        }
    }

    /// A read-only handle for health checks and metrics: the span path's
    /// counts and the breaker's state.
    #[must_use]
    pub fn handle(&self) -> BreakerHandle {
        self.seat.backend.view(Signal::Traces)
    }

    /// A read-only handle on the whole breaker, with every signal it serves.
    #[must_use]
    pub fn backend_handle(&self) -> BackendHandle {
        self.seat.handle()
    }

    /// Manual control over the breaker (shared, if it is).
    #[must_use]
    pub fn control(&self) -> BreakerControl {
        BreakerControl {
            backend: self.seat.control(),
        }
    }

    fn register_probe(&self) {
        self.seat
            .register_probe(|seat| Arc::new(SpanProbe { seat }));
    }
}

impl BackendBreaker {
    /// A span exporter on this breaker for any SDK span exporter, whose
    /// results say only success or failure ([`Unclassified`]).
    pub fn span_exporter<S: SpanExporter + 'static>(
        &self,
        inner: S,
    ) -> CircuitBreakerSpanExporter<Unclassified<S>> {
        CircuitBreakerSpanExporter::on(self, Unclassified(inner))
    }

    /// A span exporter on this breaker for an exporter that reports what the
    /// backend answered.
    pub fn reporting_span_exporter<E: ReportingSpanExporter + 'static>(
        &self,
        inner: E,
    ) -> CircuitBreakerSpanExporter<E> {
        CircuitBreakerSpanExporter::on(self, inner)
    }
}

/// The span exporter's empty export, as the breaker's probe. The batch is
/// owned, so the probe runs as a task like any export, awaited directly.
struct SpanProbe<E> {
    seat: ProbeParts<E>,
}

impl<E: ReportingSpanExporter + 'static> EmptyProbe for SpanProbe<E> {
    fn signal(&self) -> Signal {
        Signal::Traces
    }

    fn is_shut_down(&self) -> bool {
        self.seat.is_shut_down()
    }

    fn probe(self: Arc<Self>) -> BoxFuture<'static, ExportReport> {
        Box::pin(async move {
            export_bounded(
                Arc::clone(&self.seat.inner),
                &self.seat.backend.runtime,
                self.seat.backend.export_timeout,
                Vec::new(),
            )
            .await
        })
    }
}

/// Runs the inner export as a task on `runtime`, bounded by `timeout`, and
/// turns a panic or a hang into a failure.
async fn export_bounded<E: ReportingSpanExporter + 'static>(
    inner: Arc<E>,
    runtime: &Handle,
    timeout: Duration,
    batch: Vec<SpanData>,
) -> ExportReport {
    let export = runtime.spawn(async move { inner.report(batch).await });
    // The deadline is its own task so that it fires even if the export
    // task never yields.
    // Created inside the task: the caller may be a thread outside the
    // runtime (the SDK's batch processor), where no timer can be made.
    let deadline = runtime.spawn(async move { tokio::time::sleep(timeout).await });
    let failed = |cause, message: String| {
        ExportReport::Failed(ExportFailure {
            cause,
            retryable: true,
            retry_after: None,
            message,
        })
    };
    match select(export, deadline).await {
        Either::Left((joined, deadline)) => {
            deadline.abort();
            match joined {
                Ok(report) => report,
                Err(join) if join.is_panic() => failed(
                    FailureCause::Panic,
                    "the inner span exporter panicked".into(),
                ),
                Err(_) => failed(
                    FailureCause::Internal,
                    "the export task was cancelled".into(),
                ),
            }
        }
        Either::Right((_, export)) => {
            export.abort();
            failed(
                FailureCause::Timeout,
                format!("no answer within export_timeout ({timeout:?})"),
            )
        }
    }
}

impl<E: ReportingSpanExporter + 'static> SpanExporter for CircuitBreakerSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.seat.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.register_probe();
        let spans = batch.len() as u64;
        let permit = self.seat.backend.admit(Signal::Traces, spans)?;
        let report = export_bounded(
            Arc::clone(&self.seat.inner),
            &self.seat.backend.runtime,
            self.seat.backend.export_timeout,
            batch,
        )
        .await;
        self.seat
            .backend
            .conclude(Signal::Traces, spans, permit, &report);
        bounded::sdk_result(&report, self.seat.backend.export_timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if !self.seat.mark_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let inner = Arc::clone(&self.seat.inner);
        bounded::on_thread(timeout, "span", move || {
            inner.shutdown_with_timeout(timeout)
        })
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.seat.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let inner = Arc::clone(&self.seat.inner);
        bounded::on_thread(self.seat.backend.export_timeout, "span", move || {
            inner.force_flush()
        })
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once while the provider is built, before any export holds
        // a clone of the inner exporter.
        match Arc::get_mut(&mut self.seat.inner) {
            Some(inner) => inner.set_resource(resource),
            None => {
                tracing::warn!("resource not passed to the inner span exporter: export in flight")
            }
        }
    }
}

/// A seed that differs between processes and between breakers built at
/// different moments, so that services failing together do not probe in
/// step. Not secret and not uniform: jitter needs neither.
pub(crate) fn jitter_seed() -> u64 {
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    wall ^ (u64::from(std::process::id()) << 32)
}
