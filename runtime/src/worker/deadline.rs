//! Time in the core: session timeouts and ticks, the per-core tick, and draining for
//! shutdown until a deadline.
//!
//! A session's activity is recorded as the turn's timestamp (a store, no heap work per
//! message). Each session has at most one current timer entry, at its earliest deadline; when
//! it fires, the session's timestamps decide what is due, and the next entry is scheduled.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Event, Phase, Worker};
use crate::codec::Codec;
use crate::core_ctx::CoreCtx;
use crate::driver::Command;
use crate::error::{panic_message, ConnectError};
use crate::handler::Handler;
use crate::session::{CloseReason, Read};
use crate::timer::Micros;

/// How long a TLS session closed for idleness waits for its close_notify to be written: a peer
/// that reads nothing (its receive window shut) gets its connection closed without it.
pub(super) const CLOSE_NOTIFY_GRACE: Micros = 1_000_000;

/// A per-core housekeeping callback and its period.
pub(crate) struct CoreTick {
    pub(crate) period: Micros,
    pub(crate) hook: Arc<dyn Fn(usize) + Send + Sync>,
}

/// What other threads tell the cores: stop, and by when.
#[derive(Debug)]
pub(crate) struct Control {
    base: Instant,
    stop: AtomicBool,
    /// Drain deadline, in nanoseconds after `base` (the earliest one asked for wins).
    deadline_ns: AtomicU64,
}

