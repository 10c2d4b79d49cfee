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
//! Sends are written when the core's command is applied (one sendmsg per session per turn) and
//! their outcome is reported to the core later, like a completion; one that would block waits
//! in its slot for EPOLLOUT. Received bytes are read into one buffer per core and decoded
//! straight from it. Invariant: after `Close` nothing but `closed` is reported for the slot.
//! Like the io_uring driver, it applies the commands an event produced right after reporting
//! that event; outcomes they produce (a send's result, a close) are queued and reported as
//! events of their own.

mod slot;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::slot::{Life, Slot};
use super::{AcceptBackoff, Command, Core, Driver, Nodelay, SendBuf, SlotTable};
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
    Sent(u32, u32, Box<SendBuf>, io::Result<usize>),
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

/// The epoll driver of one core.
pub(crate) struct EpollDriver {
    epoll: OwnedFd,
    slots: SlotTable<Slot>,
    pending: VecDeque<Pending>,
    listener: Option<OwnedFd>,
    accept: Accept,
    backoff: AcceptBackoff,
    nodelay: Nodelay,
    /// What the listener is watched for (see `accept_events`).
    accept_events: u32,
    wake_fd: Arc<OwnedFd>,
    stats: Arc<CoreStats>,
    fatal: Option<io::Error>,
    events: Vec<libc::epoll_event>,
    buf: Vec<u8>,
}

