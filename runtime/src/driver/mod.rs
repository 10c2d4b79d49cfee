//! The driver boundary: how the driver-neutral core ([`crate::worker`]) and a driver that
//! submits and completes I/O talk to each other.
//!
//! The core owns sessions, codecs, handlers, output and write batching; it tells the driver
//! what to do through [`Ops`]. The driver owns the descriptors' I/O state (what is in flight,
//! the kernel's buffers) and reports what happened through [`Sink`]. Slots are the core's slab
//! keys; a driver keeps its own per-slot state under the same key and reports an event only for
//! a slot it considers live. Invariant: after [`Ops::close`] the driver reports nothing more for
//! the slot but, exactly once, [`Sink::closed`], after every operation on it has completed and
//! its descriptor is closed; only then may the core reuse the slot.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

pub(crate) mod epoll;
pub(crate) mod uring;

/// Commands from the core to the driver.
pub(crate) trait Ops {
    /// Takes ownership of an accepted descriptor as session `slot` and starts receiving.
    fn open(&mut self, slot: u32, fd: RawFd);

    /// Takes ownership of a new, unconnected socket as session `slot` and connects it to
    /// `addr`; reports [`Sink::connected`], and starts receiving once connected.
    fn connect(&mut self, slot: u32, fd: RawFd, addr: SocketAddr);

    /// Writes the bytes `iov` describes; completes with [`Sink::sent`]. At most one send per
    /// slot is in flight.
    ///
    /// # Safety
    ///
    /// The memory `iov` points to must stay valid and unmodified until [`Sink::sent`] or
    /// [`Sink::closed`] is reported for `slot`.
    unsafe fn send(&mut self, slot: u32, iov: &[libc::iovec]);

    /// Shuts down the sending side of `slot` (the peer reads EOF after the data written so
    /// far); receiving goes on.
    fn shutdown_write(&mut self, slot: u32);

    /// Stops all I/O of `slot`, closes its descriptor and reports [`Sink::closed`].
    fn close(&mut self, slot: u32);

    /// Stops receiving from `slot` (backpressure). Completions already racing the stop still
    /// deliver their data.
    fn pause_recv(&mut self, slot: u32);

    /// Receives from `slot` again after [`Ops::pause_recv`].
    fn resume_recv(&mut self, slot: u32);

    /// Stops accepting: new connections are refused once every core has closed its listener.
    /// Connections already queued in the listener's backlog are still reported through
    /// [`Sink::accepted`] before the listener closes.
    fn stop_accepting(&mut self);
}

/// Events from the driver to the core.
pub(crate) trait Sink<O: Ops> {
    /// The driver is back from waiting and about to report this turn's completions.
    fn turn_started(&mut self);
    /// The core has work for the end of the turn (sends, connects) that events reported before
    /// the wait created: the driver must not block.
    fn has_pending_work(&self) -> bool;
    /// The connect of outbound session `slot` completed.
    fn connected(&mut self, ops: &mut O, slot: u32, result: io::Result<()>);
    /// A connection was accepted; the core opens a session or closes `fd`.
    fn accepted(&mut self, ops: &mut O, fd: RawFd);
    /// Accepting failed; the driver retries after a back-off.
    fn accept_failed(&mut self, ops: &mut O, error: &io::Error);
    /// Bytes arrived for `slot`. `data` is valid during this call only.
    fn received(&mut self, ops: &mut O, slot: u32, data: &[u8]);
    /// Receiving ended for `slot`: `None` for the peer's EOF, else the error.
    fn read_closed(&mut self, ops: &mut O, slot: u32, error: Option<io::Error>);
    /// The send of `slot` completed.
    fn sent(&mut self, ops: &mut O, slot: u32, result: io::Result<usize>);
    /// `slot` is closed and its slot may be reused.
    fn closed(&mut self, ops: &mut O, slot: u32);
    /// Another thread woke this core.
    fn woken(&mut self, ops: &mut O);
}

/// A per-core I/O driver.
pub(crate) trait Driver {
    type Ops: Ops;

    /// The command side, for work the core does between turns.
    fn ops(&mut self) -> &mut Self::Ops;

    /// One loop turn: submits what was queued, waits for at least one completion (at most
    /// `timeout`), and reports every completion to `sink`.
    fn turn<S: Sink<Self::Ops>>(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut S,
    ) -> io::Result<()>;

    /// No session I/O is in flight and the listener is closed: the core may exit.
    fn is_quiescent(&self) -> bool;

    /// The core stopped abnormally: stop accepting and close every session, with no core to
    /// tell (see `server::abandon`, which then turns until quiescent).
    fn abort_all(&mut self);

    /// What runs, for the start-up log line.
    fn describe(&self) -> String;
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
