//! The standard OTLP pipeline with the breaker in it, for every signal the service
//! sends: our OTLP exporters ([`OtlpSpanExporter`], [`OtlpLogExporter`],
//! [`OtlpMetricExporter`], `src/otlp/`) → circuit-breaking exporters on one
//! [`BackendBreaker`] per backend → our batch span processor, the SDK's batch log
//! processor and periodic reader → the providers; or, for comparisons only (feature
//! `bench`), the stock span pipeline: `opentelemetry-otlp`'s exporter straight into the
//! batch span processor. Every `OTEL_*` value comes from [`OtlpEnv`], checked.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "bench")]
use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
#[cfg(feature = "bench")]
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
#[cfg(feature = "bench")]
use tokio::runtime::Handle;
use tokio::runtime::Runtime;

use crate::batch::{BatchProcessor, QueueSettings, TelemetryPriority, telemetry_runtime};
use crate::exporter::{
    AdapterError, BreakerControl, CircuitBreakerSpanExporter, ExporterConfig, TokioClock,
};
use crate::handle::BreakerHandle;
#[cfg(feature = "bench")]
use crate::handle::Published;
use crate::instance_id;
use crate::otel_env::{Endpoint, OtlpEnv, OtlpEnvError, Resolved, mask_endpoint};
use crate::otlp::{OtlpExporterConfig, OtlpExporterError, OtlpSpanExporter};
use crate::{
    BackendBreaker, BackendHandle, MetricPush, OtlpLogExporter, OtlpMetricExporter, Signal,
};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP over gRPC (tonic), the default; endpoint `http://localhost:4317`.
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies; endpoint `http://localhost:4318/v1/traces`.
    HttpProtobuf,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        })
    }
}

