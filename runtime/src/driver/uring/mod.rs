//! The io_uring driver: multishot accept, multishot receive over a provided-buffer ring,
//! send/sendmsg with MSG_NOSIGNAL, cancel-then-close, and one enter per loop turn.
//!
//! Invariants: a slot's close is submitted only after its receive, send and cancel have
//! completed; every provided buffer goes back to the ring right after its completion is
//! handled; receives that ran dry of buffers are re-armed at the start of the next turn, after
//! the turn's buffers came back (re-arming inside the completion loop would spin).

mod doorbell;
mod io_slot;
mod ops;
#[cfg(test)]
mod tests;

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use self::doorbell::CoreBell;

use self::doorbell::Bell;
use self::io_slot::{IoSlot, Life, Recv};
use super::{AcceptBackoff, Command, Core, Driver, Nodelay, SlotTable};
use crate::buf_ring::BufRing;
use crate::config::Config;
use crate::error::ServerError;
use crate::listener;
use crate::op;
use crate::op::accept::Accepted;
use crate::op::recv::RecvEnd;
use crate::ring::{Completion, Ring};
use crate::stats::CoreStats;
use crate::sys;
use crate::user_data::{Op, UserData};

const BGID: u16 = 0;
/// Most connections taken from the backlog when draining for shutdown.
const DRAIN_LIMIT: usize = 65536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptState {
    /// To be armed at the start of the next turn.
    Idle,
    Armed,
    /// Failed; re-armed once the back-off has passed.
    RetryAt(Instant),
    /// Shutting down; waiting for the accept's final completion, then as said.
    Cancelling(AfterAccept),
    /// Shutting down: take what is queued in the backlog at the start of the next turn, then
    /// close the listener (closing it first would reset the queued connections).
    Drain,
    /// The listener is closed.
    Closed,
}

/// What a core that stops accepting does with its listener once its accept has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterAccept {
    /// Take what is queued in the backlog and serve it, then close the listener (a stop).
    Drain,
    /// Close the listener and take nothing: a core abandoned after its worker died, on a
    /// listener the other cores share, leaves the backlog to them (taking it would close
    /// connections a live core could serve).
    Leave,
}

/// The io_uring driver of one core: the ring, the per-slot I/O state and the provided buffers.
pub(crate) struct UringDriver {
    ring: Ring,
    slots: SlotTable<IoSlot>,
    starved: Vec<(u32, u32)>,
    listener: Option<OwnedFd>,
    /// The listener is a duplicate of one socket every core accepts on (a Unix server's):
    /// shutting it down would stop the other cores' accepts too.
    shared_listener: bool,
    accept: AcceptState,
    backoff: AcceptBackoff,
    nodelay: Nodelay,
    wake_fd: Arc<OwnedFd>,
    /// Target of the wake-up read; freed in `Drop` only if no read is in flight.
    wake_buf: *mut u64,
    wake_armed: bool,
    stats: Arc<CoreStats>,
    fatal: Option<io::Error>,
    /// The kernel's count of dropped completions when last looked at.
    dropped_seen: u32,
    /// The last turn left completions unreported (overflow, or the budget ran out).
    unsettled: bool,
    /// Unmapped in `Drop` only when nothing is in flight (no receive can write them, and the
    /// kernel reads the buffer ring only for a receive); otherwise leaked, since the kernel may
    /// still write into them while it tears the ring down.
    bufs: ManuallyDrop<BufRing>,
    batch: Vec<Completion>,
    /// The next completion of `batch` to report: one a panic in the core interrupted is
    /// reported at the next turn (the abandoning one), not lost.
    batch_pos: usize,
    /// Ringing other cores over MSG_RING; `None`: their eventfds (see `crate::doorbell`).
    bell: Option<Bell>,
}

fn unavailable(step: &'static str) -> impl FnOnce(io::Error) -> ServerError {
    move |source| ServerError::IoUringUnavailable { step, source }
}

impl UringDriver {
    /// Sets up the ring and buffer ring on the calling thread, which must be the core's.
    pub(crate) fn new(
        config: &Config,
        listener: Option<OwnedFd>,
        wake_fd: Arc<OwnedFd>,
        stats: Arc<CoreStats>,
        bell: Option<CoreBell>,
    ) -> Result<UringDriver, ServerError> {
        let ring =
            Ring::new(config.ring_entries, config.cq_size()).map_err(unavailable("ring setup"))?;
        UringDriver::on_ring(ring, config, listener, wake_fd, stats, bell)
    }

