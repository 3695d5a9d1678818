//! The SDK's own drivers, on real time: `PeriodicReader` and
//! `BatchLogProcessor` poll exports with `futures_executor::block_on` on
//! threads of their own and enforce no timeout. Behind our exporters a hung
//! export ends at `export_timeout` and later exports flow again; the stock
//! reader stops for good. And the case we do not claim to cut off: an
//! export that blocks the thread polling it holds it until it returns.
//!
//! Every wait here is for a condition, with a generous limit; none asserts
//! how long anything took.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use breaker_otel::test_util::{ScriptedExporter, Step, log_records};
use breaker_otel::{
    BreakerConfig, CircuitBreakerLogExporter, CircuitBreakerMetricExporter, CircuitState,
    ExporterConfig, FailureCause, Signal,
};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter, SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::{eventually, signal};

/// Short real-time settings: exports cut off after 100 ms, probes 50 ms
/// apart at first.
fn quick() -> ExporterConfig {
    ExporterConfig::DEFAULT
        .export_timeout(Duration::from_millis(100))
        .breaker(BreakerConfig::DEFAULT.min_probe_interval(Duration::from_millis(50)))
}

/// Far longer than any of these tests needs, on a loaded machine too.
const LIMIT: Duration = Duration::from_secs(30);

fn meter_provider<E: opentelemetry_sdk::metrics::exporter::PushMetricExporter>(
    exporter: E,
) -> SdkMeterProvider {
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_millis(50))
        .build();
    let provider = SdkMeterProvider::builder().with_reader(reader).build();
    provider
        .meter("test")
        .u64_counter("requests")
        .build()
        .add(1, &[]);
    provider
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_our_exporter_a_hung_export_no_longer_stops_the_periodic_reader() {
    // The backend hangs on three exports (the circuit opens), then answers.
    let inner = ScriptedExporter::new([Step::Hang; 3], Step::Succeed);
    let exporter = CircuitBreakerMetricExporter::reporting(inner.clone(), quick()).unwrap();
    let handle = exporter.handle();
    let provider = meter_provider(exporter);

    let flowing = eventually(LIMIT, || {
        signal(&handle, Signal::Metrics).counts.exported >= 3
    })
    .await;
    let snapshot = handle.snapshot();
    assert!(flowing, "metrics flow again after the hangs: {snapshot:#?}");
    let points = snapshot.signal(Signal::Metrics).unwrap();
    assert_eq!(
        points.failures.get(FailureCause::Timeout).batches,
        3,
        "each hang was cut off as a timeout"
    );
    assert_eq!(
        snapshot
            .transitions
            .get(CircuitState::Closed, CircuitState::Open),
        1,
        "the hangs opened the circuit, a probe closed it"
    );
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert!(inner.spans_received() >= 3);
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_periodic_reader_stops_for_good_after_one_hung_export() {
    let inner = ScriptedExporter::new([Step::Hang], Step::Succeed);
    let provider = meter_provider(inner.clone());
    assert!(eventually(LIMIT, || inner.calls() == 1).await);
    // Ten intervals later, the backend would answer, but nothing asks it:
    // the reader's thread is still waiting for the first export.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((inner.calls(), inner.spans_received()), (1, 0));
    // Its shutdown would wait 5 s for that thread; the process ends instead.
    std::mem::forget(provider);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_our_exporter_a_hung_export_no_longer_stalls_the_batch_log_processor() {
    let inner = ScriptedExporter::new([Step::Hang], Step::Succeed);
    let exporter = CircuitBreakerLogExporter::reporting(inner.clone(), quick()).unwrap();
    let handle = exporter.handle();
    let processor = BatchLogProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(50))
                .build(),
        )
        .build();
    let provider = SdkLoggerProvider::builder()
        .with_log_processor(processor)
        .build();
    let logger = provider.logger("test");
    let emit = |body: &'static str| {
        let mut record = logger.create_log_record();
        record.set_body(body.into());
        logger.emit(record);
    };
    emit("first: its export hangs");
    assert!(eventually(LIMIT, || inner.calls() == 1).await);
    emit("second: exported");
    // The inner exporter has the record a moment before the adapter has counted its
    // answer: wait for the count, not for the record.
    let exported = eventually(LIMIT, || signal(&handle, Signal::Logs).counts.exported >= 1).await;
    let logs = signal(&handle, Signal::Logs);
    assert!(exported, "{logs:#?}");
    assert_eq!(inner.spans_received(), 1);
    assert_eq!(logs.failures.get(FailureCause::Timeout).batches, 1);
    assert_eq!((logs.counts.failed, logs.counts.exported), (1, 1));
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_blocks_its_thread_holds_it_until_it_returns() {
    let inner = ScriptedExporter::always(Step::Succeed);
    let exporter = Arc::new(CircuitBreakerLogExporter::reporting(inner.clone(), quick()).unwrap());
    inner.block_threads();
    let returned = Arc::new(AtomicBool::new(false));
    // Polled as the SDK's processor polls it, on a thread of its own.
    let caller = {
        let (exporter, returned) = (Arc::clone(&exporter), Arc::clone(&returned));
        std::thread::spawn(move || {
            let records = log_records(2);
            let result =
                futures_executor::block_on(exporter.export(LogBatch::new(&records.batch())));
            returned.store(true, Ordering::SeqCst);
            result
        })
    };
    assert!(eventually(LIMIT, || inner.blocked_threads() == 1).await);
    // Five export timeouts later the deadline has long fired, but the
    // export cannot be cut off: it never yields to be told.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!returned.load(Ordering::SeqCst), "returned while blocked");
    inner.unblock_threads();
    let result = caller.join().unwrap();
    // When it returns, its answer counts as what it says.
    assert!(result.is_ok(), "{result:?}");
    let logs = signal(&exporter.handle(), Signal::Logs);
    assert_eq!((logs.counts.exported, logs.counts.failed), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_probe_that_never_answers_is_cut_off_and_the_next_one_closes() {
    // Real time: the probe runs on a blocking thread, which stops paused
    // time from advancing to its deadline.
    let inner = ScriptedExporter::new(
        [Step::Fail, Step::Fail, Step::Fail, Step::Hang],
        Step::Succeed,
    );
    let exporter = CircuitBreakerLogExporter::reporting(inner.clone(), quick()).unwrap();
    let handle = exporter.handle();
    for _ in 0..3 {
        let records = log_records(1);
        let _ = exporter.export(LogBatch::new(&records.batch())).await;
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let closed = eventually(LIMIT, || handle.state() == CircuitState::Closed).await;
    let snapshot = handle.snapshot();
    assert!(closed, "{snapshot:#?}");
    assert_eq!(snapshot.probes, 2, "{snapshot:#?}");
    let logs = snapshot.signal(Signal::Logs).unwrap();
    assert_eq!(
        logs.failures.get(FailureCause::Timeout).batches,
        1,
        "the hung probe"
    );
    assert_eq!(logs.counts.failed, 3, "probes carry no record");
}
