//! A session is one connection as the handler sees it: its identity, its codec and its output.
//!
//! Output is a short queue of chunks from the core's [`BufPool`]. A chunk that a send in flight
//! covers is frozen (the kernel reads it) until that send completes; new output goes into a
//! chunk behind it. So replies produced during one loop turn are gathered and written together,
//! at most one write is in flight, and the order of bytes is the order they were produced.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::codec::{Codec, CodecError};
use crate::pool::BufPool;
use crate::stats::CoreStats;
use crate::sys;
use crate::timer::Micros;

/// Most chunks one send covers (one sendmsg with this many iovecs at most).
pub(crate) const MAX_IOV: usize = 8;

/// Identifies a session: the worker that owns it and a sequence number unique on that worker.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    pub(crate) fn new(worker: usize, seq: u64) -> Self {
        SessionId(((worker as u64) << 48) | (seq & ((1 << 48) - 1)))
    }

    /// The index of the worker that owns the session (`0..` the number of workers; not a CPU
    /// number: see the builder's `cpus`).
    pub fn worker(self) -> usize {
        (self.0 >> 48) as usize
    }

    /// The raw value, unique within one server.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.worker(), self.0 & ((1 << 48) - 1))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Why a session closed, as `Handler::on_close` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side and every reply was written.
    PeerClosed,
    /// The handler called [`Session::close`] and pending output was written.
    Local,
    /// The peer reset the connection (ECONNRESET, EPIPE).
    Reset,
    /// The codec rejected the input.
    CodecError,
    /// A receive or send failed for another reason.
    IoError,
    /// A callback panicked.
    Panic,
    /// The server is shutting down.
    Shutdown,
    /// Nothing was received for the idle timeout.
    IdleTimeout,
    /// An incomplete frame was not completed within the read timeout.
    ReadTimeout,
    /// Pending output made no progress within the write timeout.
    WriteTimeout,
    /// Pending output passed the session's output limit (the builder's `max_output`).
    OutputLimit,
}

impl CloseReason {
    /// Every reason, in the order stats report them.
    pub const ALL: [CloseReason; 11] = [
        CloseReason::PeerClosed,
        CloseReason::Local,
        CloseReason::Reset,
        CloseReason::CodecError,
        CloseReason::IoError,
        CloseReason::Panic,
        CloseReason::Shutdown,
        CloseReason::IdleTimeout,
        CloseReason::ReadTimeout,
        CloseReason::WriteTimeout,
        CloseReason::OutputLimit,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Pending output of one session.
#[derive(Debug, Default)]
pub(crate) struct Output {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of `chunks[0]` already written.
    head: usize,
    /// Leading chunks covered by the send in flight; frozen until it completes.
    in_flight: usize,
    /// Bytes not yet written, in flight or not.
    pending: usize,
    /// Bytes the send in flight covers.
    in_flight_bytes: usize,
}

impl Output {
    /// Bytes not yet written.
    pub(crate) fn len(&self) -> usize {
        self.pending
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Some output is not covered by a send in flight.
    pub(crate) fn has_unsent(&self) -> bool {
        self.pending > 0 && (self.in_flight == 0 || self.chunks.len() > self.in_flight)
    }

    /// The chunk new output is appended to: never one a send in flight covers.
    pub(crate) fn tail_chunk(&mut self, pool: &mut BufPool, want: usize) -> &mut Vec<u8> {
        if self.chunks.len() <= self.in_flight {
            self.chunks.push_back(pool.take(want));
        }
        self.chunks.back_mut().expect("a chunk was just ensured")
    }

    /// Accounts for `n` bytes appended to the tail chunk.
    pub(crate) fn appended(&mut self, n: usize) {
        self.pending += n;
    }

    /// Fills `iov` with the unwritten output (up to `iov.len()` chunks) and freezes those
    /// chunks until [`Output::complete`]. Returns the number of iovecs filled.
    pub(crate) fn prepare_send(&mut self, iov: &mut [libc::iovec]) -> usize {
        debug_assert_eq!(self.in_flight, 0, "one send in flight at a time");
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().enumerate().take(iov.len()) {
            let start = if i == 0 { self.head } else { 0 };
            if chunk.len() == start {
                break;
            }
            iov[n] = libc::iovec {
                iov_base: chunk[start..].as_ptr() as *mut libc::c_void,
                iov_len: chunk.len() - start,
            };
            self.in_flight_bytes += chunk.len() - start;
            n += 1;
        }
        self.in_flight = n;
        n
    }

    /// The send in flight wrote `written` bytes: release what was written, unfreeze the rest.
    /// Returns whether the send wrote less than it covered.
    pub(crate) fn complete(&mut self, mut written: usize, pool: &mut BufPool) -> bool {
        debug_assert!(written <= self.in_flight_bytes);
        let partial = written < self.in_flight_bytes;
        self.in_flight_bytes = 0;
        written = written.min(self.pending);
        self.pending -= written;
        while written > 0 {
            let front = self.chunks.front().map_or(0, |c| c.len() - self.head);
            if written >= front {
                written -= front;
                self.head = 0;
                if let Some(chunk) = self.chunks.pop_front() {
                    pool.give(chunk);
                }
            } else {
                self.head += written;
                written = 0;
            }
        }
        if self.pending == 0 {
            // Drop empty chunks left behind an exact write.
            while let Some(chunk) = self.chunks.pop_front() {
                pool.give(chunk);
            }
            self.head = 0;
        }
        self.in_flight = 0;
        partial
    }

    /// Gives every chunk back. Only once no send is in flight.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        for chunk in self.chunks.drain(..) {
            pool.give(chunk);
        }
        self.head = 0;
        self.in_flight = 0;
        self.in_flight_bytes = 0;
        self.pending = 0;
    }
}

/// A session's timeouts and tick period, in microseconds (`None`: off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) idle: Option<Micros>,
    pub(crate) read: Option<Micros>,
    pub(crate) write: Option<Micros>,
    pub(crate) tick: Option<Micros>,
}