/// Whether a signal the service can send is exported over OTLP when its
/// `OTEL_<SIGNAL>_EXPORTER` variable is unset (see [`TracingPipelineBuilder::logs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalExport {
    /// Exported over OTLP, through the breaker: the specification's default.
    Otlp,
    /// Not exported unless the variable says `otlp`: an opt-in.
    None,
}

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// An `OTEL_*` variable has a value this pipeline cannot use.
    #[error(transparent)]
    Env(#[from] OtlpEnvError),
    /// The OTLP exporter rejected its configuration (e.g. an `https://` gRPC endpoint in a
    /// build without TLS). Secrets in the endpoint are masked.
    #[error("OTLP exporter: {reason}")]
    Exporter {
        /// The variable that set the endpoint, or `None` for the default or one set in code.
        endpoint_variable: Option<&'static str>,
        /// The endpoint, userinfo masked.
        endpoint: String,
        /// The exporter's message, userinfo masked.
        reason: String,
    },
    /// The circuit-breaking adapter could not be built.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// The telemetry runtime's threads could not be started.
    #[error("cannot start the telemetry threads: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How long [`SpanProcessor::force_flush`] waits at least (the SDK's own default); at
/// most the breaker's export deadline when that is longer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a [`TracingPipeline`] from the standard `OTEL_*` environment unless set in code;
/// made by [`TracingPipeline::builder`].
///
/// Every variable is read and checked by [`OtlpEnv`] (the process environment unless
/// [`env`](Self::env) or [`with_vars`](Self::with_vars) says otherwise) and handed to the
/// exporter and batch processor explicitly: `OTEL_SDK_DISABLED` (`true` gives a working
/// no-op provider, which the SDK itself does not do), `OTEL_EXPORTER_OTLP_(TRACES_)*`
/// (protocol, endpoint, headers, timeout, compression), `OTEL_BSP_*`, and
/// `OTEL_SERVICE_NAME` or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`. The SDK reads
/// the rest itself from the process environment (`OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_TRACES_SAMPLER(_ARG)`). The whole list is [`OtlpEnv::VARIABLES`]. The resource
/// always has a `service.instance.id`: a random one unless set
/// ([`resolved_service_instance_id`](Self::resolved_service_instance_id)).
///
/// The exporter in the breaker's pipeline is ours ([`OtlpSpanExporter`]), which never
/// retries: the breaker is the resilience mechanism, and retrying inside one export would
/// turn each failing batch into four requests against a backend that is struggling.
///
/// Must be built inside a Tokio runtime (exports run there).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use breaker_otel::{ExporterConfig, TracingPipeline};
///
/// let pipeline = TracingPipeline::builder()
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
pub struct TracingPipelineBuilder {
    breaker: ExporterConfig,
    #[cfg(feature = "bench")]
    breaker_enabled: bool,
    default_service_name: String,
    /// `service.instance.id` set in code.
    service_instance_id: Option<String>,
    protocol: Option<Protocol>,
    endpoint: Option<String>,
    /// `None`: the default for the pipeline's shape (off with the breaker, on without).
    otlp_retries: Option<bool>,
    priority: TelemetryPriority,
    /// `Some`: the service sends log records through the pipeline, exported by default or not.
    logs: Option<SignalExport>,
    /// `Some`: the service can push metrics through the pipeline, by default or not.
    metrics: Option<SignalExport>,
    env: OtlpEnv,
}

impl TracingPipelineBuilder {
    fn new() -> Self {
        Self {
            breaker: ExporterConfig::default(),
            #[cfg(feature = "bench")]
            breaker_enabled: true,
            default_service_name: "unknown_service".to_owned(),
            service_instance_id: None,
            protocol: None,
            endpoint: None,
            otlp_retries: None,
            priority: TelemetryPriority::default(),
            logs: None,
            metrics: None,
            env: OtlpEnv::from_process(),
        }
    }

    /// Reads the `OTEL_*` variables from `env` instead of the process environment.
    pub fn env(mut self, env: OtlpEnv) -> Self {
        self.env = env;
        self
    }

    /// Reads the `OTEL_*` variables from `vars` instead of the process environment
    /// (shorthand for [`env`](Self::env) with [`OtlpEnv::from_vars`]).
    pub fn with_vars<K: Into<String>, V: Into<String>>(
        self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env(OtlpEnv::from_vars(vars))
    }

    /// The breaker settings, typically from the service's configuration.
    pub fn breaker(mut self, settings: ExporterConfig) -> Self {
        self.breaker = settings;
        self
    }

    /// The operating-system priority of the threads that batch, encode and send spans
    /// (default [`TelemetryPriority::Background`]). Background threads run on CPU time
    /// that requests leave over: under saturation the queue fills and the spans that do
    /// not fit are counted as lost (`queue_full`) instead of slowing requests down.
    pub fn priority(mut self, priority: TelemetryPriority) -> Self {
        self.priority = priority;
        self
    }

    /// The service sends log records through the pipeline (for example with the
    /// `tracing` → OpenTelemetry logs bridge on [`TracingPipeline::logger_provider`]):
    /// the pipeline builds a logger provider whose batch log processor exports through a
    /// log breaker, when `OTEL_LOGS_EXPORTER` says `otlp`, or is unset and `default` is
    /// [`SignalExport::Otlp`]. `OTEL_BLRP_*` set the processor. Without this call no
    /// logger provider is built, whatever the variable says.
    pub fn logs(mut self, default: SignalExport) -> Self {
        self.logs = Some(default);
        self
    }

    /// The service can push metrics through the pipeline (instruments of
    /// [`TracingPipeline::meter_provider`]): the pipeline builds a meter provider whose
    /// periodic reader (every `OTEL_METRIC_EXPORT_INTERVAL`) exports through a metric
    /// breaker, when `OTEL_METRICS_EXPORTER` says `otlp`, or is unset and `default` is
    /// [`SignalExport::Otlp`].
    pub fn metrics(mut self, default: SignalExport) -> Self {
        self.metrics = Some(default);
        self
    }

    /// The service name used when `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`) does not say otherwise.
    pub fn default_service_name(mut self, name: impl Into<String>) -> Self {
        self.default_service_name = name.into();
        self
    }

    /// The `service.instance.id` resource attribute, overriding the one in
    /// `OTEL_RESOURCE_ATTRIBUTES` (see
    /// [`resolved_service_instance_id`](Self::resolved_service_instance_id)).
    pub fn service_instance_id(mut self, id: impl Into<String>) -> Self {
        self.service_instance_id = Some(id.into());
        self
    }

    /// The `service.instance.id` the pipeline's resource carries, so that a service can show
    /// it (in its start-up log and health answer) and an operator can find its spans: the one
    /// set in code ([`service_instance_id`](Self::service_instance_id)), else
    /// `service.instance.id` in `OTEL_RESOURCE_ATTRIBUTES`, else a random UUID (v4) made once
    /// per process, as the semantic conventions recommend when nothing better names the
    /// instance. An explicit value always wins; an empty one counts as none.
    #[must_use]
    pub fn resolved_service_instance_id(&self) -> String {
        self.service_instance_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .or_else(|| self.env.service_instance_id())
            .unwrap_or_else(|| instance_id::of_this_process().to_owned())
    }

    /// The transport of spans, overriding `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (log
    /// records and metrics follow their variables).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// The collector's endpoint for spans, used as is, overriding
    /// `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` (log records and metrics follow their
    /// variables).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Turns `opentelemetry-otlp`'s own retries (3, from 100 ms) on or off in the stock
    /// pipeline (feature `bench`, `breaker_enabled(false)`), where
    /// they default to on. The breaker's pipeline uses our exporter, which has no retries:
    /// there this setting changes nothing (it is kept so that callers still build).
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
    /// For comparisons only (feature `bench`): the built pipeline's handle reports a
    /// closed circuit whatever happens and counts only the spans that end, and it has no
    /// [`BreakerControl`]. Default: `true`.
    #[cfg(feature = "bench")]
    pub fn breaker_enabled(mut self, enabled: bool) -> Self {
        self.breaker_enabled = enabled;
        self
    }

    /// Whether `OTEL_SDK_DISABLED` turns tracing off.
    ///
    /// # Errors
    ///
    /// A value other than `true` or `false`, named.
    pub fn is_disabled(&self) -> Result<bool, PipelineError> {
        Ok(self.env.is_disabled()?)
    }

    /// The transport this pipeline will use.
    ///
    /// # Errors
    ///
    /// An unsupported `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`, named.
    pub fn resolved_protocol(&self) -> Result<Protocol, PipelineError> {
        match self.protocol {
            Some(protocol) => Ok(protocol),
            None => Ok(self.env.protocol()?),
        }
    }

    /// Builds the exporter, breaker and provider.
    ///
    /// # Errors
    ///
    /// An unusable `OTEL_*` variable (every one is checked, even when tracing is off),
    /// an exporter configuration the OTLP crate rejects, or no Tokio runtime.
    pub fn build(self) -> Result<TracingPipeline, PipelineError> {
        let env = self.env.resolve()?;
        let wanted = |default: Option<SignalExport>, signal: Signal| {
            !env.disabled && default.is_some_and(|d| env.exports(signal, d == SignalExport::Otlp))
        };
        let signals = Signals {
            traces: !env.disabled && env.exports(Signal::Traces, true),
            logs: wanted(self.logs, Signal::Logs),
            metrics: wanted(self.metrics, Signal::Metrics),
        };
        if !signals.traces && !signals.logs && !signals.metrics {
            return Ok(TracingPipeline::off(self.off_provider(&env)));
        }
        let protocol = self
            .protocol
            .unwrap_or(env.transport(Signal::Traces).protocol);
        #[cfg(feature = "bench")]
        if !self.breaker_enabled && signals.traces {
            // Checked first: the tonic client panics when built outside a runtime.
            let runtime = Handle::try_current().map_err(|_| AdapterError::NoRuntime)?;
            let retry = if self.otlp_retries.unwrap_or(true) {
                opentelemetry_otlp::RetryPolicy::default()
            } else {
                opentelemetry_otlp::RetryPolicy::disabled()
            };
            let otlp = self.stock_exporter(&env, protocol, retry)?;
            return Ok(self.stock(otlp, &env, protocol, runtime));
        }
        #[cfg(not(feature = "bench"))]
        let _ = self.otlp_retries;
        // Everything the export does runs on the pipeline's own runtime, at its priority:
        // the exporter's connection is made there too.
        let runtime = telemetry_runtime(self.priority).map_err(PipelineError::Runtime)?;
        let built = {
            let _entered = runtime.enter();
            self.exporters(&env, protocol, signals, &runtime)
        };
        let exporters = match built {
            Ok(exporters) => exporters,
            Err(err) => {
                // Dropping a runtime waits for its threads, which an async caller may not do.
                runtime.shutdown_background();
                return Err(err);
            }
        };
        let resource = self.resource(&env);
        let logger_provider = exporters.logs.map(|exporter| {
            let config = BatchConfigBuilder::default()
                .with_scheduled_delay(env.log_schedule_delay)
                .with_max_queue_size(env.log_max_queue_size)
                .with_max_export_batch_size(
                    env.log_max_export_batch_size.min(env.log_max_queue_size),
                )
                .build();
            SdkLoggerProvider::builder()
                .with_log_processor(
                    BatchLogProcessor::builder(exporter)
                        .with_batch_config(config)
                        .build(),
                )
                .with_resource(resource.clone())
                .build()
        });
        let meter_provider = exporters.metrics.map(|exporter| {
            SdkMeterProvider::builder()
                .with_reader(
                    PeriodicReader::builder(exporter)
                        .with_interval(env.metric_export_interval)
                        .build(),
                )
                .with_resource(resource.clone())
                .build()
        });
        let metric_push = exporters.push.map(|exporter| {
            MetricPush::new(
                exporter,
                &resource,
                &self.service_name(&env),
                env.metric_export_interval,
            )
        });
        let Some(exporter) = exporters.traces else {
            return Ok(TracingPipeline {
                logger_provider,
                meter_provider,
                metric_push,
                backends: exporters.backends,
                provider: self.off_provider(&env),
                handle: BreakerHandle::disabled(),
                control: None,
                protocol: None,
                runtime: Some(runtime),
            });
        };
        let handle = exporter.handle();
        let control = exporter.control();
        let queue = QueueSettings {
            max_queue_size: env.max_queue_size,
            max_export_batch_size: env.max_export_batch_size,
            scheduled_delay: env.schedule_delay,
            attribute_value_limit: env.attribute_value_length_limit,
        };
        let batch = BatchProcessor::new(
            exporter,
            queue,
            runtime,
            handle.published(),
            self.breaker.export_timeout.max(FLUSH_TIMEOUT),
        );
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            // Set explicitly, so that the SDK's own reading of the process environment
            // never overrides the checked value.
            .with_max_attributes_per_span(env.span_attribute_count_limit)
            .with_resource(resource)
            .build();
        Ok(TracingPipeline {
            logger_provider,
            meter_provider,
            metric_push,
            backends: exporters.backends,
            provider,
            handle,
            control: Some(control),
            protocol: Some(protocol),
            // The batch processor owns it and stops it last.
            runtime: None,
        })
    }

    /// `service.name`: from the variables, else the default given in code.
    fn service_name(&self, env: &Resolved) -> String {
        env.service_name
            .clone()
            .unwrap_or_else(|| self.default_service_name.clone())
    }

    /// A working tracer provider that samples nothing.
    fn off_provider(&self, env: &Resolved) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .with_resource(self.resource(env))
            .build()
    }

    /// Our OTLP exporters for the signals wanted, each behind the breaker of its backend:
    /// signals sent to one scheme, host and port share one [`BackendBreaker`], so that
    /// the collector's outage is detected, probed and logged once.
    fn exporters(
        &self,
        env: &Resolved,
        span_protocol: Protocol,
        signals: Signals,
        runtime: &Runtime,
    ) -> Result<Exporters, PipelineError> {
        // Where each signal goes and how, first: a breaker is named (its exporters'
        // `otel.component.type`) after the transports of every signal it serves.
        let mut routes: Vec<(Signal, String, Protocol)> = Vec::new();
        if signals.traces {
            let endpoint = self.resolved_endpoint(env, span_protocol);
            routes.push((Signal::Traces, endpoint.url, span_protocol));
        }
        for (signal, wanted) in [
            (Signal::Logs, signals.logs),
            (Signal::Metrics, signals.metrics),
        ] {
            if wanted {
                let transport = env.transport(signal);
                let endpoint = transport.endpoint(signal, transport.protocol);
                routes.push((signal, endpoint.url, transport.protocol));
            }
        }
        let mut backends: Vec<(String, BackendBreaker)> = Vec::new();
        let mut backend_for = |url: &str| -> Result<BackendBreaker, PipelineError> {
            let key = backend_key(url);
            if let Some((_, backend)) = backends.iter().find(|(k, _)| *k == key) {
                return Ok(backend.clone());
            }
            let mut builder = BackendBreaker::builder(self.breaker)
                .endpoint(&key)
                .runtime(runtime.handle().clone(), Arc::new(TokioClock));
            for (signal, url, protocol) in &routes {
                if backend_key(url) == key {
                    builder = builder.signal_protocol(*signal, *protocol);
                }
            }
            let backend = builder.build()?;
            backends.push((key, backend.clone()));
            Ok(backend)
        };
        let traces = if signals.traces {
            let otlp = self.otlp_exporter(env, span_protocol)?;
            let endpoint = self.resolved_endpoint(env, span_protocol);
            // `reporting`: the breaker learns what the backend answered, not just "failed".
            Some(backend_for(&endpoint.url)?.reporting_span_exporter(otlp))
        } else {
            None
        };
        let logs = if signals.logs {
            let (config, endpoint) = signal_config(env, Signal::Logs);
            let otlp =
                OtlpLogExporter::new(config).map_err(|err| exporter_error(err, &endpoint))?;
            Some(backend_for(&endpoint.url)?.reporting_log_exporter(otlp))
        } else {
            None
        };
        let (metrics, push) = if signals.metrics {
            let (config, endpoint) = signal_config(env, Signal::Metrics);
            let otlp = |config| {
                OtlpMetricExporter::new(config, env.temporality)
                    .map_err(|err| exporter_error(err, &endpoint))
            };
            let backend = backend_for(&endpoint.url)?;
            (
                Some(backend.reporting_metric_exporter(otlp(config.clone())?)),
                Some(backend.reporting_metric_exporter(otlp(config)?)),
            )
        } else {
            (None, None)
        };
        Ok(Exporters {
            traces,
            logs,
            metrics,
            push,
            backends: backends.iter().map(|(_, b)| b.handle()).collect(),
        })
    }

    /// The endpoint from code, else from the variables (with `/v1/traces` over HTTP).
    fn resolved_endpoint(&self, env: &Resolved, protocol: Protocol) -> Endpoint {
        match &self.endpoint {
            Some(url) => Endpoint {
                url: url.clone(),
                variable: None,
            },
            None => env.endpoint(protocol),
        }
    }

    /// Our exporter, from the checked variables: the same endpoint, headers (decoded),
    /// timeout and compression the stock one gets.
    fn otlp_exporter(
        &self,
        env: &Resolved,
        protocol: Protocol,
    ) -> Result<OtlpSpanExporter, PipelineError> {
        let endpoint = self.resolved_endpoint(env, protocol);
        let traces = env.transport(Signal::Traces);
        let mut config = OtlpExporterConfig::new(protocol, endpoint.url.clone())
            .timeout(
                traces
                    .timeout
                    .unwrap_or(OtlpExporterConfig::DEFAULT_TIMEOUT),
            )
            .gzip(traces.gzip);
        for header in &traces.headers {
            config = config.header(header.name.clone(), header.value.clone());
        }
        OtlpSpanExporter::new(config).map_err(|err| exporter_error(err, &endpoint))
    }

    /// `opentelemetry-otlp`'s exporter, for the stock pipeline only.
    #[cfg(feature = "bench")]
    fn stock_exporter(
        &self,
        env: &Resolved,
        protocol: Protocol,
        retry: opentelemetry_otlp::RetryPolicy,
    ) -> Result<opentelemetry_otlp::SpanExporter, PipelineError> {
        use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
        use opentelemetry_otlp::{Compression, WithExportConfig, WithHttpConfig, WithTonicConfig};
        let endpoint = self.resolved_endpoint(env, protocol);
        let traces = env.transport(Signal::Traces);
        let timeout = traces
            .timeout
            .unwrap_or(opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT);
        let compression = traces.gzip.then_some(Compression::Gzip);
        let built = match protocol {
            Protocol::Grpc => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.url.clone())
                    .with_timeout(timeout)
                    .with_retry_policy(retry);
                if let Some(compression) = compression {
                    builder = builder.with_compression(compression);
                }
                // The tonic exporter adds the process environment's headers to these by
                // itself (appending, not replacing): passing them too would send each twice.
                if !self.env.is_process() && !traces.headers.is_empty() {
                    let headers = traces
                        .headers
                        .iter()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect();
                    builder = builder.with_metadata(MetadataMap::from_headers(headers));
                }
                builder.build()
            }
            Protocol::HttpProtobuf => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(endpoint.url.clone())
                    .with_timeout(timeout)
                    .with_retry_policy(retry);
                if let Some(compression) = compression {
                    builder = builder.with_compression(compression);
                }
                if !traces.headers.is_empty() {
                    // Raw values: the HTTP exporter percent-decodes them itself.
                    let headers = traces
                        .headers
                        .iter()
                        .map(|h| (h.name.as_str().to_owned(), h.raw.clone()))
                        .collect::<std::collections::HashMap<_, _>>();
                    builder = builder.with_headers(headers);
                }
                builder.build()
            }
        };
        built.map_err(|err| {
            let masked = mask_endpoint(&endpoint.url);
            PipelineError::Exporter {
                endpoint_variable: endpoint.variable,
                // The exporter quotes the endpoint it was given, userinfo and all.
                reason: err.to_string().replace(&endpoint.url, &masked),
                endpoint: masked,
            }
        })
    }

    /// The stock provider around `batch`, counting every span that ends on `handle`
    /// before the batch queue can drop it.
    #[cfg(feature = "bench")]
    fn provider(
        &self,
        batch: impl SpanProcessor + 'static,
        env: &Resolved,
        handle: &BreakerHandle,
    ) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_span_processor(BeforeQueue {
                inner: batch,
                published: handle.published(),
                attribute_value_limit: env.attribute_value_length_limit,
            })
            // Set explicitly, so that the SDK's own reading of the process environment
            // never overrides the checked value.
            .with_max_attributes_per_span(env.span_attribute_count_limit)
            .with_resource(self.resource(env))
            .build()
    }

    /// The pipeline without the breaker. Its handle never leaves `closed`;
    /// it counts the spans that end, so that queue losses stay visible.
    #[cfg(feature = "bench")]
    fn stock(
        &self,
        otlp: opentelemetry_otlp::SpanExporter,
        env: &Resolved,
        protocol: Protocol,
        runtime: Handle,
    ) -> TracingPipeline {
        let handle = BreakerHandle::disabled();
        let config = env.batch_config();
        let batch = match protocol {
            // The tonic client works from the batch processor's own thread: this
            // is exactly the stock setup.
            Protocol::Grpc => BatchSpanProcessor::builder(otlp)
                .with_batch_config(config)
                .build(),
            // This build's HTTP client is async and needs the Tokio runtime,
            // which the batch processor's thread is not in.
            Protocol::HttpProtobuf => BatchSpanProcessor::builder(OnRuntime {
                inner: Arc::new(otlp),
                runtime,
            })
            .with_batch_config(config)
            .build(),
        };
        let provider = self.provider(batch, env, &handle);
        let mut pipeline = TracingPipeline::off(provider);
        // The handle the provider counts ended spans on.
        pipeline.handle = handle;
        pipeline.protocol = Some(protocol);
        pipeline
    }

    /// The SDK's resource from the process environment, named from the checked variables
    /// (so that a map given with [`env`](Self::env) names the service too), and always with a
    /// `service.instance.id`: several replicas of one service must be told apart.
    fn resource(&self, env: &Resolved) -> Resource {
        let name = self.service_name(env);
        Resource::builder()
            .with_service_name(name)
            .with_attribute(KeyValue::new(
                instance_id::SERVICE_INSTANCE_ID,
                self.resolved_service_instance_id(),
            ))
            .build()
    }
}

