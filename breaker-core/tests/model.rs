//! Model-based test: random sequences of calls, probes without a call,
//! outcomes, clock jumps and manual controls are run against both the breaker and a small reference
//! model written from the contract (`docs/contract.md` section 3 and the rustdoc),
//! and every decision, state, counter and drained transition must agree.
//!
//! The model keeps its own bookkeeping in plain terms (which permits are
//! held, which probes still count, whether a call was made in the closed
//! spell that is still going on); it does not mirror the breaker's fields.

use std::time::{Duration, Instant};

use breaker_core::{
    BreakerConfig, CircuitBreaker, CircuitState, Mode, Outcome, Permit, REACHABLE_TRANSITIONS,
    Stats, TransitionReason,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

use CircuitState::{Closed, HalfOpen, Open};
use std::num::NonZeroU32;

/// A count setting; test constants are never zero.
fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("count settings are at least 1")
}

/// Settings in virtual milliseconds, small enough that thresholds, probe
/// periods and timeouts are all crossed within a hundred steps.
#[derive(Debug, Clone, Copy)]
struct Settings {
    failure_threshold: u32,
    probe_every: u32,
    probe_after_ms: u64,
    min_probe_interval_ms: u64,
    max_probes_in_flight: u32,
    probe_timeout_ms: u64,
    /// Zero ignores throttles.
    max_throttle_ms: u64,
    jitter_seed: u64,
    /// Whether the operator may force or reset the circuit in this case; a
    /// forced state hides the rules, so half the cases run without.
    manual_controls: bool,
}

impl Settings {
    fn config(self) -> BreakerConfig {
        BreakerConfig::DEFAULT
            .failure_threshold(nz(self.failure_threshold))
            .probe_every(nz(self.probe_every))
            .probe_after(Duration::from_millis(self.probe_after_ms))
            .min_probe_interval(Duration::from_millis(self.min_probe_interval_ms))
            .max_probes_in_flight(nz(self.max_probes_in_flight))
            .probe_timeout(Duration::from_millis(self.probe_timeout_ms))
            .max_throttle(Duration::from_millis(self.max_throttle_ms))
    }
}

#[derive(Debug, Clone)]
enum Step {
    Acquire,
    /// Asks for a probe with no call behind it (`try_probe`), as an adapter
    /// does when a probe is due and no traffic comes.
    IdleProbe,
    /// Reports the outcome of a permit still held.
    Record(Which, Outcome),
    Advance(u64),
    HandleTimeout,
    ForceOpen,
    ForceClosed,
    Reset,
}

/// Which held permit a report is for.
#[derive(Debug, Clone)]
enum Which {
    /// The last one granted: usually a probe that is answered at once.
    Newest,
    /// Any of them, in the order granted.
    Any(Index),
}

impl Which {
    fn position(&self, held: usize) -> usize {
        match self {
            Self::Newest => held - 1,
            Self::Any(index) => index.index(held),
        }
    }
}

/// What the breaker answered to one `try_acquire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Call,
    Probe,
    /// The state that rejected, and the end of the throttle (in ms) if a
    /// throttle rejected it.
    Rejected(CircuitState, Option<u64>),
}

/// A permit the caller holds and has not reported yet.
#[derive(Debug, Clone, Copy)]
enum Held {
    /// `closed_spell` is false once the circuit has left closed after the
    /// call was permitted: its outcome then describes an older backend and
    /// must not move the failure count.
    Call { closed_spell: bool },
    /// `counts` is false once the probe has been given up (timed out, or the
    /// circuit was closed or forced open under it).
    Probe { started_ms: u64, counts: bool },
}

/// The floor as the contract states it: `min_probe_interval` from opening;
/// after each failed probe the floor doubles, at most `probe_after`, and the
/// wait is drawn in `[floor / 2, floor]` (equal jitter, splitmix64 from the
/// seed); the wait counts from the failure, or from a later probe start.
#[derive(Debug, Clone, Copy)]
struct Floor {
    floor: Duration,
    wait: Duration,
    from_ms: u64,
    rng: u64,
}

