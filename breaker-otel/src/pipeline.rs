//! The standard OTLP pipeline with the breaker in it: OTLP exporter →
//! circuit-breaking exporter → batch span processor → tracer provider; or,
//! for comparisons, the same pipeline without the breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use tokio::runtime::Handle;

use crate::exporter::{AdapterError, BreakerControl, CircuitBreakerSpanExporter, ExporterConfig};
use crate::handle::{BreakerHandle, Published};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP over gRPC (tonic), the default; endpoint `http://localhost:4317`.
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies; endpoint `http://localhost:4318`.
    HttpProtobuf,
}

impl Protocol {
    /// Parses the values the OpenTelemetry specification defines for
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`; `http/json` is not supported here.
    ///
    /// # Errors
    ///
    /// Anything but `grpc` or `http/protobuf`.
    pub fn parse(value: &str) -> Result<Self, PipelineError> {
        match value.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(PipelineError::InvalidVariable {
                name: PROTOCOL_VARS[1],
                value: other.to_owned(),
                expected: "grpc or http/protobuf",
            }),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        })
    }
}

/// Signal-specific first, as the specification orders them.
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// An `OTEL_*` variable has a value this pipeline cannot use.
    #[error("{name}={value:?}: expected {expected}")]
    InvalidVariable {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The OTLP exporter rejected its configuration (e.g. an unparsable endpoint).
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The circuit-breaking adapter could not be built.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
}

/// Builds the tracing pipeline a service needs, from the standard `OTEL_*`
/// environment unless set in code.
///
/// Read from the environment: `OTEL_SDK_DISABLED` (`true` gives a working
/// no-op provider, which the SDK itself does not do),
/// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`; and, by the SDK and exporter
/// themselves, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`,
/// `..._HEADERS`, `..._TIMEOUT`, `..._COMPRESSION` and `OTEL_BSP_*`.
///
/// The OTLP exporter's own retries are disabled by default: the breaker is
/// the resilience mechanism, and retrying inside one export would turn each
/// failing batch into four requests against a backend that is struggling.
///
/// [`breaker_enabled(false)`](Self::breaker_enabled) builds the stock
/// pipeline instead, for measuring what the breaker changes.
///
/// Must be built inside a Tokio runtime (exports run there).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use breaker_otel::{ExporterConfig, OtlpPipeline};
///
/// let pipeline = OtlpPipeline::from_env()
///     .default_service_name("my-service")
///     .breaker(ExporterConfig::default())
///     .build()?;
/// opentelemetry::global::set_tracer_provider(pipeline.tracer_provider().clone());
/// let health = pipeline.handle(); // for /health/telemetry and /metrics
/// // ... serve ...
/// pipeline.shutdown(std::time::Duration::from_secs(5)).await?;
/// # drop(health); Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct OtlpPipeline {
    breaker: ExporterConfig,
    breaker_enabled: bool,
    default_service_name: String,
    protocol: Option<Protocol>,
    endpoint: Option<String>,
    /// `None`: the default for the pipeline's shape (off with the breaker, on without).
    otlp_retries: Option<bool>,
    env: Env,
}

/// Where the pipeline reads its own variables: the process, or a fixed
/// list (tests).
#[derive(Clone)]
enum Env {
    Process,
    Fixed(Arc<Vec<(String, String)>>),
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Process => f.write_str("Process"),
            Self::Fixed(_) => f.write_str("Fixed"),
        }
    }
}

impl Env {
    fn get(&self, name: &str) -> Option<String> {
        match self {
            Self::Process => std::env::var(name).ok(),
            Self::Fixed(vars) => vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        }
        .filter(|v| !v.trim().is_empty())
    }
}

impl OtlpPipeline {
    /// Starts from the process environment.
    pub fn from_env() -> Self {
        Self {
            breaker: ExporterConfig::default(),
            breaker_enabled: true,
            default_service_name: "unknown_service".to_owned(),
            protocol: None,
            endpoint: None,
            otlp_retries: None,
            env: Env::Process,
        }
    }

