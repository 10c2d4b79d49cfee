//! The core's side of TLS sessions: ciphertext in, plaintext to the codec, the handshake that
//! comes before `on_open`, and what ends a TLS session (a close_notify, an alert).
//!
//! Invariant: a TLS session's rustls connection is in its state except while
//! [`received_tls`](Worker::received_tls) has it out to hand plaintext, borrowed from rustls's
//! buffer, to the codec; code that needs it then (`maybe_finish_flush`, sealing) leaves the
//! work to `received_tls`, which runs it once the connection is back.

use super::{Event, Phase, Worker};
use crate::codec::Codec;
use crate::core_ctx::CoreCtx;
use crate::error::SessionError;
use crate::handler::Handler;
use crate::session::CloseReason;
use crate::tls::TlsSession;

impl<C, H, F> Worker<C, H, F>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
{
    /// Gives the new session in `slot` its rustls connection: the server side for an accepted
    /// one, the client side for a connect (its handshake starts once connected). `false` if
    /// rustls refused (counted, logged; the caller closes the session).
    pub(super) fn attach_tls(&mut self, slot: u32, tls: Result<TlsSession, rustls::Error>) -> bool {
        let conn = &mut self.conns[slot as usize];
        match tls {
            Ok(tls) => {
                conn.state.out.seal_output();
                conn.state.is_tls = true;
                conn.state.tls = Some(Box::new(tls));
                true
            }
            Err(error) => {
                self.stats.tls_errors.add(1);
                log::warn!("ringwire: session {}: TLS: {error}", conn.state.id);
                false
            }
        }
    }

    /// The connection is up: the handshake starts (a client's ClientHello goes out) and its
    /// timeout counts from now.
    pub(super) fn begin_handshake(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        conn.phase = Phase::Handshaking;
        conn.frame_started = self.now;
        conn.last_rx = self.now;
        conn.write_progress = self.now;
        let Some(tls) = conn.state.tls.as_mut() else {
            debug_assert!(false, "a handshake without TLS");
            return;
        };
        if tls
            .flush_records(&mut conn.state.out, &mut self.pool)
            .is_err()
        {
            return self.begin_close(slot, CloseReason::TlsError);
        }
        self.mark_dirty(slot);
        self.reschedule(slot);
    }

    /// Ciphertext arrived on a TLS session: rustls decrypts it, the handshake advances (and
    /// `on_open` runs when it is done), and each piece of plaintext goes to the codec as a
    /// plain session's input would, straight from rustls's buffer.
    pub(super) fn received_tls(&mut self, slot: u32, data: &[u8]) {
        let Some(mut tls) = self.conns[slot as usize].state.tls.take() else {
            return;
        };
        tls.track(data);
        let mut rest = data;
        let mut peer_closed = false;
        // Bounded: every round moves ciphertext into rustls (it takes at least a byte while
        // its plaintext is drained, as it is here each round) or ends.
        let result = loop {
            if !rest.is_empty() {
                match tls.read_tls(&mut rest) {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => {
                        break Err(rustls::Error::General(format!("record buffer full: {e}")));
                    }
                }
            }
            let state = match tls.process() {
                Ok(state) => state,
                Err(e) => break Err(e),
            };
            if !tls.opened && !tls.is_handshaking() {
                tls.opened = true;
                self.handshake_done(slot, &tls);
            }
            while let Some(plain) = tls.plaintext() {
                let n = plain.len();
                self.received_plain(slot, plain);
                tls.consume(n);
            }
            peer_closed |= state.peer_has_closed();
            if rest.is_empty() {
                break Ok(());
            }
        };
        let conn = &mut self.conns[slot as usize];
        let flushed = tls.flush_records(&mut conn.state.out, &mut self.pool);
        let partial = tls.mid_record();
        conn.state.tls = Some(tls);
        let began = partial && !conn.state.tls_partial && conn.reader.buffered() == 0;
        conn.state.tls_partial = partial;
        if began {
            // A new frame has begun, in a record not yet whole: its read timeout starts now.
            conn.frame_started = self.now;
            self.reschedule(slot);
        }
        self.mark_dirty(slot);
        match result {
            Err(error) => return self.tls_failed(slot, error),
            Ok(()) if flushed.is_err() => {
                return self.begin_close(slot, CloseReason::TlsError);
            }
            Ok(()) => {}
        }
        if peer_closed {
            // The peer's close_notify: no more input, as at EOF.
            let conn = &mut self.conns[slot as usize];
            if conn.phase == Phase::Handshaking {
                return self.begin_close(slot, CloseReason::PeerClosed);
            }
            if conn.phase == Phase::Open && conn.reader.held() > 0 {
                // Input held back by backpressure is decoded first; `resume_reading` then
                // finishes.
                conn.state.read = crate::session::Read::PausedAtEof;
            } else {
                conn.state.read = crate::session::Read::Eof;
                self.peer_finished(slot);
            }
        }
        // Skipped while the connection was out (see the module's invariant).
        self.maybe_finish_flush(slot);
    }

    /// The handshake is done: the session opens (`on_open`) and its idle time starts.
    fn handshake_done(&mut self, slot: u32, tls: &TlsSession) {
        self.stats.tls_handshakes.add(1);
        let conn = &mut self.conns[slot as usize];
        conn.state.tls_info = Some(Box::new(tls.info()));
        if conn.phase != Phase::Handshaking {
            return;
        }
        conn.phase = Phase::Open;
        conn.last_rx = self.now;
        let outbound = conn.state.outbound;
        if self.cfg.kernel_tls && !outbound && tls.kernel_can_take() {
            // Handed to the kernel at the end of a turn where nothing is split between the two
            // (a session whose cipher the kernel does not take never waits: the list is walked
            // every settled turn).
            self.kernel_wait.push((slot, conn.state.id));
        }
        self.reschedule(slot);
        // A session accepted during a drain gets `on_drain` after its first input, as a plain
        // one does; an outbound one once open.
        if self.dispatch(slot, Event::Open) && outbound {
            self.drain_if_due(slot);
        }
    }

