//! The driver-neutral core of one worker: the session slab, the codec pipeline, handler
//! dispatch and write batching. It reacts to a driver's events ([`Core`]) and answers only by
//! queueing [`Command`]s, which the driver applies after the event (the boundary rule in
//! `crate::driver`). It submits no I/O itself; the only system calls it makes are through
//! `sys`: creating a socket for an outbound connection, and a session's peer address.
//!
//! Sessions of the server's codec and handler types sit inline in the slab; outbound sessions
//! of other protocols sit beside them behind one virtual call per buffer or event (`proto`).
//! Everything that finds a session by its handle goes through `Worker::resolve`.
//!
//! Invariants: at most one send per session is in flight; output produced during a turn is
//! written with one send per session at the end of the turn; a session's slot is freed only
//! when the driver reports it closed; a panic in a callback closes only its session; a session
//! whose output passes the high-water mark is not read from until it drains to the low mark.

use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::codec::{Codec, FrameReader};
use crate::core_ctx::CoreCtx;
use crate::driver::{Command, Driver};
use crate::error::{panic_message, SessionError};
use crate::handler::Handler;
use crate::latency::{LatencyHandle, Recorder};
use crate::mailbox::{Inbox, Outbox};
use crate::pool::BufPool;
use crate::route::{self, Liveness, Msg, Router};
use crate::session::{CloseAsk, CloseReason, Parts, Read, SessionState, Timeouts};
use crate::stats::CoreStats;
use crate::sys;
use crate::timer::{Clock, Micros, Timers};

mod deadline;
mod events;
mod lifecycle;
mod open;
mod proto;
mod tls;

pub(crate) use deadline::{Control, CoreTick};
pub(crate) use proto::{ErasedProto, Typed};
use proto::{Event, Limits, Proto};

/// Where a session is in its life, as the core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Receiving and sending.
    Open,
    /// No more input will be handled (the peer sent EOF, or the handler closed): write what is
    /// pending, then close with the reason.
    Flushing(CloseReason),
    /// Output is written and our side is shut down (FIN sent); input is read and dropped until
    /// the peer's EOF or the linger deadline, then the session closes with the reason. Closing
    /// while the peer still sends would reset the connection and could destroy the last reply
    /// (an error response) before the peer reads it.
    Lingering(CloseReason),
    /// Handed to the driver to close; waiting for it to report the slot closed.
    Closing,
    /// A TLS session doing its handshake; no callback has run yet. `on_open` runs when it is
    /// done.
    Handshaking,
    /// An outbound session whose connect is in flight; no callback has run yet.
    Connecting,
}

struct Conn<C, H> {
    proto: Proto<C, H>,
    reader: FrameReader,
    state: SessionState,
    phase: Phase,
    /// Listed in `dirty` for a send at the end of this turn.
    dirty: bool,
    /// Timer bookkeeping: timestamps of the turns that did things, compared lazily.
    seq: u64,
    last_rx: Micros,
    frame_started: Micros,
    write_progress: Micros,
    next_tick: Micros,
    /// Deadline of the session's current timer entry (`Micros::MAX`: none).
    timer_at: Micros,
    had_tail: bool,
    had_output: bool,
    /// End of lingering, when `Lingering`.
    linger_until: Micros,
    /// Opened during a drain: `on_drain` is still to run, after the first input.
    drain_due: bool,
    /// Listed in `idle_watch`.
    idle_watched: bool,
}

impl<C: Codec, H: Handler<C>> Conn<C, H> {
    /// Open, with nothing half-received, held or pending: as far as the core knows, the peer
    /// is waiting for nothing.
    fn is_idle(&self) -> bool {
        // `at_boundary` is user code: a panic there means "not at a boundary" (the drain's
        // deadline then closes the session), never the core's death.
        self.phase == Phase::Open
            && self.state.out.outstanding() == 0
            && catch_unwind(AssertUnwindSafe(|| self.proto.at_boundary())).unwrap_or(false)
            && self.state.out.is_empty()
            && !self.has_tail()
            && self.reader.held() == 0
    }

    /// Part of a frame has arrived and waits for the rest: in the frame reader, or, on a TLS
    /// session, as part of a record rustls holds undecrypted.
    fn has_tail(&self) -> bool {
        self.reader.buffered() > 0 || self.state.tls_partial
    }
}

