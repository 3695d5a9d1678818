//! The contract's breaker semantics, as deterministic simulations on a
//! virtual clock: nothing here sleeps or reads the time twice.

use std::time::{Duration, Instant};

use breaker_core::{
    BreakerConfig, CircuitBreaker, CircuitState, Mode, Outcome, Transition, TransitionReason,
};

use CircuitState::{Closed, HalfOpen, Open};
use Outcome::{Failure, Success};
use std::num::NonZeroU32;

/// A count setting; test constants are never zero.
fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("count settings are at least 1")
}

/// A virtual clock: one real `Instant` as the origin, moved by hand.
struct Sim {
    origin: Instant,
    elapsed: Duration,
    breaker: CircuitBreaker,
}

impl Sim {
    fn new(config: BreakerConfig) -> Self {
        let origin = Instant::now();
        Self {
            origin,
            elapsed: Duration::ZERO,
            breaker: CircuitBreaker::new(config, origin),
        }
    }

    fn now(&self) -> Instant {
        self.origin + self.elapsed
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    /// One call, one millisecond later than the last: returns whether it was
    /// permitted, and if so reports `outcome` for it.
    fn call(&mut self, outcome: Outcome) -> bool {
        self.advance(Duration::from_millis(1));
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

/// Runs `script` (one outcome per call; `F` fails, `S` succeeds, if the call
/// is permitted) and returns which calls were permitted (`p`) or rejected
/// (`-`), and the final state.
fn run(sim: &mut Sim, script: &str) -> (String, CircuitState) {
    let seen = script
        .chars()
        .map(|c| {
            let outcome = if c == 'S' { Success } else { Failure };
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
    let mut sim = Sim::new(BreakerConfig::default());
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
    let config = BreakerConfig::DEFAULT.probe_timeout(Duration::from_secs(5));
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
    let mut sim = Sim::new(BreakerConfig::default());
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
    let config = BreakerConfig::DEFAULT
        .probe_every(nz(1))
        .max_probes_in_flight(nz(2));
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
    let script = "FFSFFFSFFFFFFFFFFFFFFFFFFFFSS";
    let (seen, _) = run(&mut sim, script);
    let stats = sim.breaker.stats();
    let permitted = seen.chars().filter(|&c| c == 'p').count() as u64;
    assert_eq!(stats.permitted, permitted);
    assert_eq!(stats.permitted + stats.rejected, script.len() as u64);
    assert_eq!(stats.successes + stats.failures, stats.permitted);
    assert_eq!(stats.since, sim.breaker.since());
}

#[test]
fn undrained_transitions_are_bounded() {
    let config = BreakerConfig::DEFAULT.failure_threshold(nz(1));
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
    let mut sim = Sim::new(BreakerConfig::default());
    run(&mut sim, "FFFF");
    let err = sim.breaker.try_acquire(sim.now()).unwrap_err();
    assert_eq!(err.state, Open);
    assert_eq!(err.to_string(), "circuit open: call rejected");
}

#[test]
fn probe_after_counts_from_the_end_of_a_slow_failed_probe() {
    // A probe that takes longer than probe_after (a hanging backend) must not
    // make every following attempt a probe.
    let config = BreakerConfig::DEFAULT
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
    let config = BreakerConfig::DEFAULT
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