impl Control {
    pub(crate) fn new() -> Self {
        Control {
            base: Instant::now(),
            stop: AtomicBool::new(false),
            deadline_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// Asks the cores to stop accepting and to close every session by `deadline`.
    pub(crate) fn request_stop(&self, drain: Duration) {
        let deadline = Instant::now() + drain;
        let ns = deadline
            .duration_since(self.base)
            .as_nanos()
            .min(u64::MAX as u128 - 1) as u64;
        // A second, harder stop shortens the deadline; a later one never extends it.
        self.deadline_ns.fetch_min(ns, Ordering::AcqRel);
        self.stop.store(true, Ordering::Release);
    }

    /// The drain deadline, if a stop was requested.
    pub(crate) fn stop_requested(&self) -> Option<Instant> {
        if !self.stop.load(Ordering::Acquire) {
            return None;
        }
        Some(self.base + Duration::from_nanos(self.deadline_ns.load(Ordering::Acquire)))
    }
}

/// Whether a session in `phase` runs its one-shot timers: while it can still write (open, or
/// flushing its last replies), not once it lingers with its sending side shut down or closes.
fn timers_fire(phase: Phase) -> bool {
    matches!(phase, Phase::Open | Phase::Flushing(_))
}

/// The first multiple of `period` after `now`. Ticks sit on a grid of the core's clock, so the
/// sessions of a core that tick at the same period tick in the same loop turn: one wake-up for
/// all of them, not one each.
pub(super) fn next_on_grid(now: Micros, period: Micros) -> Micros {
    (now / period + 1) * period
}

impl<C, H, F> Worker<C, H, F>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
{
    /// How long the next turn may wait: until the earliest deadline, or forever; not at all
    /// while outbound sessions asked for outside a callback wait to be opened.
    pub(crate) fn wait_bound(&self) -> Option<Duration> {
        if !self.ctx.outbound.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next(),
            Some(self.next_core_tick),
            self.drain_until,
        ]
        .into_iter()
        .flatten()
        .min()
        .filter(|&at| at != Micros::MAX)?;
        Some(self.clock.until(self.clock.now(), next))
    }

    /// The session's earliest deadline, from its timestamps.
    fn next_deadline(&self, slot: u32) -> Option<Micros> {
        let conn = self.conns.get(slot as usize)?;
        let t = conn.state.timeouts;
        // Waiting for its own replies is not the peer's idleness or slowness.
        let reading = conn.phase == Phase::Open
            && conn.state.read == Read::Receiving
            && conn.state.out.outstanding() == 0;
        let idle = t.idle.filter(|_| reading).map(|d| conn.last_rx + d);
        let read = t
            .read
            .filter(|_| reading && conn.has_tail())
            .map(|d| conn.frame_started + d);
        // Only a session that has opened has output of its own to time; a connect's or a
        // handshake's own deadline bounds it before.
        let write = t
            .write
            .filter(|_| timers_fire(conn.phase) && conn.state.out.writing())
            .map(|d| conn.write_progress + d);
        let tick = Some(conn.next_tick).filter(|&at| at != Micros::MAX);
        let linger = matches!(
            conn.phase,
            Phase::Lingering(_) | Phase::Flushing(CloseReason::IdleTimeout)
        )
        .then_some(conn.linger_until)
        .filter(|&at| at != Micros::MAX);
        let timer = conn.state.timers.next().filter(|_| timers_fire(conn.phase));
        // While connecting, `last_rx` is when the connect started.
        let connect = self
            .cfg
            .connect_timeout
            .filter(|_| conn.phase == Phase::Connecting)
            .map(|d| conn.last_rx + d);
        // While handshaking, `frame_started` is when the handshake started.
        let handshake = self
            .cfg
            .handshake_timeout
            .filter(|_| conn.phase == Phase::Handshaking)
            .map(|d| conn.frame_started + d);
        // A handshake that goes quiet is idle too (and bounded so even with no handshake
        // timeout).
        let handshake_idle = t
            .idle
            .filter(|_| conn.phase == Phase::Handshaking)
            .map(|d| conn.last_rx + d);
        [
            idle,
            read,
            write,
            tick,
            linger,
            timer,
            connect,
            handshake,
            handshake_idle,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Schedules the session's timer if its earliest deadline is before the current entry.
    pub(super) fn reschedule(&mut self, slot: u32) {
        let Some(at) = self.next_deadline(slot) else {
            return;
        };
        let conn = &mut self.conns[slot as usize];
        if at < conn.timer_at {
            conn.timer_at = at;
            self.timers.schedule(at, slot, conn.seq);
        }
    }

    /// Handles every deadline that has passed.
    pub(super) fn fire_timers(&mut self) {
        let now = self.now;
        if now >= self.next_core_tick {
            if let Some(tick) = &self.cfg.core_tick {
                self.next_core_tick = now + tick.period;
                let (hook, core) = (&tick.hook, self.cfg.core);
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| hook(core))) {
                    self.stats.panics.add(1);
                    log::error!(
                        "ringwire: core tick hook panicked: {}",
                        panic_message(&*payload)
                    );
                }
            }
        }
        if self.drain_until.is_some_and(|at| now >= at) && !self.closed_all {
            self.close_all();
        }
        while let Some((at, slot, seq)) = self.timers.pop_due(now) {
            self.stats.timer_fires.add(1);
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            if conn.seq != seq || conn.timer_at != at {
                continue; // Stale: the session is gone, or rescheduled earlier.
            }
            conn.timer_at = Micros::MAX;
            self.check_timers(slot);
        }
    }

    /// Closes the session if a timeout passed, runs its tick if due, and schedules the next.
    fn check_timers(&mut self, slot: u32) {
        let now = self.now;
        let conn = &mut self.conns[slot as usize];
        if conn.phase == Phase::Closing {
            return;
        }
        if conn.phase == Phase::Connecting {
            // Nothing else is due before the session opens.
            return match self.cfg.connect_timeout {
                Some(d) if now >= conn.last_rx + d => {
                    let after = std::time::Duration::from_micros(d);
                    let error = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("not connected within {after:?} (connect_timeout)"),
                    );
                    self.connect_failed(slot, ConnectError::TimedOut(error));
                }
                _ => self.reschedule(slot),
            };
        }
        if conn.phase == Phase::Handshaking {
            // Nothing else is due before the session opens.
            let idle = conn.state.timeouts.idle;
            return match self.cfg.handshake_timeout {
                Some(d) if now >= conn.frame_started + d => {
                    self.stats.tls_errors.add(1);
                    self.begin_close(slot, CloseReason::HandshakeTimeout);
                }
                _ if idle.is_some_and(|d| now >= conn.last_rx + d) => {
                    self.begin_close(slot, CloseReason::IdleTimeout);
                }
                _ => self.reschedule(slot),
            };
        }
        let t = conn.state.timeouts;
        // Waiting for its own replies is not the peer's idleness or slowness.
        let reading = conn.phase == Phase::Open
            && conn.state.read == Read::Receiving
            && conn.state.out.outstanding() == 0;
        let expired =
            |timeout: Option<Micros>, since: Micros| timeout.is_some_and(|d| now >= since + d);
        let reason = if let Phase::Lingering(reason) = conn.phase {
            (now >= conn.linger_until).then_some(reason)
        } else if conn.phase == Phase::Flushing(CloseReason::IdleTimeout) {
            // Its close_notify had its grace (a peer that reads nothing takes none).
            (now >= conn.linger_until).then_some(CloseReason::IdleTimeout)
        } else if reading && expired(t.idle, conn.last_rx) {
            Some(CloseReason::IdleTimeout)
        } else if reading && conn.has_tail() && expired(t.read, conn.frame_started) {
            Some(CloseReason::ReadTimeout)
        } else if timers_fire(conn.phase)
            && conn.state.out.writing()
            && expired(t.write, conn.write_progress)
        {
            Some(CloseReason::WriteTimeout)
        } else {
            None
        };
        if let Some(reason) = reason {
            let quiet = conn.state.out.is_empty()
                && !conn.state.out.in_flight()
                && conn.state.out.outstanding() == 0;
            if reason == CloseReason::IdleTimeout
                && conn.state.is_tls
                && conn.phase == Phase::Open
                && quiet
            {
                // Nothing pending: the peer gets a close_notify, not a cut-off stream, within
                // a grace. (With output pending the peer is not reading: it is closed at once,
                // as a plain session is.)
                conn.phase = Phase::Flushing(reason);
                conn.linger_until = now + CLOSE_NOTIFY_GRACE;
                conn.reader.release(&mut self.pool);
                self.maybe_finish_flush(slot);
                self.reschedule(slot);
                return;
            }
            self.begin_close(slot, reason);
            return;
        }
        if now >= conn.next_tick {
            conn.next_tick = t.tick.map_or(Micros::MAX, |d| next_on_grid(now, d));
            self.stats.ticks.add(1);
            self.dispatch(slot, Event::Tick);
        }
        self.fire_session_timers(slot);
        if self
            .conns
            .get(slot as usize)
            .is_some_and(|c| c.phase != Phase::Closing)
        {
            self.reschedule(slot);
        }
    }