    /// rustls failed: `on_error` with the error, then the alert it queued is written and the
    /// session closes, as after a codec error.
    fn tls_failed(&mut self, slot: u32, error: rustls::Error) {
        self.stats.tls_errors.add(1);
        let conn = &mut self.conns[slot as usize];
        if let Some(tls) = &mut conn.state.tls {
            tls.failed = true;
        }
        if !matches!(conn.phase, Phase::Open | Phase::Handshaking) {
            return;
        }
        let error = SessionError::Tls {
            session: conn.state.id,
            error,
        };
        log::debug!("ringwire: {error}");
        conn.phase = Phase::Flushing(CloseReason::TlsError);
        conn.reader.release(&mut self.pool);
        self.dispatch(slot, Event::Error(&error));
    }

    /// Before a TLS session that is done writing closes: queues its close_notify and returns
    /// `true` (the close waits for it to be written), or `false` if there is nothing to send
    /// (sent already, failed, never opened) and the close goes on. `true` too while the
    /// connection is out: `received_tls` finishes the flush when it is back.
    pub(super) fn tls_close_notify(&mut self, slot: u32) -> bool {
        let conn = &mut self.conns[slot as usize];
        if !conn.state.is_tls || conn.state.kernel_tls {
            // (A kernel TLS session sends no close_notify: see `crate::ktls`.)
            return false;
        }
        let Some(tls) = conn.state.tls.as_mut() else {
            return true;
        };
        if !tls.close_notify() {
            return false;
        }
        if tls
            .flush_records(&mut conn.state.out, &mut self.pool)
            .is_err()
        {
            return false;
        }
        self.mark_dirty(slot);
        true
    }

    /// Hands the record layer of the sessions waiting for it to the kernel, each once nothing
    /// is split between rustls and the kernel (see [`crate::ktls`]); keeps waiting the others.
    /// After a turn whose completions the driver all reported, on a driver that copies nothing
    /// from a socket between turns (`run` checks both), before the turn's sends.
    pub(super) fn hand_over_to_kernel(&mut self) {
        if self.kernel_wait.is_empty() {
            return;
        }
        let mut wait = std::mem::take(&mut self.kernel_wait);
        wait.retain(|&(slot, id)| !self.hand_over(slot, id));
        self.kernel_wait = wait;
    }

    /// One session's handover; `true` once it is done with (handed over, refused or gone).
    fn hand_over(&mut self, slot: u32, id: crate::session::SessionId) -> bool {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return true;
        };
        if conn.state.id != id || conn.phase != Phase::Open {
            return true;
        }
        let Some(tls) = conn.state.tls.as_mut() else {
            return true;
        };
        if tls.is_ending() || !tls.kernel_can_take() {
            return true;
        }
        if tls.settle_writes() {
            // Records rustls sealed with its keys go first, by rustls; try again later.
            if tls
                .flush_records(&mut conn.state.out, &mut self.pool)
                .is_ok()
            {
                self.mark_dirty(slot);
            }
            return false;
        }
        if !tls.may_hand_over() || conn.state.out.in_flight() || conn.state.out.has_sealed() {
            return false;
        }
        // SAFETY: the descriptor of an open session stays open while the core holds it.
        let fd = unsafe { crate::sys::borrow(conn.state.fd) };
        if let Err(e) = crate::sys::set_tcp_ulp(fd, "tls") {
            // Nothing changed: rustls keeps the record layer.
            self.stats.tls_kernel_refused.add(1);
            log::debug!("ringwire: session {id}: kernel TLS refused: {e}");
            return true;
        }
        let tls = conn.state.tls.take().expect("checked above");
        let keys = tls.into_kernel().and_then(|(tx, rx)| {
            crate::ktls::set_keys(fd, false, &tx)
                .and_then(|()| crate::ktls::set_keys(fd, true, &rx))
                .map_err(|e| e.to_string())
        });
        match keys {
            Ok(()) => {
                conn.state.kernel_tls = true;
                conn.state.out.unseal();
                if let Some(info) = &mut conn.state.tls_info {
                    info.kernel = true;
                }
                self.stats.tls_kernel.add(1);
            }
            Err(why) => {
                // rustls gave its keys away: the session cannot go on in user space.
                self.stats.tls_errors.add(1);
                let error = SessionError::Tls {
                    session: id,
                    error: rustls::Error::General(format!("kernel TLS handover failed: {why}")),
                };
                self.fail(slot, error, CloseReason::TlsError);
            }
        }
        true
    }

    /// Lists the session for a send at the end of this turn, if it has output and is not
    /// listed.
    ///
    /// For records queued outside a callback (handshake messages, tickets, alerts): if no send
    /// is in flight, the write timeout counts from now.
    pub(super) fn mark_dirty(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.state.out.has_unsent() && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(slot);
            if !conn.state.out.in_flight() {
                conn.write_progress = self.now;
            }
        }
    }

    /// A rustls connection for an accepted session, if the server speaks TLS.
    pub(super) fn server_tls(&self) -> Option<Result<TlsSession, rustls::Error>> {
        self.cfg.tls.as_ref().map(TlsSession::server)
    }

    /// A rustls connection for a session the client opens at start, if it speaks TLS.
    pub(super) fn client_tls(&self) -> Option<Result<TlsSession, rustls::Error>> {
        self.cfg.tls_connect.as_ref().map(TlsSession::client)
    }
}
