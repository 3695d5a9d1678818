//! The contract's breaker semantics, as deterministic simulations on a
//! virtual clock: nothing here sleeps or reads the time twice.
//!
//! Calls come one at a time, `min_probe_interval` apart (1 ms apart when
//! the floor is off), so the count rule shows as the contract states it;
//! the tests of the floor itself send calls faster than that.

use std::time::{Duration, Instant};

use breaker_core::{
    BreakerConfig, CircuitBreaker, CircuitState, Mode, Outcome, Transition, TransitionReason,
};

use CircuitState::{Closed, HalfOpen, Open};
use Outcome::{Failure, Refused, Success, Throttled};
use std::num::NonZeroU32;

/// A count setting; test constants are never zero.
fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("count settings are at least 1")
}

/// The default settings without the time floor between probes: for the
/// tests of other rules that send calls faster than the floor.
fn unpaced() -> BreakerConfig {
    BreakerConfig::DEFAULT.min_probe_interval(Duration::ZERO)
}

/// A virtual clock: one real `Instant` as the origin, moved by hand.
struct Sim {
    origin: Instant,
    elapsed: Duration,
    /// How far apart [`Sim::call`] spaces calls.
    step: Duration,
    breaker: CircuitBreaker,
}

impl Sim {
    fn new(config: BreakerConfig) -> Self {
        let origin = Instant::now();
        Self {
            origin,
            elapsed: Duration::ZERO,
            step: config.min_probe_interval.max(Duration::from_millis(1)),
            breaker: CircuitBreaker::new(config, origin),
        }
    }

    /// Calls `step` apart instead.
    fn every(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }

