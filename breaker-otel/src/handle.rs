//! What the adapter publishes: lock-free counters and state that any thread
//! may read on every request, and the read-only handle over them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use breaker_core::{CircuitState, REACHABLE_TRANSITIONS};

use crate::FailureCause;

/// How many causes there are, for the per-cause counters.
const CAUSES: usize = FailureCause::ALL.len();

/// `last_failure_cause` when nothing has failed yet.
const NO_CAUSE: u8 = u8::MAX;

/// Published state, written by the exporter after each decision and read by
/// handles without taking the breaker's lock.
#[derive(Debug)]
pub(crate) struct Published {
    state: AtomicU8,
    /// Nanoseconds after `origin_wall` at which the current state began.
    since_nanos: AtomicU64,
    origin_wall: SystemTime,
    consecutive_failures: AtomicU32,
    exported: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Failed spans by cause, indexed like [`FailureCause::ALL`].
    failed_spans: [AtomicU64; CAUSES],
    /// Failed export calls by cause, indexed like [`FailureCause::ALL`].
    failed_batches: [AtomicU64; CAUSES],
    /// The last failure's cause ([`NO_CAUSE`]: none yet) and when it
    /// happened, in nanoseconds after `origin_wall`.
    last_failure_cause: AtomicU8,
    last_failure_nanos: AtomicU64,
    /// Nanoseconds after `origin_wall` until which the backend asked us to
    /// wait; 0 when it did not.
    throttled_until_nanos: AtomicU64,
    probes: AtomicU64,
    ended: AtomicU64,
    /// Spans lost because the batch queue was full.
    queue_full: AtomicU64,
    /// Spans in the batch queue now, and how many it holds (0: no queue of ours).
    queue_len: AtomicUsize,
    queue_capacity: AtomicUsize,
    transitions: [AtomicU64; REACHABLE_TRANSITIONS.len()],
}

impl Published {
    pub(crate) fn new(origin_wall: SystemTime) -> Self {
        Self {
            state: AtomicU8::new(encode(CircuitState::Closed)),
            since_nanos: AtomicU64::new(0),
            origin_wall,
            consecutive_failures: AtomicU32::new(0),
            exported: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failed_spans: Default::default(),
            failed_batches: Default::default(),
            last_failure_cause: AtomicU8::new(NO_CAUSE),
            last_failure_nanos: AtomicU64::new(0),
            throttled_until_nanos: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            queue_len: AtomicUsize::new(0),
            queue_capacity: AtomicUsize::new(0),
            transitions: Default::default(),
        }
    }

    pub(crate) fn set_state(&self, state: CircuitState, since: Duration) {
        self.since_nanos.store(nanos(since), Relaxed);
        self.state.store(encode(state), Relaxed);
    }

    /// `until` is measured from the exporter's creation, like `since`;
    /// `None` when the backend has not asked us to wait (or the wait is over).
    pub(crate) fn set_throttled_until(&self, until: Option<Duration>) {
        // Zero means "not throttled": a wait that ends at the origin is over anyway.
        self.throttled_until_nanos
            .store(until.map_or(0, nanos), Relaxed);
    }

    pub(crate) fn set_consecutive_failures(&self, value: u32) {
        self.consecutive_failures.store(value, Relaxed);
    }

