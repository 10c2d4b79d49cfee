//! A session is one connection as the handler sees it: its identity, its codec and its output.
//!
//! Output is a short queue of chunks from the core's [`BufPool`]. A chunk that a send in flight
//! covers is frozen (the kernel reads it) until that send completes; new output goes into a
//! chunk behind it. So replies produced during one loop turn are gathered and written together,
//! at most one write is in flight, and the order of bytes is the order they were produced.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::codec::{Codec, CodecError};
use crate::core_ctx::CoreCtx;
use crate::pool::BufPool;
use crate::reply::{Reply, ReplyError, SessionHandle};
use crate::stats::CoreStats;
use crate::sys;
use crate::timer::{Micros, SessionTimers, TimerError, TimerId};

pub(crate) use crate::output::{Output, SendBuf};

/// Identifies a session: the worker that owns it and a sequence number unique on that worker.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    pub(crate) fn new(worker: usize, seq: u64) -> Self {
        SessionId(((worker as u64) << 48) | (seq & ((1 << 48) - 1)))
    }

    pub(crate) fn from_u64(raw: u64) -> Self {
        SessionId(raw)
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
    /// A connect, receive or send failed for another reason (a failed connect reaches
    /// `on_error` first as `SessionError::Connect`, with why).
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
    /// The server is draining for shutdown and the session was idle (no frame half-received,
    /// no output pending): closed gracefully, before the drain deadline. ([`Shutdown`] is a
    /// session cut off at the deadline.)
    ///
    /// [`Shutdown`]: CloseReason::Shutdown
    Drained,
    /// A reply the handler reserved (`Session::reserve`) was dropped without being completed:
    /// the peer would wait for it forever.
    ReplyDropped,
    /// TLS failed (`SessionError::Tls` says how): not TLS, a failed handshake or a bad record.
    TlsError,
    /// A TLS handshake was not done within the handshake timeout.
    HandshakeTimeout,
}

impl CloseReason {
    /// Every reason, in the order stats report them.
    pub const ALL: [CloseReason; 15] = [
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
        CloseReason::Drained,
        CloseReason::ReplyDropped,
        CloseReason::TlsError,
        CloseReason::HandshakeTimeout,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
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

/// The receiving side of a session. Transitions (docs/ARCHITECTURE.md has the table):
/// `Receiving -> Paused` when pending output passes the high-water mark; `Paused ->
/// Receiving` when it drains to the low mark; `Paused -> PausedAtEof` when the peer's EOF
/// comes while input is held; `PausedAtEof -> Eof` once that input is decoded; any other EOF
/// goes to `Eof`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Input is asked for and decoded as it arrives.
    Receiving,
    /// Pending output is above the high-water mark: no input is asked for, and what still
    /// arrives is held undecoded until the output drains to the low mark.
    Paused,
    /// The peer's EOF came while paused with input held: that input is decoded first.
    PausedAtEof,
    /// The peer sent EOF: no more input comes.
    Eof,
}

impl Read {
    /// Reading stopped for backpressure (input held, if any, is decoded on resume).
    pub(crate) fn is_paused(self) -> bool {
        matches!(self, Read::Paused | Read::PausedAtEof)
    }
}

/// What the handler asked about closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseAsk {
    /// Nothing.
    No,
    /// Close once idle ([`Session::close_when_idle`]).
    WhenIdle,
    /// Close once pending output is written ([`Session::close`]); no more frames.
    AfterFlush,
}

