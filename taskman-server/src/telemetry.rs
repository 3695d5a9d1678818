//! The server's telemetry, assembled from the library crates: the OTLP pipeline with its
//! circuit breaker (`breaker-otel`), the health and metrics routes over the breaker's handle
//! (`telemetry-http`), and W3C trace context for incoming `traceparent` headers.

use std::time::Duration;

use anyhow::Context as _;
use breaker_otel::{BreakerConfig, BreakerSettings, OtlpPipeline, PipelineError, TracingPipeline};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use telemetry_http::{TelemetryHttp, TelemetryHttpConfig};

use crate::api::tasks;
use crate::config::{self, ConfigError, Settings};

/// The service name when `OTEL_SERVICE_NAME` does not say otherwise.
pub const SERVICE_NAME: &str = "taskman";

/// The tracing pipeline and the HTTP surface over its breaker.
#[derive(Debug)]
pub struct Telemetry {
    pipeline: TracingPipeline,
    http: TelemetryHttp,
}

impl Telemetry {
    /// Builds the pipeline from `settings` and the standard `OTEL_*` variables, installs it
    /// as the global tracer provider with W3C trace-context propagation, and builds the
    /// routes. Must run inside the Tokio runtime that will serve: exports run there.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key or variable at fault, or a start-up failure.
    pub fn install(settings: &Settings) -> anyhow::Result<Self> {
        let breaker = breaker_settings(&settings.breaker)?;
        let pipeline = OtlpPipeline::from_env()
            .default_service_name(SERVICE_NAME)
            .breaker(breaker)
            .breaker_enabled(settings.breaker.enabled)
            .build()
            .map_err(|err| match err {
                PipelineError::InvalidVariable {
                    name,
                    value,
                    expected,
                } => anyhow::Error::new(ConfigError::InvalidEnv {
                    var: name.to_owned(),
                    value,
                    reason: format!("expected {expected}"),
                }),
                PipelineError::Exporter(err) => anyhow::Error::new(ConfigError::InvalidEnv {
                    var: "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    value: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
                    reason: err.to_string(),
                }),
                other => anyhow::Error::new(other).context("cannot start tracing"),
            })?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(pipeline.tracer_provider().clone());

        let metrics = &settings.metrics;
        let http = TelemetryHttp::new(
            pipeline.handle(),
            TelemetryHttpConfig {
                requests_per_minute: metrics.requests_per_minute,
                burst: metrics.burst,
                trusted_proxies: metrics.trusted_proxies.clone(),
            },
        )
        .context("registering the /metrics series")?;
        // The telemetry routes register their own series.
        let http_metrics = http.http_metrics();
        for (method, route) in tasks::ROUTES {
            http_metrics.register_route(method, route);
        }
        Ok(Self { pipeline, http })
    }

    /// The routes and middleware to mount; clone it into every worker so that all share one
    /// rate limiter and one registry.
    #[must_use]
    pub fn http(&self) -> &TelemetryHttp {
        &self.http
    }

    /// A tracer of the installed provider, for the `tracing` bridge (storage spans).
    #[must_use]
    pub fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.pipeline.tracer_provider().tracer("taskman-server")
    }

    /// Shuts tracing down quietly after a failed start: the error that stopped the server
    /// is the one line the operator should see.
    pub async fn abandon(self) {
        let _ = self.pipeline.shutdown(Duration::from_secs(1)).await;
    }

    /// Flushes what is queued and shuts the provider down within `timeout`, whatever the
    /// backend does. A failure is logged, not returned: telemetry never fails the service,
    /// not even on its way out.
    pub async fn shutdown(self, timeout: Duration) {
        let handle = self.pipeline.handle();
        match self.pipeline.shutdown(timeout).await {
            Ok(()) => {
                let snapshot = handle.snapshot();
                tracing::info!(
                    spans_ended = snapshot.spans_ended,
                    spans_exported = snapshot.spans.exported,
                    spans_dropped = snapshot.spans.dropped,
                    spans_failed = snapshot.spans.failed,
                    "tracing shut down"
                );
            }
            Err(err) => {
                tracing::warn!(error = %err, "tracing did not shut down cleanly; queued spans are lost")
            }
        }
    }
}

fn breaker_settings(breaker: &config::BreakerSettings) -> anyhow::Result<BreakerSettings> {
    let core = BreakerConfig::builder()
        .failure_threshold(breaker.failure_threshold.get())
        .probe_every(breaker.probe_every.get())
        .probe_after(breaker.probe_after)
        .probe_timeout(breaker.probe_timeout)
        .max_probes_in_flight(breaker.max_probes_in_flight.get())
        .build()
        // The configuration's own checks reject these first; this keeps the key named if not.
        .map_err(|err| anyhow::anyhow!("breaker.{err}"))?;
    Ok(BreakerSettings {
        breaker: core,
        export_timeout: breaker.export_timeout,
    })
}
