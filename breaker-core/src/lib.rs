//! A sans-I/O circuit breaker: a small state machine that decides whether a
//! call to a failing backend should be made, and reports every change of
//! state as an event the caller drains.
//!
//! It deliberately does nothing else. It reads no clock (every call takes
//! `now`), spawns no thread, does no I/O, locks nothing and calls nothing
//! back; it depends on `std` alone. The adapters that drive it (such as
//! `breaker-otel`) own the clock, the lock and the backend.
//!
//! The semantics, in short: closed permits everything and opens after
//! `failure_threshold` consecutive failures; open numbers its attempts from 0
//! and lets attempt `k` through as a probe when `k % probe_every == 0` or
//! `probe_after` has passed since the last probe (started or failed), but
//! never sooner than a floor after the last probe ended (or the circuit
//! opened): `min_probe_interval`, doubled with jitter after each failed
//! probe, at most `probe_after`. Half-open has a probe in flight and rejects
//! the rest; a probe's success closes the circuit, its failure or timeout
//! reopens it. Jitter comes from a small deterministic generator inside the
//! machine, seeded by the caller or by a fixed default. Besides success and
//! failure, a call can be refused (the backend is up but refused its data:
//! no failure) or throttled (the backend asked to hold off: every call is
//! rejected for that long, at most `max_throttle`, whatever the state); see
//! [`Outcome`]. See [`CircuitBreaker`] for the calling
//! protocol and [`CircuitState`] for the diagram.

mod config;
mod machine;
mod state;

pub use config::{BreakerConfig, Setting, VisitSettings};
pub use machine::{CircuitBreaker, DEFAULT_JITTER_SEED, Mode, Outcome, Permit, Rejected, Stats};
pub use state::{CircuitState, REACHABLE_TRANSITIONS, Transition, TransitionReason};
