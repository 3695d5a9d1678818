//! The three circuit states and what a transition between them says.

use std::fmt;
use std::time::Instant;

/// Where the circuit is.
///
/// ```text
///                 failure_threshold consecutive failures
///     +--------+ -------------------------------------> +------+
///     | Closed |            (floor := min_probe_interval) | Open | <--+
///     +--------+ <--+                                   +------+    |
///         ^         | probe succeeded or refused           |        |
///         |         |                (k % probe_every == 0 |        |
///         |         |                 or probe_after elapsed)       |
///         |         |                 and the floor elapsed|        |
///         |         |                (try_probe: the floor |        |
///         |         |                 alone)               |        |
///         |    +----------+  <-----------------------------+        |
///         |    | HalfOpen |                                         |
///         |    +----------+ ----------------------------------------+
///         |                   probe failed or timed out
///         |                   (floor doubles, at most probe_after;
///         |                    wait drawn in [floor / 2, floor]),
///         |                   or throttled (floor unchanged)
///         |
///    reset / force_closed (from any state); force_open goes to Open
/// ```
///
/// A throttle ([`Outcome::Throttled`](crate::Outcome::Throttled)) is not a
/// state: it rejects every call for a while in whatever state the circuit is
/// in, and the circuit carries on from that state when it ends. It shows in
/// [`Stats::throttled_until`](crate::Stats::throttled_until) and
/// [`Rejected::throttled_until`](crate::Rejected::throttled_until).
///
/// The floor is a time: no probe starts sooner than the current wait after
/// the circuit opened or the last probe started or failed. An attempt that
/// comes earlier is rejected, whatever its number `k`, and still counted.
/// A probe that no call asked for
/// ([`try_probe`](crate::CircuitBreaker::try_probe), for a caller with no
/// traffic) needs the floor alone, and takes no attempt number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CircuitState {
    /// Every call is permitted; failures are counted.
    Closed,
    /// A probe is in flight; other calls are rejected.
    HalfOpen,
    /// Calls are rejected, except the periodic probe.
    Open,
}

impl CircuitState {
    /// Every state: closed, half-open, open.
    pub const ALL: [CircuitState; 3] = [Self::Closed, Self::HalfOpen, Self::Open];

    /// The contract's name: `closed`, `half_open` or `open`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the circuit changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// `failure_threshold` consecutive failures in closed state.
    FailureThreshold,
    /// An attempt in open state was chosen as a probe.
    ProbeStarted,
    /// A probe succeeded.
    ProbeSucceeded,
    /// A probe was refused ([`Outcome::Refused`](crate::Outcome::Refused)):
    /// the backend answered, so the circuit closes.
    ProbeRefused,
    /// A probe failed.
    ProbeFailed,
    /// A probe was throttled ([`Outcome::Throttled`](crate::Outcome::Throttled)):
    /// the circuit opens again, without backing off the probe floor.
    ProbeThrottled,
    /// A probe did not report back within `probe_timeout`.
    ProbeTimedOut,
    /// [`CircuitBreaker::force_open`](crate::CircuitBreaker::force_open).
    ForcedOpen,
    /// [`CircuitBreaker::force_closed`](crate::CircuitBreaker::force_closed).
    ForcedClosed,
    /// [`CircuitBreaker::reset`](crate::CircuitBreaker::reset).
    Reset,
}

impl TransitionReason {
    /// A short machine-friendly name, e.g. `probe_timed_out`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailureThreshold => "failure_threshold",
            Self::ProbeStarted => "probe_started",
            Self::ProbeSucceeded => "probe_succeeded",
            Self::ProbeRefused => "probe_refused",
            Self::ProbeFailed => "probe_failed",
            Self::ProbeThrottled => "probe_throttled",
            Self::ProbeTimedOut => "probe_timed_out",
            Self::ForcedOpen => "forced_open",
            Self::ForcedClosed => "forced_closed",
            Self::Reset => "reset",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change, as drained from
/// [`CircuitBreaker::poll_transition`](crate::CircuitBreaker::poll_transition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
    /// The `now` of the call that caused it.
    pub at: Instant,
    /// What caused it.
    pub reason: TransitionReason,
}

/// The pairs `(from, to)` that a transition can have, for callers that keep a
/// counter per pair and want every counter to exist before the first change.
pub const REACHABLE_TRANSITIONS: [(CircuitState, CircuitState); 5] = [
    (CircuitState::Closed, CircuitState::Open),
    (CircuitState::Open, CircuitState::HalfOpen),
    (CircuitState::HalfOpen, CircuitState::Closed),
    (CircuitState::HalfOpen, CircuitState::Open),
    (CircuitState::Open, CircuitState::Closed),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_contract() {
        let seen: Vec<_> = CircuitState::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(seen, ["closed", "half_open", "open"]);
    }

    #[test]
    fn reasons_have_distinct_names() {
        let all = [
            TransitionReason::FailureThreshold,
            TransitionReason::ProbeStarted,
            TransitionReason::ProbeSucceeded,
            TransitionReason::ProbeRefused,
            TransitionReason::ProbeFailed,
            TransitionReason::ProbeThrottled,
            TransitionReason::ProbeTimedOut,
            TransitionReason::ForcedOpen,
            TransitionReason::ForcedClosed,
            TransitionReason::Reset,
        ];
        let mut names: Vec<_> = all.iter().map(ToString::to_string).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
