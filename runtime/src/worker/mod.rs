//! The driver-neutral core of one worker: the session slab, the codec pipeline, handler
//! dispatch and write batching. It reacts to a driver's events ([`Sink`]) and tells the driver
//! what to do ([`Ops`]); it never touches the kernel itself.
//!
//! Invariants: at most one send per session is in flight; output produced during a turn is
//! written with one send per session at the end of the turn; a session's slot is freed only
//! when the driver reports it closed; a panic in a callback closes only its session.

use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use slab::Slab;

use crate::codec::{Codec, FrameReader};
use crate::driver::{Driver, Ops, Sink};
use crate::error::{panic_message, IoOp, SessionError};
use crate::handler::Handler;
use crate::pool::BufPool;
use crate::session::{CloseReason, Session, SessionId, SessionState, MAX_IOV};
use crate::stats::CoreStats;
use crate::sys;

/// Where a session is in its life, as the core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Receiving and sending.
    Open,
    /// No more input will be handled (the peer sent EOF, or the handler closed): write what is
    /// pending, then close with the reason.
    Flushing(CloseReason),
    /// Handed to the driver to close; waiting for it to report the slot closed.
    Closing,
}

struct Conn<C, H> {
    codec: C,
    handler: H,
    reader: FrameReader,
    state: SessionState,
    phase: Phase,
    /// A send is in flight.
    writing: bool,
    /// Listed in `dirty` for a send at the end of this turn.
    dirty: bool,
}

/// What the core shares with other threads: the stop request.
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) stop: AtomicBool,
}

pub(crate) struct Worker<C, H, F> {
    core: usize,
    conns: Slab<Conn<C, H>>,
    max_sessions: usize,
    codec: C,
    factory: Arc<F>,
    pool: BufPool,
    dirty: Vec<u32>,
    stats: Arc<CoreStats>,
    control: Arc<Control>,
    max_frame: usize,
    next_seq: u64,
    stopping: bool,
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED)
    )
}

impl<C, H, F> Worker<C, H, F>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn() -> H,
{
    pub(crate) fn new(
        core: usize,
        max_sessions: usize,
        max_frame: usize,
        codec: C,
        factory: Arc<F>,
        stats: Arc<CoreStats>,
        control: Arc<Control>,
    ) -> Self {
        Worker {
            core,
            // Never grows past this: the slab's storage does not move.
            conns: Slab::with_capacity(max_sessions),
            max_sessions,
            codec,
            factory,
            pool: BufPool::default(),
            dirty: Vec::with_capacity(max_sessions.min(65536)),
            stats,
            control,
            max_frame,
            next_seq: 0,
            stopping: false,
        }
    }

    /// Runs turns until the server stops and every session is closed.
    pub(crate) fn run<D: Driver>(&mut self, driver: &mut D) -> io::Result<()> {
        loop {
            driver.turn(None, self)?;
            self.end_turn(driver.ops());
            if self.stopping && self.conns.is_empty() && driver.is_quiescent() {
                return Ok(());
            }
        }
    }