    /// [`UringDriver::new`] on a ring already set up (tests choose its task-run mode).
    fn on_ring(
        ring: Ring,
        config: &Config,
        listener: Option<OwnedFd>,
        wake_fd: Arc<OwnedFd>,
        stats: Arc<CoreStats>,
        bell: Option<CoreBell>,
    ) -> Result<UringDriver, ServerError> {
        let bufs = BufRing::new(&ring, BGID, config.buf_count, config.buf_size)
            .map_err(unavailable("buffer ring registration"))?;
        let cq = ring.cq_capacity();
        // Shared before the worker reports ready, so every core can ring it once it serves.
        let bell = Bell::publish(bell, &ring);
        let mut driver = UringDriver {
            ring,
            slots: SlotTable::with_capacity(config.max_sessions),
            starved: Vec::with_capacity(config.max_sessions.min(65536)),
            accept: if listener.is_some() {
                AcceptState::Idle
            } else {
                AcceptState::Closed
            },
            listener,
            backoff: AcceptBackoff::new(),
            // A Unix socket has no TCP_NODELAY.
            nodelay: Nodelay::new(config.nodelay && config.unix.is_none()),
            shared_listener: config.unix.is_some(),
            wake_fd,
            wake_buf: Box::into_raw(Box::new(0u64)),
            wake_armed: false,
            stats,
            fatal: None,
            dropped_seen: 0,
            unsettled: false,
            bufs: ManuallyDrop::new(bufs),
            batch: Vec::with_capacity(cq),
            batch_pos: 0,
            bell,
        };
        driver.arm_wake();
        Ok(driver)
    }

    /// Reports the completions of `batch` not reported yet.
    fn report_batch<K: Core>(&mut self, core: &mut K) {
        while let Some(&c) = self.batch.get(self.batch_pos) {
            self.batch_pos += 1;
            // SAFETY: reaped from the ring into `batch`; `batch_pos` moved past it first, so it
            // is handled once even if the core panics.
            unsafe { self.complete(c, core) };
        }
    }

    /// Routes one completion; the commands the core queued in reaction are applied before
    /// the next completion is looked at.
    ///
    /// # Safety
    ///
    /// `c` was reaped from this ring and is handled once (what it carries, a provided buffer or
    /// an accepted descriptor, becomes owned here).
    unsafe fn complete<K: Core>(&mut self, c: Completion, core: &mut K) {
        let ud = UserData::from_raw(c.user_data);
        match ud.op() {
            // SAFETY: this function's contract, passed on.
            Some(Op::Recv) => unsafe { self.complete_recv(ud, &c, core) },
            Some(Op::Send) => self.complete_send(ud, &c, core),
            Some(Op::Cancel) => self.complete_cancel(ud, &c),
            Some(Op::Close) => self.complete_close(ud, &c, core),
            // SAFETY: this function's contract, passed on.
            Some(Op::Accept) => unsafe { self.complete_accept(&c, core) },
            Some(Op::Connect) => self.complete_connect(ud, &c, core),
            Some(Op::Wake) => {
                self.wake_armed = false;
                self.arm_wake();
                core.woken();
                self.apply_all(core.commands());
            }
            Some(Op::Doorbell) => {
                // Another core's MSG_RING: a wake-up with nothing to read.
                core.woken();
                self.apply_all(core.commands());
            }
            Some(Op::MsgRing) => self.complete_msg_ring(ud, &c),
            Some(Op::AcceptCancel) | Some(Op::WakeCancel) => {}
            None => debug_assert!(false, "completion with unknown user_data {c:?}"),
        }
    }

