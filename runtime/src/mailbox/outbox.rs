//! The sending sides: a core's [`Outbox`] (batched per turn, spilling to a local overflow) and
//! [`Remote`], the handle of threads that are not cores.

use std::collections::VecDeque;

use super::sync::{fence, Arc, CachePadded, Ordering};
use super::{mpsc, spsc, Bell, SendError, Target};

/// One core's way to every core's inbox. Owned by that core's thread.
///
/// During a turn, [`push`](Self::push) each message; at the end of the turn,
/// [`flush`](Self::flush) once: it publishes what was pushed and rings each sleeping target at
/// most once.
pub(crate) struct Outbox<T> {
    core: usize,
    /// `lanes[c]`: the way to core `c`.
    lanes: Vec<Lane<T>>,
    /// Targets pushed to since the last flush, or with an overflow left over: each listed once.
    dirty: Vec<usize>,
    /// Scratch for `flush`: the targets it published to.
    published: Vec<usize>,
    /// Messages in all overflow queues.
    backlog: usize,
}

struct Lane<T> {
    ring: spsc::Producer<T>,
    /// Messages that found the ring full, oldest first. While it is not empty every new
    /// message goes behind it, so order holds: ring (published, then staged), then overflow.
    overflow: VecDeque<T>,
    target: Arc<CachePadded<Target>>,
    /// Whether the target is in `dirty`.
    dirty: bool,
}

impl<T> Outbox<T> {
    pub(super) fn new(
        core: usize,
        rings: Vec<spsc::Producer<T>>,
        targets: &[Arc<CachePadded<Target>>],
    ) -> Self {
        let lanes: Vec<Lane<T>> = rings
            .into_iter()
            .zip(targets)
            .map(|(ring, target)| Lane {
                ring,
                overflow: VecDeque::new(),
                target: target.clone(),
                dirty: false,
            })
            .collect();
        let cores = lanes.len();
        Outbox {
            core,
            lanes,
            dirty: Vec::with_capacity(cores),
            published: Vec::with_capacity(cores),
            backlog: 0,
        }
    }

    /// The core this outbox belongs to.
    pub(crate) fn core(&self) -> usize {
        self.core
    }

