//! The breaker pipeline's batch span processor and the runtime its export work runs on.
//!
//! Spans that end go into a bounded queue; one export loop, a task on the pipeline's own
//! Tokio runtime (the *telemetry runtime*), takes them out in batches and hands each batch
//! to the circuit-breaking exporter. It does what the SDK's `BatchSpanProcessor` does
//! (the same `OTEL_BSP_*` settings and the same wake-up once per full batch), and three
//! things that one cannot (see `docs/pipeline.md`):
//!
//! - a span lost because the queue is full is counted where it is lost (`queue_full`),
//!   and the queue's size and capacity are published, on the breaker's handle;
//! - batching, encoding, sending and the breaker's timers all run on the telemetry
//!   runtime's threads, which [`TelemetryPriority::Background`] puts at the operating
//!   system's lowest priority, so that under CPU saturation telemetry waits, not requests;
//! - ended spans are counted, and their string attributes cut to
//!   `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`, before the queue can lose them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use futures_util::future::{Either, select};
use opentelemetry::context::FutureExt as _;
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::handle::Published;

/// The operating-system priority of the telemetry runtime's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TelemetryPriority {
    /// The priority every other thread of the process has.
    Normal,
    /// The lowest ordinary priority (nice 19 on Linux, the lowest thread priority
    /// elsewhere), and the threads give the CPU up every few dozen spans they encode or
    /// drop (`sched_yield`): when requests want every CPU, telemetry gets what they leave
    /// instead of an equal share, and never holds the CPU for more than some tens of
    /// microseconds while a request waits. Under saturation the queue fills and spans are
    /// shed, counted as `queue_full`; when the CPU has room, every span is delivered.
    /// (`SCHED_IDLE`, which gives it nothing at all, starved the gRPC connection past its
    /// deadline and made a healthy backend look down; yielding only while encoding leaves
    /// connecting and sending at nice 19.)
    #[default]
    Background,
}

impl TelemetryPriority {
    /// The setting's spelling: `normal` or `background`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Background => "background",
        }
    }
}

impl fmt::Display for TelemetryPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TelemetryPriority {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(Self::Normal),
            "background" => Ok(Self::Background),
            _ => Err("must be `normal` or `background`".to_owned()),
        }
    }
}

/// The name of the telemetry runtime's threads (a prefix: Tokio may add to it).
pub(crate) const THREAD_NAME: &str = "otel-export";

/// Two workers: an inner export that blocks its thread for good still leaves one to run
/// the breaker's deadline, so the export fails on time instead of hanging the pipeline.
const WORKERS: usize = 2;

/// Builds the telemetry runtime, its threads at `priority`.
pub(crate) fn telemetry_runtime(priority: TelemetryPriority) -> std::io::Result<Runtime> {
    let warned = Arc::new(AtomicBool::new(false));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .max_blocking_threads(WORKERS)
        .thread_name(THREAD_NAME)
        .enable_all()
        .on_thread_start(move || {
            if let Err(reason) = apply(priority) {
                // Once per runtime: every thread would fail alike.
                if !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        priority = %priority,
                        reason,
                        "could not lower the telemetry threads' priority; they run at normal priority"
                    );
                }
            }
        })
        .build()
}

/// Sets the calling thread's priority.
fn apply(priority: TelemetryPriority) -> Result<(), String> {
    match priority {
        TelemetryPriority::Normal => Ok(()),
        TelemetryPriority::Background => {
            crate::pace::background();
            lowest_priority()
        }
    }
}

#[cfg(target_os = "linux")]
fn lowest_priority() -> Result<(), String> {
    use thread_priority::ThreadPriority;
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    // SCHED_OTHER at the lowest priority: nice 19.
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
    )
    .map_err(|err| format!("{err:?}"))
}

#[cfg(not(target_os = "linux"))]
fn lowest_priority() -> Result<(), String> {
    thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
        .map_err(|err| format!("{err:?}"))
}

/// The `OTEL_BSP_*` settings the processor follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueSettings {
    /// Spans the queue holds; one more is lost (`queue_full`).
    pub(crate) max_queue_size: usize,
    /// Spans per export; a full batch wakes the export loop at once.
    pub(crate) max_export_batch_size: usize,
    /// How long the loop waits before it exports a batch that is not full.
    pub(crate) scheduled_delay: Duration,
    /// Longest string attribute value kept, in bytes (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
    pub(crate) attribute_value_limit: usize,
}

