//! The mailbox: how a message from one core (or from a thread that is not a core) reaches
//! another core, and wakes it if it sleeps. It is the transport under "reaching a session from
//! elsewhere" (shared ARCHITECTURE.md): a handler's `submit_to(core, f)` and its reply travel
//! through it; the worker loop uses it but this module knows nothing of sessions or drivers.
//!
//! ```text
//!  core A: Outbox                    ring A->B (SPSC, bounded)           core B: Inbox
//!   push(B, m)  -- staged in ring ------------------------------------>  drain(budget, f)
//!   (ring full: overflow, A's own)                                        top of each turn
//!   flush(ring_bell) at turn end: publish tails, fence, ring B only if
//!                                 B announced it sleeps               prepare_sleep() / woke()
//!  thread X: Remote::send(B, m) -- queue *->B (MPSC, bounded) ------->
//! ```
//!
//! One bounded single-producer single-consumer ring per ordered pair of cores (self pairs
//! included, so a core may send to itself like to any other) plus one bounded multi-producer
//! queue per core for off-core threads. SPSC rather than one MPSC per target: a core's producer
//! side then needs no read-modify-write at all (one release store per target per turn
//! publishes a whole batch), no two cores ever write the same cache line to send, and the
//! consumer drains each source in its own order; the price is `cores²` rings, which at the
//! default capacity (256 slots of a 16-byte message: 4 KiB a ring) is 4 MiB for 32 cores.
//!
//! **The invariant a reader must keep: no lost wake-up.** A consumer about to block stores its
//! `sleeping` flag, issues a SeqCst fence, then looks at every queue once more
//! ([`Inbox::prepare_sleep`]); a producer publishes, issues a SeqCst fence, then reads the flag
//! ([`Outbox::flush`], [`Remote::send`]). Either the consumer's final look sees the message or
//! the producer sees the flag and rings the doorbell; removing either fence allows both to miss
//! (the loom model in `loom_tests.rs` finds that execution). The doorbell is the engine's (an
//! eventfd write, or IORING_OP_MSG_RING from the producer's ring) and must be *sticky*: a ring
//! that lands before the consumer blocks makes its wait return at once.
//!
//! Nothing blocks and nothing is dropped silently: a core whose ring to a target is full keeps
//! the rest in its own overflow queue (bounded only by memory, order kept, retried first on
//! every flush); an off-core sender gets the message back ([`SendError::Full`]). A dead target
//! (its [`Inbox`] dropped or closed) makes later sends fail with [`SendError::Closed`]; what it
//! had not drained is handed to `close`'s callback or dropped, never delivered: see
//! [`Inbox::close`].
//!
//! The model test: `RUSTFLAGS="--cfg loom" cargo test -p ringwire-runtime --lib --release
//! mailbox::loom` (use a target directory of its own: the flag rebuilds every dependency).

mod inbox;
mod mpsc;
mod outbox;
mod spsc;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

use std::fmt;
use std::io;

pub(crate) use inbox::Inbox;
pub(crate) use outbox::{Outbox, Remote};

use sync::{Arc, AtomicBool, CachePadded};

/// Where a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// The core with this index.
    Core(usize),
    /// A thread that is not a core, through [`Remote`].
    Remote,
}

/// Why a message was not accepted; it is handed back.
pub(crate) enum SendError<T> {
    /// The target core is gone: its inbox was closed or dropped (its thread ended or panicked).
    Closed(T),
    /// The target's off-core queue is full ([`Remote::send`] only; cores spill instead).
    Full(T),
}

impl<T> SendError<T> {
    /// The message that was not sent.
    pub(crate) fn into_inner(self) -> T {
        match self {
            SendError::Closed(m) | SendError::Full(m) => m,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::Full(_) => f.write_str("Full(..)"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("the target core's mailbox is closed"),
            SendError::Full(_) => f.write_str("the target core's off-core queue is full"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> From<SendError<T>> for io::Error {
    fn from(e: SendError<T>) -> io::Error {
        let kind = match e {
            SendError::Closed(_) => io::ErrorKind::BrokenPipe,
            SendError::Full(_) => io::ErrorKind::WouldBlock,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// What an off-core sender must do after [`Remote::send`].
#[must_use = "a sleeping target wakes only if its doorbell is rung"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bell {
    /// The target announced it sleeps: ring its doorbell.
    Ring,
    /// The target is awake.
    Silent,
}

/// What the producers and the consumer of one core's mailbox share besides the queues.
#[derive(Default)]
struct Target {
    /// Set by the consumer between [`Inbox::prepare_sleep`] and [`Inbox::woke`]. Written by
    /// the consumer only; every producer that sees it set after publishing rings.
    sleeping: AtomicBool,
    /// Set once, when the consumer's inbox closes.
    closed: AtomicBool,
}

/// Sizes of the queues.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity {
    /// Slots in each core-to-core ring (a power of two).
    pub(crate) ring: usize,
    /// Slots in each core's off-core queue (a power of two, at least 2).
    pub(crate) remote: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            ring: 256,
            remote: 1024,
        }
    }
}

/// One core's ends of the mesh, to move onto its thread.
pub(crate) struct CoreMail<T> {
    /// What other cores and threads send to this core.
    pub(crate) inbox: Inbox<T>,
    /// This core's way to every core.
    pub(crate) outbox: Outbox<T>,
}

/// The mailboxes of a set of cores, as [`mesh`] builds them.
pub(crate) struct Mesh<T> {
    /// `cores[c]`: core `c`'s ends.
    pub(crate) cores: Vec<CoreMail<T>>,
    /// The handle of threads that are not cores; clone it per thread.
    pub(crate) remote: Remote<T>,
}

/// Builds the mailboxes of `cores` cores: a ring for every ordered pair of cores and an
/// off-core queue per core.
pub(crate) fn mesh<T: Send>(cores: usize, capacity: Capacity) -> Mesh<T> {
    let targets: Vec<Arc<CachePadded<Target>>> = (0..cores)
        .map(|_| Arc::new(CachePadded(Target::default())))
        .collect();
    // producers[from][to], consumers[to][from]
    let mut producers: Vec<Vec<spsc::Producer<T>>> = (0..cores).map(|_| Vec::new()).collect();
    let mut consumers: Vec<Vec<spsc::Consumer<T>>> = (0..cores).map(|_| Vec::new()).collect();
    for column in consumers.iter_mut() {
        for row in producers.iter_mut() {
            let (p, c) = spsc::ring(capacity.ring);
            row.push(p);
            column.push(c);
        }
    }
    let mut remote_producers = Vec::with_capacity(cores);
    let mut cores_mail = Vec::with_capacity(cores);
    for (core, (rings_out, rings_in)) in producers.into_iter().zip(consumers).enumerate() {
        let (remote_p, remote_c) = mpsc::queue(capacity.remote);
        remote_producers.push(remote_p);
        cores_mail.push(CoreMail {
            inbox: Inbox::new(core, rings_in, remote_c, targets[core].clone()),
            outbox: Outbox::new(core, rings_out, &targets),
        });
    }
    Mesh {
        cores: cores_mail,
        remote: Remote::new(remote_producers, targets),
    }
}
