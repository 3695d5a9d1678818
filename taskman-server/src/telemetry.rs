//! The server's telemetry, assembled from the library crates: the OTLP pipeline with its
//! circuit breaker (`breaker-otel`), the health and metrics routes over the breaker's handle
//! (`telemetry-http`), and W3C trace context for incoming `traceparent` headers.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use breaker_otel::{
    MetricPush, PipelineError, SignalExport, TracingPipeline, TracingPipelineBuilder,
};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use telemetry_http::{TelemetryHttp, TelemetryHttpConfig};

use crate::api::tasks;
#[cfg(test)]
use crate::config;
use crate::config::{ConfigError, Settings};

/// The service name when `OTEL_SERVICE_NAME` does not say otherwise.
pub const SERVICE_NAME: &str = "taskman";

/// The variable named when the exporter rejects the default endpoint.
const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The tracing pipeline and the HTTP surface over its breaker.
#[derive(Debug)]
pub struct Telemetry {
    pipeline: TracingPipeline,
    http: TelemetryHttp,
    /// The task that pushes the registry over OTLP, when metrics are pushed.
    pusher: Option<Pusher>,
}

/// The metrics push: the registry `/metrics` renders, converted and pushed every
/// `OTEL_METRIC_EXPORT_INTERVAL` through the pipeline's metric breaker.
#[derive(Debug)]
struct Pusher {
    push: MetricPush,
    task: tokio::task::JoinHandle<()>,
    started: SystemTime,
}

impl Pusher {
    fn start(push: MetricPush, http: TelemetryHttp) -> Self {
        let started = SystemTime::now();
        let task = tokio::spawn({
            let push = push.clone();
            async move {
                let mut ticks = tokio::time::interval(push.interval());
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    let metrics = http.otlp_metrics(started, SystemTime::now());
                    // Counted by the breaker, and its outage is logged once there.
                    if let Err(err) = push.push(metrics).await {
                        tracing::debug!(error = %err, "metrics push failed");
                    }
                }
            }
        });
        Self {
            push,
            task,
            started,
        }
    }

    /// Stops the loop and pushes once more, so that the last interval is not lost.
    async fn finish(self, http: &TelemetryHttp, timeout: Duration) {
        self.task.abort();
        let metrics = http.otlp_metrics(self.started, SystemTime::now());
        let _ = tokio::time::timeout(timeout, self.push.push(metrics)).await;
    }
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
        // The process environment, which `Settings::load` checked with the same rules: the
        // OTLP exporter reads some variables (gRPC headers) from there by itself anyway.
        let builder = TracingPipeline::builder()
            .default_service_name(SERVICE_NAME)
            .breaker(settings.breaker)
            .priority(settings.telemetry.priority)
            // The server's log events, unless OTEL_LOGS_EXPORTER=none.
            .logs(SignalExport::Otlp)
            // The /metrics registry pushed over OTLP too, only with OTEL_METRICS_EXPORTER=otlp.
            .metrics(SignalExport::None);
        // What the spans' resource carries, for `/health/telemetry` and the listening line.
        let service_instance_id = builder.resolved_service_instance_id();
        let pipeline = with_stock_switch(builder)
            .build()
            .map_err(|err| match err {
                PipelineError::Env(err) => anyhow::Error::new(ConfigError::InvalidEnv {
                    var: err.name().to_owned(),
                    value: err.masked_value().to_owned(),
                    reason: err.reason().to_owned(),
                }),
                // Masked by the pipeline: the endpoint's userinfo never reaches the log.
                PipelineError::Exporter {
                    endpoint_variable,
                    endpoint,
                    reason,
                    ..
                } => anyhow::Error::new(ConfigError::InvalidEnv {
                    var: endpoint_variable.unwrap_or(ENDPOINT_VAR).to_owned(),
                    value: endpoint,
                    reason,
                }),
                other => anyhow::Error::new(other).context("cannot start tracing"),
            })?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(pipeline.tracer_provider().clone());

        let http_config = TelemetryHttpConfig {
            service_instance_id: Some(service_instance_id),
            ..settings.metrics.clone()
        };
        // Each backend's breaker (one per collector, every signal sent there) as well.
        let http = TelemetryHttp::new(pipeline.handle(), http_config)
            .context("metrics settings")?
            .with_backends(pipeline.backends().iter().cloned());
        let http_metrics = http.http_metrics();
        for (method, route) in tasks::ROUTES {
            http_metrics.register_route(method, route);
        }
        let pusher = pipeline
            .metric_push()
            .map(|push| Pusher::start(push, http.clone()));
        Ok(Self {
            pipeline,
            http,
            pusher,
        })
    }

    /// The logger provider the log events go to, when log records are exported.
    #[must_use]
    pub fn logger_provider(&self) -> Option<&SdkLoggerProvider> {
        self.pipeline.logger_provider()
    }

    /// The routes and middleware to mount; clone it into every worker so that all share one
    /// rate limiter and one registry.
    #[must_use]
    pub fn http(&self) -> &TelemetryHttp {
        &self.http
    }

    /// Shuts tracing down quietly after a failed start: the error that stopped the server
    /// is the one line the operator should see.
    pub async fn abandon(self) {
        if let Some(pusher) = self.pusher {
            pusher.task.abort();
        }
        let _ = self.pipeline.shutdown(Duration::from_secs(1)).await;
    }

    /// Flushes what is queued and shuts the provider down within `timeout`, whatever the
    /// backend does. A failure is logged, not returned: telemetry never fails the service,
    /// not even on its way out.
    pub async fn shutdown(self, timeout: Duration) {
        let started = tokio::time::Instant::now();
        if let Some(pusher) = self.pusher {
            // At most half the budget: the queued spans and log records need the rest.
            pusher.finish(&self.http, timeout / 2).await;
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        let handle = self.pipeline.handle();
        match self.pipeline.shutdown(timeout).await {
            Ok(()) => {
                let snapshot = handle.snapshot();
                tracing::info!(
                    spans_ended = snapshot.spans_ended,
                    spans_exported = snapshot.spans.exported,
                    spans_rejected = snapshot.spans.rejected,
                    spans_dropped = snapshot.spans.dropped,
                    spans_failed = snapshot.spans.failed,
                    spans_queue_full = snapshot.queue.lost,
                    "tracing shut down"
                );
            }
            Err(err) => {
                tracing::warn!(error = %err, "tracing did not shut down cleanly; queued spans are lost")
            }
        }
    }
}