impl Floor {
    fn start(settings: &Settings) -> Duration {
        Duration::from_millis(settings.min_probe_interval_ms.min(settings.probe_after_ms))
    }

    fn passed(&self, now_ms: u64) -> bool {
        Duration::from_millis(now_ms - self.from_ms) >= self.wait
    }

    fn failed(&mut self, settings: &Settings, now_ms: u64) {
        self.floor = (self.floor * 2).min(Duration::from_millis(settings.probe_after_ms));
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let random = z ^ (z >> 31);
        let half = self.floor / 2;
        let half_nanos = u64::try_from(half.as_nanos()).expect("test floors are milliseconds");
        self.wait = self.floor - half + Duration::from_nanos(random % (half_nanos + 1));
        assert!(self.wait >= self.floor / 2 && self.wait <= self.floor);
        self.from_ms = now_ms;
    }
}

/// Running totals, named as in [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    permitted: u64,
    rejected: u64,
    successes: u64,
    failures: u64,
    refusals: u64,
    throttles: u64,
    probes: u64,
    probe_timeouts: u64,
    late_reports: u64,
}

#[derive(Debug, Clone)]
struct Model {
    settings: Settings,
    now_ms: u64,
    mode: Mode,
    state: CircuitState,
    since_ms: u64,
    consecutive_failures: u32,
    /// Number the next call gets while the circuit is not closed.
    attempt: u64,
    /// Time of the last probe, or of opening if none since.
    last_probe_ms: u64,
    /// The time floor between probes.
    floor: Floor,
    /// "Hold off until": the latest end the backend asked for, capped.
    hold_off_until_ms: Option<u64>,
    held: Vec<Held>,
    totals: Totals,
    /// Outputs of the last step.
    decision: Option<Decision>,
    changes: Vec<(CircuitState, CircuitState, TransitionReason, u64)>,
}

impl Model {
    fn new(settings: Settings) -> Self {
        Self {
            settings,
            now_ms: 0,
            mode: Mode::Automatic,
            state: Closed,
            since_ms: 0,
            consecutive_failures: 0,
            attempt: 0,
            last_probe_ms: 0,
            floor: Floor {
                floor: Floor::start(&settings),
                wait: Floor::start(&settings),
                from_ms: 0,
                rng: settings.jitter_seed,
            },
            hold_off_until_ms: None,
            held: Vec::new(),
            totals: Totals::default(),
            decision: None,
            changes: Vec::new(),
        }
    }

    fn live_probes(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.iter().filter_map(|h| match *h {
            Held::Probe {
                started_ms,
                counts: true,
            } => Some(started_ms),
            _ => None,
        })
    }

    fn probes_in_flight(&self) -> u32 {
        u32::try_from(self.live_probes().count()).unwrap_or(u32::MAX)
    }

    fn enter(&mut self, to: CircuitState, reason: TransitionReason) {
        if self.state == to {
            return;
        }
        if self.state == Closed {
            for h in &mut self.held {
                if let Held::Call { closed_spell } = h {
                    *closed_spell = false;
                }
            }
        }
        if to == Open && self.state == Closed {
            // "numbered from 0 when the circuit opened"; `probe_after`
            // counts from opening until the first probe.
            self.attempt = 0;
            self.last_probe_ms = self.now_ms;
            let floor = Floor::start(&self.settings);
            self.floor.floor = floor;
            self.floor.wait = floor;
            self.floor.from_ms = self.now_ms;
        }
        self.changes.push((self.state, to, reason, self.now_ms));
        self.state = to;
        self.since_ms = self.now_ms;
    }

    fn give_up_probes(&mut self) {
        for h in &mut self.held {
            if let Held::Probe { counts, .. } = h {
                *counts = false;
            }
        }
    }

    fn close(&mut self, reason: TransitionReason) {
        self.consecutive_failures = 0;
        self.give_up_probes();
        self.enter(Closed, reason);
    }

