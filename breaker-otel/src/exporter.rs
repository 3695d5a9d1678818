//! The circuit-breaking span exporter: a driver around `breaker-core` that
//! owns the inner exporter, the clock and the lock, and a task that probes
//! the backend when a probe is due and no batch comes to be one.

use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use breaker_core::{
    BreakerConfig, CircuitBreaker, CircuitState, Outcome, Permit, Transition, TransitionReason,
};
use futures_util::future::{Either, select};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::bounded;
use crate::classify::{unclassified, verdict};
use crate::handle::{BreakerHandle, Published, SpanCounts};
use crate::{ExportFailure, ExportReport, FailureCause};

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
/// With `idle_probes` on (the default), a task on the same runtime, started
/// by the first export, sleeps until the breaker's next probe is due
/// ([`CircuitBreaker::next_probe_at`]) or its probe times out, and then, if
/// no batch has taken the probe slot meanwhile, exports an empty batch as
/// the probe: an empty OTLP request is valid and carries nothing to lose.
/// It is bounded, contained and recorded like a batch's probe, and logged
/// the same way. A batch that arrives while it is in flight is dropped, as
/// during any probe; what this can cost is the one batch that would itself
/// have been the probe, and only when it comes within the empty export's
/// round trip (docs/contract.md, section 3). The task holds the exporter
/// weakly and ends at shutdown or drop.
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
    inner: Arc<E>,
    shared: Arc<Shared>,
    runtime: Handle,
    export_timeout: Duration,
    is_shutdown: AtomicBool,
    idle_probes: bool,
    /// Starts the idle prober at the first export: by then the provider
    /// has passed its resource, which needs the only reference to `inner`.
    prober_started: Once,
}

impl<E> Drop for CircuitBreakerSpanExporter<E> {
    fn drop(&mut self) {
        self.shared.wake.stop();
    }
}

impl<E> fmt::Debug for CircuitBreakerSpanExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerSpanExporter")
            .field("state", &self.shared.handle().state())
            .field("export_timeout", &self.export_timeout)
            .finish_non_exhaustive()
    }
}

/// What the exporter, its handles and its controls share.
#[derive(Debug)]
struct Shared {
    core: Mutex<Core>,
    published: Arc<Published>,
    clock: Arc<dyn Clock>,
    origin: Instant,
    log_interval: Duration,
    wake: Arc<Wake>,
}

/// How the exporter reaches the idle prober: it is woken when the breaker's
/// next deadline moves, and told to stop at shutdown or drop.
#[derive(Debug, Default)]
struct Wake {
    notify: Notify,
    stopped: AtomicBool,
}