    /// # Safety
    ///
    /// As [`UringDriver::complete`].
    unsafe fn complete_recv<K: Core>(&mut self, ud: UserData, c: &Completion, core: &mut K) {
        // SAFETY: `complete`'s contract, passed on.
        let r = unsafe { op::recv::complete(c) };
        let slot = ud.slot();
        let current = self.slots.is_current(slot, ud.generation());
        if current && r.end.is_some() {
            self.slots[slot as usize].recv = Recv::Idle;
        }
        if let Some(buf) = r.data {
            if buf.len() > 0 && current && self.slots[slot as usize].life == Life::Open {
                core.received(slot, self.bufs.read(&buf));
                self.bufs.give_back(buf);
                self.apply_all(core.commands());
            } else {
                self.bufs.give_back(buf);
            }
        }
        let Some(end) = r.end else { return };
        if !current {
            debug_assert!(false, "receive completion for a freed slot");
            return;
        }
        if self.slots[slot as usize].life != Life::Open {
            self.settle(slot);
            return;
        }
        match end {
            RecvEnd::Eof => {
                core.read_closed(slot, None);
                self.apply_all(core.commands());
            }
            RecvEnd::Failed(e) => {
                core.read_closed(slot, Some(e));
                self.apply_all(core.commands());
            }
            RecvEnd::NoBuffers | RecvEnd::Stopped | RecvEnd::Cancelled => {
                if matches!(end, RecvEnd::NoBuffers) {
                    self.stats.enobufs.add(1);
                }
                let io = &mut self.slots[slot as usize];
                if io.want_recv {
                    // Re-armed at the start of the next turn, once this turn's buffers are back.
                    io.recv = Recv::Starved;
                    self.starved.push((slot, io.generation));
                }
            }
        }
    }
}

impl Driver for UringDriver {
    fn apply(&mut self, commands: &mut Vec<Command>) {
        self.apply_all(commands);
    }

    fn turn<K: Core>(&mut self, timeout: Option<Duration>, core: &mut K) -> io::Result<()> {
        self.rearm_starved();
        let mut timeout = timeout;
        if self.accept == AcceptState::Drain {
            self.drain_backlog(core);
            // Come straight back: the core may be done now that the listener is closed.
            timeout = Some(Duration::ZERO);
        }
        let timeout = self.arm_accept(timeout);
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        // What a panic left of the last batch (its completion's own event is lost with the
        // panic; the rest still name operations that must be settled).
        self.report_batch(core);
        self.ring.enter(timeout)?;
        self.release_rings();
        self.stats.turns.add(1);
        core.turn_started();
        // With DEFER_TASKRUN nothing is posted while we process, so one pass normally empties
        // the queue; the budget bounds the loop on kernels that post concurrently.
        let cap = self.batch.capacity().max(1);
        let mut budget = 4 * cap;
        while budget > 0 {
            self.batch.clear();
            self.batch_pos = 0;
            let n = self.ring.reap(&mut self.batch, cap.min(budget));
            if n == 0 {
                break;
            }
            self.stats.completions.add(n as u64);
            self.report_batch(core);
            budget -= n;
        }
        let dropped = self.ring.dropped();
        let overflowed = self.ring.overflowed() || dropped != self.dropped_seen;
        self.unsettled = overflowed || budget == 0;
        if overflowed {
            // The next enter waits for events, which flushes the kernel's overflow list; the
            // multishot operations it ended come back without MORE and are re-armed. (The
            // dropped count is the kernel's running total: count its changes.)
            self.dropped_seen = dropped;
            self.stats.cq_overflows.add(1);
        }
        match self.fatal.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn is_quiescent(&self) -> bool {
        self.slots.live() == 0 && self.accept == AcceptState::Closed
    }

    fn settled(&self) -> bool {
        !self.unsettled
    }

    fn reads_between_turns(&self) -> bool {
        self.ring.taskrun() != crate::ring::TaskRun::Deferred
    }

    fn abort_all(&mut self) {
        self.stop_accepting(if self.shared_listener {
            AfterAccept::Leave
        } else {
            // A listener of its own: what its backlog holds is reset with it either way.
            AfterAccept::Drain
        });
        for slot in 0..self.slots.len() {
            // Closing is idempotent: a slot already closing or free is left as it is.
            self.close(slot as u32);
        }
    }

    fn describe(&self) -> String {
        format!(
            "io_uring driver (multishot accept and recv, buf ring, {:?} task run, {})",
            self.ring.taskrun(),
            self.doorbell_kind()
        )
    }

    fn doorbell(&mut self, target: usize) -> bool {
        self.ring_doorbell(target)
    }
}

impl UringDriver {
    /// Applies (and drains) the core's commands, in order.
    fn apply_all(&mut self, commands: &mut Vec<Command>) {
        for cmd in commands.drain(..) {
            self.apply_one(cmd);
        }
    }

