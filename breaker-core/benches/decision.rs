//! What one breaker decision costs: breaker-core against the `failsafe`
//! crate configured the same way (three consecutive failures open the
//! circuit; once open, nothing probes for an hour), measured in one criterion
//! run so both sides see the same machine.
//!
//! Rows, for each path (`closed_path`: permit + record a success;
//! `open_path`: a rejection):
//! - `1_thread/breaker-core`: the bare `&mut` state machine, `now` given.
//! - `1_thread/breaker-core+mutex`: behind a `std::sync::Mutex`, locked once
//!   to decide and once to record, as a multi-threaded adapter does.
//! - `*/breaker-core+mutex+clock`: the same, reading `Instant::now()`
//!   (outside the lock) before each locked section, as an adapter must;
//!   failsafe reads the clock itself, on its open path only.
//! - `*/failsafe`: `CircuitBreaker::call`, which locks its own
//!   `parking_lot` mutex to decide and again to record.
//! - `2_threads/*`: two threads calling one shared breaker; the time shown is
//!   wall time divided by the calls both threads made.
//!
//! Every breaker-core row drains the transitions after each locked section,
//! as the calling protocol asks.

use std::hint::black_box;
use std::sync::{Barrier, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use breaker_core::{BreakerConfig, CircuitBreaker, CircuitState, Outcome};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{CircuitBreaker as _, Error as FailsafeError, StateMachine};
use std::num::NonZeroU32;

/// A count setting; test constants are never zero.
fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("count settings are at least 1")
}

const FAILURE_THRESHOLD: u32 = 3;
/// Far longer than a run: an open circuit stays open and rejecting.
const NO_PROBE_FOR: Duration = Duration::from_secs(3600);

type Failsafe = StateMachine<ConsecutiveFailures<Constant>, ()>;

#[derive(Debug, Clone, Copy)]
enum Path {
    /// Every call is permitted and succeeds.
    Closed,
    /// Every call is rejected.
    Open,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed_path",
            Self::Open => "open_path",
        }
    }

    /// What the backend answers to a call that gets through.
    fn outcome(self) -> Outcome {
        match self {
            Self::Closed => Outcome::Success,
            Self::Open => Outcome::Failure,
        }
    }

    fn permits(self) -> bool {
        matches!(self, Self::Closed)
    }

    fn core(self, now: Instant) -> CircuitBreaker {
        // Probing only every 2^32-1 attempts or after an hour is this
        // side's "long backoff". No time floor, so that the setup's attempt 0
        // probes at once, as the check after the measurements expects.
        let config = BreakerConfig::DEFAULT
            .failure_threshold(nz(FAILURE_THRESHOLD))
            .probe_every(nz(u32::MAX))
            .probe_after(NO_PROBE_FOR)
            .min_probe_interval(Duration::ZERO);
        let mut breaker = CircuitBreaker::new(config, now);
        if let Self::Open = self {
            // Three failures open it; attempt 0 probes and fails, so every
            // later attempt is rejected.
            for _ in 0..=FAILURE_THRESHOLD {
                core_call(&mut breaker, now, Outcome::Failure);
            }
            assert_eq!(breaker.state(), CircuitState::Open);
        }
        breaker
    }

    fn failsafe(self) -> Failsafe {
        let policy = failure_policy::consecutive_failures(
            FAILURE_THRESHOLD,
            backoff::constant(NO_PROBE_FOR),
        );
        let breaker = failsafe::Config::new().failure_policy(policy).build();
        if let Self::Open = self {
            for _ in 0..FAILURE_THRESHOLD {
                failsafe_call(&breaker, Outcome::Failure);
            }
            assert!(!breaker.is_call_permitted(), "failsafe is open");
        }
        breaker
    }
}

fn drain(breaker: &mut CircuitBreaker) {
    while let Some(transition) = breaker.poll_transition() {
        black_box(transition);
    }
}

/// One call through the bare state machine; true if it was permitted.
fn core_call(breaker: &mut CircuitBreaker, now: Instant, outcome: Outcome) -> bool {
    let decision = breaker.try_acquire(now);
    let permitted = match decision {
        Ok(permit) => {
            breaker.record(permit, black_box(outcome), now);
            true
        }
        Err(rejected) => {
            black_box(rejected);
            false
        }
    };
    drain(breaker);
    permitted
}

fn lock(shared: &Mutex<CircuitBreaker>) -> MutexGuard<'_, CircuitBreaker> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One call as a threaded adapter makes it: decide under the lock, call the
/// backend without it, record under the lock again.
fn locked_call(
    shared: &Mutex<CircuitBreaker>,
    now: impl Fn() -> Instant,
    outcome: Outcome,
) -> bool {
    // The clock is read before locking, so it never lengthens the lock.
    let asked = now();
    let decision = {
        let mut breaker = lock(shared);
        let decision = breaker.try_acquire(asked);
        drain(&mut breaker);
        decision
    };
    match decision {
        Ok(permit) => {
            let answered = now();
            let mut breaker = lock(shared);
            breaker.record(permit, black_box(outcome), answered);
            drain(&mut breaker);
            true
        }
        Err(rejected) => {
            black_box(rejected);
            false
        }
    }
}

