//! A core's receiving side: its rings from every core, its off-core queue, and its half of the
//! sleep protocol.

use super::sync::{fence, Arc, CachePadded, Ordering};
use super::{mpsc, spsc, Source, Target};

/// The messages waiting for one core. Owned by that core's thread (`Send`, not `Sync`).
///
/// A turn of the worker: `drain` at the top (bounded work); when it would block,
/// `prepare_sleep` and, only if it returns true, wait on the doorbell with the other events,
/// then `woke`.
pub(crate) struct Inbox<T> {
    core: usize,
    /// `rings[c]`: the ring from core `c`.
    rings: Vec<spsc::Consumer<T>>,
    remote: mpsc::Consumer<T>,
    target: Arc<CachePadded<Target>>,
    /// The source the next drain starts with (rotates, so no source starves the others).
    next: usize,
    closed: bool,
}

impl<T> Inbox<T> {
    pub(super) fn new(
        core: usize,
        rings: Vec<spsc::Consumer<T>>,
        remote: mpsc::Consumer<T>,
        target: Arc<CachePadded<Target>>,
    ) -> Self {
        Inbox {
            core,
            rings,
            remote,
            target,
            next: 0,
            closed: false,
        }
    }

    /// The core this inbox belongs to.
    pub(crate) fn core(&self) -> usize {
        self.core
    }

    /// Hands up to `budget` waiting messages to `f`, in order per source, visiting the sources
    /// round-robin from a point that moves on every call. Returns how many it handed over; a
    /// result equal to `budget` means more may be waiting (the worker then does not sleep:
    /// [`prepare_sleep`](Self::prepare_sleep) would say so too).
    pub(crate) fn drain(&mut self, budget: usize, mut f: impl FnMut(Source, T)) -> usize {
        let sources = self.rings.len() + 1;
        let mut taken = 0;
        let mut visited = 0;
        let start = self.next;
        while visited < sources && taken < budget {
            let at = (start + visited) % sources;
            let left = budget - taken;
            taken += match self.rings.get_mut(at) {
                Some(ring) => ring.drain(left, |m| f(Source::Core(at), m)),
                None => self.remote.drain(left, |m| f(Source::Remote, m)),
            };
            visited += 1;
        }
        // Start the next drain after the last source visited: one cut short by the budget
        // goes last next time; with budget to spare, the start still moves on by one.
        self.next = (start + visited.max(1)) % sources;
        taken
    }

    /// Announces that this core is about to block, then looks at every queue once more.
    /// Returns true if it may block (every queue was empty after the announcement: any later
    /// message comes with a ring of the doorbell); false if something arrived, in which case
    /// the announcement is withdrawn and the caller drains instead of blocking.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.target.sleeping.store(true, Ordering::Relaxed);
        // The consumer's half of the Dekker pair (the producer's is in `Outbox::flush` and
        // `Remote::send`): store flag; SeqCst fence; load tails. The producer does: store
        // tail; SeqCst fence; load flag. SeqCst fences are totally ordered (the single order
        // S), and a load after the later fence in S sees the store before the earlier one
        // (C++ [atomics.fences]). So either this fence comes first and the producer's flag
        // load sees `true` (it rings), or the producer's fence comes first and the loads below
        // see its tail (we do not sleep). Without the fences both loads may read the old
        // values (store buffering: each store still sits in its core's store buffer) and the
        // core sleeps on a message. Relaxed is enough for the accesses themselves: the fences
        // order them, and a message we see is read later through an acquire in `drain`.
        fence(Ordering::SeqCst);
        let empty = self.rings.iter().all(spsc::Consumer::looks_empty) && self.remote.looks_empty();
        if !empty {
            self.target.sleeping.store(false, Ordering::Relaxed);
        }
        empty
    }

    /// Withdraws the sleep announcement once the core runs again (woken by the doorbell or by
    /// anything else). Until then every producer that publishes to this core rings it.
    pub(crate) fn woke(&self) {
        // Relaxed: a producer that still reads `true` rings once for nothing (a spurious
        // wake-up, harmless); one that reads `false` relies on this core being awake, which it
        // is, and on its next `prepare_sleep`: if that one's fence comes before the producer's
        // in S, the producer would have read its `true` (or a later value), not this `false`;
        // so it comes after, and its final look sees the producer's message.
        self.target.sleeping.store(false, Ordering::Relaxed);
    }

    /// Closes the mailbox: every later send to this core fails with
    /// [`SendError::Closed`](super::SendError::Closed), and the messages waiting now are
    /// handed to `f` (in order per source) so that whoever waits for them can be told.
    /// Dropping the inbox closes it the same way and drops them.
    ///
    /// Messages a producer publishes while the close runs (it read the mailbox as open just
    /// before) are not delivered either: they are dropped when the last handle to their queue
    /// goes (the mesh's drop), or by the producer's next flush if it has not published them
    /// yet. Every message a send accepted is thus delivered by `drain`, handed to `close`'s
    /// `f`, or dropped, exactly once; its `Drop` is the place to fail a waiting reply.
    pub(crate) fn close(mut self, f: impl FnMut(Source, T)) {
        self.shut(f);
    }

    fn shut(&mut self, mut f: impl FnMut(Source, T)) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.target.closed.store(true, Ordering::Release);
        // One pass: a producer that has not seen the flag yet may still publish, and looping
        // until it stops would tie the close to its timing. The queues' drops take the rest.
        self.drain(usize::MAX, &mut f);
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        self.shut(|_, m| drop(m));
    }
}