/// Per-core settings of the core, from the server's configuration.
pub(crate) struct WorkerConfig {
    pub(crate) core: usize,
    pub(crate) max_sessions: usize,
    pub(crate) max_frame: usize,
    /// The bound on frames of sessions opened by a connect.
    pub(crate) outbound_max_frame: usize,
    pub(crate) timeouts: Timeouts,
    pub(crate) high_water: usize,
    pub(crate) low_water: usize,
    pub(crate) max_output: usize,
    /// One-shot timers a session may have pending.
    pub(crate) max_timers: usize,
    pub(crate) max_replies: usize,
    pub(crate) core_tick: Option<CoreTick>,
    /// TCP_NODELAY on outbound sockets.
    pub(crate) nodelay: bool,
    /// How long an outbound session may take to connect (`None`: as long as the kernel tries).
    pub(crate) connect_timeout: Option<Micros>,
    /// Outbound connections to open when the worker starts: target and count.
    pub(crate) connect: Option<(crate::target::Target, usize)>,
    /// How long a session closed from our side lingers for the peer's EOF (`None`: closes at
    /// once).
    pub(crate) linger: Option<Micros>,
    /// Where to publish handling-time and turn-time histograms, if recording.
    pub(crate) latency: Option<CoreLatency>,
    /// Accepted sessions speak TLS with this configuration.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The sessions a client opens at start speak TLS so.
    pub(crate) tls_connect: Option<crate::tls::TlsConnect>,
    /// How long a TLS handshake may take (`None`: no bound).
    pub(crate) handshake_timeout: Option<Micros>,
    /// Hand accepted TLS sessions to the kernel after their handshake (`Config::kernel_tls`,
    /// and the kernel, driver and configuration allow it).
    pub(crate) kernel_tls: bool,
}

/// Latency histograms of one core, readable from any thread.
#[derive(Clone, Debug, Default)]
pub struct CoreLatency {
    /// Time from a frame decoded to its handler returning (its replies encoded), per frame.
    pub handling: LatencyHandle,
    /// Time from the kernel returning completions to the turn's sends submitted, per turn.
    pub turn: LatencyHandle,
}

/// Most remote tasks a core runs in one turn.
const INBOX_BUDGET: usize = 256;

/// How soon a core whose ring to another core was full tries again.
const BACKLOG_RETRY: Duration = Duration::from_micros(50);

/// How often a core publishes its latency histograms.
const LATENCY_PUBLISH: Duration = Duration::from_millis(50);

/// The core's recorders, when recording.
struct Recorders {
    handling: Recorder,
    turn: Recorder,
    turn_began: Instant,
}

pub(crate) struct Worker<C, H, F> {
    cfg: WorkerConfig,
    conns: Slab<Conn<C, H>>,
    codec: C,
    factory: Arc<F>,
    pool: BufPool,
    dirty: Vec<u32>,
    stats: Arc<CoreStats>,
    control: Arc<Control>,
    /// The slots of the live sessions opened by `CoreCtx::connect`, by id: their first handle
    /// was given out before they had a slot (see `resolve`).
    placed: HashMap<u64, u32>,
    clock: Clock,
    /// The current turn's time.
    now: Micros,
    timers: Timers,
    next_core_tick: Micros,
    /// Draining for shutdown until this deadline.
    drain_until: Option<Micros>,
    /// Every session was closed at the drain deadline; new ones are refused.
    closed_all: bool,
    /// Outbound connections requested by handlers (or the client's start), opened at turn end.
    connects: Vec<crate::target::Target>,
    recorders: Option<Recorders>,
    /// Commands for the driver, queued by the current event; reused, never shrunk.
    cmds: Vec<Command>,
    /// Sessions asked to close once idle ([`Session::close_when_idle`]), checked at turn end.
    idle_watch: Vec<u32>,
    /// Scratch list of the sessions `close_idle` closes.
    closing: Vec<u32>,
    /// The worker's index and the user's per-core state, for the factory and every callback.
    ctx: CoreCtx,
    /// Sessions a completed reply let read again, resumed at the end of the turn.
    resumes: Vec<u32>,
    /// This core's mailbox (what other cores and threads send it, and its way to the other
    /// cores), its server's doorbells and its table of live slots; `None` in unit tests.
    mail: Option<Mail>,
    /// Scratch list of the messages being applied from the inbox.
    mail_in: Vec<Msg>,
    /// Scratch list of the messages this core's callbacks sent it, being applied.
    mail_here: Vec<Msg>,
    /// `apply_here` runs (a nested call leaves the new messages to it, in order).
    applying_here: bool,
    /// Messages for another server's cores wait for room (`route::send_parked`).
    parked: bool,
    /// Scratch list of the messages for other cores, moved into the outbox at turn end.
    mail_out: Vec<(usize, Msg)>,
    /// TLS sessions to hand to the kernel once nothing is split between rustls and it.
    kernel_wait: Vec<(u32, crate::session::SessionId)>,
}

