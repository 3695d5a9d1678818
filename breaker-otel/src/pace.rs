//! Long CPU work on a background telemetry thread, given up between pieces.
//!
//! Linux's scheduler lets a thread it has picked run out its time slice (1.5 ms on a
//! 2-CPU machine) before a request thread that wakes meanwhile gets the CPU, whatever the
//! thread's nice level: nice 19 makes a thread run rarely, not briefly. Encoding a batch
//! of 512 spans is about a millisecond of work, so a request that came in while it ran
//! waited for the whole of it, and under saturation that wait was the p99
//! (`docs/pipeline.md`). A thread marked with [`background`] calls `sched_yield` every
//! [`SPANS_PER_YIELD`] spans it encodes or drops: a request thread that is waiting runs
//! at once, and the export goes on after it; when none is waiting, the call returns
//! straight away.
//!
//! A yield can wait long: behind threads that never sleep, a nice-19 thread that gave
//! its turn away gets it back some 100 ms later. So the yields of one batch may cost it
//! at most [`WAIT_PER_BATCH`] in all; past that the batch is encoded at nice 19 alone.
//! Its export is then late by a fraction of a second at worst, never by enough to look
//! like a backend that does not answer (`export_timeout`, 10 s by default).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Spans between two yields: some 30 to 60 µs of encoding on the 2-CPU bench machine,
/// for a system call that costs well under 1 µs.
const SPANS_PER_YIELD: u32 = 32;

/// The most a batch's yields may delay it.
const WAIT_PER_BATCH: Duration = Duration::from_millis(100);

/// One thread's pacing.
#[derive(Clone, Copy)]
struct Pacing {
    /// Spans left before the next yield; 0 on a thread that never yields.
    countdown: u32,
    /// What the yields may still cost the current batch.
    left: Duration,
}

thread_local! {
    static PACING: Cell<Pacing> = const {
        Cell::new(Pacing { countdown: 0, left: Duration::ZERO })
    };
}

/// Makes the calling thread yield every [`SPANS_PER_YIELD`] spans of export work.
pub(crate) fn background() {
    PACING.set(Pacing {
        countdown: SPANS_PER_YIELD,
        left: WAIT_PER_BATCH,
    });
}

/// A batch's export work begins: its yields may cost it [`WAIT_PER_BATCH`] again.
pub(crate) fn batch_begins() {
    PACING.with(|pacing| {
        let mut now = pacing.get();
        now.left = WAIT_PER_BATCH;
        pacing.set(now);
    });
}

/// One span's piece of export work is done; yields now and then on a background thread.
#[inline]
pub(crate) fn span_done() {
    PACING.with(|pacing| {
        let mut now = pacing.get();
        match now.countdown {
            0 => return,
            1 if !now.left.is_zero() => {
                let before = Instant::now();
                std::thread::yield_now();
                now.left = now.left.saturating_sub(before.elapsed());
                now.countdown = SPANS_PER_YIELD;
            }
            // The batch's waiting is spent: counting on, yielding no more.
            1 => now.countdown = SPANS_PER_YIELD,
            left => now.countdown = left - 1,
        }
        pacing.set(now);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each batch may be delayed by its yields for a bounded time, and a thread that is not
    /// marked never yields at all.
    #[test]
    fn a_batch_yields_until_its_waiting_is_spent() {
        std::thread::spawn(|| {
            for _ in 0..SPANS_PER_YIELD * 4 {
                span_done();
            }
            assert_eq!(
                PACING.get().countdown,
                0,
                "an unmarked thread counts nothing"
            );

            background();
            for _ in 0..SPANS_PER_YIELD {
                span_done();
            }
            let after_one = PACING.get();
            assert_eq!(after_one.countdown, SPANS_PER_YIELD);
            assert!(
                after_one.left < WAIT_PER_BATCH,
                "the yield's wait is charged"
            );

            PACING.set(Pacing {
                countdown: 1,
                left: Duration::ZERO,
            });
            span_done();
            assert_eq!(PACING.get().left, Duration::ZERO, "no yield once spent");
            batch_begins();
            assert_eq!(
                PACING.get().left,
                WAIT_PER_BATCH,
                "a new batch may wait again"
            );
        })
        .join()
        .unwrap();
    }
}