    /// End of a turn: one send per session with output and no send in flight.
    pub(crate) fn end_turn<O: Ops>(&mut self, ops: &mut O) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            conn.dirty = false;
            if conn.writing || conn.phase == Phase::Closing || !conn.state.out.has_unsent() {
                continue;
            }
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV];
            let n = conn.state.out.prepare_send(&mut iov);
            if n == 0 {
                continue;
            }
            conn.writing = true;
            self.stats.writes.add(1);
            // SAFETY: the iovecs point into chunks of this session's output, which stay frozen
            // (not written, moved or freed) until `sent` or `closed` for this slot; the chunks
            // are heap buffers, so the slab moving entries would not move them either.
            unsafe { ops.send(slot, &iov[..n]) };
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Runs `f` on a session's handler, catching a panic, then applies what the callback did
    /// (output to write, a close request). Returns `false` if the callback panicked.
    fn dispatch<O: Ops>(
        &mut self,
        ops: &mut O,
        slot: u32,
        callback: &'static str,
        f: impl FnOnce(&mut H, &mut Session<'_, C>),
    ) -> bool {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return true;
        };
        let mut session = Session {
            codec: &mut conn.codec,
            state: &mut conn.state,
            pool: &mut self.pool,
            stats: &self.stats,
        };
        let handler = &mut conn.handler;
        match catch_unwind(AssertUnwindSafe(|| f(handler, &mut session))) {
            Ok(()) => {
                self.after_callback(ops, slot);
                true
            }
            Err(payload) => {
                self.panicked(ops, slot, callback, payload);
                false
            }
        }
    }

    fn panicked<O: Ops>(
        &mut self,
        ops: &mut O,
        slot: u32,
        callback: &'static str,
        payload: Box<dyn std::any::Any + Send>,
    ) {
        self.stats.panics.add(1);
        let Some(conn) = self.conns.get(slot as usize) else {
            return;
        };
        let error = SessionError::Panic {
            session: conn.state.id,
            callback,
            message: panic_message(&*payload),
        };
        log::error!("ringwire: {error}");
        self.fail(ops, slot, error, CloseReason::Panic);
    }

    /// Lists the session for a send if it has new output; starts closing if asked to.
    fn after_callback<O: Ops>(&mut self, ops: &mut O, slot: u32) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        if conn.state.out.has_unsent() && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(slot);
        }
        if conn.state.close_requested && conn.phase == Phase::Open {
            conn.phase = Phase::Flushing(CloseReason::Local);
            conn.reader.release(&mut self.pool);
        }
        self.maybe_finish_flush(ops, slot);
    }

    /// A flushing session whose output is all written closes now.
    fn maybe_finish_flush<O: Ops>(&mut self, ops: &mut O, slot: u32) {
        let Some(conn) = self.conns.get(slot as usize) else {
            return;
        };
        if let Phase::Flushing(reason) = conn.phase {
            if conn.state.out.is_empty() && !conn.writing {
                self.begin_close(ops, slot, reason);
            }
        }
    }

    /// Reports `error` to the handler, then closes the session without flushing.
    fn fail<O: Ops>(&mut self, ops: &mut O, slot: u32, error: SessionError, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        let mut session = Session {
            codec: &mut conn.codec,
            state: &mut conn.state,
            pool: &mut self.pool,
            stats: &self.stats,
        };
        let handler = &mut conn.handler;
        if catch_unwind(AssertUnwindSafe(|| handler.on_error(&mut session, &error))).is_err() {
            self.stats.panics.add(1);
        }
        self.begin_close(ops, slot, reason);
    }

    /// The peer sent input the codec rejects: `on_error` (which may reply, e.g. with a
    /// protocol error), then write what is pending, handle no more input, and close.
    fn reject_input<O: Ops>(&mut self, ops: &mut O, slot: u32, error: SessionError) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        conn.phase = Phase::Flushing(CloseReason::CodecError);
        conn.reader.release(&mut self.pool);
        log::debug!("ringwire: {error}");
        self.dispatch(ops, slot, "on_error", |h, s| h.on_error(s, &error));
    }

    /// Closes the session now: `on_close`, then the driver cancels its I/O and closes the
    /// descriptor. The slot is freed when the driver reports it closed.
    fn begin_close<O: Ops>(&mut self, ops: &mut O, slot: u32, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        let mut session = Session {
            codec: &mut conn.codec,
            state: &mut conn.state,
            pool: &mut self.pool,
            stats: &self.stats,
        };
        let handler = &mut conn.handler;
        if catch_unwind(AssertUnwindSafe(|| handler.on_close(&mut session, reason))).is_err() {
            self.stats.panics.add(1);
        }
        self.stats.closed_by[reason.index()].add(1);
        ops.close(slot);
    }

    fn stop<O: Ops>(&mut self, ops: &mut O) {
        self.stopping = true;
        ops.stop_accepting();
        let slots: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
        for slot in slots {
            self.begin_close(ops, slot, CloseReason::Shutdown);
        }
    }
}

