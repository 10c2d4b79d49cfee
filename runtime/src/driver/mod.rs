//! The driver boundary: how the driver-neutral core ([`crate::worker`]) and a driver that
//! submits and completes I/O talk to each other.
//!
//! **The rule: events in, commands out, never re-entered.** A driver reports each event to the
//! core ([`Core`]); the core reacts (runs handlers, updates sessions) and records what the
//! driver should do as [`Command`]s in a buffer it keeps and reuses (no allocation per
//! message). The driver applies those commands only after the event call has returned, so no
//! driver call ever runs inside a core call, and no core call inside a driver call. The core
//! never calls the kernel either: it only creates sockets through `sys` (which the command
//! then hands over) and reads a session's peer address; everything that submits, completes,
//! or closes goes through a command.
//!
//! Ownership crosses the boundary in the types: an accepted or connecting descriptor moves to
//! the driver as an `OwnedFd` in [`Command::Open`] / [`Command::Connect`]; a send's bytes,
//! iovecs and msghdr move as one [`SendBuf`] in [`Command::Send`] and come back in
//! [`Core::sent`], so whoever holds the value is the only one that may touch the memory.
//!
//! Slots are the core's slab keys; a driver keeps its own per-slot state under the same key
//! and reports an event only for a slot it considers live. Invariant: after
//! [`Command::Close`] the driver reports nothing more for the slot but, exactly once,
//! [`Core::closed`], after every operation on it has completed and its descriptor is closed;
//! only then may the core reuse the slot.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

pub(crate) use crate::session::SendBuf;

pub(crate) mod epoll;
mod slots;
pub(crate) mod uring;

pub(crate) use slots::{next_generation, DriverSlot, SlotTable};

/// What the core asks a driver to do, applied after the event that produced it.
#[derive(Debug)]
pub(crate) enum Command {
    /// Take an accepted descriptor as session `slot` and start receiving.
    Open { slot: u32, fd: OwnedFd },
    /// Take a new, unconnected socket as session `slot` and connect it to `addr` (TCP or
    /// Unix); report [`Core::connected`], and start receiving once connected.
    Connect {
        slot: u32,
        fd: OwnedFd,
        addr: socket2::SockAddr,
    },
    /// Write the bytes `send` holds; report [`Core::sent`] with it. At most one per slot is in
    /// flight: the core has no second `SendBuf` to give.
    Send { slot: u32, send: Box<SendBuf> },
    /// Shut down the sending side (the peer reads EOF after the data written so far);
    /// receiving goes on.
    ShutdownWrite { slot: u32 },
    /// Stop all I/O of the slot, close its descriptor, and report [`Core::closed`].
    Close { slot: u32 },
    /// Stop receiving (backpressure). Completions already racing the stop still deliver data.
    PauseRecv { slot: u32 },
    /// Receive again after [`Command::PauseRecv`].
    ResumeRecv { slot: u32 },
    /// Stop accepting: new connections are refused once every core has closed its listener.
    /// Connections already queued in the listener's backlog are still reported through
    /// [`Core::accepted`] before the listener closes.
    StopAccepting,
}

/// Events from the driver to the core. The core answers only by queueing commands.
pub(crate) trait Core {
    /// The driver is back from waiting and about to report this turn's completions.
    fn turn_started(&mut self);
    /// The core has work for the end of the turn (sends, connects), or is ready to exit, after
    /// events a driver reported before its wait (as epoll does with the outcomes of the last
    /// turn's sends): the driver must not block.
    fn has_pending_work(&self) -> bool;
    /// The connect of outbound session `slot` completed.
    fn connected(&mut self, slot: u32, result: io::Result<()>);
    /// A connection was accepted; the core opens a session or drops (closes) `fd`.
    fn accepted(&mut self, fd: OwnedFd);
    /// Accepting failed; the driver retries after a back-off.
    fn accept_failed(&mut self, error: &io::Error);
    /// Bytes arrived for `slot`. `data` is valid during this call only.
    fn received(&mut self, slot: u32, data: &[u8]);
    /// Receiving ended for `slot`: `None` for the peer's EOF, else the error.
    fn read_closed(&mut self, slot: u32, error: Option<io::Error>);
    /// The send of `slot` completed; its buffer comes back.
    fn sent(&mut self, slot: u32, send: Box<SendBuf>, result: io::Result<usize>);
    /// `slot` is closed and its slot may be reused.
    fn closed(&mut self, slot: u32);
    /// Another thread woke this core.
    fn woken(&mut self);
    /// How long the core may wait now: until its earliest deadline (`None`: no deadline).
    /// Events a driver reports before its wait can bring a deadline closer than the bound the
    /// turn began with (a session that starts lingering).
    fn wait_bound(&self) -> Option<Duration>;
    /// The commands queued since the driver last looked, in order. The driver drains them.
    fn commands(&mut self) -> &mut Vec<Command>;
}

