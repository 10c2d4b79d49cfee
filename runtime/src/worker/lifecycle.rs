//! What follows a callback, and how sessions pause, resume and end: output listed for the
//! turn's sends, backpressure, flushing, lingering, idle closes during a drain, errors and
//! panics. Every end goes through `begin_close`: `on_close` once, its counter, then
//! `Command::Close`; the slot is freed when the driver reports it closed.

use super::*;
use crate::reply::SessionHandle;
use crate::route::{self, Msg};

/// Most rounds of messages a core applies to itself at once (see `apply_here`).
const HERE_ROUNDS: usize = 16;

impl<C, H, F> Worker<C, H, F>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
{
    /// Closes, as [`CloseReason::Drained`], the watched sessions that are idle, with no input
    /// waiting in their socket either. Checked at the end of a turn whose completions the
    /// driver all reported (none left in an overflow list or past the turn's budget), so input
    /// a completion carries is not overlooked. (With `DEFER_TASKRUN` the kernel copies nothing
    /// between our waits, so input not yet delivered is still counted by FIONREAD; without it,
    /// input that arrives between this check and the close may be lost to the close.)
    pub(crate) fn close_idle(&mut self) {
        if self.idle_watch.is_empty() {
            return;
        }
        let mut watch = std::mem::take(&mut self.idle_watch);
        watch.retain(|&slot| {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                return false;
            };
            if conn.phase != Phase::Open || conn.state.close != CloseAsk::WhenIdle {
                conn.idle_watched = false;
                return false;
            }
            if !conn.is_idle() {
                return true;
            }
            // SAFETY: the descriptor of an open session stays open while the core holds it.
            let fd = unsafe { sys::borrow(conn.state.fd) };
            if sys::unread(fd).unwrap_or(0) > 0 {
                return true; // Its input is on the way: served first.
            }
            conn.idle_watched = false;
            self.closing.push(slot);
            false
        });
        self.idle_watch = watch;
        let mut closing = std::mem::take(&mut self.closing);
        for slot in closing.drain(..) {
            let conn = &mut self.conns[slot as usize];
            if conn.state.is_tls {
                // Its peer gets a close_notify, not a cut-off stream.
                conn.phase = Phase::Flushing(CloseReason::Drained);
                self.maybe_finish_flush(slot);
            } else {
                self.begin_close(slot, CloseReason::Drained);
            }
        }
        self.closing = closing;
    }

    /// Whether a watched session is idle as far as the core knows (so the turn must end).
    pub(crate) fn idle_due(&self) -> bool {
        self.idle_watch
            .iter()
            .any(|&slot| self.conns.get(slot as usize).is_some_and(|c| c.is_idle()))
    }

    /// A paused session's output drained to the low-water mark: decode the input held while
    /// paused (which may pass the high-water mark again and keep it paused), then read again,
    /// or finish if the peer's EOF came meanwhile.
    pub(super) fn resume_reading(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.state.out.outstanding() >= conn.state.max_replies
            || conn.state.out.len() > self.cfg.high_water
        {
            // Still at a bound (a later reply was filled before an earlier one, which holds
            // the count): no request may be delivered yet, held ones included.
            return;
        }
        // Time spent paused is not the peer's idleness or slowness.
        conn.last_rx = self.now;
        conn.frame_started = self.now;
        if conn.reader.held() > 0 {
            self.decode(slot, None);
        }
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase != Phase::Open
            || !conn.state.read.is_paused()
            || conn.state.out.len() > self.cfg.high_water
            || conn.state.out.outstanding() >= conn.state.max_replies
        {
            return;
        }
        if conn.state.read == Read::PausedAtEof {
            conn.state.read = Read::Eof;
            self.peer_finished(slot);
        } else {
            conn.state.read = Read::Receiving;
            self.cmds.push(Command::ResumeRecv { slot });
            // A session taken from the backlog during a drain whose first input was held.
            self.drain_if_due(slot);
        }
    }

    /// The peer sent EOF and all its input is handled: flush what is pending, then close.
    pub(super) fn peer_finished(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.phase == Phase::Open {
            conn.phase = Phase::Flushing(CloseReason::PeerClosed);
            conn.reader.release(&mut self.pool);
        }
        self.maybe_finish_flush(slot);
    }

    pub(super) fn panicked(
        &mut self,
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
        if callback == "on_error" {
            // The handler already heard of the session's error; it is not called again.
            return self.begin_close(slot, CloseReason::Panic);
        }
        self.fail(slot, error, CloseReason::Panic);
    }

    /// Lists the session for a send if it has new output, pauses reading above the high-water
    /// mark, (re)schedules its timers when a deadline may have come closer, and starts closing
    /// if asked to.
    pub(super) fn after_callback(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        if conn.state.out.len() > self.cfg.max_output {
            let error = SessionError::OutputLimit {
                session: conn.state.id,
                pending: conn.state.out.len(),
                limit: self.cfg.max_output,
            };
            log::debug!("ringwire: {error}");
            return self.fail(slot, error, CloseReason::OutputLimit);
        }
        if conn.state.out.has_unsent() && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(slot);
        }
        if conn.state.close == CloseAsk::WhenIdle && !conn.idle_watched {
            conn.idle_watched = true;
            self.idle_watch.push(slot);
        }
        if conn.state.close == CloseAsk::AfterFlush && conn.phase == Phase::Open {
            conn.phase = Phase::Flushing(CloseReason::Local);
            conn.reader.release(&mut self.pool);
        }
        if conn.state.read == Read::Receiving
            && conn.phase == Phase::Open
            && (conn.state.out.len() > self.cfg.high_water
                || conn.state.out.outstanding() >= conn.state.max_replies)
        {
            conn.state.read = Read::Paused;
            self.stats.backpressure_pauses.add(1);
            self.cmds.push(Command::PauseRecv { slot });
        }
        // Only transitions can bring a deadline closer; per message this is two compares.
        let has_tail = conn.has_tail();
        let has_output = conn.state.out.writing();
        let mut reschedule = std::mem::take(&mut conn.state.timeouts_changed);
        if reschedule {
            conn.next_tick = conn
                .state
                .timeouts
                .tick
                .map_or(Micros::MAX, |t| deadline::next_on_grid(self.now, t));
        }
        if has_tail && !conn.had_tail {
            conn.frame_started = self.now;
            reschedule = true;
        }
        if has_output && !conn.had_output {
            conn.write_progress = self.now;
            reschedule = true;
        }
        if conn
            .state
            .timers
            .next()
            .is_some_and(|at| at < conn.timer_at)
        {
            // A timer set earlier than the session's current entry. (A cancel needs nothing:
            // an entry that finds nothing due reschedules at the next deadline.)
            reschedule = true;
        }
        conn.had_tail = has_tail;
        conn.had_output = has_output;
        if reschedule {
            self.reschedule(slot);
        }
        self.maybe_finish_flush(slot);
        if route::has_here() {
            self.apply_here();
        }
    }

    /// Applies what the last callback sent to this core: replies it completed (for any
    /// session of this core), writes and closes by handle, work it ran here.
    ///
    /// In the order they were sent: applying one may run user code (`on_close`, `on_error`)
    /// that sends more, which waits behind the rest of the batch (a nested call returns at
    /// once and leaves it to this loop). Bounded: what a batch keeps producing beyond
    /// `HERE_ROUNDS` rounds waits for the next turn, which then does not sleep.
    pub(super) fn apply_here(&mut self) {
        if self.applying_here {
            return;
        }
        self.applying_here = true;
        let mut mail = std::mem::take(&mut self.mail_here);
        for _ in 0..HERE_ROUNDS {
            route::take_here(&mut mail);
            if mail.is_empty() {
                break;
            }
            for msg in mail.drain(..) {
                self.apply_msg(msg);
            }
        }
        self.mail_here = mail; // Keep the capacity.
        self.applying_here = false;
    }

    /// Applies one message sent to this core (from a callback here, another core or thread).
    pub(super) fn apply_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Run(task) => {
                let ctx = &mut self.ctx;
                if let Err(payload) = catch_unwind(AssertUnwindSafe(move || task(ctx))) {
                    self.stats.panics.add(1);
                    log::error!(
                        "ringwire: work sent to core {} panicked: {}",
                        self.cfg.core,
                        panic_message(&*payload)
                    );
                }
                // Connects it asked for open now, so that what follows finds their handles.
                self.open_pending();
            }
            Msg::Fill { session, id, bytes } => {
                let Some(slot) = self.resolve_in(session, Self::takes_replies) else {
                    return; // The session has gone (or is going): its replies are no-ops.
                };
                if self.conns[slot as usize].state.out.fill(id, bytes) {
                    self.stats.frames_out.add(1);
                    self.filled(slot);
                }
            }
            Msg::Abandon { session, id } => self.abandoned(session, id),
            Msg::Write { session, bytes } => {
                // Only an open session (or one still connecting: its output waits for the
                // connect) takes new output: one flushing after a dropped reply must not send
                // it where the peer waits for that reply, and one lingering has shut its
                // sending side.
                let open = |p| matches!(p, Phase::Open | Phase::Connecting | Phase::Handshaking);
                let Some(slot) = self.resolve_in(session, open) else {
                    self.stats.stale_messages.add(1);
                    return;
                };
                let conn = &mut self.conns[slot as usize];
                if conn.state.out.len() <= self.cfg.max_output {
                    let chunk = conn.state.out.tail_chunk(&mut self.pool, bytes.len());
                    chunk.extend_from_slice(&bytes);
                    conn.state.out.appended(bytes.len());
                }
                self.after_callback(slot);
            }
            Msg::Close { session } => {
                let open = |p| matches!(p, Phase::Open | Phase::Connecting | Phase::Handshaking);
                let Some(slot) = self.resolve_in(session, open) else {
                    self.stats.stale_messages.add(1);
                    return;
                };
                if matches!(
                    self.conns[slot as usize].phase,
                    Phase::Connecting | Phase::Handshaking
                ) {
                    // Nothing was said yet: the connect is abandoned.
                    return self.begin_close(slot, CloseReason::Local);
                }
                self.conns[slot as usize].state.close = CloseAsk::AfterFlush;
                self.after_callback(slot);
            }
        }
    }

    /// [`resolve`](Self::resolve), for a session whose phase passes `phase`.
    fn resolve_in(&self, session: SessionHandle, phase: impl Fn(Phase) -> bool) -> Option<u32> {
        let slot = self.resolve(session)?;
        phase(self.conns[slot as usize].phase).then_some(slot)
    }

    /// Whether a session in `phase` still writes its replies (not once it is closing).
    fn takes_replies(phase: Phase) -> bool {
        phase != Phase::Closing
    }

    /// A reply slot of `slot` was filled: send what is ready, and read again if the session
    /// was paused at its bound of outstanding replies.
    fn filled(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.state.out.outstanding() == 0 {
            // Waiting for its own replies was not the peer's idleness: the idle and read
            // clocks start again now.
            conn.last_rx = self.now;
            conn.frame_started = self.now;
            self.reschedule(slot);
        }
        self.after_callback(slot);
        let Some(conn) = self.conns.get(slot as usize) else {
            return;
        };
        if conn.state.read.is_paused() && conn.state.out.len() <= self.cfg.low_water {
            // Resumed at the end of the turn, not from here: resuming decodes held input,
            // whose callbacks may complete more replies, and recursing on that is unbounded.
            self.resumes.push(slot);
        }
    }

    /// End of a turn: applies the completions queued outside any callback's aftermath (from
    /// `on_close`, `on_error`, a handler dropped with its replies), closes the sessions whose
    /// replies were dropped, and resumes the sessions a completion unblocked; bounded rounds.
    pub(super) fn settle_replies(&mut self) {
        for _ in 0..4 {
            if route::has_here() {
                self.apply_here();
            }
            if self.resumes.is_empty() {
                break;
            }
            let mut resumes = std::mem::take(&mut self.resumes);
            for slot in resumes.drain(..) {
                if self.conns.contains(slot as usize) {
                    self.resume_reading(slot);
                }
            }
            if self.resumes.is_empty() {
                self.resumes = resumes; // Keep the capacity.
            }
        }
    }

    /// A reserved reply of `session` was dropped without being completed: what was answered
    /// before it still goes out; nothing after it can, in order, so the session closes.
    fn abandoned(&mut self, session: SessionHandle, id: u64) {
        let Some(slot) = self.resolve_in(session, Self::takes_replies) else {
            return;
        };
        let conn = &mut self.conns[slot as usize];
        if !conn.state.out.is_waiting(id) {
            return;
        }
        log::debug!(
            "ringwire: session {}: a reserved reply was dropped uncompleted",
            conn.state.id
        );
        conn.state.out.cut_at(id);
        if conn.phase == Phase::Open {
            conn.phase = Phase::Flushing(CloseReason::ReplyDropped);
            conn.reader.release(&mut self.pool);
        }
        self.after_callback(slot);
    }

    /// A flushing session whose output is all written closes now.
    pub(super) fn maybe_finish_flush(&mut self, slot: u32) {
        let Some(conn) = self.conns.get(slot as usize) else {
            return;
        };
        let Phase::Flushing(reason) = conn.phase else {
            return;
        };
        if !conn.state.out.is_empty()
            || conn.state.out.in_flight()
            || conn.state.out.outstanding() > 0
        {
            return;
        }
        if self.tls_close_notify(slot) {
            return; // Closes once the close_notify is written.
        }
        let conn = &self.conns[slot as usize];
        match self.cfg.linger {
            Some(linger)
                if !matches!(conn.state.read, Read::Eof | Read::PausedAtEof)
                    && reason != CloseReason::PeerClosed =>
            {
                let conn = &mut self.conns[slot as usize];
                conn.phase = Phase::Lingering(reason);
                conn.linger_until = self.now + linger;
                if conn.state.read == Read::Paused {
                    // Lingering reads (and drops) until the peer's EOF.
                    conn.state.read = Read::Receiving;
                    self.cmds.push(Command::ResumeRecv { slot });
                }
                self.cmds.push(Command::ShutdownWrite { slot });
                self.reschedule(slot);
            }
            _ => self.begin_close(slot, reason),
        }
    }

    /// Reports `error` to the handler, then closes the session without flushing.
    pub(super) fn fail(&mut self, slot: u32, error: SessionError, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        if let Some(Err(_)) = self.call(slot, Event::Error(&error)) {
            self.stats.panics.add(1);
        }
        self.begin_close(slot, reason);
    }

    /// The peer sent input the codec rejects: `on_error` (which may reply, e.g. with a
    /// protocol error), then write what is pending, handle no more input, and close.
    pub(super) fn reject_input(&mut self, slot: u32, error: SessionError) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        conn.phase = Phase::Flushing(CloseReason::CodecError);
        conn.reader.release(&mut self.pool);
        // Formatting the error runs the codec's own `Display`: guarded, as a part of `on_error`.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| log::debug!("ringwire: {error}"))) {
            return self.panicked(slot, "on_error", payload);
        }
        self.dispatch(slot, Event::Error(&error));
    }

    /// Closes the session now: `on_close`, then the driver cancels its I/O and closes the
    /// descriptor. The slot is freed when the driver reports it closed.
    pub(super) fn begin_close(&mut self, slot: u32, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        if let Some(Err(_)) = self.call(slot, Event::Close(reason)) {
            self.stats.panics.add(1);
        }
        if let Some(conn) = self.conns.get_mut(slot as usize) {
            conn.state.timers.clear(); // None of them fires.
        }
        self.stats.closed_by[reason.index()].add(1);
        self.cmds.push(Command::Close { slot });
    }
}