/// A built pipeline: the tracer provider to install, the breaker's
/// read-only handle, and a bounded, non-blocking shutdown.
#[derive(Debug)]
pub struct TracingPipeline {
    // Dropped in this order: the log and metric providers' last exports run on the
    // telemetry runtime, which the tracer provider's processor (or `runtime`) stops.
    logger_provider: Option<SdkLoggerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    metric_push: Option<MetricPush>,
    backends: Vec<BackendHandle>,
    provider: SdkTracerProvider,
    handle: BreakerHandle,
    control: Option<BreakerControl>,
    protocol: Option<Protocol>,
    /// The telemetry runtime when no span processor owns it (spans not exported).
    runtime: Option<Runtime>,
}

impl Drop for TracingPipeline {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which an async caller may not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Which signals the pipeline exports.
#[derive(Debug, Clone, Copy)]
struct Signals {
    traces: bool,
    logs: bool,
    metrics: bool,
}

/// The circuit-breaking exporters the pipeline built, and their breakers.
struct Exporters {
    traces: Option<CircuitBreakerSpanExporter<OtlpSpanExporter>>,
    logs: Option<crate::CircuitBreakerLogExporter<OtlpLogExporter>>,
    metrics: Option<crate::CircuitBreakerMetricExporter<OtlpMetricExporter>>,
    /// For [`MetricPush`], on the same breaker as `metrics`.
    push: Option<crate::CircuitBreakerMetricExporter<OtlpMetricExporter>>,
    backends: Vec<BackendHandle>,
}

/// The backend an endpoint belongs to: its scheme, host and port (`http://collector:4318`),
/// which every signal sent there shares whatever its path.
fn backend_key(url: &str) -> String {
    match url.trim().parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => url.trim().to_owned(),
        },
        Err(_) => url.trim().to_owned(),
    }
}

