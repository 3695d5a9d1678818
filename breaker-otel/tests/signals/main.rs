//! The log and metric exporters behind the breaker: each with a breaker of
//! its own (`logs`, `metrics`), several sharing one breaker per backend
//! (`shared`), what the semantic conventions' exporter metrics read from the
//! handle (`semconv`), all with the scripted exporter on paused Tokio time;
//! and the SDK's own log processor and metric reader driving them on real
//! time (`sdk`), where a hung export used to stop everything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod logs;
mod metrics;
mod sdk;
mod semconv;
mod shared;

use std::time::Duration;

use breaker_otel::{BackendHandle, ExporterConfig, Signal, SignalCounts, SignalSnapshot};

/// The default time floor between probes: the first probe after opening
/// waits this long.
const FLOOR: Duration = Duration::from_secs(1);

/// Only batches probe, so that what each batch does is all that reaches the
/// backend.
fn batches_only() -> ExporterConfig {
    ExporterConfig::DEFAULT.idle_probes(false)
}

/// What the handle says of one signal.
fn signal(handle: &BackendHandle, signal: Signal) -> SignalSnapshot {
    handle
        .snapshot()
        .signal(signal)
        .cloned()
        .unwrap_or_else(|| panic!("{signal} is not served"))
}

/// The counts of one signal.
fn counts(handle: &BackendHandle, of: Signal) -> SignalCounts {
    signal(handle, of).counts
}

/// Steps time in small sleeps until `done` holds or `limit` has passed
/// (virtual under paused time, real otherwise); returns whether it held.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}
