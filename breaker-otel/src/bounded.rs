//! How a call into an inner exporter is bounded in time and kept from
//! panicking through us: blocking calls (shutdown, flush) run on a thread of
//! their own, waited for at most their timeout.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};

/// Runs a blocking call of the inner exporter on its own thread and waits at
/// most `timeout` for it: an inner shutdown that hangs must not hang ours.
/// `what` names the signal in messages ("span", "log", "metric").
pub(crate) fn on_thread(
    timeout: Duration,
    what: &'static str,
    call: impl FnOnce() -> OTelSdkResult + Send + 'static,
) -> OTelSdkResult {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("breaker-otel-shutdown".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
                Err(OTelSdkError::InternalFailure(format!(
                    "the inner {what} exporter panicked"
                )))
            });
            let _ = tx.send(result);
        });
    if let Err(err) = spawned {
        return Err(OTelSdkError::InternalFailure(format!(
            "could not start a thread: {err}"
        )));
    }
    rx.recv_timeout(timeout)
        .unwrap_or(Err(OTelSdkError::Timeout(timeout)))
}
