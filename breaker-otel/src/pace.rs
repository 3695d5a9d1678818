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

use std::cell::Cell;

/// Spans between two yields: some 30 to 60 µs of encoding on the 2-CPU bench machine,
/// for a system call that costs well under 1 µs.
const SPANS_PER_YIELD: u32 = 32;

thread_local! {
    /// Spans left before this thread yields; 0 on a thread that never does.
    static COUNTDOWN: Cell<u32> = const { Cell::new(0) };
}

/// Makes the calling thread yield every [`SPANS_PER_YIELD`] spans of export work.
pub(crate) fn background() {
    COUNTDOWN.set(SPANS_PER_YIELD);
}

/// One span's piece of export work is done; yields now and then on a background thread.
#[inline]
pub(crate) fn span_done() {
    COUNTDOWN.with(|countdown| match countdown.get() {
        0 => {}
        1 => {
            std::thread::yield_now();
            countdown.set(SPANS_PER_YIELD);
        }
        left => countdown.set(left - 1),
    });
}
