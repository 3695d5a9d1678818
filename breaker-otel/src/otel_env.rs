//! The one reader of the standard `OTEL_*` variables the pipeline honours, for spans, log
//! records and metrics.
//!
//! The OpenTelemetry SDK and the OTLP exporter each read these variables on their own and
//! ignore a malformed value silently, falling back to a default: spans then go somewhere
//! the operator did not intend, or nowhere, or a core spins. [`OtlpEnv`] reads them once,
//! from the process or from a given map, with the specification's rules (an empty value is
//! unset; the signal-specific `..._TRACES_...`, `..._LOGS_...` or `..._METRICS_...` variable
//! wins over the generic one), checks
//! each value for the use the pipeline makes of it, and the pipeline passes the results to
//! the SDK explicitly. No error and no [`OtlpEnv::describe`] line shows a secret: header
//! values become `***`, URL userinfo `***@`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_otlp::{
    OTEL_EXPORTER_OTLP_COMPRESSION, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL_GRPC,
    OTEL_EXPORTER_OTLP_PROTOCOL_HTTP_PROTOBUF, OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
};
#[cfg(feature = "bench")]
use opentelemetry_sdk::trace::{BatchConfig, BatchConfigBuilder};
use opentelemetry_sdk::trace::{
    OTEL_BSP_EXPORT_TIMEOUT, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE_DEFAULT, OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT, OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_SCHEDULE_DELAY_DEFAULT,
};

use opentelemetry_sdk::metrics::Temporality;

use crate::Signal;
use crate::instance_id::SERVICE_INSTANCE_ID;
use crate::pipeline::Protocol;

// Names the SDK and exporter crates use but do not export.
const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const OTEL_BSP_MAX_CONCURRENT_EXPORTS: &str = "OTEL_BSP_MAX_CONCURRENT_EXPORTS";
const OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: &str = "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT";
const OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: &str = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT";
const OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT";
const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const OTEL_LOGS_EXPORTER: &str = "OTEL_LOGS_EXPORTER";
const OTEL_METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";
const OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL";
const OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
const OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
const OTEL_EXPORTER_OTLP_LOGS_HEADERS: &str = "OTEL_EXPORTER_OTLP_LOGS_HEADERS";
const OTEL_EXPORTER_OTLP_METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
const OTEL_EXPORTER_OTLP_LOGS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT";
const OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
const OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION";
const OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION";
const OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: &str =
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
const OTEL_BLRP_SCHEDULE_DELAY: &str = "OTEL_BLRP_SCHEDULE_DELAY";
const OTEL_BLRP_MAX_QUEUE_SIZE: &str = "OTEL_BLRP_MAX_QUEUE_SIZE";
const OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE";
const OTEL_BLRP_EXPORT_TIMEOUT: &str = "OTEL_BLRP_EXPORT_TIMEOUT";
const OTEL_METRIC_EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
const OTEL_METRIC_EXPORT_TIMEOUT: &str = "OTEL_METRIC_EXPORT_TIMEOUT";

/// The specification's defaults for the batch log record processor and the periodic reader.
const BLRP_SCHEDULE_DELAY_DEFAULT: Duration = Duration::from_millis(1000);
const BLRP_MAX_QUEUE_SIZE_DEFAULT: usize = 2048;
const BLRP_MAX_EXPORT_BATCH_SIZE_DEFAULT: usize = 512;
const METRIC_EXPORT_INTERVAL_DEFAULT: Duration = Duration::from_millis(60_000);

/// Bytes a string attribute value keeps when no length limit variable is set. The
/// specification's default is no limit; spans carry client input (user agents, URLs), and
/// an unbounded value times the batch queue is unbounded memory.
pub(crate) const DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT: usize = 256;
/// Attributes a span keeps when `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT` is unset (the SDK's default).
pub(crate) const DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT: u32 = 128;

/// Where every signal goes over gRPC when no endpoint variable is set.
const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// Where every signal goes over HTTP when no endpoint variable is set, before its path.
const DEFAULT_HTTP_BASE: &str = "http://localhost:4318";

/// The path each signal gets over HTTP after the generic endpoint (the signal-specific one
/// is used as is).
const fn http_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/v1/traces",
        Signal::Logs => "/v1/logs",
        Signal::Metrics => "/v1/metrics",
    }
}

/// The signals a transport variable (protocol, endpoint, headers, timeout, compression)
/// configures: its own signal for a `..._TRACES_...`-style name, all three for the generic one.
fn transport_signals(name: &str) -> &'static [Signal] {
    if name.contains("_TRACES_") {
        &[Signal::Traces]
    } else if name.contains("_LOGS_") {
        &[Signal::Logs]
    } else if name.contains("_METRICS_") {
        &[Signal::Metrics]
    } else {
        &Signal::ALL
    }
}

/// What a variable's value is used for, which decides how it is checked and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Boolean,
    Endpoint,
    Protocol,
    Headers,
    /// Milliseconds, at least 1.
    Millis,
    /// A whole number of milliseconds or items the pipeline's processor ignores.
    Ignored,
    /// A count, at least 1.
    Count,
    Compression,
    /// Free text (service names, resource attributes).
    Text,
    /// A signal's exporter: `otlp` or `none`.
    Exporter,
    /// The metric exporter's aggregation temporality preference.
    Temporality,
}

/// One variable the pipeline reads, for generated documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// What it does, on one line.
    pub doc: &'static str,
    /// What applies when it is unset or empty.
    pub default: &'static str,
    kind: Kind,
}

const fn var(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> EnvVar {
    EnvVar {
        name,
        doc,
        default,
        kind,
    }
}

/// Empty values count as unset everywhere, as the specification says.
#[derive(Clone)]
enum Source {
    Process,
    Map(Arc<BTreeMap<String, String>>),
}

/// The standard `OTEL_*` variables, read from the process environment or from a map, with
/// one set of rules for precedence, checks and masking.
///
/// ```
/// use breaker_otel::{OtlpEnv, Protocol};
///
/// let env = OtlpEnv::from_vars([
///     ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
///     ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
/// ]);
/// assert_eq!(env.protocol()?, Protocol::HttpProtobuf); // signal-specific wins
///
/// let bad = OtlpEnv::from_vars([("OTEL_BSP_SCHEDULE_DELAY", "0")]);
/// assert!(bad.validate().unwrap_err().to_string().starts_with("OTEL_BSP_SCHEDULE_DELAY = \"0\""));
/// # Ok::<(), breaker_otel::OtlpEnvError>(())
/// ```
#[derive(Clone)]
pub struct OtlpEnv {
    source: Source,
}

impl fmt::Debug for OtlpEnv {
    // Never the values: headers hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Process => f.write_str("OtlpEnv(process)"),
            Source::Map(vars) => write!(f, "OtlpEnv({} variables)", vars.len()),
        }
    }
}

/// An `OTEL_*` variable whose value the pipeline cannot use. The one-line message names the
/// variable, shows the value with secrets masked, and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} = {value:?}: {reason}")]
pub struct OtlpEnvError {
    name: &'static str,
    value: String,
    reason: String,
}

impl OtlpEnvError {
    fn new(var: &EnvVar, raw: &str, reason: impl Into<String>) -> Self {
        Self {
            name: var.name,
            value: mask(var.kind, raw),
            reason: reason.into(),
        }
    }

