//! The OpenTelemetry side of the telemetry circuit breaker.
//!
//! [`CircuitBreakerSpanExporter`] wraps any `opentelemetry_sdk` span exporter
//! and drives a [`breaker_core::CircuitBreaker`]: while the tracing backend
//! is down, batches are dropped at once instead of queued or retried, the
//! backend is probed sparingly, and the circuit closes again on its own.
//! [`BreakerHandle`] is the cheap read-only view for health checks and
//! metrics. The pipeline builder assembles the standard OTLP exporter, the
//! breaker and a tracer provider from the standard `OTEL_*` variables.
//!
//! This crate knows OpenTelemetry and nothing about HTTP or Prometheus; the
//! breaker's rules live in `breaker-core`, never here.

mod exporter;
mod handle;
mod pipeline;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use breaker_core::{BreakerConfig, BreakerConfigBuilder, CircuitState, ConfigError};
pub use exporter::{
    AdapterError, BreakerControl, BreakerSettings, CircuitBreakerSpanExporter, Clock, TokioClock,
};
pub use handle::{BreakerHandle, BreakerSnapshot, FailedBatches, SpanCounts, TransitionCounts};
pub use pipeline::{OtlpPipeline, PipelineError, Protocol, TracingPipeline};
