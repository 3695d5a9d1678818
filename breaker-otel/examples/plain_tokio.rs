//! Reusing the breaker in a plain Tokio service (no web framework): spans, log
//! records and metrics, all three behind one breaker for the one collector.
//!
//! Run it with no collector: the circuit opens after three failed exports
//! (of any signal) and the work goes on unaffected.
//!
//! ```text
//! OTEL_BSP_SCHEDULE_DELAY=200 OTEL_BLRP_SCHEDULE_DELAY=200 OTEL_METRIC_EXPORT_INTERVAL=500 \
//!     cargo run -p breaker-otel --example plain_tokio
//! ```

#![allow(clippy::print_stdout)]

use std::num::NonZeroU32;
use std::time::Duration;

use breaker_otel::{BreakerConfig, ExporterConfig, SignalExport, TracingPipeline};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Tracer, TracerProvider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let breaker = ExporterConfig::DEFAULT
        .breaker(BreakerConfig::DEFAULT.failure_threshold(NonZeroU32::new(3).ok_or("zero")?))
        .export_timeout(Duration::from_secs(2));
    let pipeline = TracingPipeline::builder()
        .default_service_name("plain-tokio-example")
        .breaker(breaker)
        // Log records and metrics too: OTEL_LOGS_EXPORTER / OTEL_METRICS_EXPORTER may say `none`.
        .logs(SignalExport::Otlp)
        .metrics(SignalExport::Otlp)
        .build()?;
    let tracer = pipeline.tracer_provider().tracer("example");
    let health = pipeline.handle();
    let logger = pipeline.logger_provider().map(|p| p.logger("example"));
    let work_done = pipeline
        .meter_provider()
        .map(|p| p.meter("example").u64_counter("work_done").build());

    for round in 0..10 {
        tracer.in_span("unit-of-work", |_| {
            // The service's real work goes here; telemetry never blocks it.
        });
        if let Some(logger) = &logger {
            let mut record = logger.create_log_record();
            record.set_severity_number(Severity::Info);
            record.set_body(format!("round {round} done").into());
            logger.emit(record);
        }
        if let Some(counter) = &work_done {
            counter.add(1, &[]);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let snapshot = health.snapshot();
        println!(
            "round {round}: circuit {}, spans exported {} dropped {} failed {}",
            snapshot.state, snapshot.spans.exported, snapshot.spans.dropped, snapshot.spans.failed
        );
        // One breaker per collector, with counts per signal.
        for backend in pipeline.backends() {
            let backend = backend.snapshot();
            for signal in &backend.signals {
                println!(
                    "  {} {}: exported {} dropped {} failed {}",
                    backend.endpoint.as_deref().unwrap_or("-"),
                    signal.signal,
                    signal.counts.exported,
                    signal.counts.dropped,
                    signal.counts.failed
                );
            }
        }
    }
    pipeline.shutdown(Duration::from_secs(3)).await?;
    Ok(())
}