/// What the threads that end spans share with the export loop (the number of spans in
/// the queue is published: [`Published::queue_len`]).
#[derive(Debug)]
struct Queue {
    /// Whether a wake-up for a full batch is pending, so that only one is sent per batch.
    wake_sent: AtomicBool,
    /// The wake-up itself. A channel, not a `Notify`: sending on it takes no lock, so a
    /// thread that ends a span never waits for a telemetry thread, whatever its priority,
    /// to let go of one.
    wake: mpsc::Sender<()>,
}

/// A request from a caller outside the loop, answered on a channel of its own.
enum Control {
    SetResource(Resource),
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>, Duration),
}

/// The batch span processor; see the module documentation.
pub(crate) struct BatchProcessor {
    spans: SyncSender<SpanData>,
    queue: Arc<Queue>,
    control: mpsc::UnboundedSender<Control>,
    published: Arc<Published>,
    settings: QueueSettings,
    is_shutdown: AtomicBool,
    /// How long `force_flush` waits: the SDK's five seconds, or the export deadline.
    flush_timeout: Duration,
    /// Owned here, dropped (without waiting) when the processor is.
    runtime: Option<Runtime>,
}

impl fmt::Debug for BatchProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchProcessor")
            .field("settings", &self.settings)
            .field(
                "queued",
                &self.published.queue_len().load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl BatchProcessor {
    /// Starts the export loop for `exporter` on `runtime`, which the processor then owns.
    pub(crate) fn new<E: SpanExporter + 'static>(
        exporter: E,
        settings: QueueSettings,
        runtime: Runtime,
        published: Arc<Published>,
        flush_timeout: Duration,
    ) -> Self {
        let settings = QueueSettings {
            max_queue_size: settings.max_queue_size.max(1),
            max_export_batch_size: settings
                .max_export_batch_size
                .clamp(1, settings.max_queue_size.max(1)),
            ..settings
        };
        let (spans, receiver) = sync_channel(settings.max_queue_size);
        let (control, commands) = mpsc::unbounded_channel();
        let (wake, woken) = mpsc::channel(1);
        let queue = Arc::new(Queue {
            wake_sent: AtomicBool::new(false),
            wake,
        });
        published.set_queue_capacity(settings.max_queue_size);
        let export_loop = ExportLoop {
            exporter,
            receiver,
            commands,
            woken,
            queue: Arc::clone(&queue),
            published: Arc::clone(&published),
            settings,
        };
        // Nothing the loop does may produce telemetry of its own.
        let suppressed = Context::current().with_telemetry_suppressed();
        runtime.spawn(export_loop.run().with_context(suppressed));
        Self {
            spans,
            queue,
            control,
            published,
            settings,
            is_shutdown: AtomicBool::new(false),
            flush_timeout,
            runtime: Some(runtime),
        }
    }

    /// Sends `make(reply)` to the loop and waits at most `timeout` for its answer.
    fn ask(
        &self,
        timeout: Duration,
        make: impl FnOnce(SyncSender<OTelSdkResult>) -> Control,
    ) -> OTelSdkResult {
        let (reply, answer) = sync_channel(1);
        if self.control.send(make(reply)).is_err() {
            return Err(OTelSdkError::InternalFailure(
                "the export loop has stopped".into(),
            ));
        }
        answer
            .recv_timeout(timeout)
            .unwrap_or(Err(OTelSdkError::Timeout(timeout)))
    }
}

impl Drop for BatchProcessor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Allowed anywhere, an async context included; a task still running (an export
            // past its deadline) is dropped at its next await.
            runtime.shutdown_background();
        }
    }
}