    /// A probe silent for `probe_timeout` is a failed probe.
    fn time_out_probes(&mut self) {
        let (now, timeout) = (self.now_ms, self.settings.probe_timeout_ms);
        let mut timed_out = 0;
        for h in &mut self.held {
            if let Held::Probe {
                started_ms,
                counts: counts @ true,
            } = h
                && now - *started_ms >= timeout
            {
                *counts = false;
                timed_out += 1;
            }
        }
        self.totals.failures += timed_out;
        self.totals.probe_timeouts += timed_out;
        if timed_out > 0 {
            // `probe_after` and the floor count from the end of the last probe.
            self.last_probe_ms = now;
            self.floor.failed(&self.settings, now);
        }
        if timed_out > 0 && self.state == HalfOpen {
            self.enter(Open, TransitionReason::ProbeTimedOut);
        }
    }

    /// The end of the throttle if one holds now.
    fn throttle(&self) -> Option<u64> {
        self.hold_off_until_ms.filter(|&end| self.now_ms < end)
    }

    /// "Every call is rejected until `now + d`, `d` capped by
    /// `max_throttle`", from whatever permit; a circuit forced closed
    /// permits everything and ignores it.
    fn asked_to_hold_off(&mut self, d: Duration) {
        if self.mode == Mode::ForcedClosed {
            return;
        }
        let hold_ms = u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .min(self.settings.max_throttle_ms);
        let end = self.now_ms + hold_ms;
        if self.throttle().is_none_or(|current| current < end) && hold_ms > 0 {
            self.hold_off_until_ms = Some(end);
        }
    }

    fn acquire(&mut self) -> Decision {
        self.time_out_probes();
        let decision = if let Some(end) = self.throttle() {
            // Before any rule: not an attempt.
            Decision::Rejected(self.state, Some(end))
        } else if self.state == Closed {
            self.held.push(Held::Call { closed_spell: true });
            Decision::Call
        } else if self.mode == Mode::ForcedOpen {
            Decision::Rejected(self.state, None)
        } else {
            let k = self.attempt;
            self.attempt += 1;
            let due = k.is_multiple_of(u64::from(self.settings.probe_every))
                || self.now_ms - self.last_probe_ms >= self.settings.probe_after_ms;
            if due
                && self.probes_in_flight() < self.settings.max_probes_in_flight
                && self.floor.passed(self.now_ms)
            {
                self.held.push(Held::Probe {
                    started_ms: self.now_ms,
                    counts: true,
                });
                self.last_probe_ms = self.now_ms;
                self.floor.from_ms = self.now_ms;
                self.totals.probes += 1;
                self.enter(HalfOpen, TransitionReason::ProbeStarted);
                Decision::Probe
            } else {
                Decision::Rejected(self.state, None)
            }
        };
        match decision {
            Decision::Rejected(..) => self.totals.rejected += 1,
            Decision::Call | Decision::Probe => self.totals.permitted += 1,
        }
        decision
    }

    /// "Permitted when the circuit is automatic and not closed, under
    /// `max_probes_in_flight`, and the floor has passed"; no attempt number
    /// is used or taken, and a refusal is not a rejected call.
    fn idle_probe(&mut self) -> Decision {
        self.time_out_probes();
        if let Some(end) = self.throttle() {
            // "A throttle keeps every call away, probes included."
            Decision::Rejected(self.state, Some(end))
        } else if self.mode == Mode::Automatic
            && self.state != Closed
            && self.probes_in_flight() < self.settings.max_probes_in_flight
            && self.floor.passed(self.now_ms)
        {
            self.held.push(Held::Probe {
                started_ms: self.now_ms,
                counts: true,
            });
            self.last_probe_ms = self.now_ms;
            self.floor.from_ms = self.now_ms;
            self.totals.probes += 1;
            self.totals.permitted += 1;
            self.enter(HalfOpen, TransitionReason::ProbeStarted);
            Decision::Probe
        } else {
            Decision::Rejected(self.state, None)
        }
    }

