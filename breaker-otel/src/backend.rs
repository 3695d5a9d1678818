//! One circuit breaker per backend: [`BackendBreaker`] is the driver of one
//! `breaker-core` breaker that the exporters of several signals share when
//! they send to the same endpoint, so that a dead collector is detected
//! once, probed once and reported once. It owns the breaker, the clock, the
//! lock and the idle prober; the exporters ([`CircuitBreakerSpanExporter`],
//! [`CircuitBreakerLogExporter`], [`CircuitBreakerMetricExporter`]) own their
//! inner exporter, ask it for a permit and report what became of each batch.
//! [`BackendHandle`] is the lock-free read-only view, with counts per signal.
//!
//! [`CircuitBreakerSpanExporter`]: crate::CircuitBreakerSpanExporter
//! [`CircuitBreakerLogExporter`]: crate::CircuitBreakerLogExporter
//! [`CircuitBreakerMetricExporter`]: crate::CircuitBreakerMetricExporter

use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use breaker_core::{
    CircuitBreaker, CircuitState, Outcome, Permit as CorePermit, Transition, TransitionReason,
};
use futures_util::future::{BoxFuture, select};
use opentelemetry::Context;
use opentelemetry::context::FutureExt as _;
use opentelemetry_sdk::error::OTelSdkError;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::classify::verdict;
use crate::exporter::jitter_seed;
use crate::handle::{BreakerHandle, Published, SpanCounts};
use crate::otel_env::mask_endpoint;
use crate::{
    AdapterError, Clock, ExportFailure, ExportReport, ExporterConfig, FailureCause, FailureCounts,
    LastFailure, Protocol, TokioClock, TransitionCounts,
};

/// A kind of telemetry, as the OpenTelemetry specification names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Signal {
    /// Spans.
    Traces,
    /// Log records.
    Logs,
    /// Metric data points.
    Metrics,
}

impl Signal {
    /// Every signal, in this order everywhere (snapshots, log lines).
    pub const ALL: [Self; 3] = [Self::Traces, Self::Logs, Self::Metrics];

    /// The specification's name: `traces`, `logs` or `metrics`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Traces => "traces",
            Self::Logs => "logs",
            Self::Metrics => "metrics",
        }
    }

    /// What one item of the signal is called, plural: what the counts count.
    #[must_use]
    pub const fn items(self) -> &'static str {
        match self {
            Self::Traces => "spans",
            Self::Logs => "log records",
            Self::Metrics => "metric data points",
        }
    }

    /// Its place in [`Signal::ALL`]: the index of per-signal arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            Self::Traces => 0,
            Self::Logs => 1,
            Self::Metrics => 2,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One circuit breaker for one backend, shared by the exporters of every
/// signal sent there: an outage is detected once (whichever signal fails
/// first opens it for all), probed once (one probe, by whichever exporter
/// gets there first, closes it for all) and logged once (one line when it
/// starts and one when it ends, naming every signal it served). Each signal
/// keeps its own counts ([`BackendHandle`]).
///
/// Build one per endpoint and make each signal's exporter from it; a signal
/// with an endpoint of its own gets a breaker of its own. Cloning shares the
/// breaker.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use breaker_otel::{BackendBreaker, ExporterConfig, Signal};
/// use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
/// use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
///
/// // Inside a Tokio runtime: exports are bounded by tasks on it.
/// let backend = BackendBreaker::builder(ExporterConfig::DEFAULT)
///     .endpoint("http://collector:4318")
///     .build()?;
/// let logs = SdkLoggerProvider::builder()
///     .with_batch_exporter(backend.log_exporter(InMemoryLogExporter::default()))
///     .build();
/// let metrics = SdkMeterProvider::builder()
///     .with_reader(PeriodicReader::builder(backend.metric_exporter(InMemoryMetricExporter::default())).build())
///     .build();
/// let health = backend.handle(); // one breaker, counts per signal
/// assert_eq!(health.snapshot().signals.len(), 2);
/// # drop((logs, metrics)); Ok(()) }
/// ```
#[derive(Clone)]
pub struct BackendBreaker {
    backend: Arc<Backend>,
}

impl fmt::Debug for BackendBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.backend.fmt(f)
    }
}

/// Builds a [`BackendBreaker`]: its settings, the endpoint it is named after
/// and, for tests, the runtime and clock it runs on.
#[must_use]
pub struct BackendBreakerBuilder {
    config: ExporterConfig,
    endpoint: Option<String>,
    server: Option<Server>,
    /// Per signal, indexed by `Signal::index`.
    protocol: [Option<Protocol>; 3],
    runtime: Option<(Handle, Arc<dyn Clock>)>,
}