    fn now(&self) -> Instant {
        self.origin + self.elapsed
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    /// One call, one step later than the last: returns whether it was
    /// permitted, and if so reports `outcome` for it.
    fn call(&mut self, outcome: Outcome) -> bool {
        self.advance(self.step);
        let now = self.now();
        match self.breaker.try_acquire(now) {
            Ok(permit) => {
                self.breaker.record(permit, outcome, now);
                true
            }
            Err(_) => false,
        }
    }

    fn transitions(&mut self) -> Vec<(CircuitState, CircuitState, TransitionReason)> {
        std::iter::from_fn(|| self.breaker.poll_transition())
            .map(|t: Transition| (t.from, t.to, t.reason))
            .collect()
    }
}

/// Runs `script` (one outcome per call; `F` fails, `S` succeeds, `R` is
/// refused, if the call is permitted) and returns which calls were permitted
/// (`p`) or rejected (`-`), and the final state.
fn run(sim: &mut Sim, script: &str) -> (String, CircuitState) {
    let seen = script
        .chars()
        .map(|c| {
            let outcome = match c {
                'S' => Success,
                'R' => Refused,
                _ => Failure,
            };
            if sim.call(outcome) { 'p' } else { '-' }
        })
        .collect();
    (seen, sim.breaker.state())
}

fn check(script: &str, expected: &str, expected_state: CircuitState) {
    let mut sim = Sim::new(BreakerConfig::default());
    let (seen, state) = run(&mut sim, script);
    assert_eq!(seen, expected, "permits for script {script}");
    assert_eq!(state, expected_state, "final state for script {script}");
}

#[test]
fn the_contract_scenarios() {
    // Two failures stay closed; the third opens.
    check("FF", "pp", Closed);
    check("FFF", "ppp", Open);
    // A success in closed resets the consecutive count.
    check("FFSFF", "ppppp", Closed);
    check("FFSFFF", "pppppp", Open);
    // Open: with every probe failing, attempts 0, 10 and 20 get through.
    check(
        "FFF FFFFFFFFFF FFFFFFFFFF F".replace(' ', "").as_str(),
        "ppp p--------- p--------- p".replace(' ', "").as_str(),
        Open,
    );
    // A successful probe closes the circuit and resets the failure count:
    // two more failures leave it closed.
    check("FFFSFF", "pppppp", Closed);
    check("FFFFFFFFFFFFFSFFF", "pppp---------pppp", Open);
}

#[test]
fn probe_pattern_over_attempts_0_to_20() {
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FFF");
    assert_eq!(
        sim.transitions(),
        [(Closed, Open, TransitionReason::FailureThreshold)]
    );

    // Attempt k is the k-th call after opening; each probe fails.
    let permitted: Vec<usize> = (0..=20usize).filter(|_| sim.call(Failure)).collect();
    assert_eq!(permitted, [0, 10, 20]);
}

#[test]
fn each_probe_goes_half_open_and_back() {
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FFF");
    let _ = sim.transitions();
    run(&mut sim, "FFFFFFFFFFF");
    assert_eq!(
        sim.transitions(),
        [
            (Open, HalfOpen, TransitionReason::ProbeStarted),
            (HalfOpen, Open, TransitionReason::ProbeFailed),
            (Open, HalfOpen, TransitionReason::ProbeStarted),
            (HalfOpen, Open, TransitionReason::ProbeFailed),
        ]
    );
    let stats = sim.breaker.stats();
    assert_eq!((stats.probes, stats.rejected), (2, 9));
}

#[test]
fn successful_probe_closes_and_resets_the_count() {
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FFFS");
    assert_eq!(sim.breaker.state(), Closed);
    assert_eq!(sim.breaker.consecutive_failures(), 0);
    assert_eq!(
        sim.transitions(),
        [
            (Closed, Open, TransitionReason::FailureThreshold),
            (Open, HalfOpen, TransitionReason::ProbeStarted),
            (HalfOpen, Closed, TransitionReason::ProbeSucceeded),
        ]
    );
    // Numbering starts again from 0 the next time it opens.
    let (seen, _) = run(&mut sim, "FFFFF");
    assert_eq!(
        seen, "pppp-",
        "attempt 0 after reopening probes, attempt 1 not"
    );
}

#[test]
fn probe_after_fires_without_counting_traffic() {
    let mut sim = Sim::new(unpaced());
    run(&mut sim, "FFFF"); // opens, attempt 0 probes and fails
    assert_eq!(run(&mut sim, "FFF").0, "---");
    sim.advance(Duration::from_secs(29));
    assert!(
        !sim.call(Failure),
        "29 s after the last probe: still rejected"
    );
    sim.advance(Duration::from_secs(1));
    // Attempt 5, not a multiple of 10, but 30 s have passed.
    assert!(sim.call(Failure), "30 s after the last probe: probes");
    assert!(!sim.call(Failure), "the clock restarts at that probe");
    assert_eq!(sim.breaker.stats().probes, 2);
}

#[test]
fn a_lost_probe_times_out_and_counts_as_failure() {
    let config = unpaced().probe_timeout(Duration::from_secs(5));
    let mut sim = Sim::new(config);
    run(&mut sim, "FFF");
    let _ = sim.transitions();

    let lost = sim.breaker.try_acquire(sim.now()).unwrap();
    assert!(lost.is_probe());
    assert_eq!(sim.breaker.state(), HalfOpen);
    assert_eq!(
        sim.breaker.poll_timeout(),
        Some(sim.now() + Duration::from_secs(5))
    );
    // Attempt 10 would probe, but the lost probe still holds the only slot.
    assert_eq!(run(&mut sim, "SSSSSSSSSS").0, "----------");
    assert_eq!(sim.breaker.state(), HalfOpen);

    sim.advance(Duration::from_secs(5));
    sim.breaker.handle_timeout(sim.now());
    assert_eq!(sim.breaker.state(), Open);
    assert_eq!(sim.breaker.poll_timeout(), None);
    let stats = sim.breaker.stats();
    assert_eq!((stats.failures, stats.probe_timeouts), (4, 1));
    assert_eq!(
        sim.transitions(),
        [
            (Open, HalfOpen, TransitionReason::ProbeStarted),
            (HalfOpen, Open, TransitionReason::ProbeTimedOut)
        ]
    );

    // Its late answer changes nothing and is not counted twice.
    let now = sim.now();
    sim.breaker.record(lost, Success, now);
    assert_eq!(sim.breaker.state(), Open);
    let stats = sim.breaker.stats();
    assert_eq!((stats.successes, stats.late_reports), (0, 1));
}

#[test]
fn the_probe_timeout_is_noticed_by_the_next_call_too() {
    let mut sim = Sim::new(unpaced());
    run(&mut sim, "FFF");
    let _lost = sim.breaker.try_acquire(sim.now()).unwrap();
    sim.advance(Duration::from_secs(15));
    // attempts 1..: the expired probe is noticed; attempt 1 is not due by
    // number but 15 s < probe_after, so it is rejected, and state is open.
    assert!(!sim.call(Success));
    assert_eq!(sim.breaker.state(), Open);
    assert_eq!(sim.breaker.stats().probe_timeouts, 1);
}

#[test]
fn probes_in_flight_are_bounded() {
    let config = unpaced().probe_every(nz(1)).max_probes_in_flight(nz(2));
    let mut sim = Sim::new(config);
    run(&mut sim, "FFF");
    let now = sim.now();
    let first = sim.breaker.try_acquire(now).unwrap();
    let second = sim.breaker.try_acquire(now).unwrap();
    assert!(
        sim.breaker.try_acquire(now).is_err(),
        "a third probe at once"
    );
    sim.breaker.record(first, Failure, now);
    assert_eq!(sim.breaker.state(), Open, "one failed probe reopens");
    // The other probe still counts: its success closes the circuit.
    sim.breaker.record(second, Success, now);
    assert_eq!(sim.breaker.state(), Closed);
}

#[test]
fn a_call_permitted_before_opening_moves_nothing_after() {
    let mut sim = Sim::new(BreakerConfig::default());
    let now = sim.now();
    let early = sim.breaker.try_acquire(now).unwrap();
    run(&mut sim, "FFF");
    assert_eq!(sim.breaker.state(), Open);
    sim.breaker.record(early, Success, sim.now());
    assert_eq!(sim.breaker.state(), Open, "only a probe can close it");
    assert_eq!(
        sim.breaker.stats().successes,
        1,
        "but the outcome is counted"
    );
}

#[test]
fn manual_controls() {
    let mut sim = Sim::new(BreakerConfig::default());
    sim.breaker.force_open(sim.now());
    assert_eq!(sim.breaker.mode(), Mode::ForcedOpen);
    assert_eq!(run(&mut sim, "SSSSSSSSSSSS").0, "------------", "no probes");
    sim.advance(Duration::from_secs(60));
    assert!(!sim.call(Success), "not even after probe_after");

    sim.breaker.force_closed(sim.now());
    assert_eq!(run(&mut sim, "FFFFFF").0, "pppppp");
    assert_eq!(
        sim.breaker.state(),
        Closed,
        "disabled: failures never open it"
    );

    sim.breaker.reset(sim.now());
    assert_eq!(sim.breaker.mode(), Mode::Automatic);
    assert_eq!(sim.breaker.consecutive_failures(), 0);
    run(&mut sim, "FFF");
    assert_eq!(sim.breaker.state(), Open);
    assert_eq!(
        sim.transitions(),
        [
            (Closed, Open, TransitionReason::ForcedOpen),
            (Open, Closed, TransitionReason::ForcedClosed),
            (Closed, Open, TransitionReason::FailureThreshold),
        ],
        "reset of a closed circuit is no transition"
    );
    sim.breaker.reset(sim.now());
    assert_eq!(sim.transitions(), [(Open, Closed, TransitionReason::Reset)]);
}

#[test]
fn stats_account_for_every_call() {
    let mut sim = Sim::new(BreakerConfig::default());
    let script = "FFSFFFSFFFFFFFFFFFFFFFFFFFFSSRR";
    let (seen, _) = run(&mut sim, script);
    let stats = sim.breaker.stats();
    let permitted = seen.chars().filter(|&c| c == 'p').count() as u64;
    assert_eq!(stats.permitted, permitted);
    assert_eq!(stats.permitted + stats.rejected, script.len() as u64);
    assert_eq!(
        stats.successes + stats.failures + stats.refusals,
        stats.permitted
    );
    assert!(stats.refusals > 0, "a refusal reached the backend");
    assert_eq!(stats.since, sim.breaker.since());
}

#[test]
fn undrained_transitions_are_bounded() {
    let config = unpaced().failure_threshold(nz(1));
    let mut sim = Sim::new(config);
    // Each "FS" pair opens then closes via a successful probe: 3 transitions.
    for _ in 0..100 {
        run(&mut sim, "FS");
    }
    let kept = sim.transitions().len() as u64;
    let discarded = sim.breaker.stats().transitions_discarded;
    assert_eq!(kept + discarded, 300);
    assert!(kept <= 64, "kept {kept}");
}

#[test]
fn rejected_says_which_state_rejected() {
    let mut sim = Sim::new(unpaced());
    run(&mut sim, "FFFF");
    let err = sim.breaker.try_acquire(sim.now()).unwrap_err();
    assert_eq!(err.state, Open);
    assert_eq!(err.throttled_until, None, "the rules rejected it");
    assert_eq!(err.to_string(), "circuit open: call rejected");
}

#[test]
fn probe_after_counts_from_the_end_of_a_slow_failed_probe() {
    // A probe that takes longer than probe_after (a hanging backend) must not
    // make every following attempt a probe.
    let config = unpaced()
        .probe_after(Duration::from_secs(1))
        .probe_timeout(Duration::from_secs(60));
    let mut sim = Sim::new(config);
    run(&mut sim, "FFF");
    let slow = sim.breaker.try_acquire(sim.now()).unwrap();
    sim.advance(Duration::from_secs(10));
    let now = sim.now();
    sim.breaker.record(slow, Failure, now);
    assert_eq!(run(&mut sim, "FFFF").0, "----", "just failed: not due yet");
    sim.advance(Duration::from_secs(1));
    assert!(sim.call(Failure), "probe_after after the failure: probes");
}

#[test]
fn probe_after_counts_from_a_probe_timeout_too() {
    let config = unpaced()
        .probe_after(Duration::from_secs(1))
        .probe_timeout(Duration::from_secs(5));
    let mut sim = Sim::new(config);
    run(&mut sim, "FFF");
    let _lost = sim.breaker.try_acquire(sim.now()).unwrap();
    sim.advance(Duration::from_secs(5));
    sim.breaker.handle_timeout(sim.now());
    assert_eq!(sim.breaker.state(), Open);
    assert!(!sim.call(Failure), "timed out just now: not due yet");
    sim.advance(Duration::from_secs(1));
    assert!(sim.call(Failure));
}

/// Opens a default breaker with calls 1 ms apart, then keeps calling 1 ms
/// apart for `for_how_long`, every probe failing unless `until_success` says
/// which probe (0-based) succeeds; returns when each probe started, as time
/// since the circuit opened.
fn probes_under_fast_traffic(
    config: BreakerConfig,
    for_how_long: Duration,
    until_success: Option<usize>,
) -> (Sim, Vec<Duration>) {
    let mut sim = Sim::new(config).every(Duration::from_millis(1));
    run(&mut sim, "FFF");
    assert_eq!(sim.breaker.state(), Open);
    let opened = sim.elapsed;
    let mut starts = Vec::new();
    while sim.elapsed - opened < for_how_long {
        let outcome = if until_success == Some(starts.len()) {
            Success
        } else {
            Failure
        };
        let before = sim.breaker.stats().probes;
        sim.call(outcome);
        if sim.breaker.stats().probes > before {
            starts.push(sim.elapsed - opened);
            if outcome == Success {
                break;
            }
        }
    }
    (sim, starts)
}

#[test]
fn attempts_1_ms_apart_probe_at_most_once_per_floor_period() {
    let (sim, starts) =
        probes_under_fast_traffic(BreakerConfig::default(), Duration::from_secs(10), None);
    let floor = sim.breaker.config().min_probe_interval;
    assert!(
        starts[0] >= floor,
        "first probe {:?} after opening",
        starts[0]
    );
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= floor, "probes at {starts:?}");
    }
    // 10 000 attempts, 1 000 of them multiples of probe_every: the floor
    // lets a handful through, and the backoff fewer than one per second.
    assert!((2..=10).contains(&starts.len()), "probes at {starts:?}");
    assert_eq!(
        sim.breaker.stats().rejected as usize + starts.len(),
        10_000 - 1 + 1
    );
}