    /// When `idle_probe` would next permit, by the same rule.
    fn next_probe_ms(&self) -> Option<(u64, Duration)> {
        (self.mode == Mode::Automatic
            && self.state != Closed
            && self.probes_in_flight() < self.settings.max_probes_in_flight)
            .then_some((self.floor.from_ms, self.floor.wait))
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.totals.successes += 1,
            Outcome::Failure => self.totals.failures += 1,
            Outcome::Refused => self.totals.refusals += 1,
            Outcome::Throttled(_) => self.totals.throttles += 1,
        }
    }

    fn record(&mut self, index: usize, outcome: Outcome) {
        self.time_out_probes();
        if let Outcome::Throttled(d) = outcome {
            self.asked_to_hold_off(d);
        }
        match self.held.remove(index) {
            Held::Call { closed_spell } => {
                self.count(outcome);
                if !closed_spell {
                    return;
                }
                match outcome {
                    Outcome::Success => self.consecutive_failures = 0,
                    Outcome::Failure => {
                        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                        if self.mode == Mode::Automatic
                            && self.consecutive_failures >= self.settings.failure_threshold
                        {
                            self.enter(Open, TransitionReason::FailureThreshold);
                        }
                    }
                    // "Neither increments nor resets" the count.
                    Outcome::Refused | Outcome::Throttled(_) => {}
                }
            }
            Held::Probe { counts: false, .. } => self.totals.late_reports += 1,
            Held::Probe { counts: true, .. } => {
                self.count(outcome);
                if outcome == Outcome::Failure {
                    self.last_probe_ms = self.now_ms;
                    self.floor.failed(&self.settings, self.now_ms);
                }
                if let Outcome::Throttled(_) = outcome {
                    // The probe ended, not failed: the wait counts from now
                    // and does not grow.
                    self.last_probe_ms = self.now_ms;
                    self.floor.from_ms = self.now_ms;
                }
                match outcome {
                    Outcome::Success => self.close(TransitionReason::ProbeSucceeded),
                    Outcome::Refused => self.close(TransitionReason::ProbeRefused),
                    Outcome::Failure if self.state == HalfOpen => {
                        self.enter(Open, TransitionReason::ProbeFailed);
                    }
                    Outcome::Throttled(_) if self.state == HalfOpen => {
                        self.enter(Open, TransitionReason::ProbeThrottled);
                    }
                    // The circuit is open already: another probe failed first.
                    Outcome::Failure | Outcome::Throttled(_) => {}
                }
            }
        }
    }
}

struct BreakerModel;

impl ReferenceStateMachine for BreakerModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        (
            (1..=4u32, 1..=5u32, 1..=40u64),
            (1..=3u32, 1..=40u64, any::<bool>()),
            // The floor off, shorter than probe_after, or capped by it.
            (
                prop_oneof![Just(0u64), 1..=12u64, 1..=60u64],
                any::<u64>(),
                prop_oneof![Just(0u64), 1..=50u64],
            ),
        )
            .prop_map(
                |((threshold, every, after), (max, timeout, manual), (floor, seed, throttle))| {
                    Model::new(Settings {
                        failure_threshold: threshold,
                        probe_every: every,
                        probe_after_ms: after,
                        min_probe_interval_ms: floor,
                        max_probes_in_flight: max,
                        probe_timeout_ms: timeout,
                        max_throttle_ms: throttle,
                        jitter_seed: seed,
                        manual_controls: manual,
                    })
                },
            )
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let s = state.settings;
        let longest = s.probe_after_ms.max(s.probe_timeout_ms);
        // Small steps, and jumps that land just before and exactly on the
        // two deadlines.
        let advance = prop_oneof![
            0..=3u64,
            Just(s.probe_after_ms - 1),
            Just(s.probe_after_ms),
            Just(s.probe_timeout_ms - 1),
            Just(s.probe_timeout_ms),
            Just(s.min_probe_interval_ms),
            Just(s.max_throttle_ms),
            0..=2 * longest,
        ];
        // Throttles shorter than, equal to and longer than `max_throttle`.
        let max = s.max_throttle_ms;
        let throttle = prop_oneof![
            0..=3u64,
            0..=max + 5,
            Just(max),
            Just(max + 1),
            Just(u64::MAX / 2),
        ]
        .prop_map(|ms| Outcome::Throttled(Duration::from_millis(ms)));
        let outcome = prop_oneof![
            3 => Just(Outcome::Failure),
            2 => Just(Outcome::Success),
            1 => Just(Outcome::Refused),
            1 => throttle,
        ];
        let which = prop_oneof![Just(Which::Newest), any::<Index>().prop_map(Which::Any)];
        // Reports only when a permit is held, so generation never rejects.
        let record_weight = if state.held.is_empty() { 0 } else { 10 };
        let manual = u32::from(s.manual_controls);
        prop_oneof![
            10 => Just(Step::Acquire),
            3 => Just(Step::IdleProbe),
            record_weight => (which, outcome).prop_map(|(w, o)| Step::Record(w, o)),
            5 => advance.prop_map(Step::Advance),
            2 => Just(Step::HandleTimeout),
            manual => Just(Step::ForceOpen),
            manual => Just(Step::ForceClosed),
            2 * manual => Just(Step::Reset),
        ]
        .boxed()
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        match step {
            Step::Record(..) => !state.held.is_empty(),
            Step::ForceOpen | Step::ForceClosed | Step::Reset => state.settings.manual_controls,
            _ => true,
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        state.decision = None;
        state.changes.clear();
        match step {
            Step::Acquire => state.decision = Some(state.acquire()),
            Step::IdleProbe => state.decision = Some(state.idle_probe()),
            Step::Record(which, outcome) => {
                let index = which.position(state.held.len());
                state.record(index, *outcome);
            }
            Step::Advance(ms) => state.now_ms += ms,
            Step::HandleTimeout => state.time_out_probes(),
            Step::ForceOpen => {
                state.mode = Mode::ForcedOpen;
                state.give_up_probes();
                state.enter(Open, TransitionReason::ForcedOpen);
            }
            Step::ForceClosed => {
                state.mode = Mode::ForcedClosed;
                state.hold_off_until_ms = None;
                state.close(TransitionReason::ForcedClosed);
            }
            Step::Reset => {
                state.mode = Mode::Automatic;
                state.hold_off_until_ms = None;
                state.close(TransitionReason::Reset);
            }
        }
        state
    }
}