impl Wake {
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// What the idle prober waits for: the next probe, or the moment the probe
/// in flight is abandoned.
fn deadline(breaker: &CircuitBreaker) -> Option<Instant> {
    match (breaker.next_probe_at(), breaker.poll_timeout()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Debug)]
struct Core {
    breaker: CircuitBreaker,
    /// The outage going on, if the circuit is not closed.
    outage: Option<Outage>,
}

/// What the log says about an outage when it ends, counted from its start.
#[derive(Debug, Clone, Copy)]
struct Outage {
    started: Instant,
    probes: u64,
    spans: SpanCounts,
    /// When the last "still open" summary was logged (the start, if none).
    summarized: Instant,
}

/// A log line decided under the lock and written after it is released.
#[derive(Debug)]
enum Line {
    Opened {
        transition: Transition,
        cause: Option<String>,
        spans_failed: u64,
    },
    Closed {
        transition: Transition,
        lasted: Duration,
        probes: u64,
        spans: SpanCounts,
    },
    StillOpen {
        lasted: Duration,
        probes: u64,
        spans: SpanCounts,
    },
    Changed(Transition),
}

impl Shared {
    fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(&self.published))
    }

    /// How long after the exporter's creation it is now, the time base of
    /// the published values.
    fn elapsed(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // The lock guards plain data that every method leaves consistent, so
        // a panic elsewhere while it was held does not poison its meaning.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `step` on the breaker under the lock, then publishes the new
    /// state and logs what changed with the lock released. `cause` is why
    /// the call being recorded failed, for the line that says an outage began.
    fn drive<T>(
        &self,
        cause: Option<&str>,
        step: impl FnOnce(&mut CircuitBreaker, Instant) -> T,
    ) -> T {
        let now = self.clock.now();
        let mut transitions = Vec::new();
        let (result, lines) = {
            let mut core = self.lock();
            let before = deadline(&core.breaker);
            let result = step(&mut core.breaker, now);
            if deadline(&core.breaker) != before {
                // A permit is stored if the prober is busy: it looks again.
                self.wake.notify.notify_one();
            }
            while let Some(t) = core.breaker.poll_transition() {
                transitions.push(t);
            }
            let stats = core.breaker.stats();
            self.published.set_throttled_until(
                stats
                    .throttled_until
                    .map(|until| until.saturating_duration_since(self.origin)),
            );
            self.published
                .set_consecutive_failures(stats.consecutive_failures);
            self.published.set_state(
                stats.state,
                stats.since.saturating_duration_since(self.origin),
            );
            let lines = self.account(&mut core, &transitions, cause, now);
            (result, lines)
        };
        for t in &transitions {
            self.published.count_transition(t.from, t.to);
        }
        for line in lines {
            line.log();
        }
        result
    }

    /// Follows the outage through `transitions` and decides the log lines:
    /// one when it starts, one when it ends, a summary at most once per
    /// `log_interval` in between, and the rest at debug.
    fn account(
        &self,
        core: &mut Core,
        transitions: &[Transition],
        cause: Option<&str>,
        now: Instant,
    ) -> Vec<Line> {
        let mut lines = Vec::new();
        let spans = self.published.spans();
        let probes = self.published.probes();
        for &t in transitions {
            match (core.outage, t.to) {
                (None, CircuitState::Open | CircuitState::HalfOpen) => {
                    core.outage = Some(Outage {
                        started: t.at,
                        probes,
                        spans,
                        summarized: t.at,
                    });
                    lines.push(Line::Opened {
                        transition: t,
                        cause: cause.map(str::to_owned),
                        spans_failed: spans.failed,
                    });
                }
                (Some(outage), CircuitState::Closed) => {
                    core.outage = None;
                    lines.push(Line::Closed {
                        transition: t,
                        lasted: t.at.saturating_duration_since(outage.started),
                        probes: probes - outage.probes,
                        spans: since(spans, outage.spans),
                    });
                }
                _ => lines.push(Line::Changed(t)),
            }
        }
        if let Some(outage) = &mut core.outage
            && !self.log_interval.is_zero()
            && now.saturating_duration_since(outage.summarized) >= self.log_interval
        {
            outage.summarized = now;
            lines.push(Line::StillOpen {
                lasted: now.saturating_duration_since(outage.started),
                probes: probes - outage.probes,
                spans: since(spans, outage.spans),
            });
        }
        lines
    }
}

/// The counts between `start` and `now`.
fn since(now: SpanCounts, start: SpanCounts) -> SpanCounts {
    SpanCounts {
        exported: now.exported - start.exported,
        rejected: now.rejected - start.rejected,
        dropped: now.dropped - start.dropped,
        failed: now.failed - start.failed,
    }
}

impl Line {
    fn log(self) {
        match self {
            Self::Opened {
                transition: t,
                cause,
                spans_failed,
            } => tracing::warn!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = t.reason.as_str(),
                cause = cause.as_deref().unwrap_or(match t.reason {
                    TransitionReason::ForcedOpen => "forced open by an operator",
                    _ => "unknown",
                }),
                spans_failed,
                "telemetry circuit opened: spans are dropped until a probe succeeds"
            ),
            Self::Closed {
                transition: t,
                lasted,
                probes,
                spans,
            } => tracing::info!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = t.reason.as_str(),
                outage_secs = lasted.as_secs_f64(),
                probes,
                spans_dropped = spans.dropped,
                spans_failed = spans.failed,
                "telemetry circuit closed: exporting again"
            ),
            Self::StillOpen {
                lasted,
                probes,
                spans,
            } => tracing::info!(
                outage_secs = lasted.as_secs_f64(),
                probes,
                spans_dropped = spans.dropped,
                spans_failed = spans.failed,
                "telemetry circuit still open: spans are being dropped"
            ),
            Self::Changed(t) => tracing::debug!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = t.reason.as_str(),
                "telemetry circuit {}",
                match (t.to, t.reason) {
                    (CircuitState::HalfOpen, _) => "half-open: probing the backend",
                    (_, TransitionReason::ProbeThrottled) => {
                        "open again: the backend asked us to wait"
                    }
                    _ => "open again: the probe failed",
                }
            ),
        }
    }
}

