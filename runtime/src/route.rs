//! How work and replies reach a core from elsewhere: from another core of the same server, or
//! from a thread that is not a core (an offload pool, a control thread).
//!
//! Everything that travels is a [`Msg`]. On a worker thread, [`deliver`] only appends to a
//! thread-local list (no atomics, no allocation beyond the list's growth): messages for this
//! core are applied right after the current callback, messages for other cores are pushed into
//! the worker's mailbox `Outbox` at the end of the turn and published in one batch per target,
//! ringing a target only if it announced that it sleeps (see `crate::mailbox`). On any other
//! thread, [`deliver`] sends through the target's off-core queue at once and rings it if it
//! sleeps.
//!
//! Invariants: a message to a session names it by [`SessionHandle`], and the owning core
//! checks the handle's sequence number before touching the slot, so a message for a session
//! that has gone reaches nothing even once its slot is reused; messages from one sender to one
//! core arrive in the order they were delivered; nothing blocks a core (a full ring spills to
//! the sender's overflow), and nothing is dropped while its target lives.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::core_ctx::CoreCtx;
use crate::doorbell::Doorbells;
use crate::mailbox::{Bell, Remote, SendError};
use crate::remote::RemoteError;
use crate::reply::SessionHandle;

/// Work sent to a core: runs there with the core's context.
pub(crate) type Task = Box<dyn FnOnce(&mut CoreCtx) + Send>;

/// What travels to a core.
pub(crate) enum Msg {
    /// Run a closure with the core's context.
    Run(Task),
    /// Fill reply slot `id` of `session` with `bytes`.
    Fill {
        session: SessionHandle,
        id: u64,
        bytes: Vec<u8>,
    },
    /// Reply slot `id` of `session` was dropped without being completed.
    Abandon { session: SessionHandle, id: u64 },
    /// Bytes to append to `session`'s output, as if a callback of it had written them.
    Write {
        session: SessionHandle,
        bytes: Vec<u8>,
    },
    /// Close `session` once its output is written.
    Close { session: SessionHandle },
}

/// Which session slots of one core are live, readable from any thread: `seqs[slot]` is the low
/// 32 bits of the live session's sequence number plus one, or 0 for a free slot. A sender
/// checks it to fail at once for a session that has gone; the owning core checks the full
/// sequence number again on arrival (a session may go while the message travels).
pub(crate) struct Liveness {
    seqs: Box<[AtomicU32]>,
}

impl Liveness {
    pub(crate) fn new(slots: usize) -> Self {
        Liveness {
            seqs: (0..slots).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn tag(seq: u64) -> u32 {
        (seq as u32).wrapping_add(1).max(1)
    }

    /// The owning core opened session `seq` in `slot`.
    pub(crate) fn opened(&self, slot: u32, seq: u64) {
        if let Some(s) = self.seqs.get(slot as usize) {
            s.store(Self::tag(seq), Ordering::Release);
        }
    }

    /// The owning core freed `slot`.
    pub(crate) fn freed(&self, slot: u32) {
        if let Some(s) = self.seqs.get(slot as usize) {
            s.store(0, Ordering::Release);
        }
    }

    /// Whether the session may still be live (false: it has certainly gone).
    fn may_live(&self, h: &SessionHandle) -> bool {
        self.seqs
            .get(h.slot as usize)
            .is_none_or(|s| s.load(Ordering::Acquire) == Self::tag(h.seq))
    }
}

/// Distinguishes servers (and clients) of one process, so that a handle of one never reaches
/// a session of another.
static NEXT_SERVER: AtomicU64 = AtomicU64::new(1);

/// A new server id (0 is the test kit's).
pub(crate) fn new_server_id() -> u32 {
    NEXT_SERVER.fetch_add(1, Ordering::Relaxed) as u32
}

/// The ways into every core of one server, for threads that are not its cores. Each core and
/// each reply holds an `Arc` of its own core's copy, so that reserving a reply touches no
/// cache line another core writes.
pub(crate) struct Router {
    pub(crate) server: u32,
    remote: Remote<Msg>,
    bells: Arc<Doorbells>,
    live: Arc<Vec<Arc<Liveness>>>,
}

impl Router {
    pub(crate) fn new(
        server: u32,
        remote: Remote<Msg>,
        bells: Arc<Doorbells>,
        live: Arc<Vec<Arc<Liveness>>>,
    ) -> Self {
        Router {
            server,
            remote,
            bells,
            live,
        }
    }

    /// Another copy (a separate allocation when wrapped in its own `Arc`).
    pub(crate) fn copy(&self) -> Self {
        Router {
            server: self.server,
            remote: self.remote.clone(),
            bells: self.bells.clone(),
            live: self.live.clone(),
        }
    }

    /// The number of cores.
    pub(crate) fn cores(&self) -> usize {
        self.remote.cores()
    }

    /// Whether core `target` has stopped.
    pub(crate) fn is_closed(&self, target: usize) -> bool {
        self.remote.is_closed(target)
    }

    /// Sends `msg` to core `target` from a thread that is not one of its server's cores,
    /// failing with `Busy` if its queue is full.
    pub(crate) fn send(&self, target: usize, msg: Msg) -> Result<(), RemoteError> {
        self.send_remote(target, msg, false)
    }

    /// Checks that `h` names a session of this server that may still be live.
    pub(crate) fn check(&self, h: &SessionHandle) -> Result<(), RemoteError> {
        if h.server != self.server || h.worker() >= self.cores() {
            return Err(RemoteError::Gone);
        }
        if !self.live[h.worker()].may_live(h) {
            return Err(RemoteError::Gone);
        }
        Ok(())
    }

    /// Rings core `target`'s doorbell from a thread that is not a core: see
    /// [`Doorbells::ring_off_core`].
    pub(crate) fn ring(&self, target: usize) {
        self.bells.ring_off_core(target);
    }

    /// Rings core `target` through its eventfd (for a core whose driver has no way of its
    /// own).
    pub(crate) fn ring_eventfd(&self, target: usize) {
        self.bells.ring_eventfd(target);
    }

    /// Sends through core `target`'s off-core queue once, ringing it if it sleeps; hands the
    /// message back if the queue is full or the core has stopped.
    fn send_once(&self, target: usize, msg: Msg) -> Result<(), SendError<Msg>> {
        if self.remote.send(target, msg)? == Bell::Ring {
            self.ring(target);
        }
        Ok(())
    }

    /// Sends from a thread that is not serving (a stopped core), waiting while the target's
    /// queue is full.
    pub(crate) fn send_off_core(&self, target: usize, msg: Msg) -> Result<(), RemoteError> {
        self.send_remote(target, msg, true)
    }

    /// Sends from a thread that is not a core of this server. `wait`: retry while the target's
    /// off-core queue is full (for replies, which must not be lost) rather than fail with
    /// `Busy`.
    fn send_remote(&self, target: usize, mut msg: Msg, wait: bool) -> Result<(), RemoteError> {
        let mut pause = Duration::from_micros(10);
        loop {
            match self.send_once(target, msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Closed(_)) => return Err(RemoteError::Stopped),
                Err(SendError::Full(m)) if wait => {
                    // The core drains its queue every turn; it is busy, not stuck.
                    msg = m;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(1));
                }
                Err(SendError::Full(_)) => return Err(RemoteError::Busy),
            }
        }
    }
}