/// The breaker on a virtual clock, plus what the caller can count itself.
struct Driven {
    origin: Instant,
    breaker: CircuitBreaker,
    held: Vec<Permit>,
    calls: u64,
    /// Probes `try_probe` granted: permits no call asked for.
    idle_probes: u64,
    reported: u64,
    reported_successes: u64,
    reported_failures: u64,
    reported_refusals: u64,
    reported_throttles: u64,
    /// State before the current step, to check the chain of transitions.
    last_state: CircuitState,
    changes: Vec<(CircuitState, CircuitState, TransitionReason, u64)>,
}

impl Driven {
    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }
}

impl StateMachineTest for BreakerModel {
    type SystemUnderTest = Driven;
    type Reference = BreakerModel;

    fn init_test(model: &Model) -> Driven {
        let origin = Instant::now();
        let breaker = CircuitBreaker::new(model.settings.config(), origin)
            .with_jitter_seed(model.settings.jitter_seed);
        assert_eq!(*breaker.config(), model.settings.config());
        Driven {
            origin,
            breaker,
            held: Vec::new(),
            calls: 0,
            idle_probes: 0,
            reported: 0,
            reported_successes: 0,
            reported_failures: 0,
            reported_refusals: 0,
            reported_throttles: 0,
            last_state: Closed,
            changes: Vec::new(),
        }
    }