#[test]
fn the_waits_between_probes_double_with_jitter_up_to_probe_after() {
    let config = BreakerConfig::default();
    let (_, starts) = probes_under_fast_traffic(config, Duration::from_secs(600), None);
    let cap = config.probe_after;
    // An attempt is a probe only at a multiple of probe_every, 10 ms apart here.
    let slack = Duration::from_millis(10);
    let mut floor = config.min_probe_interval;
    assert!(
        starts[0] >= floor && starts[0] <= floor + slack,
        "{starts:?}"
    );
    for (n, pair) in starts.windows(2).enumerate() {
        floor = (floor * 2).min(cap);
        let wait = pair[1] - pair[0];
        assert!(
            wait >= floor / 2 && wait <= (floor + slack).min(cap),
            "wait {n} is {wait:?}, floor {floor:?}: {starts:?}"
        );
    }
    assert_eq!(floor, cap, "reached the cap: {starts:?}");
    let waits: Vec<Duration> = starts.windows(2).map(|p| p[1] - p[0]).collect();
    let distinct: std::collections::BTreeSet<_> = waits.iter().rev().take(10).collect();
    assert!(distinct.len() > 1, "jittered, not fixed: {waits:?}");
}

#[test]
fn a_success_returns_the_floor_to_min_probe_interval() {
    let config = BreakerConfig::default();
    // Five failed probes grow the floor to 16 s; the sixth succeeds.
    let (mut sim, starts) = probes_under_fast_traffic(config, Duration::from_secs(600), Some(5));
    assert_eq!(starts.len(), 6, "{starts:?}");
    assert!(
        starts[5] - starts[4] >= Duration::from_secs(8),
        "{starts:?}"
    );
    assert_eq!(sim.breaker.state(), Closed);
    // Opened again: the first probe waits min_probe_interval, not 32 s.
    let _ = sim.transitions();
    let (_, again) = {
        let opened_at = sim.elapsed;
        run(&mut sim, "FFF");
        assert_eq!(sim.breaker.state(), Open);
        let mut first = None;
        for _ in 0..5_000 {
            let before = sim.breaker.stats().probes;
            sim.call(Failure);
            if sim.breaker.stats().probes > before {
                first = Some(sim.elapsed - opened_at);
                break;
            }
        }
        (opened_at, first)
    };
    let first = again.expect("a probe within 5 s");
    assert!(
        first >= Duration::from_secs(1) && first <= Duration::from_millis(1_020),
        "first probe after reopening at {first:?}"
    );
}

