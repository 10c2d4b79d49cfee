//! The epoll driver, for machines where io_uring is unavailable: the same core, sessions,
//! codecs and handlers, with readiness instead of completions.
//!
//! Level-triggered, by choice: a ready socket gets one receive per turn (at most one read
//! buffer's worth), so every session is served in every turn and no readiness has to be
//! remembered across turns, as edge-triggering would require (read until EAGAIN, or track
//! what is still readable). The price is that interest must be exact: EPOLLIN only while input
//! is wanted (not paused, not after EOF), EPOLLOUT only while a connect or a blocked send waits,
//! or a level-triggered descriptor would be reported on every turn.
//!
//! Sends are written at once (one sendmsg per session per turn, as the core asks) and their
//! outcome is reported to the core at the start of the next turn, like a completion; one that
//! would block waits in its slot for EPOLLOUT. Received bytes are read into one buffer per core
//! and decoded straight from it. Invariant: after `close` nothing but `closed` is reported for
//! the slot, and `closed` comes only from the turn loop, never from inside a core call.

mod slot;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::slot::{Life, Slot};
use super::{AcceptBackoff, Driver, Ops, Sink};
use crate::config::Config;
use crate::error::ServerError;
use crate::listener;
use crate::stats::CoreStats;
use crate::sys;
use crate::user_data::{Op, UserData};

/// Size of the per-core read buffer (one receive per ready socket per turn).
const READ_BUF: usize = 64 * 1024;
/// Events taken per `epoll_wait`.
const MAX_EVENTS: usize = 1024;
/// Connections accepted per turn before others get their turn.
const ACCEPTS_PER_TURN: usize = 128;
const DRAIN_LIMIT: usize = 65536;

/// An outcome the core hears at the next turn, as if the kernel had completed it.
#[derive(Debug)]
enum Pending {
    Sent(u32, u32, io::Result<usize>),
    Connected(u32, u32, io::Result<()>),
    Closed(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accept {
    Listening,
    /// Taken out of epoll after an accept error; put back at this time.
    RetryAt(Instant),
    /// Shutting down: take the backlog next turn, then close.
    Drain,
    Closed,
}

pub(crate) struct EpollOps {
    epoll: OwnedFd,
    slots: Vec<Slot>,
    live: usize,
    pending: VecDeque<Pending>,
    listener: Option<OwnedFd>,
    accept: Accept,
    backoff: AcceptBackoff,
    wake_fd: Arc<OwnedFd>,
    stats: Arc<CoreStats>,
    fatal: Option<io::Error>,
}

pub(crate) struct EpollDriver {
    ops: EpollOps,
    events: Vec<libc::epoll_event>,
    buf: Vec<u8>,
}

impl Drop for EpollOps {
    fn drop(&mut self) {
        // Sessions still open here (a worker that died, or a fatal error) own their
        // descriptors: close them so their peers see the end.
        for s in &mut self.slots {
            if s.life == Life::Open {
                sys::close(s.fd);
                s.fd = -1;
            }
        }
    }
}

impl EpollDriver {
    pub(crate) fn new(
        config: &Config,
        listener: Option<OwnedFd>,
        wake_fd: Arc<OwnedFd>,
        stats: Arc<CoreStats>,
    ) -> Result<EpollDriver, ServerError> {
        let fail = |step| move |source| ServerError::Setup { step, source };
        let epoll = sys::epoll_create().map_err(fail("epoll_create1"))?;
        if let Some(l) = &listener {
            sys::set_nonblocking(l.as_raw_fd(), true).map_err(fail("listener O_NONBLOCK"))?;
            let token = UserData::engine(Op::Accept).raw();
            sys::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                l.as_raw_fd(),
                libc::EPOLLIN as u32,
                token,
            )
            .map_err(fail("epoll_ctl(listener)"))?;
        }
        let token = UserData::engine(Op::Wake).raw();
        sys::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake_fd.as_raw_fd(),
            libc::EPOLLIN as u32,
            token,
        )
        .map_err(fail("epoll_ctl(eventfd)"))?;
        Ok(EpollDriver {
            ops: EpollOps {
                epoll,
                slots: Vec::with_capacity(config.max_sessions),
                live: 0,
                pending: VecDeque::with_capacity(1024),
                accept: if listener.is_some() {
                    Accept::Listening
                } else {
                    Accept::Closed
                },
                listener,
                backoff: AcceptBackoff::new(),
                wake_fd,
                stats,
                fatal: None,
            },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
            buf: vec![0; READ_BUF],
        })
    }

