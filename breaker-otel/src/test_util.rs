//! Test doubles for code that wraps or feeds a span exporter: a
//! [`ScriptedExporter`] whose every answer the test decides, and [`spans`],
//! batches of the SDK's own test span data.
//!
//! Only built with the non-default `test-util` feature; crates enable it in
//! their `[dev-dependencies]`. It is here, next to the adapter, so that the
//! adapter's tests, the HTTP routes' tests and the benchmarks drive one
//! double instead of each writing its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::testing::trace::new_test_export_span_data;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::Notify;

use crate::{ExportFailure, ExportReport, FailureCause, ReportingSpanExporter};

/// What a [`ScriptedExporter`] does with one export call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Accepts the batch.
    Succeed,
    /// Fails with `OTelSdkError::InternalFailure`, as a backend that is down.
    Fail,
    /// Panics inside `export`.
    Panic,
    /// Never returns, as a backend that accepts the connection and never answers.
    Hang,
    /// Accepts the batch but reports this many of its spans rejected (an OTLP
    /// partial success; at most the batch).
    PartialSuccess(u64),
    /// Refuses the data as invalid: the backend is up (`INVALID_ARGUMENT`, 400).
    Invalid,
    /// Refuses our credentials (`UNAUTHENTICATED`, 401).
    Unauthenticated,
    /// Asks us to wait this long (`RESOURCE_EXHAUSTED` with `RetryInfo`, 429 with `Retry-After`).
    Throttle(Duration),
}

/// A span exporter that follows a script of [`Step`]s, then repeats a last
/// step forever; its clones share the script and the counters, so a test
/// keeps one clone while the code under test owns another.
///
/// Besides the script, exports can be held at the door
/// ([`hold`](Self::hold)) until the test [`release`](Self::release)s them:
/// that is how a test sees the world while an export is in flight.
///
/// ```
/// use breaker_otel::test_util::{ScriptedExporter, Step, spans};
/// use opentelemetry_sdk::trace::SpanExporter as _;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let backend = ScriptedExporter::new([Step::Fail], Step::Succeed);
/// assert!(backend.export(spans(2)).await.is_err());
/// assert!(backend.export(spans(3)).await.is_ok());
/// assert_eq!((backend.calls(), backend.spans_received()), (2, 3));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ScriptedExporter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    script: Mutex<Script>,
    calls: AtomicUsize,
    spans_received: AtomicUsize,
    hold: AtomicBool,
    release: Notify,
    shutdown_hangs: AtomicBool,
}

#[derive(Debug)]
struct Script {
    next: VecDeque<Step>,
    then: Step,
}

impl Default for ScriptedExporter {
    /// A backend that accepts everything.
    fn default() -> Self {
        Self::always(Step::Succeed)
    }
}

impl ScriptedExporter {
    /// Does `script` call by call, then `then` on every later call.
    pub fn new(script: impl IntoIterator<Item = Step>, then: Step) -> Self {
        Self {
            shared: Arc::new(Shared {
                script: Mutex::new(Script {
                    next: script.into_iter().collect(),
                    then,
                }),
                calls: AtomicUsize::new(0),
                spans_received: AtomicUsize::new(0),
                hold: AtomicBool::new(false),
                release: Notify::new(),
                shutdown_hangs: AtomicBool::new(false),
            }),
        }
    }

    /// Does `step` on every call.
    pub fn always(step: Step) -> Self {
        Self::new([], step)
    }

    /// Drops what is left of the script: every later call does `step`.
    pub fn set(&self, step: Step) {
        let mut script = self.script();
        script.next.clear();
        script.then = step;
    }

    /// Export calls so far, held and hanging ones included.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Spans in the batches this exporter accepted.
    pub fn spans_received(&self) -> usize {
        self.shared.spans_received.load(Ordering::SeqCst)
    }

    /// From now on each export waits for [`release`](Self::release) before
    /// doing its step.
    pub fn hold(&self) {
        self.shared.hold.store(true, Ordering::SeqCst);
    }

    /// Stops holding and lets one held export (or, if none waits yet, the
    /// next one to arrive) go on to its step.
    pub fn release(&self) {
        self.shared.hold.store(false, Ordering::SeqCst);
        self.shared.release.notify_one();
    }

    /// Makes `shutdown_with_timeout` block its thread for an hour, as an
    /// exporter stuck flushing to a dead backend.
    pub fn hang_on_shutdown(&self) {
        self.shared.shutdown_hangs.store(true, Ordering::SeqCst);
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        // A panicking step poisons nothing we cannot go on with.
        self.shared
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl SpanExporter for ScriptedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self.report(batch).await {
            ExportReport::Exported { .. } => Ok(()),
            ExportReport::Failed(failure) => {
                Err(OTelSdkError::InternalFailure(failure.to_string()))
            }
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shared.shutdown_hangs.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Ok(())
    }
}

/// As a backend that says what it did: the steps that only fail report
/// [`FailureCause::Internal`], as a plain SDK exporter would.
impl ReportingSpanExporter for ScriptedExporter {
    async fn report(&self, batch: Vec<SpanData>) -> ExportReport {
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        if self.shared.hold.load(Ordering::SeqCst) {
            self.shared.release.notified().await;
        }
        let step = {
            let mut script = self.script();
            let then = script.then;
            script.next.pop_front().unwrap_or(then)
        };
        let failed = |cause, retryable, retry_after, message: &str| {
            ExportReport::Failed(ExportFailure {
                cause,
                retryable,
                retry_after,
                message: message.to_owned(),
            })
        };
        match step {
            Step::Succeed | Step::PartialSuccess(_) => {
                let rejected = match step {
                    Step::PartialSuccess(n) => n.min(batch.len() as u64),
                    _ => 0,
                };
                self.shared
                    .spans_received
                    .fetch_add(batch.len(), Ordering::SeqCst);
                ExportReport::Exported {
                    rejected,
                    message: (rejected > 0).then(|| "scripted partial success".to_owned()),
                }
            }
            Step::Fail => failed(
                FailureCause::Internal,
                true,
                None,
                "scripted backend unavailable",
            ),
            Step::Invalid => failed(FailureCause::Invalid, false, None, "scripted invalid data"),
            Step::Unauthenticated => failed(
                FailureCause::Unauthenticated,
                false,
                None,
                "scripted expired token",
            ),
            Step::Throttle(wait) => failed(
                FailureCause::Throttled,
                true,
                Some(wait),
                "scripted throttle",
            ),
            Step::Panic => panic!("scripted span exporter panic"),
            Step::Hang => std::future::pending().await,
        }
    }
}

/// `n` finished spans, each the SDK's own
/// `opentelemetry_sdk::testing::trace::new_test_export_span_data()`.
pub fn spans(n: usize) -> Vec<SpanData> {
    (0..n).map(|_| new_test_export_span_data()).collect()
}
