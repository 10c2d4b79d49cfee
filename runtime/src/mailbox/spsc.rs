//! A bounded single-producer single-consumer ring: the queue from one core to another.
//!
//! Invariant: slots `[head, tail)` hold values, every other slot is uninitialised; only the
//! producer writes `tail` and the slots at or past it, only the consumer writes `head` and
//! moves values out of the slots before it. `Producer` and `Consumer` are not `Clone`, so
//! "single" is in the types. Indices are free-running counters (wrapping), reduced by the mask
//! when they name a slot, so `tail - head` is the length even across wrap-around.
//!
//! The producer *stages* values past the published tail and publishes them all with one store
//! (`publish`), which is how a turn's messages to one target cost one release store; the
//! consumer drains a batch and publishes its head once.

use std::mem::MaybeUninit;

use super::sync::{Arc, AtomicUsize, CachePadded, Ordering, UnsafeCell};

struct Ring<T> {
    /// The next slot the consumer reads. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// One past the last slot the producer published. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: a slot is touched by one side at a time: the producer writes slots in
// `[tail, head + capacity)` and hands them over with a release store of `tail`; the consumer
// reads slots in `[head, tail)` and hands them back with a release store of `head`; each side
// acquires the other's index before touching a slot. Values cross threads, hence `T: Send`.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above; the ring owns its values.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Both handles are gone (this is the Arc's last reference, and the Arc's drop orders
        // their writes before this), so the published, unconsumed values are ours to drop.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut at = head;
        while at != tail {
            // SAFETY: slots in [head, tail) hold initialised values nobody else can reach.
            self.slots[at & self.mask].with_mut(|p| unsafe { (*p).assume_init_drop() });
            at = at.wrapping_add(1);
        }
    }
}

/// Builds a ring of `capacity` slots (a power of two, at least 1).
pub(super) fn ring<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(
        capacity.is_power_of_two(),
        "mailbox ring capacity {capacity} is not a power of two"
    );
    let ring = Arc::new(Ring {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots: (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect(),
        mask: capacity - 1,
    });
    let producer = Producer {
        ring: ring.clone(),
        staged: 0,
        published: 0,
        head: 0,
    };
    let consumer = Consumer {
        ring,
        head: 0,
        tail: 0,
    };
    (producer, consumer)
}

/// The writing end.
pub(super) struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// One past the last value written (published or not).
    staged: usize,
    /// The tail as last published.
    published: usize,
    /// The consumer's head as last read: the producer re-reads it only when the ring looks full.
    head: usize,
}

impl<T> Producer<T> {
    /// Writes `value` into the next free slot without publishing it; gives it back if the ring
    /// is full.
    pub(super) fn stage(&mut self, value: T) -> Result<(), T> {
        let capacity = self.ring.mask + 1;
        if self.staged.wrapping_sub(self.head) == capacity {
            // Acquire: the consumer's moves out of the slots before its head happen before
            // this producer overwrites them.
            self.head = self.ring.head.load(Ordering::Acquire);
            if self.staged.wrapping_sub(self.head) == capacity {
                return Err(value);
            }
        }
        let slot = &self.ring.slots[self.staged & self.ring.mask];
        // SAFETY: the slot is at or past the published tail and before head + capacity, so
        // the consumer does not touch it, and it holds no value (the consumer moved it out).
        slot.with_mut(|p| unsafe { (*p).write(value) });
        self.staged = self.staged.wrapping_add(1);
        Ok(())
    }

    /// Makes every staged value visible to the consumer with one release store. Returns
    /// whether there was anything to publish.
    pub(super) fn publish(&mut self) -> bool {
        if self.staged == self.published {
            return false;
        }
        // Release: the slot writes above happen before a consumer that acquires this tail
        // reads them.
        self.ring.tail.store(self.staged, Ordering::Release);
        self.published = self.staged;
        true
    }

    /// Drops the values staged but not published (for a target that is gone).
    pub(super) fn discard_staged(&mut self) {
        while self.staged != self.published {
            self.staged = self.staged.wrapping_sub(1);
            let slot = &self.ring.slots[self.staged & self.ring.mask];
            // SAFETY: staged slots are initialised and invisible to the consumer.
            slot.with_mut(|p| unsafe { (*p).assume_init_drop() });
        }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Values the consumer never saw: the ring's drop only knows the published ones.
        self.discard_staged();
    }
}

/// The reading end.
pub(super) struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// The next slot to read; published to the ring at the end of each `drain`.
    head: usize,
    /// The producer's tail as last read.
    tail: usize,
}

impl<T> Consumer<T> {
    /// Moves up to `max` values out, oldest first, handing each to `f`; publishes the new head
    /// once, at the end (also if `f` panics). Returns how many it took.
    pub(super) fn drain(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        if self.tail.wrapping_sub(self.head) < max {
            // Look for more than the cached tail promises (one load per drain, not per
            // value). Acquire: the producer's slot writes happen before the reads below.
            self.tail = self.ring.tail.load(Ordering::Acquire);
        }
        let n = self.tail.wrapping_sub(self.head).min(max);
        if n == 0 {
            return 0;
        }
        let guard = PublishHead {
            ring: &self.ring,
            head: &mut self.head,
        };
        for _ in 0..n {
            let slot = &guard.ring.slots[*guard.head & guard.ring.mask];
            // SAFETY: the slot is in [head, tail), initialised by the producer and published
            // by the tail acquired above; advancing head before calling `f` makes the move
            // final, so a panic in `f` cannot lead to reading it twice.
            let value = slot.with_mut(|p| unsafe { (*p).assume_init_read() });
            *guard.head = guard.head.wrapping_add(1);
            f(value);
        }
        n
    }

    /// Whether the ring holds nothing this consumer has not taken, by a plain (relaxed) read
    /// of the tail: the caller orders it (the sleep check runs it after a SeqCst fence).
    pub(super) fn looks_empty(&self) -> bool {
        self.ring.tail.load(Ordering::Relaxed) == self.head
    }
}

/// Publishes the consumer's head when a drain ends, normally or by a panic in its callback.
struct PublishHead<'a, T> {
    ring: &'a Ring<T>,
    head: &'a mut usize,
}

impl<T> Drop for PublishHead<'_, T> {
    fn drop(&mut self) {
        // Release: the moves out of the slots happen before the producer, acquiring this
        // head, overwrites them.
        self.ring.head.store(*self.head, Ordering::Release);
    }
}