/// A core's ends of its server's mesh.
pub(crate) struct Mail {
    pub(crate) inbox: Inbox<Msg>,
    pub(crate) outbox: Outbox<Msg>,
    pub(crate) router: Arc<Router>,
    pub(crate) live: Arc<Liveness>,
    /// Marks this thread as the core for `route::deliver` while the worker lives.
    pub(crate) _entered: route::Entered,
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
    F: Fn(&mut CoreCtx) -> H,
{
    pub(crate) fn new(
        cfg: WorkerConfig,
        codec: C,
        factory: Arc<F>,
        stats: Arc<CoreStats>,
        control: Arc<Control>,
        mut ctx: CoreCtx,
    ) -> Self {
        let clock = Clock::new();
        let recorders = cfg.latency.as_ref().map(|l| Recorders {
            handling: l.handling.recorder(LATENCY_PUBLISH),
            turn: l.turn.recorder(LATENCY_PUBLISH),
            turn_began: Instant::now(),
        });
        let next_core_tick = cfg.core_tick.as_ref().map_or(Micros::MAX, |t| t.period);
        ctx.outbound.max_sessions = cfg.max_sessions;
        ctx.outbound.nodelay = cfg.nodelay;
        Worker {
            // Never grows past this: the slab's storage does not move.
            conns: Slab::with_capacity(cfg.max_sessions),
            dirty: Vec::with_capacity(cfg.max_sessions.min(65536)),
            timers: Timers::with_capacity(cfg.max_sessions.min(65536)),
            cfg,
            codec,
            factory,
            pool: BufPool::default(),
            stats,
            control,
            placed: HashMap::new(),
            clock,
            now: 0,
            next_core_tick,
            drain_until: None,
            closed_all: false,
            connects: Vec::new(),
            recorders,
            cmds: Vec::with_capacity(64),
            idle_watch: Vec::new(),
            closing: Vec::new(),
            ctx,
            resumes: Vec::new(),
            mail: None,
            mail_in: Vec::new(),
            mail_here: Vec::new(),
            applying_here: false,
            parked: false,
            mail_out: Vec::new(),
            kernel_wait: Vec::new(),
        }
    }

    /// Runs turns until the server stops and every session is closed.
    pub(crate) fn run<D: Driver>(&mut self, driver: &mut D) -> io::Result<()> {
        if let Some((target, n)) = &self.cfg.connect {
            self.connects
                .extend(std::iter::repeat_n(target.clone(), *n));
        }
        self.end_turn();
        driver.apply(&mut self.cmds);
        self.flush_mail(driver);
        loop {
            let mut timeout = self.wait_bound();
            if let Some(mail) = &self.mail {
                if mail.outbox.is_backlogged() || self.parked {
                    // A target's ring was full: try again soon (no wake-up says it has room).
                    timeout = Some(timeout.map_or(BACKLOG_RETRY, |t| t.min(BACKLOG_RETRY)));
                }
                // Announce the sleep before the wait; something already waiting: no sleep.
                if !mail.inbox.prepare_sleep() {
                    timeout = Some(Duration::ZERO);
                }
            }
            if route::has_queued() {
                // Messages produced after the last flush (by drops, or beyond a batch's bound)
                // go out in the next turn: it must not sleep. (Messages parked for another
                // server's full queue wait `BACKLOG_RETRY` instead: no spinning.)
                timeout = Some(Duration::ZERO);
            }
            driver.turn(timeout, self)?;
            if let Some(mail) = &self.mail {
                mail.inbox.woke();
            }
            // What other cores and threads sent, at the top of the turn's own work: its output
            // leaves with the turn's sends.
            self.drain_inbox();
            self.fire_timers();
            if driver.settled() {
                self.close_idle();
                if !driver.reads_between_turns() {
                    // No input is on its way from a socket to this core: none is ciphertext
                    // that the kernel would not see.
                    self.hand_over_to_kernel();
                }
            }
            self.end_turn();
            driver.apply(&mut self.cmds);
            self.flush_mail(driver);
            if let Some(r) = &mut self.recorders {
                let now = Instant::now();
                r.turn.record_duration(now - r.turn_began);
                r.turn.maybe_publish(now);
                r.handling.maybe_publish(now);
            }
            if self.drain_until.is_some() && self.conns.is_empty() && driver.is_quiescent() {
                return Ok(());
            }
        }
    }

    /// Gives the core its mailbox.
    pub(crate) fn set_mail(&mut self, mail: Mail) {
        self.mail = Some(mail);
    }

    /// Applies what other cores and threads sent, at most `INBOX_BUDGET` messages a turn
    /// (more waiting keeps the next wait from blocking).
    fn drain_inbox(&mut self) {
        let Some(mail) = self.mail.as_mut() else {
            return;
        };
        let mut batch = std::mem::take(&mut self.mail_in);
        let n = mail.inbox.drain(INBOX_BUDGET, |_, msg| batch.push(msg));
        if n == 0 {
            self.mail_in = batch;
            return;
        }
        self.stats.mail_in.add(n as u64);
        for msg in batch.drain(..) {
            self.apply_msg(msg);
        }
        self.mail_in = batch;
    }

    /// Sends what this turn's callbacks sent to other cores: one batch per target, and a
    /// doorbell for each target that announced it sleeps. A message for a core that has
    /// stopped is dropped here (with whatever it holds: a reply inside it closes its session).
    fn flush_mail<D: Driver>(&mut self, driver: &mut D) {
        let Some(mail) = self.mail.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut self.mail_out);
        route::take_out(&mut out);
        let mut dead = Vec::new();
        if !out.is_empty() {
            self.stats.mail_out.add(out.len() as u64);
            for (target, msg) in out.drain(..) {
                if let Err(e) = mail.outbox.push(target, msg) {
                    dead.push(e.into_inner());
                }
            }
        }
        let (router, stats) = (&mail.router, &self.stats);
        mail.outbox.flush(|target| {
            if !driver.doorbell(target) {
                stats.eventfd_bells.add(1);
                router.ring_eventfd(target);
            }
        });
        self.mail_out = out;
        // Dropped last, outside the loop: dropping may send more (to the next turn).
        drop(dead);
        self.parked = route::send_parked(false);
    }