    fn apply(mut sut: Driven, model: &Model, step: Step) -> Driven {
        // `model` is already past this step; its clock is the step's `now`.
        let now = sut.at(model.now_ms);
        sut.last_state = sut.breaker.state();
        match step {
            Step::Acquire => {
                let before = sut.breaker.state();
                let throttled = sut.breaker.throttled_until().is_some_and(|end| now < end);
                sut.calls += 1;
                let decision = match sut.breaker.try_acquire(now) {
                    Ok(permit) => {
                        // While throttled, no call and no probe is permitted.
                        assert!(!throttled, "permit {permit:?} granted while throttled");
                        // No call gets through an open or half-open circuit
                        // unless it is a probe, and a closed one never probes.
                        assert_eq!(
                            permit.is_probe(),
                            before != Closed,
                            "permit {permit:?} granted in {before}"
                        );
                        sut.held.push(permit);
                        if permit.is_probe() {
                            Decision::Probe
                        } else {
                            Decision::Call
                        }
                    }
                    Err(rejected) => {
                        assert_eq!(
                            rejected.throttled_until.is_some(),
                            throttled,
                            "a rejection says whether a throttle rejected it"
                        );
                        Decision::Rejected(
                            rejected.state,
                            rejected.throttled_until.map(|end| sut.ms(end)),
                        )
                    }
                };
                assert_eq!(Some(decision), model.decision, "decision");
            }
            Step::IdleProbe => {
                let decision = match sut.breaker.try_probe(now) {
                    Ok(permit) => {
                        assert!(permit.is_probe(), "try_probe grants only probes");
                        sut.idle_probes += 1;
                        sut.held.push(permit);
                        Decision::Probe
                    }
                    Err(rejected) => Decision::Rejected(
                        rejected.state,
                        rejected.throttled_until.map(|end| sut.ms(end)),
                    ),
                };
                assert_eq!(Some(decision), model.decision, "idle probe decision");
            }
            Step::Record(which, outcome) => {
                let permit = sut.held.remove(which.position(sut.held.len()));
                sut.breaker.record(permit, outcome, now);
                sut.reported += 1;
                match outcome {
                    Outcome::Success => sut.reported_successes += 1,
                    Outcome::Failure => sut.reported_failures += 1,
                    Outcome::Refused => sut.reported_refusals += 1,
                    Outcome::Throttled(_) => sut.reported_throttles += 1,
                }
            }
            Step::Advance(_) => {}
            Step::HandleTimeout => sut.breaker.handle_timeout(now),
            Step::ForceOpen => sut.breaker.force_open(now),
            Step::ForceClosed => sut.breaker.force_closed(now),
            Step::Reset => sut.breaker.reset(now),
        }
        sut.changes.clear();
        while let Some(t) = sut.breaker.poll_transition() {
            let at = sut.ms(t.at);
            sut.changes.push((t.from, t.to, t.reason, at));
        }
        sut
    }