/// Set to `true` in a server built with the `bench` feature to export through the stock
/// pipeline, without the breaker: the benchmarks measure what the breaker changes. Not a
/// setting: production builds have no pipeline without the breaker.
#[cfg(feature = "bench")]
pub const STOCK_PIPELINE_VAR: &str = "TASKMAN_BENCH_STOCK_PIPELINE";

#[cfg(feature = "bench")]
fn with_stock_switch(builder: TracingPipelineBuilder) -> TracingPipelineBuilder {
    let stock = std::env::var(STOCK_PIPELINE_VAR).is_ok_and(|v| v.trim() == "true");
    if stock {
        tracing::warn!(
            "{STOCK_PIPELINE_VAR}=true: spans are exported without the circuit breaker, as a \
             stock OpenTelemetry pipeline does (for comparisons only)"
        );
    }
    builder.breaker_enabled(!stock)
}

#[cfg(not(feature = "bench"))]
fn with_stock_switch(builder: TracingPipelineBuilder) -> TracingPipelineBuilder {
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The server's start-up check (`Settings::load`, `--print-config`) and the pipeline
    /// agree on which variable wins, both ways round.
    #[tokio::test]
    async fn server_and_pipeline_agree_on_precedence() {
        for (traces, generic, protocol, endpoint) in [
            (
                "http/protobuf",
                "grpc",
                breaker_otel::Protocol::HttpProtobuf,
                "http://traces:4318/v1/traces",
            ),
            (
                "grpc",
                "http/protobuf",
                breaker_otel::Protocol::Grpc,
                "http://traces:4318/v1/traces",
            ),
        ] {
            let pairs = [
                ("OTEL_EXPORTER_OTLP_PROTOCOL", generic),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", traces),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint),
            ];
            let env = env(&pairs);
            let settings = Settings::load(None, &env).unwrap();
            let printed = settings.to_toml(None, &env).unwrap();
            let expected = format!("# Spans go over {protocol} to {endpoint:?}.");
            assert!(printed.contains(&expected), "{printed}");

            let pipeline = TracingPipeline::builder()
                .env(config::otel_env(&env))
                .build()
                .unwrap();
            assert_eq!(pipeline.protocol(), Some(protocol));
            pipeline.shutdown(Duration::from_secs(1)).await.ok();
        }
    }

    #[test]
    fn secrets_never_reach_an_error_or_the_printed_configuration() {
        let secret = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer hunter2"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://user:hunter2@collector:4317",
            ),
        ];
        let env_ok = env(&secret);
        let settings = Settings::load(None, &env_ok).unwrap();
        let printed = settings.to_toml(None, &env_ok).unwrap();
        assert!(printed.contains("authorization=***"), "{printed}");
        assert!(printed.contains("http://***@collector:4317"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");

        for bad in [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer hunter2,oops",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=hunter2%0A"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:hunter2@collector:99999",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:hunter2@collector x",
            ),
        ] {
            let mut pairs = secret.to_vec();
            pairs.push(bad);
            let err = Settings::load(None, &env(&pairs)).unwrap_err().to_string();
            assert!(err.starts_with(bad.0), "{bad:?}: {err}");
            assert!(!err.contains("hunter2"), "{bad:?}: {err}");
        }
    }
}