    /// The variable.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its value, with header values and URL userinfo masked.
    #[must_use]
    pub fn masked_value(&self) -> &str {
        &self.value
    }

    /// What was expected instead.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// One `key=value` entry of `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, checked.
#[derive(Clone)]
pub(crate) struct Header {
    pub(crate) name: http::HeaderName,
    /// As written, for the stock HTTP exporter (feature `bench`), which percent-decodes it
    /// itself.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub(crate) raw: String,
    /// Percent-decoded, for our exporters (headers and gRPC metadata).
    pub(crate) value: http::HeaderValue,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=***", self.name)
    }
}

/// How one signal is sent: from its own variables, else the generic ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Transport {
    pub(crate) protocol: Protocol,
    signal_endpoint: Option<String>,
    generic_endpoint: Option<String>,
    pub(crate) headers: Vec<Header>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) gzip: bool,
}

/// The pipeline's settings from the environment, every value checked.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) disabled: bool,
    /// Per signal, in [`Signal::ALL`]'s order.
    transports: [Transport; 3],
    /// Per signal: `OTEL_<SIGNAL>S_EXPORTER`, `Some(true)` for `otlp`, `Some(false)` for
    /// `none`, `None` when unset.
    exporters: [Option<bool>; 3],
    pub(crate) schedule_delay: Duration,
    pub(crate) max_queue_size: usize,
    pub(crate) max_export_batch_size: usize,
    pub(crate) service_name: Option<String>,
    /// Bytes kept of each string attribute value (cut on a UTF-8 character boundary).
    pub(crate) attribute_value_length_limit: usize,
    /// Attributes kept per span.
    pub(crate) span_attribute_count_limit: u32,
    /// The batch log record processor's settings.
    pub(crate) log_schedule_delay: Duration,
    pub(crate) log_max_queue_size: usize,
    pub(crate) log_max_export_batch_size: usize,
    /// How often the periodic reader collects and exports metrics.
    pub(crate) metric_export_interval: Duration,
    pub(crate) temporality: Temporality,
}

/// Where spans go, and which variable said so (`None`: the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) variable: Option<&'static str>,
}

impl Resolved {
    /// The batch span processor's settings. Every value is set explicitly, so that the
    /// SDK's own reading of the process environment never overrides what was read (and
    /// checked) here.
    #[cfg(feature = "bench")]
    pub(crate) fn batch_config(&self) -> BatchConfig {
        BatchConfigBuilder::default()
            .with_scheduled_delay(self.schedule_delay)
            .with_max_queue_size(self.max_queue_size)
            .with_max_export_batch_size(self.max_export_batch_size)
            .build()
    }

    /// The span endpoint for `protocol` (see [`Transport::endpoint`]).
    pub(crate) fn endpoint(&self, protocol: Protocol) -> Endpoint {
        self.transport(Signal::Traces)
            .endpoint(Signal::Traces, protocol)
    }

    /// How `signal` is sent.
    pub(crate) fn transport(&self, signal: Signal) -> &Transport {
        &self.transports[signal.index()]
    }

    /// Whether `signal` is exported over OTLP: its `OTEL_<SIGNAL>S_EXPORTER`, else `default`.
    pub(crate) fn exports(&self, signal: Signal, default: bool) -> bool {
        self.exporters[signal.index()].unwrap_or(default)
    }
}

impl Transport {
    /// The endpoint of `signal` for `protocol`: the signal-specific variable as is, else the
    /// generic one (with `/v1/traces`, `/v1/logs` or `/v1/metrics` appended over HTTP, as the
    /// specification says), else the default.
    pub(crate) fn endpoint(&self, signal: Signal, protocol: Protocol) -> Endpoint {
        if let Some(url) = &self.signal_endpoint {
            return Endpoint {
                url: url.trim().to_owned(),
                variable: Some(match signal {
                    Signal::Traces => OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
                    Signal::Logs => OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
                    Signal::Metrics => OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
                }),
            };
        }
        let (base, variable) = match &self.generic_endpoint {
            Some(url) => (url.trim(), Some(OTEL_EXPORTER_OTLP_ENDPOINT)),
            None => (
                match protocol {
                    Protocol::Grpc => DEFAULT_GRPC_ENDPOINT,
                    Protocol::HttpProtobuf => DEFAULT_HTTP_BASE,
                },
                None,
            ),
        };
        let url = match protocol {
            Protocol::Grpc => base.to_owned(),
            Protocol::HttpProtobuf => {
                format!("{}{}", base.trim_end_matches('/'), http_path(signal))
            }
        };
        Endpoint { url, variable }
    }
}