    /// Queues `entry` for the next enter.
    ///
    /// # Safety
    ///
    /// As [`Ring::push`]: what `entry` points to outlives its completion.
    unsafe fn push(&mut self, entry: &io_uring::squeue::Entry) {
        // SAFETY: forwarded from this function's contract.
        if let Err(e) = unsafe { self.ring.push(entry) } {
            self.fatal.get_or_insert(e);
        }
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let entry = op::read::read(
            self.wake_fd.as_raw_fd(),
            self.wake_buf.cast(),
            8,
            UserData::engine(Op::Wake),
        );
        // SAFETY: `wake_buf` is freed only in Drop and only when no read is in flight; the
        // eventfd stays open as long as `wake_fd` (held here) lives.
        unsafe { self.push(&entry) };
        self.wake_armed = true;
    }

    /// On teardown: cancels the engine's own operations still in flight (the accept and the
    /// wake-up read) and waits, bounded, for their final completions. A connection an accept
    /// hands over meanwhile, or one left unreported in the last batch, is closed here: the
    /// kernel installs an accepted descriptor in the process's table as it posts the
    /// completion, so one never reaped would stay open (its peer connected and never served)
    /// for as long as the process lives. Only an accept cancelled before it completes leaves
    /// its connection in the listener's backlog, for the other cores or the listener's close.
    fn settle_engine_ops(&mut self) {
        let mut accepting = matches!(self.accept, AcceptState::Armed | AcceptState::Cancelling(_));
        let unreported = self.batch_pos.min(self.batch.len());
        for c in &self.batch[unreported..] {
            if UserData::from_raw(c.user_data).op() == Some(Op::Accept) {
                close_accepted(c);
                accepting &= c.more();
            }
        }
        self.batch_pos = self.batch.len();
        if accepting && self.accept == AcceptState::Armed {
            let entry = op::cancel::by_user_data(
                UserData::engine(Op::Accept),
                UserData::engine(Op::AcceptCancel),
            );
            // SAFETY: a cancel points to nothing.
            unsafe { self.push(&entry) };
        }
        if self.wake_armed {
            let entry = op::cancel::by_user_data(
                UserData::engine(Op::Wake),
                UserData::engine(Op::WakeCancel),
            );
            // SAFETY: a cancel points to nothing.
            unsafe { self.push(&entry) };
        }
        let mut batch = Vec::with_capacity(64);
        for _ in 0..100 {
            if !accepting && !self.wake_armed {
                break;
            }
            if self.ring.enter(Some(Duration::from_millis(10))).is_err() {
                break;
            }
            batch.clear();
            self.ring.reap(&mut batch, 64);
            for c in &batch {
                match UserData::from_raw(c.user_data).op() {
                    Some(Op::Wake) => self.wake_armed = false,
                    Some(Op::Accept) => {
                        close_accepted(c);
                        accepting &= c.more();
                    }
                    _ => {}
                }
            }
        }
        if !accepting {
            // No accept in flight: the listener goes with the driver.
            self.accept = AcceptState::Closed;
        }
    }

    fn slot_mut(&mut self, ud: UserData) -> Option<&mut IoSlot> {
        self.slots.current_mut(ud.slot(), ud.generation())
    }

    /// Submits the close of a closing slot once nothing of it is in flight.
    fn settle(&mut self, slot: u32) {
        let io = &mut self.slots[slot as usize];
        if io.settle() {
            let entry = op::close::close(
                io.take_fd_for_close(),
                UserData::new(Op::Close, slot, io.generation),
            );
            // SAFETY: a close points to nothing.
            unsafe { self.push(&entry) };
        }
    }