impl SpanProcessor for BatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, mut span: SpanData) {
        // Only sampled spans are exported (an unsampled span that records is for
        // processors that read spans, not for the backend).
        if !span.span_context.is_sampled() || self.is_shutdown.load(Ordering::Relaxed) {
            return;
        }
        self.published.count_ended();
        truncate_attributes(&mut span, self.settings.attribute_value_limit);
        // Counted before it enters, so the loop never takes out a span not yet counted.
        let len = self.published.queue_len();
        let queued = len.fetch_add(1, Ordering::AcqRel) + 1;
        match self.spans.try_send(span) {
            Ok(()) => {
                if queued >= self.settings.max_export_batch_size
                    && !self.queue.wake_sent.load(Ordering::Relaxed)
                    && !self.queue.wake_sent.swap(true, Ordering::AcqRel)
                {
                    // Full: a wake-up is pending already.
                    let _ = self.queue.wake.try_send(());
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                len.fetch_sub(1, Ordering::AcqRel);
                self.published.count_queue_full();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.is_shutdown.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.ask(self.flush_timeout, Control::Flush)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.is_shutdown.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.ask(timeout, |reply| Control::Shutdown(reply, timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Handled by the loop before any span can end: the provider calls this while it
        // is built.
        let _ = self.control.send(Control::SetResource(resource.clone()));
    }
}

/// The task that takes batches out of the queue and exports them, one at a time.
struct ExportLoop<E> {
    exporter: E,
    receiver: Receiver<SpanData>,
    commands: mpsc::UnboundedReceiver<Control>,
    woken: mpsc::Receiver<()>,
    queue: Arc<Queue>,
    published: Arc<Published>,
    settings: QueueSettings,
}

/// Why the loop woke up.
enum Woke {
    FullBatch,
    Timer,
    Command(Option<Control>),
}

impl<E: SpanExporter> ExportLoop<E> {
    async fn run(mut self) {
        let mut last_export = Instant::now();
        loop {
            let woke = {
                let commands = Box::pin(self.commands.recv());
                let full = Box::pin(self.woken.recv());
                let timer = Box::pin(tokio::time::sleep_until(
                    last_export + self.settings.scheduled_delay,
                ));
                match select(commands, select(full, timer)).await {
                    Either::Left((command, _)) => Woke::Command(command),
                    Either::Right((Either::Left((Some(()), _)), _)) => Woke::FullBatch,
                    // The processor is gone.
                    Either::Right((Either::Left((None, _)), _)) => Woke::Command(None),
                    Either::Right((Either::Right(_), _)) => Woke::Timer,
                }
            };
            match woke {
                Woke::FullBatch => {
                    self.queue.wake_sent.store(false, Ordering::Release);
                    while self.published.queue_len().load(Ordering::Acquire)
                        >= self.settings.max_export_batch_size
                    {
                        self.export_one().await;
                    }
                    last_export = Instant::now();
                }
                Woke::Timer => {
                    self.export_one().await;
                    last_export = Instant::now();
                }
                Woke::Command(Some(Control::SetResource(resource))) => {
                    self.exporter.set_resource(&resource);
                }
                Woke::Command(Some(Control::Flush(reply))) => {
                    let result = self.export_all().await;
                    last_export = Instant::now();
                    let _ = reply.send(result);
                }
                Woke::Command(Some(Control::Shutdown(reply, timeout))) => {
                    let result = self.export_all().await;
                    let closed = self.exporter.shutdown_with_timeout(timeout);
                    let _ = reply.send(result.and(closed));
                    return;
                }
                // The processor is gone.
                Woke::Command(None) => return,
            }
        }
    }

    /// Exports up to one batch of what is queued; returns whether it exported anything,
    /// and the exporter's result.
    async fn export_one(&mut self) -> Option<OTelSdkResult> {
        let ready = self
            .published
            .queue_len()
            .load(Ordering::Acquire)
            .min(self.settings.max_export_batch_size);
        if ready == 0 {
            return None;
        }
        let mut batch = Vec::with_capacity(ready);
        while batch.len() < ready {
            match self.receiver.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        self.published
            .queue_len()
            .fetch_sub(batch.len(), Ordering::AcqRel);
        if batch.is_empty() {
            return None;
        }
        // The exporter counts what became of every span.
        Some(self.exporter.export(batch).await)
    }

    /// Exports everything queued now, batch by batch; the last failure, if any.
    async fn export_all(&mut self) -> OTelSdkResult {
        let mut result = Ok(());
        while let Some(outcome) = self.export_one().await {
            if outcome.is_err() {
                result = outcome;
            }
        }
        result
    }
}

/// Cuts every string attribute value of `span` (its own and its events') to `limit` bytes,
/// on a UTF-8 character boundary. The SDK limits how many attributes a span keeps but not
/// how long they are, and the HTTP instrumentation records client input (user agent, path,
/// query) as it comes: without this, the queue's memory is its length times whatever
/// clients send.
pub(crate) fn truncate_attributes(span: &mut SpanData, limit: usize) {
    truncate_all(&mut span.attributes, limit);
    for event in &mut span.events.events {
        truncate_all(&mut event.attributes, limit);
    }
}

fn truncate_all(attributes: &mut [KeyValue], limit: usize) {
    for attribute in attributes {
        match &mut attribute.value {
            Value::String(value) => truncate_value(value, limit),
            Value::Array(Array::String(values)) => {
                for value in values {
                    truncate_value(value, limit);
                }
            }
            _ => {}
        }
    }
}

/// Replaces `value` by its first `limit` bytes, fewer if `limit` falls inside a character.
/// Short values are left alone, without a copy.
fn truncate_value(value: &mut StringValue, limit: usize) {
    let text = value.as_str();
    if text.len() <= limit {
        return;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    *value = StringValue::from(text[..end].to_owned());
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

    use super::*;
    use crate::handle::BreakerHandle;
    use crate::test_util::{ScriptedExporter, Step};
    use crate::{CircuitBreakerSpanExporter, ExporterConfig, TokioClock};

    /// Generous: a loaded 2-core machine.
    const WAIT: Duration = Duration::from_secs(20);

    /// A provider whose only processor is ours, in front of a breaker in front of `backend`.
    fn pipeline(
        backend: &ScriptedExporter,
        queue: usize,
        batch: usize,
        delay: Duration,
    ) -> (SdkTracerProvider, BreakerHandle) {
        sampled_pipeline(backend, queue, batch, delay, Sampler::AlwaysOn)
    }

    fn sampled_pipeline(
        backend: &ScriptedExporter,
        queue: usize,
        batch: usize,
        delay: Duration,
        sampler: Sampler,
    ) -> (SdkTracerProvider, BreakerHandle) {
        let runtime = telemetry_runtime(TelemetryPriority::Normal).unwrap();
        let exporter = CircuitBreakerSpanExporter::with_runtime(
            backend.clone(),
            ExporterConfig::DEFAULT,
            runtime.handle().clone(),
            Arc::new(TokioClock),
        )
        .unwrap();
        let handle = exporter.handle();
        let processor = BatchProcessor::new(
            exporter,
            QueueSettings {
                max_queue_size: queue,
                max_export_batch_size: batch,
                scheduled_delay: delay,
                attribute_value_limit: 256,
            },
            runtime,
            handle.published(),
            Duration::from_secs(5),
        );
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_span_processor(processor)
            .build();
        (provider, handle)
    }

    fn end_spans(provider: &SdkTracerProvider, n: usize) {
        let tracer = provider.tracer("test");
        for _ in 0..n {
            drop(tracer.start("span"));
        }
    }

    fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = StdInstant::now() + WAIT;
        while !condition() {
            assert!(StdInstant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn every_span_that_does_not_fit_is_counted_lost_where_it_is_lost() {
        let backend = ScriptedExporter::default();
        backend.hold();
        let (provider, handle) = pipeline(&backend, 8, 4, Duration::from_secs(3600));
        // One full batch wakes the loop, which takes it out and is held in its export.
        end_spans(&provider, 4);
        until("the first export", || backend.calls() == 1);
        // The queue takes 8 more; the other 88 are lost, each counted.
        end_spans(&provider, 96);
        let held = handle.snapshot();
        assert_eq!(held.spans_ended, 100);
        assert_eq!(held.queue.lost, 88, "{held:?}");
        assert_eq!(held.queue.size, 8, "{held:?}");
        assert_eq!(held.queue.capacity, 8, "{held:?}");

        backend.set(Step::Succeed);
        backend.release();
        provider.shutdown().unwrap();
        let done = handle.snapshot();
        assert_eq!(done.spans.exported, 12, "{done:?}");
        assert_eq!(done.queue.size, 0, "{done:?}");
        assert_eq!(
            done.spans_ended,
            done.spans.total() + done.queue.lost,
            "ended = exported + rejected + dropped + failed + queue_full: {done:?}"
        );
        assert_eq!(backend.spans_received(), 12);
    }

    #[test]
    fn a_full_batch_is_exported_at_once_not_after_the_delay() {
        let backend = ScriptedExporter::default();
        let (provider, handle) = pipeline(&backend, 64, 8, Duration::from_secs(3600));
        end_spans(&provider, 20);
        until("two full batches", || {
            handle.snapshot().spans.exported == 16
        });
        // The four left wait for the delay, or for shutdown.
        assert_eq!(handle.snapshot().queue.size, 4);
        provider.shutdown().unwrap();
        assert_eq!(handle.snapshot().spans.exported, 20);
    }

    #[test]
    fn a_batch_that_is_not_full_goes_after_the_delay() {
        let backend = ScriptedExporter::default();
        let (provider, handle) = pipeline(&backend, 64, 512, Duration::from_millis(50));
        end_spans(&provider, 3);
        until("the timer's export", || {
            handle.snapshot().spans.exported == 3
        });
        provider.shutdown().unwrap();
    }

    #[test]
    fn force_flush_exports_what_is_queued_and_answers() {
        let backend = ScriptedExporter::default();
        let (provider, handle) = pipeline(&backend, 64, 512, Duration::from_secs(3600));
        end_spans(&provider, 5);
        provider.force_flush().unwrap();
        assert_eq!(handle.snapshot().spans.exported, 5);
        provider.shutdown().unwrap();
    }

    #[test]
    fn unsampled_spans_are_neither_queued_nor_counted() {
        let backend = ScriptedExporter::default();
        let (provider, handle) = sampled_pipeline(
            &backend,
            8,
            4,
            Duration::from_secs(3600),
            Sampler::AlwaysOff,
        );
        end_spans(&provider, 10);
        provider.shutdown().unwrap();
        let snapshot = handle.snapshot();
        assert_eq!((snapshot.spans_ended, snapshot.queue.lost), (0, 0));
        assert_eq!(backend.calls(), 0);
    }

    /// The nice value of the calling thread, from `/proc/thread-self/stat` (field 19).
    #[cfg(target_os = "linux")]
    fn nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) is in parentheses and may hold spaces.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn background_threads_run_at_nice_19_and_normal_ones_as_the_process() {
        let nice_of = |priority| {
            let runtime = telemetry_runtime(priority).unwrap();
            runtime.block_on(runtime.spawn(async { nice() })).unwrap()
        };
        assert_eq!(nice_of(TelemetryPriority::Background), 19);
        assert_eq!(nice_of(TelemetryPriority::Normal), nice());
    }

    #[test]
    fn priorities_are_read_by_name() {
        assert_eq!("background".parse(), Ok(TelemetryPriority::Background));
        assert_eq!(" Normal ".parse(), Ok(TelemetryPriority::Normal));
        assert!("high".parse::<TelemetryPriority>().is_err());
        assert_eq!(TelemetryPriority::default(), TelemetryPriority::Background);
    }

    #[test]
    fn a_60_kb_attribute_is_cut_to_the_limit_on_a_char_boundary() {
        // 'é' is two bytes: 255 ASCII bytes then 'é' puts byte 256 inside a character.
        let long = format!("{}{}", "a".repeat(255), "é".repeat(30_000));
        assert!(long.len() > 60_000);
        let mut attributes = vec![
            KeyValue::new("user_agent.original", long.clone()),
            KeyValue::new("short", "kept"),
            KeyValue::new("count", 7_i64),
            KeyValue::new(
                "list",
                Value::Array(Array::String(vec![StringValue::from(long)])),
            ),
        ];
        truncate_all(&mut attributes, 256);
        assert_eq!(attributes[0].value.as_str(), "a".repeat(255));
        assert_eq!(attributes[1].value.as_str(), "kept");
        assert_eq!(attributes[2].value, Value::I64(7));
        let Value::Array(Array::String(list)) = &attributes[3].value else {
            panic!("not a string array");
        };
        assert_eq!(list[0].as_str(), "a".repeat(255));

        let mut on_boundary = vec![KeyValue::new("k", "é".repeat(200))];
        truncate_all(&mut on_boundary, 256);
        assert_eq!(on_boundary[0].value.as_str(), "é".repeat(128));
    }
}
