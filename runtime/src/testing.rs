//! A test kit for handlers: one session's codec and handler, driven without sockets, threads
//! or a kernel, on a test clock.
//!
//! [`Harness`] feeds bytes through the codec (with the engine's own frame reassembly, so input
//! may arrive in any pieces), calls the handler as a core does, and records what the handler
//! did: the bytes it wrote, its ticks and timers, its errors, its outbound connects and how the
//! session closed. Time stands still until [`Harness::advance`] moves the clock, which runs the
//! ticks, one-shot timers and idle and read timeouts that fall due, in order.
//!
//! Invariant: the handler sees what it would see on a core, in the same order: `on_open`
//! first; `on_message` for each whole frame until it closes the session; a codec error
//! reaches `on_error`, whose replies are written, then `on_close`; `on_close` comes exactly
//! once and nothing after it. Where the kit differs from a core it says so on the method.
//!
//! ```
//! # extern crate ringwire_runtime as ringwire;
//! use ringwire::codec::{Codec, CodecError, Decoded};
//! use ringwire::testing::{Event, Harness};
//! use ringwire::{CloseReason, Handler, Session};
//!
//! /// Newline-terminated lines.
//! #[derive(Clone)]
//! struct Lines;
//! impl Codec for Lines {
//!     type Frame<'a> = &'a [u8];
//!     type Item = [u8];
//!     fn decode<'a>(&mut self, src: &'a [u8], _: usize) -> Result<Decoded<&'a [u8]>, CodecError> {
//!         Ok(match src.iter().position(|&b| b == b'\n') {
//!             Some(i) => Decoded::Frame(&src[..i], i + 1),
//!             None => Decoded::NeedMore(None),
//!         })
//!     }
//!     fn encode(&mut self, line: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
//!         dst.extend_from_slice(line);
//!         dst.push(b'\n');
//!         Ok(())
//!     }
//! }
//!
//! /// Shouts every line back; closes on "bye".
//! struct Shout;
//! impl Handler<Lines> for Shout {
//!     fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
//!         if line == b"bye" {
//!             s.close();
//!         } else {
//!             let _ = s.send(&line.to_ascii_uppercase());
//!         }
//!     }
//! }
//!
//! let mut t = Harness::new(Lines, Shout);
//! assert_eq!(t.feed(b"hel"), b"");
//! assert_eq!(t.feed(b"lo\nworld\n"), b"HELLO\nWORLD\n");
//! t.feed(b"bye\n");
//! assert_eq!(t.closed(), Some(CloseReason::Local));
//! assert_eq!(t.events().last(), Some(&Event::Closed(CloseReason::Local)));
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::{Codec, Flow, FrameReader};
use crate::core_ctx::CoreCtx;
use crate::error::SessionError;
use crate::handler::Handler;
use crate::pool::BufPool;
use crate::route::{self, Msg};
use crate::session::{CloseAsk, CloseReason, Session, SessionState, Timeouts};
use crate::stats::{CoreSnapshot, CoreStats};
use crate::target::Target;
use crate::timer::{Micros, SessionTimers, TimerId};
use crate::unix::UnixAddr;
use crate::worker::ErasedProto;

/// What a handler did, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `on_open` ran.
    Opened,
    /// Bytes the session wrote to the peer (what several callbacks in a row wrote, together).
    Wrote(Vec<u8>),
    /// `on_tick` ran, at this time on the test clock.
    Tick(Duration),
    /// `on_timer` ran for this timer ([`Session::set_timer`]), at this time on the test clock.
    Timer(TimerId, Duration),
    /// `on_error` ran with this error (as its message).
    Error(String),
    /// The handler asked for an outbound connection ([`Session::connect`] or
    /// [`CoreCtx::connect`]); the kit records it and connects nothing. A handler given to
    /// `CoreCtx::connect` is kept, never called, until the harness is dropped.
    Connect(SocketAddr),
    /// As [`Event::Connect`], for [`Session::connect_unix`] or [`CoreCtx::connect_unix`].
    ConnectUnix(UnixAddr),
    /// The session closed for this reason; `on_close` ran.
    Closed(CloseReason),
}

