//! The pool's state: backends, their connections and each connection's queue of waiters.
//!
//! Invariant: a waiter is in exactly one queue until it is taken out to be completed, and it is
//! completed only after every borrow of the pool is released (completing it runs user code,
//! which may send again). Functions here that take waiters out return them; the caller drops
//! its borrow, then calls [`finish`] or [`finish_all`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use ringwire_runtime::{ConnectError, CoreCtx, SessionHandle};

use super::link::Link;
use super::{BackendError, BackendStats, PoolConfig, Waiter};
use crate::codec::resp::RespReplies;

/// Waiters taken out of the pool, each with what completes it.
pub(super) type Failed<W> = Vec<(W, BackendError)>;

/// Completes `waiter`, catching a panic (logged): the other waiters are completed regardless.
pub(super) fn finish<W: Waiter>(ctx: &mut CoreCtx, waiter: W, reply: Result<&[u8], BackendError>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| waiter.done(ctx, reply))) {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        log::error!("ringwire: a backend waiter panicked in done: {message}");
    }
}

/// Completes every waiter of `failed` with its error.
pub(super) fn finish_all<W: Waiter>(ctx: &mut CoreCtx, failed: Failed<W>) {
    for (waiter, error) in failed {
        finish(ctx, waiter, Err(error));
    }
}

/// A request waiting for its reply.
pub(super) struct Pending<W> {
    pub(super) waiter: W,
    pub(super) sent: Instant,
}

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// No session: never opened, or failed (its backend's back-off decides when to retry).
    Idle,
    /// Its session is connecting: requests wait in the connection's outbox.
    Connecting,
    /// Its session is open: requests are written to it.
    Open(SessionHandle),
}

/// One connection to a backend.
pub(super) struct Conn<W> {
    pub(super) state: State,
    /// Bumped at every connect: the session of an older one is no longer this connection's,
    /// and its callbacks find nothing.
    pub(super) gen: u64,
    /// Connected (or tried to) before: the next connect is a reconnect.
    tried: bool,
    /// Waiters in the order their requests were written.
    pub(super) pending: VecDeque<Pending<W>>,
    /// Requests sent while connecting, written once open.
    pub(super) outbox: Vec<u8>,
}

impl<W> Conn<W> {
    /// Takes every waiter out, to be failed with `error`; the connection forgets its outbox.
    fn fail(&mut self, error: BackendError, into: &mut Failed<W>) {
        into.extend(self.pending.drain(..).map(|p| (p.waiter, error)));
        self.outbox.clear();
    }
}

/// Whether a backend takes requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Up,
    /// Requests fail at once until then.
    Down {
        until: Instant,
    },
}

/// One backend address and its connections on this core.
pub(super) struct Backend<W> {
    addr: SocketAddr,
    pub(super) conns: Vec<Conn<W>>,
    /// Where the search for the least loaded connection starts (round robin among equals).
    next: usize,
    health: Health,
    /// The back-off after the next failure.
    backoff: Duration,
    requests: u64,
    pub(super) errors: u64,
    reconnects: u64,
    pub(super) latency: Histogram<u64>,
}

impl<W> Backend<W> {
    /// The connection to use next: the first with the fewest pending, from the cursor on.
    fn pick(&mut self) -> usize {
        let n = self.conns.len();
        let start = self.next % n;
        let best = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.conns[i].pending.len())
            .unwrap_or(0);
        self.next = best + 1;
        best
    }
}

/// Every backend of the pool, on one core.
pub(super) struct Pool<W> {
    pub(super) cfg: PoolConfig,
    pub(super) backends: Vec<Backend<W>>,
    /// State of the back-off jitter's generator (xorshift).
    rng: u64,
}

/// Highest latency recorded (longer ones count as this): 100 s, in nanoseconds.
const LATENCY_MAX: u64 = 100_000_000_000;

