//! Deadlines of one core: a min-heap of (deadline, slot, session sequence), checked lazily,
//! and each session's one-shot timers. Time is in microseconds since the core started.
//!
//! Invariant: a session has at most one *current* entry, the one whose deadline equals the
//! session's `timer_at`; any other entry for it is stale and is dropped when it surfaces. Nothing
//! here runs per message: activity is recorded as a timestamp, and only when a deadline fires
//! does the core look at what the session did since. A session's one-shot timers
//! ([`SessionTimers`]) are one more of its deadlines: the heap holds no entry per timer, only
//! the session's one entry at the earliest of its deadlines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
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

/// Names a one-shot timer of a session (`Session::set_timer`), as `Handler::on_timer` and
/// `Session::cancel_timer` see it. Ids are handed out in increasing order per session; an id
/// means something only to the session that set the timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// Why `Session::set_timer` set no timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimerError {
    /// The session already has as many timers pending as it may (the builder's `max_timers`).
    TooMany {
        /// Timers a session may have pending.
        limit: usize,
    },
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimerError::TooMany { limit } => {
                write!(
                    f,
                    "the session already has {limit} timers pending (max_timers)"
                )
            }
        }
    }
}

impl std::error::Error for TimerError {}

impl From<TimerError> for io::Error {
    fn from(e: TimerError) -> io::Error {
        io::Error::other(e)
    }
}

/// The one-shot timers a session has pending, earliest last, so firing pops from the end. At
/// most `limit`: setting one is a binary search and a shift of at most that many entries, and
/// once the vector has grown to the most the session had pending, nothing is allocated.
#[derive(Debug)]
pub(crate) struct SessionTimers {
    /// (deadline, id), in decreasing order: equal deadlines fire in the order they were set.
    pending: Vec<(Micros, TimerId)>,
    next_id: u64,
    limit: usize,
}

impl SessionTimers {
    pub(crate) fn new(limit: usize) -> Self {
        SessionTimers {
            pending: Vec::new(),
            next_id: 0,
            limit,
        }
    }

    /// Adds a timer due at `at`.
    pub(crate) fn set(&mut self, at: Micros) -> Result<TimerId, TimerError> {
        if self.pending.len() >= self.limit {
            return Err(TimerError::TooMany { limit: self.limit });
        }
        let id = TimerId(self.next_id);
        self.next_id += 1;
        let i = self.pending.partition_point(|&e| e > (at, id));
        self.pending.insert(i, (at, id));
        Ok(id)
    }

    /// Removes a pending timer; `false` if `id` is not pending (fired, cancelled, unknown).
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        match self.pending.iter().rposition(|&(_, pending)| pending == id) {
            Some(i) => {
                self.pending.remove(i);
                true
            }
            None => false,
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Micros> {
        self.pending.last().map(|&(at, _)| at)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Micros) -> Option<TimerId> {
        match self.pending.last() {
            Some(&(at, _)) if at <= now => self.pending.pop().map(|(_, id)| id),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Drops every pending timer (the session is closing: none of them fires).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_timers_pop_in_deadline_order_then_order_set() {
        let mut t = SessionTimers::new(4);
        let a = t.set(30).unwrap();
        let b = t.set(10).unwrap();
        let c = t.set(30).unwrap();
        let d = t.set(20).unwrap();
        assert_eq!(t.set(5), Err(TimerError::TooMany { limit: 4 }));
        assert_eq!(t.next(), Some(10));
        assert!(t.cancel(d));
        assert!(!t.cancel(d), "cancelled twice");
        assert_eq!(t.pop_due(9), None);
        assert_eq!(t.pop_due(30), Some(b));
        assert_eq!(t.pop_due(30), Some(a));
        assert_eq!(t.pop_due(30), Some(c));
        assert_eq!(t.pop_due(30), None);
        assert_eq!((t.len(), t.next()), (0, None));
    }

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
