//! The adapter's behaviour with a scripted inner exporter, on paused Tokio
//! time: the six behaviours of the original requirement, panics, hangs,
//! span accounting, shutdown, and the probes it makes when no batch comes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use breaker_otel::test_util::{ScriptedExporter, Step, spans};
use breaker_otel::{CircuitBreakerSpanExporter, CircuitState, ExporterConfig, Unclassified};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::SpanExporter;

fn wrap(inner: &ScriptedExporter) -> CircuitBreakerSpanExporter<Unclassified<ScriptedExporter>> {
    CircuitBreakerSpanExporter::new(inner.clone(), ExporterConfig::default()).unwrap()
}

/// Only batches probe: for the tests of what a batch's own probe does, which
/// the idle prober would otherwise get to first.
fn wrap_batch_probes_only(
    inner: &ScriptedExporter,
) -> CircuitBreakerSpanExporter<Unclassified<ScriptedExporter>> {
    let config = ExporterConfig::DEFAULT.idle_probes(false);
    CircuitBreakerSpanExporter::new(inner.clone(), config).unwrap()
}

/// The default time floor between probes: the first probe after opening
/// waits this long.
const FLOOR: Duration = Duration::from_secs(1);

/// Exports `n` one-span batches, one virtual millisecond apart.
async fn export_n(exporter: &CircuitBreakerSpanExporter<Unclassified<ScriptedExporter>>, n: usize) {
    for _ in 0..n {
        tokio::time::advance(Duration::from_millis(1)).await;
        let _ = exporter.export(spans(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn returns_an_error_rather_than_panicking_when_the_inner_exporter_fails() {
    let inner = ScriptedExporter::always(Step::Fail);
    let exporter = wrap(&inner);
    let result = exporter.export(spans(3)).await;
    assert!(
        matches!(result, Err(OTelSdkError::InternalFailure(_))),
        "{result:?}"
    );
    assert_eq!(exporter.handle().snapshot().spans.failed, 3);
}

#[tokio::test(start_paused = true)]
async fn opens_after_three_consecutive_failures() {
    let inner = ScriptedExporter::always(Step::Fail);
    let exporter = wrap(&inner);
    export_n(&exporter, 2).await;
    assert_eq!(exporter.handle().state(), CircuitState::Closed);
    assert_eq!(exporter.handle().snapshot().consecutive_failures, 2);
    export_n(&exporter, 1).await;
    assert_eq!(exporter.handle().state(), CircuitState::Open);
    let snapshot = exporter.handle().snapshot();
    assert_eq!(
        snapshot
            .transitions
            .get(CircuitState::Closed, CircuitState::Open),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn closes_after_a_successful_probe() {
    let inner = ScriptedExporter::new([Step::Fail; 3], Step::Succeed);
    let exporter = wrap(&inner);
    export_n(&exporter, 3).await;
    assert_eq!(exporter.handle().state(), CircuitState::Open);
    tokio::time::advance(FLOOR).await;
    let probe = exporter.export(spans(2)).await;
    assert!(probe.is_ok());
    let snapshot = exporter.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!(snapshot.consecutive_failures, 0);
    assert_eq!(snapshot.probes, 1);
    assert_eq!(snapshot.spans.exported, 2);
}

#[tokio::test(start_paused = true)]
async fn drops_spans_while_open_without_calling_the_inner_exporter() {
    let inner = ScriptedExporter::always(Step::Fail);
    let exporter = wrap_batch_probes_only(&inner);
    export_n(&exporter, 3).await;
    tokio::time::advance(FLOOR).await;
    export_n(&exporter, 1).await; // attempt 0 probes
    assert_eq!(exporter.handle().snapshot().probes, 1);
    let calls = inner.calls();
    for _ in 0..9 {
        let result = exporter.export(spans(5)).await;
        assert!(result.is_err(), "a dropped batch is an error result");
    }
    assert_eq!(
        inner.calls(),
        calls,
        "attempts 1..=9 never reach the backend"
    );
    assert_eq!(exporter.handle().snapshot().spans.dropped, 45);
}

#[tokio::test(start_paused = true)]
async fn exports_normally_while_closed() {
    let inner = ScriptedExporter::always(Step::Succeed);
    let exporter = wrap(&inner);
    for _ in 0..20 {
        exporter.export(spans(10)).await.unwrap();
    }
    assert_eq!(inner.calls(), 20);
    assert_eq!(inner.spans_received(), 200);
    let snapshot = exporter.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!(snapshot.spans.exported, 200);
}

#[tokio::test(start_paused = true)]
async fn the_probe_cycle_reaches_the_backend_at_attempts_0_10_and_20() {
    let inner = ScriptedExporter::always(Step::Fail);
    let exporter = wrap_batch_probes_only(&inner);
    export_n(&exporter, 3).await;
    let mut reached = Vec::new();
    // One batch per floor: the floor never decides, the count does.
    for attempt in 0..=20 {
        let before = inner.calls();
        tokio::time::advance(FLOOR).await;
        export_n(&exporter, 1).await;
        if inner.calls() > before {
            reached.push(attempt);
        }
    }
    assert_eq!(reached, [0, 10, 20]);
    assert_eq!(exporter.handle().snapshot().probes, 3);
}

#[tokio::test(start_paused = true)]
async fn batches_10_ms_apart_against_a_dead_backend_probe_less_than_once_a_second() {
    let inner = ScriptedExporter::always(Step::Fail);
    let exporter = wrap(&inner);
    export_n(&exporter, 3).await;
    assert_eq!(exporter.handle().state(), CircuitState::Open);
    // 1 000 batches in 10 s: the count rule alone would probe 100 times.
    for _ in 0..1_000 {
        tokio::time::advance(Duration::from_millis(10)).await;
        let _ = exporter.export(spans(1)).await;
    }
    // Waits of at least 1 s, then at least 1, 2 and 4 s (half of a floor
    // that doubles): at most 4 probes in 10 s, and at least 2.
    let probes = exporter.handle().snapshot().probes;
    assert!((2..=4).contains(&probes), "{probes} probes");
    assert_eq!(inner.calls() as u64, 3 + probes);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_exporter_is_a_failure_and_the_next_call_works() {
    let inner = ScriptedExporter::new([Step::Panic], Step::Succeed);
    let exporter = wrap(&inner);
    let result = exporter.export(spans(2)).await;
    assert!(matches!(result, Err(OTelSdkError::InternalFailure(ref m)) if m.contains("panicked")));
    exporter.export(spans(1)).await.unwrap();
    let snapshot = exporter.handle().snapshot();
    assert_eq!(
        snapshot
            .failures
            .get(breaker_otel::FailureCause::Panic)
            .batches,
        1
    );
    assert_eq!((snapshot.spans.failed, snapshot.spans.exported), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_inner_exporter_is_cut_off_at_export_timeout() {
    let inner = ScriptedExporter::new([Step::Hang], Step::Succeed);
    let settings = ExporterConfig::DEFAULT.export_timeout(Duration::from_secs(10));
    let exporter = CircuitBreakerSpanExporter::new(inner.clone(), settings).unwrap();
    let started = tokio::time::Instant::now();
    let result = exporter.export(spans(4)).await;
    assert_eq!(started.elapsed(), Duration::from_secs(10), "virtual time");
    assert!(
        matches!(result, Err(OTelSdkError::Timeout(_))),
        "{result:?}"
    );
    exporter.export(spans(1)).await.unwrap();
    let snapshot = exporter.handle().snapshot();
    assert_eq!(
        snapshot
            .failures
            .get(breaker_otel::FailureCause::Timeout)
            .batches,
        1
    );
    assert_eq!((snapshot.spans.failed, snapshot.spans.exported), (4, 1));
}

#[tokio::test(start_paused = true)]
async fn three_hangs_open_the_circuit() {
    let inner = ScriptedExporter::always(Step::Hang);
    let exporter = wrap(&inner);
    export_n(&exporter, 3).await;
    assert_eq!(exporter.handle().state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_export_fails_with_already_shutdown() {
    let inner = ScriptedExporter::always(Step::Succeed);
    let exporter = wrap(&inner);
    exporter.shutdown().unwrap();
    assert!(matches!(
        exporter.export(spans(1)).await,
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert!(matches!(
        exporter.shutdown(),
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn shutdown_returns_within_its_timeout_when_the_inner_shutdown_hangs() {
    let inner = ScriptedExporter::always(Step::Succeed);
    inner.hang_on_shutdown();
    let exporter = wrap(&inner);
    let result = exporter.shutdown_with_timeout(Duration::from_millis(100));
    assert!(
        matches!(result, Err(OTelSdkError::Timeout(_))),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_control_forces_and_resets() {
    let inner = ScriptedExporter::always(Step::Succeed);
    let exporter = wrap(&inner);
    let control = exporter.control();
    control.force_open();
    assert!(exporter.export(spans(1)).await.is_err());
    assert_eq!(inner.calls(), 0);
    control.reset();
    exporter.export(spans(1)).await.unwrap();
    assert_eq!(exporter.handle().state(), CircuitState::Closed);
}

mod accounting {
    use super::*;
    use proptest::prelude::*;

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Succeed),
            4 => Just(Step::Fail),
            1 => Just(Step::Panic),
            1 => Just(Step::Hang),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Spans in = exported + dropped + failed, for any script.
        #[test]
        fn every_span_is_accounted_for(
            script in proptest::collection::vec(step(), 0..60),
            sizes in proptest::collection::vec(1usize..20, 60),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let (total, counts, received) = runtime.block_on(async {
                let inner = ScriptedExporter::new(script.clone(), Step::Succeed);
                let exporter = wrap(&inner);
                let mut total = 0u64;
                for &n in &sizes {
                    tokio::time::advance(Duration::from_secs(1)).await;
                    let _ = exporter.export(spans(n)).await;
                    total += n as u64;
                }
                let received = inner.spans_received();
                (total, exporter.handle().snapshot().spans, received as u64)
            });
            prop_assert_eq!(counts.total(), total);
            prop_assert_eq!(counts.exported, received);
        }
    }
}

mod without_traffic {
    //! A quiet service: the circuit opens, and then the SDK exports nothing.

    use super::*;

    /// How finely [`walk`] looks: call times are seen up to this late.
    const TICK: Duration = Duration::from_millis(5);

    /// Steps virtual time a [`TICK`] at a time for up to `how_long`, noting
    /// when each call reached the backend, until `done` holds. Returns the
    /// call times (since the start of the walk) and whether `done` held.
    async fn walk(
        inner: &ScriptedExporter,
        how_long: Duration,
        mut done: impl FnMut(Duration) -> bool,
    ) -> (Vec<Duration>, bool) {
        let start = tokio::time::Instant::now();
        let mut calls = inner.calls();
        let mut at = Vec::new();
        while start.elapsed() < how_long {
            tokio::time::sleep(TICK).await;
            let now = inner.calls();
            if now > calls {
                at.extend(std::iter::repeat_n(start.elapsed(), now - calls));
                calls = now;
            }
            if done(start.elapsed()) {
                return (at, true);
            }
        }
        (at, false)
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_service_closes_within_one_probe_wait_of_the_backends_return() {
        let inner = ScriptedExporter::always(Step::Fail);
        let exporter = wrap(&inner);
        export_n(&exporter, 3).await;
        assert_eq!(exporter.handle().state(), CircuitState::Open);

        // A 20 s outage with no batch at all: the prober alone reaches the
        // backend, at waits that back off (1 s, then 1-2 s, 2-4 s, 4-8 s, ...).
        let (outage, _) = walk(&inner, Duration::from_secs(20), |_| false).await;
        assert!((3..=6).contains(&outage.len()), "probes at {outage:?}");
        assert!(
            outage[0] >= FLOOR && outage[0] <= FLOOR + TICK,
            "the first probe waits min_probe_interval: {outage:?}"
        );
        let last_failed = *outage.last().unwrap();
        assert_eq!(exporter.handle().state(), CircuitState::Open);

        inner.set(Step::Succeed);
        let handle = exporter.handle();
        let (after, closed) = walk(&inner, Duration::from_secs(60), |_| {
            handle.state() == CircuitState::Closed
        })
        .await;
        assert!(closed, "closed without any batch");
        assert_eq!(after.len(), 1, "one probe did it: {after:?}");
        // The probe that closed it came one wait after the last failed one:
        // in [floor / 2, floor], the floor doubled once per failed probe and
        // capped at probe_after (30 s).
        let failed = u32::try_from(outage.len()).unwrap();
        let floor = (FLOOR * 2u32.pow(failed)).min(Duration::from_secs(30));
        let wait = Duration::from_secs(20) - last_failed + after[0];
        assert!(
            wait + TICK >= floor / 2 && wait <= floor + TICK,
            "wait {wait:?}, floor {floor:?}, probes at {outage:?}"
        );

        let snapshot = exporter.handle().snapshot();
        assert_eq!(snapshot.probes as usize, outage.len() + 1);
        assert_eq!(inner.spans_received(), 0, "probes carry no spans");
        assert_eq!(snapshot.spans.exported, 0);
        assert_eq!(inner.calls(), 3 + outage.len() + 1);
        exporter.export(spans(2)).await.unwrap();
        assert_eq!(inner.spans_received(), 2, "and batches go through again");
    }

    #[tokio::test(start_paused = true)]
    async fn with_idle_probes_off_a_quiet_service_stays_open() {
        let inner = ScriptedExporter::new([Step::Fail; 3], Step::Succeed);
        let exporter = wrap_batch_probes_only(&inner);
        export_n(&exporter, 3).await;
        let (calls, _) = walk(&inner, Duration::from_secs(120), |_| false).await;
        assert!(calls.is_empty(), "{calls:?}");
        assert_eq!(exporter.handle().state(), CircuitState::Open);
        // The next batch is attempt 0 and probes.
        exporter.export(spans(1)).await.unwrap();
        assert_eq!(exporter.handle().state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_is_cut_off_and_the_next_one_follows() {
        let inner = ScriptedExporter::always(Step::Fail);
        let exporter = wrap(&inner);
        export_n(&exporter, 3).await;
        inner.set(Step::Hang);
        let (first, _) = walk(&inner, FLOOR + Duration::from_millis(5), |_| false).await;
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(exporter.handle().state(), CircuitState::HalfOpen);
        inner.set(Step::Succeed);
        // export_timeout (10 s) ends the hung probe; the next comes a
        // backed-off wait (1-2 s) later and closes.
        let handle = exporter.handle();
        let (next, closed) = walk(&inner, Duration::from_secs(15), |_| {
            handle.state() == CircuitState::Closed
        })
        .await;
        assert!(closed, "{next:?}");
        assert_eq!(next.len(), 1, "{next:?}");
        assert!(
            next[0] >= Duration::from_secs(10) && next[0] <= Duration::from_secs(12) + TICK,
            "{next:?}"
        );
        let snapshot = handle.snapshot();
        assert_eq!(
            snapshot
                .failures
                .get(breaker_otel::FailureCause::Timeout)
                .batches,
            1,
            "the hung probe, by its cause"
        );
        assert_eq!(
            snapshot.spans.failed, 3,
            "the opening batches only: probes carry no spans"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_probe_is_a_failed_probe() {
        let inner = ScriptedExporter::always(Step::Fail);
        let exporter = wrap(&inner);
        export_n(&exporter, 3).await;
        inner.set(Step::Panic);
        let (calls, _) = walk(&inner, Duration::from_secs(5), |_| false).await;
        assert!(calls.len() >= 2, "the prober survives a panic: {calls:?}");
        assert_eq!(exporter.handle().state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_comes_first_is_the_probe() {
        let inner = ScriptedExporter::new([Step::Fail; 3], Step::Succeed);
        let exporter = wrap(&inner);
        export_n(&exporter, 3).await;
        // Attempt 0 once the floor has passed, before the prober's turn.
        tokio::time::advance(FLOOR).await;
        exporter.export(spans(4)).await.unwrap();
        assert_eq!(exporter.handle().state(), CircuitState::Closed);
        assert_eq!(inner.spans_received(), 4, "the batch was the probe");
        let (calls, _) = walk(&inner, Duration::from_secs(60), |_| false).await;
        assert!(calls.is_empty(), "closed: the prober sleeps: {calls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_prober_stops_at_shutdown_and_when_the_exporter_is_dropped() {
        for drop_it in [false, true] {
            let inner = ScriptedExporter::always(Step::Fail);
            let exporter = wrap(&inner);
            export_n(&exporter, 3).await;
            let handle = exporter.handle();
            if drop_it {
                drop(exporter);
            } else {
                exporter.shutdown().unwrap();
            }
            let (calls, _) = walk(&inner, Duration::from_secs(120), |_| false).await;
            assert!(calls.is_empty(), "drop {drop_it}: {calls:?}");
            assert_eq!(handle.state(), CircuitState::Open);
        }
    }
}

mod idle_probe_logging {
    //! Empty probes are logged like a batch's probes: failures at debug, and
    //! the closing line counts them.

    use std::sync::{Arc, Mutex};

    use tracing::Level;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::*;

    /// One event of the adapter: level, message and `probes` field.
    type Event = (Level, String, Option<u64>);

    /// The adapter's events.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Event>>>);

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            #[derive(Default)]
            struct Fields(String, Option<u64>);
            impl tracing::field::Visit for Fields {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    if field.name() == "message" {
                        self.0 = format!("{value:?}");
                    }
                }
                fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                    if field.name() == "probes" {
                        self.1 = Some(value);
                    }
                }
            }
            if !event.metadata().target().starts_with("breaker_otel") {
                return;
            }
            let mut fields = Fields::default();
            event.record(&mut fields);
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), fields.0, fields.1));
        }
    }

    #[test]
    fn failed_empty_probes_are_debug_and_the_close_line_counts_them() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let inner = ScriptedExporter::always(Step::Fail);
            let exporter = wrap(&inner);
            export_n(&exporter, 3).await;
            // Three empty probes fail (at 1 s, then within 2 s and 4 s more).
            while inner.calls() < 6 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            inner.set(Step::Succeed);
            while exporter.handle().state() != CircuitState::Closed {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let lines = capture.0.lock().unwrap().clone();
        let loud: Vec<_> = lines.iter().filter(|l| l.0 <= Level::INFO).collect();
        assert_eq!(loud.len(), 2, "one warn, one info: {lines:?}");
        assert_eq!(loud[0].0, Level::WARN);
        assert!(loud[1].1.contains("circuit closed"), "{lines:?}");
        assert_eq!(
            loud[1].2,
            Some(4),
            "three failed empty probes and the one that closed"
        );
        let debug = lines.iter().filter(|l| l.0 == Level::DEBUG).count();
        assert!(
            debug >= 6,
            "half-open and open again per failed probe: {lines:?}"
        );
    }
}