#[test]
fn probes_in_flight_together_still_start_a_floor_apart() {
    let config = BreakerConfig::DEFAULT
        .probe_every(nz(1))
        .max_probes_in_flight(nz(2));
    let mut sim = Sim::new(config);
    run(&mut sim, "FFF");
    sim.advance(Duration::from_secs(1));
    let now = sim.now();
    let first = sim.breaker.try_acquire(now).unwrap();
    assert!(first.is_probe());
    assert!(sim.breaker.try_acquire(now).is_err(), "same instant");
    sim.advance(Duration::from_millis(999));
    assert!(sim.breaker.try_acquire(sim.now()).is_err(), "999 ms later");
    sim.advance(Duration::from_millis(1));
    let second = sim.breaker.try_acquire(sim.now()).unwrap();
    assert!(second.is_probe(), "a floor later, with room for two");
    assert_eq!(sim.breaker.stats().probes_in_flight, 2);
}

#[test]
fn the_jitter_seed_changes_the_waits_and_only_them() {
    let starts = |seed: u64| {
        let origin = Instant::now();
        let mut breaker =
            CircuitBreaker::new(BreakerConfig::default(), origin).with_jitter_seed(seed);
        let mut at = Vec::new();
        for ms in 0..120_000u64 {
            let now = origin + Duration::from_millis(ms);
            if let Ok(permit) = breaker.try_acquire(now) {
                if permit.is_probe() {
                    at.push(ms);
                }
                breaker.record(permit, Failure, now);
            }
        }
        at
    };
    let (a, b) = (starts(1), starts(2));
    assert_eq!(a, starts(1), "deterministic for one seed");
    assert_eq!(a[0], b[0], "the first probe is not jittered");
    assert_ne!(a, b, "another seed, other waits");
}

// Outcome classes: refusals and throttles (docs/contract.md section 3).