fn failsafe_call(breaker: &Failsafe, outcome: Outcome) -> bool {
    let answer = match black_box(outcome) {
        Outcome::Success => Ok(()),
        // failsafe has no other classes; the benchmark reports none.
        Outcome::Failure | Outcome::Refused | Outcome::Throttled(_) => Err(()),
    };
    !matches!(breaker.call(|| answer), Err(FailsafeError::Rejected))
}

/// Runs `call` `iters` times on each of two threads at once, each thread
/// with its own handle to the shared breaker, and returns the wall time per
/// call made.
fn on_two_threads<H: Send>(
    handles: [H; 2],
    iters: u64,
    call: impl Fn(&H) -> bool + Sync,
) -> Duration {
    let barrier = Barrier::new(2);
    let spans: Vec<(Instant, Instant)> = thread::scope(|scope| {
        let workers: Vec<_> = handles
            .into_iter()
            .map(|handle| {
                let (barrier, call) = (&barrier, &call);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(call(&handle));
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a benchmark thread panicked"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min();
    let end = spans.iter().map(|s| s.1).max();
    match (start, end) {
        (Some(start), Some(end)) => (end - start) / 2,
        _ => Duration::ZERO,
    }
}

fn bench_path(c: &mut Criterion, path: Path) {
    let outcome = path.outcome();
    let mut group = c.benchmark_group(path.name());

    let now = Instant::now();
    let mut bare = path.core(now);
    assert_eq!(core_call(&mut bare, now, outcome), path.permits());
    group.bench_function(BenchmarkId::new("1_thread", "breaker-core"), |b| {
        b.iter(|| core_call(&mut bare, black_box(now), outcome));
    });

    let shared = Mutex::new(path.core(now));
    let given = || black_box(now);
    assert_eq!(locked_call(&shared, given, outcome), path.permits());
    group.bench_function(BenchmarkId::new("1_thread", "breaker-core+mutex"), |b| {
        b.iter(|| locked_call(&shared, given, outcome));
    });

    let clocked = Mutex::new(path.core(Instant::now()));
    assert_eq!(locked_call(&clocked, Instant::now, outcome), path.permits());
    group.bench_function(
        BenchmarkId::new("1_thread", "breaker-core+mutex+clock"),
        |b| b.iter(|| locked_call(&clocked, Instant::now, outcome)),
    );

    let failsafe = path.failsafe();
    assert_eq!(failsafe_call(&failsafe, outcome), path.permits());
    group.bench_function(BenchmarkId::new("1_thread", "failsafe"), |b| {
        b.iter(|| failsafe_call(&failsafe, outcome));
    });

    let shared = Mutex::new(path.core(now));
    group.bench_function(BenchmarkId::new("2_threads", "breaker-core+mutex"), |b| {
        b.iter_custom(|iters| {
            on_two_threads([&shared, &shared], iters, |s| {
                locked_call(s, given, outcome)
            })
        });
    });

    let clocked = Mutex::new(path.core(Instant::now()));
    group.bench_function(
        BenchmarkId::new("2_threads", "breaker-core+mutex+clock"),
        |b| {
            b.iter_custom(|iters| {
                on_two_threads([&clocked, &clocked], iters, |s| {
                    locked_call(s, Instant::now, outcome)
                })
            });
        },
    );

    let failsafe = path.failsafe();
    group.bench_function(BenchmarkId::new("2_threads", "failsafe"), |b| {
        b.iter_custom(|iters| {
            let handles = [failsafe.clone(), failsafe.clone()];
            on_two_threads(handles, iters, |breaker| failsafe_call(breaker, outcome))
        });
    });
    group.finish();

    // The rows measured what they claim: the state never changed, and on the
    // open path no call got through after the setup (three failures and
    // the probe of attempt 0).
    for breaker in [&bare, &*lock(&shared), &*lock(&clocked)] {
        let stats = breaker.stats();
        match path {
            Path::Closed => assert_eq!((stats.state, stats.rejected), (CircuitState::Closed, 0)),
            Path::Open => assert_eq!(
                (stats.state, stats.permitted),
                (CircuitState::Open, u64::from(FAILURE_THRESHOLD) + 1)
            ),
        }
    }
    assert_eq!(failsafe.is_call_permitted(), path.permits());
}

fn closed_path(c: &mut Criterion) {
    bench_path(c, Path::Closed);
}

fn open_path(c: &mut Criterion) {
    bench_path(c, Path::Open);
}

criterion_group! {
    name = decision;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_millis(2500))
        .sample_size(30);
    targets = closed_path, open_path
}
criterion_main!(decision);