fn micros(d: Option<Duration>) -> Option<Micros> {
    d.map(|d| (d.as_micros() as Micros).max(1))
}

impl Timeouts {
    pub(crate) fn new(
        idle: Option<Duration>,
        read: Option<Duration>,
        write: Option<Duration>,
    ) -> Self {
        Timeouts {
            idle: micros(idle),
            read: micros(read),
            write: micros(write),
            tick: None,
        }
    }
}

/// The parts of a session the engine keeps besides codec and handler.
#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) id: SessionId,
    pub(crate) fd: RawFd,
    pub(crate) out: Output,
    /// The handler asked to close.
    pub(crate) close_requested: bool,
    pub(crate) timeouts: Timeouts,
    /// The handler changed `timeouts`; the core reschedules.
    pub(crate) timeouts_changed: bool,
    /// Reading is paused because output is above the high-water mark.
    pub(crate) paused: bool,
    /// The server is draining for shutdown.
    pub(crate) draining: bool,
    /// Opened by a connect rather than an accept.
    pub(crate) outbound: bool,
    /// Most pending output allowed; past it nothing more is encoded and the core closes the
    /// session.
    pub(crate) output_limit: usize,
}

impl SessionState {
    pub(crate) fn new(id: SessionId, fd: RawFd, timeouts: Timeouts) -> Self {
        SessionState {
            id,
            fd,
            out: Output::default(),
            close_requested: false,
            timeouts,
            timeouts_changed: false,
            paused: false,
            draining: false,
            outbound: false,
            output_limit: usize::MAX,
        }
    }
}

/// One connection, as a handler sees it during a callback: reply, close, and identity.
///
/// Handlers run inline on the core that owns the session: everything here is local to that
/// core, and a slow callback stalls every session of the core.
pub struct Session<'a, C: Codec> {
    pub(crate) codec: &'a mut C,
    pub(crate) state: &'a mut SessionState,
    pub(crate) pool: &'a mut BufPool,
    pub(crate) stats: &'a CoreStats,
    /// Outbound connections requested during the callback, opened by the core right after.
    pub(crate) connects: &'a mut Vec<SocketAddr>,
}

impl<'a, C: Codec> Session<'a, C> {
    /// Encodes `item` into the session's output. It is written at the end of the loop turn,
    /// together with every other reply produced in the turn.
    ///
    /// Once the pending output is over the session's limit (`max_output`), nothing more is
    /// encoded (an `Encode` error) and the core closes the session after the callback with
    /// [`CloseReason::OutputLimit`]. The limit is checked before each item: a handler that
    /// produces a huge reply should send it in pieces.
    pub fn send(&mut self, item: &C::Item) -> Result<(), CodecError> {
        if self.state.out.len() > self.state.output_limit {
            return Err(CodecError::Encode("session output over its limit".into()));
        }
        let chunk = self.state.out.tail_chunk(self.pool, 0);
        let before = chunk.len();
        match self.codec.encode(item, chunk) {
            Ok(()) => {
                let added = chunk.len() - before;
                self.state.out.appended(added);
                self.stats.frames_out.add(1);
                Ok(())
            }
            Err(e) => {
                chunk.truncate(before);
                Err(e)
            }
        }
    }

    /// Appends raw bytes to the output, bypassing the codec. Dropped once the pending output
    /// is over the session's limit, which closes it (see [`send`](Session::send)).
    pub fn write(&mut self, bytes: &[u8]) {
        if self.state.out.len() > self.state.output_limit {
            return;
        }
        let chunk = self.state.out.tail_chunk(self.pool, bytes.len());
        chunk.extend_from_slice(bytes);
        self.state.out.appended(bytes.len());
    }