    /// The core has stopped serving (its sessions are gone): closes its inbox (later sends
    /// fail; what waited is dropped, and a reply inside tells its own core), drops the
    /// per-core state, then sends what is left for other cores the way threads that are not
    /// cores do, waiting for room: a reply of another core's session dropped here still closes
    /// that session at once rather than leave it waiting.
    pub(crate) fn finish_mail(&mut self) {
        let Some(mail) = self.mail.take() else {
            return;
        };
        let Mail {
            inbox,
            mut outbox,
            router,
            live: _,
            _entered,
        } = mail;
        let mut left = Vec::new();
        inbox.close(|_, msg| left.push(msg));
        drop(left);
        self.ctx.drop_state();
        let mut unsent = Vec::new();
        outbox.take_unsent(|target, msg| unsent.push((target, msg)));
        for (target, msg) in unsent {
            // Fails only for a core that has stopped too.
            let _ = router.send_off_core(target, msg);
        }
        route::flush_on_exit(&router);
        drop(_entered);
    }

    /// End of a turn: open requested connections, then one send per session with output and
    /// no send in flight. (Before it, `run` closes the idle sessions once the driver has
    /// reported everything the kernel had.)
    pub(crate) fn end_turn(&mut self) {
        // Connects asked for outside a callback first: messages to their handles then find
        // them.
        self.open_pending();
        self.settle_replies();
        self.open_pending();
        if !self.connects.is_empty() {
            let mut connects = std::mem::take(&mut self.connects);
            for target in connects.drain(..) {
                self.connect(target);
            }
            if self.connects.is_empty() {
                self.connects = connects; // Keep the capacity.
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            conn.dirty = false;
            if matches!(conn.phase, Phase::Closing | Phase::Connecting) {
                continue;
            }
            if let Some(tls) = conn.state.tls.as_mut() {
                // This turn's plaintext, sealed into records as one batch.
                if let Err(e) = tls.seal(&mut conn.state.out, &mut self.pool) {
                    self.stats.tls_errors.add(1);
                    let error = SessionError::Tls {
                        session: conn.state.id,
                        error: rustls::Error::General(format!("sealing failed: {e}")),
                    };
                    self.fail(slot, error, CloseReason::TlsError);
                    continue;
                }
            }
            let Some(send) = conn.state.out.take_send() else {
                // In flight already, or nothing unsent. (A TLS session that dropped what it
                // could not seal may have nothing left: it finishes closing.)
                self.maybe_finish_flush(slot);
                continue;
            };
            self.stats.writes.add(1);
            self.cmds.push(Command::Send { slot, send });
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Runs a session's callback for `event`, catching a panic, then applies what the callback
    /// did (output to write, a close request). Returns `false` if the callback panicked.
    fn dispatch(&mut self, slot: u32, event: Event<'_>) -> bool {
        match self.call(slot, event) {
            None => true,
            Some(Ok(())) => {
                self.after_callback(slot);
                true
            }
            Some(Err(payload)) => {
                self.panicked(slot, event.callback(), payload);
                false
            }
        }
    }

    /// Runs a session's callback for `event`, catching a panic; then opens the outbound
    /// sessions it asked for. `None` if the slot is empty.
    fn call(&mut self, slot: u32, event: Event<'_>) -> Option<std::thread::Result<()>> {
        let conn = self.conns.get_mut(slot as usize)?;
        let parts = Parts {
            state: &mut conn.state,
            pool: &mut self.pool,
            stats: &self.stats,
            connects: &mut self.connects,
            core: &mut self.ctx,
            now: self.now,
        };
        let proto = &mut conn.proto;
        let result = catch_unwind(AssertUnwindSafe(|| proto.event(event, parts)));
        self.open_pending();
        Some(result)
    }

    /// Decodes a session's input and hands each frame to `on_message` (see `proto::feed`):
    /// `data` just received, or (`None`) the input held while reading was paused.
    fn decode(&mut self, slot: u32, data: Option<&[u8]>) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        let limits = Limits {
            max_frame: if conn.state.outbound {
                self.cfg.outbound_max_frame
            } else {
                self.cfg.max_frame
            },
            high_water: self.cfg.high_water,
            max_output: self.cfg.max_output,
        };
        let parts = Parts {
            state: &mut conn.state,
            pool: &mut self.pool,
            stats: &self.stats,
            connects: &mut self.connects,
            core: &mut self.ctx,
            now: self.now,
        };
        let handling = self.recorders.as_mut().map(|r| &mut r.handling);
        let (proto, reader) = (&mut conn.proto, &mut conn.reader);
        let result = catch_unwind(AssertUnwindSafe(|| {
            proto.feed(reader, parts, data, limits, handling)
        }));
        self.open_pending();
        match result {
            Ok(Ok(fed)) => {
                self.stats.frames_in.add(fed.frames as u64);
                if fed.copied > 0 {
                    self.stats.tail_copies.add(1);
                    self.stats.tail_bytes.add(fed.copied as u64);
                }
                if fed.frames > 0 {
                    // Frames completed: an incomplete one left behind is a new frame, whose
                    // read timeout starts now.
                    let conn = &mut self.conns[slot as usize];
                    if conn.has_tail() {
                        conn.frame_started = self.now;
                    }
                }
                self.after_callback(slot);
            }
            Ok(Err(error)) => {
                self.stats.codec_errors.add(1);
                let session = self.conns[slot as usize].state.id;
                self.reject_input(slot, SessionError::Codec { session, error });
            }
            Err(payload) => self.panicked(slot, "on_message", payload),
        }
    }

    /// Drops every session left (after an abnormal stop, so without `on_close`), each under
    /// `catch_unwind`: a handler's `Drop` is user code. Returns how many panicked.
    pub(crate) fn drop_sessions(&mut self) -> u64 {
        let mut panics = 0;
        for conn in self.conns.drain() {
            if catch_unwind(AssertUnwindSafe(move || drop(conn))).is_err() {
                panics += 1;
            }
        }
        for pending in self.ctx.outbound.pending.drain(..) {
            if catch_unwind(AssertUnwindSafe(move || drop(pending))).is_err() {
                panics += 1;
            }
        }
        panics
    }
}

#[cfg(test)]
mod connect_tests;
#[cfg(test)]
pub(crate) mod tests;