impl Drop for EpollDriver {
    fn drop(&mut self) {
        // Sessions still open here (a worker that died, or a fatal error) own their
        // descriptors: close them so their peers see the end.
        for s in self.slots.iter_mut() {
            // Dropping the descriptor closes it.
            s.fd = None;
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
            sys::set_nonblocking(l.as_fd(), true).map_err(fail("listener O_NONBLOCK"))?;
            watch_listener(epoll.as_raw_fd(), l, accept_events(config))
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
            epoll,
            slots: SlotTable::with_capacity(config.max_sessions),
            pending: VecDeque::with_capacity(1024),
            accept: if listener.is_some() {
                Accept::Listening
            } else {
                Accept::Closed
            },
            listener,
            backoff: AcceptBackoff::new(),
            // A Unix socket has no TCP_NODELAY.
            nodelay: Nodelay::new(config.nodelay && config.unix.is_none()),
            accept_events: accept_events(config),
            wake_fd,
            stats,
            fatal: None,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
            buf: vec![0; READ_BUF],
        })
    }

    /// Reports the outcomes queued by the core's calls, including those queued while reporting
    /// (a send completes, the core sends again); bounded rounds.
    fn deliver<K: Core>(&mut self, core: &mut K) {
        for _ in 0..4 {
            if self.pending.is_empty() {
                return;
            }
            for _ in 0..self.pending.len() {
                let Some(p) = self.pending.pop_front() else {
                    break;
                };
                match p {
                    Pending::Sent(slot, generation, send, result) => {
                        if self.slots.is_current(slot, generation) {
                            core.sent(slot, send, result);
                        }
                    }
                    Pending::Connected(slot, generation, result) => {
                        if self.slots.is_current(slot, generation) {
                            core.connected(slot, result);
                        }
                    }
                    Pending::Closed(slot) => {
                        let s = &mut self.slots[slot as usize];
                        debug_assert_eq!(s.life, Life::Closed);
                        s.life = Life::Free;
                        self.slots.release();
                        core.closed(slot);
                    }
                }
                self.apply_all(core.commands());
            }
        }
    }

    fn readable<K: Core>(&mut self, slot: u32, core: &mut K) {
        let s = &mut self.slots[slot as usize];
        if !s.want_read || s.read_done {
            return;
        }
        match sys::recv(s.fd(), &mut self.buf) {
            Ok(0) => {
                s.read_done = true;
                self.update(slot);
                core.read_closed(slot, None);
            }
            Ok(n) => {
                self.stats.completions.add(1);
                core.received(slot, &self.buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => {
                s.read_done = true;
                self.update(slot);
                core.read_closed(slot, Some(e));
            }
        }
        self.apply_all(core.commands());
    }

    fn writable(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.connecting {
            s.connecting = false;
            let result = match sys::take_error(s.fd()) {
                Ok(None) => Ok(()),
                Ok(Some(e)) | Err(e) => Err(e),
            };
            let generation = s.generation;
            self.update(slot);
            self.pending
                .push_back(Pending::Connected(slot, generation, result));
        } else if let Some(send) = s.blocked.take() {
            self.write(slot, send);
        }
    }

    fn session_event<K: Core>(&mut self, ud: UserData, events: u32, core: &mut K) {
        let slot = ud.slot();
        let generation = ud.generation();
        if !self.slots.is_current(slot, generation) {
            return; // Closed earlier in this turn.
        }
        let error = events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
        let connecting = self.slots[slot as usize].connecting;
        if events & libc::EPOLLOUT as u32 != 0 || error {
            self.writable(slot);
        }
        if connecting || !self.slots.is_current(slot, generation) {
            // A connect that just finished is reported before any input (next turn, as the
            // core hears `connected` first); level-triggered epoll reports the input again.
            return;
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0 || error {
            self.readable(slot, core);
        }
        let current = self.slots.is_current(slot, generation);
        let s = &self.slots[slot as usize];
        if error && current && s.interest() == 0 && s.registered {
            // HUP and ERR are reported whatever the interest: stop watching a descriptor the
            // core no longer reads or writes, or level-triggered epoll would spin on it.
            self.deregister(slot);
        }
    }

    fn accept_ready<K: Core>(&mut self, core: &mut K) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        self.accept_from(&listener, core);
        self.listener = Some(listener);
    }

    fn accept_from<K: Core>(&mut self, listener: &OwnedFd, core: &mut K) {
        let fd = listener.as_raw_fd();
        for _ in 0..ACCEPTS_PER_TURN {
            match sys::accept(listener.as_fd(), true) {
                Ok(conn) => {
                    self.backoff.succeeded();
                    self.nodelay.apply(conn.as_fd());
                    core.accepted(conn);
                    self.apply_all(core.commands());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.accept_events & libc::EPOLLEXCLUSIVE as u32 != 0 {
                        // The kernel wakes the first exclusive waiter of a shared socket:
                        // queue this core's behind the others', so that the cores take turns.
                        let _ =
                            sys::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
                        let epoll = self.epoll.as_raw_fd();
                        if let Err(e) = watch_listener(epoll, listener, self.accept_events) {
                            // (ENOMEM, max_user_watches.) Not silently: say so and try again
                            // after the back-off, as after a failed accept.
                            log::warn!("ringwire: cannot watch the listener again: {e}");
                            self.stats.accept_backoffs.add(1);
                            self.accept = Accept::RetryAt(self.backoff.failed());
                        }
                    }
                    return;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: stop watching the listener and retry later.
                    self.stats.accept_backoffs.add(1);
                    core.accept_failed(&e);
                    self.apply_all(core.commands());
                    // Removed rather than modified: an EPOLLEXCLUSIVE registration cannot be.
                    let _ = sys::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
                    self.accept = Accept::RetryAt(self.backoff.failed());
                    return;
                }
            }
        }
    }

    /// Puts the listener back into epoll once its back-off passed; returns the wait bound.
    fn accept_due(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        let Accept::RetryAt(at) = self.accept else {
            return timeout;
        };
        let now = Instant::now();
        if now < at {
            let left = at - now;
            return Some(timeout.map_or(left, |t| t.min(left)));
        }
        self.accept = Accept::Listening;
        if let Some(l) = &self.listener {
            if let Err(e) = watch_listener(self.epoll.as_raw_fd(), l, self.accept_events) {
                log::warn!("ringwire: cannot watch the listener again: {e}");
                self.accept = Accept::RetryAt(self.backoff.failed());
            }
        }
        timeout
    }

    /// Closes the listener without taking its backlog.
    fn leave_listener(&mut self) {
        self.accept = Accept::Closed;
        if let Some(l) = self.listener.take() {
            // Explicitly: the other cores' duplicates keep the socket, so closing ours would
            // not take it out of epoll (it may be out already, after a failed accept).
            let epoll = self.epoll.as_raw_fd();
            let _ = sys::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, l.as_raw_fd(), 0, 0);
        }
    }

    fn drain<K: Core>(&mut self, core: &mut K) {
        self.accept = Accept::Closed;
        let Some(l) = self.listener.take() else {
            return;
        };
        // Closing a descriptor removes it from epoll only once no duplicate keeps its socket
        // open, and a Unix server's other cores hold duplicates: remove it explicitly (it may
        // be out already, after a failed accept).
        let _ = sys::epoll_ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            l.as_raw_fd(),
            0,
            0,
        );
        listener::drain(l, true, DRAIN_LIMIT, |fd| {
            self.stats.drained_accepts.add(1);
            self.nodelay.apply(fd.as_fd());
            core.accepted(fd);
            self.apply_all(core.commands());
        });
    }
}

