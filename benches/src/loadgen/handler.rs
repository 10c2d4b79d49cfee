//! The load generator's connection handler: sends on a closed-loop or open-loop schedule,
//! checks every echoed byte, and records each message's latency.
//!
//! Each client core keeps one [`Core`] (histograms and counters) in a thread local that its
//! handlers share through an `Rc`: recording is a plain store on the core's own memory, with
//! no lock and no allocation. A core hands what it holds to the run ([`Shared`]) whenever one
//! of its sessions closes; the run stops the client before it reads the totals, which closes
//! every session, so by then everything has been handed over.
//!
//! Invariants: a connection's in-flight queue holds one [`Stamp`] per message sent and not yet
//! echoed, in sending order (the echo comes back in the same order); nothing is counted or
//! recorded outside the measured window.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringwire::codec::Codec;
use ringwire::report::{LatencyHandle, Recorder};
use ringwire::{CloseReason, Handler, Session, SessionError};

use super::wire::Pattern;

/// When messages are sent.
#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// Closed loop: keep `depth` messages in flight per connection; each echo sends the next.
    Closed {
        /// Messages in flight per connection.
        depth: usize,
    },
    /// Open loop: connection `c` of `n` sends message `k` at `(k + c / n) * interval` after the
    /// start, whatever the server does. Its latency counts from that intended time, so a
    /// stalled server cannot hide the messages it delayed (coordinated omission corrected).
    Open {
        /// Nanoseconds between two messages of one connection.
        interval_ns: f64,
        /// How often each connection wakes up to send what has come due.
        tick: Duration,
    },
}

/// The run's fixed parameters, read by every handler.
pub struct Plan {
    /// Time zero of the run; every time below is nanoseconds after it.
    pub base: Instant,
    /// End of the warm-up: the measured window starts here.
    pub warm_end: u64,
    /// End of the measured window; no message is sent after it.
    pub end: u64,
    pub schedule: Schedule,
    /// Connections in all (open loop: they share the schedule's phases).
    pub connections: u64,
    pub pattern: Pattern,
}

impl Plan {
    fn in_window(&self, t: u64) -> bool {
        t >= self.warm_end && t < self.end
    }
}

/// Totals over every core, added to as cores hand over their counts.
#[derive(Debug, Default)]
pub struct Totals {
    /// Messages echoed within the measured window.
    pub msgs: AtomicU64,
    /// Echoed messages whose bytes differ from what was sent.
    pub mismatches: AtomicU64,
    /// Echoed bytes with no message in flight to match.
    pub unexpected: AtomicU64,
    /// Sessions closed before the run ended (by the server, or by an error).
    pub early_closes: AtomicU64,
    /// Connections that never opened.
    pub connect_errors: AtomicU64,
    /// Open loop: messages of the window still unanswered when the run stopped.
    pub unanswered: AtomicU64,
    /// Sessions opened.
    pub opened: AtomicU64,
    /// Sessions closed, for any reason.
    pub closed: AtomicU64,
}

/// What the cores share with the run's main thread.
pub struct Shared {
    pub plan: Plan,
    /// Latency from each message's intended send time to its echo.
    pub latency: LatencyHandle,
    /// Open loop: latency from the actual send to the echo (without the sender's lag).
    pub service: LatencyHandle,
    /// Open loop: how late each message was sent after its intended time.
    pub lag: LatencyHandle,
    pub totals: Totals,
    /// The run is stopping the client: closes from now on are not errors.
    pub stopping: AtomicBool,
    next_conn: AtomicU64,
    logged: AtomicU64,
}

/// Error lines printed at most; the counts carry on.
const LOG_LIMIT: u64 = 5;