impl<W: Waiter> Pool<W> {
    pub(super) fn new(addrs: Vec<SocketAddr>, cfg: PoolConfig) -> Self {
        let conns = cfg.conns_per_backend.max(1);
        let backends = addrs
            .into_iter()
            .map(|addr| Backend {
                addr,
                conns: (0..conns)
                    .map(|_| Conn {
                        state: State::Idle,
                        gen: 0,
                        tried: false,
                        pending: VecDeque::new(),
                        outbox: Vec::new(),
                    })
                    .collect(),
                next: 0,
                health: Health::Up,
                backoff: cfg.backoff_min,
                requests: 0,
                errors: 0,
                reconnects: 0,
                latency: Histogram::new_with_bounds(1, LATENCY_MAX, 2)
                    .expect("constant histogram bounds are valid"),
            })
            .collect();
        // Seeded apart per pool, so that cores and processes draw different back-offs.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (std::ptr::addr_of!(cfg) as u64).rotate_left(32);
        Pool {
            cfg,
            backends,
            rng: seed | 1,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.backends.len()
    }

    pub(super) fn addr(&self, backend: usize) -> SocketAddr {
        self.backends[backend].addr
    }

    /// The connection `gen` named, if it is still that one.
    pub(super) fn conn(&mut self, backend: usize, conn: usize, gen: u64) -> Option<&mut Conn<W>> {
        let conn = self.backends.get_mut(backend)?.conns.get_mut(conn)?;
        (conn.gen == gen).then_some(conn)
    }

    /// Queues `request` with `waiter` on a connection of `backend`, or gives them back with
    /// why not.
    pub(super) fn enqueue(
        shared: &Rc<RefCell<Self>>,
        ctx: &mut CoreCtx,
        backend: usize,
        request: &[u8],
        waiter: W,
        now: Instant,
    ) -> Option<(W, BackendError)> {
        let mut pool = shared.borrow_mut();
        let max_pending = pool.cfg.max_pending;
        let b = &mut pool.backends[backend];
        let addr = b.addr;
        if let Health::Down { until } = b.health {
            if now < until {
                b.errors += 1;
                return Some((waiter, BackendError::Down { addr }));
            }
            // The back-off is over: the connect below is the retry.
            b.health = Health::Up;
        }
        let i = b.pick();
        if b.conns[i].state == State::Idle && !pool.open(shared, ctx, backend, i, now) {
            pool.backends[backend].errors += 1;
            return Some((waiter, BackendError::Down { addr }));
        }
        let b = &mut pool.backends[backend];
        let conn = &mut b.conns[i];
        if conn.pending.len() >= max_pending {
            b.errors += 1;
            return Some((waiter, BackendError::Busy { addr }));
        }
        match conn.state {
            State::Open(session) => {
                if ctx.write_to(session, request).is_err() {
                    // Its session has gone and its `on_close` is on the way: it fails the rest.
                    b.errors += 1;
                    return Some((waiter, BackendError::Closed { addr }));
                }
            }
            State::Connecting => conn.outbox.extend_from_slice(request),
            State::Idle => unreachable!("a connection is opened before it takes requests"),
        }
        conn.pending.push_back(Pending { waiter, sent: now });
        b.requests += 1;
        None
    }

    /// Opens connection `conn` of `backend` (which has no session): `false`, with the backend
    /// marked down, if the core cannot open one now.
    pub(super) fn open(
        &mut self,
        shared: &Rc<RefCell<Self>>,
        ctx: &mut CoreCtx,
        backend: usize,
        conn: usize,
        now: Instant,
    ) -> bool {
        let b = &mut self.backends[backend];
        let c = &mut b.conns[conn];
        c.gen += 1;
        if std::mem::replace(&mut c.tried, true) {
            b.reconnects += 1;
        }
        let link = Link::new(shared.clone(), backend, conn, c.gen);
        match ctx.connect(b.addr, RespReplies::default(), link) {
            Ok(_) => {
                c.state = State::Connecting;
                true
            }
            Err(e) => {
                if !matches!(e, ConnectError::Closed) {
                    // Draining or stopped: requests fail as `Down`, and that is expected.
                    log::warn!("ringwire: cannot connect to backend {}: {e}", b.addr);
                }
                c.state = State::Idle;
                self.mark_down(backend, now);
                false
            }
        }
    }

    /// Marks `backend` down for its back-off (with jitter), and doubles the back-off. Returns
    /// whether it was up.
    pub(super) fn mark_down(&mut self, backend: usize, now: Instant) -> bool {
        // xorshift64: enough to spread retries apart.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (min, max) = (self.cfg.backoff_min, self.cfg.backoff_max);
        let b = &mut self.backends[backend];
        let full = b.backoff.min(max);
        let half = full / 2;
        let jitter = Duration::from_nanos(self.rng % (half.as_nanos() as u64 + 1));
        let was = std::mem::replace(
            &mut b.health,
            Health::Down {
                until: now + half + jitter,
            },
        );
        b.backoff = (full * 2).clamp(min, max.max(min));
        was == Health::Up
    }

    /// A connection of `backend` opened: the backend is up, and its back-off starts again.
    pub(super) fn mark_up(&mut self, backend: usize) {
        let min = self.cfg.backoff_min;
        let b = &mut self.backends[backend];
        b.health = Health::Up;
        b.backoff = min;
    }

    /// Opens every connection with no session.
    pub(super) fn connect_all(shared: &Rc<RefCell<Self>>, ctx: &mut CoreCtx) {
        let mut pool = shared.borrow_mut();
        let now = Instant::now();
        for backend in 0..pool.backends.len() {
            for conn in 0..pool.backends[backend].conns.len() {
                if pool.backends[backend].conns[conn].state == State::Idle {
                    pool.backends[backend].health = Health::Up;
                    pool.open(shared, ctx, backend, conn, now);
                }
            }
        }
    }

    /// Connection `conn` of `backend` lost its session (`opened`: after it was open): fails
    /// its waiters. The backend is marked down when the connect failed, or when requests were
    /// lost with the connection; a connection closed with nothing pending (the backend's idle
    /// timeout, a `CLIENT KILL`, a drain) costs nobody anything and is opened again with the
    /// next request that picks it, while the backend's other connections go on.
    pub(super) fn lost(&mut self, backend: usize, conn: usize, opened: bool) -> Failed<W> {
        let addr = self.backends[backend].addr;
        let error = if opened {
            BackendError::Closed { addr }
        } else {
            BackendError::Down { addr }
        };
        let mut failed = Vec::new();
        let b = &mut self.backends[backend];
        let c = &mut b.conns[conn];
        c.fail(error, &mut failed);
        c.state = State::Idle;
        c.gen += 1;
        b.errors += failed.len() as u64;
        if opened && failed.is_empty() {
            log::debug!("ringwire: backend {addr}: an idle connection closed; reopened on demand");
            return failed;
        }
        if self.mark_down(backend, Instant::now()) {
            let what = if opened {
                "connection closed"
            } else {
                "cannot connect"
            };
            log::warn!(
                "ringwire: backend {addr} is down ({what}; {} requests failed), retrying with \
                 back-off",
                failed.len()
            );
        }
        failed
    }

    /// Connection `conn` of `backend` timed out: fails its waiters and opens it again.
    pub(super) fn timed_out(
        shared: &Rc<RefCell<Self>>,
        ctx: &mut CoreCtx,
        backend: usize,
        conn: usize,
    ) -> Failed<W> {
        let mut pool = shared.borrow_mut();
        let b = &mut pool.backends[backend];
        let addr = b.addr;
        let mut failed = Vec::new();
        let c = &mut b.conns[conn];
        c.fail(BackendError::Timeout { addr }, &mut failed);
        c.state = State::Idle;
        b.errors += failed.len() as u64;
        log::warn!(
            "ringwire: backend {addr}: a request got no reply within the timeout; {} failed, \
             reconnecting",
            failed.len()
        );
        pool.open(shared, ctx, backend, conn, Instant::now());
        failed
    }

    pub(super) fn stats(&self) -> Vec<BackendStats> {
        let now = Instant::now();
        self.backends
            .iter()
            .map(|b| BackendStats {
                addr: b.addr,
                requests: b.requests,
                errors: b.errors,
                reconnects: b.reconnects,
                in_flight: b.conns.iter().map(|c| c.pending.len() as u64).sum(),
                down: matches!(b.health, Health::Down { until } if now < until),
                latency: b.latency.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nobody;

    impl Waiter for Nobody {
        fn done(self, _: &mut CoreCtx, _: Result<&[u8], BackendError>) {}
    }

    fn down_for(pool: &Pool<Nobody>, now: Instant) -> Duration {
        match pool.backends[0].health {
            Health::Down { until } => until - now,
            Health::Up => panic!("not down"),
        }
    }

    #[test]
    fn the_back_off_doubles_with_jitter_up_to_its_bound_and_resets_once_up() {
        let cfg = PoolConfig::default()
            .with_backoff(Duration::from_millis(10), Duration::from_millis(100));
        let mut pool = Pool::<Nobody>::new(vec!["127.0.0.1:1".parse().unwrap()], cfg);
        let now = Instant::now();
        assert!(pool.mark_down(0, now), "it was up");
        let mut full = Duration::from_millis(10);
        for _ in 0..8 {
            let wait = down_for(&pool, now);
            assert!(wait >= full / 2 && wait <= full, "{wait:?} for {full:?}");
            assert!(!pool.mark_down(0, now), "it was down already");
            full = (full * 2).min(Duration::from_millis(100));
        }
        assert_eq!(pool.backends[0].backoff, Duration::from_millis(100));
        pool.mark_up(0);
        assert_eq!(pool.backends[0].health, Health::Up);
        assert!(pool.mark_down(0, now));
        assert!(down_for(&pool, now) <= Duration::from_millis(10));
    }

    #[test]
    fn the_least_loaded_connection_is_picked_round_robin_among_equals() {
        let cfg = PoolConfig::default().with_conns_per_backend(3);
        let mut pool = Pool::<Nobody>::new(vec!["127.0.0.1:1".parse().unwrap()], cfg);
        let b = &mut pool.backends[0];
        assert_eq!([b.pick(), b.pick(), b.pick(), b.pick()], [0, 1, 2, 0]);
        for _ in 0..2 {
            b.conns[1].pending.push_back(Pending {
                waiter: Nobody,
                sent: Instant::now(),
            });
        }
        b.conns[2].pending.push_back(Pending {
            waiter: Nobody,
            sent: Instant::now(),
        });
        assert_eq!([b.pick(), b.pick()], [0, 0]);
        b.conns[0].pending.push_back(Pending {
            waiter: Nobody,
            sent: Instant::now(),
        });
        b.conns[0].pending.push_back(Pending {
            waiter: Nobody,
            sent: Instant::now(),
        });
        assert_eq!(b.pick(), 2);
    }

    #[test]
    fn errors_name_the_backend() {
        let addr: SocketAddr = "10.0.0.7:6379".parse().unwrap();
        for e in [
            BackendError::Down { addr },
            BackendError::Timeout { addr },
            BackendError::Closed { addr },
            BackendError::Busy { addr },
        ] {
            assert!(e.to_string().contains("10.0.0.7:6379"), "{e}");
            assert_eq!(e.addr(), addr);
        }
    }
}
