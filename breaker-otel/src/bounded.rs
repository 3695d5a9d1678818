//! How a call into an inner exporter is bounded in time and kept from
//! panicking through us, when the call borrows its batch and so cannot be
//! moved to a task of its own: the export is polled in place, on whatever
//! thread polls ours, and raced against a deadline that is a task of its own;
//! blocking calls (shutdown, flush) run on a thread of their own.
//!
//! What this can and cannot cut off is in docs/signals.md: a hang that
//! returns `Pending` (a backend that never answers) ends at the deadline; a
//! call that blocks its thread inside `poll` keeps it until it returns.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::{Either, select};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use tokio::runtime::Handle;

use crate::{ExportFailure, ExportReport, FailureCause};

/// A failure that the wrapper itself decided: retryable, no delay.
fn failed(cause: FailureCause, message: String) -> ExportReport {
    ExportReport::Failed(ExportFailure {
        cause,
        retryable: true,
        retry_after: None,
        message,
    })
}

/// Runs `export()` in place, bounded by `timeout` and with its panic caught;
/// `what` names the signal in messages ("log", "metric").
///
/// The call itself happens inside the race, so that an exporter whose
/// `export` does work (or panics) before returning its future is covered
/// too. The deadline is a task on `runtime`, so that it can be created and
/// fire whatever thread polls this future: the SDK's log and metric
/// processors poll exports on threads of their own, outside any runtime.
pub(crate) async fn in_place<F>(
    export: impl FnOnce() -> F,
    runtime: &Handle,
    timeout: Duration,
    what: &str,
) -> ExportReport
where
    F: Future<Output = ExportReport>,
{
    // The timer is made inside the task: no timer can be made on a thread
    // outside the runtime, where the SDK's processors poll us.
    let deadline = runtime.spawn(async move { tokio::time::sleep(timeout).await });
    let export = AssertUnwindSafe(async move { export().await }).catch_unwind();
    match select(std::pin::pin!(export), deadline).await {
        Either::Left((finished, deadline)) => {
            deadline.abort();
            finished.unwrap_or_else(|_| {
                failed(
                    FailureCause::Panic,
                    format!("the inner {what} exporter panicked"),
                )
            })
        }
        // The export is dropped here, which cancels whatever it was waiting for.
        Either::Right((Ok(()), _)) => failed(
            FailureCause::Timeout,
            format!("no answer within export_timeout ({timeout:?})"),
        ),
        // Only a runtime shutting down cancels the deadline; nothing bounds
        // the export any more, so it is given up as a timeout would be.
        Either::Right((Err(_), _)) => failed(
            FailureCause::Internal,
            "the runtime that bounds exports is shutting down".into(),
        ),
    }
}

/// What the SDK is told of a report: `Ok` when exported, the SDK's timeout
/// error when our deadline ended it, the failure's text otherwise.
pub(crate) fn sdk_result(report: &ExportReport, timeout: Duration) -> OTelSdkResult {
    match report {
        ExportReport::Exported { .. } => Ok(()),
        ExportReport::Failed(failure) if failure.cause == FailureCause::Timeout => {
            Err(OTelSdkError::Timeout(timeout))
        }
        ExportReport::Failed(failure) => Err(OTelSdkError::InternalFailure(failure.to_string())),
    }
}

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
