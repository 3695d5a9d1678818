//! The state machine itself: decisions in, outcomes in, transitions out.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;
use crate::state::{CircuitState, Transition, TransitionReason};

/// Transitions kept for the caller before the oldest is discarded. A caller
/// that drains after every call never comes near it; one that never drains
/// must not make the machine grow without bound.
const TRANSITION_QUEUE_LIMIT: usize = 64;

/// The jitter generator's seed unless the caller picks one
/// ([`CircuitBreaker::with_jitter_seed`]): fixed, so that a breaker built
/// the same way decides the same way, which is what tests want.
pub const DEFAULT_JITTER_SEED: u64 = 0x5EED_F00D_B4EA_4E45;

/// A pure circuit breaker: it reads no clock, does no I/O and calls nothing
/// back. The caller passes `now`, asks for a decision, runs the call, reports
/// the outcome, and drains the transitions.
///
/// # Calling protocol
///
/// 1. [`try_acquire(now)`](Self::try_acquire): `Ok(permit)` means make the
///    call; `Err(Rejected)` means drop it at once.
/// 2. After a permitted call, [`record(permit, outcome, now)`](Self::record)
///    exactly once. A permit that is never recorded is harmless in closed
///    state; a probe that is never recorded is abandoned after
///    `probe_timeout` and counted as a failure.
/// 3. Drain [`poll_transition()`](Self::poll_transition) until `None` after
///    any call, and act on the transitions (log, update gauges) *outside*
///    whatever lock protects the breaker.
/// 4. Optionally call [`handle_timeout(now)`](Self::handle_timeout) at
///    [`poll_timeout()`](Self::poll_timeout) so a lost probe is noticed even
///    when no call arrives.
///
/// Methods take `&mut self`: a multi-threaded adapter puts the breaker behind
/// one lock. The closed path (`try_acquire` + `record` of a success) touches a
/// few integers and never allocates, so the lock is held for nanoseconds.
///
/// ```
/// use std::time::{Duration, Instant};
/// use breaker_core::{BreakerConfig, CircuitBreaker, CircuitState, Outcome};
///
/// let start = Instant::now(); // the caller's clock, not the breaker's
/// let mut breaker = CircuitBreaker::new(BreakerConfig::default(), start);
///
/// for i in 0..3 {
///     let now = start + Duration::from_millis(i);
///     let permit = breaker.try_acquire(now).expect("closed: permitted");
///     breaker.record(permit, Outcome::Failure, now);
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
///
/// let opened = breaker.poll_transition().expect("one transition");
/// assert_eq!((opened.from, opened.to), (CircuitState::Closed, CircuitState::Open));
/// assert!(breaker.poll_transition().is_none());
///
/// // The first attempt after opening is a probe, once `min_probe_interval`
/// // (1 s) has passed; the next nine are not.
/// let later = start + Duration::from_secs(2);
/// let probe = breaker.try_acquire(later).expect("attempt 0 probes");
/// assert!(probe.is_probe());
/// breaker.record(probe, Outcome::Success, later);
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: CircuitState,
    mode: Mode,
    since: Instant,
    consecutive_failures: u32,
    /// Bumped on every transition: a call permitted before it reports a
    /// stale outcome, which is counted but moves nothing.
    generation: u64,
    /// Number of the next attempt while not closed.
    next_attempt: u64,
    /// When the next attempt probes whatever its number (`None`: never).
    probe_due_at: Option<Instant>,
    next_probe_id: u64,
    probes: Vec<InFlightProbe>,
    pacing: Pacing,
    /// Until when every call is rejected because the backend asked to hold
    /// off; kept past its end until a `try_acquire` notices.
    throttled_until: Option<Instant>,
    transitions: VecDeque<Transition>,
    stats: Counters,
}

/// The time floor between probes and its backoff.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    /// The un-jittered floor: `min_probe_interval`, doubled after each
    /// consecutive failed probe, never above `probe_after`.
    floor: Duration,
    /// The wait drawn from `floor` when it last changed.
    wait: Duration,
    /// Where `wait` counts from: the circuit opening, the last probe's start
    /// or the last probe's failure, whichever came last.
    from: Instant,
    /// splitmix64 state; the breaker's only source of randomness.
    rng: u64,
}