#[test]
fn refusals_neither_count_toward_opening_nor_reset_the_streak() {
    // Three refusals in a row do nothing.
    check("RRRRR", "ppppp", Closed);
    // A backend that refuses every other call while the others fail still
    // opens the circuit after three failures: refusals do not hide them.
    check("FRFRF", "ppppp", Open);
    check("FRFRS", "ppppp", Closed);
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FFRR");
    assert_eq!(sim.breaker.consecutive_failures(), 2);
    let stats = sim.breaker.stats();
    assert_eq!((stats.failures, stats.refusals), (2, 2));
    assert_eq!(stats.throttled_until, None);
}

#[test]
fn a_refused_probe_closes_the_circuit() {
    let mut sim = Sim::new(BreakerConfig::default());
    let (seen, state) = run(&mut sim, "FFFRFF");
    assert_eq!((seen.as_str(), state), ("pppppp", Closed));
    assert_eq!(
        sim.transitions(),
        [
            (Closed, Open, TransitionReason::FailureThreshold),
            (Open, HalfOpen, TransitionReason::ProbeStarted),
            (HalfOpen, Closed, TransitionReason::ProbeRefused),
        ]
    );
    assert_eq!(
        sim.breaker.consecutive_failures(),
        2,
        "closing started the count again"
    );
    assert_eq!(sim.breaker.stats().refusals, 1);
}

/// One permitted call at `sim.now()`, reported as `outcome`.
fn report(sim: &mut Sim, outcome: Outcome) {
    let now = sim.now();
    let permit = sim.breaker.try_acquire(now).expect("permitted");
    sim.breaker.record(permit, outcome, now);
}

#[test]
fn a_throttle_rejects_every_call_while_closed_without_opening() {
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FF");
    report(&mut sim, Throttled(Duration::from_secs(10)));
    let until = sim.now() + Duration::from_secs(10);
    assert_eq!(sim.breaker.throttled_until(), Some(until));

    // 1 s apart: calls at +1 .. +9 s are rejected, the one at +10 s is not.
    assert_eq!(run(&mut sim, "FFFFFFFFFS").0, "---------p");
    assert_eq!(sim.breaker.state(), Closed, "a throttle never opens it");
    assert!(sim.transitions().is_empty());
    assert_eq!(
        sim.breaker.consecutive_failures(),
        0,
        "the success after it reset the count; the throttle had left it at 2"
    );
    let stats = sim.breaker.stats();
    assert_eq!((stats.throttles, stats.rejected), (1, 9));
    assert_eq!(stats.throttled_until, None, "forgotten once over");
}

#[test]
fn a_throttle_leaves_the_failure_count_alone() {
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FF");
    report(&mut sim, Throttled(Duration::from_secs(1)));
    assert_eq!(sim.breaker.consecutive_failures(), 2);
    assert_eq!(run(&mut sim, "F").0, "p", "1 s later the hold is over");
    assert_eq!(sim.breaker.state(), Open, "the third failure opens it");
}

#[test]
fn a_rejection_during_a_throttle_says_so() {
    let mut sim = Sim::new(BreakerConfig::default());
    report(&mut sim, Throttled(Duration::from_secs(2)));
    let until = sim.now() + Duration::from_secs(2);
    let err = sim.breaker.try_acquire(sim.now()).unwrap_err();
    assert_eq!((err.state, err.throttled_until), (Closed, Some(until)));
    assert_eq!(
        err.to_string(),
        "circuit closed: call rejected, the backend asked to hold off"
    );
}

#[test]
fn a_throttle_is_capped_by_max_throttle() {
    let mut sim = Sim::new(BreakerConfig::default());
    report(&mut sim, Throttled(Duration::from_secs(365 * 24 * 3600)));
    let cap = sim.breaker.config().max_throttle;
    assert_eq!(cap, Duration::from_secs(300), "the default");
    let start = sim.now();
    assert_eq!(sim.breaker.throttled_until(), Some(start + cap));
    sim.advance(cap - Duration::from_millis(1));
    assert!(sim.breaker.try_acquire(sim.now()).is_err());
    sim.advance(Duration::from_millis(1));
    assert!(
        sim.breaker.try_acquire(sim.now()).is_ok(),
        "five minutes, not a year"
    );
}

#[test]
fn a_zero_max_throttle_ignores_throttles_but_counts_them() {
    let mut sim = Sim::new(BreakerConfig::DEFAULT.max_throttle(Duration::ZERO));
    report(&mut sim, Throttled(Duration::from_secs(60)));
    assert_eq!(sim.breaker.throttled_until(), None);
    assert!(sim.breaker.try_acquire(sim.now()).is_ok());
    assert_eq!(sim.breaker.stats().throttles, 1);
}

#[test]
fn a_hold_that_no_instant_can_hold_is_ignored() {
    let mut sim = Sim::new(BreakerConfig::DEFAULT.max_throttle(Duration::MAX));
    report(&mut sim, Throttled(Duration::MAX));
    assert_eq!(sim.breaker.throttled_until(), None);
    assert!(sim.breaker.try_acquire(sim.now()).is_ok());
}