/// What a worker thread keeps for the messages its callbacks produce.
struct Local {
    server: u32,
    worker: usize,
    /// For this core: applied right after the current callback.
    here: Vec<Msg>,
    /// For other cores: pushed into the outbox at the end of the turn.
    out: Vec<(usize, Msg)>,
    /// For cores of other servers whose queue was full, retried at the end of each turn.
    foreign: Vec<(Arc<Router>, usize, Msg)>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
    /// Set when a message is queued in `here` (cleared when taken): the check after every
    /// callback is this one load, not a borrow of `LOCAL` (whose destructor makes every access
    /// check its registration).
    static HERE: Cell<bool> = const { Cell::new(false) };
    /// The same for `out` and `foreign`, checked once a turn.
    static OUT: Cell<bool> = const { Cell::new(false) };
    static FOREIGN: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as worker `worker` of server `server` until dropped.
pub(crate) struct Entered(());

/// Makes the current thread worker `worker` of `server` for [`deliver`], until the guard is
/// dropped.
pub(crate) fn enter(server: u32, worker: usize) -> Entered {
    mark(server, worker);
    Entered(())
}

/// Makes the current thread worker `worker` of `server` for [`deliver`] (the test kit's
/// sessions mark it before each callback; a worker holds an [`Entered`]). Messages left by a
/// previous mark of another identity are dropped, outside the borrow: dropping a reply among
/// them delivers its own message.
pub(crate) fn mark(server: u32, worker: usize) {
    let old = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        if l.as_ref()
            .is_some_and(|l| l.server == server && l.worker == worker)
        {
            return None;
        }
        l.replace(Local {
            server,
            worker,
            here: Vec::new(),
            out: Vec::new(),
            foreign: Vec::new(),
        })
    });
    drop(old);
}

impl Drop for Entered {
    fn drop(&mut self) {
        // Taken out first: dropping the messages may deliver more (a reply inside a task).
        let left = LOCAL.try_with(|l| l.borrow_mut().take()).ok().flatten();
        drop(left);
    }
}

/// Takes the messages this core's callbacks produced for itself.
pub(crate) fn take_here(into: &mut Vec<Msg>) {
    if !HERE.replace(false) {
        return;
    }
    let _ = LOCAL.try_with(|l| {
        if let Some(l) = l.borrow_mut().as_mut() {
            into.append(&mut l.here);
        }
    });
}

/// Takes the messages this core's callbacks produced for other cores.
pub(crate) fn take_out(into: &mut Vec<(usize, Msg)>) {
    if !OUT.replace(false) {
        return;
    }
    let _ = LOCAL.try_with(|l| {
        if let Some(l) = l.borrow_mut().as_mut() {
            into.append(&mut l.out);
        }
    });
}