impl fmt::Debug for BackendBreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendBreakerBuilder")
            .field("config", &self.config)
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl BackendBreakerBuilder {
    /// Names the breaker after the endpoint it guards, for health and
    /// metrics; userinfo in it is masked. Its host and port (the scheme's
    /// port when it names none) are the semantic conventions'
    /// `server.address` and `server.port` of every signal's exporter.
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(mask_endpoint(endpoint));
        self.server = Server::of(endpoint);
        self
    }

    /// The OTLP transport the exporters on this breaker use: it names
    /// them as the semantic conventions do (`otel.component.type`
    /// `otlp_grpc_span_exporter`, `otlp_http_log_exporter`, …). Without it,
    /// the exporters are of a type the conventions do not know, and are
    /// named after ours (`breaker_otel::CircuitBreakerLogExporter`, …).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = [Some(protocol); 3];
        self
    }

    /// The OTLP transport of one signal's exporter, when the signals sent
    /// to this endpoint do not all use the same
    /// (`OTEL_EXPORTER_OTLP_LOGS_PROTOCOL` and the like); it overrides
    /// [`protocol`](Self::protocol) for that signal.
    pub fn signal_protocol(mut self, signal: Signal, protocol: Protocol) -> Self {
        self.protocol[signal.index()] = Some(protocol);
        self
    }

    /// Runs exports' deadlines and the idle prober on `runtime` and reads
    /// `clock` (the seam tests use for virtual time). Without it, the
    /// current Tokio runtime and its clock.
    pub fn runtime(mut self, runtime: Handle, clock: Arc<dyn Clock>) -> Self {
        self.runtime = Some((runtime, clock));
        self
    }

    /// The breaker, closed.
    ///
    /// # Errors
    ///
    /// [`AdapterError::NoRuntime`] outside a Tokio runtime when none was
    /// given; [`AdapterError::ZeroExportTimeout`] for a zero `export_timeout`.
    pub fn build(self) -> Result<BackendBreaker, AdapterError> {
        let config = self.config;
        if config.export_timeout.is_zero() {
            return Err(AdapterError::ZeroExportTimeout);
        }
        let (runtime, clock) = match self.runtime {
            Some(given) => given,
            None => {
                let runtime = Handle::try_current().map_err(|_| AdapterError::NoRuntime)?;
                (runtime, Arc::new(TokioClock) as Arc<dyn Clock>)
            }
        };
        let origin = clock.now();
        let wall = SystemTime::now();
        Ok(BackendBreaker {
            backend: Arc::new(Backend {
                core: Mutex::new(Core {
                    breaker: CircuitBreaker::new(config.breaker, origin)
                        .with_jitter_seed(jitter_seed()),
                    outage: None,
                }),
                published: std::array::from_fn(|_| Arc::new(Published::new(wall))),
                observed: Default::default(),
                served: Default::default(),
                endpoint: self.endpoint,
                server: self.server,
                protocol: self.protocol,
                clock,
                origin,
                log_interval: config.log_interval,
                runtime,
                export_timeout: config.export_timeout,
                idle_probes: config.idle_probes && !config.breaker.min_probe_interval.is_zero(),
                probers: Mutex::new(Probers::default()),
                wake: Notify::new(),
            }),
        })
    }
}

impl BackendBreaker {
    /// A builder with these settings; `build()` it inside a Tokio runtime,
    /// or give it one with [`runtime`](BackendBreakerBuilder::runtime).
    pub fn builder(config: ExporterConfig) -> BackendBreakerBuilder {
        BackendBreakerBuilder {
            config,
            endpoint: None,
            server: None,
            protocol: [None; 3],
            runtime: None,
        }
    }

    /// A breaker with these settings on the current Tokio runtime, named
    /// after no endpoint.
    ///
    /// # Errors
    ///
    /// As [`BackendBreakerBuilder::build`].
    pub fn new(config: ExporterConfig) -> Result<Self, AdapterError> {
        Self::builder(config).build()
    }

    /// A read-only handle for health checks and metrics.
    #[must_use]
    pub fn handle(&self) -> BackendHandle {
        BackendHandle {
            backend: Arc::clone(&self.backend),
        }
    }

    /// Manual control over the breaker, for every signal it serves.
    #[must_use]
    pub fn control(&self) -> BackendControl {
        BackendControl {
            backend: Arc::clone(&self.backend),
        }
    }

    /// The breaker an exporter was built on.
    pub(crate) fn from_backend(backend: &Arc<Backend>) -> Self {
        Self {
            backend: Arc::clone(backend),
        }
    }

    /// The shared driver, for the exporters built on it.
    pub(crate) fn serve(&self, signal: Signal) -> Arc<Backend> {
        self.backend.observed[signal.index()].name(
            ComponentKind::of(self.backend.protocol[signal.index()]),
            signal,
        );
        self.backend.served[signal.index()].store(true, Ordering::Release);
        Arc::clone(&self.backend)
    }
}

/// Manual control over one [`BackendBreaker`]: separate from
/// [`BackendHandle`] so that read-only users cannot change anything.
#[derive(Debug, Clone)]
pub struct BackendControl {
    backend: Arc<Backend>,
}

impl BackendControl {
    /// Holds the circuit open: every export of every signal is dropped,
    /// nothing probes.
    pub fn force_open(&self) {
        self.backend.drive(None, |b, now| b.force_open(now));
    }

    /// Holds the circuit closed: every export is made, failures never open it.
    pub fn force_closed(&self) {
        self.backend.drive(None, |b, now| b.force_closed(now));
    }

    /// Back to automatic, closed, with no failures counted.
    pub fn reset(&self) {
        self.backend.drive(None, |b, now| b.reset(now));
    }
}

/// An exporter of the backend that can send an export of nothing as the
/// breaker's probe when no batch comes to be one.
pub(crate) trait EmptyProbe: Send + Sync {
    /// The signal it carries (where a failed probe is counted).
    fn signal(&self) -> Signal;

    /// Whether it was shut down; it then never probes again.
    fn is_shut_down(&self) -> bool;

    /// Sends the empty export, bounded by `export_timeout` and contained.
    fn probe(self: Arc<Self>) -> BoxFuture<'static, ExportReport>;
}

/// What every circuit-breaking exporter holds on its backend, whatever its signal: the
/// inner exporter, the breaker, whether it was shut down, and the probe it registers at
/// its first export (by then the provider has passed its resource, which needs the only
/// reference to `inner`). Dropping it takes the probe away and tells the idle prober.
pub(crate) struct Seat<E> {
    pub(crate) inner: Arc<E>,
    pub(crate) backend: Arc<Backend>,
    shut_down: Arc<AtomicBool>,
    probe: OnceLock<Arc<dyn EmptyProbe>>,
}

impl<E> fmt::Debug for Seat<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.backend.fmt(f)
    }
}

impl<E> Drop for Seat<E> {
    fn drop(&mut self) {
        // Its probe goes with it; the idle prober looks for another.
        self.probe.take();
        self.backend.exporter_gone();
    }
}