    pub(crate) fn count_transition(&self, from: CircuitState, to: CircuitState) {
        if let Some(i) = REACHABLE_TRANSITIONS
            .iter()
            .position(|&pair| pair == (from, to))
        {
            self.transitions[i].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn count_probe(&self) {
        self.probes.fetch_add(1, Relaxed);
    }

    pub(crate) fn probes(&self) -> u64 {
        self.probes.load(Relaxed)
    }

    pub(crate) fn count_ended(&self) {
        self.ended.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_queue_full(&self) {
        self.queue_full.fetch_add(1, Relaxed);
    }

    /// The number of spans in the batch queue, which the processor keeps up to date.
    pub(crate) fn queue_len(&self) -> &AtomicUsize {
        &self.queue_len
    }

    pub(crate) fn set_queue_capacity(&self, capacity: usize) {
        self.queue_capacity.store(capacity, Relaxed);
    }

    pub(crate) fn count_exported(&self, spans: u64) {
        self.exported.fetch_add(spans, Relaxed);
    }

    pub(crate) fn count_dropped(&self, spans: u64) {
        self.dropped.fetch_add(spans, Relaxed);
    }

    /// Spans the backend took but said it rejected (a partial success).
    pub(crate) fn count_rejected(&self, spans: u64) {
        self.rejected.fetch_add(spans, Relaxed);
    }

    /// One failed export call of `spans` spans; `at` is measured from the
    /// exporter's creation.
    pub(crate) fn count_failed(&self, spans: u64, cause: FailureCause, at: Duration) {
        self.failed.fetch_add(spans, Relaxed);
        let i = cause_index(cause);
        self.failed_spans[i].fetch_add(spans, Relaxed);
        self.failed_batches[i].fetch_add(1, Relaxed);
        self.last_failure_nanos.store(nanos(at), Relaxed);
        self.last_failure_cause.store(i as u8, Relaxed);
    }

    pub(crate) fn spans(&self) -> SpanCounts {
        SpanCounts {
            exported: self.exported.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }

    fn wall(&self, nanos: u64) -> SystemTime {
        self.origin_wall + Duration::from_nanos(nanos)
    }

    fn last_failure(&self) -> Option<LastFailure> {
        let cause = *FailureCause::ALL.get(usize::from(self.last_failure_cause.load(Relaxed)))?;
        Some(LastFailure {
            cause,
            at: self.wall(self.last_failure_nanos.load(Relaxed)),
        })
    }

    fn throttled_until(&self) -> Option<SystemTime> {
        match self.throttled_until_nanos.load(Relaxed) {
            0 => None,
            nanos => Some(self.wall(nanos)),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn cause_index(cause: FailureCause) -> usize {
    // `ALL` lists every cause, so the fallback is never taken; it keeps a
    // cause added without updating `ALL` from panicking.
    FailureCause::ALL
        .iter()
        .position(|&c| c == cause)
        .unwrap_or(CAUSES - 1)
}

fn encode(state: CircuitState) -> u8 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::HalfOpen => 1,
        CircuitState::Open => 2,
    }
}

fn decode(value: u8) -> CircuitState {
    match value {
        0 => CircuitState::Closed,
        1 => CircuitState::HalfOpen,
        _ => CircuitState::Open,
    }
}

/// A cheap, cloneable, read-only view of one breaker, for health checks and
/// metrics. Reading never takes the breaker's lock: every field is an atomic,
/// so a handle may be read on every HTTP request from any thread.
#[derive(Clone)]
pub struct BreakerHandle {
    published: Arc<Published>,
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl BreakerHandle {
    pub(crate) fn new(published: Arc<Published>) -> Self {
        Self { published }
    }

    /// A handle for a pipeline with tracing disabled: always closed, all
    /// counters zero. Health reports pass; metrics show nothing happening.
    #[must_use]
    pub fn disabled() -> Self {
        Self::new(Arc::new(Published::new(SystemTime::now())))
    }

    pub(crate) fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published)
    }

    /// The circuit's state now.
    #[must_use]
    pub fn state(&self) -> CircuitState {
        decode(self.published.state.load(Relaxed))
    }

    /// Every published value at (nearly) one moment. Each value is read
    /// atomically; the set is not one transaction, which metrics and health
    /// checks do not need.
    #[must_use]
    pub fn snapshot(&self) -> BreakerSnapshot {
        let p = &*self.published;
        let since = p.wall(p.since_nanos.load(Relaxed));
        let transitions = TransitionCounts {
            counts: std::array::from_fn(|i| p.transitions[i].load(Relaxed)),
        };
        BreakerSnapshot {
            state: self.state(),
            since,
            consecutive_failures: p.consecutive_failures.load(Relaxed),
            spans: p.spans(),
            failures: FailureCounts {
                counts: std::array::from_fn(|i| CauseCounts {
                    spans: p.failed_spans[i].load(Relaxed),
                    batches: p.failed_batches[i].load(Relaxed),
                }),
            },
            last_failure: p.last_failure(),
            throttled_until: p.throttled_until(),
            probes: p.probes.load(Relaxed),
            spans_ended: p.ended.load(Relaxed),
            queue: QueueSnapshot {
                lost: p.queue_full.load(Relaxed),
                size: p.queue_len.load(Relaxed) as u64,
                capacity: p.queue_capacity.load(Relaxed) as u64,
            },
            transitions,
        }
    }
}

/// The breaker's published values at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: CircuitState,
    /// Wall-clock time at which the current state was entered (the
    /// exporter's creation before any transition).
    pub since: SystemTime,
    /// Consecutive failed exports counted in closed state.
    pub consecutive_failures: u32,
    /// Spans by outcome.
    pub spans: SpanCounts,
    /// Failed exports and their spans, by cause.
    pub failures: FailureCounts,
    /// The most recent failed export: its cause and when.
    pub last_failure: Option<LastFailure>,
    /// Until when the backend asked us to send nothing (`RetryInfo`,
    /// `Retry-After`); `None` when it did not or the wait is over. Every
    /// export is dropped until then, probes included.
    pub throttled_until: Option<SystemTime>,
    /// Probe exports attempted while the circuit was open.
    pub probes: u64,
    /// Sampled spans that ended in a provider built by
    /// [`TracingPipeline`](crate::TracingPipeline), counted before the batch
    /// queue; 0 for an exporter used on its own. Every one of them is in
    /// [`spans`](Self::spans), lost in the queue ([`queue`](Self::queue)`.lost`),
    /// still queued, or in the batch being exported.
    pub spans_ended: u64,
    /// The pipeline's batch queue (all zero for an exporter used on its own).
    pub queue: QueueSnapshot,
    /// State changes by `(from, to)`.
    pub transitions: TransitionCounts,
}

/// The batch queue in front of the exporter, as the pipeline's processor publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueSnapshot {
    /// Spans lost because the queue was full when they ended (`queue_full`).
    pub lost: u64,
    /// Spans in the queue now.
    pub size: u64,
    /// Spans the queue holds (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub capacity: u64,
}

/// Spans by what became of them. Every span handed to the exporter is in
/// exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpanCounts {
    /// Accepted by the backend.
    pub exported: u64,
    /// Taken by the backend in a batch it accepted, but reported rejected
    /// (an OTLP partial success): they reached the backend and were not stored.
    pub rejected: u64,
    /// Dropped unsent because the circuit was open (or the backend asked us to wait).
    pub dropped: u64,
    /// Sent but the export failed: an error, a timeout or a panic; see
    /// [`FailureCounts`] for the causes.
    pub failed: u64,
}

impl SpanCounts {
    /// All spans handed to the exporter.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.exported + self.rejected + self.dropped + self.failed
    }
}