    /// Queues `msg` for core `target`; it becomes visible there at the next
    /// [`flush`](Self::flush). Never blocks: a full ring spills to this outbox's overflow.
    /// Fails only if the target's inbox is closed (the message is handed back).
    ///
    /// # Panics
    /// If `target` is not a core of the mesh.
    pub(crate) fn push(&mut self, target: usize, msg: T) -> Result<(), SendError<T>> {
        let lane = &mut self.lanes[target];
        // Acquire (rather than relaxed) costs nothing on x86 and would let a closing consumer
        // publish facts along with the flag; no correctness argument rests on it.
        if lane.target.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed(msg));
        }
        if lane.overflow.is_empty() {
            if let Err(msg) = lane.ring.stage(msg) {
                lane.overflow.push_back(msg);
                self.backlog += 1;
            }
        } else {
            lane.overflow.push_back(msg);
            self.backlog += 1;
        }
        if !lane.dirty {
            lane.dirty = true;
            self.dirty.push(target);
        }
        Ok(())
    }

    /// Ends a turn: moves what it can of each overflow into its ring, publishes every ring
    /// written to (one release store each), then calls `ring_bell(target)` for each target
    /// written to that announced it sleeps: at most once per target per flush. The doorbell
    /// must be sticky (see the module doc). Messages for a target that closed meanwhile are
    /// dropped here.
    ///
    /// If [`is_backlogged`](Self::is_backlogged) is still true afterwards, a target's ring is
    /// full: the caller must flush again later without waiting for a wake-up of its own (the
    /// consumer does not signal freed space), e.g. by bounding its next wait.
    pub(crate) fn flush(&mut self, mut ring_bell: impl FnMut(usize)) {
        self.published.clear();
        let mut i = 0;
        while i < self.dirty.len() {
            let target = self.dirty[i];
            let lane = &mut self.lanes[target];
            if lane.target.closed.load(Ordering::Acquire) {
                // Nobody will read them: drop them now rather than leave them to the ring.
                self.backlog -= lane.overflow.len();
                lane.overflow.clear();
                lane.ring.discard_staged();
            }
            while let Some(msg) = lane.overflow.pop_front() {
                if let Err(msg) = lane.ring.stage(msg) {
                    lane.overflow.push_front(msg);
                    break;
                }
                self.backlog -= 1;
            }
            if lane.ring.publish() {
                self.published.push(target);
            }
            if lane.overflow.is_empty() {
                lane.dirty = false;
                self.dirty.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if self.published.is_empty() {
            return;
        }
        // The producer's half of the Dekker pair (see `Inbox::prepare_sleep`): the tails were
        // stored above; this SeqCst fence orders those stores before the flag loads below in
        // the single total order of SeqCst fences, against the consumer's fence between its
        // flag store and its tail loads. One fence covers every target of this flush.
        fence(Ordering::SeqCst);
        for &target in &self.published {
            if must_ring(&self.lanes[target].target) {
                ring_bell(target);
            }
        }
    }

    /// Hands every message still in an overflow queue to `f`, with its target, in order per
    /// target (the core has stopped serving and sends them another way). Messages staged in a
    /// ring but not published are not among them: [`flush`](Self::flush) publishes them.
    pub(crate) fn take_unsent(&mut self, mut f: impl FnMut(usize, T)) {
        for (target, lane) in self.lanes.iter_mut().enumerate() {
            for msg in lane.overflow.drain(..) {
                f(target, msg);
            }
            lane.dirty = false;
        }
        self.dirty.clear();
        self.backlog = 0;
    }

    /// Whether messages wait in an overflow queue (some target's ring was full at the last
    /// flush). While true, the core must not sleep without a bound: see
    /// [`flush`](Self::flush).
    pub(crate) fn is_backlogged(&self) -> bool {
        self.backlog > 0
    }
}

/// After a publish and a SeqCst fence: whether the caller should ring the target.
///
/// A plain load, not a swap that would let only the first producer ring: every producer that
/// sees the announcement rings (at most once per flush), and the consumer alone writes the
/// flag. One writer keeps the flag's modification order the consumer's program order, which
/// is what the Dekker argument and the loom model can both check; a producer's swap would add
/// writes loom cannot order against the consumer's and it reports lost wake-ups that the
/// C++ model rules out. Extra rings cost a spurious wake-up at worst.
fn must_ring(target: &Target) -> bool {
    target.sleeping.load(Ordering::Relaxed)
}

/// The way into every core for a thread that is not a core (an offload pool, a control
/// thread). Clone it per thread. Each send publishes at once; there is no batching and no
/// overflow: a full queue hands the message back.
pub(crate) struct Remote<T> {
    queues: Arc<Vec<RemoteLane<T>>>,
}

/// The way from off-core threads to one core.
struct RemoteLane<T> {
    queue: mpsc::Producer<T>,
    target: Arc<CachePadded<Target>>,
}

impl<T> Clone for Remote<T> {
    fn clone(&self) -> Self {
        Remote {
            queues: self.queues.clone(),
        }
    }
}

impl<T> Remote<T> {
    pub(super) fn new(
        producers: Vec<mpsc::Producer<T>>,
        targets: Vec<Arc<CachePadded<Target>>>,
    ) -> Self {
        Remote {
            queues: Arc::new(
                producers
                    .into_iter()
                    .zip(targets)
                    .map(|(queue, target)| RemoteLane { queue, target })
                    .collect(),
            ),
        }
    }

    /// The number of cores.
    pub(crate) fn cores(&self) -> usize {
        self.queues.len()
    }

    /// Whether core `target`'s inbox has closed (its thread ended): sends to it fail.
    pub(crate) fn is_closed(&self, target: usize) -> bool {
        self.queues[target].target.closed.load(Ordering::Acquire)
    }

    /// Sends `msg` to core `target` now. On success, says whether the caller must ring the
    /// target's doorbell. Fails if the target's inbox is closed or its off-core queue is full
    /// (the message is handed back; the caller may retry later).
    ///
    /// # Panics
    /// If `target` is not a core of the mesh.
    pub(crate) fn send(&self, target: usize, msg: T) -> Result<Bell, SendError<T>> {
        let RemoteLane { queue, target } = &self.queues[target];
        if target.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed(msg));
        }
        queue.push(msg).map_err(SendError::Full)?;
        // The producer's half of the Dekker pair, as in `Outbox::flush`: the slot's sequence
        // was stored (released) in `push`; fence; then read the flag.
        fence(Ordering::SeqCst);
        Ok(if must_ring(target) {
            Bell::Ring
        } else {
            Bell::Silent
        })
    }
}
