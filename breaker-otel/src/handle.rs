//! What the adapter publishes: lock-free counters and state that any thread
//! may read on every request, and the read-only handle over them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use breaker_core::{CircuitState, REACHABLE_TRANSITIONS};

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
    dropped: AtomicU64,
    failed: AtomicU64,
    failed_error: AtomicU64,
    failed_timeout: AtomicU64,
    failed_panic: AtomicU64,
    probes: AtomicU64,
    ended: AtomicU64,
    transitions: [AtomicU64; REACHABLE_TRANSITIONS.len()],
}

/// Why spans counted as `failed` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Error,
    Timeout,
    Panic,
}

impl Published {
    pub(crate) fn new(origin_wall: SystemTime) -> Self {
        Self {
            state: AtomicU8::new(encode(CircuitState::Closed)),
            since_nanos: AtomicU64::new(0),
            origin_wall,
            consecutive_failures: AtomicU32::new(0),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failed_error: AtomicU64::new(0),
            failed_timeout: AtomicU64::new(0),
            failed_panic: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            transitions: Default::default(),
        }
    }

    pub(crate) fn set_state(&self, state: CircuitState, since: Duration) {
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.since_nanos.store(nanos, Relaxed);
        self.state.store(encode(state), Relaxed);
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

    pub(crate) fn count_exported(&self, spans: u64) {
        self.exported.fetch_add(spans, Relaxed);
    }

    pub(crate) fn count_dropped(&self, spans: u64) {
        self.dropped.fetch_add(spans, Relaxed);
    }

    pub(crate) fn count_failed(&self, spans: u64, kind: FailureKind) {
        self.failed.fetch_add(spans, Relaxed);
        let by_kind = match kind {
            FailureKind::Error => &self.failed_error,
            FailureKind::Timeout => &self.failed_timeout,
            FailureKind::Panic => &self.failed_panic,
        };
        by_kind.fetch_add(1, Relaxed);
    }

    pub(crate) fn spans(&self) -> SpanCounts {
        SpanCounts {
            exported: self.exported.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
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
        let since = p.origin_wall + Duration::from_nanos(p.since_nanos.load(Relaxed));
        let transitions = TransitionCounts {
            counts: std::array::from_fn(|i| p.transitions[i].load(Relaxed)),
        };
        BreakerSnapshot {
            state: self.state(),
            since,
            consecutive_failures: p.consecutive_failures.load(Relaxed),
            spans: p.spans(),
            failed_batches: FailedBatches {
                error: p.failed_error.load(Relaxed),
                timeout: p.failed_timeout.load(Relaxed),
                panic: p.failed_panic.load(Relaxed),
            },
            probes: p.probes.load(Relaxed),
            spans_ended: p.ended.load(Relaxed),
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
    /// Failed export batches by cause.
    pub failed_batches: FailedBatches,
    /// Probe exports attempted while the circuit was open.
    pub probes: u64,
    /// Sampled spans that ended in a provider built by
    /// [`TracingPipeline`](crate::TracingPipeline), counted before the batch
    /// queue; 0 for an exporter used on its own. After a clean shutdown,
    /// `spans_ended - spans.total()` were lost in the SDK's queue.
    pub spans_ended: u64,
    /// State changes by `(from, to)`.
    pub transitions: TransitionCounts,
}

/// Spans by what became of them. Every span handed to the exporter is in
/// exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpanCounts {
    /// Accepted by the backend.
    pub exported: u64,
    /// Dropped unsent because the circuit was open.
    pub dropped: u64,
    /// Sent but the export failed: an error, a timeout or a panic.
    pub failed: u64,
}

impl SpanCounts {
    /// All spans handed to the exporter.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.exported + self.dropped + self.failed
    }
}

/// Failed export batches by cause (spans are in [`SpanCounts::failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailedBatches {
    /// The inner exporter returned an error.
    pub error: u64,
    /// The inner exporter did not finish within `export_timeout`.
    pub timeout: u64,
    /// The inner exporter panicked.
    pub panic: u64,
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
}
