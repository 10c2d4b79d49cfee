//! The core's side of the driver boundary: what it does with each event a driver reports.

use std::io;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use super::{is_reset, Event, Phase, Proto, Worker};
use crate::codec::Codec;
use crate::core_ctx::CoreCtx;
use crate::driver::{Command, Core, SendBuf};
use crate::error::{ConnectError, IoOp, SessionError};
use crate::handler::Handler;
use crate::session::{CloseReason, Read};

impl<C, H, F> Core for Worker<C, H, F>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
{
    fn commands(&mut self) -> &mut Vec<Command> {
        &mut self.cmds
    }

    fn wait_bound(&self) -> Option<std::time::Duration> {
        Worker::wait_bound(self)
    }

    fn turn_started(&mut self) {
        self.now = self.clock.now();
        if let Some(r) = &mut self.recorders {
            r.turn_began = Instant::now();
        }
    }

    fn has_pending_work(&self) -> bool {
        // A drained core whose last session just closed is done: it must not go to sleep.
        !self.dirty.is_empty()
            || !self.connects.is_empty()
            || (self.drain_until.is_some() && self.conns.is_empty())
            || self.idle_due()
            || crate::route::has_queued()
            || !self.ctx.outbound.pending.is_empty()
            || !self.resumes.is_empty()
    }

    fn accepted(&mut self, fd: OwnedFd) {
        if self.closed_all || self.is_full() {
            self.stats.rejected.add(1);
            return; // Dropping `fd` closes it.
        }
        let tls = self.server_tls();
        let Some(slot) = self.insert(&fd, Phase::Open) else {
            return;
        };
        self.stats.accepted.add(1);
        self.cmds.push(Command::Open { slot, fd });
        if let Some(tls) = tls {
            // `on_open` waits for the handshake.
            if !self.attach_tls(slot, tls) {
                return self.begin_close(slot, CloseReason::TlsError);
            }
            return self.begin_handshake(slot);
        }
        self.reschedule(slot);
        self.dispatch(slot, Event::Open);
    }