    fn rearm_starved(&mut self) {
        if self.starved.is_empty() {
            return;
        }
        let mut starved = std::mem::take(&mut self.starved);
        for &(slot, generation) in &starved {
            let Some(io) = self.slots.current_mut(slot, generation) else {
                continue;
            };
            if io.life != Life::Open || io.recv != Recv::Starved {
                continue;
            }
            io.recv = Recv::Armed;
            let entry =
                op::recv::multishot(io.raw_fd(), BGID, UserData::new(Op::Recv, slot, generation));
            // SAFETY: a multishot receive points to nothing; buffers come from the buffer ring,
            // which outlives the ring.
            unsafe { self.push(&entry) };
            self.stats.recv_rearms.add(1);
        }
        starved.clear();
        self.starved = starved;
    }

    /// Arms the accept if it is due; returns the wait bound, shortened to the accept's retry.
    fn arm_accept(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        match self.accept {
            AcceptState::RetryAt(at) => {
                let now = Instant::now();
                if now < at {
                    let left = at - now;
                    return Some(timeout.map_or(left, |t| t.min(left)));
                }
            }
            AcceptState::Idle => {}
            _ => return timeout,
        }
        let Some(listener) = &self.listener else {
            return timeout;
        };
        let ud = UserData::engine(Op::Accept);
        // A multishot accept's waiter keeps its place in the socket's wait queue, and the
        // kernel wakes the first one: on a listener every core shares (a Unix server's), one
        // core would take every connection that arrives while it waits. A single-shot accept
        // re-queues behind the other cores' after each connection, so they take turns.
        let entry = if self.shared_listener {
            op::accept::single(listener.as_raw_fd(), ud)
        } else {
            op::accept::multishot(listener.as_raw_fd(), ud)
        };
        // SAFETY: an accept without an address points to nothing.
        unsafe { self.push(&entry) };
        self.accept = AcceptState::Armed;
        timeout
    }

    /// # Safety
    ///
    /// As [`UringDriver::complete`].
    unsafe fn complete_accept<K: Core>(&mut self, c: &Completion, core: &mut K) {
        let stopping = match self.accept {
            AcceptState::Cancelling(then) => Some(then),
            _ => None,
        };
        // SAFETY: `complete`'s contract, passed on.
        match unsafe { op::accept::complete(c) } {
            Accepted::Conn { fd, more } => {
                // While cancelling, connections the accept still delivers are part of the
                // backlog being drained: they are served, not dropped.
                self.backoff.succeeded();
                self.nodelay.apply(fd.as_fd());
                core.accepted(fd);
                self.apply_all(core.commands());
                if !more {
                    self.accept_ended(stopping);
                }
            }
            Accepted::Ended => self.accept_ended(stopping),
            Accepted::Failed(_) if stopping.is_some() => {
                if !c.more() {
                    self.accept_ended(stopping);
                }
            }
            Accepted::Failed(e) => {
                self.stats.accept_backoffs.add(1);
                core.accept_failed(&e);
                self.apply_all(core.commands());
                if !c.more() {
                    self.accept = AcceptState::RetryAt(self.backoff.failed());
                }
            }
        }
    }

    fn accept_ended(&mut self, stopping: Option<AfterAccept>) {
        match stopping {
            None => self.accept = AcceptState::Idle,
            Some(AfterAccept::Drain) => self.accept = AcceptState::Drain,
            Some(AfterAccept::Leave) => self.leave_listener(),
        }
    }

    /// Closes the listener without taking its backlog.
    fn leave_listener(&mut self) {
        self.accept = AcceptState::Closed;
        self.listener = None;
    }

    /// Takes the connections queued in the listener's backlog (bounded), then closes it.
    fn drain_backlog<K: Core>(&mut self, core: &mut K) {
        self.accept = AcceptState::Closed;
        let Some(listener) = self.listener.take() else {
            return;
        };
        listener::drain(listener, false, DRAIN_LIMIT, |fd| {
            self.stats.drained_accepts.add(1);
            self.nodelay.apply(fd.as_fd());
            core.accepted(fd);
            self.apply_all(core.commands());
        });
    }

    fn complete_send<K: Core>(&mut self, ud: UserData, c: &Completion, core: &mut K) {
        let Some(io) = self.slot_mut(ud) else {
            debug_assert!(false, "send completion for a freed slot");
            return;
        };
        // The kernel is done with the send's memory: it goes back to the core.
        let send = io
            .send
            .take()
            .expect("a send completion for a slot with a send in flight");
        if io.life == Life::Open {
            core.sent(ud.slot(), send, op::send::complete(c));
            self.apply_all(core.commands());
        } else {
            drop(send);
            self.settle(ud.slot());
        }
    }