/// The parts of a session the engine keeps besides codec and handler.
#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) id: SessionId,
    pub(crate) fd: RawFd,
    pub(crate) out: Output,
    /// What the handler asked about closing.
    pub(crate) close: CloseAsk,
    pub(crate) timeouts: Timeouts,
    /// The handler changed `timeouts`; the core reschedules.
    pub(crate) timeouts_changed: bool,
    pub(crate) read: Read,
    /// The server is draining for shutdown.
    pub(crate) draining: bool,
    /// Opened by a connect rather than an accept.
    pub(crate) outbound: bool,
    /// Most pending output allowed; past it nothing more is encoded and the core closes the
    /// session.
    pub(crate) output_limit: usize,
    /// One-shot timers pending ([`Session::set_timer`]).
    pub(crate) timers: SessionTimers,
    /// The session's key in its core's table (with `id`, its handle).
    pub(crate) slot: u32,
    /// Most reply slots outstanding ([`Session::reserve`]).
    pub(crate) max_replies: usize,
    /// A TLS session's rustls connection (`None` on a plain session, and while the core has
    /// it out to decrypt and hand plaintext to the codec: see `is_tls`).
    pub(crate) tls: Option<Box<crate::tls::TlsSession>>,
    /// A TLS session (its connection may be out with the core).
    pub(crate) is_tls: bool,
    /// What its handshake settled, once done.
    pub(crate) tls_info: Option<Box<crate::tls::TlsInfo>>,
    /// A TLS session's peer has sent part of a record, which rustls holds until the rest
    /// comes: a frame has begun, for the read timeout and the drain.
    pub(crate) tls_partial: bool,
    /// A TLS session whose record layer the kernel does (kTLS): its input and output are
    /// plaintext to the ring, and `tls` is `None`.
    pub(crate) kernel_tls: bool,
}

impl SessionState {
    pub(crate) fn new(id: SessionId, fd: RawFd, timeouts: Timeouts) -> Self {
        SessionState {
            id,
            fd,
            out: Output::default(),
            close: CloseAsk::No,
            timeouts,
            timeouts_changed: false,
            read: Read::Receiving,
            draining: false,
            outbound: false,
            output_limit: usize::MAX,
            timers: SessionTimers::new(usize::MAX),
            slot: 0,
            max_replies: usize::MAX,
            tls: None,
            is_tls: false,
            tls_info: None,
            tls_partial: false,
            kernel_tls: false,
        }
    }
}

/// The parts of a [`Session`] that do not depend on its codec: what the core lends a callback
/// besides the codec. Passed to the protocol of a session of any codec and handler types, which
/// makes its `Session` from them and its own codec.
pub(crate) struct Parts<'a> {
    pub(crate) state: &'a mut SessionState,
    pub(crate) pool: &'a mut BufPool,
    pub(crate) stats: &'a CoreStats,
    pub(crate) connects: &'a mut Vec<crate::target::Target>,
    pub(crate) core: &'a mut CoreCtx,
    pub(crate) now: Micros,
}