    /// Reads the pipeline's own variables (`OTEL_SDK_DISABLED`, the
    /// protocol) from `vars` instead of the process environment.
    pub fn with_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.env = Env::Fixed(Arc::new(vars));
        self
    }

    /// The breaker settings, typically from the service's configuration.
    pub fn breaker(mut self, settings: ExporterConfig) -> Self {
        self.breaker = settings;
        self
    }

    /// The service name used when `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`) does not say otherwise.
    pub fn default_service_name(mut self, name: impl Into<String>) -> Self {
        self.default_service_name = name.into();
        self
    }

    /// The transport, overriding `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// The collector's endpoint, overriding `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Turns the OTLP exporter's own retries (3, from 100 ms) on or off.
    /// Default: off with the breaker, on without it.
    pub fn otlp_retries(mut self, enabled: bool) -> Self {
        self.otlp_retries = Some(enabled);
        self
    }

    /// `false` builds the stock pipeline, as a service without this crate
    /// would have it: the OTLP exporter straight into the batch span
    /// processor, with its own default retries, no breaker and no export
    /// deadline other than the exporter's own timeout. The SDK then logs
    /// every failed batch itself (when its `internal-logs` feature is on).
    ///
    /// Meant for comparisons, such as the benchmarks: the built pipeline's
    /// handle reports a closed circuit whatever happens and counts only the
    /// spans that end, and it has no [`BreakerControl`]. Default: `true`.
    pub fn breaker_enabled(mut self, enabled: bool) -> Self {
        self.breaker_enabled = enabled;
        self
    }

    /// Whether `OTEL_SDK_DISABLED` turns tracing off.
    #[must_use]
    pub fn is_disabled(&self) -> bool {
        self.env
            .get("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// The transport this pipeline will use.
    ///
    /// # Errors
    ///
    /// An unsupported `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`, named.
    pub fn resolved_protocol(&self) -> Result<Protocol, PipelineError> {
        if let Some(protocol) = self.protocol {
            return Ok(protocol);
        }
        for name in PROTOCOL_VARS {
            if let Some(value) = self.env.get(name) {
                return Protocol::parse(&value).map_err(|err| match err {
                    PipelineError::InvalidVariable {
                        value, expected, ..
                    } => PipelineError::InvalidVariable {
                        name,
                        value,
                        expected,
                    },
                    other => other,
                });
            }
        }
        Ok(Protocol::Grpc)
    }

    /// Builds the exporter, breaker and provider.
    ///
    /// # Errors
    ///
    /// An unusable variable, an exporter configuration the OTLP crate
    /// rejects, or no Tokio runtime.
    pub fn build(self) -> Result<TracingPipeline, PipelineError> {
        if self.is_disabled() {
            let provider = SdkTracerProvider::builder()
                .with_sampler(Sampler::AlwaysOff)
                .with_resource(self.resource())
                .build();
            return Ok(TracingPipeline {
                provider,
                handle: BreakerHandle::disabled(),
                control: None,
                protocol: None,
            });
        }
        let protocol = self.resolved_protocol()?;
        // Checked first: the tonic client panics when built outside a runtime.
        let runtime = Handle::try_current().map_err(|_| AdapterError::NoRuntime)?;
        let retry = if self.otlp_retries.unwrap_or(!self.breaker_enabled) {
            RetryPolicy::default()
        } else {
            RetryPolicy::disabled()
        };
        let otlp = self.otlp_exporter(protocol, retry)?;
        if !self.breaker_enabled {
            return Ok(self.stock(otlp, protocol, runtime));
        }
        let exporter = CircuitBreakerSpanExporter::new(otlp, self.breaker)?;
        let handle = exporter.handle();
        let control = exporter.control();
        let provider = self.provider(BatchSpanProcessor::builder(exporter).build(), &handle);
        Ok(TracingPipeline {
            provider,
            handle,
            control: Some(control),
            protocol: Some(protocol),
        })
    }

    fn otlp_exporter(
        &self,
        protocol: Protocol,
        retry: RetryPolicy,
    ) -> Result<opentelemetry_otlp::SpanExporter, PipelineError> {
        Ok(match protocol {
            Protocol::Grpc => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_retry_policy(retry);
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.with_endpoint(endpoint.clone());
                }
                builder.build()?
            }
            Protocol::HttpProtobuf => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_retry_policy(retry);
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.with_endpoint(endpoint.clone());
                }
                builder.build()?
            }
        })
    }

    /// The provider around `batch`, counting every span that ends on `handle`
    /// before the batch queue can drop it.
    fn provider(
        &self,
        batch: impl SpanProcessor + 'static,
        handle: &BreakerHandle,
    ) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_span_processor(EndedSpans {
                inner: batch,
                published: handle.published(),
            })
            .with_resource(self.resource())
            .build()
    }

    /// The pipeline without the breaker. Its handle never leaves `closed`;
    /// it counts the spans that end, so that queue losses stay visible.
    fn stock(
        &self,
        otlp: opentelemetry_otlp::SpanExporter,
        protocol: Protocol,
        runtime: Handle,
    ) -> TracingPipeline {
        let handle = BreakerHandle::disabled();
        let batch = match protocol {
            // The tonic client works from the batch processor's own thread: this
            // is exactly the stock setup.
            Protocol::Grpc => BatchSpanProcessor::builder(otlp).build(),
            // This build's HTTP client is async and needs the Tokio runtime,
            // which the batch processor's thread is not in.
            Protocol::HttpProtobuf => BatchSpanProcessor::builder(OnRuntime {
                inner: Arc::new(otlp),
                runtime,
            })
            .build(),
        };
        let provider = self.provider(batch, &handle);
        TracingPipeline {
            provider,
            handle,
            control: None,
            protocol: Some(protocol),
        }
    }

    fn resource(&self) -> Resource {
        let from_env = Resource::builder().build();
        let named = self.env.get("OTEL_SERVICE_NAME").is_some()
            || self
                .env
                .get("OTEL_RESOURCE_ATTRIBUTES")
                .is_some_and(|attrs| attrs.contains("service.name="));
        if named {
            from_env
        } else {
            Resource::builder()
                .with_service_name(self.default_service_name.clone())
                .build()
        }
    }
}