/// Manual control over one breaker, for operators and tests: separate from
/// [`BreakerHandle`] so that read-only users cannot change anything.
#[derive(Debug, Clone)]
pub struct BreakerControl {
    shared: Arc<Shared>,
}

impl BreakerControl {
    /// Holds the circuit open: every batch is dropped, nothing probes.
    pub fn force_open(&self) {
        self.shared.drive(None, |b, now| b.force_open(now));
    }

    /// Holds the circuit closed: every batch is exported, failures never open it.
    pub fn force_closed(&self) {
        self.shared.drive(None, |b, now| b.force_closed(now));
    }

    /// Back to automatic, closed, with no failures counted.
    pub fn reset(&self) {
        self.shared.drive(None, |b, now| b.reset(now));
    }
}

impl<S: SpanExporter + 'static> CircuitBreakerSpanExporter<Unclassified<S>> {
    /// Wraps any SDK span exporter, running exports on the current Tokio
    /// runtime and reading Tokio's clock. Its results say only success or
    /// failure ([`Unclassified`]); for an exporter that says more, use
    /// [`reporting`](CircuitBreakerSpanExporter::reporting).
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
    /// Wraps an exporter that reports what the backend answered, running
    /// exports on the current Tokio runtime and reading Tokio's clock.
    ///
    /// # Errors
    ///
    /// [`AdapterError::NoRuntime`] outside a Tokio runtime;
    /// [`AdapterError::ZeroExportTimeout`] for a zero `export_timeout`.
    pub fn reporting(inner: E, config: ExporterConfig) -> Result<Self, AdapterError> {
        let runtime = Handle::try_current().map_err(|_| AdapterError::NoRuntime)?;
        Self::reporting_with_runtime(inner, config, runtime, Arc::new(TokioClock))
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
        if config.export_timeout.is_zero() {
            return Err(AdapterError::ZeroExportTimeout);
        }
        let origin = clock.now();
        let published = Arc::new(Published::new(SystemTime::now()));
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                breaker: CircuitBreaker::new(config.breaker, origin)
                    .with_jitter_seed(jitter_seed()),
                outage: None,
            }),
            published,
            clock,
            origin,
            log_interval: config.log_interval,
            wake: Arc::new(Wake::default()),
        });
        Ok(Self {
            inner: Arc::new(inner),
            shared,
            runtime,
            export_timeout: config.export_timeout,
            is_shutdown: AtomicBool::new(false),
            idle_probes: config.idle_probes && !config.breaker.min_probe_interval.is_zero(),
            prober_started: Once::new(),
        })
    }

    /// Starts the idle prober once, if it is on.
    fn start_prober(&self) {
        if !self.idle_probes {
            return;
        }
        self.prober_started.call_once(|| {
            let prober = IdleProber {
                inner: Arc::downgrade(&self.inner),
                shared: Arc::downgrade(&self.shared),
                wake: Arc::clone(&self.shared.wake),
                runtime: self.runtime.clone(),
                export_timeout: self.export_timeout,
            };
            self.runtime.spawn(prober.run());
        });
    }

    /// A read-only handle for health checks and metrics.
    #[must_use]
    pub fn handle(&self) -> BreakerHandle {
        self.shared.handle()
    }

    /// Manual control over the breaker.
    #[must_use]
    pub fn control(&self) -> BreakerControl {
        BreakerControl {
            shared: Arc::clone(&self.shared),
        }
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

/// Counts what became of `spans` spans by `report`, and says what the
/// breaker learns and what the log line that may follow names as the cause.
fn account(shared: &Shared, spans: u64, report: &ExportReport) -> (Outcome, Option<String>) {
    match report {
        ExportReport::Exported { rejected, message } => {
            let rejected = (*rejected).min(spans);
            shared.published.count_exported(spans - rejected);
            if rejected > 0 {
                shared.published.count_rejected(rejected);
                tracing::debug!(
                    rejected,
                    message = message.as_deref().unwrap_or(""),
                    "the backend rejected spans of an accepted batch"
                );
            }
        }
        ExportReport::Failed(failure) => {
            shared
                .published
                .count_failed(spans, failure.cause, shared.elapsed());
        }
    }
    let cause = match report {
        ExportReport::Failed(failure) => Some(failure.to_string()),
        ExportReport::Exported { .. } => None,
    };
    (verdict(report), cause)
}

/// The task behind `idle_probes`. It holds the exporter and the breaker
/// weakly, so that it never keeps them alive, and sleeps whenever no
/// deadline is near: it costs nothing while the circuit is closed.
struct IdleProber<E> {
    inner: Weak<E>,
    shared: Weak<Shared>,
    wake: Arc<Wake>,
    runtime: Handle,
    export_timeout: Duration,
}

impl<E: ReportingSpanExporter + 'static> IdleProber<E> {
    async fn run(self) {
        while !self.wake.is_stopped() {
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            let wait = {
                let now = shared.clock.now();
                deadline(&shared.lock().breaker).map(|at| at.saturating_duration_since(now))
            };
            drop(shared);
            match wait {
                None => self.wake.notify.notified().await,
                Some(wait) if !wait.is_zero() => {
                    let sleep = pin!(tokio::time::sleep(wait));
                    let woken = pin!(self.wake.notify.notified());
                    let _ = select(sleep, woken).await;
                }
                Some(_) => {
                    if !self.probe().await {
                        // Due by the breaker's word, yet nothing to do: a
                        // clock that stepped back. Wait for news rather than spin.
                        let sleep = pin!(tokio::time::sleep(Duration::from_millis(100)));
                        let woken = pin!(self.wake.notify.notified());
                        let _ = select(sleep, woken).await;
                    }
                }
            }
        }
    }

    /// Abandons a lost probe if one is due, then runs an empty probe if one
    /// is permitted. Returns whether either happened.
    async fn probe(&self) -> bool {
        let (Some(shared), Some(inner)) = (self.shared.upgrade(), self.inner.upgrade()) else {
            return false;
        };
        let timed_out = shared.drive(None, |b, now| {
            let lost = b.poll_timeout().is_some_and(|at| at <= now);
            b.handle_timeout(now);
            lost
        });
        let Ok(permit) = shared.drive(None, |b, now| b.try_probe(now)) else {
            return timed_out;
        };
        shared.published.count_probe();
        let report = export_bounded(inner, &self.runtime, self.export_timeout, Vec::new()).await;
        // A failed export request counts by its cause, as for a batch; it
        // carried no spans, so no span is counted.
        let (outcome, cause) = account(&shared, 0, &report);
        shared.drive(cause.as_deref(), |b, now| b.record(permit, outcome, now));
        true
    }
}