impl OtlpEnv {
    /// Every variable the pipeline reads, in the order `describe` lists them.
    pub const VARIABLES: &'static [EnvVar] = &[
        var(
            OTEL_SDK_DISABLED,
            Kind::Boolean,
            "false",
            "`true` gives a working no-op tracer provider: nothing is exported (the SDK itself ignores this variable).",
        ),
        var(
            OTEL_TRACES_EXPORTER,
            Kind::Exporter,
            "otlp",
            "`otlp` or `none`: whether spans are exported (`none`: a working no-op tracer provider).",
        ),
        var(
            OTEL_LOGS_EXPORTER,
            Kind::Exporter,
            "otlp where the service exports logs",
            "`otlp` or `none`: whether log records are exported, where the service sends its logs through the pipeline.",
        ),
        var(
            OTEL_METRICS_EXPORTER,
            Kind::Exporter,
            "none unless the service opts in",
            "`otlp` or `none`: whether metrics are pushed over OTLP, where the service can push them (taskman-server: opt-in).",
        ),
        var(
            OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
            Kind::Protocol,
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "The OTLP transport for spans, `grpc` or `http/protobuf`; wins over OTEL_EXPORTER_OTLP_PROTOCOL.",
        ),
        var(
            OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
            Kind::Protocol,
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "The OTLP transport for log records; wins over OTEL_EXPORTER_OTLP_PROTOCOL.",
        ),
        var(
            OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
            Kind::Protocol,
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "The OTLP transport for metrics; wins over OTEL_EXPORTER_OTLP_PROTOCOL.",
        ),
        var(
            OTEL_EXPORTER_OTLP_PROTOCOL,
            Kind::Protocol,
            OTEL_EXPORTER_OTLP_PROTOCOL_GRPC,
            "The OTLP transport, `grpc` or `http/protobuf`.",
        ),
        var(
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
            Kind::Endpoint,
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "The collector's http:// or https:// URL for spans, used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT.",
        ),
        var(
            OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
            Kind::Endpoint,
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "The URL for log records, used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT. Another host or port than the other signals gives the logs a breaker of their own.",
        ),
        var(
            OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
            Kind::Endpoint,
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "The URL for metrics, used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT. Another host or port than the other signals gives the metrics a breaker of their own.",
        ),
        var(
            OTEL_EXPORTER_OTLP_ENDPOINT,
            Kind::Endpoint,
            DEFAULT_GRPC_ENDPOINT,
            "The collector's http:// or https:// URL, for every signal; over HTTP, /v1/traces, /v1/logs or /v1/metrics is appended (default http://localhost:4318/v1/...). Signals sent to one host and port share one breaker.",
        ),
        var(
            OTEL_EXPORTER_OTLP_TRACES_HEADERS,
            Kind::Headers,
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Request headers for span exports, `key=value,...` with percent-encoded values; wins over OTEL_EXPORTER_OTLP_HEADERS.",
        ),
        var(
            OTEL_EXPORTER_OTLP_LOGS_HEADERS,
            Kind::Headers,
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Request headers for log exports; wins over OTEL_EXPORTER_OTLP_HEADERS.",
        ),
        var(
            OTEL_EXPORTER_OTLP_METRICS_HEADERS,
            Kind::Headers,
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Request headers for metric exports; wins over OTEL_EXPORTER_OTLP_HEADERS.",
        ),
        var(
            OTEL_EXPORTER_OTLP_HEADERS,
            Kind::Headers,
            "none",
            "Request headers (gRPC metadata), `key=value,...` with percent-encoded values; values are secrets and always masked.",
        ),
        var(
            OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
            Kind::Millis,
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "The OTLP exporter's own timeout per span export, in milliseconds (at least 1); wins over OTEL_EXPORTER_OTLP_TIMEOUT.",
        ),
        var(
            OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
            Kind::Millis,
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "The OTLP exporter's own timeout per log export, in milliseconds (at least 1).",
        ),
        var(
            OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
            Kind::Millis,
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "The OTLP exporter's own timeout per metric export, in milliseconds (at least 1).",
        ),
        var(
            OTEL_EXPORTER_OTLP_TIMEOUT,
            Kind::Millis,
            "10000",
            "The OTLP exporter's own timeout per export, in milliseconds (at least 1).",
        ),
        var(
            OTEL_EXPORTER_OTLP_TRACES_COMPRESSION,
            Kind::Compression,
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "Compression of span exports, `gzip` or `none`; wins over OTEL_EXPORTER_OTLP_COMPRESSION.",
        ),
        var(
            OTEL_EXPORTER_OTLP_LOGS_COMPRESSION,
            Kind::Compression,
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "Compression of log exports, `gzip` or `none`.",
        ),
        var(
            OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
            Kind::Compression,
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "Compression of metric exports, `gzip` or `none`.",
        ),
        var(
            OTEL_EXPORTER_OTLP_COMPRESSION,
            Kind::Compression,
            "none",
            "Compression of exports, `gzip` or `none`.",
        ),
        var(
            OTEL_SERVICE_NAME,
            Kind::Text,
            "the service's own name",
            "The `service.name` resource attribute; wins over `service.name` in OTEL_RESOURCE_ATTRIBUTES.",
        ),
        var(
            OTEL_RESOURCE_ATTRIBUTES,
            Kind::Text,
            "none",
            "Resource attributes, `key=value,...` (read by the SDK from the process environment); a `service.instance.id` here replaces the random one each process gets.",
        ),
        var(
            OTEL_BSP_SCHEDULE_DELAY,
            Kind::Millis,
            "5000",
            "Milliseconds between two exports of the batch span processor (at least 1).",
        ),
        var(
            OTEL_BSP_MAX_QUEUE_SIZE,
            Kind::Count,
            "2048",
            "Spans the batch span processor queues before it drops new ones (at least 1).",
        ),
        var(
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
            Kind::Count,
            "512",
            "Most spans per export (at least 1; at most the queue size, which caps it).",
        ),
        var(
            OTEL_BSP_EXPORT_TIMEOUT,
            Kind::Ignored,
            "30000",
            "A whole number of milliseconds; ignored by this pipeline's batch processor: the breaker's export_timeout bounds each export.",
        ),
        var(
            OTEL_BSP_MAX_CONCURRENT_EXPORTS,
            Kind::Ignored,
            "1",
            "A whole number; ignored by this pipeline's batch processor, which exports one batch at a time.",
        ),
        var(
            OTEL_BLRP_SCHEDULE_DELAY,
            Kind::Millis,
            "1000",
            "Milliseconds between two exports of the batch log record processor (at least 1).",
        ),
        var(
            OTEL_BLRP_MAX_QUEUE_SIZE,
            Kind::Count,
            "2048",
            "Log records the batch log record processor queues before it drops new ones (at least 1).",
        ),
        var(
            OTEL_BLRP_MAX_EXPORT_BATCH_SIZE,
            Kind::Count,
            "512",
            "Most log records per export (at least 1; at most the queue size).",
        ),
        var(
            OTEL_BLRP_EXPORT_TIMEOUT,
            Kind::Ignored,
            "30000",
            "A whole number of milliseconds; ignored: the breaker's export_timeout bounds each log export.",
        ),
        var(
            OTEL_METRIC_EXPORT_INTERVAL,
            Kind::Millis,
            "60000",
            "Milliseconds between two collections and pushes of the metrics (at least 1).",
        ),
        var(
            OTEL_METRIC_EXPORT_TIMEOUT,
            Kind::Ignored,
            "30000",
            "A whole number of milliseconds; ignored: the breaker's export_timeout bounds each metric export (the SDK's periodic reader enforces none).",
        ),
        var(
            OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
            Kind::Temporality,
            "cumulative",
            "The temporality asked of the SDK for pushed metrics: `cumulative`, `delta` or `lowmemory`.",
        ),
        var(
            OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,
            Kind::Count,
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "Bytes kept of each string attribute value of a span (at least 1), cut on a UTF-8 character boundary; wins over OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT.",
        ),
        var(
            OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,
            Kind::Count,
            "256",
            "Bytes kept of each string attribute value (at least 1). Not the specification's unlimited default: spans carry client input such as user agents.",
        ),
        var(
            OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,
            Kind::Count,
            "128",
            "Attributes kept per span (at least 1); later ones are dropped.",
        ),
    ];

    /// Reads the process environment (each time a value is needed).
    #[must_use]
    pub fn from_process() -> Self {
        Self {
            source: Source::Process,
        }
    }

    /// Reads `vars` instead of the process environment: a service's own environment map,
    /// or a test's.
    #[must_use]
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            source: Source::Map(Arc::new(vars)),
        }
    }

    /// Whether the values come from the process environment (which the SDK and exporter
    /// also read by themselves).
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub(crate) fn is_process(&self) -> bool {
        matches!(self.source, Source::Process)
    }

    /// The value of `name`, `None` when unset or empty.
    fn get(&self, name: &str) -> Option<String> {
        match &self.source {
            // A value that is not Unicode is as unusable as an absent one here; the server
            // rejects it before reading.
            Source::Process => std::env::var(name).ok(),
            Source::Map(vars) => vars.get(name).cloned(),
        }
        .filter(|v| !v.trim().is_empty())
    }

    /// `service.instance.id` in `OTEL_RESOURCE_ATTRIBUTES` (percent-decoded), `None` when
    /// it is not there or empty.
    pub(crate) fn service_instance_id(&self) -> Option<String> {
        let raw = self.get(OTEL_RESOURCE_ATTRIBUTES)?;
        resource_attribute(&raw, SERVICE_INSTANCE_ID)
    }

    /// Checks every variable that is set, shadowed or not: a typo in a variable that does
    /// not apply today applies as soon as its twin is unset.
    ///
    /// # Errors
    ///
    /// The first unusable variable, in the order of [`OtlpEnv::VARIABLES`].
    pub fn validate(&self) -> Result<(), OtlpEnvError> {
        self.resolve().map(drop)
    }

    /// Whether `OTEL_SDK_DISABLED` turns tracing off.
    ///
    /// # Errors
    ///
    /// A value other than `true` or `false` (any case).
    pub fn is_disabled(&self) -> Result<bool, OtlpEnvError> {
        let var = &Self::VARIABLES[0];
        match self.get(var.name) {
            None => Ok(false),
            Some(raw) => parse_bool(var, &raw),
        }
    }

    /// The transport: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// else gRPC.
    ///
    /// # Errors
    ///
    /// An unsupported value in either variable.
    pub fn protocol(&self) -> Result<Protocol, OtlpEnvError> {
        let mut found = None;
        for var in Self::VARIABLES.iter().filter(|v| {
            v.kind == Kind::Protocol && transport_signals(v.name).contains(&Signal::Traces)
        }) {
            if let Some(raw) = self.get(var.name) {
                let protocol = parse_protocol(var, &raw)?;
                found = found.or(Some(protocol));
            }
        }
        Ok(found.unwrap_or_default())
    }

    /// Reads and checks everything the pipeline uses.
    pub(crate) fn resolve(&self) -> Result<Resolved, OtlpEnvError> {
        let mut resolved = Resolved {
            disabled: false,
            transports: Default::default(),
            exporters: [None; 3],
            schedule_delay: OTEL_BSP_SCHEDULE_DELAY_DEFAULT,
            max_queue_size: OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT,
            max_export_batch_size: OTEL_BSP_MAX_EXPORT_BATCH_SIZE_DEFAULT,
            service_name: None,
            attribute_value_length_limit: DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT,
            span_attribute_count_limit: DEFAULT_SPAN_ATTRIBUTE_COUNT_LIMIT,
            log_schedule_delay: BLRP_SCHEDULE_DELAY_DEFAULT,
            log_max_queue_size: BLRP_MAX_QUEUE_SIZE_DEFAULT,
            log_max_export_batch_size: BLRP_MAX_EXPORT_BATCH_SIZE_DEFAULT,
            metric_export_interval: METRIC_EXPORT_INTERVAL_DEFAULT,
            temporality: Temporality::Cumulative,
        };
        // Per signal; the first value found for a signal is the one that applies.
        let mut protocol: [Option<Protocol>; 3] = [None; 3];
        let mut headers: [Option<Vec<Header>>; 3] = Default::default();
        let mut compression: [Option<bool>; 3] = [None; 3];
        let mut value_length = None;
        // VARIABLES lists each signal-specific variable before its generic twin, so the
        // first value found is the one that applies.
        for var in Self::VARIABLES {
            let Some(raw) = self.get(var.name) else {
                continue;
            };
            match var.kind {
                Kind::Boolean => resolved.disabled = parse_bool(var, &raw)?,
                Kind::Exporter => {
                    let otlp = parse_exporter(var, &raw)?;
                    for &signal in transport_signals(var.name) {
                        resolved.exporters[signal.index()] = Some(otlp);
                    }
                }
                Kind::Temporality => resolved.temporality = parse_temporality(var, &raw)?,
                Kind::Protocol => {
                    let parsed = parse_protocol(var, &raw)?;
                    for &signal in transport_signals(var.name) {
                        let slot = &mut protocol[signal.index()];
                        *slot = slot.or(Some(parsed));
                    }
                }
                Kind::Endpoint => {
                    check_endpoint(var, &raw)?;
                    match transport_signals(var.name) {
                        &[signal] => {
                            resolved.transports[signal.index()].signal_endpoint = Some(raw);
                        }
                        _ => {
                            for transport in &mut resolved.transports {
                                transport.generic_endpoint = Some(raw.clone());
                            }
                        }
                    }
                }
                Kind::Headers => {
                    let parsed = parse_headers(var, &raw)?;
                    for &signal in transport_signals(var.name) {
                        let slot = &mut headers[signal.index()];
                        if slot.is_none() {
                            *slot = Some(parsed.clone());
                        }
                    }
                }
                Kind::Millis => {
                    let millis = parse_at_least_one::<u64>(var, &raw, "milliseconds")?;
                    let duration = Duration::from_millis(millis);
                    match var.name {
                        OTEL_BSP_SCHEDULE_DELAY => resolved.schedule_delay = duration,
                        OTEL_BLRP_SCHEDULE_DELAY => resolved.log_schedule_delay = duration,
                        OTEL_METRIC_EXPORT_INTERVAL => resolved.metric_export_interval = duration,
                        _ => {
                            for &signal in transport_signals(var.name) {
                                let slot = &mut resolved.transports[signal.index()].timeout;
                                *slot = slot.or(Some(duration));
                            }
                        }
                    }
                }
                Kind::Count => {
                    let unit = if var.name.ends_with("VALUE_LENGTH_LIMIT") {
                        "bytes"
                    } else {
                        "items"
                    };
                    let count = parse_at_least_one::<usize>(var, &raw, unit)?;
                    match var.name {
                        OTEL_BSP_MAX_QUEUE_SIZE => resolved.max_queue_size = count,
                        OTEL_BSP_MAX_EXPORT_BATCH_SIZE => resolved.max_export_batch_size = count,
                        OTEL_BLRP_MAX_QUEUE_SIZE => resolved.log_max_queue_size = count,
                        OTEL_BLRP_MAX_EXPORT_BATCH_SIZE => {
                            resolved.log_max_export_batch_size = count;
                        }
                        OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT => {
                            resolved.span_attribute_count_limit =
                                u32::try_from(count).map_err(|_| {
                                    OtlpEnvError::new(
                                        var,
                                        &raw,
                                        format!("expected at most {}", u32::MAX),
                                    )
                                })?;
                        }
                        // The span-specific variable comes first and wins.
                        _ => value_length = value_length.or(Some(count)),
                    }
                }
                Kind::Ignored => {
                    raw.trim()
                        .parse::<u64>()
                        .map_err(|_| OtlpEnvError::new(var, &raw, "expected a whole number"))?;
                }
                Kind::Compression => {
                    let gzip = parse_compression(var, &raw)?;
                    for &signal in transport_signals(var.name) {
                        let slot = &mut compression[signal.index()];
                        *slot = slot.or(Some(gzip));
                    }
                }
                Kind::Text => {
                    if var.name == OTEL_SERVICE_NAME {
                        resolved.service_name = Some(raw.trim().to_owned());
                    } else if resolved.service_name.is_none() {
                        resolved.service_name = service_name_attribute(&raw);
                    }
                }
            }
        }
        for (i, transport) in resolved.transports.iter_mut().enumerate() {
            transport.protocol = protocol[i].unwrap_or_default();
            transport.headers = headers[i].take().unwrap_or_default();
            transport.gzip = compression[i].unwrap_or(false);
        }
        if let Some(limit) = value_length {
            resolved.attribute_value_length_limit = limit;
        }
        Ok(resolved)
    }

    /// The variables as `# NAME = "value"` lines (TOML comments), secrets masked: every
    /// variable of [`OtlpEnv::VARIABLES`] that is set, the endpoint and protocol defaults
    /// when unset, any other `OTEL_*` variable that is set, then where spans go.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (name, default) in [
            (OTEL_EXPORTER_OTLP_ENDPOINT, DEFAULT_GRPC_ENDPOINT),
            (
                OTEL_EXPORTER_OTLP_PROTOCOL,
                OTEL_EXPORTER_OTLP_PROTOCOL_GRPC,
            ),
        ] {
            if self.get(name).is_none() {
                out.push_str(&format!("# {name} = {default:?} (default)\n"));
            }
        }
        for var in Self::VARIABLES {
            if let Some(raw) = self.get(var.name) {
                out.push_str(&format!("# {} = {:?}\n", var.name, mask(var.kind, &raw)));
            }
        }
        for (name, raw) in self.others() {
            out.push_str(&format!("# {name} = {:?}\n", mask_unknown(&name, &raw)));
        }
        match self.resolve() {
            Ok(resolved) if resolved.disabled => {
                out.push_str("# Tracing is off (OTEL_SDK_DISABLED).\n");
            }
            Ok(resolved) => {
                let protocol = resolved.transport(Signal::Traces).protocol;
                let endpoint = resolved.endpoint(protocol);
                out.push_str(&format!(
                    "# Spans go over {} to {:?}.\n",
                    protocol,
                    mask_endpoint(&endpoint.url)
                ));
            }
            Err(err) => out.push_str(&format!("# Not usable: {err}\n")),
        }
        out
    }

    /// Set `OTEL_*` variables this pipeline does not read itself (the SDK may: samplers).
    fn others(&self) -> Vec<(String, String)> {
        let known = |name: &str| Self::VARIABLES.iter().any(|v| v.name == name);
        let wanted = |(name, value): &(String, String)| {
            name.starts_with("OTEL_") && !known(name) && !value.trim().is_empty()
        };
        match &self.source {
            Source::Process => {
                let mut vars: Vec<_> = std::env::vars().filter(wanted).collect();
                vars.sort();
                vars
            }
            Source::Map(vars) => vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .filter(wanted)
                .collect(),
        }
    }
}