    fn connected(&mut self, slot: u32, result: io::Result<()>) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase != Phase::Connecting {
            return;
        }
        match result {
            Ok(()) if conn.state.is_tls => {
                self.stats.connected.add(1);
                // `on_open` waits for the handshake.
                self.begin_handshake(slot);
            }
            Ok(()) => {
                conn.phase = Phase::Open;
                conn.last_rx = self.now;
                self.stats.connected.add(1);
                // Its deadlines were the connect's: the idle timeout starts now.
                self.reschedule(slot);
                if self.dispatch(slot, Event::Open) {
                    self.drain_if_due(slot);
                }
            }
            Err(error) => self.connect_failed(slot, ConnectError::from_io(error)),
        }
    }

    fn accept_failed(&mut self, error: &io::Error) {
        log::warn!(
            "ringwire: core {}: accept failed: {error}; backing off",
            self.cfg.core
        );
    }

    fn received(&mut self, slot: u32, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if !matches!(conn.phase, Phase::Open | Phase::Handshaking) {
            return;
        }
        self.stats.bytes_in.add(data.len() as u64);
        self.stats.recvs.add(1);
        conn.last_rx = self.now;
        if conn.state.is_tls && !conn.state.kernel_tls {
            return self.received_tls(slot, data);
        }
        self.received_plain(slot, data);
    }

    fn read_closed(&mut self, slot: u32, mut error: Option<io::Error>) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.state.kernel_tls
            && error
                .as_ref()
                .is_some_and(|e| e.raw_os_error() == Some(libc::EIO))
        {
            // A control record (close_notify, KeyUpdate, ...) the kernel does not hand to a
            // plain receive: read as the peer's end (see `crate::ktls`).
            error = None;
        }
        if error.is_none() {
            let held = conn.phase == Phase::Open && conn.reader.held() > 0;
            conn.state.read = if held { Read::PausedAtEof } else { Read::Eof };
        }
        if let Phase::Lingering(reason) = conn.phase {
            return self.begin_close(slot, reason);
        }
        if conn.phase == Phase::Handshaking {
            // Gone before the handshake was done: nothing was said, nothing to flush.
            let reason = match &error {
                Some(e) if !is_reset(e) => CloseReason::IoError,
                Some(_) => CloseReason::Reset,
                None => CloseReason::PeerClosed,
            };
            return self.begin_close(slot, reason);
        }
        match error {
            // Input held back by backpressure is decoded first; `resume_reading` then finishes.
            None if conn.state.read == Read::PausedAtEof => {}
            None => self.peer_finished(slot),
            Some(e) if is_reset(&e) => self.begin_close(slot, CloseReason::Reset),
            Some(error) => {
                let session = conn.state.id;
                let error = SessionError::Io {
                    session,
                    op: IoOp::Recv,
                    error,
                };
                self.fail(slot, error, CloseReason::IoError);
            }
        }
    }

    fn sent(&mut self, slot: u32, send: Box<SendBuf>, result: io::Result<usize>) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        let session = conn.state.id;
        let written = match &result {
            Ok(n) => *n,
            Err(_) => 0,
        };
        let partial = conn.state.out.complete(send, written, &mut self.pool);
        let error = match result {
            Ok(n) if n > 0 => {
                self.stats.bytes_out.add(n as u64);
                if partial {
                    self.stats.partial_writes.add(1);
                }
                conn.write_progress = self.now;
                if conn.state.out.has_unsent() && !conn.dirty {
                    // Eligible to write again at the end of this turn.
                    conn.dirty = true;
                    self.dirty.push(slot);
                }
                if conn.state.read.is_paused() && conn.state.out.len() <= self.cfg.low_water {
                    self.resume_reading(slot);
                }
                self.maybe_finish_flush(slot);
                return;
            }
            Ok(_) => io::Error::new(io::ErrorKind::WriteZero, "send wrote nothing"),
            Err(e) if is_reset(&e) => return self.begin_close(slot, CloseReason::Reset),
            Err(e) => e,
        };
        let error = SessionError::Io {
            session,
            op: IoOp::Send,
            error,
        };
        self.fail(slot, error, CloseReason::IoError);
    }

    fn closed(&mut self, slot: u32) {
        if !self.conns.contains(slot as usize) {
            debug_assert!(false, "closed an unknown slot {slot}");
            return;
        }
        let mut conn = self.conns.remove(slot as usize);
        if let Some(mail) = &self.mail {
            mail.live.freed(slot);
        }
        self.ctx.outbound.sessions = self.conns.len();
        if !conn.state.outbound {
            self.ctx.outbound.accepted -= 1;
        }
        if matches!(conn.proto, Proto::Other(_)) {
            self.placed.remove(&conn.state.id.as_u64());
        }
        conn.state.out.release(&mut self.pool);
        conn.reader.release(&mut self.pool);
        self.stats.closed.add(1);
        // Dropping the handler runs user code: keep a panic there inside this session.
        if catch_unwind(AssertUnwindSafe(move || drop(conn))).is_err() {
            self.stats.panics.add(1);
        }
    }

    fn woken(&mut self) {
        if let Some(deadline) = self.control.stop_requested() {
            self.begin_drain(deadline);
        }
    }
}

impl<C, H, F> Worker<C, H, F>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
{
    /// Input for the codec (a plain session's bytes, a TLS session's plaintext): decoded now,
    /// or held while reading is paused.
    pub(super) fn received_plain(&mut self, slot: u32, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        if conn.state.read.is_paused() {
            // Delivered before reading stopped: decoded when reading resumes.
            conn.reader.hold(data, &mut self.pool);
            return;
        }
        self.decode(slot, Some(data));
        self.drain_if_due(slot);
    }

    /// An outbound session could not connect (the kernel said why, or the connect timeout
    /// passed): `on_error` with the classified error, then `on_close`.
    pub(super) fn connect_failed(&mut self, slot: u32, error: ConnectError) {
        let Some(conn) = self.conns.get(slot as usize) else {
            return;
        };
        self.stats.connect_errors.add(1);
        let session = conn.state.id;
        let error = SessionError::Connect { session, error };
        self.fail(slot, error, CloseReason::IoError);
    }
}
