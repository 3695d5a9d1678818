//! A scripted inner exporter and span factory shared by the adapter tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};

/// What the inner exporter does on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Succeed,
    Fail,
    Panic,
    Hang,
}

/// An inner exporter that follows a script, then repeats `then`.
#[derive(Debug, Clone)]
pub struct Scripted {
    script: Arc<Mutex<VecDeque<Step>>>,
    then: Step,
    pub calls: Arc<AtomicUsize>,
    pub spans_received: Arc<AtomicUsize>,
    pub shutdown_hangs: bool,
}

impl Scripted {
    pub fn always(step: Step) -> Self {
        Self::new([], step)
    }

    pub fn new(script: impl IntoIterator<Item = Step>, then: Step) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            then,
            calls: Arc::default(),
            spans_received: Arc::default(),
            shutdown_hangs: false,
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Replaces what every later call does.
    pub fn set(&self, step: Step) {
        let mut script = self.script.lock().unwrap();
        script.clear();
        script.extend(std::iter::repeat_n(step, 10_000));
    }
}

impl SpanExporter for Scripted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let step = self.script.lock().unwrap().pop_front().unwrap_or(self.then);
        match step {
            Step::Succeed => {
                self.spans_received.fetch_add(batch.len(), Ordering::SeqCst);
                Ok(())
            }
            Step::Fail => Err(OTelSdkError::InternalFailure("backend unavailable".into())),
            Step::Panic => panic!("scripted inner exporter panic"),
            Step::Hang => std::future::pending().await,
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shutdown_hangs {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Ok(())
    }
}

pub fn spans(n: usize) -> Vec<SpanData> {
    (0..n)
        .map(|_| SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed("test"),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::default(),
        })
        .collect()
}