#[test]
fn a_shorter_throttle_does_not_cut_a_longer_one() {
    let mut sim = Sim::new(BreakerConfig::default());
    let start = sim.now();
    report(&mut sim, Throttled(Duration::ZERO));
    assert_eq!(sim.breaker.throttled_until(), None, "zero holds nothing");
    // Two calls permitted together, answered in turn.
    let first = sim.breaker.try_acquire(start).unwrap();
    let second = sim.breaker.try_acquire(start).unwrap();
    sim.breaker
        .record(first, Throttled(Duration::from_secs(10)), start);
    sim.breaker
        .record(second, Throttled(Duration::from_secs(2)), start);
    assert_eq!(
        sim.breaker.throttled_until(),
        Some(start + Duration::from_secs(10))
    );
    assert_eq!(sim.breaker.stats().throttles, 3);
}

#[test]
fn a_throttled_probe_reopens_without_backing_off_the_floor() {
    let config = BreakerConfig::DEFAULT.probe_every(nz(1));
    let mut sim = Sim::new(config);
    run(&mut sim, "FFF");
    let _ = sim.transitions();
    sim.advance(Duration::from_secs(1));
    let now = sim.now();
    let probe = sim.breaker.try_acquire(now).unwrap();
    assert!(probe.is_probe());
    sim.breaker.record(probe, Throttled(Duration::ZERO), now);
    assert_eq!(sim.breaker.state(), Open, "a throttle does not close it");
    assert_eq!(
        sim.transitions(),
        [
            (Open, HalfOpen, TransitionReason::ProbeStarted),
            (HalfOpen, Open, TransitionReason::ProbeThrottled),
        ]
    );
    let stats = sim.breaker.stats();
    assert_eq!((stats.failures, stats.throttles), (3, 1), "no failure");
    // The floor stays at min_probe_interval (1 s), counted from the answer;
    // a failure would have doubled it.
    sim.advance(Duration::from_millis(999));
    assert!(sim.breaker.try_acquire(sim.now()).is_err());
    sim.advance(Duration::from_millis(1));
    let again = sim.breaker.try_acquire(sim.now()).unwrap();
    assert!(again.is_probe(), "one floor after the throttled answer");
}

#[test]
fn no_probe_starts_during_a_throttle_and_attempts_are_not_numbered() {
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FFF");
    // Attempt 0 probes and is told to wait 60 s.
    sim.advance(Duration::from_secs(1));
    let now = sim.now();
    let probe = sim.breaker.try_acquire(now).unwrap();
    sim.breaker
        .record(probe, Throttled(Duration::from_secs(60)), now);
    let until = now + Duration::from_secs(60);
    // Past probe_after (30 s), past any floor: still nothing gets through.
    for _ in 0..59 {
        let err = sim.breaker.try_acquire(sim.now()).unwrap_err();
        assert_eq!((err.state, err.throttled_until), (Open, Some(until)));
        sim.advance(Duration::from_secs(1));
    }
    assert_eq!(sim.breaker.stats().probes, 1);
    // Over: the circuit carries on from open. The next call is attempt 1,
    // due because probe_after has passed since the probe ended.
    sim.advance(Duration::from_secs(1));
    let next = sim.breaker.try_acquire(sim.now()).unwrap();
    assert!(next.is_probe());
    assert_eq!(sim.breaker.throttled_until(), None);
    let now = sim.now();
    sim.breaker.record(next, Success, now);
    assert_eq!(sim.breaker.state(), Closed);
}

#[test]
fn after_a_short_throttled_probe_the_count_rule_goes_on() {
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FFF");
    sim.advance(Duration::from_secs(1));
    let now = sim.now();
    let probe = sim.breaker.try_acquire(now).unwrap();
    sim.breaker
        .record(probe, Throttled(Duration::from_secs(5)), now);
    sim.advance(Duration::from_secs(4));
    let err = sim.breaker.try_acquire(sim.now());
    assert!(
        err.unwrap_err().throttled_until.is_some(),
        "held off at +4 s"
    );
    // Calls 1 s apart from the end of the hold (+5 s): attempts 1..=9 are
    // rejected (probe_after has not passed), attempt 10 probes.
    assert_eq!(run(&mut sim, "FFFFFFFFFF").0, "---------p");
}

#[test]
fn a_throttle_from_a_stale_permit_still_applies() {
    let mut sim = Sim::new(unpaced());
    let now = sim.now();
    let early = sim.breaker.try_acquire(now).unwrap();
    run(&mut sim, "FFF");
    assert_eq!(sim.breaker.state(), Open);
    let now = sim.now();
    sim.breaker
        .record(early, Throttled(Duration::from_secs(3)), now);
    assert_eq!(sim.breaker.state(), Open, "moves no state");
    let err = sim.breaker.try_acquire(now).unwrap_err();
    assert_eq!(err.throttled_until, Some(now + Duration::from_secs(3)));
    assert_eq!(sim.breaker.stats().throttles, 1);
    sim.advance(Duration::from_secs(3));
    assert!(
        sim.breaker.try_acquire(sim.now()).unwrap().is_probe(),
        "then attempt 0 probes: the throttled calls were not attempts"
    );
}