impl<E> Seat<E> {
    /// A seat for an exporter of `signal` on `breaker`.
    pub(crate) fn new(breaker: &BackendBreaker, signal: Signal, inner: E) -> Self {
        Self {
            inner: Arc::new(inner),
            backend: breaker.serve(signal),
            shut_down: Arc::new(AtomicBool::new(false)),
            probe: OnceLock::new(),
        }
    }

    /// A read-only handle on the breaker (shared, if it is).
    pub(crate) fn handle(&self) -> BackendHandle {
        BackendBreaker::from_backend(&self.backend).handle()
    }

    /// Manual control over the breaker (shared, if it is).
    pub(crate) fn control(&self) -> BackendControl {
        BackendBreaker::from_backend(&self.backend).control()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Marks the exporter shut down and tells the idle prober; `false` if it already was.
    pub(crate) fn mark_shut_down(&self) -> bool {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.backend.exporter_gone();
        true
    }

    /// Registers the probe `make` builds from this seat's parts, once.
    pub(crate) fn register_probe(&self, make: impl FnOnce(ProbeParts<E>) -> Arc<dyn EmptyProbe>) {
        self.probe.get_or_init(|| {
            let probe = make(ProbeParts {
                inner: Arc::clone(&self.inner),
                backend: Arc::clone(&self.backend),
                shut_down: Arc::clone(&self.shut_down),
            });
            self.backend.register_probe(Arc::downgrade(&probe));
            probe
        });
    }
}

/// What an exporter's probe shares with its seat.
pub(crate) struct ProbeParts<E> {
    pub(crate) inner: Arc<E>,
    pub(crate) backend: Arc<Backend>,
    shut_down: Arc<AtomicBool>,
}

impl<E> ProbeParts<E> {
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }
}

/// Runs `probe` as the SDK's processors run an export: blocking a thread
/// outside the runtime's workers (one of its blocking pool), so that
/// exporters built for those processors, blocking HTTP clients included,
/// probe as they export. Telemetry is suppressed on that thread, as the SDK
/// suppresses it on its processors' threads.
pub(crate) fn on_blocking_thread(
    runtime: &Handle,
    probe: impl FnOnce() -> ExportReport + Send + 'static,
) -> BoxFuture<'static, ExportReport> {
    let probe = runtime.spawn_blocking(move || {
        let _suppressed = Context::enter_telemetry_suppressed_scope();
        probe()
    });
    Box::pin(async move {
        probe.await.unwrap_or_else(|_| {
            ExportReport::Failed(ExportFailure {
                cause: FailureCause::Internal,
                retryable: true,
                retry_after: None,
                message: "the probe's thread was cancelled".into(),
            })
        })
    })
}

/// The exporters that can probe, and whether the idle prober runs.
#[derive(Default)]
struct Probers {
    candidates: Vec<Weak<dyn EmptyProbe>>,
    running: bool,
}

impl Probers {
    /// The first exporter still there and not shut down, forgetting the gone.
    fn first_live(&mut self) -> Option<Arc<dyn EmptyProbe>> {
        self.candidates
            .retain(|c| c.upgrade().is_some_and(|c| !c.is_shut_down()));
        self.candidates.iter().find_map(Weak::upgrade)
    }
}

/// What the breaker's exporters, handles and controls share.
pub(crate) struct Backend {
    core: Mutex<Core>,
    /// Per signal, indexed by `Signal::index`: that signal's counts, and the
    /// breaker's state mirrored into each so that each is a whole view.
    published: [Arc<Published>; 3],
    /// Per signal, like `published`: what the semantic conventions'
    /// exporter metrics add to the counts.
    observed: [Arc<Observed>; 3],
    /// Which signals have an exporter on this breaker.
    served: [AtomicBool; 3],
    endpoint: Option<String>,
    /// `server.address` and `server.port`, from the endpoint.
    server: Option<Server>,
    /// Per signal: names its exporter's `otel.component.type`.
    protocol: [Option<Protocol>; 3],
    clock: Arc<dyn Clock>,
    origin: Instant,
    log_interval: Duration,
    /// Where deadlines, probes and the idle prober run.
    pub(crate) runtime: Handle,
    /// The longest one export may take.
    pub(crate) export_timeout: Duration,
    idle_probes: bool,
    probers: Mutex<Probers>,
    /// Wakes the idle prober: the breaker's next deadline moved, or an
    /// exporter went away.
    wake: Notify,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendBreaker")
            .field("endpoint", &self.endpoint)
            .field("state", &self.state())
            .field("export_timeout", &self.export_timeout)
            .finish_non_exhaustive()
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
    counts: [SpanCounts; 3],
    /// When the last "still open" summary was logged (the start, if none).
    summarized: Instant,
}

/// A permitted export between [`Backend::admit`] and [`Backend::conclude`]:
/// the breaker's permit, when the export started (for
/// `otel.sdk.exporter.operation.duration`), and its items, counted in flight
/// until it is concluded or dropped (an export future dropped unfinished).
#[must_use = "a permitted export must be made and concluded"]
#[derive(Debug)]
pub(crate) struct Permit {
    core: CorePermit,
    started: Instant,
    /// Uncounts the items when dropped.
    inflight: InFlight,
}

/// Items of one permitted export, counted in flight while it lives.
#[derive(Debug)]
struct InFlight {
    observed: Arc<Observed>,
    items: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.observed
            .inflight
            .fetch_sub(self.items, Ordering::Relaxed);
    }
}

/// What one export's duration is filed under: `error.type`'s value, none
/// for a full success. Index 0 is success, 1 `rejected`, then each cause
/// in [`FailureCause::ALL`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ErrorClass(usize);

/// Success, `rejected`, and each failure cause.
const CLASSES: usize = 2 + FailureCause::ALL.len();

/// The histogram's buckets: one per bound, and the overflow.
const BUCKETS: usize = ExportDurations::BOUNDS.len() + 1;