    fn check_invariants(sut: &Driven, model: &Model) {
        let stats: Stats = sut.breaker.stats();

        // Every state change is one drained transition, stamped with the
        // step's `now`, and together they lead from the last state to this one.
        let mut state = sut.last_state;
        for &(from, to, _, at) in &sut.changes {
            assert_eq!(from, state, "transitions form a chain: {:?}", sut.changes);
            assert_ne!(from, to, "a transition changes the state");
            assert!(
                REACHABLE_TRANSITIONS.contains(&(from, to)),
                "{from} -> {to} is listed"
            );
            assert_eq!(at, model.now_ms, "stamped with the step's now");
            state = to;
        }
        assert_eq!(state, stats.state, "the chain ends at the current state");
        assert_eq!(sut.changes, model.changes, "transitions of this step");

        // The caller's own counts.
        assert_eq!(
            stats.permitted + stats.rejected,
            sut.calls + sut.idle_probes,
            "every call is permitted or rejected; idle probes add permits only"
        );
        assert_eq!(
            stats.successes
                + stats.failures
                + stats.refusals
                + stats.throttles
                + stats.late_reports,
            sut.reported + stats.probe_timeouts,
            "every report lands in one counter; timeouts add a failure"
        );
        assert!(stats.successes <= sut.reported_successes);
        assert!(stats.refusals <= sut.reported_refusals);
        assert!(stats.throttles <= sut.reported_throttles);
        assert!(
            stats
                .failures
                .checked_sub(stats.probe_timeouts)
                .is_some_and(|reported| reported <= sut.reported_failures),
            "{stats:?}"
        );
        assert_eq!(stats.transitions_discarded, 0, "drained after every step");

        // Probes in flight are bounded, by the breaker's count and the model's.
        let max = model.settings.max_probes_in_flight;
        assert!(stats.probes_in_flight <= max, "{stats:?}");
        assert!(model.probes_in_flight() <= max);
        assert_eq!(stats.probes_in_flight, model.probes_in_flight());
        assert_eq!(
            sut.breaker.poll_timeout(),
            model
                .live_probes()
                .min()
                .map(|started| sut.at(started + model.settings.probe_timeout_ms)),
            "next probe deadline"
        );
        // A time in the past means "due now", whatever it is: compared from now on.
        let now = sut.at(model.now_ms);
        assert_eq!(
            sut.breaker.next_probe_at().map(|at| at.max(now)),
            model.next_probe_ms().map(|(from, wait)| {
                let paced = sut.at(from) + wait;
                // "Never before a throttle ends."
                model
                    .throttle()
                    .map_or(paced, |end| paced.max(sut.at(end)))
                    .max(now)
            }),
            "when an idle probe is next permitted"
        );

        // "Half-open: a probe is in flight"; closed has none.
        match stats.state {
            HalfOpen => assert!(stats.probes_in_flight >= 1, "{stats:?}"),
            Closed => assert_eq!(stats.probes_in_flight, 0, "{stats:?}"),
            Open => {}
        }

        // Manual modes hold their state.
        match stats.mode {
            Mode::ForcedOpen => assert_eq!(stats.state, Open),
            Mode::ForcedClosed => assert_eq!(stats.state, Closed),
            Mode::Automatic => {}
        }

        // The throttle in effect now; an ended one may still be shown.
        let now = sut.at(model.now_ms);
        assert_eq!(
            stats.throttled_until.filter(|&end| now < end),
            model.throttle().map(|end| sut.at(end)),
            "throttle in effect"
        );
        assert_eq!(stats.throttled_until, sut.breaker.throttled_until());
        if model.settings.max_throttle_ms == 0 || stats.mode == Mode::ForcedClosed {
            assert_eq!(stats.throttled_until, None, "nothing is held off");
        }

        let t = model.totals;
        let expected = (
            (model.state, model.mode, sut.at(model.since_ms)),
            model.consecutive_failures,
            (t.permitted, t.rejected, t.successes, t.failures),
            (t.refusals, t.throttles),
            (t.probes, t.probe_timeouts, t.late_reports),
        );
        let seen = (
            (stats.state, stats.mode, stats.since),
            stats.consecutive_failures,
            (
                stats.permitted,
                stats.rejected,
                stats.successes,
                stats.failures,
            ),
            (stats.refusals, stats.throttles),
            (stats.probes, stats.probe_timeouts, stats.late_reports),
        );
        assert_eq!(seen, expected, "breaker vs model");
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        cases: 256,
        // Failing cases are kept next to the crate, to be committed; the
        // default location would be beside this file, since `tests/` has
        // no `lib.rs` above it.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/model.txt"),
        ))),
        .. Config::default()
    })]

    #[test]
    fn breaker_agrees_with_the_model(sequential 1..100 => BreakerModel);
}

/// Found by the model test (both seeds in `proptest-regressions/model.txt`):
/// reporting a call permitted before the circuit opened did not notice an
/// overdue probe, although `handle_timeout`'s documentation says `record`
/// does.
#[test]
fn a_stale_call_report_notices_a_lost_probe() {
    let config = BreakerConfig::DEFAULT
        .failure_threshold(nz(1))
        .min_probe_interval(Duration::ZERO)
        .probe_timeout(Duration::from_millis(10));
    let start = Instant::now();
    let mut breaker = CircuitBreaker::new(config, start);
    let early = breaker.try_acquire(start).unwrap();
    let opener = breaker.try_acquire(start).unwrap();
    breaker.record(opener, Outcome::Failure, start);
    let lost = breaker.try_acquire(start).unwrap();
    assert!(lost.is_probe());
    assert_eq!(breaker.state(), HalfOpen);

    breaker.record(early, Outcome::Success, start + Duration::from_millis(10));
    assert_eq!(breaker.state(), Open, "the probe is 10 ms overdue");
    let stats = breaker.stats();
    assert_eq!((stats.successes, stats.probe_timeouts), (1, 1));
    let last = std::iter::from_fn(|| breaker.poll_transition()).last();
    assert_eq!(
        last.map(|t| (t.from, t.to, t.reason)),
        Some((HalfOpen, Open, TransitionReason::ProbeTimedOut))
    );
}