#[test]
fn a_late_throttled_probe_still_holds_off() {
    let config = unpaced().probe_timeout(Duration::from_secs(5));
    let mut sim = Sim::new(config);
    run(&mut sim, "FFF");
    let lost = sim.breaker.try_acquire(sim.now()).unwrap();
    sim.advance(Duration::from_secs(5));
    sim.breaker.handle_timeout(sim.now());
    let now = sim.now();
    sim.breaker
        .record(lost, Throttled(Duration::from_secs(2)), now);
    let stats = sim.breaker.stats();
    assert_eq!((stats.late_reports, stats.throttles), (1, 0));
    assert_eq!(
        sim.breaker.throttled_until(),
        Some(now + Duration::from_secs(2))
    );
}

#[test]
fn a_throttle_does_not_hide_a_lost_probe() {
    let config = unpaced().probe_timeout(Duration::from_secs(5));
    let mut sim = Sim::new(config);
    let now = sim.now();
    let early = sim.breaker.try_acquire(now).unwrap();
    run(&mut sim, "FFF");
    let _lost = sim.breaker.try_acquire(sim.now()).unwrap();
    assert_eq!(sim.breaker.state(), HalfOpen);
    let now = sim.now();
    sim.breaker
        .record(early, Throttled(Duration::from_secs(60)), now);
    let _ = sim.transitions();
    sim.advance(Duration::from_secs(5));
    let err = sim.breaker.try_acquire(sim.now()).unwrap_err();
    assert!(err.throttled_until.is_some());
    assert_eq!(err.state, Open, "the call noticed the probe's timeout");
    assert_eq!(
        sim.transitions(),
        [(HalfOpen, Open, TransitionReason::ProbeTimedOut)]
    );
}

#[test]
fn operators_override_a_throttle() {
    let mut sim = Sim::new(BreakerConfig::default());
    report(&mut sim, Throttled(Duration::from_secs(60)));
    sim.breaker.force_open(sim.now());
    let err = sim.breaker.try_acquire(sim.now()).unwrap_err();
    assert!(err.throttled_until.is_some(), "kept while forced open");
    sim.breaker.reset(sim.now());
    assert_eq!(sim.breaker.throttled_until(), None, "reset lifts it");
    assert!(sim.breaker.try_acquire(sim.now()).is_ok());

    report(&mut sim, Throttled(Duration::from_secs(60)));
    sim.breaker.force_closed(sim.now());
    assert!(sim.breaker.try_acquire(sim.now()).is_ok(), "lifted");
    // Forced closed permits every call: a throttle is counted, not held.
    report(&mut sim, Throttled(Duration::from_secs(60)));
    assert_eq!(sim.breaker.throttled_until(), None);
    assert!(sim.breaker.try_acquire(sim.now()).is_ok());
    assert_eq!(sim.breaker.stats().throttles, 3);
}

mod without_traffic {
    //! Probes that no call asks for (`try_probe`), driven the way an adapter
    //! drives them: wake at `next_probe_at`, probe, record.

    use super::*;

    /// Opens a default-paced breaker, then sends no call at all: the caller
    /// only wakes at `next_probe_at` and probes, failing every probe until
    /// `succeed_at` (0-based). Returns the probe starts since opening.
    fn idle_probes(
        config: BreakerConfig,
        for_how_long: Duration,
        succeed_at: Option<usize>,
    ) -> (Sim, Vec<Duration>) {
        let mut sim = Sim::new(config).every(Duration::from_millis(1));
        run(&mut sim, "FFF");
        let opened = sim.elapsed;
        let mut starts = Vec::new();
        while let Some(at) = sim.breaker.next_probe_at() {
            let wait = at.saturating_duration_since(sim.now());
            sim.advance(wait);
            if sim.elapsed - opened > for_how_long {
                break;
            }
            let now = sim.now();
            let permit = sim.breaker.try_probe(now).expect("due at next_probe_at");
            assert!(permit.is_probe());
            assert!(
                sim.breaker.next_probe_at().is_none(),
                "no second probe while one is in flight"
            );
            let outcome = if succeed_at == Some(starts.len()) {
                Success
            } else {
                Failure
            };
            starts.push(sim.elapsed - opened);
            sim.breaker.record(permit, outcome, now);
        }
        (sim, starts)
    }

    #[test]
    fn a_quiet_caller_probes_at_the_backoff_times_up_to_the_cap() {
        let config = BreakerConfig::default();
        let (sim, starts) = idle_probes(config, Duration::from_secs(600), None);
        let cap = config.probe_after;
        assert_eq!(starts[0], config.min_probe_interval, "not jittered");
        let mut floor = config.min_probe_interval;
        for (n, pair) in starts.windows(2).enumerate() {
            floor = (floor * 2).min(cap);
            let wait = pair[1] - pair[0];
            assert!(
                wait >= floor / 2 && wait <= floor,
                "wait {n} is {wait:?}, floor {floor:?}: {starts:?}"
            );
            assert!(wait <= cap, "never longer than probe_after");
        }
        assert_eq!(floor, cap, "reached the cap: {starts:?}");
        // At the cap, waits are in [15 s, 30 s]: 600 s hold at least 20 of
        // them, on top of the five that climb to it.
        assert!(starts.len() >= 20, "{} probes in 600 s", starts.len());
        let waits: Vec<Duration> = starts.windows(2).map(|p| p[1] - p[0]).collect();
        let distinct: std::collections::BTreeSet<_> = waits.iter().rev().take(10).collect();
        assert!(distinct.len() > 1, "jittered, not fixed: {waits:?}");
        let stats = sim.breaker.stats();
        assert_eq!(stats.probes as usize, starts.len());
        assert_eq!(
            stats.rejected, 0,
            "a probe not given is not a rejected call"
        );
    }