    /// Closes the session once its pending output is written. No more frames are delivered.
    pub fn close(&mut self) {
        self.state.close_requested = true;
    }

    /// Whether [`close`](Session::close) was called.
    pub fn is_closing(&self) -> bool {
        self.state.close_requested
    }

    /// Bytes produced and not yet written to the socket.
    pub fn pending_output(&self) -> usize {
        self.state.out.len()
    }

    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.state.id
    }

    /// The index of the worker that owns this session (see [`SessionId::worker`]).
    pub fn worker(&self) -> usize {
        self.state.id.worker()
    }

    /// The peer's address (one `getpeername` call).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sys::peer_addr(self.state.fd)
    }

    /// The codec of this session.
    pub fn codec(&mut self) -> &mut C {
        self.codec
    }

    /// Opens an outbound connection to `addr` on this session's core, right after this
    /// callback. The new session gets a handler from the same factory, with the same codec;
    /// its `on_open` runs once connected, or `on_error` and `on_close` if the connect fails.
    pub fn connect(&mut self, addr: SocketAddr) {
        self.connects.push(addr);
    }

    /// Whether this session was opened by [`connect`](Session::connect) (or a client), rather
    /// than accepted.
    pub fn is_outbound(&self) -> bool {
        self.state.outbound
    }

    /// Whether reading is paused because pending output is above the high-water mark; it
    /// resumes once output drains to the low-water mark.
    pub fn is_paused(&self) -> bool {
        self.state.paused
    }

    /// Whether the server is draining for shutdown: no new connections are accepted, and this
    /// session is served until its peer closes or the drain deadline passes. A handler of a
    /// request/response protocol may close after its current reply.
    pub fn is_draining(&self) -> bool {
        self.state.draining
    }

    /// Calls `Handler::on_tick` every `period` (`None` stops it). Ticks fall on a grid of the
    /// core's clock (multiples of the period), so sessions of a core with the same period tick
    /// together, in one loop turn. Resolution: a microsecond on the io_uring driver, a
    /// millisecond on epoll.
    pub fn set_tick(&mut self, period: impl Into<Option<Duration>>) {
        self.state.timeouts.tick = micros(period.into());
        self.state.timeouts_changed = true;
    }

    /// Closes the session when nothing is received for `timeout` (`None`: never). Takes a
    /// `Duration` or an `Option`, as the builder's `idle_timeout` does.
    pub fn set_idle_timeout(&mut self, timeout: impl Into<Option<Duration>>) {
        self.state.timeouts.idle = micros(timeout.into());
        self.state.timeouts_changed = true;
    }

    /// Closes the session when an incomplete frame is not completed within `timeout` (`None`:
    /// never).
    pub fn set_read_timeout(&mut self, timeout: impl Into<Option<Duration>>) {
        self.state.timeouts.read = micros(timeout.into());
        self.state.timeouts_changed = true;
    }

    /// Closes the session when pending output makes no progress for `timeout` (`None`: never).
    pub fn set_write_timeout(&mut self, timeout: impl Into<Option<Duration>>) {
        self.state.timeouts.write = micros(timeout.into());
        self.state.timeouts_changed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(iov: &[libc::iovec]) -> Vec<u8> {
        let mut v = Vec::new();
        for i in iov {
            // SAFETY: the iovecs point into live chunks of the Output under test.
            v.extend_from_slice(unsafe {
                std::slice::from_raw_parts(i.iov_base as *const u8, i.iov_len)
            });
        }
        v
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut pool = BufPool::default();
        let mut out = Output::default();
        out.tail_chunk(&mut pool, 0).extend_from_slice(b"hello ");
        out.appended(6);
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOV];
        let n = out.prepare_send(&mut iov);
        assert_eq!(bytes_of(&iov[..n]), b"hello ");
        assert!(!out.has_unsent());
        // Output produced while the send is in flight goes to a new chunk.
        let frozen = iov[0].iov_base;
        out.tail_chunk(&mut pool, 0).extend_from_slice(b"world");
        out.appended(5);
        assert!(out.has_unsent());
        assert!(out.complete(2, &mut pool), "a short write is reported");
        let n = out.prepare_send(&mut iov);
        assert_eq!(n, 2, "split output goes out as one sendmsg with two iovecs");
        assert_eq!(iov[0].iov_base as usize, frozen as usize + 2);
        assert_eq!(bytes_of(&iov[..n]), b"llo world");
        assert!(!out.complete(9, &mut pool));
        assert!(out.is_empty());
        assert_eq!(out.chunks.len(), 0, "written chunks go back to the pool");
        assert_eq!(pool.idle(), 2);
    }
}
