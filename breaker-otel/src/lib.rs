//! The OpenTelemetry side of the circuit breaker: a `SpanExporter` adapter
//! that drives `breaker-core`, and the OTLP pipeline builder.
//!
//! This crate knows OpenTelemetry and nothing about HTTP or Prometheus.
