//! A real OTLP receiver for tests, run in-process on loopback, serving the
//! three signals (traces, logs, metrics): OTLP/gRPC on `opentelemetry-proto`'s
//! tonic servers (`grpc.rs`) or OTLP/HTTP with protobuf bodies on hyper
//! (`http.rs`), behind one [`Receiver`] API. Like one collector, it answers
//! every signal by the same [`Mode`]: refusing or hanging applies to all three.
//!
//! Per signal it records the requests (so a test can tell one probe stream
//! from three), the items accepted and rejected, and, for logs and metrics,
//! the accepted records and data points ([`ReceivedLog`],
//! [`ReceivedDataPoint`]) and the requests themselves. The trace API below
//! ([`Snapshot`], [`Totals`]) counts spans only.
//!
//! It counts the spans it accepts (by `service.name` and by span name) and
//! the spans it rejects, keeps the identity of each accepted span (trace,
//! span and parent ids, kind, attributes) so tests can check trace structure,
//! keeps a record of every export request (when it arrived, how many spans it
//! carried, how it was answered, how many requests were in flight), and can be
//! switched at run time into the answers a telemetry backend gives in
//! production, with the details a real collector sends (gRPC `RetryInfo`,
//! HTTP `Retry-After`, partial success): see [`Mode`]. It deliberately knows
//! nothing about `taskman-server` or the breaker: it only sees what arrives on
//! the wire.

mod grpc;
mod http;
mod signals;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use self::http::{LOGS_PATH, METRICS_PATH, TRACES_PATH};
use self::signals::Export;
pub use self::signals::{ReceivedDataPoint, ReceivedLog, Signal};

/// The key under which spans without a `service.name` resource attribute are counted.
pub const NO_SERVICE_NAME: &str = "<no service.name>";

/// How long [`Receiver::set_mode`] and [`Receiver::stop`] wait for open
/// connections to close after the listener is gone.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a restart keeps trying to re-bind the remembered port.
const REBIND_WITHIN: Duration = Duration::from_secs(5);

/// Which OTLP transport a [`Receiver`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`,
    /// and the `logs.v1.LogsService` and `metrics.v1.MetricsService` alike).
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies: `POST /v1/traces`, `/v1/logs`, `/v1/metrics`.
    Http,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        })
    }
}

/// How the receiver answers export requests.
///
/// Each mode is answered as the OTLP specification maps it for the
/// transport (`docs/specification.md` of `opentelemetry-proto`, "OTLP/gRPC
/// Response" and "OTLP/HTTP Response"):
///
/// | mode                       | gRPC                                  | HTTP                              |
/// |----------------------------|---------------------------------------|-----------------------------------|
/// | `Accept`                   | OK                                    | 200, empty response               |
/// | `PartialSuccess{rejected}` | OK + `partial_success`                | 200 + `partial_success`           |
/// | `Unavailable`              | `UNAVAILABLE`                         | 503                               |
/// | `UnavailableRetryAfter(d)` | `UNAVAILABLE` + `RetryInfo(d)`        | 503 + `Retry-After: <secs>`       |
/// | `ResourceExhausted`        | `RESOURCE_EXHAUSTED`                  | 429                               |
/// | `Throttled{retry_after}`   | `RESOURCE_EXHAUSTED` + `RetryInfo`    | 429 + `Retry-After: <secs>`       |
/// | `ThrottledUntil(t)`        | `RESOURCE_EXHAUSTED` + `RetryInfo(t - now)` | 429 + `Retry-After: <HTTP-date>` |
/// | `Unauthenticated`          | `UNAUTHENTICATED`                     | 401                               |
/// | `PermissionDenied`         | `PERMISSION_DENIED`                   | 403                               |
/// | `InvalidArgument`          | `INVALID_ARGUMENT`                    | 400                               |
/// | `TooLarge`                 | `RESOURCE_EXHAUSTED`, no `RetryInfo`  | 413                               |
/// | `Hang`, then released      | `UNAVAILABLE`                         | 503                               |
///
/// Every HTTP 4xx/5xx body is a protobuf `google.rpc.Status`. `<secs>` is
/// the delay rounded up to whole seconds, so a client never retries early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Accept every request and count its spans.
    Accept,
    /// Accept the request but reject `rejected` of its spans (at most all of
    /// them; the last ones in the request), answered OK with
    /// `partial_success.rejected_spans` and an `error_message`.
    PartialSuccess {
        /// How many spans of each request to reject.
        rejected: u64,
    },
    /// Answer gRPC `UNAVAILABLE` / HTTP 503 (the OTLP exporter retries this).
    Unavailable,
    /// Answer gRPC `UNAVAILABLE` with a `google.rpc.RetryInfo` carrying the
    /// delay / HTTP 503 with `Retry-After`.
    UnavailableRetryAfter(Duration),
    /// Answer gRPC `RESOURCE_EXHAUSTED` without retry information / HTTP 429
    /// without `Retry-After` (the OTLP exporter does not retry this over gRPC).
    ResourceExhausted,
    /// Answer gRPC `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo`
    /// carrying the delay (the spec's "throttling") / HTTP 429 with
    /// `Retry-After: <secs>`.
    Throttled {
        /// The delay the client is told to wait.
        retry_after: Duration,
    },
    /// Throttled until a wall-clock time: HTTP 429 with `Retry-After:
    /// <HTTP-date>`; gRPC `RESOURCE_EXHAUSTED` with a `RetryInfo` of the
    /// time remaining (zero once it has passed).
    ThrottledUntil(SystemTime),
    /// Answer gRPC `UNAUTHENTICATED` / HTTP 401 (not retryable).
    Unauthenticated,
    /// Answer gRPC `PERMISSION_DENIED` / HTTP 403 (not retryable).
    PermissionDenied,
    /// Answer gRPC `INVALID_ARGUMENT` / HTTP 400 (not retryable).
    InvalidArgument,
    /// Refuse the request as too large: HTTP 413; over gRPC
    /// `RESOURCE_EXHAUSTED` without `RetryInfo`, which is what gRPC servers
    /// (grpc-go in the Collector, tonic) answer for a message over their
    /// size limit.
    TooLarge,
    /// Take the request and never answer, until the mode changes or the
    /// receiver stops; then answer `UNAVAILABLE` / 503. A client that gives
    /// up first cancels the request.
    Hang,
    /// No listener and no connections: connecting is refused.
    Stopped,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accept => f.write_str("accept"),
            Self::PartialSuccess { rejected } => write!(f, "partial_success({rejected} rejected)"),
            Self::Unavailable => f.write_str("unavailable"),
            Self::UnavailableRetryAfter(delay) => write!(f, "unavailable(retry after {delay:?})"),
            Self::ResourceExhausted => f.write_str("resource_exhausted"),
            Self::Throttled { retry_after } => write!(f, "throttled(retry after {retry_after:?})"),
            Self::ThrottledUntil(until) => {
                write!(f, "throttled(until {})", httpdate::fmt_http_date(*until))
            }
            Self::Unauthenticated => f.write_str("unauthenticated"),
            Self::PermissionDenied => f.write_str("permission_denied"),
            Self::InvalidArgument => f.write_str("invalid_argument"),
            Self::TooLarge => f.write_str("too_large"),
            Self::Hang => f.write_str("hang"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

impl Mode {
    /// The outcome a request arriving in this mode gets.
    fn outcome(self) -> Outcome {
        match self {
            Self::Accept => Outcome::Accepted,
            Self::PartialSuccess { .. } => Outcome::PartialSuccess,
            // `Stopped`: a request on a connection that outlives the listener for a moment.
            Self::Unavailable | Self::UnavailableRetryAfter(_) | Self::Stopped => {
                Outcome::Unavailable
            }
            Self::ResourceExhausted => Outcome::ResourceExhausted,
            Self::Throttled { .. } | Self::ThrottledUntil(_) => Outcome::Throttled,
            Self::Unauthenticated => Outcome::Unauthenticated,
            Self::PermissionDenied => Outcome::PermissionDenied,
            Self::InvalidArgument => Outcome::InvalidArgument,
            Self::TooLarge => Outcome::TooLarge,
            Self::Hang => Outcome::Hung,
        }
    }

    /// How long a client is told to wait before retrying, if this mode says so.
    fn retry_after(self) -> Option<Duration> {
        match self {
            Self::UnavailableRetryAfter(delay) | Self::Throttled { retry_after: delay } => {
                Some(delay)
            }
            Self::ThrottledUntil(until) => Some(
                until
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            ),
            _ => None,
        }
    }

    /// How many of `spans` this mode rejects.
    fn rejected_of(self, spans: usize) -> usize {
        match self {
            Self::PartialSuccess { rejected } => {
                usize::try_from(rejected).map_or(spans, |rejected| rejected.min(spans))
            }
            _ => 0,
        }
    }
}

/// What the receiver decided for one export request when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Answered OK; its spans are counted as received.
    Accepted,
    /// Answered OK with `partial_success`: some spans counted as received,
    /// the rest as rejected.
    PartialSuccess,
    /// Answered `UNAVAILABLE` / 503, with or without a retry delay (including
    /// requests that reach a stopping receiver).
    Unavailable,
    /// Answered `RESOURCE_EXHAUSTED` / 429 without a retry delay.
    ResourceExhausted,
    /// Answered `RESOURCE_EXHAUSTED` / 429 with a retry delay.
    Throttled,
    /// Answered `UNAUTHENTICATED` / 401.
    Unauthenticated,
    /// Answered `PERMISSION_DENIED` / 403.
    PermissionDenied,
    /// Answered `INVALID_ARGUMENT` / 400 because of the mode.
    InvalidArgument,
    /// Refused as too large (see [`Mode::TooLarge`]), or over the HTTP
    /// receiver's body limit.
    TooLarge,
    /// Held without an answer (see [`Mode::Hang`]).
    Hung,
    /// HTTP only: answered 415 because the body was not binary protobuf
    /// (`Content-Type`) or used a compression other than gzip.
    UnsupportedMediaType,
    /// HTTP only: answered 400 because the body did not decode as an
    /// `ExportTraceServiceRequest` (spans are not counted).
    Malformed,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accepted => "accepted",
            Self::PartialSuccess => "partial_success",
            Self::Unavailable => "unavailable",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Throttled => "throttled",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidArgument => "invalid_argument",
            Self::TooLarge => "too_large",
            Self::Hung => "hung",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Malformed => "malformed",
        })
    }
}