    /// Reports the outcomes queued by the core's calls, including those queued while reporting
    /// (a send completes, the core sends again); bounded rounds.
    fn deliver<S: Sink<EpollOps>>(&mut self, sink: &mut S) {
        for _ in 0..4 {
            if self.ops.pending.is_empty() {
                return;
            }
            for _ in 0..self.ops.pending.len() {
                let Some(p) = self.ops.pending.pop_front() else {
                    break;
                };
                match p {
                    Pending::Sent(slot, generation, result) => {
                        if self.ops.slots[slot as usize].is_current(generation) {
                            sink.sent(&mut self.ops, slot, result);
                        }
                    }
                    Pending::Connected(slot, generation, result) => {
                        if self.ops.slots[slot as usize].is_current(generation) {
                            sink.connected(&mut self.ops, slot, result);
                        }
                    }
                    Pending::Closed(slot) => {
                        let s = &mut self.ops.slots[slot as usize];
                        debug_assert_eq!(s.life, Life::Closed);
                        s.life = Life::Free;
                        self.ops.live -= 1;
                        sink.closed(&mut self.ops, slot);
                    }
                }
            }
        }
    }

    fn readable<S: Sink<EpollOps>>(&mut self, slot: u32, sink: &mut S) {
        let s = &mut self.ops.slots[slot as usize];
        if !s.want_read || s.read_done {
            return;
        }
        match sys::recv(s.fd, &mut self.buf) {
            Ok(0) => {
                s.read_done = true;
                self.ops.update(slot);
                sink.read_closed(&mut self.ops, slot, None);
            }
            Ok(n) => {
                self.ops.stats.completions.add(1);
                sink.received(&mut self.ops, slot, &self.buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => {
                s.read_done = true;
                self.ops.update(slot);
                sink.read_closed(&mut self.ops, slot, Some(e));
            }
        }
    }

    fn writable(&mut self, slot: u32) {
        let s = &mut self.ops.slots[slot as usize];
        if s.connecting {
            s.connecting = false;
            let result = match sys::take_error(s.fd) {
                Ok(None) => Ok(()),
                Ok(Some(e)) | Err(e) => Err(e),
            };
            let generation = s.generation;
            self.ops.update(slot);
            self.ops
                .pending
                .push_back(Pending::Connected(slot, generation, result));
        } else if s.blocked > 0 {
            let n = std::mem::take(&mut s.blocked);
            let iov = s.iov;
            self.ops.write(slot, &iov[..n]);
        }
    }

    fn session_event<S: Sink<EpollOps>>(&mut self, ud: UserData, events: u32, sink: &mut S) {
        let slot = ud.slot();
        if !self
            .ops
            .slots
            .get(slot as usize)
            .is_some_and(|s| s.is_current(ud.generation()))
        {
            return; // Closed earlier in this turn.
        }
        let error = events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
        if events & libc::EPOLLOUT as u32 != 0 || error {
            self.writable(slot);
        }
        if !self.ops.slots[slot as usize].is_current(ud.generation()) {
            return;
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0 || error {
            self.readable(slot, sink);
        }
        let s = &self.ops.slots[slot as usize];
        if error && s.is_current(ud.generation()) && s.interest() == 0 && s.registered {
            // HUP and ERR are reported whatever the interest: stop watching a descriptor the
            // core no longer reads or writes, or level-triggered epoll would spin on it.
            self.ops.deregister(slot);
        }
    }

    fn accept_ready<S: Sink<EpollOps>>(&mut self, sink: &mut S) {
        let Some(fd) = self.ops.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        for _ in 0..ACCEPTS_PER_TURN {
            match sys::accept(fd, true) {
                Ok(conn) => {
                    self.ops.backoff.succeeded();
                    sink.accepted(&mut self.ops, conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: stop watching the listener and retry later.
                    self.ops.stats.accept_backoffs.add(1);
                    sink.accept_failed(&mut self.ops, &e);
                    let _ = sys::epoll_ctl(
                        self.ops.epoll.as_raw_fd(),
                        libc::EPOLL_CTL_MOD,
                        fd,
                        0,
                        UserData::engine(Op::Accept).raw(),
                    );
                    self.ops.accept = Accept::RetryAt(self.ops.backoff.failed());
                    return;
                }
            }
        }
    }

    /// Puts the listener back into epoll once its back-off passed; returns the wait bound.
    fn accept_due(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        let Accept::RetryAt(at) = self.ops.accept else {
            return timeout;
        };
        let now = Instant::now();
        if now < at {
            let left = at - now;
            return Some(timeout.map_or(left, |t| t.min(left)));
        }
        if let Some(l) = &self.ops.listener {
            let token = UserData::engine(Op::Accept).raw();
            let _ = sys::epoll_ctl(
                self.ops.epoll.as_raw_fd(),
                libc::EPOLL_CTL_MOD,
                l.as_raw_fd(),
                libc::EPOLLIN as u32,
                token,
            );
        }
        self.ops.accept = Accept::Listening;
        timeout
    }

    fn drain<S: Sink<EpollOps>>(&mut self, sink: &mut S) {
        self.ops.accept = Accept::Closed;
        let Some(l) = self.ops.listener.take() else {
            return;
        };
        let ops = &mut self.ops;
        listener::drain(l, true, DRAIN_LIMIT, |fd| {
            ops.stats.drained_accepts.add(1);
            sink.accepted(ops, fd);
        });
    }
}

/// Milliseconds for epoll_wait, rounded up so a sub-millisecond deadline does not spin.
fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
    }
}

impl Driver for EpollDriver {
    type Ops = EpollOps;

    fn ops(&mut self) -> &mut EpollOps {
        &mut self.ops
    }

    fn turn<S: Sink<EpollOps>>(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut S,
    ) -> io::Result<()> {
        let mut timeout = self.accept_due(timeout);
        if self.ops.accept == Accept::Drain {
            self.drain(sink);
            timeout = Some(Duration::ZERO);
        }
        // The outcomes of the sends the core made at the end of the last turn: reported before
        // waiting, so a turn needs one epoll_wait, not a second one that only picks them up.
        if !self.ops.pending.is_empty() {
            sink.turn_started();
            self.deliver(sink);
        }
        if !self.ops.pending.is_empty() || sink.has_pending_work() {
            timeout = Some(Duration::ZERO);
        }
        let n = sys::epoll_wait(
            self.ops.epoll.as_raw_fd(),
            &mut self.events,
            timeout_ms(timeout),
        )?;
        self.ops.stats.turns.add(1);
        sink.turn_started();
        self.deliver(sink);
        for i in 0..n {
            let event = self.events[i];
            let ud = UserData::from_raw(event.u64);
            match ud.op() {
                Some(Op::Recv) => self.session_event(ud, event.events, sink),
                Some(Op::Accept) if self.ops.accept == Accept::Listening => self.accept_ready(sink),
                Some(Op::Accept) => {}
                Some(Op::Wake) => {
                    sys::eventfd_drain(self.ops.wake_fd.as_raw_fd());
                    sink.woken(&mut self.ops);
                }
                _ => debug_assert!(false, "unexpected epoll token {ud:?}"),
            }
        }
        self.deliver(sink);
        match self.ops.fatal.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn is_quiescent(&self) -> bool {
        self.ops.live == 0 && self.ops.accept == Accept::Closed
    }

    fn abort_all(&mut self) {
        self.ops.stop_accepting();
        for slot in 0..self.ops.slots.len() {
            // Closing is idempotent: a slot already closed or free is left as it is.
            self.ops.close(slot as u32);
        }
    }

    fn describe(&self) -> String {
        "epoll driver (level-triggered, 64 KiB read buffer per core)".to_owned()
    }
}

impl EpollOps {
    fn token(&self, slot: u32) -> u64 {
        UserData::new(Op::Recv, slot, self.slots[slot as usize].generation).raw()
    }

    /// Brings the slot's epoll registration in line with what it waits for.
    fn update(&mut self, slot: u32) {
        let token = self.token(slot);
        let s = &mut self.slots[slot as usize];
        let want = s.interest();
        if s.life != Life::Open
            || (s.registered && want == s.events)
            || (!s.registered && want == 0)
        {
            return;
        }
        let op = if s.registered {
            libc::EPOLL_CTL_MOD
        } else {
            libc::EPOLL_CTL_ADD
        };
        match sys::epoll_ctl(self.epoll.as_raw_fd(), op, s.fd, want, token) {
            Ok(()) => {
                s.registered = true;
                s.events = want;
            }
            Err(e) => {
                self.fatal.get_or_insert(e);
            }
        }
    }

    fn deregister(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let _ = sys::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, s.fd, 0, 0);
        s.registered = false;
        s.events = 0;
    }

    fn slot_for(&mut self, slot: u32) -> &mut Slot {
        let idx = slot as usize;
        if idx == self.slots.len() {
            // Within capacity: the slots, and the iovecs of blocked sends, never move.
            assert!(idx < self.slots.capacity(), "more sessions than configured");
            self.slots.push(Slot::new());
        }
        &mut self.slots[idx]
    }

    /// Writes now; the outcome is reported next turn, or the send waits for EPOLLOUT.
    fn write(&mut self, slot: u32, iov: &[libc::iovec]) {
        let s = &mut self.slots[slot as usize];
        // SAFETY: the core keeps the iovecs' memory valid until it hears `sent` or `closed`.
        let result = unsafe { sys::sendmsg(s.fd, iov) };
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let n = iov.len().min(s.iov.len());
                s.iov[..n].copy_from_slice(&iov[..n]);
                s.blocked = n;
                self.update(slot);
            }
            result => {
                let generation = s.generation;
                if s.events & libc::EPOLLOUT as u32 != 0 {
                    self.update(slot); // No longer waiting for EPOLLOUT.
                }
                self.pending
                    .push_back(Pending::Sent(slot, generation, result));
            }
        }
    }
}