impl Shared {
    pub fn new(plan: Plan) -> Shared {
        Shared {
            plan,
            latency: LatencyHandle::new(),
            service: LatencyHandle::new(),
            lag: LatencyHandle::new(),
            totals: Totals::default(),
            stopping: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            logged: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the start of the run.
    #[inline]
    pub fn now(&self) -> u64 {
        self.plan.base.elapsed().as_nanos() as u64
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.logged.fetch_add(1, Relaxed) < LOG_LIMIT {
            eprintln!("loadgen: {what}");
        }
    }
}

/// Per-core counts, handed over to [`Totals`] now and then.
#[derive(Default)]
struct Counts {
    msgs: u64,
    mismatches: u64,
    unexpected: u64,
    unanswered: u64,
}

/// What the handlers of one client core record into.
pub struct Core {
    latency: Recorder,
    service: Recorder,
    lag: Recorder,
    counts: Counts,
}

/// Recorders publish only when a core hands over, never on a timer.
const NEVER: Duration = Duration::from_secs(1 << 30);

impl Core {
    pub fn new(shared: &Shared) -> Core {
        Core {
            latency: shared.latency.recorder(NEVER),
            service: shared.service.recorder(NEVER),
            lag: shared.lag.recorder(NEVER),
            counts: Counts::default(),
        }
    }

    /// Adds what this core holds into the run's totals and histograms, and starts afresh.
    fn hand_over(&mut self, shared: &Shared) {
        self.latency.publish();
        self.service.publish();
        self.lag.publish();
        let c = std::mem::take(&mut self.counts);
        let t = &shared.totals;
        t.msgs.fetch_add(c.msgs, Relaxed);
        t.mismatches.fetch_add(c.mismatches, Relaxed);
        t.unexpected.fetch_add(c.unexpected, Relaxed);
        t.unanswered.fetch_add(c.unanswered, Relaxed);
    }
}

/// When one message was meant to go and when it went, in nanoseconds after the run's start.
#[derive(Clone, Copy, Debug)]
struct Stamp {
    intended: u64,
    sent: u64,
}

/// One connection of the load generator.
pub struct Load {
    shared: Arc<Shared>,
    /// This connection's number, which its payloads derive from.
    conn: u64,
    /// Messages sent (the sequence number of the next one).
    sent: u64,
    /// Messages echoed (the sequence number of the next echo).
    received: u64,
    in_flight: VecDeque<Stamp>,
    /// Open loop: this connection's offset into the schedule, in intervals (0..1).
    phase: f64,
    opened: bool,
}

impl Load {
    /// A handler for the next connection; called by the client's factory on its core.
    pub fn new(shared: &Arc<Shared>) -> Load {
        let conn = shared.next_conn.fetch_add(1, Relaxed);
        let plan = &shared.plan;
        let capacity = match plan.schedule {
            Schedule::Closed { depth } => depth,
            // Room for 100 ms of this connection's schedule (at least 64); a server that falls
            // further behind makes it grow, which is then the least of its problems.
            Schedule::Open { interval_ns, .. } => ((1e8 / interval_ns) as usize).clamp(64, 1 << 16),
        };
        Load {
            shared: shared.clone(),
            conn,
            sent: 0,
            received: 0,
            in_flight: VecDeque::with_capacity(capacity),
            phase: conn as f64 / plan.connections.max(1) as f64,
            opened: false,
        }
    }

    /// Open loop: the intended send time of message `seq`.
    fn intended(&self, seq: u64, interval_ns: f64) -> u64 {
        ((seq as f64 + self.phase) * interval_ns) as u64
    }

    fn send<C>(&mut self, session: &mut Session<'_, C>, stamp: Stamp)
    where
        C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]>,
    {
        let payload = self.shared.plan.pattern.payload(self.conn, self.sent);
        if let Err(e) = session.send(payload) {
            self.shared
                .log(format_args!("connection {}: cannot encode: {e}", self.conn));
            session.close();
            return;
        }
        self.sent += 1;
        self.in_flight.push_back(stamp);
    }

    /// Open loop: sends every message whose intended time has come; stops the tick once the
    /// schedule has passed the end of the window.
    fn send_due<C>(&mut self, session: &mut Session<'_, C>, interval_ns: f64)
    where
        C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]>,
    {
        let now = self.shared.now();
        let end = self.shared.plan.end;
        loop {
            let at = self.intended(self.sent, interval_ns);
            if at >= end {
                session.set_tick(None);
                return;
            }
            if at > now || session.is_closing() {
                return;
            }
            if self.shared.plan.in_window(at) {
                session.core().state::<Core>().lag.record(now - at);
            }
            self.send(
                session,
                Stamp {
                    intended: at,
                    sent: now,
                },
            );
        }
    }
}

impl<C> Handler<C> for Load
where
    C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]>,
{
    fn on_open(&mut self, session: &mut Session<'_, C>) {
        self.opened = true;
        self.shared.totals.opened.fetch_add(1, Relaxed);
        match self.shared.plan.schedule {
            Schedule::Closed { depth } => {
                let now = self.shared.now();
                for _ in 0..depth {
                    self.send(
                        session,
                        Stamp {
                            intended: now,
                            sent: now,
                        },
                    );
                }
            }
            Schedule::Open { interval_ns, tick } => {
                session.set_tick(Some(tick));
                self.send_due(session, interval_ns);
            }
        }
    }

    fn on_tick(&mut self, session: &mut Session<'_, C>) {
        if let Schedule::Open { interval_ns, .. } = self.shared.plan.schedule {
            self.send_due(session, interval_ns);
        }
    }

    #[inline]
    fn on_message(&mut self, session: &mut Session<'_, C>, frame: &[u8]) {
        let now = self.shared.now();
        let plan = &self.shared.plan;
        let core = session.core().state::<Core>();
        let Some(stamp) = self.in_flight.pop_front() else {
            core.counts.unexpected += 1;
            return;
        };
        let seq = self.received;
        self.received += 1;
        if frame != plan.pattern.payload(self.conn, seq) {
            core.counts.mismatches += 1;
        }
        match plan.schedule {
            Schedule::Closed { .. } => {
                if plan.in_window(now) {
                    core.counts.msgs += 1;
                    core.latency.record(now - stamp.intended);
                }
                if now < plan.end && !session.is_closing() {
                    self.send(
                        session,
                        Stamp {
                            intended: now,
                            sent: now,
                        },
                    );
                }
            }
            Schedule::Open { .. } => {
                if plan.in_window(stamp.intended) {
                    core.counts.msgs += 1;
                    core.latency.record(now.saturating_sub(stamp.intended));
                    core.service.record(now.saturating_sub(stamp.sent));
                }
            }
        }
    }

    fn on_error(&mut self, _session: &mut Session<'_, C>, error: &SessionError) {
        if !self.shared.stopping.load(Relaxed) {
            self.shared
                .log(format_args!("connection {}: {error}", self.conn));
        }
    }

    fn on_close(&mut self, session: &mut Session<'_, C>, reason: CloseReason) {
        let shared = &self.shared;
        let totals = &shared.totals;
        if !shared.stopping.load(Relaxed) {
            if self.opened {
                totals.early_closes.fetch_add(1, Relaxed);
                shared.log(format_args!(
                    "connection {} closed before the end of the run: {reason:?}",
                    self.conn
                ));
            } else {
                totals.connect_errors.fetch_add(1, Relaxed);
            }
        }
        let core = session.core().state::<Core>();
        if let Schedule::Open { .. } = shared.plan.schedule {
            // Unanswered messages of the window were late by at least the time until now.
            let now = shared.now();
            for stamp in self.in_flight.drain(..) {
                if shared.plan.in_window(stamp.intended) {
                    core.counts.unanswered += 1;
                    core.latency.record(now.saturating_sub(stamp.intended));
                }
            }
        }
        core.hand_over(shared);
        totals.closed.fetch_add(1, Relaxed);
    }
}