/// A built pipeline: the tracer provider to install, the breaker's
/// read-only handle, and a bounded, non-blocking shutdown.
#[derive(Debug)]
pub struct TracingPipeline {
    provider: SdkTracerProvider,
    handle: BreakerHandle,
    control: Option<BreakerControl>,
    protocol: Option<Protocol>,
}

impl TracingPipeline {
    /// The provider to install (e.g. `opentelemetry::global::set_tracer_provider`).
    #[must_use]
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// The breaker's read-only handle (a disabled handle, always closed,
    /// when tracing is off).
    #[must_use]
    pub fn handle(&self) -> BreakerHandle {
        self.handle.clone()
    }

    /// Manual control of the breaker; `None` when tracing is off.
    #[must_use]
    pub fn control(&self) -> Option<BreakerControl> {
        self.control.clone()
    }

    /// The transport in use; `None` when tracing is off.
    #[must_use]
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Flushes what is queued and shuts the provider down, within `timeout`
    /// whatever the backend does.
    ///
    /// The SDK's shutdown blocks its caller while the batch processor's
    /// thread runs the last exports, and those exports run on this Tokio
    /// runtime: so the blocking part runs on the blocking pool and the
    /// runtime stays free to drive them.
    ///
    /// # Errors
    ///
    /// The provider's shutdown error, or `Timeout` if it took too long.
    pub async fn shutdown(self, timeout: Duration) -> OTelSdkResult {
        let provider = self.provider;
        // The provider gets slightly less than the whole budget so that its own timeout,
        // not ours, usually ends a slow shutdown, with its own error.
        let inner = timeout.saturating_sub(timeout / 20);
        let blocking = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(inner));
        match tokio::time::timeout(timeout, blocking).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(OTelSdkError::InternalFailure(
                "tracer provider shutdown panicked".into(),
            )),
            Err(_) => Err(OTelSdkError::Timeout(timeout)),
        }
    }
}

/// Runs each export of `inner` as a task on `runtime` and waits for it:
/// nothing else (no deadline, no breaker). Only the stock pipeline over
/// HTTP needs it, because its client needs the runtime.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: Handle,
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(_) => Err(OTelSdkError::InternalFailure(
                "the span export task panicked or was cancelled".into(),
            )),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called while the provider is built, before any export holds a clone.
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.set_resource(resource),
            None => {
                tracing::warn!("resource not passed to the inner span exporter: export in flight")
            }
        }
    }
}

/// Counts every span that ends, before the batch processor's queue can drop
/// it, so that spans lost to a full queue are accounted for:
/// `ended = exported + dropped + failed + lost in the queue` after shutdown.
#[derive(Debug)]
struct EndedSpans<P> {
    inner: P,
    published: Arc<Published>,
}

impl<P: SpanProcessor> SpanProcessor for EndedSpans<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.published.count_ended();
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_comes_from_the_signal_variable_first() {
        let pipeline = OtlpPipeline::from_env().with_vars([
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(
            pipeline.resolved_protocol().unwrap(),
            Protocol::HttpProtobuf
        );
        let pipeline = OtlpPipeline::from_env().with_vars([("X", "y")]);
        assert_eq!(pipeline.resolved_protocol().unwrap(), Protocol::Grpc);
    }

    #[test]
    fn an_unsupported_protocol_names_the_variable() {
        let pipeline =
            OtlpPipeline::from_env().with_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        let err = pipeline.resolved_protocol().unwrap_err().to_string();
        assert_eq!(
            err,
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\": expected grpc or http/protobuf"
        );
    }

    #[test]
    fn code_overrides_the_environment() {
        let pipeline = OtlpPipeline::from_env()
            .with_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "nonsense")])
            .protocol(Protocol::Grpc);
        assert_eq!(pipeline.resolved_protocol().unwrap(), Protocol::Grpc);
    }

    #[test]
    fn sdk_disabled_is_read_case_insensitively() {
        for (value, disabled) in [
            ("true", true),
            ("TRUE", true),
            ("false", false),
            ("", false),
        ] {
            let pipeline = OtlpPipeline::from_env().with_vars([("OTEL_SDK_DISABLED", value)]);
            assert_eq!(pipeline.is_disabled(), disabled, "{value:?}");
        }
    }
}