fn parse_bool(var: &EnvVar, raw: &str) -> Result<bool, OtlpEnvError> {
    let value = raw.trim();
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(OtlpEnvError::new(var, raw, "expected true or false"))
    }
}

fn parse_exporter(var: &EnvVar, raw: &str) -> Result<bool, OtlpEnvError> {
    match raw.trim() {
        "otlp" => Ok(true),
        "none" => Ok(false),
        other if other.contains(',') => Err(OtlpEnvError::new(
            var,
            raw,
            "expected one exporter, otlp or none (this pipeline exports each signal to one place)",
        )),
        _ => Err(OtlpEnvError::new(
            var,
            raw,
            "expected otlp or none (the only exporters this pipeline has)",
        )),
    }
}

fn parse_temporality(var: &EnvVar, raw: &str) -> Result<Temporality, OtlpEnvError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "cumulative" => Ok(Temporality::Cumulative),
        "delta" => Ok(Temporality::Delta),
        "lowmemory" => Ok(Temporality::LowMemory),
        _ => Err(OtlpEnvError::new(
            var,
            raw,
            "expected cumulative, delta or lowmemory",
        )),
    }
}

fn parse_protocol(var: &EnvVar, raw: &str) -> Result<Protocol, OtlpEnvError> {
    match raw.trim() {
        OTEL_EXPORTER_OTLP_PROTOCOL_GRPC => Ok(Protocol::Grpc),
        OTEL_EXPORTER_OTLP_PROTOCOL_HTTP_PROTOBUF => Ok(Protocol::HttpProtobuf),
        _ => Err(OtlpEnvError::new(
            var,
            raw,
            "expected \"grpc\" or \"http/protobuf\"",
        )),
    }
}

