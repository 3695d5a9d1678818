//! The per-client limit on `/metrics`: a keyed GCRA limiter from `governor`
//! whose key map is pruned inline every [`CLEANUP_EVERY`] checks, so memory
//! stays bounded without a background task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
#[cfg(any(test, feature = "test-util"))]
use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::client_ip::ClientKey;

/// Checks between two inline prunings of idle clients. Between prunings at
/// most this many new keys can accumulate on top of the recently active ones.
pub(crate) const CLEANUP_EVERY: u64 = 1024;

/// A clock for the `/metrics` rate limiter that moves only when told to.
///
/// Pass it to [`TelemetryHttp::with_manual_clock`](crate::TelemetryHttp::with_manual_clock)
/// and call [`advance`](Self::advance) in tests instead of waiting for the
/// limiter to refill. Clones share one time. Only with the `test-util` feature.
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone, Debug, Default)]
pub struct ManualClock(FakeRelativeClock);

#[cfg(any(test, feature = "test-util"))]
impl ManualClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves this clock and all its clones forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.advance(by);
    }
}

/// The limiter's time source: the monotonic clock, or a [`ManualClock`].
#[derive(Clone, Debug)]
pub(crate) enum LimiterClock {
    Monotonic {
        origin: Instant,
    },
    #[cfg(any(test, feature = "test-util"))]
    Manual(ManualClock),
}

impl Clock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            Self::Monotonic { origin } => Nanos::from(origin.elapsed()),
            #[cfg(any(test, feature = "test-util"))]
            Self::Manual(clock) => clock.0.now(),
        }
    }
}

/// What the limiter says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Allowed,
    /// Over the limit; a request may conform again after this many whole
    /// seconds (rounded up, at least 1).
    Limited {
        retry_after_secs: u64,
    },
}

type KeyedLimiter =
    RateLimiter<ClientKey, HashMapStateStore<ClientKey>, LimiterClock, NoOpMiddleware<Nanos>>;

#[derive(Debug)]
pub(crate) struct MetricsRateLimiter {
    limiter: KeyedLimiter,
    checks: AtomicU64,
}

impl MetricsRateLimiter {
    pub(crate) fn new(quota: Quota, clock: LimiterClock) -> Self {
        Self {
            limiter: RateLimiter::hashmap_with_clock(quota, clock),
            checks: AtomicU64::new(0),
        }
    }

    pub(crate) fn check(&self, key: ClientKey) -> Decision {
        let count = self.checks.fetch_add(1, Ordering::Relaxed);
        if count % CLEANUP_EVERY == CLEANUP_EVERY - 1 {
            self.purge_idle();
        }
        match self.limiter.check_key(&key) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Decision::Limited {
                    retry_after_secs: whole_seconds_up(wait).max(1),
                }
            }
        }
    }

    /// Forgets clients whose budget has fully refilled: they are
    /// indistinguishable from clients never seen.
    pub(crate) fn purge_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub(crate) fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

/// `Retry-After` takes whole seconds; truncating would tell a client to come
/// back while it is still limited.
fn whole_seconds_up(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::TelemetryHttpConfig;

    fn limiter(clock: &ManualClock) -> MetricsRateLimiter {
        let quota = TelemetryHttpConfig::default().quota();
        MetricsRateLimiter::new(quota, LimiterClock::Manual(clock.clone()))
    }

    fn ip(n: u32) -> ClientKey {
        ClientKey::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn rounding_is_up_to_whole_seconds() {
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
        assert_eq!(whole_seconds_up(Duration::from_nanos(1)), 1);
        assert_eq!(whole_seconds_up(Duration::from_millis(5_999)), 6);
        assert_eq!(whole_seconds_up(Duration::from_secs(6)), 6);
    }

    #[test]
    fn retry_after_counts_down_with_the_clock_and_never_reaches_zero() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock);
        for _ in 0..10 {
            assert_eq!(limiter.check(ip(1)), Decision::Allowed);
        }
        assert_eq!(
            limiter.check(ip(1)),
            Decision::Limited {
                retry_after_secs: 6
            }
        );
        clock.advance(Duration::from_millis(5_500));
        assert_eq!(
            limiter.check(ip(1)),
            Decision::Limited {
                retry_after_secs: 1
            }
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(ip(1)), Decision::Allowed);
        assert_eq!(
            limiter.check(ip(1)),
            Decision::Limited {
                retry_after_secs: 6
            }
        );
    }

    #[test]
    fn inline_pruning_bounds_the_key_map_under_a_flood_of_one_shot_clients() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock);
        let mut largest = 0;
        for n in 0..20_000 {
            clock.advance(Duration::from_millis(10));
            assert_eq!(limiter.check(ip(n)), Decision::Allowed);
            largest = largest.max(limiter.tracked_clients());
        }
        // governor prunes a key once its theoretical arrival time (6 s after
        // a one-shot request) lies one emission interval (6 s) in the past:
        // 12 s = 1_200 steps. Pruning runs every 1_024 checks.
        let bound = 1_200 + CLEANUP_EVERY as usize;
        assert!(
            largest <= bound,
            "{largest} keys tracked, expected at most {bound}"
        );
    }

    #[test]
    fn explicit_purge_forgets_clients_whose_budget_refilled() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock);
        for n in 0..500 {
            let _ = limiter.check(ip(n));
        }
        for _ in 0..20 {
            let _ = limiter.check(ip(9_999));
        }
        assert_eq!(limiter.tracked_clients(), 501);
        clock.advance(Duration::from_secs(13));
        limiter.purge_idle();
        assert_eq!(limiter.tracked_clients(), 1);
        // The drained client kept its state: 13 s earned it two requests,
        // not a fresh burst of ten.
        assert_eq!(limiter.check(ip(9_999)), Decision::Allowed);
        assert_eq!(limiter.check(ip(9_999)), Decision::Allowed);
        assert!(matches!(limiter.check(ip(9_999)), Decision::Limited { .. }));
        clock.advance(Duration::from_secs(120));
        limiter.purge_idle();
        assert_eq!(limiter.tracked_clients(), 0);
    }
}
