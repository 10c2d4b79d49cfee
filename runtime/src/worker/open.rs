//! Opening sessions and finding them again: a session with the server's codec and a handler
//! from its factory (accepted, or connected by `Session::connect`), an outbound session of
//! another protocol asked for with `CoreCtx::connect`, and [`Worker::resolve`], the one place
//! where a handle becomes a slot.
//!
//! Invariants: a handle reaches only the session it was given for: a slot's session is checked
//! by its id, which a core never reuses, and a handle given out before its session had a slot
//! is found through `placed`, which lists exactly the live sessions `CoreCtx::connect` opened.
//! The sessions a core holds plus the connects listed in its context never pass `max_sessions`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::*;
use crate::core_ctx::PendingConnect;
use crate::reply::SessionHandle;
use crate::session::SessionId;
use crate::timer::SessionTimers;

impl<C, H, F> Worker<C, H, F>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
{
    /// The slot of the live session `handle` names: `None` if the session is another core's, has
    /// gone (even once its slot holds another session), or is not open yet (a connect asked for
    /// outside a callback, from remote work or a handler factory, opens at the end of the turn).
    /// Whatever reaches a session by its handle finds it here.
    pub(crate) fn resolve(&self, handle: SessionHandle) -> Option<u32> {
        if handle.server != self.ctx.server() || handle.worker() != self.cfg.core {
            return None;
        }
        let slot = if handle.slot == SessionHandle::UNPLACED {
            *self.placed.get(&handle.seq)?
        } else {
            handle.slot
        };
        let conn = self.conns.get(slot as usize)?;
        (conn.state.id.as_u64() == handle.seq).then_some(slot)
    }

    /// The core holds as many sessions as it may, counting the connects still to open.
    pub(super) fn is_full(&self) -> bool {
        self.conns.len() + self.ctx.outbound.pending.len() >= self.cfg.max_sessions
    }

    /// A new session in a free slot, with a handler from the factory; `None` (counted) if the
    /// factory panicked.
    pub(super) fn insert(&mut self, fd: &OwnedFd, phase: Phase) -> Option<u32> {
        // The session being made counts while the factory runs: a connect it asks for must
        // leave it room.
        self.ctx.outbound.sessions = self.conns.len() + 1;
        let asked = self.ctx.outbound.pending.len();
        // Both are user code: a panic refuses this connection only.
        let made = catch_unwind(AssertUnwindSafe(|| {
            (self.codec.clone(), (self.factory)(&mut self.ctx))
        }));
        self.ctx.outbound.sessions = self.conns.len();
        let (codec, handler) = match made {
            Ok(made) => made,
            Err(payload) => {
                // Connects the factory asked for before it panicked go with the refused
                // session.
                let refused: Vec<_> = self.ctx.outbound.pending.drain(asked..).collect();
                if catch_unwind(AssertUnwindSafe(move || drop(refused))).is_err() {
                    self.stats.panics.add(1);
                }
                self.stats.panics.add(1);
                let message = panic_message(&*payload);
                log::error!("ringwire: codec clone or handler factory panicked: {message}");
                return None;
            }
        };
        let id = self.ctx.next_id();
        let proto = Proto::Main { codec, handler };
        Some(self.place(proto, fd.as_raw_fd(), id, phase))
    }

    /// Puts session `id` in a free slot; returns the slot.
    fn place(&mut self, proto: Proto<C, H>, fd: RawFd, id: SessionId, phase: Phase) -> u32 {
        let mut state = SessionState::new(id, fd, self.cfg.timeouts);
        state.draining = self.drain_until.is_some();
        state.outbound = phase == Phase::Connecting;
        state.output_limit = self.cfg.max_output;
        state.timers = SessionTimers::new(self.cfg.max_timers);
        state.max_replies = self.cfg.max_replies;
        state.slot = self.conns.vacant_key() as u32;
        let now = self.now;
        let slot = self.conns.insert(Conn {
            proto,
            reader: FrameReader::new(),
            state,
            phase,
            dirty: false,
            seq: id.as_u64(),
            last_rx: now,
            frame_started: now,
            write_progress: now,
            next_tick: Micros::MAX,
            timer_at: Micros::MAX,
            had_tail: false,
            had_output: false,
            linger_until: Micros::MAX,
            drain_due: self.drain_until.is_some(),
            idle_watched: false,
        });
        self.ctx.outbound.sessions = self.conns.len();
        if phase != Phase::Connecting {
            self.ctx.outbound.accepted += 1;
        }
        if let Some(mail) = &self.mail {
            mail.live.opened(slot as u32, id.as_u64());
        }
        slot as u32
    }

    /// Opens an outbound session to `addr` with the server's codec and a handler from the
    /// factory (`Session::connect`, a client's start); its `on_open` runs once connected.
    pub(super) fn connect(&mut self, addr: crate::target::Target) {
        if self.closed_all || self.is_full() {
            self.stats.connect_errors.add(1);
            log::warn!(
                "ringwire: core {}: no room for a connection to {addr}",
                self.cfg.core
            );
            return;
        }
        let (fd, sock_addr) = match addr.socket(self.cfg.nodelay) {
            Ok(made) => made,
            Err(e) => {
                self.stats.connect_errors.add(1);
                log::warn!(
                    "ringwire: core {}: cannot open a socket for {addr}: {e}",
                    self.cfg.core
                );
                return;
            }
        };
        let tls = match self.client_tls().transpose() {
            Ok(tls) => tls,
            Err(e) => {
                self.stats.connect_errors.add(1);
                self.stats.tls_errors.add(1);
                log::warn!("ringwire: core {}: TLS to {addr}: {e}", self.cfg.core);
                return;
            }
        };
        let Some(slot) = self.insert(&fd, Phase::Connecting) else {
            return; // Dropping `fd` closes it.
        };
        if let Some(tls) = tls {
            self.attach_tls(slot, Ok(tls));
        }
        self.cmds.push(Command::Connect {
            slot,
            fd,
            addr: sock_addr,
        });
        self.reschedule(slot);
    }

    /// Opens the outbound sessions `CoreCtx::connect` listed, in order: each takes a free slot
    /// (their room was counted when they were asked for) and starts connecting. Called right
    /// after every callback, and at the end of the turn for those asked for elsewhere.
    pub(super) fn open_pending(&mut self) {
        if self.ctx.outbound.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.ctx.outbound.pending);
        for PendingConnect {
            target: _,
            id,
            socket,
            proto,
            tls,
        } in pending.drain(..)
        {
            let Some((fd, addr)) = socket else {
                // Only the test kit lists connects without a socket.
                debug_assert!(false, "a connect without a socket");
                continue;
            };
            let slot = self.place(Proto::Other(proto), fd.as_raw_fd(), id, Phase::Connecting);
            self.placed.insert(id.as_u64(), slot);
            if let Some(tls) = tls {
                // Made by `connect_tls`, which checked that rustls takes its configuration.
                let attached = self.attach_tls(slot, Ok(*tls));
                debug_assert!(attached);
            }
            self.cmds.push(Command::Connect { slot, fd, addr });
            self.reschedule(slot);
            if self.closed_all {
                // Asked for just before the drain deadline cut every session off.
                self.begin_close(slot, CloseReason::Shutdown);
            }
        }
        if self.ctx.outbound.pending.is_empty() {
            self.ctx.outbound.pending = pending; // Keep the capacity.
        }
    }
}