/// `gzip` → `true`, `none` → `false`. The exporter crate also knows `zstd`, which this
/// build cannot send: the exporter would ignore it silently.
fn parse_compression(var: &EnvVar, raw: &str) -> Result<bool, OtlpEnvError> {
    let value = raw.trim();
    if value.eq_ignore_ascii_case("gzip") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("none") {
        Ok(false)
    } else {
        Err(OtlpEnvError::new(var, raw, "expected \"gzip\" or \"none\""))
    }
}

/// Zero is rejected: a zero schedule delay spins a core while idle, a zero queue drops
/// every span, a zero batch exports nothing, a zero timeout fails every export.
fn parse_at_least_one<T>(var: &EnvVar, raw: &str, unit: &str) -> Result<T, OtlpEnvError>
where
    T: std::str::FromStr + PartialEq + From<u8>,
{
    let value: T = raw
        .trim()
        .parse()
        .map_err(|_| OtlpEnvError::new(var, raw, format!("expected a whole number of {unit}")))?;
    if value == T::from(0) {
        return Err(OtlpEnvError::new(
            var,
            raw,
            format!("expected at least 1 ({unit})"),
        ));
    }
    Ok(value)
}

const ENDPOINT_EXPECTED: &str =
    "expected an http:// or https:// URL with a host, such as http://localhost:4317";

/// Parsed with the URI parser the exporters use, plus what it lets through: another
/// scheme, no host, a port that does not fit 16 bits (`http::Uri` accepts any digits and
/// then reports no port at all).
fn check_endpoint(var: &EnvVar, raw: &str) -> Result<(), OtlpEnvError> {
    let invalid = |reason: &str| OtlpEnvError::new(var, raw, reason);
    let uri: http::Uri = raw.trim().parse().map_err(|_| invalid(ENDPOINT_EXPECTED))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid(ENDPOINT_EXPECTED));
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid(ENDPOINT_EXPECTED));
    };
    if authority.host().is_empty() {
        return Err(invalid(ENDPOINT_EXPECTED));
    }
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, rest)| rest);
    // After an IPv6 literal's `]`, or after the host name.
    let after_host = match host_port.rfind(']') {
        Some(end) => &host_port[end + 1..],
        None => host_port.find(':').map_or("", |at| &host_port[at..]),
    };
    if let Some(port) = after_host.strip_prefix(':')
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(invalid("expected a port from 1 to 65535"));
    }
    Ok(())
}