/// A per-core I/O driver.
pub(crate) trait Driver {
    /// Applies (and drains) `commands`, in order.
    fn apply(&mut self, commands: &mut Vec<Command>);

    /// One loop turn: submits what was queued, waits for at least one completion (at most
    /// `timeout`), and reports every completion to `core`, applying the commands each one
    /// produced before reporting the next.
    fn turn<C: Core>(&mut self, timeout: Option<Duration>, core: &mut C) -> io::Result<()>;

    /// No session I/O is in flight and the listener is closed: the core may exit.
    fn is_quiescent(&self) -> bool;

    /// Every completion the kernel had for the last turn was reported: none waits in an
    /// overflow list or beyond the turn's budget. Until it is, input may have left a socket
    /// without reaching the core yet, so the core closes no session as idle.
    fn settled(&self) -> bool {
        true
    }

    /// The kernel may copy a socket's input into this driver's buffers between turns (io_uring
    /// without DEFER_TASKRUN runs a receive's task work at any kernel transition), so input can
    /// be out of the socket and not yet with the core. epoll reads only when the driver asks.
    fn reads_between_turns(&self) -> bool {
        false
    }

    /// The core stopped abnormally: stop accepting and close every session, with no core to
    /// tell (see `server::abandon`, which then turns until quiescent).
    fn abort_all(&mut self);

    /// What runs, for the start-up log line.
    fn describe(&self) -> String;

    /// Rings core `target`'s doorbell from this core (it announced that it sleeps and a
    /// message for it was just published). Returns false if this driver has no way of its
    /// own, and the caller writes the target's eventfd instead.
    fn doorbell(&mut self, target: usize) -> bool {
        let _ = target;
        false
    }
}

/// Exponential back-off for re-arming accept after a failure (EMFILE, ENFILE, ...): never a
/// tight loop, never giving up.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        AcceptBackoff { next: Self::MIN }
    }

    /// An accept failed: when to try again (each failure doubles the wait, up to a second).
    pub(crate) fn failed(&mut self) -> Instant {
        let at = Instant::now() + self.next;
        self.next = (self.next * 2).min(Self::MAX);
        at
    }

    /// An accept succeeded: the next failure waits the minimum again.
    pub(crate) fn succeeded(&mut self) {
        self.next = Self::MIN;
    }
}

/// The TCP_NODELAY policy for accepted sockets, the same for every driver: the listener has it
/// set, and Linux copies it to accepted sockets, so after checking the first one no syscall is
/// made per accept; on a kernel that does not copy it, it is set on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nodelay {
    Off,
    /// Not known yet whether accepted sockets inherit it from the listener.
    Unknown,
    /// Accepted sockets inherit it: nothing to do.
    Inherited,
    /// Set on each accepted socket.
    PerAccept,
}

impl Nodelay {
    pub(crate) fn new(on: bool) -> Self {
        if on {
            Nodelay::Unknown
        } else {
            Nodelay::Off
        }
    }

    /// Applies the policy to an accepted socket.
    pub(crate) fn apply(&mut self, fd: BorrowedFd<'_>) {
        match *self {
            Nodelay::Off | Nodelay::Inherited => {}
            Nodelay::Unknown => {
                *self = if crate::sys::nodelay(fd).unwrap_or(false) {
                    Nodelay::Inherited
                } else {
                    Nodelay::PerAccept
                };
                self.apply(fd);
            }
            Nodelay::PerAccept => {
                let _ = crate::sys::set_nodelay(fd, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn nodelay_is_inherited_from_the_listener_or_set_per_accept() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (plain, _) = listener.accept().unwrap();
        // A listener without TCP_NODELAY: accepted sockets lack it, so it is set on each.
        let mut policy = Nodelay::new(true);
        policy.apply(plain.as_fd());
        assert_eq!(policy, Nodelay::PerAccept);
        assert!(plain.nodelay().unwrap());

        socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (inherited, _) = listener.accept().unwrap();
        let mut policy = Nodelay::new(true);
        policy.apply(inherited.as_fd());
        assert_eq!(
            policy,
            Nodelay::Inherited,
            "Linux copies it from the listener"
        );
        assert!(inherited.nodelay().unwrap());

        let mut off = Nodelay::new(false);
        let _client = TcpStream::connect(addr).unwrap();
        let (untouched, _) = listener.accept().unwrap();
        untouched.set_nodelay(false).unwrap();
        off.apply(untouched.as_fd());
        assert!(!untouched.nodelay().unwrap());
    }
}