impl Event {
    /// The event recording a connect to `target`.
    fn connect(target: Target) -> Event {
        match target {
            Target::Tcp(addr) => Event::Connect(addr),
            Target::Unix(addr) => Event::ConnectUnix(addr),
        }
    }
}

/// One session's codec and handler under test. See the [module docs](self).
///
/// The session has no socket: [`Session::peer_addr`] fails, and `is_outbound`, `is_paused`
/// and `is_draining` are false. A panic in a callback is not caught (a core would close the
/// session with [`CloseReason::Panic`]): it fails the test, with its message.
pub struct Harness<C: Codec, H: Handler<C>> {
    codec: C,
    handler: H,
    state: SessionState,
    reader: FrameReader,
    pool: BufPool,
    stats: CoreStats,
    connects: Vec<Target>,
    core: CoreCtx,
    /// The kit's own server id: replies completed on this thread come back to this session.
    server: u32,
    /// The protocols of the outbound sessions asked for with `CoreCtx::connect`, kept unrun.
    others: Vec<Box<dyn ErasedProto>>,
    max_frame: usize,
    opened: bool,
    closed: Option<CloseReason>,
    /// The test clock, in microseconds from the start.
    now: Micros,
    /// When the session last received bytes (or opened).
    last_rx: Micros,
    /// When the incomplete frame held in the reader started.
    frame_started: Micros,
    /// When `on_tick` is due next.
    next_tick: Option<Micros>,
    /// Written in the current call of the harness, not yet recorded.
    wrote: Vec<u8>,
    events: Vec<Event>,
}

impl<C: Codec, H: Handler<C>> Harness<C, H> {
    /// A session of `codec` and `handler`, not yet open, at time zero. Defaults as a server's:
    /// 1 MiB frames, no timeouts, 64 MiB output limit, 64 timers. `on_open` runs at the first call of
    /// [`open`](Harness::open), [`feed`](Harness::feed), [`advance`](Harness::advance) or
    /// [`peer_close`](Harness::peer_close).
    pub fn new(codec: C, handler: H) -> Self {
        let server = route::new_server_id();
        let mut core = kit_ctx(Box::new(()), server);
        let mut state = SessionState::new(core.next_id(), -1, Timeouts::default());
        state.output_limit = 64 << 20;
        state.timers = SessionTimers::new(64);
        Harness {
            codec,
            handler,
            state,
            reader: FrameReader::new(),
            pool: BufPool::default(),
            stats: CoreStats::default(),
            connects: Vec::new(),
            core,
            server,
            others: Vec::new(),
            max_frame: 1 << 20,
            opened: false,
            closed: None,
            now: 0,
            last_rx: 0,
            frame_started: 0,
            next_tick: None,
            wrote: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The per-core state the handler finds through `Session::core` (the server's
    /// `core_state`; none by default).
    pub fn core_state<S: 'static>(mut self, state: S) -> Self {
        self.core = kit_ctx(Box::new(state), self.server);
        self.core.next_id(); // The session's own.
        self
    }

    /// Largest frame the codec accepts (the server's `max_frame`).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// The session's idle timeout to start with (the server's `idle_timeout`).
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.state.timeouts.idle = micros(timeout.into());
        self
    }

    /// The session's read timeout to start with (the server's `read_timeout`).
    pub fn read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.state.timeouts.read = micros(timeout.into());
        self
    }