/// One export request as the receiver saw it.
///
/// For a logs or metrics request, `spans` and `rejected_spans` count its log
/// records or data points: [`items`](Self::items) and
/// [`rejected_items`](Self::rejected_items) say so in neutral words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// Which service it reached.
    pub signal: Signal,
    /// When the request reached the service.
    pub received_at: Instant,
    /// When the request left the service (answered or cancelled);
    /// `None` while it is in flight.
    pub finished_at: Option<Instant>,
    /// Items (spans, log records, data points) in the request, whatever the outcome.
    pub spans: usize,
    /// Of those, the items rejected by [`Mode::PartialSuccess`].
    pub rejected_spans: usize,
    /// How the receiver decided to answer it.
    pub outcome: Outcome,
    /// Requests in flight when this one arrived, itself included.
    pub concurrent: usize,
    /// Whether the receiver produced an answer; `false` for a request the
    /// client cancelled (or still in flight).
    pub answered: bool,
}

impl ExportRequest {
    /// Items (spans, log records or data points) in the request.
    #[must_use]
    pub fn items(&self) -> usize {
        self.spans
    }

    /// Items rejected by [`Mode::PartialSuccess`].
    #[must_use]
    pub fn rejected_items(&self) -> usize {
        self.rejected_spans
    }

    /// Whether the client gave up on the request before the receiver answered it.
    #[must_use]
    pub fn cancelled(&self) -> bool {
        self.finished_at.is_some() && !self.answered
    }

    /// How long the request was held, if it has finished.
    #[must_use]
    pub fn held_for(&self) -> Option<Duration> {
        self.finished_at
            .map(|end| end.saturating_duration_since(self.received_at))
    }
}

/// Requests and spans that got one [`Outcome`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCount {
    /// Export requests with this outcome.
    pub requests: u64,
    /// Spans carried by those requests.
    pub spans: u64,
}

/// One accepted span, as it arrived on the wire.
///
/// Ids are lowercase hex, as in a W3C `traceparent` header.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` of its resource ([`NO_SERVICE_NAME`] when missing).
    pub service: String,
    /// The span name.
    pub name: String,
    /// The span kind.
    pub kind: SpanKind,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Attributes with scalar values, written as text (`201`, `true`, `GET`);
    /// array, map and byte values are left out.
    pub attributes: BTreeMap<String, String>,
    /// Its resource's attributes (`service.name`, `service.instance.id`, ...), written
    /// like [`attributes`](Self::attributes).
    pub resource: Arc<BTreeMap<String, String>>,
}

impl ReceivedSpan {
    pub(super) fn new(
        service: &str,
        resource: &Arc<BTreeMap<String, String>>,
        span: &Span,
    ) -> Self {
        let parent = hex(&span.parent_span_id);
        Self {
            service: service.to_owned(),
            resource: Arc::clone(resource),
            name: span.name.clone(),
            kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            // An absent parent is sent as no bytes, or by some SDKs as zeros.
            parent_span_id: (!parent.is_empty() && parent.bytes().any(|b| b != b'0'))
                .then_some(parent),
            attributes: scalar_attributes(&span.attributes),
        }
    }