    fn complete_cancel(&mut self, ud: UserData, c: &Completion) {
        let Some(io) = self.slot_mut(ud) else {
            debug_assert!(false, "cancel completion for a freed slot");
            return;
        };
        io.cancels = io.cancels.saturating_sub(1);
        if io.life == Life::Open {
            return; // A pause's cancel: the receive's own final completion follows.
        }
        if c.res < 0 && c.res != -libc::ENOENT && c.res != -libc::EALREADY {
            // The kernel cannot cancel by descriptor (older than 5.19): shutting the socket
            // down completes its receive with EOF and its send with EPIPE.
            if let Some(fd) = &io.fd {
                let _ = sys::shutdown_both(fd.as_fd());
            }
        }
        self.settle(ud.slot());
    }

    fn complete_connect<K: Core>(&mut self, ud: UserData, c: &Completion, core: &mut K) {
        let Some(io) = self.slot_mut(ud) else {
            debug_assert!(false, "connect completion for a freed slot");
            return;
        };
        io.connecting = false;
        if io.life != Life::Open {
            self.settle(ud.slot());
            return;
        }
        let result = op::connect::complete(c);
        if result.is_ok() {
            io.recv = Recv::Armed;
            let entry = op::recv::multishot(
                io.raw_fd(),
                BGID,
                UserData::new(Op::Recv, ud.slot(), io.generation),
            );
            // SAFETY: a multishot receive points to nothing; buffers come from the buffer ring.
            unsafe { self.push(&entry) };
        }
        core.connected(ud.slot(), result);
        self.apply_all(core.commands());
    }

    fn complete_close<K: Core>(&mut self, ud: UserData, c: &Completion, core: &mut K) {
        let Some(io) = self.slot_mut(ud) else {
            debug_assert!(false, "close completion for a freed slot");
            return;
        };
        debug_assert!(c.res >= 0, "close failed: {}", c.res);
        io.free();
        self.slots.release();
        core.closed(ud.slot());
        self.apply_all(core.commands());
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // First: from now on no core names this ring in a MSG_RING (`crate::doorbell`).
        self.revoke_ring();
        self.settle_engine_ops();
        // Sessions still open here (a worker that died, or a fatal ring error) own their
        // descriptors: shut them down so their peers see the end now (the ring's operations
        // hold the sockets until the kernel tears the ring down), and close them. A slot whose
        // close op was submitted is left alone: the op may have run, and closing again could
        // close a descriptor reused elsewhere.
        for io in self.slots.iter_mut() {
            if let Some(fd) = io.fd.take() {
                let _ = sys::shutdown_both(fd.as_fd());
                drop(fd);
            }
            if let Some(send) = io.send.take() {
                // The kernel may still read it (the ring's teardown is asynchronous): leak it
                // rather than free memory a send in flight points to.
                std::mem::forget(send);
            }
        }
        if let Some(listener) = self.listener.as_ref().filter(|_| !self.shared_listener) {
            // (A shared listener is not shut down: the other cores still accept on it; this
            // ring's accept was cancelled, or a connection it took was closed, above.)
            // The ring's accept holds the listener open until the kernel has torn the ring
            // down; shutting it down leaves the SO_REUSEPORT group now, so no connection is
            // routed to a core that will never accept it.
            let _ = sys::shutdown_both(listener.as_fd());
        }
        if !self.wake_armed {
            // SAFETY: allocated by Box::into_raw in `new`; no read is in flight to write it.
            drop(unsafe { Box::from_raw(self.wake_buf) });
        }
        // Otherwise the kernel may still write 8 bytes there: leak them rather than risk it.
        if self.is_quiescent() {
            // SAFETY: dropped once, here; nothing in flight can use the buffers, and the
            // field is not used again.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        }
    }
}

/// Closes the connection an accept's completion carries, if any (teardown: nobody serves it).
fn close_accepted(c: &Completion) {
    if c.res >= 0 {
        // SAFETY: the accept created this descriptor for us and its completion is handled
        // nowhere else (teardown reaps it, or it was left unreported in the last batch).
        unsafe { sys::close(c.res) };
    }
}