impl ErrorClass {
    /// The class of an export of `items` items that ended with `report`: a
    /// partial success is not a full success, so it is `rejected`.
    fn of(report: &ExportReport, items: u64) -> Self {
        match report {
            ExportReport::Exported { rejected, .. } if (*rejected).min(items) > 0 => Self(1),
            ExportReport::Exported { .. } => Self(0),
            ExportReport::Failed(failure) => Self::failed(failure.cause),
        }
    }

    fn failed(cause: FailureCause) -> Self {
        // `ALL` lists every cause; the fallback only keeps a cause missing
        // from it from panicking.
        let i = FailureCause::ALL
            .iter()
            .position(|&c| c == cause)
            .unwrap_or(FailureCause::ALL.len() - 1);
        Self(2 + i)
    }

    fn error_type(self) -> Option<ExportErrorType> {
        match self.0 {
            0 => None,
            1 => Some(ExportErrorType::Rejected),
            i => FailureCause::ALL
                .get(i - 2)
                .copied()
                .map(ExportErrorType::Failed),
        }
    }
}

/// One signal's additions for the semantic conventions' exporter metrics,
/// written at admit and conclude, read without a lock.
#[derive(Debug)]
struct Observed {
    /// Items admitted and not concluded.
    inflight: AtomicU64,
    /// The instance counter of `otel.component.name`; [`Self::UNNAMED`]
    /// until the signal's first exporter is built.
    instance: AtomicU32,
    /// Export durations by error class: observations per bucket (not
    /// cumulative), and their sum in nanoseconds.
    buckets: [[AtomicU64; BUCKETS]; CLASSES],
    sum_nanos: [AtomicU64; CLASSES],
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            inflight: AtomicU64::new(0),
            instance: AtomicU32::new(Self::UNNAMED),
            buckets: Default::default(),
            sum_nanos: Default::default(),
        }
    }
}

impl Observed {
    const UNNAMED: u32 = u32::MAX;