    #[test]
    fn a_successful_idle_probe_closes_and_the_next_outage_starts_at_the_floor() {
        let config = BreakerConfig::default();
        // Five failed probes grow the floor to the 30 s cap; the sixth closes.
        let (mut sim, starts) = idle_probes(config, Duration::from_secs(600), Some(5));
        assert_eq!(starts.len(), 6, "{starts:?}");
        assert_eq!(sim.breaker.state(), Closed);
        assert_eq!(
            sim.breaker.next_probe_at(),
            None,
            "closed: nothing to probe"
        );
        let reasons: Vec<_> = sim.transitions().into_iter().map(|t| t.2).collect();
        assert_eq!(reasons.last(), Some(&TransitionReason::ProbeSucceeded));
        run(&mut sim, "FFF");
        assert_eq!(sim.breaker.state(), Open);
        let opened = sim.now();
        assert_eq!(
            sim.breaker.next_probe_at(),
            Some(opened + config.min_probe_interval),
            "the floor is back to min_probe_interval"
        );
    }

    #[test]
    fn idle_probes_do_not_renumber_attempts() {
        // Attempts 0, 10 and 20 probe when the floor allows, whatever idle
        // probes happened in between.
        let mut sim = Sim::new(unpaced());
        run(&mut sim, "FFF");
        let permit = sim
            .breaker
            .try_probe(sim.now())
            .expect("floor off: due at once");
        sim.breaker.record(permit, Failure, sim.now());
        let (pattern, _) = run(&mut sim, &"F".repeat(21));
        assert_eq!(pattern, "p---------p---------p");
    }

    #[test]
    fn an_idle_probe_holds_the_slot_against_a_real_probe() {
        let mut sim = Sim::new(BreakerConfig::default());
        run(&mut sim, "FFF");
        let early = sim.breaker.try_probe(sim.now()).unwrap_err();
        assert_eq!(
            (early.state, early.throttled_until),
            (Open, None),
            "the floor has not passed"
        );
        sim.advance(Duration::from_secs(1));
        let idle = sim.breaker.try_probe(sim.now()).unwrap();
        assert_eq!(sim.breaker.state(), HalfOpen);
        // Attempt 0 would have probed: the slot is taken.
        assert!(sim.breaker.try_acquire(sim.now()).is_err());
        sim.breaker.record(idle, Success, sim.now());
        assert_eq!(sim.breaker.state(), Closed);
        assert!(sim.breaker.try_acquire(sim.now()).is_ok());
    }

    #[test]
    fn a_lost_idle_probe_times_out_and_backs_off() {
        let config = BreakerConfig::default();
        let mut sim = Sim::new(config);
        run(&mut sim, "FFF");
        sim.advance(config.min_probe_interval);
        let _lost = sim.breaker.try_probe(sim.now()).unwrap();
        assert_eq!(sim.breaker.next_probe_at(), None);
        let deadline = sim.breaker.poll_timeout().expect("a probe is out");
        assert_eq!(deadline, sim.now() + config.probe_timeout);
        sim.advance(config.probe_timeout);
        sim.breaker.handle_timeout(sim.now());
        assert_eq!(sim.breaker.state(), Open);
        let next = sim.breaker.next_probe_at().expect("open again");
        let wait = next - sim.now();
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
    }

    #[test]
    fn nothing_probes_while_closed_or_held() {
        let mut sim = Sim::new(unpaced());
        assert_eq!(sim.breaker.next_probe_at(), None);
        assert!(sim.breaker.try_probe(sim.now()).is_err());
        sim.breaker.force_open(sim.now());
        assert_eq!(sim.breaker.mode(), Mode::ForcedOpen);
        assert_eq!(sim.breaker.next_probe_at(), None);
        assert!(sim.breaker.try_probe(sim.now()).is_err());
    }

    #[test]
    fn a_throttle_holds_idle_probes_too() {
        let mut sim = Sim::new(BreakerConfig::default());
        run(&mut sim, "FFF");
        sim.advance(Duration::from_secs(1));
        let probe = sim.breaker.try_probe(sim.now()).unwrap();
        let asked = sim.now() + Duration::from_secs(20);
        sim.breaker
            .record(probe, Throttled(Duration::from_secs(20)), sim.now());
        assert_eq!(sim.breaker.state(), Open, "a throttled probe reopens");
        assert!(
            sim.breaker.next_probe_at().unwrap() >= asked,
            "not before the hold ends"
        );
        sim.advance(Duration::from_secs(19));
        let held = sim.breaker.try_probe(sim.now()).unwrap_err();
        assert_eq!(held.throttled_until, Some(asked));
        sim.advance(Duration::from_secs(1));
        assert!(
            sim.breaker.try_probe(sim.now()).unwrap().is_probe(),
            "the hold is over"
        );
    }
}