    /// The attribute's value as text, if the span has it.
    #[must_use]
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The resource attribute's value as text, if the span's resource has it.
    #[must_use]
    pub fn resource_attribute(&self, key: &str) -> Option<&str> {
        self.resource.get(key).map(String::as_str)
    }
}

pub(super) fn scalar_attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), scalar_text(kv.value.as_ref()?)?)))
        .collect()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

pub(super) fn scalar_text(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(n) => Some(n.to_string()),
        any_value::Value::DoubleValue(x) => Some(x.to_string()),
        _ => None,
    }
}

/// A consistent copy of everything the receiver has counted so far.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The mode at the time of the snapshot.
    pub mode: Mode,
    /// Spans accepted (received and answered OK, not rejected).
    pub spans: u64,
    /// Spans rejected by [`Mode::PartialSuccess`] (answered OK but not accepted).
    pub rejected_spans: u64,
    /// Accepted spans per `service.name` ([`NO_SERVICE_NAME`] when missing).
    pub spans_by_service: BTreeMap<String, u64>,
    /// Accepted spans per span name.
    pub spans_by_name: BTreeMap<String, u64>,
    /// Every accepted span, in arrival order.
    pub received: Vec<ReceivedSpan>,
    /// Requests and spans per outcome; outcomes never seen are absent.
    pub outcomes: BTreeMap<Outcome, OutcomeCount>,
    /// Every export request, in arrival order.
    pub requests: Vec<ExportRequest>,
    /// Requests in flight now.
    pub in_flight: usize,
    /// The most requests ever in flight at once.
    pub max_in_flight: usize,
    /// What the logs service counted.
    pub logs: SignalSnapshot,
    /// What the metrics service counted.
    pub metrics: SignalSnapshot,
}

impl Snapshot {
    /// Accepted spans from one service.
    #[must_use]
    pub fn spans_from(&self, service: &str) -> u64 {
        self.spans_by_service.get(service).copied().unwrap_or(0)
    }

    /// Accepted spans with one name.
    #[must_use]
    pub fn spans_named(&self, name: &str) -> u64 {
        self.spans_by_name.get(name).copied().unwrap_or(0)
    }

    /// Requests and spans with one outcome (zero when never seen).
    #[must_use]
    pub fn outcome(&self, outcome: Outcome) -> OutcomeCount {
        self.outcomes.get(&outcome).copied().unwrap_or_default()
    }

    /// Accepted spans of one trace (`trace_id` in lowercase hex).
    pub fn spans_in_trace<'a>(
        &'a self,
        trace_id: &'a str,
    ) -> impl Iterator<Item = &'a ReceivedSpan> + 'a {
        self.received.iter().filter(move |s| s.trace_id == trace_id)
    }

    /// The accepted spans whose parent is `parent`.
    pub fn children_of<'a>(
        &'a self,
        parent: &'a ReceivedSpan,
    ) -> impl Iterator<Item = &'a ReceivedSpan> + 'a {
        self.received.iter().filter(move |s| {
            s.trace_id == parent.trace_id && s.parent_span_id.as_deref() == Some(&parent.span_id)
        })
    }

    /// Requests that arrived in `[from, to)`.
    pub fn requests_between(
        &self,
        from: Instant,
        to: Instant,
    ) -> impl Iterator<Item = &ExportRequest> + '_ {
        self.requests
            .iter()
            .filter(move |r| r.received_at >= from && r.received_at < to)
    }

    /// The most requests in flight at once, as seen by requests that arrived in
    /// `[from, to)` (0 when none arrived).
    #[must_use]
    pub fn max_concurrent_between(&self, from: Instant, to: Instant) -> usize {
        self.requests_between(from, to)
            .map(|r| r.concurrent)
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode {}, {} spans accepted {:?} {:?}, {} rejected, {} requests",
            self.mode,
            self.spans,
            self.spans_by_service,
            self.spans_by_name,
            self.rejected_spans,
            self.requests.len()
        )?;
        for (outcome, count) in &self.outcomes {
            write!(
                f,
                ", {outcome}: {} requests/{} spans",
                count.requests, count.spans
            )?;
        }
        write!(
            f,
            ", {} in flight (max {})",
            self.in_flight, self.max_in_flight
        )?;
        for signal in [&self.logs, &self.metrics] {
            if !signal.requests.is_empty() {
                write!(f, "; {signal}")?;
            }
        }
        Ok(())
    }
}

/// What the receiver counted for one signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSnapshot {
    /// The signal.
    pub signal: Signal,
    /// Items accepted (received and answered OK, not rejected).
    pub items: u64,
    /// Items rejected by [`Mode::PartialSuccess`].
    pub rejected: u64,
    /// Requests and items per outcome; outcomes never seen are absent.
    pub outcomes: BTreeMap<Outcome, OutcomeCount>,
    /// Every export request of this signal, in arrival order.
    pub requests: Vec<ExportRequest>,
    /// Requests of this signal in flight now.
    pub in_flight: usize,
    /// The most requests of this signal ever in flight at once.
    pub max_in_flight: usize,
}

impl SignalSnapshot {
    /// Requests and items with one outcome (zero when never seen).
    #[must_use]
    pub fn outcome(&self, outcome: Outcome) -> OutcomeCount {
        self.outcomes.get(&outcome).copied().unwrap_or_default()
    }
}

impl fmt::Display for SignalSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {} accepted, {} rejected, {} requests",
            self.signal,
            self.items,
            self.signal.items(),
            self.rejected,
            self.requests.len()
        )?;
        for (outcome, count) in &self.outcomes {
            write!(f, ", {outcome}: {} requests", count.requests)?;
        }
        write!(f, ", {} in flight", self.in_flight)
    }
}

/// What [`Receiver::totals`] returns: the counts of a [`Snapshot`], nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Spans accepted (received and answered OK, not rejected).
    pub spans: u64,
    /// Spans rejected by [`Mode::PartialSuccess`].
    pub rejected_spans: u64,
    /// Export requests, whatever their outcome.
    pub requests: u64,
    /// Requests and spans per outcome; outcomes never seen are absent.
    pub outcomes: BTreeMap<Outcome, OutcomeCount>,
}

impl Totals {
    /// Requests and spans with one outcome (zero when never seen).
    #[must_use]
    pub fn outcome(&self, outcome: Outcome) -> OutcomeCount {
        self.outcomes.get(&outcome).copied().unwrap_or_default()
    }
}