    /// Gives the signal's exporters their instance number, once.
    fn name(&self, kind: ComponentKind, signal: Signal) {
        if self.instance.load(Ordering::Acquire) == Self::UNNAMED {
            let next = kind.next_instance(signal);
            // Another exporter of the signal may have got there first: the
            // number it took is then the one kept (and ours is skipped).
            let _ = self.instance.compare_exchange(
                Self::UNNAMED,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    fn record(&self, class: ErrorClass, took: Duration) {
        let bucket = ExportDurations::BOUNDS
            .iter()
            .position(|&bound| took <= bound)
            .unwrap_or(BUCKETS - 1);
        self.buckets[class.0][bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos[class.0].fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn durations(&self) -> ExportDurations {
        ExportDurations {
            classes: std::array::from_fn(|class| DurationHistogram {
                counts: std::array::from_fn(|b| self.buckets[class][b].load(Ordering::Relaxed)),
                sum: Duration::from_nanos(self.sum_nanos[class].load(Ordering::Relaxed)),
            }),
        }
    }
}

/// What `otel.component.type` the exporters are: OTLP over gRPC or HTTP,
/// or an exporter the conventions do not name.
#[derive(Debug, Clone, Copy)]
enum ComponentKind {
    OtlpGrpc,
    OtlpHttp,
    Other,
}

/// Instance counters per kind and signal, for the whole process: the
/// conventions want `otel.component.name` unique per component type in an
/// SDK, and a process may build several breakers.
static INSTANCES: [[AtomicU32; 3]; 3] = [const { [const { AtomicU32::new(0) }; 3] }; 3];

impl ComponentKind {
    fn of(protocol: Option<Protocol>) -> Self {
        match protocol {
            Some(Protocol::Grpc) => Self::OtlpGrpc,
            Some(Protocol::HttpProtobuf) => Self::OtlpHttp,
            None => Self::Other,
        }
    }

    fn next_instance(self, signal: Signal) -> u32 {
        INSTANCES[self as usize][signal.index()].fetch_add(1, Ordering::Relaxed)
    }

    /// The conventions' `otel.component.type` of this kind's exporter of `signal`.
    const fn component_type(self, signal: Signal) -> &'static str {
        match (self, signal) {
            (Self::OtlpGrpc, Signal::Traces) => "otlp_grpc_span_exporter",
            (Self::OtlpGrpc, Signal::Logs) => "otlp_grpc_log_exporter",
            (Self::OtlpGrpc, Signal::Metrics) => "otlp_grpc_metric_exporter",
            (Self::OtlpHttp, Signal::Traces) => "otlp_http_span_exporter",
            (Self::OtlpHttp, Signal::Logs) => "otlp_http_log_exporter",
            (Self::OtlpHttp, Signal::Metrics) => "otlp_http_metric_exporter",
            // "The language-defined name of the type" when none applies.
            (Self::Other, Signal::Traces) => "breaker_otel::CircuitBreakerSpanExporter",
            (Self::Other, Signal::Logs) => "breaker_otel::CircuitBreakerLogExporter",
            (Self::Other, Signal::Metrics) => "breaker_otel::CircuitBreakerMetricExporter",
        }
    }
}

/// `server.address` and `server.port` of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Server {
    address: String,
    port: Option<u16>,
}

impl Server {
    /// The endpoint's host (IPv6 without brackets) and port, or its
    /// scheme's default port; `None` for an endpoint that is not a URL.
    fn of(endpoint: &str) -> Option<Self> {
        let uri: http::Uri = endpoint.parse().ok()?;
        let host = uri.host()?;
        let address = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        Some(Self {
            address: address.to_owned(),
            port,
        })
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

impl Backend {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // Plain data that every method leaves consistent: a panic elsewhere
        // while it was held does not poison its meaning.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> CircuitState {
        self.view(Signal::Traces).state()
    }

    /// One signal's view: the breaker's state and that signal's counts.
    pub(crate) fn view(&self, signal: Signal) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(&self.published[signal.index()]))
    }

    fn published(&self, signal: Signal) -> &Published {
        &self.published[signal.index()]
    }

    /// The signals served, in [`Signal::ALL`]'s order.
    fn served(&self) -> impl Iterator<Item = Signal> + '_ {
        Signal::ALL
            .into_iter()
            .filter(|s| self.served[s.index()].load(Ordering::Acquire))
    }

    fn elapsed(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    /// Asks the breaker whether a batch of `items` items of `signal` may go;
    /// counts them dropped and says so when it may not. A permitted batch's
    /// items are in flight until its permit is concluded or dropped.
    pub(crate) fn admit(&self, signal: Signal, items: u64) -> Result<Permit, OTelSdkError> {
        match self.drive(None, |b, now| b.try_acquire(now)) {
            Ok(permit) => {
                if permit.is_probe() {
                    self.count_probe();
                }
                Ok(self.permit(signal, items, permit))
            }
            Err(rejected) => {
                self.published(signal).count_dropped(items);
                Err(OTelSdkError::InternalFailure(format!(
                    "{rejected}: {items} {} dropped",
                    signal.items()
                )))
            }
        }
    }

    /// The breaker's `permit` for `items` items of `signal`, which are in
    /// flight from now on.
    fn permit(&self, signal: Signal, items: u64, permit: CorePermit) -> Permit {
        let observed = &self.observed[signal.index()];
        observed.inflight.fetch_add(items, Ordering::Relaxed);
        Permit {
            core: permit,
            started: self.clock.now(),
            inflight: InFlight {
                observed: Arc::clone(observed),
                items,
            },
        }
    }

    /// Counts what became of a permitted batch, times its export and tells
    /// the breaker.
    pub(crate) fn conclude(
        &self,
        signal: Signal,
        items: u64,
        permit: Permit,
        report: &ExportReport,
    ) {
        let Permit {
            core,
            started,
            inflight,
        } = permit;
        let (outcome, cause) = self.account(signal, items, report);
        let took = self.clock.now().saturating_duration_since(started);
        self.observed[signal.index()].record(ErrorClass::of(report, items), took);
        // Counted by outcome now: no longer in flight.
        drop(inflight);
        self.drive(cause.as_deref(), |b, now| b.record(core, outcome, now));
    }

    fn count_probe(&self) {
        for published in &self.published {
            published.count_probe();
        }
    }

    /// Counts `items` items of `signal` by `report`, and says what the
    /// breaker learns and what the opening line would name as the cause.
    fn account(
        &self,
        signal: Signal,
        items: u64,
        report: &ExportReport,
    ) -> (Outcome, Option<String>) {
        let published = self.published(signal);
        let cause = match report {
            ExportReport::Exported { rejected, message } => {
                let rejected = (*rejected).min(items);
                published.count_exported(items - rejected);
                if rejected > 0 {
                    published.count_rejected(rejected);
                    tracing::debug!(
                        signal = signal.as_str(),
                        rejected,
                        message = message.as_deref().unwrap_or(""),
                        "the backend rejected items of an accepted batch"
                    );
                }
                None
            }
            ExportReport::Failed(failure) => {
                published.count_failed(items, failure.cause, self.elapsed());
                Some(failure.to_string())
            }
        };
        (verdict(report), cause)
    }

    /// Runs `step` on the breaker under the lock, publishes the new state to
    /// every signal's view and logs what changed with the lock released.
    /// `cause` is why the call being recorded failed, for the opening line.
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
                // Stored if the prober is busy: it looks again.
                self.wake.notify_one();
            }
            while let Some(t) = core.breaker.poll_transition() {
                transitions.push(t);
            }
            let stats = core.breaker.stats();
            let throttled_until = stats
                .throttled_until
                .map(|until| until.saturating_duration_since(self.origin));
            let since = stats.since.saturating_duration_since(self.origin);
            for published in &self.published {
                published.set_throttled_until(throttled_until);
                published.set_consecutive_failures(stats.consecutive_failures);
                published.set_state(stats.state, since);
            }
            let lines = self.lines(&mut core, &transitions, cause, now);
            (result, lines)
        };
        for t in &transitions {
            for published in &self.published {
                published.count_transition(t.from, t.to);
            }
        }
        if !lines.is_empty() {
            let about = About::of(self);
            for line in lines {
                line.log(&about);
            }
        }
        result
    }

    /// Follows the outage through `transitions` and decides the log lines:
    /// one when it starts, one when it ends, a summary at most once per
    /// `log_interval` in between, and the rest at debug.
    fn lines(
        &self,
        core: &mut Core,
        transitions: &[Transition],
        cause: Option<&str>,
        now: Instant,
    ) -> Vec<Line> {
        let mut lines = Vec::new();
        let counts: [SpanCounts; 3] = std::array::from_fn(|i| self.published[i].spans());
        let probes = self.published[0].probes();
        for &t in transitions {
            match (core.outage, t.to) {
                (None, CircuitState::Open | CircuitState::HalfOpen) => {
                    core.outage = Some(Outage {
                        started: t.at,
                        probes,
                        counts,
                        summarized: t.at,
                    });
                    lines.push(Line::Opened {
                        transition: t,
                        cause: cause.map(str::to_owned),
                        failed: counts.map(|c| c.failed),
                    });
                }
                (Some(outage), CircuitState::Closed) => {
                    core.outage = None;
                    lines.push(Line::Closed {
                        transition: t,
                        lasted: t.at.saturating_duration_since(outage.started),
                        probes: probes - outage.probes,
                        counts: since(counts, outage.counts),
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
                counts: since(counts, outage.counts),
            });
        }
        lines
    }

    /// Adds `probe` to the exporters that can probe, and starts the idle
    /// prober if it is on and not running.
    pub(crate) fn register_probe(self: &Arc<Self>, probe: Weak<dyn EmptyProbe>) {
        if !self.idle_probes {
            return;
        }
        let mut probers = self.probers.lock().unwrap_or_else(PoisonError::into_inner);
        probers.candidates.push(probe);
        if !probers.running {
            probers.running = true;
            // Whatever it logs or its exporter does is about the pipeline
            // itself: telemetry is suppressed in it, as the SDK does on its
            // processors' threads.
            let prober = Arc::clone(self)
                .idle_prober()
                .with_context(Context::current().with_telemetry_suppressed());
            self.runtime.spawn(prober);
        }
    }

    /// Tells the idle prober that an exporter went away or shut down.
    pub(crate) fn exporter_gone(&self) {
        self.wake.notify_one();
    }

    /// The task behind `idle_probes`: it sleeps until the breaker's next
    /// probe is due or its probe times out, and then, if no batch has taken
    /// the probe slot, probes with an export of nothing through one of the
    /// exporters. It ends when no exporter is left to probe with, and costs
    /// nothing while the circuit is closed (no timer).
    async fn idle_prober(self: Arc<Self>) {
        loop {
            {
                let mut probers = self.probers.lock().unwrap_or_else(PoisonError::into_inner);
                if probers.first_live().is_none() {
                    probers.running = false;
                    return;
                }
            }
            let wait = {
                let now = self.clock.now();
                deadline(&self.lock().breaker).map(|at| at.saturating_duration_since(now))
            };
            match wait {
                None => self.wake.notified().await,
                Some(wait) if !wait.is_zero() => {
                    let sleep = pin!(tokio::time::sleep(wait));
                    let woken = pin!(self.wake.notified());
                    let _ = select(sleep, woken).await;
                }
                Some(_) => {
                    if !self.idle_probe().await {
                        // Due by the breaker's word, yet nothing to do: a
                        // clock that stepped back. Wait for news rather than spin.
                        let sleep = pin!(tokio::time::sleep(Duration::from_millis(100)));
                        let woken = pin!(self.wake.notified());
                        let _ = select(sleep, woken).await;
                    }
                }
            }
        }
    }

    /// Abandons a lost probe if one is due, then runs an empty probe if one
    /// is permitted. Returns whether either happened.
    async fn idle_probe(&self) -> bool {
        let timed_out = self.drive(None, |b, now| {
            let lost = b.poll_timeout().is_some_and(|at| at <= now);
            b.handle_timeout(now);
            lost
        });
        let via = {
            let mut probers = self.probers.lock().unwrap_or_else(PoisonError::into_inner);
            probers.first_live()
        };
        let Some(via) = via else {
            return timed_out;
        };
        let Ok(permit) = self.drive(None, |b, now| b.try_probe(now)) else {
            return timed_out;
        };
        self.count_probe();
        let signal = via.signal();
        let permit = self.permit(signal, 0, permit);
        let report = via.probe().await;
        // A failed probe counts as a failed export of its exporter's signal,
        // by cause; it carried nothing, so no item is counted.
        self.conclude(signal, 0, permit, &report);
        true
    }
}

/// The counts between `start` and `now`.
fn since(now: [SpanCounts; 3], start: [SpanCounts; 3]) -> [SpanCounts; 3] {
    std::array::from_fn(|i| SpanCounts {
        exported: now[i].exported - start[i].exported,
        rejected: now[i].rejected - start[i].rejected,
        dropped: now[i].dropped - start[i].dropped,
        failed: now[i].failed - start[i].failed,
    })
}

/// A log line decided under the lock and written after it is released.
#[derive(Debug)]
enum Line {
    Opened {
        transition: Transition,
        cause: Option<String>,
        failed: [u64; 3],
    },
    Closed {
        transition: Transition,
        lasted: Duration,
        probes: u64,
        counts: [SpanCounts; 3],
    },
    StillOpen {
        lasted: Duration,
        probes: u64,
        counts: [SpanCounts; 3],
    },
    Changed(Transition),
}

/// What every line says about the breaker: its endpoint and its signals.
struct About<'a> {
    endpoint: Option<&'a str>,
    served: [bool; 3],
    /// `traces,logs`: the signals served, as a field.
    signals: String,
    /// `spans and log records`: what is dropped, for the message.
    items: String,
}