    /// Most output the handler may produce in one callback (the server's `max_output`).
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.state.output_limit = bytes;
        self
    }

    /// Most one-shot timers the session may have pending (the server's `max_timers`). Set it
    /// before the handler sets any: it drops those pending.
    pub fn max_timers(mut self, timers: usize) -> Self {
        self.state.timers = SessionTimers::new(timers);
        self
    }

    /// Runs `on_open`, once; returns what it wrote.
    pub fn open(&mut self) -> Vec<u8> {
        self.ensure_open();
        self.finish_call()
    }

    /// The peer sends `bytes`: every whole frame they complete goes to `on_message`, in order,
    /// until the handler closes the session; a codec error goes to `on_error` and closes the
    /// session. Returns what the session wrote meanwhile. Once the session is closed, input is
    /// dropped, as on a core.
    ///
    /// Unlike a core, the kit writes everything at once and the peer reads it at once: there
    /// is no backpressure and no write timeout.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.ensure_open();
        if self.closed.is_none() {
            self.receive(bytes);
        }
        self.finish_call()
    }

    /// Moves the test clock on by `by`, running every tick, timer and timeout that falls due on
    /// the way, in time order; returns what the session wrote meanwhile. Ticks fall on a grid
    /// of the clock (multiples of the period), as on a core. A timer set for zero from
    /// `on_timer` fires a microsecond later on the test clock (on a core: in a later turn).
    pub fn advance(&mut self, by: Duration) -> Vec<u8> {
        self.ensure_open();
        let until = self.now.saturating_add(by.as_micros() as Micros);
        while self.closed.is_none() {
            let t = self.state.timeouts;
            // As on a core: waiting for its own replies is not the peer's idleness.
            let waiting = self.state.out.outstanding() > 0;
            let idle = t.idle.filter(|_| !waiting).map(|d| self.last_rx + d);
            let read = t
                .read
                .filter(|_| !waiting && self.reader.buffered() > 0)
                .map(|d| self.frame_started + d);
            let timer = self.state.timers.next();
            let due = [idle, read, self.next_tick, timer];
            let Some(at) = due.into_iter().flatten().min().filter(|&at| at <= until) else {
                break;
            };
            self.now = self.now.max(at);
            if idle.is_some_and(|d| self.now >= d) {
                self.close(CloseReason::IdleTimeout);
            } else if read.is_some_and(|d| self.now >= d) {
                self.close(CloseReason::ReadTimeout);
            } else if self.next_tick.is_some_and(|d| self.now >= d) {
                self.tick();
            } else if let Some(id) = self.state.timers.pop_due(self.now) {
                self.stats.timers.add(1);
                self.events.push(Event::Timer(id, self.now()));
                self.call(|h, s| h.on_timer(s, id));
            }
        }
        self.now = until;
        self.finish_call()
    }

    /// The peer closes its side: the session closes with [`CloseReason::PeerClosed`] (its
    /// output is already written, in the kit).
    pub fn peer_close(&mut self) {
        self.ensure_open();
        if self.closed.is_none() {
            self.close(CloseReason::PeerClosed);
        }
        self.finish_call();
    }

    /// Why the session closed, once it has.
    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Everything the handler did so far, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Every byte the session wrote so far.
    pub fn written(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for event in &self.events {
            if let Event::Wrote(bytes) = event {
                all.extend_from_slice(bytes);
            }
        }
        all
    }

    /// The times of the ticks so far.
    pub fn ticks(&self) -> Vec<Duration> {
        let ticks = self.events.iter().filter_map(|e| match e {
            Event::Tick(at) => Some(*at),
            _ => None,
        });
        ticks.collect()
    }

    /// The messages of the errors `on_error` got so far.
    pub fn errors(&self) -> Vec<&str> {
        let errors = self.events.iter().filter_map(|e| match e {
            Event::Error(message) => Some(message.as_str()),
            _ => None,
        });
        errors.collect()
    }

    /// The test clock: time since the harness was made.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now)
    }

    /// The session's counters, as a core keeps them.
    pub fn stats(&self) -> CoreSnapshot {
        self.stats.snapshot()
    }

    /// The handler under test.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler under test, to change.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The session's codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    fn ensure_open(&mut self) {
        if !self.opened {
            self.opened = true;
            self.events.push(Event::Opened);
            self.call(|h, s| h.on_open(s));
        }
    }

    /// Decodes `bytes` into `on_message` calls, as a core does with a receive.
    fn receive(&mut self, bytes: &[u8]) {
        self.stats.bytes_in.add(bytes.len() as u64);
        self.stats.recvs.add(1);
        self.last_rx = self.now;
        let had_tail = self.reader.buffered() > 0;
        let now = self.now;
        route::mark(self.server, 0);
        let Harness {
            codec,
            handler,
            state,
            reader,
            pool,
            stats,
            connects,
            core,
            ..
        } = self;
        let on_frame = |codec: &mut C, pool: &mut BufPool, frame: C::Frame<'_>| {
            let mut session = Session {
                codec,
                state: &mut *state,
                pool,
                stats: &*stats,
                connects: &mut *connects,
                core: &mut *core,
                now,
            };
            handler.on_message(&mut session, frame);
            if session.state.close == CloseAsk::AfterFlush
                || session.state.out.len() > session.state.output_limit
            {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        match reader.feed(codec, bytes, self.max_frame, pool, on_frame) {
            Ok(fed) => {
                self.stats.frames_in.add(fed.frames as u64);
                if self.reader.buffered() > 0 && (!had_tail || fed.frames > 0) {
                    self.frame_started = self.now;
                }
                self.settle(None);
            }
            Err(error) => {
                self.stats.codec_errors.add(1);
                let error = SessionError::Codec {
                    session: self.state.id,
                    error,
                };
                // As on a core: the replies of the frames before the error and of `on_error`
                // are written, no more input is handled, and the session closes.
                self.reader.release(&mut self.pool);
                self.events.push(Event::Error(error.to_string()));
                self.with_session(|h, s| h.on_error(s, &error));
                self.settle(Some(CloseReason::CodecError));
            }
        }
    }

    /// Runs `on_tick` and schedules the next one.
    fn tick(&mut self) {
        self.next_tick = self
            .state
            .timeouts
            .tick
            .map(|period| next_on_grid(self.now, period));
        self.stats.ticks.add(1);
        self.events.push(Event::Tick(self.now()));
        self.call(|h, s| h.on_tick(s));
    }

    /// Runs a callback, then does what a core does after one.
    fn call(&mut self, f: impl FnOnce(&mut H, &mut Session<'_, C>)) {
        self.with_session(f);
        self.settle(None);
    }

    /// Runs `f` on the handler with a session view.
    fn with_session(&mut self, f: impl FnOnce(&mut H, &mut Session<'_, C>)) {
        route::mark(self.server, 0);
        let mut session = Session {
            codec: &mut self.codec,
            state: &mut self.state,
            pool: &mut self.pool,
            stats: &self.stats,
            connects: &mut self.connects,
            core: &mut self.core,
            now: self.now,
        };
        f(&mut self.handler, &mut session);
    }

    /// After a callback: connects, the output limit, writing, new timeouts, and closing, for
    /// `closing` (the session was already closing) or because the handler asked to.
    fn settle(&mut self, closing: Option<CloseReason>) {
        if self.closed.is_some() {
            return;
        }
        for target in self.connects.drain(..) {
            self.events.push(Event::connect(target));
        }
        for other in self.core.outbound.pending.drain(..) {
            self.events.push(Event::connect(other.target));
            self.others.push(other.proto);
        }
        // What the callback sent to its core: this session's replies fill their slots, and
        // writes and closes by handle apply to it (another session's, which the kit does not
        // have, reach nothing); work sent to the core runs.
        let own = self.handle();
        let mut mail = Vec::new();
        route::mark(self.server, 0);
        route::take_here(&mut mail);
        let mut dropped = false;
        for msg in mail {
            match msg {
                Msg::Fill { session, id, bytes } => {
                    if session == own && self.state.out.fill(id, bytes) {
                        self.stats.frames_out.add(1);
                        if self.state.out.outstanding() == 0 {
                            // The idle and read clocks start again once the last reply is out.
                            self.last_rx = self.now;
                            self.frame_started = self.now;
                        }
                    }
                }
                Msg::Abandon { session, id } => {
                    dropped |= session == own && self.state.out.is_waiting(id);
                }
                Msg::Write { session, bytes } if session == own => {
                    let chunk = self.state.out.tail_chunk(&mut self.pool, bytes.len());
                    chunk.extend_from_slice(&bytes);
                    self.state.out.appended(bytes.len());
                }
                Msg::Close { session } if session == own => {
                    self.state.close = CloseAsk::AfterFlush;
                }
                Msg::Run(task) => task(&mut self.core),
                Msg::Write { .. } | Msg::Close { .. } => {}
            }
        }
        if dropped {
            return self.close(CloseReason::ReplyDropped);
        }
        if self.state.out.len() > self.state.output_limit {
            let error = SessionError::OutputLimit {
                session: self.state.id,
                pending: self.state.out.len(),
                limit: self.state.output_limit,
            };
            // As on a core, the output is not written: the session closes with the error.
            self.events.push(Event::Error(error.to_string()));
            self.with_session(|h, s| h.on_error(s, &error));
            return self.close(CloseReason::OutputLimit);
        }
        self.write_out();
        if std::mem::take(&mut self.state.timeouts_changed) {
            self.next_tick = self
                .state
                .timeouts
                .tick
                .map(|period| next_on_grid(self.now, period));
        }
        let asked = (self.state.close == CloseAsk::AfterFlush).then_some(CloseReason::Local);
        if let Some(reason) = closing.or(asked) {
            self.close(reason);
        }
    }

    /// The handle a `Session` view of this harness gives.
    fn handle(&self) -> crate::reply::SessionHandle {
        crate::reply::SessionHandle {
            server: self.server,
            worker: self.state.id.worker() as u32,
            slot: self.state.slot,
            seq: self.state.id.as_u64(),
        }
    }

    /// Writes the session's pending output to the peer, who reads it at once.
    fn write_out(&mut self) {
        let mut wrote = Vec::new();
        while let Some(send) = self.state.out.take_send() {
            send.copy_to(&mut wrote);
            let sent = send.len();
            self.stats.writes.add(1);
            self.stats.bytes_out.add(sent as u64);
            self.state.out.complete(send, sent, &mut self.pool);
        }
        if wrote.is_empty() {
            return;
        }
        self.wrote.extend_from_slice(&wrote);
        match self.events.last_mut() {
            Some(Event::Wrote(last)) => last.extend_from_slice(&wrote),
            _ => self.events.push(Event::Wrote(wrote)),
        }
    }

    /// Closes the session: `on_close` once (its output discarded), and nothing after.
    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(reason);
        self.with_session(|h, s| h.on_close(s, reason));
        self.state.timers.clear();
        self.state.out.release(&mut self.pool);
        self.connects.clear();
        self.reader.release(&mut self.pool);
        self.stats.closed.add(1);
        self.stats.closed_by[reason.index()].add(1);
        self.events.push(Event::Closed(reason));
    }

    /// Ends a call of the harness: what it wrote.
    fn finish_call(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.wrote)
    }
}

/// A core context for the kit: it makes no sockets, and its first id is the session's.
fn kit_ctx(state: Box<dyn std::any::Any>, server: u32) -> CoreCtx {
    let mut core = CoreCtx::new(0, state, server, None, None);
    core.outbound.sockets = false;
    core
}

/// A duration as the engine's timeouts hold it (at least a microsecond).
fn micros(d: Option<Duration>) -> Option<Micros> {
    d.map(|d| (d.as_micros() as Micros).max(1))
}

/// The first multiple of `period` after `now` (the engine's tick grid).
fn next_on_grid(now: Micros, period: Micros) -> Micros {
    (now / period + 1) * period
}

#[cfg(test)]
mod tests;