/// Parses `key=value,...` as the specification says (values percent-decoded), rejecting
/// what the exporter would drop silently. Errors name the entry's position, never its value.
fn parse_headers(var: &EnvVar, raw: &str) -> Result<Vec<Header>, OtlpEnvError> {
    let mut headers = Vec::new();
    for (index, entry) in raw.split(',').enumerate() {
        let position = index + 1;
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let invalid = |what: &str| OtlpEnvError::new(var, raw, format!("entry {position} {what}"));
        let Some((key, value)) = entry.split_once('=') else {
            return Err(invalid("is not key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(invalid("has an empty key"));
        }
        let name = http::HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| invalid("has a key that is not a valid header name"))?;
        if value.is_empty() {
            return Err(invalid("has an empty value"));
        }
        let decoded = percent_decode(value)
            .ok_or_else(|| invalid("has a value that is not valid percent-encoding"))?;
        let header_value = http::HeaderValue::from_str(&decoded)
            .map_err(|_| invalid("has a value that is not a valid header value"))?;
        headers.push(Header {
            name,
            raw: value.to_owned(),
            value: header_value,
        });
    }
    Ok(headers)
}

/// `%XX` escapes to bytes; the result must be UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, if it has one.
fn service_name_attribute(raw: &str) -> Option<String> {
    resource_attribute(raw, "service.name")
}

/// The non-empty value of `wanted` in `OTEL_RESOURCE_ATTRIBUTES` (`key=value,...`).
fn resource_attribute(raw: &str, wanted: &str) -> Option<String> {
    raw.split(',').find_map(|entry| {
        let (key, value) = entry.split_once('=')?;
        (key.trim() == wanted && !value.trim().is_empty()).then(|| {
            let value = value.trim();
            percent_decode(value).unwrap_or_else(|| value.to_owned())
        })
    })
}

fn mask(kind: Kind, raw: &str) -> String {
    match kind {
        Kind::Headers => mask_headers(raw),
        Kind::Endpoint => mask_endpoint(raw),
        _ => raw.to_owned(),
    }
}

/// Other signals' headers and endpoints carry the same kind of secrets.
fn mask_unknown(name: &str, raw: &str) -> String {
    if name.contains("HEADERS") {
        mask_headers(raw)
    } else if name.ends_with("ENDPOINT") {
        mask_endpoint(raw)
    } else {
        raw.to_owned()
    }
}

/// `key=value,...` with every value replaced, so the keys (which say *what* is configured)
/// stay visible; an entry without `=` may be a pasted secret and is replaced whole.
pub(crate) fn mask_headers(value: &str) -> String {
    value
        .split(',')
        .map(|entry| match entry.split_once('=') {
            Some((key, _)) => format!("{key}=***"),
            None if entry.trim().is_empty() => entry.to_owned(),
            None => "***".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Hides `user:password@` in a URL.
pub(crate) fn mask_endpoint(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        // No authority to find; an `@` may still be userinfo of a malformed URL.
        return match value.rfind('@') {
            Some(at) => format!("***@{}", &value[at + 1..]),
            None => value.to_owned(),
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> OtlpEnv {
        OtlpEnv::from_vars(pairs.iter().copied())
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        env(pairs)
            .validate()
            .expect_err(&format!("{pairs:?} must be rejected"))
            .to_string()
    }

    #[test]
    fn accepts_valid_and_empty_values() {
        let ok: &[(&str, &str)] = &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.example:443/otlp",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://u:p@collector:65535"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://[::1]:4318/v1/traces",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://[::1]/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", " grpc "),
            ("OTEL_BSP_SCHEDULE_DELAY", "500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "1"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "0"),
            ("OTEL_BSP_MAX_CONCURRENT_EXPORTS", "4"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret,tenant=a"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,,b=2,"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "Authorization=Bearer%20abc%3D%3D",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_SERVICE_NAME", "tasks"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=tasks,team=a"),
        ];
        for (name, value) in ok {
            assert_eq!(env(&[(name, value)]).validate(), Ok(()), "{name}={value:?}");
        }
    }

    /// Each bad value and the start of its one-line message.
    #[test]
    fn rejects_bad_values_naming_the_variable_and_hiding_secrets() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "not a url",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"not a url\": expected an http:// or https:// URL",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "localhost:4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"localhost:4317\": expected an http://",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "ftp://collector:21",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"ftp://collector:21\": expected an http://",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "unix:///tmp/otel.sock",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"unix:///tmp/otel.sock\": expected an http://",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = \"http://\": expected",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector:99999",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"http://collector:99999\": expected a port from 1 to 65535",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector:65536/x",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"http://collector:65536/x\": expected a port",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://[::1]:70000",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"http://[::1]:70000\": expected a port",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector:0",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"http://collector:0\": expected a port",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:hunter2@collector:4317 x",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"http://***@collector:4317 x\": expected",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:hunter2@collector:99999",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"http://***@collector:99999\": expected a port",
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http/json",
                "OTEL_EXPORTER_OTLP_PROTOCOL = \"http/json\": expected \"grpc\" or \"http/protobuf\"",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "udp",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = \"udp\": expected \"grpc\" or \"http/protobuf\"",
            ),
            (
                "OTEL_BSP_SCHEDULE_DELAY",
                "5s",
                "OTEL_BSP_SCHEDULE_DELAY = \"5s\": expected a whole number of milliseconds",
            ),
            (
                "OTEL_BSP_SCHEDULE_DELAY",
                "0",
                "OTEL_BSP_SCHEDULE_DELAY = \"0\": expected at least 1 (milliseconds)",
            ),
            (
                "OTEL_BSP_MAX_QUEUE_SIZE",
                "0",
                "OTEL_BSP_MAX_QUEUE_SIZE = \"0\": expected at least 1",
            ),
            (
                "OTEL_BSP_MAX_QUEUE_SIZE",
                "-1",
                "OTEL_BSP_MAX_QUEUE_SIZE = \"-1\": expected a whole number",
            ),
            (
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                "0",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE = \"0\": expected at least 1",
            ),
            (
                "OTEL_BSP_EXPORT_TIMEOUT",
                "30s",
                "OTEL_BSP_EXPORT_TIMEOUT = \"30s\": expected a whole number",
            ),
            (
                "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
                "many",
                "OTEL_BSP_MAX_CONCURRENT_EXPORTS = \"many\": expected a whole number",
            ),
            (
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "0",
                "OTEL_EXPORTER_OTLP_TIMEOUT = \"0\": expected at least 1 (milliseconds)",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "0",
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT = \"0\": expected at least 1",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "10s",
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT = \"10s\": expected a whole number",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=hunter2,oops",
                "OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***,***\": entry 2 is not key=value",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=hunter2,=x",
                "OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***,=***\": entry 2 has an empty key",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "bad key=hunter2",
                "OTEL_EXPORTER_OTLP_HEADERS = \"bad key=***\": entry 1 has a key that is not a valid header name",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "a=1,api-key=hunter2%0A",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS = \"a=***,api-key=***\": entry 2 has a value that is not a valid header value",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=hunter2%zz",
                "OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***\": entry 1 has a value that is not valid percent-encoding",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=hunter2%ff",
                "OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***\": entry 1 has a value that is not valid percent-encoding",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=",
                "OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***\": entry 1 has an empty value",
            ),
            (
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "zstd",
                "OTEL_EXPORTER_OTLP_COMPRESSION = \"zstd\": expected \"gzip\" or \"none\"",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "deflate",
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION = \"deflate\": expected",
            ),
            (
                "OTEL_SDK_DISABLED",
                "yes",
                "OTEL_SDK_DISABLED = \"yes\": expected true or false",
            ),
        ];
        for (name, value, expected) in cases {
            let err = error(&[(name, value)]);
            assert!(
                err.starts_with(expected),
                "{name}={value:?}:\n  got      {err}\n  expected {expected}"
            );
            assert!(!err.contains("hunter2"), "secret leaked: {err}");
            assert!(!err.contains('\n'), "not one line: {err:?}");
        }
    }

    #[test]
    fn the_signal_variable_wins_over_the_generic_one_both_ways() {
        for (traces, generic, expected) in [
            ("http/protobuf", "grpc", Protocol::HttpProtobuf),
            ("grpc", "http/protobuf", Protocol::Grpc),
        ] {
            let env = env(&[
                (OTEL_EXPORTER_OTLP_PROTOCOL, generic),
                (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, traces),
            ]);
            assert_eq!(env.protocol(), Ok(expected));
            assert_eq!(
                env.resolve().unwrap().transport(Signal::Traces).protocol,
                expected
            );
        }
        let resolved = env(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://generic:4317"),
            (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://traces:4317"),
            (OTEL_EXPORTER_OTLP_TIMEOUT, "100"),
            (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, "200"),
            (OTEL_EXPORTER_OTLP_HEADERS, "a=generic"),
            (OTEL_EXPORTER_OTLP_TRACES_HEADERS, "b=traces"),
            (OTEL_EXPORTER_OTLP_COMPRESSION, "none"),
            (OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, "gzip"),
        ])
        .resolve()
        .unwrap();
        assert_eq!(resolved.endpoint(Protocol::Grpc).url, "http://traces:4317");
        let traces = resolved.transport(Signal::Traces);
        assert_eq!(traces.timeout, Some(Duration::from_millis(200)));
        assert_eq!(traces.headers.len(), 1);
        assert_eq!(traces.headers[0].name.as_str(), "b");
        assert!(traces.gzip);
    }

    #[test]
    fn a_shadowed_variable_is_checked_too() {
        let err = error(&[
            (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, "grpc"),
            (OTEL_EXPORTER_OTLP_PROTOCOL, "http/json"),
        ]);
        assert!(
            err.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL = \"http/json\""),
            "{err}"
        );
    }

    #[test]
    fn endpoints_follow_the_specification_per_protocol() {
        let check = |pairs: &[(&str, &str)], protocol, url: &str, variable| {
            let endpoint = env(pairs).resolve().unwrap().endpoint(protocol);
            assert_eq!(endpoint.url, url, "{pairs:?} {protocol}");
            assert_eq!(endpoint.variable, variable, "{pairs:?} {protocol}");
        };
        check(&[], Protocol::Grpc, "http://localhost:4317", None);
        check(
            &[],
            Protocol::HttpProtobuf,
            "http://localhost:4318/v1/traces",
            None,
        );
        let generic = [(OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4318/")];
        check(
            &generic,
            Protocol::Grpc,
            "http://c:4318/",
            Some(OTEL_EXPORTER_OTLP_ENDPOINT),
        );
        check(
            &generic,
            Protocol::HttpProtobuf,
            "http://c:4318/v1/traces",
            Some(OTEL_EXPORTER_OTLP_ENDPOINT),
        );
        let signal = [(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://c:4318/custom")];
        check(
            &signal,
            Protocol::HttpProtobuf,
            "http://c:4318/custom",
            Some(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
        );
    }

    #[test]
    fn headers_are_percent_decoded() {
        let resolved = env(&[(
            OTEL_EXPORTER_OTLP_HEADERS,
            " Authorization = Bearer%20a%3Db , x-tenant=%C3%A9 ",
        )])
        .resolve()
        .unwrap();
        let headers: Vec<_> = resolved
            .transport(Signal::Traces)
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.to_str().ok(), h.raw.as_str()))
            .collect();
        assert_eq!(
            headers[0],
            ("authorization", Some("Bearer a=b"), "Bearer%20a%3Db")
        );
        assert_eq!(headers[1].0, "x-tenant");
        assert_eq!(headers[1].2, "%C3%A9");
        assert_eq!(
            format!("{:?}", resolved.transport(Signal::Traces).headers),
            "[authorization=***, x-tenant=***]"
        );
    }

    #[test]
    fn batch_settings_are_explicit() {
        let resolved = env(&[
            (OTEL_BSP_SCHEDULE_DELAY, "200"),
            (OTEL_BSP_MAX_QUEUE_SIZE, "10"),
            (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "4"),
        ])
        .resolve()
        .unwrap();
        assert_eq!(resolved.max_queue_size, 10);
        assert_eq!(resolved.schedule_delay, Duration::from_millis(200));
        assert_eq!(resolved.max_export_batch_size, 4);
    }

    #[test]
    fn sdk_disabled_is_read_case_insensitively() {
        for (value, disabled) in [
            ("true", true),
            ("TRUE", true),
            ("false", false),
            ("", false),
        ] {
            assert_eq!(
                env(&[(OTEL_SDK_DISABLED, value)]).is_disabled(),
                Ok(disabled),
                "{value:?}"
            );
        }
    }

    #[test]
    fn service_name_comes_from_the_name_then_the_attributes() {
        let name = |pairs: &[(&str, &str)]| env(pairs).resolve().unwrap().service_name;
        assert_eq!(name(&[]), None);
        assert_eq!(
            name(&[(OTEL_RESOURCE_ATTRIBUTES, "team=a, service.name=tasks")]),
            Some("tasks".into())
        );
        assert_eq!(
            name(&[(OTEL_RESOURCE_ATTRIBUTES, "xservice.name=tasks")]),
            None
        );
        assert_eq!(
            name(&[
                (OTEL_RESOURCE_ATTRIBUTES, "service.name=a"),
                (OTEL_SERVICE_NAME, "b")
            ]),
            Some("b".into())
        );
    }

    #[test]
    fn the_instance_id_comes_from_the_attributes_decoded_and_never_empty() {
        let id = |pairs: &[(&str, &str)]| env(pairs).service_instance_id();
        assert_eq!(id(&[]), None);
        assert_eq!(
            id(&[(
                OTEL_RESOURCE_ATTRIBUTES,
                "service.name=tasks, service.instance.id = pod-7 "
            )]),
            Some("pod-7".into())
        );
        assert_eq!(
            id(&[(OTEL_RESOURCE_ATTRIBUTES, "service.instance.id=a%2Cb")]),
            Some("a,b".into())
        );
        for unset in [
            "service.instance.id=",
            "service.instance.id= ",
            "x.service.instance.id=a",
        ] {
            assert_eq!(id(&[(OTEL_RESOURCE_ATTRIBUTES, unset)]), None, "{unset}");
        }
    }

    #[test]
    fn masking() {
        assert_eq!(mask_headers("a=1,b=2"), "a=***,b=***");
        assert_eq!(
            mask_headers("Authorization=Bearer x=y"),
            "Authorization=***"
        );
        assert_eq!(
            mask_endpoint("https://u:p@host:4317/x@y"),
            "https://***@host:4317/x@y"
        );
        assert_eq!(mask_endpoint("http://host:4317"), "http://host:4317");
        assert_eq!(mask_endpoint("u:p@host:4317"), "***@host:4317");
    }

    #[test]
    fn description_lists_defaults_and_masks_secrets() {
        let text = env(&[
            (OTEL_EXPORTER_OTLP_HEADERS, "api-key=hunter2"),
            (
                OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
                "http://user:hunter2@collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "k=hunter2"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            (OTEL_SERVICE_NAME, "tasks"),
            ("PATH", "/usr/bin"),
        ])
        .describe();
        assert!(
            text.contains("# OTEL_EXPORTER_OTLP_ENDPOINT = \"http://localhost:4317\" (default)\n"),
            "{text}"
        );
        assert!(
            text.contains("# OTEL_EXPORTER_OTLP_PROTOCOL = \"grpc\" (default)\n"),
            "{text}"
        );
        assert!(
            text.contains("# OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***\"\n"),
            "{text}"
        );
        assert!(
            text.contains("# OTEL_EXPORTER_OTLP_METRICS_HEADERS = \"k=***\"\n"),
            "{text}"
        );
        assert!(
            text.contains("# OTEL_TRACES_SAMPLER = \"always_on\"\n"),
            "{text}"
        );
        assert!(text.contains("# OTEL_SERVICE_NAME = \"tasks\"\n"), "{text}");
        assert!(
            text.contains("# Spans go over grpc to \"http://***@collector:4317\".\n"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("PATH"), "{text}");
        assert!(text.lines().all(|l| l.starts_with("# ")), "{text}");
    }

    #[test]
    fn attribute_limits_default_to_256_bytes_and_128_attributes() {
        let resolved = env(&[]).resolve().unwrap();
        assert_eq!(resolved.attribute_value_length_limit, 256);
        assert_eq!(resolved.span_attribute_count_limit, 128);
        let resolved = env(&[
            (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, "1000"),
            (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, "16"),
        ])
        .resolve()
        .unwrap();
        assert_eq!(resolved.attribute_value_length_limit, 1000);
        assert_eq!(resolved.span_attribute_count_limit, 16);
        // The span-specific length wins over the generic one.
        let resolved = env(&[
            (OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT, "64"),
            (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, "1000"),
        ])
        .resolve()
        .unwrap();
        assert_eq!(resolved.attribute_value_length_limit, 64);
    }

    #[test]
    fn bad_attribute_limits_are_refused_by_name() {
        for (name, value, expected) in [
            (
                OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,
                "0",
                "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT = \"0\": expected at least 1 (bytes)",
            ),
            (
                OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,
                "1kb",
                "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT = \"1kb\": expected a whole number of bytes",
            ),
            (
                OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,
                "99999999999",
                "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT = \"99999999999\": expected at most 4294967295",
            ),
        ] {
            let err = env(&[(name, value)]).validate().unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn every_variable_is_documented_once() {
        let mut names: Vec<_> = OtlpEnv::VARIABLES.iter().map(|v| v.name).collect();
        assert!(
            OtlpEnv::VARIABLES
                .iter()
                .all(|v| !v.doc.is_empty() && !v.default.is_empty() && !v.doc.contains('\n'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OtlpEnv::VARIABLES.len());
        assert_eq!(OtlpEnv::VARIABLES[0].name, OTEL_SDK_DISABLED);
    }

    #[test]
    fn debug_never_shows_values() {
        let env = env(&[(OTEL_EXPORTER_OTLP_HEADERS, "api-key=hunter2")]);
        assert_eq!(format!("{env:?}"), "OtlpEnv(1 variables)");
        let err = error(&[(OTEL_EXPORTER_OTLP_HEADERS, "api-key=hunter2,x")]);
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn each_signal_takes_its_own_variable_first_then_the_generic_one() {
        let resolved = env(&[
            (OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf"),
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4318/"),
            (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, "http://logs:9000/ingest"),
            (OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, "grpc"),
            (OTEL_EXPORTER_OTLP_HEADERS, "a=1"),
            (OTEL_EXPORTER_OTLP_METRICS_HEADERS, "m=2"),
            (OTEL_EXPORTER_OTLP_TIMEOUT, "300"),
            (OTEL_EXPORTER_OTLP_LOGS_TIMEOUT, "100"),
            (OTEL_EXPORTER_OTLP_METRICS_COMPRESSION, "gzip"),
        ])
        .resolve()
        .unwrap();
        let (traces, logs, metrics) = (
            resolved.transport(Signal::Traces),
            resolved.transport(Signal::Logs),
            resolved.transport(Signal::Metrics),
        );
        assert_eq!(
            traces.endpoint(Signal::Traces, traces.protocol).url,
            "http://collector:4318/v1/traces"
        );
        let logs_endpoint = logs.endpoint(Signal::Logs, logs.protocol);
        assert_eq!(logs_endpoint.url, "http://logs:9000/ingest", "used as is");
        assert_eq!(
            logs_endpoint.variable,
            Some(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT)
        );
        assert_eq!(metrics.protocol, Protocol::Grpc);
        assert_eq!(
            metrics.endpoint(Signal::Metrics, metrics.protocol).url,
            "http://collector:4318/",
            "gRPC takes the generic endpoint as is"
        );
        let names = |t: &Transport| -> Vec<String> {
            t.headers.iter().map(|h| h.name.to_string()).collect()
        };
        assert_eq!(names(traces), ["a"]);
        assert_eq!(
            names(metrics),
            ["m"],
            "the signal's own headers replace the generic ones"
        );
        assert_eq!(traces.timeout, Some(Duration::from_millis(300)));
        assert_eq!(logs.timeout, Some(Duration::from_millis(100)));
        assert!(metrics.gzip && !traces.gzip && !logs.gzip);
    }

    #[test]
    fn over_http_the_default_endpoint_has_each_signals_path() {
        let resolved = env(&[(OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf")])
            .resolve()
            .unwrap();
        for (signal, path) in [
            (Signal::Traces, "/v1/traces"),
            (Signal::Logs, "/v1/logs"),
            (Signal::Metrics, "/v1/metrics"),
        ] {
            let endpoint = resolved
                .transport(signal)
                .endpoint(signal, Protocol::HttpProtobuf);
            assert_eq!(endpoint.url, format!("http://localhost:4318{path}"));
            assert_eq!(endpoint.variable, None);
        }
    }

    #[test]
    fn exporters_processors_and_the_reader_are_read_and_checked() {
        let resolved = env(&[
            (OTEL_TRACES_EXPORTER, "none"),
            (OTEL_METRICS_EXPORTER, " otlp "),
            (OTEL_BLRP_SCHEDULE_DELAY, "250"),
            (OTEL_BLRP_MAX_QUEUE_SIZE, "100"),
            (OTEL_BLRP_MAX_EXPORT_BATCH_SIZE, "10"),
            (OTEL_BLRP_EXPORT_TIMEOUT, "5"),
            (OTEL_METRIC_EXPORT_INTERVAL, "1500"),
            (OTEL_METRIC_EXPORT_TIMEOUT, "5"),
            (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "Delta"),
        ])
        .resolve()
        .unwrap();
        assert!(!resolved.exports(Signal::Traces, true));
        assert!(resolved.exports(Signal::Logs, true), "unset: the default");
        assert!(!resolved.exports(Signal::Logs, false), "unset: the default");
        assert!(resolved.exports(Signal::Metrics, false));
        assert_eq!(resolved.log_schedule_delay, Duration::from_millis(250));
        assert_eq!(resolved.log_max_queue_size, 100);
        assert_eq!(resolved.log_max_export_batch_size, 10);
        assert_eq!(resolved.metric_export_interval, Duration::from_millis(1500));
        assert_eq!(resolved.temporality, Temporality::Delta);

        for (name, value, start) in [
            (
                OTEL_LOGS_EXPORTER,
                "console",
                "OTEL_LOGS_EXPORTER = \"console\": expected otlp or none",
            ),
            (
                OTEL_METRICS_EXPORTER,
                "otlp,prometheus",
                "OTEL_METRICS_EXPORTER = \"otlp,prometheus\": expected one exporter",
            ),
            (
                OTEL_BLRP_SCHEDULE_DELAY,
                "0",
                "OTEL_BLRP_SCHEDULE_DELAY = \"0\"",
            ),
            (
                OTEL_METRIC_EXPORT_INTERVAL,
                "soon",
                "OTEL_METRIC_EXPORT_INTERVAL = \"soon\"",
            ),
            (
                OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
                "sometimes",
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE = \"sometimes\": expected cumulative",
            ),
            (
                OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
                "logs:4317",
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT = \"logs:4317\": expected an http://",
            ),
        ] {
            let message = error(&[(name, value)]);
            assert!(message.starts_with(start), "{message}");
        }
        let err = error(&[(OTEL_EXPORTER_OTLP_METRICS_HEADERS, "api-key=hunter2,x")]);
        assert!(!err.contains("hunter2"), "{err}");
    }
}