impl<'a> About<'a> {
    fn of(backend: &'a Backend) -> Self {
        let served: Vec<Signal> = backend.served().collect();
        let items: Vec<&str> = served.iter().map(|s| s.items()).collect();
        let items = match items.split_last() {
            None => "exports".to_owned(),
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        };
        About {
            endpoint: backend.endpoint.as_deref(),
            served: Signal::ALL.map(|s| served.contains(&s)),
            signals: served
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            items,
        }
    }

    /// `count` for `signal` if it is served: a field only signals served show.
    fn of_signal(&self, signal: Signal, count: u64) -> Option<u64> {
        self.served[signal.index()].then_some(count)
    }
}

impl Line {
    fn log(self, about: &About<'_>) {
        use Signal::{Logs, Metrics, Traces};
        let field = |signal: Signal, counts: &[SpanCounts; 3], pick: fn(&SpanCounts) -> u64| {
            about.of_signal(signal, pick(&counts[signal.index()]))
        };
        match self {
            Self::Opened {
                transition: t,
                cause,
                failed,
            } => tracing::warn!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = t.reason.as_str(),
                cause = cause.as_deref().unwrap_or(match t.reason {
                    TransitionReason::ForcedOpen => "forced open by an operator",
                    _ => "unknown",
                }),
                endpoint = about.endpoint,
                signals = about.signals.as_str(),
                spans_failed = about.of_signal(Traces, failed[0]),
                log_records_failed = about.of_signal(Logs, failed[1]),
                metric_data_points_failed = about.of_signal(Metrics, failed[2]),
                "telemetry circuit opened: {} are dropped until a probe succeeds",
                about.items
            ),
            Self::Closed {
                transition: t,
                lasted,
                probes,
                counts,
            } => tracing::info!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = t.reason.as_str(),
                endpoint = about.endpoint,
                signals = about.signals.as_str(),
                outage_secs = lasted.as_secs_f64(),
                probes,
                spans_dropped = field(Traces, &counts, |c| c.dropped),
                spans_failed = field(Traces, &counts, |c| c.failed),
                log_records_dropped = field(Logs, &counts, |c| c.dropped),
                log_records_failed = field(Logs, &counts, |c| c.failed),
                metric_data_points_dropped = field(Metrics, &counts, |c| c.dropped),
                metric_data_points_failed = field(Metrics, &counts, |c| c.failed),
                "telemetry circuit closed: exporting again"
            ),
            Self::StillOpen {
                lasted,
                probes,
                counts,
            } => tracing::info!(
                endpoint = about.endpoint,
                signals = about.signals.as_str(),
                outage_secs = lasted.as_secs_f64(),
                probes,
                spans_dropped = field(Traces, &counts, |c| c.dropped),
                spans_failed = field(Traces, &counts, |c| c.failed),
                log_records_dropped = field(Logs, &counts, |c| c.dropped),
                log_records_failed = field(Logs, &counts, |c| c.failed),
                metric_data_points_dropped = field(Metrics, &counts, |c| c.dropped),
                metric_data_points_failed = field(Metrics, &counts, |c| c.failed),
                "telemetry circuit still open: {} are being dropped",
                about.items
            ),
            Self::Changed(t) => tracing::debug!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = t.reason.as_str(),
                endpoint = about.endpoint,
                signals = about.signals.as_str(),
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

/// A cheap, cloneable, read-only view of one [`BackendBreaker`]: its state
/// and, for each signal it serves, what became of that signal's items.
/// Reading never takes the breaker's lock (every value is an atomic), so it
/// may be read on every HTTP request.
#[derive(Clone)]
pub struct BackendHandle {
    backend: Arc<Backend>,
}

impl fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendHandle")
            .field("endpoint", &self.backend.endpoint)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl BackendHandle {
    /// The circuit's state now.
    #[must_use]
    pub fn state(&self) -> CircuitState {
        self.backend.state()
    }

    /// The endpoint the breaker is named after, userinfo masked.
    #[must_use]
    pub fn endpoint(&self) -> Option<&str> {
        self.backend.endpoint.as_deref()
    }

    /// The signals that have an exporter on this breaker, in
    /// [`Signal::ALL`]'s order.
    pub fn signals(&self) -> impl Iterator<Item = Signal> + '_ {
        self.backend.served()
    }