/// The exporter configuration of `signal` from its checked variables, and its endpoint.
fn signal_config(env: &Resolved, signal: Signal) -> (OtlpExporterConfig, Endpoint) {
    let transport = env.transport(signal);
    let endpoint = transport.endpoint(signal, transport.protocol);
    let mut config = OtlpExporterConfig::new(transport.protocol, endpoint.url.clone())
        .timeout(
            transport
                .timeout
                .unwrap_or(OtlpExporterConfig::DEFAULT_TIMEOUT),
        )
        .gzip(transport.gzip);
    for header in &transport.headers {
        config = config.header(header.name.clone(), header.value.clone());
    }
    (config, endpoint)
}

/// The pipeline's error for an exporter that could not be built at `endpoint`.
fn exporter_error(err: OtlpExporterError, endpoint: &Endpoint) -> PipelineError {
    match err {
        OtlpExporterError::NoRuntime => PipelineError::Adapter(AdapterError::NoRuntime),
        // Every message is masked already.
        err => PipelineError::Exporter {
            endpoint_variable: endpoint.variable,
            endpoint: mask_endpoint(&endpoint.url),
            reason: err.to_string(),
        },
    }
}

impl TracingPipeline {
    /// Starts building a pipeline from the process environment.
    pub fn builder() -> TracingPipelineBuilder {
        TracingPipelineBuilder::new()
    }