impl<E: ReportingSpanExporter + 'static> SpanExporter for CircuitBreakerSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.is_shutdown.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.start_prober();
        let spans = batch.len() as u64;
        let permit: Permit = match self.shared.drive(None, |b, now| b.try_acquire(now)) {
            Ok(permit) => permit,
            Err(rejected) => {
                self.shared.published.count_dropped(spans);
                return Err(OTelSdkError::InternalFailure(format!(
                    "{rejected}: {spans} spans dropped"
                )));
            }
        };
        if permit.is_probe() {
            self.shared.published.count_probe();
        }
        let report = export_bounded(
            Arc::clone(&self.inner),
            &self.runtime,
            self.export_timeout,
            batch,
        )
        .await;
        let (outcome, cause) = account(&self.shared, spans, &report);
        self.shared
            .drive(cause.as_deref(), |b, now| b.record(permit, outcome, now));
        match report {
            ExportReport::Exported { .. } => Ok(()),
            ExportReport::Failed(failure) if failure.cause == FailureCause::Timeout => {
                Err(OTelSdkError::Timeout(self.export_timeout))
            }
            ExportReport::Failed(failure) => {
                Err(OTelSdkError::InternalFailure(failure.to_string()))
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.is_shutdown.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.shared.wake.stop();
        let inner = Arc::clone(&self.inner);
        bounded::on_thread(timeout, "span", move || {
            inner.shutdown_with_timeout(timeout)
        })
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.is_shutdown.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let inner = Arc::clone(&self.inner);
        bounded::on_thread(self.export_timeout, "span", move || inner.force_flush())
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once while the provider is built, before any export holds
        // a clone of the inner exporter.
        match Arc::get_mut(&mut self.inner) {
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