    /// Every published value at (nearly) one moment. Each value is read
    /// atomically; the set is not one transaction, which metrics and health
    /// checks do not need.
    #[must_use]
    pub fn snapshot(&self) -> BackendSnapshot {
        let view = |signal: Signal| {
            BreakerHandle::new(Arc::clone(&self.backend.published[signal.index()])).snapshot()
        };
        let breaker = view(Signal::Traces);
        let signals: Vec<SignalSnapshot> = self
            .backend
            .served()
            .map(|signal| {
                let s = view(signal);
                let observed = &self.backend.observed[signal.index()];
                let kind = ComponentKind::of(self.backend.protocol[signal.index()]);
                let component_type = kind.component_type(signal);
                let component_name = match observed.instance.load(Ordering::Acquire) {
                    Observed::UNNAMED => format!("{component_type}/0"),
                    n => format!("{component_type}/{n}"),
                };
                SignalSnapshot {
                    signal,
                    counts: SignalCounts {
                        exported: s.spans.exported,
                        rejected: s.spans.rejected,
                        dropped: s.spans.dropped,
                        failed: s.spans.failed,
                    },
                    failures: s.failures,
                    last_failure: s.last_failure,
                    inflight: observed.inflight.load(Ordering::Relaxed),
                    durations: observed.durations(),
                    component_type,
                    component_name,
                }
            })
            .collect();
        let server = self.backend.server.as_ref();
        BackendSnapshot {
            endpoint: self.backend.endpoint.clone(),
            server_address: server.map(|s| s.address.clone()),
            server_port: server.and_then(|s| s.port),
            state: breaker.state,
            since: breaker.since,
            consecutive_failures: breaker.consecutive_failures,
            last_failure: signals
                .iter()
                .filter_map(|s| s.last_failure)
                .max_by_key(|f| f.at),
            throttled_until: breaker.throttled_until,
            probes: breaker.probes,
            transitions: breaker.transitions,
            signals,
        }
    }
}

/// A [`BackendBreaker`]'s published values at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendSnapshot {
    /// The endpoint the breaker is named after, userinfo masked.
    pub endpoint: Option<String>,
    /// The endpoint's host (`server.address` in the semantic conventions'
    /// exporter metrics); `None` without an endpoint.
    pub server_address: Option<String>,
    /// The endpoint's port, or its scheme's (`server.port`).
    pub server_port: Option<u16>,
    /// Current state, for every signal it serves.
    pub state: CircuitState,
    /// Wall-clock time at which the current state was entered (the
    /// breaker's creation before any transition).
    pub since: SystemTime,
    /// Consecutive failed exports counted in closed state, of any signal.
    pub consecutive_failures: u32,
    /// The most recent failed export of any signal: its cause and when.
    pub last_failure: Option<LastFailure>,
    /// Until when the backend asked us to send nothing; every export of
    /// every signal is dropped until then, probes included.
    pub throttled_until: Option<SystemTime>,
    /// Probe exports attempted while the circuit was open, by any exporter.
    pub probes: u64,
    /// State changes by `(from, to)`.
    pub transitions: TransitionCounts,
    /// Each signal served, in [`Signal::ALL`]'s order.
    pub signals: Vec<SignalSnapshot>,
}

impl BackendSnapshot {
    /// The counts of one signal, if the breaker serves it.
    #[must_use]
    pub fn signal(&self, signal: Signal) -> Option<&SignalSnapshot> {
        self.signals.iter().find(|s| s.signal == signal)
    }
}

