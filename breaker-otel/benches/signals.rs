//! What the log and metric breakers cost on the closed path, per export,
//! driven as the SDK's batch log processor and periodic reader drive an
//! export (`futures_executor::block_on` on a thread outside the runtime),
//! against an inner exporter that does nothing; and what the design we did
//! not pick would have cost on top: copying each log record into a task.
//!
//! Rows:
//! - `log_batch_512/inner_alone`: the inner exporter, called directly.
//! - `log_batch_512/behind_breaker`: through `CircuitBreakerLogExporter`
//!   (two breaker decisions under its lock, a deadline task on the runtime,
//!   the panic guard, the counts).
//! - `log_batch_512/copy_into_task`: only the copy that moving the export
//!   into a task would need (`LogBatch` is borrowed): each record and its
//!   scope cloned into an owned vector, then dropped.
//! - `metrics_20_points/inner_alone` and `/behind_breaker`: the same for one
//!   metrics collection of 20 data points (which cannot be copied at all:
//!   `ResourceMetrics` is neither `Clone` nor buildable outside the SDK).
//!
//! The records are `test_util::log_records`: like the `tracing` bridge's for
//! a server's request line (an owned body, four attributes, a 100-byte user
//! agent). Run: `cargo bench -p breaker-otel --bench signals`.

use std::hint::black_box;
use std::time::Duration;

use breaker_otel::test_util::{log_records, metric_points};
use breaker_otel::{CircuitBreakerLogExporter, CircuitBreakerMetricExporter, ExporterConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

/// Records per batch: the SDK's default `max_export_batch_size`.
const BATCH: usize = 512;

/// Data points per collection.
const POINTS: usize = 20;

/// An exporter that takes everything and does nothing with it.
#[derive(Debug, Clone, Copy)]
struct Nothing;

impl LogExporter for Nothing {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        black_box(&batch);
        Ok(())
    }
}

impl PushMetricExporter for Nothing {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        black_box(metrics);
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

fn config() -> ExporterConfig {
    ExporterConfig::DEFAULT.idle_probes(false)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("a runtime for the deadlines")
}

fn logs(c: &mut Criterion) {
    let runtime = runtime();
    let breaker = {
        let _entered = runtime.enter();
        CircuitBreakerLogExporter::new(Nothing, config()).expect("valid settings")
    };
    let records = log_records(BATCH);
    let batch = records.batch();
    let mut group = c.benchmark_group(format!("log_batch_{BATCH}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("inner_alone", |b| {
        b.iter(|| {
            futures_executor::block_on(LogExporter::export(
                &Nothing,
                LogBatch::new(black_box(&batch)),
            ))
        })
    });
    group.bench_function("behind_breaker", |b| {
        b.iter(|| futures_executor::block_on(breaker.export(LogBatch::new(black_box(&batch)))))
    });
    group.bench_function("copy_into_task", |b| {
        b.iter(|| {
            let batch = LogBatch::new(black_box(&batch));
            let owned: Vec<_> = batch
                .iter()
                .map(|(record, scope)| (record.clone(), scope.clone()))
                .collect();
            black_box(owned)
        })
    });
    group.finish();
}

fn metrics(c: &mut Criterion) {
    let runtime = runtime();
    let breaker = {
        let _entered = runtime.enter();
        CircuitBreakerMetricExporter::new(Nothing, config()).expect("valid settings")
    };
    let metrics = metric_points(POINTS);
    let mut group = c.benchmark_group(format!("metrics_{POINTS}_points"));
    group.bench_function("inner_alone", |b| {
        b.iter(|| {
            futures_executor::block_on(PushMetricExporter::export(&Nothing, black_box(&metrics)))
        })
    });
    group.bench_function("behind_breaker", |b| {
        b.iter(|| futures_executor::block_on(breaker.export(black_box(&metrics))))
    });
    group.finish();
}

criterion_group!(benches, logs, metrics);
criterion_main!(benches);