impl Parts<'_> {
    /// A `Session` view of these parts with `codec`, for one callback.
    pub(crate) fn session<'s, C: Codec>(&'s mut self, codec: &'s mut C) -> Session<'s, C> {
        Session {
            codec,
            state: self.state,
            pool: self.pool,
            stats: self.stats,
            connects: self.connects,
            core: self.core,
            now: self.now,
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
    pub(crate) connects: &'a mut Vec<crate::target::Target>,
    /// The worker's context: its index and the per-core state.
    pub(crate) core: &'a mut CoreCtx,
    /// The current loop turn's time, which timers count from.
    pub(crate) now: Micros,
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
        let result = self.codec.encode(item, chunk);
        if chunk.len() < before {
            // A codec that removed output it did not write (earlier replies): keep the count
            // true to what is left, and say so.
            let removed = before - chunk.len();
            self.state.out.removed(removed);
            return Err(CodecError::Encode(
                "the codec removed output it had not written".into(),
            ));
        }
        match result {
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
        self.state.close = CloseAsk::AfterFlush;
    }

    /// Whether [`close`](Session::close) was called.
    pub fn is_closing(&self) -> bool {
        self.state.close == CloseAsk::AfterFlush
    }

    /// Bytes produced and not yet written to the socket.
    pub fn pending_output(&self) -> usize {
        self.state.out.len()
    }

    /// The context of the worker that owns this session: its index and the per-core state
    /// (the server's `core_state`), shared by every session of the core without a lock.
    pub fn core(&mut self) -> &mut CoreCtx {
        self.core
    }

    /// A handle naming this session for as long as it lives (Copy and Send); a handle of a
    /// session that has gone reaches nothing, even once its slot is reused.
    pub fn handle(&self) -> SessionHandle {
        SessionHandle {
            server: self.core.server(),
            worker: self.state.id.worker() as u32,
            slot: self.state.slot,
            seq: self.state.id.as_u64(),
        }
    }

    /// Reserves this session's next reply, to be completed later on any core or thread
    /// ([`Reply::complete`], or [`complete`](Session::complete) from a callback): the answer to
    /// a request that waits for a timer, another core, the offload pool or a backend session.
    /// Output this session produces afterwards waits behind it, so replies leave in request
    /// order; with nothing reserved, inline replies cost nothing more.
    ///
    /// At most `max_replies` (the builder's; default 1024) are outstanding; reading pauses at
    /// that bound until one is completed, and past it this fails. A reply dropped without being
    /// completed closes the session ([`CloseReason::ReplyDropped`]) once the replies before it
    /// are written. While replies are outstanding the idle and read timeouts do not fire and a
    /// drain does not close the session (its deadline still does). When the session closes,
    /// its outstanding replies become no-ops.
    pub fn reserve(&mut self) -> Result<Reply, ReplyError> {
        let limit = self.state.max_replies;
        if self.state.out.outstanding() >= limit {
            return Err(ReplyError::TooMany { limit });
        }
        let id = self.state.out.reserve();
        Ok(Reply::new(self.handle(), id, self.core.router()))
    }

    /// Completes `reply` with `bytes`, already encoded (`self.codec().encode(..)` encodes with
    /// this session's codec). The reply may be this session's or any other's, of this core or
    /// another: it goes out in its session's order (on this core right after this callback).
    /// A reply of a session that has gone completes nothing.
    pub fn complete(&mut self, reply: Reply, bytes: &[u8]) {
        reply.complete(bytes);
    }

    /// Replies reserved and not yet sent on their way.
    pub fn outstanding_replies(&self) -> usize {
        self.state.out.outstanding()
    }

    /// What this session's TLS handshake settled (version, cipher suite, ALPN protocol, SNI
    /// name, resumption, the peer's certificates); `None` on a plain session. A TLS session's
    /// `on_open` runs after its handshake, so it and every later callback see it; a session
    /// whose handshake failed or timed out gets only `on_error` (for a failure) and
    /// `on_close`, which see `None`.
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        self.state.tls_info.as_deref()
    }

    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.state.id
    }

    /// The index of the worker that owns this session (see [`SessionId::worker`]).
    pub fn worker(&self) -> usize {
        self.state.id.worker()
    }

    /// The peer's address (one `getpeername` call). A session on a Unix socket has no IP
    /// peer: it gets an error of kind [`Unsupported`](io::ErrorKind::Unsupported) (a Unix
    /// client is usually unnamed anyway; ask the kernel with SO_PEERCRED for who it is).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        if self.state.fd < 0 {
            // A session with no socket (the test kit's).
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        }
        // SAFETY: the descriptor is open (not -1, checked above): the driver closes a
        // session's descriptor only after the core has stopped running its callbacks
        // (`Command::Close` follows `on_close`).
        sys::peer_addr(unsafe { sys::borrow(self.state.fd) })
    }

    /// The codec of this session.
    pub fn codec(&mut self) -> &mut C {
        self.codec
    }

    /// Opens an outbound connection to `addr` on this session's core, at the end of the loop
    /// turn. The new session gets a handler from the same factory, with the same codec; its
    /// `on_open` runs once connected, or `on_error` (a [`SessionError::Connect`]) and `on_close`
    /// if the connect fails or times out. For a session of another protocol (a backend speaking
    /// another codec, with its own handler), and a handle to it at once, see
    /// [`CoreCtx::connect`].
    ///
    /// [`SessionError::Connect`]: crate::SessionError::Connect
    pub fn connect(&mut self, addr: SocketAddr) {
        self.connects.push(addr.into());
    }

    /// [`connect`](Session::connect) over a Unix domain stream socket (a socket file, or an
    /// abstract name). A listener with a full backlog fails the connect at once
    /// ([`ConnectError::Busy`](crate::ConnectError::Busy)); see [`CoreCtx::connect_unix`].
    pub fn connect_unix(&mut self, addr: &crate::unix::UnixAddr) {
        self.connects.push(addr.clone().into());
    }

    /// Whether this session was opened by [`connect`](Session::connect),
    /// [`CoreCtx::connect`] or a client, rather than accepted.
    pub fn is_outbound(&self) -> bool {
        self.state.outbound
    }

    /// Whether reading is paused because pending output is above the high-water mark; it
    /// resumes once output drains to the low-water mark.
    pub fn is_paused(&self) -> bool {
        self.state.read.is_paused()
    }

    /// Whether the server is draining for shutdown: no new connections are accepted, and this
    /// session is served until it is idle (see `Handler::on_drain`), its peer closes, or the
    /// drain deadline passes.
    pub fn is_draining(&self) -> bool {
        self.state.draining
    }

    /// Closes the session, with [`CloseReason::Drained`], as soon as it is idle: at the end of
    /// this loop turn if no frame is half-received, no output is pending and no input waits in
    /// the socket, else once the input at hand has been answered and every reply written. What
    /// `Handler::on_drain` does by default.
    pub fn close_when_idle(&mut self) {
        if self.state.close == CloseAsk::No {
            self.state.close = CloseAsk::WhenIdle;
        }
    }

    /// Calls `Handler::on_tick` every `period` (`None` stops it). Ticks fall on a grid of the
    /// core's clock (multiples of the period), so sessions of a core with the same period tick
    /// together, in one loop turn. Resolution: a microsecond on the io_uring driver, a
    /// millisecond on epoll.
    pub fn set_tick(&mut self, period: impl Into<Option<Duration>>) {
        self.state.timeouts.tick = micros(period.into());
        self.state.timeouts_changed = true;
    }

    /// Calls `Handler::on_timer` with the returned id once `after` has passed, unless
    /// [`cancel_timer`](Session::cancel_timer) cancels it first. One-shot; set another from
    /// `on_timer` to repeat.
    ///
    /// Time counts from the current loop turn. Timers fire in deadline order (equal deadlines
    /// in the order set), each in a loop turn at or after its deadline, never inside the
    /// callback that set it: one set for zero from `on_timer` fires in a later turn.
    /// Resolution: a microsecond on the io_uring driver, a millisecond on epoll. A session's
    /// timers are one more of its deadlines on the core's deadline heap (no polling, no heap
    /// entry per timer).
    ///
    /// Timers fire while the session is open or flushing its last replies, and never once it
    /// closes (or lingers after a close from our side): pending timers do not keep a session
    /// open. In particular they do not make it busy for a drain: see `Handler::on_drain` and
    /// [`pending_timers`](Session::pending_timers).
    ///
    /// At most `max_timers` (the builder's; default 64) may be pending per session; past it
    /// this returns [`TimerError::TooMany`] and sets nothing.
    pub fn set_timer(&mut self, after: Duration) -> Result<TimerId, TimerError> {
        let after = after.as_micros().min(Micros::MAX as u128) as Micros;
        // At least a microsecond: a timer is never due in the turn that set it.
        let at = self.now.saturating_add(after.max(1));
        self.state.timers.set(at)
    }

    /// Cancels a pending timer: it will not fire. Returns whether it was pending (`false` once
    /// it fired or was cancelled, or for an id this session did not hand out).
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.state.timers.cancel(id)
    }

    /// Timers set and neither fired nor cancelled yet.
    pub fn pending_timers(&self) -> usize {
        self.state.timers.len()
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