/// What became of one signal's items on one breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalSnapshot {
    /// Which signal.
    pub signal: Signal,
    /// Its items by outcome.
    pub counts: SignalCounts,
    /// Its failed exports and their items, by cause (a failed empty probe
    /// counts as a failed export of the signal whose exporter sent it).
    pub failures: FailureCounts,
    /// Its most recent failed export.
    pub last_failure: Option<LastFailure>,
    /// Its items in an export that has started and not ended
    /// (`otel.sdk.exporter.<signal>.inflight`).
    pub inflight: u64,
    /// How long its exports took, by `error.type`
    /// (`otel.sdk.exporter.operation.duration`); batches dropped unsent
    /// are not exports and are not timed.
    pub durations: ExportDurations,
    /// `otel.component.type` of its exporter: `otlp_grpc_log_exporter`
    /// and the like when the breaker was given its
    /// [`protocol`](BackendBreakerBuilder::protocol), else our type's name.
    pub component_type: &'static str,
    /// `otel.component.name`: `<component_type>/<n>`, `n` counting the
    /// breakers of the process that serve this signal with that type, from 0.
    pub component_name: String,
}

impl SignalSnapshot {
    /// Its items by the semantic conventions' `error.type`, for
    /// `otel.sdk.exporter.<signal>.exported`: exported (none), `rejected`,
    /// `circuit_open` (dropped unsent) and each failure cause, every one
    /// listed, zero counts included. They add up to [`SignalCounts::total`].
    pub fn by_error_type(&self) -> impl Iterator<Item = (Option<ExportErrorType>, u64)> + '_ {
        [
            (None, self.counts.exported),
            (Some(ExportErrorType::Rejected), self.counts.rejected),
            (Some(ExportErrorType::CircuitOpen), self.counts.dropped),
        ]
        .into_iter()
        .chain(
            self.failures
                .iter()
                .map(|(cause, counts)| (Some(ExportErrorType::Failed(cause)), counts.spans)),
        )
    }
}

/// The semantic conventions' `error.type` of an export's items that were
/// not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExportErrorType {
    /// `rejected`: the backend took the batch and reported these rejected
    /// (an OTLP partial success, which gives no reason); the conventions'
    /// own value.
    Rejected,
    /// `circuit_open`: dropped unsent by the breaker (the circuit open, a
    /// probe already in flight, or a wait the backend asked for). The
    /// conventions count every item passed to the exporter whose export has
    /// finished; ours finished at once, failed, without reaching the
    /// backend.
    CircuitOpen,
    /// The failure's cause: `timeout`, `unavailable`, `panic`, …
    Failed(FailureCause),
}

impl ExportErrorType {
    /// The value of `error.type`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::CircuitOpen => "circuit_open",
            Self::Failed(cause) => cause.as_str(),
        }
    }
}

impl fmt::Display for ExportErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Export durations of one signal by `error.type`: a histogram for full
/// successes (none), one for partial successes (`rejected`) and one per
/// failure cause; `circuit_open` never has one, nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDurations {
    classes: [DurationHistogram; CLASSES],
}

impl ExportDurations {
    /// The buckets' upper bounds: the semantic conventions' advice for
    /// durations in seconds (as for `http.client.request.duration`), up to
    /// `export_timeout`'s default of 10 s.
    pub const BOUNDS: [Duration; 14] = [
        Duration::from_millis(5),
        Duration::from_millis(10),
        Duration::from_millis(25),
        Duration::from_millis(50),
        Duration::from_millis(75),
        Duration::from_millis(100),
        Duration::from_millis(250),
        Duration::from_millis(500),
        Duration::from_millis(750),
        Duration::from_secs(1),
        Duration::from_millis(2500),
        Duration::from_secs(5),
        Duration::from_millis(7500),
        Duration::from_secs(10),
    ];

    /// Every histogram with its `error.type`: success (`None`) first, then
    /// `rejected`, then each cause in [`FailureCause::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Option<ExportErrorType>, &DurationHistogram)> + '_ {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, h)| (ErrorClass(i).error_type(), h))
    }

    /// The histogram of one `error.type` (`None`: full successes); `None`
    /// for `circuit_open`, which is never timed.
    #[must_use]
    pub fn get(&self, error_type: Option<ExportErrorType>) -> Option<&DurationHistogram> {
        let class = match error_type {
            None => ErrorClass(0),
            Some(ExportErrorType::Rejected) => ErrorClass(1),
            Some(ExportErrorType::Failed(cause)) => ErrorClass::failed(cause),
            Some(ExportErrorType::CircuitOpen) => return None,
        };
        self.classes.get(class.0)
    }
}

/// The durations of some exports, in the buckets of
/// [`ExportDurations::BOUNDS`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DurationHistogram {
    /// Per bucket, not cumulative; the last one is past every bound.
    counts: [u64; BUCKETS],
    sum: Duration,
}

impl DurationHistogram {
    /// Exports timed.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their durations added up.
    #[must_use]
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Each bound with the exports that took at most that long (cumulative,
    /// as Prometheus' `le` buckets); [`count`](Self::count) is the `+Inf` one.
    pub fn cumulative(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        ExportDurations::BOUNDS
            .iter()
            .zip(self.counts.iter())
            .scan(0, |total, (&bound, &n)| {
                *total += n;
                Some((bound, *total))
            })
    }
}

/// Items of one signal (spans, log records or metric data points) by what
/// became of them. Every item handed to the exporter is in exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalCounts {
    /// Accepted by the backend.
    pub exported: u64,
    /// In a batch the backend accepted, but reported rejected (an OTLP
    /// partial success).
    pub rejected: u64,
    /// Dropped unsent: the circuit was open, or the backend asked us to wait.
    pub dropped: u64,
    /// Sent, but the export failed: an error, a timeout or a panic.
    pub failed: u64,
}

impl SignalCounts {
    /// Every item handed to the exporter.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.exported + self.rejected + self.dropped + self.failed
    }
}
