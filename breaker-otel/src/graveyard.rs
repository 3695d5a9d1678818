//! Exported spans, freed by the threads that end spans rather than by the export thread.
//!
//! A span's attributes, name and attribute list are allocated by the request thread that
//! records it. Freed on the export thread, glibc's allocator sends each block back the slow
//! way: the export thread's per-thread cache fills at once and the rest goes to the arena
//! under its lock, while the request thread, which only ever allocates, finds its own
//! cache empty and takes every block from the arena. Both ends pay the slow path for every
//! block; callgrind put it at some 500 instructions a span (`docs/pipeline.md`). Here the
//! exporter, once a batch is encoded, leaves its spans in the [`Graveyard`], and each span
//! that ends frees one of them ([`Graveyard::drop_one`]) on its own thread: blocks go back
//! to the cache of a thread that allocates the same sizes, and come out of it again.
//!
//! A thread that ends a span never waits here: it only ever tries the lock, and a span it
//! could not free is freed by the next. The graveyard holds at most its capacity (the
//! queue's, in the pipeline: the export loop empties a full queue batch after batch);
//! past that the export thread frees the oldest itself.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};

use opentelemetry_sdk::trace::SpanData;

/// Spans the exporter is done with, waiting for a thread that ends a span to free them.
pub(crate) struct Graveyard {
    spans: Mutex<Vec<SpanData>>,
    /// Whether any span is waiting: a thread that ends a span and finds none takes no lock.
    occupied: AtomicBool,
    capacity: usize,
}

impl fmt::Debug for Graveyard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graveyard")
            .field("occupied", &self.occupied.load(Ordering::Relaxed))
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Graveyard {
    /// A graveyard for at most `capacity` spans (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            spans: Mutex::new(Vec::new()),
            occupied: AtomicBool::new(false),
            capacity: capacity.max(1),
        }
    }

    /// Leaves an exported batch's spans here (on the export thread). Past the capacity, the
    /// oldest waiting spans are freed here and now.
    pub(crate) fn bury(&self, mut batch: Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let surplus = {
            let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
            if spans.is_empty() {
                // The usual case, the previous batch all freed: no span moves.
                std::mem::swap(&mut *spans, &mut batch);
            } else {
                spans.append(&mut batch);
            }
            let over = spans.len().saturating_sub(self.capacity);
            let surplus: Vec<SpanData> = spans.drain(..over).collect();
            self.occupied.store(!spans.is_empty(), Ordering::Release);
            surplus
        };
        // Outside the lock, so that threads ending spans go on freeing meanwhile.
        drop(surplus);
    }

    /// Frees one waiting span, if there is one and no other thread is at it (a thread that
    /// ends a span calls this: one freed per span ended keeps up with what is exported).
    #[inline]
    pub(crate) fn drop_one(&self) {
        if !self.occupied.load(Ordering::Acquire) {
            return;
        }
        let mut spans = match self.spans.try_lock() {
            Ok(spans) => spans,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // Freed in place, under the lock: popping it out would copy the whole span first.
        let left = spans.len().saturating_sub(1);
        spans.truncate(left);
        if left == 0 {
            self.occupied.store(false, Ordering::Release);
        }
    }

    /// How many spans are waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::KeyValue;

    use super::*;
    use crate::test_util::spans;

    /// A span whose attribute holds `marker`: the span is freed when the marker's count
    /// drops back.
    fn marked(marker: &Arc<str>) -> SpanData {
        let mut span = spans(1).pop().unwrap();
        span.attributes = vec![KeyValue::new("marker", Arc::clone(marker))];
        span
    }

    #[test]
    fn each_span_ended_frees_one_exported_span() {
        let marker: Arc<str> = Arc::from("marker");
        let graveyard = Graveyard::new(16);
        graveyard.bury((0..3).map(|_| marked(&marker)).collect());
        assert_eq!(Arc::strong_count(&marker), 4);

        graveyard.drop_one();
        assert_eq!(Arc::strong_count(&marker), 3);
        graveyard.drop_one();
        graveyard.drop_one();
        assert_eq!(Arc::strong_count(&marker), 1);
        assert_eq!(graveyard.len(), 0);
        // Nothing left: a no-op.
        graveyard.drop_one();
    }

    #[test]
    fn a_batch_left_while_spans_wait_joins_them_and_the_capacity_holds() {
        let marker: Arc<str> = Arc::from("marker");
        let graveyard = Graveyard::new(5);
        graveyard.bury((0..3).map(|_| marked(&marker)).collect());
        graveyard.bury((0..4).map(|_| marked(&marker)).collect());
        // Seven buried, two of them past the capacity: freed by `bury` itself.
        assert_eq!(graveyard.len(), 5);
        assert_eq!(Arc::strong_count(&marker), 6);
        for _ in 0..5 {
            graveyard.drop_one();
        }
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    #[test]
    fn a_thread_that_cannot_take_the_lock_moves_on() {
        let marker: Arc<str> = Arc::from("marker");
        let graveyard = Graveyard::new(16);
        graveyard.bury(vec![marked(&marker)]);
        let held = graveyard.spans.lock().unwrap();
        // Would block: returns at once, frees nothing.
        graveyard.drop_one();
        drop(held);
        assert_eq!(Arc::strong_count(&marker), 2);
        graveyard.drop_one();
        assert_eq!(Arc::strong_count(&marker), 1);
    }
}
