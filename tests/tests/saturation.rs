//! The server as fast as clients can drive it, with telemetry at its default background
//! priority: every span that ends is accounted for exactly, the spans the batch queue could
//! not hold are counted as `queue_full` where they are lost (not computed by subtraction),
//! and the queue shows in `/health/telemetry` and, under the semantic conventions' names,
//! in `/metrics`.
//!
//! A small queue (`OTEL_BSP_MAX_QUEUE_SIZE=64`) under a closed loop of clients makes losses
//! likely, but the test asserts the counting, whatever the machine sheds: on a fast machine
//! nothing may be lost, and the identity must hold just the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use ::tests::load::{self, LoadSpec};
use support::{FinalCounts, Rig, WAIT, terminate};

#[test]
fn under_saturation_every_ended_span_is_exported_or_counted_lost() {
    let mut rig = Rig::start(&[("OTEL_BSP_MAX_QUEUE_SIZE", "64")]);
    let health = rig.health();
    assert_eq!(health.count("/queue/capacity"), 64, "{health:?}");

    let report = load::run(&LoadSpec {
        // Creates and reads: two spans a request.
        post_every: 4,
        ..LoadSpec::closed_loop(rig.server.addr(), 8, Duration::from_secs(3))
    });
    assert_eq!(report.errors, 0, "{:?}", report.first_errors);
    assert!(report.requests() > 0);

    // While the server runs: what the health check and /metrics say about the queue agree.
    let during = rig.health();
    let metrics = rig.api.get("/metrics").body;
    let lost_in_metrics = metrics
        .lines()
        .find(|l| {
            l.starts_with("otel_sdk_processor_span_processed_total{")
                && l.contains("error_type=\"queue_full\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no queue_full series in /metrics:\n{metrics}"));
    assert!(
        lost_in_metrics as u64 >= during.count("/spans/queue_full"),
        "{lost_in_metrics} {during:?}"
    );
    for series in [
        "otel_sdk_processor_span_queue_size{",
        "otel_sdk_processor_span_queue_capacity{",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }

    let (status, _) = terminate(&mut rig, WAIT);
    assert!(status.success(), "{status}\n{}", rig.server_log());
    let counts = FinalCounts::from_log(&rig.server.stderr())
        .unwrap_or_else(|| panic!("no `tracing shut down` line:\n{}", rig.server_log()));
    let received = rig.seen().spans;
    assert_eq!(
        counts.ended,
        2 * report.requests(),
        "every request ends two spans, each counted once: {counts:?}"
    );
    assert_eq!(
        received, counts.exported,
        "the receiver got exactly the spans counted exported: {counts:?}"
    );
    assert_eq!(
        counts.ended,
        counts.exported + counts.rejected + counts.dropped + counts.failed + counts.queue_full,
        "ended = exported + rejected + dropped + failed + queue_full: {counts:?}"
    );
    println!(
        "saturation: {} requests in 3 s, {} spans ended, {} exported, {} lost in the queue",
        report.requests(),
        counts.ended,
        counts.exported,
        counts.queue_full
    );
}