impl Pacing {
    fn new(config: &BreakerConfig, now: Instant, seed: u64) -> Self {
        let floor = config.min_probe_interval.min(config.probe_after);
        Self {
            floor,
            wait: floor,
            from: now,
            rng: seed,
        }
    }

    /// The circuit opened: the floor starts again at `min_probe_interval`,
    /// without jitter, so the first probe's time is predictable.
    fn restart(&mut self, config: &BreakerConfig, now: Instant) {
        self.floor = config.min_probe_interval.min(config.probe_after);
        self.wait = self.floor;
        self.from = now;
    }

    /// A probe failed: double the floor (capped) and draw the next wait.
    fn back_off(&mut self, config: &BreakerConfig, now: Instant) {
        self.floor = self.floor.saturating_mul(2).min(config.probe_after);
        self.wait = equal_jitter(self.floor, splitmix64(&mut self.rng));
        self.from = now;
    }

    fn permits(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.from) >= self.wait
    }
}

/// Finagle's "equal jitter": the upper half of `floor` fixed, the lower half
/// random, so a wait lies in `[floor / 2, floor]` and breakers that failed
/// together do not probe together.
fn equal_jitter(floor: Duration, random: u64) -> Duration {
    let half = floor / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let offset = match span.checked_add(1) {
        Some(n) => random % n,
        None => random,
    };
    (floor - half) + Duration::from_nanos(offset)
}

/// One step of splitmix64 (Steele, Lea and Flood): a few lines of `std`, good
/// enough for jitter, and deterministic for a given seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Who decides the state: the rules, or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The state machine's rules apply.
    Automatic,
    /// Held open by [`CircuitBreaker::force_open`]: everything is rejected,
    /// nothing probes.
    ForcedOpen,
    /// Held closed by [`CircuitBreaker::force_closed`]: everything is
    /// permitted and failures never open the circuit.
    ForcedClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlightProbe {
    id: u64,
    started: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    permitted: u64,
    rejected: u64,
    successes: u64,
    failures: u64,
    refusals: u64,
    throttles: u64,
    probes: u64,
    probe_timeouts: u64,
    late_reports: u64,
    transitions_discarded: u64,
}

/// Leave to make one call. Record its outcome with
/// [`CircuitBreaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a permitted call must be made and its outcome recorded"]
pub struct Permit {
    kind: PermitKind,
    generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    Call,
    Probe { id: u64 },
}

impl Permit {
    /// Whether this call is a probe of a backend believed down.
    #[must_use]
    pub fn is_probe(&self) -> bool {
        matches!(self.kind, PermitKind::Probe { .. })
    }
}

