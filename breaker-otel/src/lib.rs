//! The OpenTelemetry side of the telemetry circuit breaker.
//!
//! [`CircuitBreakerSpanExporter`] wraps any `opentelemetry_sdk` span exporter
//! and drives a [`breaker_core::CircuitBreaker`]: while the tracing backend
//! is down, batches are dropped at once instead of queued or retried, the
//! backend is probed sparingly, and the circuit closes again on its own.
//! [`BreakerHandle`] is the cheap read-only view for health checks and
//! metrics. [`TracingPipeline::builder`] assembles the standard OTLP exporter, the
//! breaker and a tracer provider from the standard `OTEL_*` variables, which
//! [`OtlpEnv`] reads and checks (for a service's own start-up checks too).
//!
//! [`CircuitBreakerLogExporter`] and [`CircuitBreakerMetricExporter`] do the
//! same for log and metric exporters, each with a breaker of its own or
//! sharing one [`BackendBreaker`] per backend, so that the signals sent to one
//! collector detect, probe and report its outage once ([`BackendHandle`]:
//! the state, and counts per signal).
//!
//! This crate knows OpenTelemetry and nothing about HTTP or Prometheus; the
//! breaker's rules live in `breaker-core`, never here.

mod backend;
mod batch;
mod bounded;
mod classify;
mod exporter;
mod handle;
mod instance_id;
mod logs;
mod metrics;
mod otel_env;
mod otlp;
mod pace;
mod pipeline;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use backend::{
    BackendBreaker, BackendBreakerBuilder, BackendControl, BackendHandle, BackendSnapshot,
    DurationHistogram, ExportDurations, ExportErrorType, Signal, SignalCounts, SignalSnapshot,
};
pub use batch::TelemetryPriority;
pub use breaker_core::{BreakerConfig, CircuitState, Setting, VisitSettings};
pub use exporter::{
    AdapterError, BreakerControl, CircuitBreakerSpanExporter, Clock, ExporterConfig,
    ReportingSpanExporter, TokioClock, Unclassified,
};
pub use handle::{
    BreakerHandle, BreakerSnapshot, CauseCounts, FailureCounts, LastFailure, QueueSnapshot,
    SpanCounts, TransitionCounts,
};
pub use logs::{CircuitBreakerLogExporter, ReportingLogExporter};
pub use metrics::{CircuitBreakerMetricExporter, MetricPush, ReportingMetricExporter};
pub use otel_env::{EnvVar, OtlpEnv, OtlpEnvError};
pub use otlp::{
    ExportFailure, ExportReport, FailureCause, OtlpExporterConfig, OtlpExporterError,
    OtlpLogExporter, OtlpMetricExporter, OtlpSpanExporter, classify_http, classify_status,
};
pub use pipeline::{
    PipelineError, Protocol, SignalExport, TracingPipeline, TracingPipelineBuilder,
};