/// The events a core watches its listener for. A Unix server's cores share one socket:
/// EPOLLEXCLUSIVE wakes one of them per connection rather than all.
fn accept_events(config: &Config) -> u32 {
    if config.unix.is_some() {
        (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32
    } else {
        libc::EPOLLIN as u32
    }
}

/// Adds the listener to `epoll` with `events`.
fn watch_listener(epoll: RawFd, listener: &OwnedFd, events: u32) -> io::Result<()> {
    let token = UserData::engine(Op::Accept).raw();
    sys::epoll_ctl(
        epoll,
        libc::EPOLL_CTL_ADD,
        listener.as_raw_fd(),
        events,
        token,
    )
}

/// Milliseconds for epoll_wait, rounded up so a sub-millisecond deadline does not spin.
fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
    }
}

impl Driver for EpollDriver {
    fn apply(&mut self, commands: &mut Vec<Command>) {
        self.apply_all(commands);
    }

    fn turn<K: Core>(&mut self, timeout: Option<Duration>, core: &mut K) -> io::Result<()> {
        let mut timeout = self.accept_due(timeout);
        if self.accept == Accept::Drain {
            self.drain(core);
            timeout = Some(Duration::ZERO);
        }
        // The outcomes of the sends the core made at the end of the last turn: reported before
        // waiting, so a turn needs one epoll_wait, not a second one that only picks them up.
        if !self.pending.is_empty() {
            core.turn_started();
            self.deliver(core);
            // What they did may have brought a deadline closer (a session now lingering).
            if let Some(bound) = core.wait_bound() {
                timeout = Some(timeout.map_or(bound, |t| t.min(bound)));
            }
        }
        if !self.pending.is_empty() || core.has_pending_work() {
            timeout = Some(Duration::ZERO);
        }
        let n = sys::epoll_wait(
            self.epoll.as_raw_fd(),
            &mut self.events,
            timeout_ms(timeout),
        )?;
        self.stats.turns.add(1);
        core.turn_started();
        self.deliver(core);
        for i in 0..n {
            let event = self.events[i];
            let ud = UserData::from_raw(event.u64);
            match ud.op() {
                Some(Op::Recv) => self.session_event(ud, event.events, core),
                Some(Op::Accept) if self.accept == Accept::Listening => self.accept_ready(core),
                Some(Op::Accept) => {}
                Some(Op::Wake) => {
                    match sys::eventfd_drain(self.wake_fd.as_fd()) {
                        // Interrupted: the wake-up stays readable and comes back next turn.
                        Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                            self.fatal.get_or_insert(e);
                        }
                        _ => {}
                    }
                    core.woken();
                    self.apply_all(core.commands());
                }
                _ => debug_assert!(false, "unexpected epoll token {ud:?}"),
            }
        }
        self.deliver(core);
        match self.fatal.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn is_quiescent(&self) -> bool {
        self.slots.live() == 0 && self.accept == Accept::Closed
    }