    /// Runs `on_timer` for each of the session's timers due now, earliest first, while the
    /// session may still write. A timer set meanwhile is due a microsecond later at the
    /// earliest, after this turn's time: it waits for a later turn, so this ends.
    fn fire_session_timers(&mut self, slot: u32) {
        let now = self.now;
        loop {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                return;
            };
            if !timers_fire(conn.phase) {
                return;
            }
            let Some(id) = conn.state.timers.pop_due(now) else {
                return;
            };
            self.stats.timers.add(1);
            if !self.dispatch(slot, Event::Timer(id)) {
                return;
            }
        }
    }

    /// Starts draining: stop accepting (the driver still hands over the backlog), keep serving
    /// the sessions until their peers close, and close what is left at the deadline.
    pub(super) fn begin_drain(&mut self, deadline: Instant) {
        let at = self.clock.at(deadline);
        if self.drain_until.is_some_and(|current| current <= at) {
            return;
        }
        let first = self.drain_until.is_none();
        self.drain_until = Some(at);
        // No new outbound session from here (`CoreCtx::connect` says so at once).
        self.ctx.outbound.closed = true;
        if first {
            self.cmds.push(Command::StopAccepting);
            let mut open = Vec::with_capacity(self.conns.len());
            for (slot, conn) in self.conns.iter_mut() {
                conn.state.draining = true;
                match conn.phase {
                    Phase::Open => open.push(slot as u32),
                    Phase::Connecting | Phase::Handshaking => conn.drain_due = true,
                    _ => {}
                }
            }
            if self.clock.now() >= at {
                // A stop with no time to drain: everything is cut off as `Shutdown`.
                return self.close_all();
            }
            for slot in open {
                self.dispatch(slot, Event::Drain);
            }
        }
        if self.clock.now() >= at {
            self.close_all();
        }
    }

    /// Runs `on_drain` for a session opened during the drain, once it has had its first input
    /// (or, outbound, once connected).
    pub(super) fn drain_if_due(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.drain_due && conn.phase == Phase::Open {
            conn.drain_due = false;
            self.dispatch(slot, Event::Drain);
        }
    }

    /// The drain deadline passed: close every session now.
    fn close_all(&mut self) {
        self.closed_all = true;
        self.ctx.outbound.closed = true;
        let slots: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
        for slot in slots {
            // A lingering session is done (its output written, its sending side shut down):
            // the deadline only ends its wait for the peer's EOF.
            let reason = match self.conns[slot as usize].phase {
                Phase::Lingering(reason) => reason,
                _ => CloseReason::Shutdown,
            };
            self.begin_close(slot, reason);
        }
    }
}