/// Whether this core's callbacks left messages for this core.
pub(crate) fn has_here() -> bool {
    HERE.get()
}

/// Whether messages for this core or for other cores of its server wait in this thread's lists
/// (not those parked for another server's full queue, which are retried after a pause).
pub(crate) fn has_queued() -> bool {
    HERE.get() || OUT.get()
}

/// Where [`deliver`] found the current thread.
enum Here {
    /// A worker thread of the message's server: queued there.
    Queued,
    /// A worker thread of another server (a client's core completing a server's reply): it
    /// must not wait, so a full queue parks the message in the thread's `foreign` list.
    OtherCore,
    /// Any other thread (or one whose thread-locals are gone: it is ending).
    Off,
}

/// Delivers `msg` to core `target` of the server `router` names (`None`: the server of the
/// current worker thread, as for the test kit's replies). On one of that server's worker
/// threads it only queues the message (see the module doc). On a worker thread of another
/// server it sends at once without waiting, parking the message for the end of the turn if
/// the target's queue is full. On any other thread it sends at once; `wait` then says whether
/// to wait while the target's queue is full.
pub(crate) fn deliver(
    router: Option<&Arc<Router>>,
    server: u32,
    target: usize,
    msg: Msg,
    wait: bool,
) -> Result<(), RemoteError> {
    let mut msg = Some(msg);
    let here = LOCAL
        .try_with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else {
                return Here::Off;
            };
            match l.as_mut() {
                Some(l) if l.server == server => {
                    let msg = msg.take().expect("taken once");
                    if target == l.worker {
                        l.here.push(msg);
                        HERE.set(true);
                    } else {
                        l.out.push((target, msg));
                        OUT.set(true);
                    }
                    Here::Queued
                }
                Some(_) => Here::OtherCore,
                None => Here::Off,
            }
        })
        .unwrap_or(Here::Off);
    let Some(msg) = msg else {
        return Ok(());
    };
    let Some(router) = router else {
        return Err(RemoteError::Stopped);
    };
    match here {
        Here::Queued => unreachable!("queued above"),
        Here::Off => router.send_remote(target, msg, wait),
        Here::OtherCore => park_or_send(router, target, msg),
    }
}

/// On a worker thread of another server: sends `msg` now unless messages are parked already
/// (they go first, in order) or the target's queue is full; parks it otherwise.
fn park_or_send(router: &Arc<Router>, target: usize, msg: Msg) -> Result<(), RemoteError> {
    let parked = FOREIGN.get();
    let msg = if parked {
        msg
    } else {
        match router.send_once(target, msg) {
            Ok(()) => return Ok(()),
            Err(SendError::Closed(_)) => return Err(RemoteError::Stopped),
            Err(SendError::Full(msg)) => msg,
        }
    };
    LOCAL.with(|l| {
        if let Some(l) = l.borrow_mut().as_mut() {
            l.foreign.push((router.clone(), target, msg));
            FOREIGN.set(true);
        }
    });
    Ok(())
}

/// Retries the messages this core parked for other servers' cores, in order, without waiting:
/// what still finds a full queue stays parked. `wait`: the core has stopped serving, so wait
/// for room instead. Returns whether messages are still parked.
pub(crate) fn send_parked(wait: bool) -> bool {
    if !FOREIGN.replace(false) {
        return false;
    }
    let parked = LOCAL
        .try_with(|l| {
            l.borrow_mut()
                .as_mut()
                .map(|l| std::mem::take(&mut l.foreign))
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    if parked.is_empty() {
        return false;
    }
    let mut left = Vec::new();
    let mut dropped = Vec::new();
    for (router, target, msg) in parked {
        if !left.is_empty() {
            left.push((router, target, msg));
            continue;
        }
        match router.send_once(target, msg) {
            Ok(()) => {}
            Err(SendError::Closed(msg)) => dropped.push(msg),
            Err(SendError::Full(msg)) if wait => {
                let _ = router.send_remote(target, msg, true);
            }
            Err(SendError::Full(msg)) => left.push((router, target, msg)),
        }
    }
    let more = !left.is_empty();
    if more {
        let _ = LOCAL.try_with(|l| {
            if let Some(l) = l.borrow_mut().as_mut() {
                left.append(&mut l.foreign);
                l.foreign = left;
                FOREIGN.set(true);
            }
        });
    }
    // Dropped last, outside any borrow: a reply among them delivers its own message.
    drop(dropped);
    more
}

/// Takes every message this core still holds for itself and for other cores (it has stopped
/// serving): those for itself are dropped (its sessions are gone), the others are sent,
/// waiting for room. Repeats while dropping them produces more, a bounded number of times.
pub(crate) fn flush_on_exit(router: &Router) {
    for _ in 0..64 {
        let mut here = Vec::new();
        let mut out = Vec::new();
        take_here(&mut here);
        take_out(&mut out);
        let parked = send_parked(true);
        if here.is_empty() && out.is_empty() && !parked {
            return;
        }
        drop(here);
        for (target, msg) in out {
            let _ = router.send_remote(target, msg, true);
        }
    }
}