/// What can go wrong while starting, restarting or stopping the receiver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// The listening socket could not be bound.
    #[error("cannot bind the OTLP receiver to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: io::Error,
    },
    /// The tonic server ended with an error.
    #[error("the OTLP receiver on {addr} failed: {source}")]
    Serve {
        /// The receiver's address.
        addr: SocketAddr,
        /// The server's error.
        source: tonic::transport::Error,
    },
    /// The server task panicked or was cancelled.
    #[error("the OTLP receiver task on {addr} ended abnormally: {source}")]
    Task {
        /// The receiver's address.
        addr: SocketAddr,
        /// How the task ended.
        source: tokio::task::JoinError,
    },
    /// Connections were still open after the grace period.
    #[error(
        "the OTLP receiver on {addr} still had open connections {grace:?} after it was told to stop"
    )]
    ShutdownTimedOut {
        /// The receiver's address.
        addr: SocketAddr,
        /// How long it waited.
        grace: Duration,
    },
}

/// A running (or stopped) OTLP trace receiver on loopback, speaking one
/// [`Protocol`].
///
/// Its port is chosen once, at [`Receiver::start`] or
/// [`Receiver::start_http`], and kept across [`Mode::Stopped`] and back, so
/// a service configured with [`Receiver::endpoint`] finds it again. Dropping
/// it stops it.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    protocol: Protocol,
    shared: Arc<Shared>,
    mode: watch::Sender<Mode>,
    // An async lock because mode changes await the server's shutdown and re-bind.
    server: tokio::sync::Mutex<Option<Running>>,
}

impl Receiver {
    /// Starts an OTLP/gRPC receiver on `127.0.0.1` with a port the OS picks,
    /// in [`Mode::Accept`].
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn start() -> Result<Self, ReceiverError> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts an OTLP/HTTP (protobuf) receiver on `127.0.0.1` with a port the
    /// OS picks, in [`Mode::Accept`].
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn start_http() -> Result<Self, ReceiverError> {
        Self::start_with(Protocol::Http, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts an OTLP/gRPC receiver on `addr` (port 0 lets the OS pick), in
    /// [`Mode::Accept`].
    ///
    /// Must be called inside a Tokio runtime, which then runs the server.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn start_on(addr: SocketAddr) -> Result<Self, ReceiverError> {
        Self::start_with(Protocol::Grpc, addr).await
    }

    /// Starts a receiver speaking `protocol` on `addr` (port 0 lets the OS
    /// pick), in [`Mode::Accept`].
    ///
    /// Must be called inside a Tokio runtime, which then runs the server.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn start_with(protocol: Protocol, addr: SocketAddr) -> Result<Self, ReceiverError> {
        let listener = bind(addr).map_err(|source| ReceiverError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ReceiverError::Bind { addr, source })?;
        let shared = Arc::new(Shared::default());
        let (mode, _) = watch::channel(Mode::Accept);
        let running = Running::spawn(protocol, listener, &shared, &mode);
        Ok(Self {
            addr,
            protocol,
            shared,
            mode,
            server: tokio::sync::Mutex::new(Some(running)),
        })
    }

    /// The address the receiver listens on (kept while stopped).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The protocol the receiver speaks.
    #[must_use]
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// What an OTLP exporter's endpoint setting takes for this receiver
    /// (`opentelemetry-otlp`'s `with_endpoint`): over gRPC the base URL
    /// `http://127.0.0.1:PORT`; over HTTP the full traces URL
    /// `http://127.0.0.1:PORT/v1/traces`, because a signal-specific HTTP
    /// endpoint is used as is.
    #[must_use]
    pub fn endpoint(&self) -> String {
        match self.protocol {
            Protocol::Grpc => self.base_url(),
            Protocol::Http => self.traces_endpoint(),
        }
    }

