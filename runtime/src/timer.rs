//! Deadlines of one core: a min-heap of (deadline, slot, session sequence), checked lazily.
//! Time is in microseconds since the core started.
//!
//! Invariant: a session has at most one *current* entry, the one whose deadline equals the
//! session's `timer_at`; any other entry for it is stale and is dropped when it surfaces. Nothing
//! here runs per message: activity is recorded as a timestamp, and only when a deadline fires
//! does the core look at what the session did since.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Microseconds since the core started: the timers' clock, read once per loop turn.
pub(crate) type Micros = u64;

/// A per-core clock with microsecond ticks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Micros {
        self.base.elapsed().as_micros() as Micros
    }

    /// Microseconds from `now` to `at` as a wait bound (zero if past).
    pub(crate) fn until(&self, now: Micros, at: Micros) -> Duration {
        Duration::from_micros(at.saturating_sub(now))
    }

    /// The tick of an instant (clamped to the clock's start).
    pub(crate) fn at(&self, instant: Instant) -> Micros {
        instant.saturating_duration_since(self.base).as_micros() as Micros
    }
}

/// An entry: when, which slot, and which session (its sequence, unique on the core).
type Entry = Reverse<(Micros, u32, u64)>;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Entry>,
}

impl Timers {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Timers {
            heap: BinaryHeap::with_capacity(n),
        }
    }

    pub(crate) fn schedule(&mut self, at: Micros, slot: u32, seq: u64) {
        self.heap.push(Reverse((at, slot, seq)));
    }

    /// The earliest deadline, stale or not.
    pub(crate) fn next(&self) -> Option<Micros> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns an entry due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Micros) -> Option<(Micros, u32, u64)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_due_entries_in_deadline_order() {
        let mut t = Timers::default();
        t.schedule(30, 1, 1);
        t.schedule(10, 2, 2);
        t.schedule(20, 3, 3);
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25), Some((10, 2, 2)));
        assert_eq!(t.pop_due(25), Some((20, 3, 3)));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.next(), Some(30));
    }
}