    /// A pipeline that exports nothing, around a provider that samples nothing.
    fn off(provider: SdkTracerProvider) -> Self {
        Self {
            logger_provider: None,
            meter_provider: None,
            metric_push: None,
            backends: Vec::new(),
            provider,
            handle: BreakerHandle::disabled(),
            control: None,
            protocol: None,
            runtime: None,
        }
    }

    /// The logger provider, when the service asked for logs
    /// ([`TracingPipelineBuilder::logs`]) and they are exported.
    #[must_use]
    pub fn logger_provider(&self) -> Option<&SdkLoggerProvider> {
        self.logger_provider.as_ref()
    }

    /// The meter provider, when the service asked for metrics
    /// ([`TracingPipelineBuilder::metrics`]) and they are exported.
    #[must_use]
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.meter_provider.as_ref()
    }

    /// Pushes metrics that are OTLP messages already (instruments outside the SDK, such
    /// as a Prometheus registry's, converted) through the metric breaker, when the service
    /// asked for metrics ([`TracingPipelineBuilder::metrics`]) and they are exported.
    #[must_use]
    pub fn metric_push(&self) -> Option<MetricPush> {
        self.metric_push.clone()
    }

    /// One read-only handle per backend breaker (signals sent to one host and port share
    /// one), in the order traces, logs, metrics first appear; empty when nothing is exported.
    #[must_use]
    pub fn backends(&self) -> &[BackendHandle] {
        &self.backends
    }

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

    /// Flushes what is queued and shuts the providers down (logs and metrics first, then
    /// spans), within `timeout` whatever the backend does.
    ///
    /// The SDK's shutdown blocks its caller while the batch processor's
    /// thread runs the last exports, and those exports run on this Tokio
    /// runtime: so the blocking part runs on the blocking pool and the
    /// runtime stays free to drive them.
    ///
    /// # Errors
    ///
    /// The provider's shutdown error, or `Timeout` if it took too long.
    pub async fn shutdown(mut self, timeout: Duration) -> OTelSdkResult {
        let started = tokio::time::Instant::now();
        // Each provider gets slightly less than the whole budget so that its own timeout,
        // not ours, usually ends a slow shutdown, with its own error.
        let inner = timeout.saturating_sub(timeout / 20);
        if let Some(push) = self.metric_push.take() {
            // Its pushes end here; the service's loop sees AlreadyShutdown.
            let _ = push.shutdown();
        }
        let (logs, metrics) = (self.logger_provider.take(), self.meter_provider.take());
        if logs.is_some() || metrics.is_some() {
            // First, side by side: their last exports run on the telemetry runtime, which
            // the span processor's shutdown stops.
            let blocking = tokio::task::spawn_blocking(move || {
                std::thread::scope(|scope| {
                    let logs = scope.spawn(|| logs.map(|p| p.shutdown_with_timeout(inner)));
                    let metrics = scope.spawn(|| metrics.map(|p| p.shutdown_with_timeout(inner)));
                    let joined = |handle: std::thread::ScopedJoinHandle<'_, _>, what: &str| {
                        handle.join().unwrap_or_else(|_| {
                            Some(Err(OTelSdkError::InternalFailure(format!(
                                "{what} provider shutdown panicked"
                            ))))
                        })
                    };
                    let logs = joined(logs, "logger");
                    let metrics = joined(metrics, "meter");
                    logs.into_iter().chain(metrics).collect::<Vec<_>>()
                })
            });
            let results = match tokio::time::timeout(timeout, blocking).await {
                Ok(Ok(results)) => results,
                Ok(Err(_)) => vec![Err(OTelSdkError::InternalFailure(
                    "logger or meter provider shutdown panicked".into(),
                ))],
                Err(_) => return Err(OTelSdkError::Timeout(timeout)),
            };
            let traces = self
                .shutdown_traces(timeout.saturating_sub(started.elapsed()))
                .await;
            // The SDK's providers fail their shutdown when their last export fails or is
            // dropped by an open circuit, which the breaker has counted already: only a
            // shutdown that ran out of time is an error of the shutdown itself.
            for err in results.iter().filter_map(|r| r.as_ref().err()) {
                tracing::debug!(error = %err, "a log or metric provider's last export did not go out");
            }
            return results
                .into_iter()
                .find(|r| matches!(r, Err(OTelSdkError::Timeout(_))))
                .unwrap_or(traces);
        }
        self.shutdown_traces(timeout).await
    }

    /// Shuts the tracer provider down within `timeout`.
    async fn shutdown_traces(&self, timeout: Duration) -> OTelSdkResult {
        let provider = self.provider.clone();
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
#[cfg(feature = "bench")]
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: Handle,
}