/// The call must not be made: the circuit is open (or a probe is already in
/// flight), or the backend asked to hold off. Drop the work; do not queue or
/// retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// The state that rejected the call. A throttle rejects in any state,
    /// closed included.
    pub state: CircuitState,
    /// `Some(end)` when the call was rejected because the backend asked to
    /// hold off ([`Outcome::Throttled`]) until `end`; `None` when the
    /// circuit's rules rejected it.
    pub throttled_until: Option<Instant>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit {}: call rejected", self.state)?;
        if self.throttled_until.is_some() {
            f.write_str(", the backend asked to hold off")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejected {}

/// What happened to a permitted call, in the classes that matter to the
/// breaker: whether the backend is reachable, and whether it asked to wait.
/// The adapter maps its protocol's answers onto these; the core knows none.
///
/// | outcome | closed: failure streak | a probe's outcome | counted in |
/// |---|---|---|---|
/// | `Success` | reset to 0 | closes | `successes` |
/// | `Failure` | +1, opens at `failure_threshold` | reopens, floor doubles | `failures` |
/// | `Refused` | unchanged | closes | `refusals` |
/// | `Throttled(d)` | unchanged | reopens, floor unchanged | `throttles` |
///
/// `Throttled(d)` also rejects every call, probes included, in every state,
/// until `d` (at most `max_throttle`) after it was recorded.
///
/// ```
/// use std::time::{Duration, Instant};
/// use breaker_core::{BreakerConfig, CircuitBreaker, CircuitState, Outcome};
///
/// let start = Instant::now();
/// let mut breaker = CircuitBreaker::new(BreakerConfig::default(), start);
///
/// // Refusals neither open the circuit nor hide the failures around them.
/// for outcome in [Outcome::Failure, Outcome::Refused, Outcome::Failure, Outcome::Refused] {
///     let permit = breaker.try_acquire(start).expect("closed");
///     breaker.record(permit, outcome, start);
/// }
/// assert_eq!(breaker.consecutive_failures(), 2);
/// assert_eq!(breaker.state(), CircuitState::Closed);
///
/// // "Come back in 10 s": everything is rejected until then, without opening.
/// let permit = breaker.try_acquire(start).expect("closed");
/// breaker.record(permit, Outcome::Throttled(Duration::from_secs(10)), start);
/// let rejected = breaker.try_acquire(start + Duration::from_secs(9)).unwrap_err();
/// assert_eq!(rejected.state, CircuitState::Closed);
/// assert_eq!(rejected.throttled_until, Some(start + Duration::from_secs(10)));
/// assert!(breaker.try_acquire(start + Duration::from_secs(10)).is_ok());
/// assert_eq!(breaker.consecutive_failures(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The backend took it.
    Success,
    /// The backend failed, timed out or the call could not be made: the
    /// backend may be down. It counts toward opening the circuit and fails a
    /// probe.
    Failure,
    /// The backend is up but refused this call's data (it answered, and
    /// sending the same data again would be refused again). It does not
    /// count toward opening.
    ///
    /// In closed state it leaves the consecutive-failure count as it is:
    /// it neither adds to it nor resets it. Resetting would be unsafe: a
    /// backend that refuses every other call while the others time out
    /// would then never open the circuit, and every second call would wait
    /// for its timeout. As a probe's outcome it closes the circuit, as a
    /// success does: the backend answered, which is all a probe asks.
    Refused,
    /// The backend is up and asked the caller to hold off for at least this
    /// long (a retry delay, `Retry-After`). From the moment it is recorded
    /// every call is rejected, probes included and in every state (a closed
    /// circuit stays closed), for this long but at most
    /// [`max_throttle`](crate::BreakerConfig::max_throttle); a later end
    /// already in effect is kept. When it ends the circuit carries on from
    /// its state, by its usual rules.
    ///
    /// It is no failure: in closed state it leaves the consecutive-failure
    /// count as it is; as a probe's outcome it reopens the circuit without
    /// backing off the probe floor (the throttle is the wait), and the floor
    /// and `probe_after` count from this report. A throttle always applies,
    /// even from a permit granted before the last transition or from a probe
    /// already abandoned: the backend's request concerns the backend now.
    /// Only a circuit forced closed ignores it (it permits every call), and
    /// [`reset`](CircuitBreaker::reset) and
    /// [`force_closed`](CircuitBreaker::force_closed) lift it.
    Throttled(Duration),
}

