//! A bounded multi-producer single-consumer queue: the way into a core for threads that are not
//! cores (an offload pool, a control thread), whose number is not known when the mesh is built.
//!
//! It is Dmitry Vyukov's bounded queue with the consumer side specialised to one thread. Each
//! slot carries a sequence number: `pos` when it is free for the producer that claims position
//! `pos`, `pos + 1` once that producer has written it, `pos + capacity` once the consumer has
//! taken it (free for the next lap). Producers claim positions with a CAS on `tail`; the
//! consumer owns `head`. Invariant: a slot holds a value exactly when its sequence is
//! `pos + 1` for the position `pos` it serves.
//!
//! Why lock-free rather than a mutex (which this path could afford, its senders being few): the
//! consumer is a service core, and a mutex would let an off-core thread that is descheduled
//! while holding it stall the core's drain. Here a producer preempted between its claim and its
//! write delays only the values behind its slot, and only until it runs again; the consumer
//! never waits, it sees "empty" and goes on.

use std::mem::MaybeUninit;

use super::sync::{Arc, AtomicUsize, CachePadded, Ordering, UnsafeCell};

struct Slot<T> {
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

struct Queue<T> {
    /// The next position a producer claims.
    tail: CachePadded<AtomicUsize>,
    /// The next position the consumer reads (written by the consumer only, read by `drop`).
    head: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    mask: usize,
}

// SAFETY: a slot's value is written only by the producer whose CAS claimed its position and
// read only by the consumer after it acquired the sequence that producer released; the
// consumer releases the slot back with the next lap's sequence, which producers acquire.
unsafe impl<T: Send> Sync for Queue<T> {}
// SAFETY: as above; the queue owns its values.
unsafe impl<T: Send> Send for Queue<T> {}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        // No handle is left, so no producer is between its claim and its write: the values
        // are the slots from head on whose sequence says "written".
        let mut at = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[at & self.mask];
            if slot.seq.load(Ordering::Relaxed) != at.wrapping_add(1) {
                break;
            }
            // SAFETY: the sequence says the slot holds the value for position `at`.
            slot.value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            at = at.wrapping_add(1);
        }
    }
}

/// Builds a queue of `capacity` slots (a power of two, at least 2: with one slot "written" and
/// "free for the next lap" would be the same sequence).
pub(super) fn queue<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(
        capacity.is_power_of_two() && capacity >= 2,
        "mailbox off-core queue capacity {capacity} is not a power of two of at least 2"
    );
    let queue = Arc::new(Queue {
        tail: CachePadded(AtomicUsize::new(0)),
        head: CachePadded(AtomicUsize::new(0)),
        slots: (0..capacity)
            .map(|i| Slot {
                seq: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect(),
        mask: capacity - 1,
    });
    (
        Producer {
            queue: queue.clone(),
        },
        Consumer { queue, head: 0 },
    )
}

/// A writing end; clone it for each thread.
pub(super) struct Producer<T> {
    queue: Arc<Queue<T>>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer {
            queue: self.queue.clone(),
        }
    }
}

impl<T> Producer<T> {
    /// Appends `value` and publishes it; gives it back if the queue is full.
    pub(super) fn push(&self, value: T) -> Result<(), T> {
        let q = &*self.queue;
        let mut pos = q.tail.load(Ordering::Relaxed);
        loop {
            let slot = &q.slots[pos & q.mask];
            // Acquire: the consumer's move out of this slot (last lap) happens before our
            // write into it.
            let seq = slot.seq.load(Ordering::Acquire);
            let lag = seq.wrapping_sub(pos) as isize;
            if lag == 0 {
                // Free for `pos`: claim it. Relaxed: the claim orders nothing by itself; the
                // slot's sequence carries the hand-over.
                match q.tail.compare_exchange(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: our CAS claimed `pos`, and its sequence says the consumer
                        // is done with the slot: nobody else touches it until we release it.
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        // Release: the write above happens before the consumer reads it.
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if lag < 0 {
                // The slot still holds the value of the previous lap: full.
                return Err(value);
            } else {
                // Another producer claimed `pos` meanwhile.
                pos = q.tail.load(Ordering::Relaxed);
            }
        }
    }
}

/// The reading end.
pub(super) struct Consumer<T> {
    queue: Arc<Queue<T>>,
    head: usize,
}

impl<T> Consumer<T> {
    /// Moves up to `max` values out, oldest first, handing each to `f`. Stops early at a slot
    /// claimed but not yet written. Returns how many it took.
    pub(super) fn drain(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let q = &*self.queue;
        let mut n = 0;
        while n < max {
            let slot = &q.slots[self.head & q.mask];
            // Acquire: the producer's write happens before our read.
            if slot.seq.load(Ordering::Acquire) != self.head.wrapping_add(1) {
                break;
            }
            // SAFETY: the sequence says the slot holds the value for `head`, and only this
            // consumer reads it.
            let value = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
            // Release: our read happens before the producer of the next lap writes.
            slot.seq
                .store(self.head.wrapping_add(q.mask + 1), Ordering::Release);
            self.head = self.head.wrapping_add(1);
            q.head.store(self.head, Ordering::Relaxed);
            n += 1;
            f(value);
        }
        n
    }

    /// Whether the next slot is not (yet) written, by a relaxed read: the caller orders it.
    pub(super) fn looks_empty(&self) -> bool {
        let q = &*self.queue;
        q.slots[self.head & q.mask].seq.load(Ordering::Relaxed) != self.head.wrapping_add(1)
    }
}