#[cfg(feature = "bench")]
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

/// The stock pipeline's step in front of the SDK's batch processor: it counts every span
/// that ends (the SDK's queue losses are then `ended - total`), and cuts string attributes
/// as our own processor does ([`crate::batch::truncate_attributes`]), so that the two
/// pipelines compared carry the same spans.
#[derive(Debug)]
#[cfg(feature = "bench")]
struct BeforeQueue<P> {
    inner: P,
    published: Arc<Published>,
    attribute_value_limit: usize,
}

#[cfg(feature = "bench")]
impl<P: SpanProcessor> SpanProcessor for BeforeQueue<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if span.span_context.is_sampled() {
            self.published.count_ended();
        }
        crate::batch::truncate_attributes(&mut span, self.attribute_value_limit);
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
        for (traces, generic, expected) in [
            ("http/protobuf", "grpc", Protocol::HttpProtobuf),
            ("grpc", "http/protobuf", Protocol::Grpc),
        ] {
            let builder = TracingPipeline::builder().with_vars([
                ("OTEL_EXPORTER_OTLP_PROTOCOL", generic),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", traces),
            ]);
            assert_eq!(builder.resolved_protocol().unwrap(), expected);
        }
        let builder = TracingPipeline::builder().with_vars([("X", "y")]);
        assert_eq!(builder.resolved_protocol().unwrap(), Protocol::Grpc);
    }

    #[test]
    fn an_unsupported_protocol_names_the_variable() {
        let builder =
            TracingPipeline::builder().with_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        let err = builder.resolved_protocol().unwrap_err().to_string();
        assert_eq!(
            err,
            "OTEL_EXPORTER_OTLP_PROTOCOL = \"http/json\": expected \"grpc\" or \"http/protobuf\""
        );
    }

    /// The signals a built pipeline exports, and its breakers by endpoint and signals.
    fn built(vars: &[(&str, &str)]) -> Vec<(String, Vec<Signal>)> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let pipeline = TracingPipeline::builder()
                .with_vars(vars.iter().copied())
                .logs(SignalExport::Otlp)
                .metrics(SignalExport::None)
                .build()
                .unwrap();
            assert_eq!(
                pipeline.logger_provider().is_some(),
                pipeline
                    .backends()
                    .iter()
                    .any(|b| b.signals().any(|s| s == Signal::Logs))
            );
            assert_eq!(
                pipeline.meter_provider().is_some(),
                pipeline.metric_push().is_some()
            );
            let backends = pipeline
                .backends()
                .iter()
                .map(|b| (b.endpoint().unwrap_or("").to_owned(), b.signals().collect()))
                .collect();
            pipeline.shutdown(Duration::from_secs(2)).await.unwrap();
            backends
        })
    }

    #[test]
    fn signals_sent_to_one_host_and_port_share_one_breaker() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
        assert_eq!(
            built(&[endpoint]),
            [(
                "http://127.0.0.1:9".to_owned(),
                vec![Signal::Traces, Signal::Logs]
            )],
            "metrics are opted out by default here"
        );
        assert_eq!(
            built(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_METRICS_EXPORTER", "otlp"),
            ]),
            [(
                "http://127.0.0.1:9".to_owned(),
                vec![Signal::Traces, Signal::Logs, Signal::Metrics]
            )],
            "over HTTP too, whatever the path"
        );
        assert_eq!(
            built(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://127.0.0.1:10"),
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_METRICS_EXPORTER", "otlp"),
            ]),
            [
                ("http://127.0.0.1:10".to_owned(), vec![Signal::Logs]),
                ("http://127.0.0.1:9".to_owned(), vec![Signal::Metrics]),
            ],
            "a signal sent elsewhere gets a breaker of its own"
        );
        assert!(
            built(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).is_empty(),
            "nothing is exported"
        );
    }

    #[test]
    fn code_overrides_the_environment() {
        let builder = TracingPipeline::builder()
            .with_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "nonsense")])
            .protocol(Protocol::Grpc);
        assert_eq!(builder.resolved_protocol().unwrap(), Protocol::Grpc);
    }

    #[test]
    fn every_resource_has_an_instance_id_and_an_explicit_one_wins() {
        let instance = |builder: TracingPipelineBuilder| {
            let env = builder.env.resolve().unwrap();
            let from_resource = builder
                .resource(&env)
                .get(&opentelemetry::Key::from_static_str("service.instance.id"))
                .map(|value| value.to_string());
            let resolved = builder.resolved_service_instance_id();
            assert_eq!(from_resource.as_deref(), Some(resolved.as_str()));
            resolved
        };
        let generated = instance(TracingPipeline::builder().with_vars([("X", "y")]));
        assert_eq!(generated, instance_id::of_this_process());
        let attributes = [("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-1")];
        assert_eq!(
            instance(TracingPipeline::builder().with_vars(attributes)),
            "pod-1"
        );
        assert_eq!(
            instance(
                TracingPipeline::builder()
                    .with_vars(attributes)
                    .service_instance_id("in-code")
            ),
            "in-code"
        );
        let empty = [("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=")];
        assert_eq!(
            instance(TracingPipeline::builder().with_vars(empty)),
            generated
        );
    }

    #[test]
    fn a_bad_variable_fails_the_build_even_when_tracing_is_off() {
        let err = TracingPipeline::builder()
            .with_vars([
                ("OTEL_SDK_DISABLED", "true"),
                ("OTEL_BSP_SCHEDULE_DELAY", "0"),
            ])
            .build()
            .unwrap_err();
        assert!(matches!(err, PipelineError::Env(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("OTEL_BSP_SCHEDULE_DELAY = \"0\""),
            "{err}"
        );
    }
}