/// A copy of the breaker's counters and state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Current state.
    pub state: CircuitState,
    /// Who holds the state.
    pub mode: Mode,
    /// When the current state was entered (creation time before any change).
    pub since: Instant,
    /// Consecutive failures counted in closed state.
    pub consecutive_failures: u32,
    /// Calls permitted (probes included).
    pub permitted: u64,
    /// Calls rejected.
    pub rejected: u64,
    /// Successes recorded.
    pub successes: u64,
    /// Failures recorded, abandoned probes included.
    pub failures: u64,
    /// Refusals recorded ([`Outcome::Refused`]).
    pub refusals: u64,
    /// Throttles recorded ([`Outcome::Throttled`]), whether or not they
    /// extended the hold.
    pub throttles: u64,
    /// Probes permitted.
    pub probes: u64,
    /// Probes abandoned after `probe_timeout` (also counted in `failures`).
    pub probe_timeouts: u64,
    /// Outcomes of probes that had already been abandoned; counted nowhere else.
    pub late_reports: u64,
    /// Probes outstanding now.
    pub probes_in_flight: u32,
    /// Transitions discarded because the caller did not drain them.
    pub transitions_discarded: u64,
    /// As [`CircuitBreaker::throttled_until`].
    pub throttled_until: Option<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker. `now` is the caller's current time.
    #[must_use]
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            state: CircuitState::Closed,
            mode: Mode::Automatic,
            since: now,
            consecutive_failures: 0,
            generation: 0,
            next_attempt: 0,
            probe_due_at: now.checked_add(config.probe_after),
            next_probe_id: 0,
            probes: Vec::with_capacity(config.max_probes_in_flight.get() as usize),
            pacing: Pacing::new(&config, now, DEFAULT_JITTER_SEED),
            throttled_until: None,
            transitions: VecDeque::with_capacity(4),
            stats: Counters::default(),
        }
    }

    /// The same breaker with its jitter drawn from `seed` instead of
    /// [`DEFAULT_JITTER_SEED`]. Adapters that run many breakers against one
    /// backend seed each differently (from the clock, say), so that their
    /// probes spread out; tests keep the default and stay deterministic.
    #[must_use]
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.pacing.rng = seed;
        self
    }

    /// The settings this breaker runs with.
    #[must_use]
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Who holds the state.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// When the current state was entered.
    #[must_use]
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Consecutive failures counted in closed state.
    #[must_use]
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// When the backend's latest request to hold off
    /// ([`Outcome::Throttled`]) ends: calls are rejected while `now` is
    /// before it. The breaker learns the time only from calls, so this may
    /// lie in the past (a `try_acquire` after it returns it to `None`):
    /// compare it with your clock.
    #[must_use]
    pub fn throttled_until(&self) -> Option<Instant> {
        self.throttled_until
    }

    /// Asks whether a call may be made now.
    ///
    /// In closed state every call is permitted. Otherwise the call is attempt
    /// number `k` (from 0 when the circuit opened, continuing across failed
    /// probes); it is a probe when `k % probe_every == 0` or when
    /// `probe_after` has passed since the last probe started and since a
    /// probe last failed, and fewer than `max_probes_in_flight` probes are
    /// outstanding, and the probe floor has passed: `min_probe_interval`
    /// after opening, then after each failed probe a wait in
    /// `[floor / 2, floor]` with the floor doubled (at most `probe_after`),
    /// counted from that failure (or from the last probe's start, if later).
    /// Everything else is rejected, and still counted as an attempt.
    ///
    /// While the backend's request to hold off lasts ([`Outcome::Throttled`])
    /// every call is rejected before these rules are consulted: it is no
    /// attempt, and its [`Rejected::throttled_until`] says until when.
    #[inline]
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        if self.throttled_until.is_some() {
            self.throttle_gate(now)?;
        }
        if self.state == CircuitState::Closed {
            self.stats.permitted += 1;
            return Ok(Permit {
                kind: PermitKind::Call,
                generation: self.generation,
            });
        }
        self.try_acquire_not_closed(now)
    }

    fn try_acquire_not_closed(&mut self, now: Instant) -> Result<Permit, Rejected> {
        if !self.probes.is_empty() {
            self.expire_probes(now);
        }
        if self.mode == Mode::ForcedOpen {
            return Err(self.reject());
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let due = attempt.is_multiple_of(u64::from(self.config.probe_every.get()))
            || self.probe_due_at.is_some_and(|due| now >= due);
        let room = self.probes.len() < self.config.max_probes_in_flight.get() as usize;
        if !(due && room && self.pacing.permits(now)) {
            return Err(self.reject());
        }
        Ok(self.start_probe(now))
    }

    /// Starts a probe that the rules permitted: `try_acquire`'s, or
    /// `try_probe`'s without an attempt number.
    fn start_probe(&mut self, now: Instant) -> Permit {
        let id = self.next_probe_id;
        self.next_probe_id += 1;
        self.probes.push(InFlightProbe { id, started: now });
        self.probe_due_at = now.checked_add(self.config.probe_after);
        // With several probes allowed in flight, they still start at most
        // one per wait.
        self.pacing.from = now;
        self.stats.permitted += 1;
        self.stats.probes += 1;
        if self.state == CircuitState::Open {
            self.transition(CircuitState::HalfOpen, TransitionReason::ProbeStarted, now);
        }
        Permit {
            kind: PermitKind::Probe { id },
            generation: self.generation,
        }
    }

    /// Rejects the call while a throttle holds at `now` (noticing lost
    /// probes first, as `try_acquire` promises); forgets one that has ended.
    fn throttle_gate(&mut self, now: Instant) -> Result<(), Rejected> {
        if self.throttled(now) {
            if !self.probes.is_empty() {
                self.expire_probes(now);
            }
            return Err(self.reject());
        }
        self.throttled_until = None;
        Ok(())
    }

    /// Whether the backend's request to hold off still holds at `now`.
    fn throttled(&self, now: Instant) -> bool {
        self.throttled_until.is_some_and(|until| now < until)
    }

    /// The backend asked to hold off for `asked`: every call is rejected
    /// until then, capped by `max_throttle`; a later end already set stays.
    fn hold_off(&mut self, asked: Duration, now: Instant) {
        if self.mode == Mode::ForcedClosed {
            // The operator disabled the breaker: every call is permitted.
            return;
        }
        let hold = asked.min(self.config.max_throttle);
        // An end that does not fit in an `Instant` cannot be kept, so that
        // hold is ignored; only a `max_throttle` of centuries lets one through.
        if let Some(until) = now.checked_add(hold)
            && hold > Duration::ZERO
            && self.throttled_until.is_none_or(|current| current < until)
        {
            self.throttled_until = Some(until);
        }
    }

    /// Reports the outcome of a permitted call. See [`Outcome`] for what
    /// each one does.
    #[inline]
    pub fn record(&mut self, permit: Permit, outcome: Outcome, now: Instant) {
        if let Outcome::Throttled(asked) = outcome {
            // Whatever the permit: the request concerns the backend now.
            self.hold_off(asked, now);
        }
        if permit.kind == PermitKind::Call
            && self.state == CircuitState::Closed
            && permit.generation == self.generation
        {
            self.count(outcome);
            match outcome {
                Outcome::Success => self.consecutive_failures = 0,
                _ => self.record_closed(outcome, now),
            }
            return;
        }
        self.record_other(permit, outcome, now);
    }

    fn record_other(&mut self, permit: Permit, outcome: Outcome, now: Instant) {
        match permit.kind {
            PermitKind::Call => {
                self.count(outcome);
                if self.state != CircuitState::Closed {
                    // A call from before the circuit opened moves nothing,
                    // but it is a chance to notice a lost probe, as
                    // `handle_timeout` promises.
                    self.expire_probes(now);
                } else if permit.generation == self.generation {
                    self.record_closed(outcome, now);
                }
            }
            PermitKind::Probe { id } => {
                self.expire_probes(now);
                let Some(index) = self.probes.iter().position(|p| p.id == id) else {
                    // Abandoned already (timed out, or the circuit was reset):
                    // its failure was counted then.
                    self.stats.late_reports += 1;
                    return;
                };
                self.probes.swap_remove(index);
                self.count(outcome);
                if outcome == Outcome::Failure {
                    self.probe_failed_at(now);
                }
                if let Outcome::Throttled(_) = outcome {
                    // The probe ended without failing: `probe_after` and the
                    // floor count from now, and the floor does not double.
                    self.probe_due_at = now.checked_add(self.config.probe_after);
                    self.pacing.from = now;
                }
                match outcome {
                    Outcome::Success => self.close(TransitionReason::ProbeSucceeded, now),
                    // The backend answered: it is reachable, which is what a
                    // probe asks. Refusals then leave the closed count alone.
                    Outcome::Refused => self.close(TransitionReason::ProbeRefused, now),
                    Outcome::Failure if self.state == CircuitState::HalfOpen => {
                        self.transition(CircuitState::Open, TransitionReason::ProbeFailed, now);
                    }
                    Outcome::Throttled(_) if self.state == CircuitState::HalfOpen => {
                        self.transition(CircuitState::Open, TransitionReason::ProbeThrottled, now);
                    }
                    // Another probe already failed and reopened the circuit.
                    Outcome::Failure | Outcome::Throttled(_) => {}
                }
            }
        }
    }

    /// Abandons probes older than `probe_timeout`, counting each as a failure.
    /// Also done by `try_acquire` and `record`; call it at
    /// [`poll_timeout`](Self::poll_timeout) to notice a lost probe without traffic.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_probes(now);
    }

    /// When the oldest outstanding probe will be abandoned, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probes
            .iter()
            .map(|p| p.started + self.config.probe_timeout)
            .min()
    }

    /// Asks whether a probe with no call behind it may start now: the
    /// adapter's way to find out that the backend is back when no traffic
    /// comes to ask for it (an export of no spans, say).
    ///
    /// Permitted when the circuit is automatic and not closed, fewer than
    /// `max_probes_in_flight` probes are outstanding and the probe floor has
    /// passed (see [`try_acquire`](Self::try_acquire)); the attempt number's
    /// rules (`probe_every`, `probe_after`) do not apply, and nothing is
    /// numbered: attempt `k` is still the `k`-th real call since opening.
    /// The permit is a probe like any other: record its outcome with
    /// [`record`](Self::record), and it counts in `permitted` and `probes`.
    /// A refusal is not a call, so it is not counted in `rejected`.
    ///
    /// [`next_probe_at`](Self::next_probe_at) says when to ask.
    pub fn try_probe(&mut self, now: Instant) -> Result<Permit, Rejected> {
        if !self.probes.is_empty() {
            self.expire_probes(now);
        }
        if self.throttled(now) {
            // The backend asked to hold off: no probe either.
            return Err(Rejected {
                state: self.state,
                throttled_until: self.throttled_until,
            });
        }
        let room = self.probes.len() < self.config.max_probes_in_flight.get() as usize;
        if self.mode != Mode::Automatic
            || self.state == CircuitState::Closed
            || !room
            || !self.pacing.permits(now)
        {
            return Err(Rejected {
                state: self.state,
                throttled_until: None,
            });
        }
        Ok(self.start_probe(now))
    }

    /// When [`try_probe`](Self::try_probe) will next permit a probe: `None`
    /// while closed or held by an operator, and while the probes in flight
    /// fill `max_probes_in_flight` (their end, or
    /// [`poll_timeout`](Self::poll_timeout), changes the answer). The time
    /// may be in the past: a probe is due now. Never before a throttle
    /// ([`Outcome::Throttled`]) ends.
    #[must_use]
    pub fn next_probe_at(&self) -> Option<Instant> {
        let room = self.probes.len() < self.config.max_probes_in_flight.get() as usize;
        if self.mode != Mode::Automatic || self.state == CircuitState::Closed || !room {
            return None;
        }
        let paced = self.pacing.from.checked_add(self.pacing.wait)?;
        Some(self.throttled_until.map_or(paced, |until| paced.max(until)))
    }

    /// The next unreported transition, oldest first.
    #[must_use = "transitions are meant to be acted on (logged, counted)"]
    #[inline]
    pub fn poll_transition(&mut self) -> Option<Transition> {
        self.transitions.pop_front()
    }

    /// Holds the circuit open: every call is rejected and nothing probes
    /// until [`reset`](Self::reset) or [`force_closed`](Self::force_closed).
    pub fn force_open(&mut self, now: Instant) {
        self.mode = Mode::ForcedOpen;
        self.probes.clear();
        self.next_attempt = 0;
        if self.state != CircuitState::Open {
            self.transition(CircuitState::Open, TransitionReason::ForcedOpen, now);
        }
    }

    /// Holds the circuit closed (the breaker is disabled): every call is
    /// permitted and failures never open it.
    pub fn force_closed(&mut self, now: Instant) {
        self.mode = Mode::ForcedClosed;
        self.throttled_until = None;
        self.close(TransitionReason::ForcedClosed, now);
    }

    /// Back to automatic mode, closed, with no failures counted and no
    /// throttle held. Statistics are kept: they are running totals.
    pub fn reset(&mut self, now: Instant) {
        self.mode = Mode::Automatic;
        self.throttled_until = None;
        self.close(TransitionReason::Reset, now);
    }

    /// The counters and state now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let c = &self.stats;
        Stats {
            state: self.state,
            mode: self.mode,
            since: self.since,
            consecutive_failures: self.consecutive_failures,
            permitted: c.permitted,
            rejected: c.rejected,
            successes: c.successes,
            failures: c.failures,
            refusals: c.refusals,
            throttles: c.throttles,
            probes: c.probes,
            probe_timeouts: c.probe_timeouts,
            late_reports: c.late_reports,
            probes_in_flight: u32::try_from(self.probes.len()).unwrap_or(u32::MAX),
            transitions_discarded: c.transitions_discarded,
            throttled_until: self.throttled_until,
        }
    }

    fn record_closed(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Success => self.consecutive_failures = 0,
            Outcome::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.mode == Mode::Automatic
                    && self.consecutive_failures >= self.config.failure_threshold.get()
                {
                    self.next_attempt = 0;
                    self.probe_due_at = now.checked_add(self.config.probe_after);
                    self.pacing.restart(&self.config, now);
                    self.transition(CircuitState::Open, TransitionReason::FailureThreshold, now);
                }
            }
            // Neither resets the streak: see `Outcome::Refused`. A throttle's
            // hold was applied by `record`.
            Outcome::Refused | Outcome::Throttled(_) => {}
        }
    }

    fn close(&mut self, reason: TransitionReason, now: Instant) {
        self.consecutive_failures = 0;
        self.next_attempt = 0;
        self.probes.clear();
        if self.state != CircuitState::Closed {
            self.transition(CircuitState::Closed, reason, now);
        }
    }

    fn expire_probes(&mut self, now: Instant) {
        let timeout = self.config.probe_timeout;
        let before = self.probes.len();
        self.probes
            .retain(|p| now.saturating_duration_since(p.started) < timeout);
        let expired = (before - self.probes.len()) as u64;
        if expired == 0 {
            return;
        }
        self.stats.failures += expired;
        self.stats.probe_timeouts += expired;
        self.probe_failed_at(now);
        if self.state == CircuitState::HalfOpen {
            self.transition(CircuitState::Open, TransitionReason::ProbeTimedOut, now);
        }
    }

    /// `probe_after` counts from the end of the last probe, not its start:
    /// a probe that hung for longer than `probe_after` must not make every
    /// following attempt a probe.
    /// The floor backs off from the same moment.
    fn probe_failed_at(&mut self, now: Instant) {
        self.probe_due_at = now.checked_add(self.config.probe_after);
        self.pacing.back_off(&self.config, now);
    }

    fn reject(&mut self) -> Rejected {
        self.stats.rejected += 1;
        Rejected {
            state: self.state,
            // `try_acquire` forgets an ended throttle before any rule rejects.
            throttled_until: self.throttled_until,
        }
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.stats.successes += 1,
            Outcome::Failure => self.stats.failures += 1,
            Outcome::Refused => self.stats.refusals += 1,
            Outcome::Throttled(_) => self.stats.throttles += 1,
        }
    }

    fn transition(&mut self, to: CircuitState, reason: TransitionReason, now: Instant) {
        let from = self.state;
        debug_assert_ne!(from, to, "a transition changes the state");
        self.state = to;
        self.since = now;
        self.generation += 1;
        if self.transitions.len() == TRANSITION_QUEUE_LIMIT {
            self.transitions.pop_front();
            self.stats.transitions_discarded += 1;
        }
        self.transitions.push_back(Transition {
            from,
            to,
            at: now,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_jitter_stays_within_half_the_floor_and_the_floor() {
        let mut rng = DEFAULT_JITTER_SEED;
        let floors = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(3),
            Duration::from_secs(1),
            Duration::from_secs(30),
            Duration::MAX,
        ];
        for floor in floors {
            let mut draws = [0, u64::MAX].to_vec();
            draws.extend((0..1_000).map(|_| splitmix64(&mut rng)));
            for random in draws {
                let wait = equal_jitter(floor, random);
                assert!(wait >= floor / 2 && wait <= floor, "{floor:?}: {wait:?}");
            }
        }
    }
}