/// Failed exports of one cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CauseCounts {
    /// Spans in those exports (all counted in [`SpanCounts::failed`]).
    pub spans: u64,
    /// Export calls that failed.
    pub batches: u64,
}

/// Failed exports by cause, every cause listed, zero counts included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCounts {
    counts: [CauseCounts; CAUSES],
}

impl FailureCounts {
    /// Every cause with its counts, in [`FailureCause::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (FailureCause, CauseCounts)> + '_ {
        FailureCause::ALL
            .into_iter()
            .zip(self.counts.iter().copied())
    }

    /// The counts of one cause.
    #[must_use]
    pub fn get(&self, cause: FailureCause) -> CauseCounts {
        self.counts[cause_index(cause)]
    }

    /// Failed export calls of every cause.
    #[must_use]
    pub fn batches(&self) -> u64 {
        self.counts.iter().map(|c| c.batches).sum()
    }
}

/// The most recent failed export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastFailure {
    /// Why it failed.
    pub cause: FailureCause,
    /// When (wall clock).
    pub at: SystemTime,
}

/// State changes counted by `(from, to)`, for every pair that can occur.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionCounts {
    counts: [u64; REACHABLE_TRANSITIONS.len()],
}

impl TransitionCounts {
    /// Every reachable `(from, to, count)`, zero counts included, in a fixed
    /// order.
    pub fn iter(&self) -> impl Iterator<Item = (CircuitState, CircuitState, u64)> + '_ {
        REACHABLE_TRANSITIONS
            .iter()
            .zip(self.counts.iter())
            .map(|(&(from, to), &count)| (from, to, count))
    }

    /// How often the circuit went from `from` to `to` (0 for pairs that
    /// cannot occur).
    #[must_use]
    pub fn get(&self, from: CircuitState, to: CircuitState) -> u64 {
        self.iter()
            .find(|&(f, t, _)| (f, t) == (from, to))
            .map_or(0, |(_, _, count)| count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_handle_is_closed_with_every_counter_at_zero() {
        let snapshot = BreakerHandle::disabled().snapshot();
        assert_eq!(snapshot.state, CircuitState::Closed);
        assert_eq!(snapshot.spans.total(), 0);
        assert_eq!(snapshot.transitions.iter().count(), 5);
        assert!(snapshot.transitions.iter().all(|(_, _, n)| n == 0));
    }

    #[test]
    fn published_values_reach_every_clone() {
        let published = Arc::new(Published::new(SystemTime::UNIX_EPOCH));
        let handle = BreakerHandle::new(Arc::clone(&published));
        let clone = handle.clone();
        published.set_state(CircuitState::Open, Duration::from_secs(7));
        published.count_transition(CircuitState::Closed, CircuitState::Open);
        published.count_transition(CircuitState::Closed, CircuitState::HalfOpen);
        published.count_dropped(4);
        let snapshot = clone.snapshot();
        assert_eq!(snapshot.state, CircuitState::Open);
        assert_eq!(
            snapshot.since,
            SystemTime::UNIX_EPOCH + Duration::from_secs(7)
        );
        assert_eq!(
            snapshot
                .transitions
                .get(CircuitState::Closed, CircuitState::Open),
            1
        );
        assert_eq!(
            snapshot
                .transitions
                .get(CircuitState::Closed, CircuitState::HalfOpen),
            0,
            "an impossible pair is never counted"
        );
        assert_eq!(snapshot.spans.dropped, 4);
    }

    #[test]
    fn failures_are_counted_by_cause_and_the_last_one_is_named() {
        let published = Arc::new(Published::new(SystemTime::UNIX_EPOCH));
        let handle = BreakerHandle::new(Arc::clone(&published));
        assert_eq!(handle.snapshot().last_failure, None);
        published.count_failed(10, FailureCause::Unavailable, Duration::from_secs(1));
        published.count_failed(5, FailureCause::Unauthenticated, Duration::from_secs(2));
        published.count_failed(7, FailureCause::Unauthenticated, Duration::from_secs(3));
        published.count_rejected(4);
        let snapshot = handle.snapshot();
        assert_eq!(snapshot.spans.failed, 22);
        assert_eq!(snapshot.spans.rejected, 4);
        assert_eq!(snapshot.spans.total(), 26);
        assert_eq!(
            snapshot.failures.get(FailureCause::Unauthenticated),
            CauseCounts {
                spans: 12,
                batches: 2
            }
        );
        assert_eq!(snapshot.failures.batches(), 3);
        assert_eq!(snapshot.failures.iter().count(), FailureCause::ALL.len());
        assert_eq!(
            snapshot.last_failure,
            Some(LastFailure {
                cause: FailureCause::Unauthenticated,
                at: SystemTime::UNIX_EPOCH + Duration::from_secs(3)
            })
        );
    }

    #[test]
    fn a_throttle_is_published_until_it_is_lifted() {
        let published = Arc::new(Published::new(SystemTime::UNIX_EPOCH));
        let handle = BreakerHandle::new(Arc::clone(&published));
        assert_eq!(handle.snapshot().throttled_until, None);
        published.set_throttled_until(Some(Duration::from_secs(5)));
        assert_eq!(
            handle.snapshot().throttled_until,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(5))
        );
        published.set_throttled_until(None);
        assert_eq!(handle.snapshot().throttled_until, None);
    }
}