impl<C, H, F, O> Sink<O> for Worker<C, H, F>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn() -> H,
    O: Ops,
{
    fn accepted(&mut self, ops: &mut O, fd: RawFd) {
        if self.stopping || self.conns.len() >= self.max_sessions {
            self.stats.rejected.add(1);
            sys::close(fd);
            return;
        }
        let handler = match catch_unwind(AssertUnwindSafe(|| (self.factory)())) {
            Ok(h) => h,
            Err(payload) => {
                self.stats.panics.add(1);
                log::error!(
                    "ringwire: handler factory panicked: {}",
                    panic_message(&*payload)
                );
                sys::close(fd);
                return;
            }
        };
        let id = SessionId::new(self.core, self.next_seq);
        self.next_seq += 1;
        let slot = self.conns.insert(Conn {
            codec: self.codec.clone(),
            handler,
            reader: FrameReader::new(),
            state: SessionState::new(id, fd),
            phase: Phase::Open,
            writing: false,
            dirty: false,
        }) as u32;
        self.stats.accepted.add(1);
        ops.open(slot, fd);
        self.dispatch(ops, slot, "on_open", |h, s| h.on_open(s));
    }

    fn accept_failed(&mut self, _ops: &mut O, error: &io::Error) {
        log::warn!(
            "ringwire: core {}: accept failed: {error}; backing off",
            self.core
        );
    }

    fn received(&mut self, ops: &mut O, slot: u32, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        let stats = &*self.stats;
        stats.bytes_in.add(data.len() as u64);
        stats.recvs.add(1);
        let Conn {
            codec,
            handler,
            reader,
            state,
            ..
        } = conn;
        let max_frame = self.max_frame;
        let result = catch_unwind(AssertUnwindSafe(|| {
            reader.feed(
                codec,
                data,
                max_frame,
                &mut self.pool,
                |codec, pool, frame| {
                    let mut session = Session {
                        codec,
                        state: &mut *state,
                        pool,
                        stats,
                    };
                    handler.on_message(&mut session, frame);
                    !session.state.close_requested
                },
            )
        }));
        match result {
            Ok(Ok(fed)) => {
                stats.frames_in.add(fed.frames as u64);
                if fed.copied > 0 {
                    stats.tail_copies.add(1);
                    stats.tail_bytes.add(fed.copied as u64);
                }
                self.after_callback(ops, slot);
            }
            Ok(Err(error)) => {
                stats.codec_errors.add(1);
                let session = self.conns[slot as usize].state.id;
                self.reject_input(ops, slot, SessionError::Codec { session, error });
            }
            Err(payload) => self.panicked(ops, slot, "on_message", payload),
        }
    }

    fn read_closed(&mut self, ops: &mut O, slot: u32, error: Option<io::Error>) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        match error {
            None => {
                if conn.phase == Phase::Open {
                    conn.phase = Phase::Flushing(CloseReason::PeerClosed);
                    conn.reader.release(&mut self.pool);
                }
                self.maybe_finish_flush(ops, slot);
            }
            Some(e) if is_reset(&e) => self.begin_close(ops, slot, CloseReason::Reset),
            Some(error) => {
                let session = conn.state.id;
                let error = SessionError::Io {
                    session,
                    op: IoOp::Recv,
                    error,
                };
                self.fail(ops, slot, error, CloseReason::IoError);
            }
        }
    }

    fn sent(&mut self, ops: &mut O, slot: u32, result: io::Result<usize>) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        conn.writing = false;
        let session = conn.state.id;
        let error = match result {
            Ok(n) if n > 0 => {
                self.stats.bytes_out.add(n as u64);
                if conn.state.out.complete(n, &mut self.pool) {
                    self.stats.partial_writes.add(1);
                }
                if conn.state.out.has_unsent() && !conn.dirty {
                    // Eligible to write again at the end of this turn.
                    conn.dirty = true;
                    self.dirty.push(slot);
                }
                self.maybe_finish_flush(ops, slot);
                return;
            }
            Ok(_) => io::Error::new(io::ErrorKind::WriteZero, "send wrote nothing"),
            Err(e) if is_reset(&e) => return self.begin_close(ops, slot, CloseReason::Reset),
            Err(e) => e,
        };
        let error = SessionError::Io {
            session,
            op: IoOp::Send,
            error,
        };
        self.fail(ops, slot, error, CloseReason::IoError);
    }

    fn closed(&mut self, _ops: &mut O, slot: u32) {
        if !self.conns.contains(slot as usize) {
            debug_assert!(false, "closed an unknown slot {slot}");
            return;
        }
        let mut conn = self.conns.remove(slot as usize);
        conn.state.out.release(&mut self.pool);
        conn.reader.release(&mut self.pool);
        self.stats.closed.add(1);
        // Dropping the handler runs user code: keep a panic there inside this session.
        if catch_unwind(AssertUnwindSafe(move || drop(conn))).is_err() {
            self.stats.panics.add(1);
        }
    }

    fn woken(&mut self, ops: &mut O) {
        if self.control.stop.load(Ordering::Acquire) && !self.stopping {
            self.stop(ops);
        }
    }
}

#[cfg(test)]
mod tests;
