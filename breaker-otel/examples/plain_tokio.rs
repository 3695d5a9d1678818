//! Reusing the breaker in a plain Tokio service (no web framework).
//!
//! Run it with no collector: the circuit opens after three failed exports
//! and the work goes on unaffected.
//!
//! ```text
//! OTEL_BSP_SCHEDULE_DELAY=200 cargo run -p breaker-otel --example plain_tokio
//! ```

#![allow(clippy::print_stdout)]

use std::num::NonZeroU32;
use std::time::Duration;

use breaker_otel::{BreakerConfig, ExporterConfig, TracingPipeline};
use opentelemetry::trace::{Tracer, TracerProvider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let breaker = ExporterConfig::DEFAULT
        .breaker(BreakerConfig::DEFAULT.failure_threshold(NonZeroU32::new(3).ok_or("zero")?))
        .export_timeout(Duration::from_secs(2));
    let pipeline = TracingPipeline::builder()
        .default_service_name("plain-tokio-example")
        .breaker(breaker)
        .build()?;
    let tracer = pipeline.tracer_provider().tracer("example");
    let health = pipeline.handle();

    for round in 0..10 {
        tracer.in_span("unit-of-work", |_| {
            // The service's real work goes here; tracing never blocks it.
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let snapshot = health.snapshot();
        println!(
            "round {round}: circuit {}, spans exported {} dropped {} failed {}",
            snapshot.state, snapshot.spans.exported, snapshot.spans.dropped, snapshot.spans.failed
        );
    }
    pipeline.shutdown(Duration::from_secs(3)).await?;
    Ok(())
}