    /// `http://127.0.0.1:PORT`, whatever the protocol (what
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` takes: HTTP exporters append `/v1/traces`).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1/traces`, the OTLP/HTTP traces URL (what
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` takes), whatever the protocol.
    #[must_use]
    pub fn traces_endpoint(&self) -> String {
        format!("http://{}{TRACES_PATH}", self.addr)
    }

    /// What an exporter of `signal` takes as its endpoint: over gRPC the base
    /// URL (one server serves every signal), over HTTP the signal's URL
    /// (`/v1/traces`, `/v1/logs`, `/v1/metrics`).
    #[must_use]
    pub fn endpoint_for(&self, signal: Signal) -> String {
        match self.protocol {
            Protocol::Grpc => self.base_url(),
            Protocol::Http => format!("{}{}", self.base_url(), signal.http_path()),
        }
    }

    /// The current mode.
    #[must_use]
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Switches the mode.
    ///
    /// Hung requests are released (answered `UNAVAILABLE`) by any change.
    /// [`Mode::Stopped`] closes the listener and every connection and returns
    /// once they are closed; leaving it re-binds the same port first.
    ///
    /// # Errors
    /// When the port cannot be bound again (on leaving `Stopped`), or
    /// connections do not close within a few seconds (on entering it).
    pub async fn set_mode(&self, mode: Mode) -> Result<(), ReceiverError> {
        let mut server = self.server.lock().await;
        // Changing the mode first releases hung requests, which a graceful
        // shutdown would otherwise wait for.
        self.mode.send_replace(mode);
        match (mode, server.take()) {
            (Mode::Stopped, Some(running)) => running.stop(self.addr).await,
            (Mode::Stopped, None) => Ok(()),
            (_, Some(running)) => {
                *server = Some(running);
                Ok(())
            }
            (_, None) => match rebind(self.addr).await {
                Ok(listener) => {
                    *server = Some(Running::spawn(
                        self.protocol,
                        listener,
                        &self.shared,
                        &self.mode,
                    ));
                    Ok(())
                }
                Err(err) => {
                    self.mode.send_replace(Mode::Stopped);
                    Err(err)
                }
            },
        }
    }

    /// Stops the receiver: releases hung requests, closes the listener and
    /// waits for connections to close.
    ///
    /// # Errors
    /// When connections do not close within a few seconds or the server failed.
    pub async fn stop(self) -> Result<(), ReceiverError> {
        self.set_mode(Mode::Stopped).await
    }

    /// From now on, accepted spans, log records and data points are counted
    /// but no longer kept one by one (in [`Snapshot::received`],
    /// [`Receiver::logs`], [`Receiver::metric_points`], nor the log and metric
    /// requests; what they hold already stays): for long runs such as
    /// benchmarks, where millions of spans would pile up.
    pub fn forget_spans(&self) {
        self.shared.forget_spans.store(true, Ordering::SeqCst);
    }

    /// The counts alone, without copying every span and request as
    /// [`Receiver::snapshot`] does: cheap enough to poll during a benchmark.
    #[must_use]
    pub fn totals(&self) -> Totals {
        let stats = self.shared.stats();
        let traces = &stats.signals[Signal::Traces.index()];
        Totals {
            spans: traces.items,
            rejected_spans: traces.rejected,
            requests: traces.requests.len() as u64,
            outcomes: traces.outcomes.clone(),
        }
    }

    /// What one signal's service counted so far.
    #[must_use]
    pub fn signal(&self, signal: Signal) -> SignalSnapshot {
        self.shared.signal_snapshot(&self.shared.stats(), signal)
    }

    /// Every export request of `signal`, in arrival order.
    #[must_use]
    pub fn requests(&self, signal: Signal) -> Vec<ExportRequest> {
        self.shared.stats().signals[signal.index()].requests.clone()
    }

    /// Log records accepted so far (counted also after [`Receiver::forget_spans`]).
    #[must_use]
    pub fn log_record_count(&self) -> u64 {
        self.shared.stats().signals[Signal::Logs.index()].items
    }

    /// Metric data points accepted so far (counted also after [`Receiver::forget_spans`]).
    #[must_use]
    pub fn metric_point_count(&self) -> u64 {
        self.shared.stats().signals[Signal::Metrics.index()].items
    }

    /// Every accepted log record, in arrival order.
    #[must_use]
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.shared.stats().received_logs.clone()
    }

    /// Every accepted metric data point, in arrival order.
    #[must_use]
    pub fn metric_points(&self) -> Vec<ReceivedDataPoint> {
        self.shared.stats().received_points.clone()
    }

    /// Every logs export request that decoded, whatever it was answered, as sent.
    #[must_use]
    pub fn log_requests(&self) -> Vec<ExportLogsServiceRequest> {
        self.shared.stats().log_requests.clone()
    }

    /// Every metrics export request that decoded, whatever it was answered, as sent.
    #[must_use]
    pub fn metric_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.shared.stats().metric_requests.clone()
    }

    /// A copy of everything counted so far.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let stats = self.shared.stats();
        let traces = &stats.signals[Signal::Traces.index()];
        Snapshot {
            mode: self.mode(),
            spans: traces.items,
            rejected_spans: traces.rejected,
            spans_by_service: stats.spans_by_service.clone(),
            spans_by_name: stats.spans_by_name.clone(),
            received: stats.received.clone(),
            outcomes: traces.outcomes.clone(),
            requests: traces.requests.clone(),
            in_flight: self.shared.in_flight[Signal::Traces.index()].load(Ordering::SeqCst),
            max_in_flight: self.shared.max_in_flight[Signal::Traces.index()].load(Ordering::SeqCst),
            logs: self.shared.signal_snapshot(&stats, Signal::Logs),
            metrics: self.shared.signal_snapshot(&stats, Signal::Metrics),
        }
    }

    /// Waits until `done` holds for a snapshot, re-checking whenever a request
    /// arrives or finishes, for at most `within`.
    ///
    /// # Errors
    /// After `within`, a message naming `what` and what the receiver saw.
    pub async fn wait_until<F>(
        &self,
        within: Duration,
        what: &str,
        mut done: F,
    ) -> Result<Snapshot, String>
    where
        F: FnMut(&Snapshot) -> bool,
    {
        let deadline = tokio::time::Instant::now() + within;
        // Subscribing before the first check means no change can slip between
        // a check and the wait that follows it.
        let mut changes = self.shared.changes.subscribe();
        loop {
            let snapshot = self.snapshot();
            if done(&snapshot) {
                return Ok(snapshot);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(format!(
                        "waited {within:?} for {what}; the receiver saw: {snapshot}"
                    ));
                }
            }
        }
    }

    /// Waits until at least `min` spans have been accepted.
    ///
    /// # Errors
    /// After `within`, a message with what the receiver saw.
    pub async fn wait_for_spans(&self, min: u64, within: Duration) -> Result<(), String> {
        self.wait_until(within, &format!("at least {min} accepted spans"), |s| {
            s.spans >= min
        })
        .await
        .map(drop)
    }

    /// Waits until at least `min` export requests have arrived, whatever their outcome.
    ///
    /// # Errors
    /// After `within`, a message with what the receiver saw.
    pub async fn wait_for_requests(&self, min: usize, within: Duration) -> Result<(), String> {
        self.wait_until(within, &format!("at least {min} export requests"), |s| {
            s.requests.len() >= min
        })
        .await
        .map(drop)
    }

    /// Waits until at least `min` log records have been accepted.
    ///
    /// # Errors
    /// After `within`, a message with what the receiver saw.
    pub async fn wait_for_log_records(&self, min: u64, within: Duration) -> Result<(), String> {
        self.wait_until(
            within,
            &format!("at least {min} accepted log records"),
            |s| s.logs.items >= min,
        )
        .await
        .map(drop)
    }

    /// Waits until at least `min` metric data points have been accepted.
    ///
    /// # Errors
    /// After `within`, a message with what the receiver saw.
    pub async fn wait_for_metric_points(&self, min: u64, within: Duration) -> Result<(), String> {
        self.wait_until(
            within,
            &format!("at least {min} accepted metric data points"),
            |s| s.metrics.items >= min,
        )
        .await
        .map(drop)
    }

    /// Waits until at least `min` export requests of `signal` have arrived,
    /// whatever their outcome.
    ///
    /// # Errors
    /// After `within`, a message with what the receiver saw.
    pub async fn wait_for_signal_requests(
        &self,
        signal: Signal,
        min: usize,
        within: Duration,
    ) -> Result<(), String> {
        self.wait_until(
            within,
            &format!("at least {min} {signal} export requests"),
            |s| match signal {
                Signal::Traces => s.requests.len() >= min,
                Signal::Logs => s.logs.requests.len() >= min,
                Signal::Metrics => s.metrics.requests.len() >= min,
            },
        )
        .await
        .map(drop)
    }

    /// Waits until exactly `count` trace requests are in flight.
    ///
    /// # Errors
    /// After `within`, a message with what the receiver saw.
    pub async fn wait_for_in_flight(&self, count: usize, within: Duration) -> Result<(), String> {
        self.wait_until(
            within,
            &format!("exactly {count} requests in flight"),
            |s| s.in_flight == count,
        )
        .await
        .map(drop)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Releases hung requests; dropping the shutdown sender inside `Running`
        // closes the listener, then every connection, in the background.
        self.mode.send_replace(Mode::Stopped);
        drop(self.server.get_mut().take());
    }
}

/// The server task (tonic or hyper) and the means to stop it.
#[derive(Debug)]
struct Running {
    // Sending, or dropping, this stops the server.
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    fn spawn(
        protocol: Protocol,
        listener: TcpListener,
        shared: &Arc<Shared>,
        mode: &watch::Sender<Mode>,
    ) -> Self {
        let (shutdown, stopped) = oneshot::channel::<()>();
        // An error means the sender was dropped: stop then too.
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = match protocol {
            Protocol::Grpc => tokio::spawn(grpc::serve(
                listener,
                Arc::clone(shared),
                mode.subscribe(),
                stopped,
            )),
            Protocol::Http => tokio::spawn(http::serve(
                listener,
                Arc::clone(shared),
                mode.subscribe(),
                stopped,
            )),
        };
        Self { shutdown, task }
    }

    /// Closes the listener at once (both servers drop it on the signal), then
    /// waits for the connections to close after their GOAWAY (HTTP/2) or
    /// their current response (HTTP/1.1).
    async fn stop(self, addr: SocketAddr) -> Result<(), ReceiverError> {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(source))) => Err(ReceiverError::Serve { addr, source }),
            Ok(Err(source)) => Err(ReceiverError::Task { addr, source }),
            Err(_) => Err(ReceiverError::ShutdownTimedOut {
                addr,
                grace: SHUTDOWN_GRACE,
            }),
        }
    }
}

/// Binds with `SO_REUSEADDR` so the port can be taken again while old
/// connections linger in `TIME_WAIT`.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds the remembered port again, retrying briefly while the kernel still
/// holds it.
async fn rebind(addr: SocketAddr) -> Result<TcpListener, ReceiverError> {
    let deadline = Instant::now() + REBIND_WITHIN;
    loop {
        match bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(err) if err.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(source) => return Err(ReceiverError::Bind { addr, source }),
        }
    }
}

/// State shared by the receiver handle and the request handlers.
#[derive(Debug, Default)]
struct Shared {
    stats: Mutex<Stats>,
    /// Set by [`Receiver::forget_spans`].
    forget_spans: AtomicBool,
    /// Per signal, indexed by [`Signal::index`].
    in_flight: [AtomicUsize; 3],
    max_in_flight: [AtomicUsize; 3],
    // Bumped on every change to `stats`, so waiters need not poll.
    changes: watch::Sender<u64>,
}

/// What one signal's service counted.
#[derive(Debug, Default)]
struct SignalStats {
    items: u64,
    rejected: u64,
    outcomes: BTreeMap<Outcome, OutcomeCount>,
    requests: Vec<ExportRequest>,
}

#[derive(Debug, Default)]
struct Stats {
    /// Per signal, indexed by [`Signal::index`].
    signals: [SignalStats; 3],
    spans_by_service: BTreeMap<String, u64>,
    spans_by_name: BTreeMap<String, u64>,
    received: Vec<ReceivedSpan>,
    received_logs: Vec<ReceivedLog>,
    received_points: Vec<ReceivedDataPoint>,
    log_requests: Vec<ExportLogsServiceRequest>,
    metric_requests: Vec<ExportMetricsServiceRequest>,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        // A panic elsewhere must not hide the counts from the test that asks.
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn signal_snapshot(&self, stats: &Stats, signal: Signal) -> SignalSnapshot {
        let counted = &stats.signals[signal.index()];
        SignalSnapshot {
            signal,
            items: counted.items,
            rejected: counted.rejected,
            outcomes: counted.outcomes.clone(),
            requests: counted.requests.clone(),
            in_flight: self.in_flight[signal.index()].load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight[signal.index()].load(Ordering::SeqCst),
        }
    }

    /// Records a request that arrived in `mode` and returns the guard that
    /// records its end, with what the mode decided.
    fn begin_in<R: Export>(self: &Arc<Self>, mode: Mode, request: &R) -> InFlight {
        let rejected = mode.rejected_of(request.items());
        self.begin(request, mode.outcome(), rejected)
    }

    /// Records a request on arrival and returns the guard that records its
    /// end. With an accepting `outcome`, the last `rejected` items of the
    /// request are counted as rejected and the others as accepted.
    fn begin<R: Export>(
        self: &Arc<Self>,
        request: &R,
        outcome: Outcome,
        rejected: usize,
    ) -> InFlight {
        let signal = R::SIGNAL;
        let concurrent = self.in_flight[signal.index()].fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight[signal.index()].fetch_max(concurrent, Ordering::SeqCst);
        let keep = !self.forget_spans.load(Ordering::SeqCst);
        let accepting = matches!(outcome, Outcome::Accepted | Outcome::PartialSuccess);
        let total = request.items();
        let rejected = if accepting { rejected.min(total) } else { 0 };
        let to_accept = if accepting { total - rejected } else { 0 };
        let index = {
            let mut stats = self.stats();
            request.record(&mut stats, to_accept, keep);
            let counted = &mut stats.signals[signal.index()];
            counted.items += to_accept as u64;
            counted.rejected += rejected as u64;
            let count = counted.outcomes.entry(outcome).or_default();
            count.requests += 1;
            count.spans += total as u64;
            counted.requests.push(ExportRequest {
                signal,
                received_at: Instant::now(),
                finished_at: None,
                spans: total,
                rejected_spans: rejected,
                outcome,
                concurrent,
                answered: false,
            });
            counted.requests.len() - 1
        };
        self.changed();
        InFlight {
            shared: Arc::clone(self),
            signal,
            index,
            answered: false,
            outcome,
            rejected,
        }
    }
}

/// Waits while the mode stays [`Mode::Hang`]; returns once it changes or the
/// receiver (the sender) is gone.
async fn hang(mode_changes: &mut watch::Receiver<Mode>) {
    while mode_changes.changed().await.is_ok() {
        if *mode_changes.borrow_and_update() != Mode::Hang {
            break;
        }
    }
}

pub(super) fn service_name(resource: Option<&Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|value| match value {
            any_value::Value::StringValue(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| NO_SERVICE_NAME.to_owned())
}

/// One request in flight; dropping it (answered, or cancelled by the client
/// dropping the handler) records the end.
#[derive(Debug)]
struct InFlight {
    shared: Arc<Shared>,
    signal: Signal,
    index: usize,
    answered: bool,
    /// What the receiver decided on arrival.
    outcome: Outcome,
    /// Items rejected (by [`Mode::PartialSuccess`]).
    rejected: usize,
}

impl InFlight {
    fn answer<T>(mut self, answer: T) -> T {
        self.answered = true;
        answer
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut stats = self.shared.stats();
            if let Some(request) = stats.signals[self.signal.index()]
                .requests
                .get_mut(self.index)
            {
                request.finished_at = Some(Instant::now());
                request.answered = self.answered;
            }
        }
        self.shared.in_flight[self.signal.index()].fetch_sub(1, Ordering::SeqCst);
        self.shared.changed();
    }
}

#[cfg(test)]
mod tests {
    //! Each mode, driven by the real `opentelemetry-otlp` tonic exporter.

    use std::borrow::Cow;
    use std::time::SystemTime;

    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

    use super::*;

    /// Generous: only reached when something is broken.
    const WAIT: Duration = Duration::from_secs(10);

    fn exporter(receiver: &Receiver, timeout: Duration) -> opentelemetry_otlp::SpanExporter {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(receiver.endpoint())
            .with_timeout(timeout)
            .build()
            .unwrap()
    }

    fn span(name: &'static str, n: u64) -> SpanData {
        let now = SystemTime::now();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(u128::from(n) + 1),
                SpanId::from(n + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed(name),
            start_time: now,
            end_time: now,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: SpanStatus::Unset,
            instrumentation_scope: InstrumentationScope::builder("receiver-tests").build(),
        }
    }

    async fn export(
        exporter: &mut opentelemetry_otlp::SpanExporter,
        service: &'static str,
        names: &[&'static str],
    ) -> OTelSdkResult {
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(service)
                .build(),
        );
        let batch = names
            .iter()
            .zip(0..)
            .map(|(name, n)| span(name, n))
            .collect();
        exporter.export(batch).await
    }

    fn error_text(result: OTelSdkResult) -> String {
        format!("{:?}", result.expect_err("the export should have failed"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accept_counts_spans_by_service_and_by_name() {
        let receiver = Receiver::start().await.unwrap();
        assert_eq!(receiver.endpoint(), format!("http://{}", receiver.addr()));
        let mut exporter = exporter(&receiver, WAIT);

        export(
            &mut exporter,
            "alpha",
            &["GET /tasks", "GET /tasks", "storage.list"],
        )
        .await
        .unwrap();
        export(&mut exporter, "beta", &["GET /tasks", "POST /tasks"])
            .await
            .unwrap();
        receiver.wait_for_spans(5, WAIT).await.unwrap();

        let seen = receiver.snapshot();
        assert_eq!(seen.spans, 5);
        assert_eq!(seen.spans_from("alpha"), 3);
        assert_eq!(seen.spans_from("beta"), 2);
        assert_eq!(seen.spans_named("GET /tasks"), 3);
        assert_eq!(seen.spans_named("storage.list"), 1);
        assert_eq!(seen.spans_named("POST /tasks"), 1);
        assert_eq!(
            seen.outcome(Outcome::Accepted),
            OutcomeCount {
                requests: 2,
                spans: 5
            }
        );
        assert_eq!(seen.requests.len(), 2);
        assert!(seen.requests.iter().all(|r| r.answered && !r.cancelled()));
        assert_eq!(seen.in_flight, 0);
        assert_eq!(seen.max_in_flight, 1);

        // Waiting for more than arrives fails after the deadline and says what was seen.
        let err = receiver
            .wait_for_spans(6, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.contains("at least 6 accepted spans"), "{err}");
        assert!(err.contains("5 spans accepted"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forgetting_spans_keeps_counting_them() {
        let receiver = Receiver::start().await.unwrap();
        let mut exporter = exporter(&receiver, WAIT);
        export(&mut exporter, "alpha", &["kept"]).await.unwrap();
        receiver.forget_spans();
        export(&mut exporter, "alpha", &["counted", "counted"])
            .await
            .unwrap();
        receiver.set_mode(Mode::Unavailable).await.unwrap();
        let _ = export(&mut exporter, "alpha", &["refused"]).await;

        let totals = receiver.totals();
        assert_eq!(totals.spans, 3);
        assert_eq!(
            totals.requests,
            2 + 4,
            "two accepted, one refused and retried 3 times"
        );
        assert_eq!(
            totals.outcome(Outcome::Accepted),
            OutcomeCount {
                requests: 2,
                spans: 3
            }
        );
        assert_eq!(totals.outcome(Outcome::Unavailable).requests, 4);
        let seen = receiver.snapshot();
        assert_eq!(seen.spans_named("counted"), 2);
        let names: Vec<&str> = seen.received.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["kept"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accepted_spans_keep_their_ids_kind_and_attributes() {
        let receiver = Receiver::start().await.unwrap();
        let mut exporter = exporter(&receiver, WAIT);
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("alpha")
                .build(),
        );
        let root = span("GET /tasks", 0x0a);
        let mut child = span("SELECT tasks", 0x0b);
        child.span_context = SpanContext::new(
            root.span_context.trace_id(),
            SpanId::from(0x0c),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        child.parent_span_id = root.span_context.span_id();
        child.span_kind = SpanKind::Client;
        child.attributes = vec![
            opentelemetry::KeyValue::new("db.operation.name", "SELECT"),
            opentelemetry::KeyValue::new("http.response.status_code", 200_i64),
            opentelemetry::KeyValue::new("flag", true),
        ];
        exporter.export(vec![root, child]).await.unwrap();

        let seen = receiver.snapshot();
        let [root, child] = seen.received.as_slice() else {
            panic!("expected two spans: {:?}", seen.received);
        };
        assert_eq!(root.service, "alpha");
        assert_eq!(root.kind, crate::receiver::SpanKind::Server);
        assert_eq!(root.trace_id, "0000000000000000000000000000000b");
        assert_eq!(root.span_id, "000000000000000b");
        assert_eq!(root.parent_span_id, None);
        assert_eq!(child.kind, crate::receiver::SpanKind::Client);
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.span_id, "000000000000000c");
        assert_eq!(child.parent_span_id.as_deref(), Some("000000000000000b"));
        assert_eq!(child.attribute("db.operation.name"), Some("SELECT"));
        assert_eq!(child.attribute("http.response.status_code"), Some("200"));
        assert_eq!(child.attribute("flag"), Some("true"));
        assert_eq!(seen.children_of(root).count(), 1);
        assert_eq!(seen.spans_in_trace(&root.trace_id).count(), 2);
        assert_eq!(seen.children_of(child).count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_is_answered_with_its_code_and_the_exporter_retries_it_three_times() {
        let receiver = Receiver::start().await.unwrap();
        let mut exporter = exporter(&receiver, WAIT);
        receiver.set_mode(Mode::Unavailable).await.unwrap();

        let err = error_text(export(&mut exporter, "alpha", &["GET /tasks"]).await);
        assert!(err.contains("gRPC code: Unavailable"), "{err}");

        // The OTLP exporter's default retry policy: one attempt plus 3 retries.
        let seen = receiver.snapshot();
        assert_eq!(
            seen.outcome(Outcome::Unavailable),
            OutcomeCount {
                requests: 4,
                spans: 4
            }
        );
        assert_eq!(seen.spans, 0);

        receiver.set_mode(Mode::Accept).await.unwrap();
        export(&mut exporter, "alpha", &["GET /tasks"])
            .await
            .unwrap();
        assert_eq!(receiver.snapshot().spans_from("alpha"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resource_exhausted_is_answered_with_its_code_and_not_retried() {
        let receiver = Receiver::start().await.unwrap();
        let mut exporter = exporter(&receiver, WAIT);
        receiver.set_mode(Mode::ResourceExhausted).await.unwrap();

        let err = error_text(export(&mut exporter, "alpha", &["GET /tasks", "x"]).await);
        assert!(err.contains("gRPC code: ResourceExhausted"), "{err}");

        // Without RetryInfo the exporter treats it as final (OTLP specification).
        let seen = receiver.snapshot();
        assert_eq!(
            seen.outcome(Outcome::ResourceExhausted),
            OutcomeCount {
                requests: 1,
                spans: 2
            }
        );
        assert_eq!(seen.spans, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_request_is_bounded_by_the_exporter_timeout_and_then_cancelled() {
        let receiver = Receiver::start().await.unwrap();
        let timeout = Duration::from_millis(300);
        let mut exporter = exporter(&receiver, timeout);
        receiver.set_mode(Mode::Hang).await.unwrap();

        let started = Instant::now();
        let err = error_text(export(&mut exporter, "alpha", &["GET /tasks"]).await);
        let took = started.elapsed();
        assert!(took >= timeout, "returned after {took:?}: {err}");
        assert!(took < WAIT, "returned after {took:?}: {err}");

        // The client's give-up reaches the receiver as a cancelled request.
        let seen = receiver
            .wait_until(WAIT, "the hung request to end", |s| {
                s.in_flight == 0 && s.requests.iter().all(|r| r.finished_at.is_some())
            })
            .await
            .unwrap();
        // The whole timeout budget went on one attempt, so the exporter did not retry.
        assert_eq!(
            seen.outcome(Outcome::Hung),
            OutcomeCount {
                requests: 1,
                spans: 1
            }
        );
        assert!(seen.requests[0].cancelled(), "{:?}", seen.requests[0]);
        assert_eq!(seen.spans, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_request_never_completes_until_the_mode_changes() {
        let receiver = Receiver::start().await.unwrap();
        let mut exporter = exporter(&receiver, WAIT);
        receiver.set_mode(Mode::Hang).await.unwrap();

        let mut pending =
            tokio::spawn(async move { export(&mut exporter, "alpha", &["GET /tasks"]).await });
        receiver.wait_for_in_flight(1, WAIT).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut pending)
                .await
                .is_err(),
            "a hung export completed while the receiver was still hanging"
        );

        // Released with UNAVAILABLE, the exporter retries into the accepting receiver.
        receiver.set_mode(Mode::Accept).await.unwrap();
        pending.await.unwrap().unwrap();

        let seen = receiver.snapshot();
        assert_eq!(seen.outcome(Outcome::Hung).requests, 1);
        assert!(seen.requests[0].answered, "{:?}", seen.requests[0]);
        // The released attempt is not counted as received: only the retry is.
        assert_eq!(seen.spans, 1);
        assert_eq!(
            seen.outcome(Outcome::Accepted),
            OutcomeCount {
                requests: 1,
                spans: 1
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_counts_concurrent_requests() {
        let receiver = Receiver::start().await.unwrap();
        receiver.set_mode(Mode::Hang).await.unwrap();
        let window_start = Instant::now();

        let mut first = exporter(&receiver, WAIT);
        let mut second = exporter(&receiver, WAIT);
        let first = tokio::spawn(async move { export(&mut first, "alpha", &["a"]).await });
        let second = tokio::spawn(async move { export(&mut second, "beta", &["b"]).await });
        receiver.wait_for_in_flight(2, WAIT).await.unwrap();

        receiver.set_mode(Mode::Accept).await.unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        receiver.wait_for_in_flight(0, WAIT).await.unwrap();

        let seen = receiver.snapshot();
        assert_eq!(seen.max_in_flight, 2);
        assert_eq!(seen.max_concurrent_between(window_start, Instant::now()), 2);
        let accepted: Vec<_> = seen
            .requests
            .iter()
            .filter(|r| r.outcome == Outcome::Accepted)
            .collect();
        assert_eq!(accepted.len(), 2);
        assert_eq!(seen.spans_from("alpha") + seen.spans_from("beta"), 2);
        // Before the first hung request arrived, nothing was in flight.
        assert_eq!(
            seen.max_concurrent_between(window_start - WAIT, window_start),
            0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopped_refuses_connections_and_comes_back_on_the_same_port() {
        let receiver = Receiver::start().await.unwrap();
        let addr = receiver.addr();
        let mut exporter = exporter(&receiver, WAIT);
        // An open connection that the stop has to close as well.
        export(&mut exporter, "alpha", &["before"]).await.unwrap();

        receiver.set_mode(Mode::Stopped).await.unwrap();
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        let err = error_text(export(&mut exporter, "alpha", &["during"]).await);
        assert!(err.contains("gRPC code: Unavailable"), "{err}");
        assert!(err.to_lowercase().contains("connection refused"), "{err}");
        assert_eq!(receiver.snapshot().requests.len(), 1, "nothing reached it");

        receiver.set_mode(Mode::Accept).await.unwrap();
        assert_eq!(receiver.addr(), addr);
        // The same exporter, configured once, finds the receiver again.
        export(&mut exporter, "alpha", &["after"]).await.unwrap();
        let seen = receiver.snapshot();
        assert_eq!(seen.spans_named("before"), 1);
        assert_eq!(seen.spans_named("during"), 0);
        assert_eq!(seen.spans_named("after"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_releases_hung_requests_and_closes_the_port() {
        let receiver = Receiver::start().await.unwrap();
        let addr = receiver.addr();
        let mut exporter = exporter(&receiver, WAIT);
        receiver.set_mode(Mode::Hang).await.unwrap();
        let pending =
            tokio::spawn(async move { export(&mut exporter, "alpha", &["GET /tasks"]).await });
        receiver.wait_for_in_flight(1, WAIT).await.unwrap();

        tokio::time::timeout(WAIT, receiver.stop())
            .await
            .expect("stop waited for the hung request")
            .unwrap();
        let err = error_text(tokio::time::timeout(WAIT, pending).await.unwrap().unwrap());
        assert!(err.contains("gRPC code: Unavailable"), "{err}");
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_receiver_closes_the_port() {
        let receiver = Receiver::start().await.unwrap();
        let addr = receiver.addr();
        drop(receiver);

        // The listener closes in the background, soon after the drop.
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => break,
                other => assert!(Instant::now() < deadline, "still accepting: {other:?}"),
            }
            tokio::task::yield_now().await;
        }
    }
}
