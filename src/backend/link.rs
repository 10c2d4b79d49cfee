//! The handler of one backend connection's session: it writes what waited while connecting,
//! completes the oldest waiter with each reply, watches the oldest request's age with a
//! one-shot timer, stays open through a drain while its core still serves clients, and fails
//! the waiters when the session ends.
//!
//! Invariant: a session acts on its connection only while the connection's generation is the
//! one it was opened with; a connection that was opened again (after a timeout) or lost has
//! moved on, and callbacks of its old session find nothing to do.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringwire_runtime::{Handler, Session, SessionError, TimerId};

use super::pool::{self, Pool, State};
use super::Waiter;
use crate::codec::resp::RespReplies;
use crate::CloseReason;

/// Outbox capacity kept once a connect's backlog is written; more is given back.
const OUTBOX_KEEP: usize = 64 << 10;

/// While the server drains, how often a connection looks whether its core still serves a
/// client: once none is left, and no reply is awaited, it closes.
const DRAIN_RECHECK: Duration = Duration::from_millis(10);

/// The handler of connection `conn` of backend `backend`, generation `gen`.
pub(super) struct Link<W: Waiter> {
    pool: Rc<RefCell<Pool<W>>>,
    backend: usize,
    conn: usize,
    gen: u64,
    /// The session opened: its loss fails waiters as `Closed`, not `Down`.
    opened: bool,
    /// The drain's re-check timer, while one is pending.
    drain_timer: Option<TimerId>,
}

impl<W: Waiter> Link<W> {
    pub(super) fn new(pool: Rc<RefCell<Pool<W>>>, backend: usize, conn: usize, gen: u64) -> Self {
        Link {
            pool,
            backend,
            conn,
            gen,
            opened: false,
            drain_timer: None,
        }
    }

    /// Fails every waiter, and opens the connection again, if the oldest request is older than
    /// the request timeout; else sets the timer for when it will be (or, with none pending,
    /// one timeout from now). Returns whether the connection is still this session's.
    fn check(&mut self, s: &mut Session<'_, RespReplies>) -> bool {
        let mut pool = self.pool.borrow_mut();
        let timeout = pool.cfg.request_timeout;
        let Some(conn) = pool.conn(self.backend, self.conn, self.gen) else {
            return false;
        };
        let Some(timeout) = timeout else {
            return true;
        };
        let now = Instant::now();
        let due = conn
            .pending
            .front()
            .map_or(now + timeout, |p| p.sent + timeout);
        drop(pool);
        if due > now {
            self.watch(s, due - now);
            return true;
        }
        // Replies still to come could not be matched: fail them all, start afresh.
        let failed = Pool::timed_out(&self.pool, s.core(), self.backend, self.conn);
        s.close();
        pool::finish_all(s.core(), failed);
        false
    }

    /// During a drain: closes the session once its core serves no client any more and no
    /// reply is awaited; until then, looks again in [`DRAIN_RECHECK`] (and after each reply).
    /// A client still served may send requests to this connection; closing it would fail
    /// them as `Down`, since a draining core opens no new connection.
    fn drain_step(&mut self, s: &mut Session<'_, RespReplies>) {
        let mut pool = self.pool.borrow_mut();
        let awaited = pool
            .conn(self.backend, self.conn, self.gen)
            .is_some_and(|c| !c.pending.is_empty());
        drop(pool);
        if !awaited && s.core().accepted_sessions() == 0 {
            return s.close();
        }
        if self.drain_timer.is_none() {
            match s.set_timer(DRAIN_RECHECK) {
                Ok(id) => self.drain_timer = Some(id),
                // The drain's deadline still closes the session.
                Err(e) => {
                    log::error!("ringwire: backend connection cannot set its drain timer: {e}")
                }
            }
        }
    }

    /// Sets the timer that checks the oldest request's age, due in `after`.
    fn watch(&self, s: &mut Session<'_, RespReplies>, after: Duration) {
        if s.set_timer(after).is_err() {
            // One timer at a time is far below any `max_timers`; say so if not.
            log::error!("ringwire: backend connection cannot set its request timer");
        }
    }
}

impl<W: Waiter> Handler<RespReplies> for Link<W> {
    fn on_open(&mut self, s: &mut Session<'_, RespReplies>) {
        let mut pool = self.pool.borrow_mut();
        let timeout = pool.cfg.request_timeout;
        let Some(conn) = pool.conn(self.backend, self.conn, self.gen) else {
            drop(pool);
            return s.close();
        };
        self.opened = true;
        conn.state = State::Open(s.handle());
        // The requests that waited for the connect leave now: their clock starts now. The wait
        // for the connect has its own bound, the server's connect timeout.
        let now = Instant::now();
        conn.pending.iter_mut().for_each(|p| p.sent = now);
        pool.mark_up(self.backend);
        drop(pool);
        if let Some(timeout) = timeout {
            // A write that makes no progress counts against the same bound.
            s.set_write_timeout(timeout);
            // Checked before the backlog is written: a request failed as timed out must never
            // reach the backend.
            if !self.check(s) {
                return;
            }
        }
        let mut pool = self.pool.borrow_mut();
        if let Some(conn) = pool.conn(self.backend, self.conn, self.gen) {
            if !conn.outbox.is_empty() {
                s.write(&conn.outbox);
                conn.outbox.clear();
                conn.outbox.shrink_to(OUTBOX_KEEP);
            }
        }
    }

    fn on_message(&mut self, s: &mut Session<'_, RespReplies>, reply: &[u8]) {
        let mut pool = self.pool.borrow_mut();
        let Some(conn) = pool.conn(self.backend, self.conn, self.gen) else {
            return;
        };
        let Some(pending) = conn.pending.pop_front() else {
            let addr = pool.addr(self.backend);
            drop(pool);
            log::warn!("ringwire: backend {addr} sent a reply nobody waits for; reconnecting");
            return s.close();
        };
        let idle = conn.pending.is_empty();
        let nanos = pending.sent.elapsed().as_nanos();
        pool.backends[self.backend]
            .latency
            .saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
        drop(pool);
        pool::finish(s.core(), pending.waiter, Ok(reply));
        if idle && s.is_draining() {
            self.drain_step(s);
        }
    }

    fn on_timer(&mut self, s: &mut Session<'_, RespReplies>, id: TimerId) {
        if self.drain_timer == Some(id) {
            self.drain_timer = None;
            return self.drain_step(s);
        }
        self.check(s);
    }

    fn on_drain(&mut self, s: &mut Session<'_, RespReplies>) {
        // The server stops: this core opens no new connection, so this one stays while a
        // client may still send through it.
        self.drain_step(s);
    }

    fn on_error(&mut self, _: &mut Session<'_, RespReplies>, error: &SessionError) {
        if !matches!(error, SessionError::Connect { .. }) {
            let addr = self.pool.borrow().addr(self.backend);
            log::warn!("ringwire: backend {addr}: {error}");
        }
    }

    fn on_close(&mut self, s: &mut Session<'_, RespReplies>, _: CloseReason) {
        let mut pool = self.pool.borrow_mut();
        if pool.conn(self.backend, self.conn, self.gen).is_none() {
            return; // Opened again already (after a timeout): nothing of this session is left.
        }
        let failed = pool.lost(self.backend, self.conn, self.opened);
        drop(pool);
        pool::finish_all(s.core(), failed);
    }
}