    fn abort_all(&mut self) {
        if self.accept_events & libc::EPOLLEXCLUSIVE as u32 != 0 {
            // The listener every core of a Unix server shares: what its backlog holds is the
            // live cores' to serve, not this abandoned one's to take and close.
            self.leave_listener();
        } else {
            // A listener of its own: its backlog is reset with it either way.
            self.apply_one(Command::StopAccepting);
        }
        for slot in 0..self.slots.len() {
            // Closing is idempotent: a slot already closed or free is left as it is.
            self.close(slot as u32);
        }
    }

    fn describe(&self) -> String {
        "epoll driver (level-triggered, 64 KiB read buffer per core, doorbell eventfd)".to_owned()
    }
}

impl EpollDriver {
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
        match sys::epoll_ctl(self.epoll.as_raw_fd(), op, s.fd().as_raw_fd(), want, token) {
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
        let fd = s.fd().as_raw_fd();
        let _ = sys::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
        s.registered = false;
        s.events = 0;
    }

    /// Applies (and drains) the core's commands, in order.
    fn apply_all(&mut self, commands: &mut Vec<Command>) {
        for cmd in commands.drain(..) {
            self.apply_one(cmd);
        }
    }

    fn apply_one(&mut self, cmd: Command) {
        match cmd {
            Command::Open { slot, fd } => {
                self.slots.open(slot).open(fd);
                self.update(slot);
            }
            Command::Connect { slot, fd, addr } => self.connect(slot, fd, &addr),
            Command::Send { slot, send } => {
                debug_assert!(self.slots[slot as usize].blocked.is_none(), "one at a time");
                if self.slots[slot as usize].life == Life::Open {
                    self.write(slot, send);
                }
            }
            Command::ShutdownWrite { slot } => {
                let s = &self.slots[slot as usize];
                if s.life == Life::Open {
                    let _ = sys::shutdown_write(s.fd());
                }
            }
            Command::Close { slot } => self.close(slot),
            Command::PauseRecv { slot } => {
                self.slots[slot as usize].want_read = false;
                self.update(slot);
            }
            Command::ResumeRecv { slot } => {
                self.slots[slot as usize].want_read = true;
                self.update(slot);
            }
            Command::StopAccepting => {
                if matches!(self.accept, Accept::Listening | Accept::RetryAt(_)) {
                    self.accept = Accept::Drain;
                }
            }
        }
    }

    /// Writes now; the outcome is reported as an event, or the send waits for EPOLLOUT.
    fn write(&mut self, slot: u32, send: Box<SendBuf>) {
        let s = &mut self.slots[slot as usize];
        // SAFETY: the iovecs point into the chunks `send` owns, alive for the call.
        let result = unsafe { sys::sendmsg(s.fd(), send.iovecs()) };
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.blocked = Some(send);
                self.update(slot);
            }
            result => {
                let generation = s.generation;
                if s.events & libc::EPOLLOUT as u32 != 0 {
                    self.update(slot); // No longer waiting for EPOLLOUT.
                }
                self.pending
                    .push_back(Pending::Sent(slot, generation, send, result));
            }
        }
    }

    fn connect(&mut self, slot: u32, fd: OwnedFd, addr: &socket2::SockAddr) {
        let s = self.slots.open(slot);
        s.open(fd);
        let generation = s.generation;
        let started = sys::set_nonblocking(s.fd(), true).and_then(|()| sys::connect(s.fd(), addr));
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

    /// Closes the descriptor now (which removes it from epoll); queued outcomes for it are
    /// dropped at delivery (the slot is no longer Open). Idempotent.
    fn close(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.life != Life::Open {
            return;
        }
        s.fd = None;
        s.life = Life::Closed;
        s.blocked = None;
        s.registered = false;
        s.events = 0;
        self.pending.push_back(Pending::Closed(slot));
    }
}