impl Ops for EpollOps {
    fn open(&mut self, slot: u32, fd: RawFd) {
        self.slot_for(slot).open(fd);
        self.live += 1;
        self.update(slot);
    }

    fn connect(&mut self, slot: u32, fd: RawFd, addr: SocketAddr) {
        let s = self.slot_for(slot);
        s.open(fd);
        let generation = s.generation;
        self.live += 1;
        let started = sys::set_nonblocking(fd, true).and_then(|()| sys::connect(fd, addr));
        match started {
            Ok(false) => self.slots[slot as usize].connecting = true,
            Ok(true) => self
                .pending
                .push_back(Pending::Connected(slot, generation, Ok(()))),
            Err(e) => {
                self.slots[slot as usize].read_done = true;
                self.pending
                    .push_back(Pending::Connected(slot, generation, Err(e)));
            }
        }
        self.update(slot);
    }

    unsafe fn send(&mut self, slot: u32, iov: &[libc::iovec]) {
        debug_assert!(self.slots[slot as usize].blocked == 0, "one send at a time");
        self.write(slot, iov);
    }

    fn shutdown_write(&mut self, slot: u32) {
        let _ = sys::shutdown_write(self.slots[slot as usize].fd);
    }

    fn close(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.life != Life::Open {
            return;
        }
        // Closing removes the descriptor from epoll; queued outcomes for it are dropped at
        // delivery (the slot is no longer Open).
        sys::close(s.fd);
        s.fd = -1;
        s.life = Life::Closed;
        s.blocked = 0;
        s.registered = false;
        s.events = 0;
        self.pending.push_back(Pending::Closed(slot));
    }

    fn pause_recv(&mut self, slot: u32) {
        self.slots[slot as usize].want_read = false;
        self.update(slot);
    }

    fn resume_recv(&mut self, slot: u32) {
        self.slots[slot as usize].want_read = true;
        self.update(slot);
    }

    fn stop_accepting(&mut self) {
        if matches!(self.accept, Accept::Listening | Accept::RetryAt(_)) {
            self.accept = Accept::Drain;
        }
    }
}
