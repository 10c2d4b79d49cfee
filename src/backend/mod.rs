//! Per-core pools of pipelined connections to RESP backends (Redis, or anything speaking
//! RESP2): what a proxy's handlers send requests through.
//!
//! A [`Backends`] lives in a core's per-core state (the builder's `core_state`) and holds, for
//! each backend address, [`PoolConfig::conns_per_backend`] connections opened on that core's
//! own ring with [`CoreCtx::connect`] and the [`RespReplies`](crate::codec::resp::RespReplies)
//! codec. A request goes to one of them ([`Backends::send`]) with a [`Waiter`]: the waiter joins
//! that connection's queue, the request is written behind the ones before it (pipelined), and
//! each reply that comes back completes the oldest waiter, with the reply's raw bytes. No lock,
//! no thread: everything happens on the core, inline in its callbacks.
//!
//! Invariant: every waiter handed to `send` is completed exactly once ([`Waiter::done`] takes
//! it by value, and only the pool holds it in between): with a reply, or with the
//! [`BackendError`] that says why there is none. A connection that fails or is closed fails all
//! its waiters at once; a request that waits longer than [`PoolConfig::request_timeout`] fails
//! every waiter of its connection (their replies could no longer be matched) and the
//! connection is opened again. The one exception is a core that stops with waiters queued on
//! connects it never opened: the pool is then dropped with them, and each waiter's own `Drop`
//! runs (a [`Reply`](crate::Reply) inside one closes its session, as any dropped reply does).
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use ringwire::backend::{BackendError, Backends, PoolConfig, Waiter};
//! use ringwire::codec::Lines;
//! use ringwire::{CoreCtx, Handler, Reply, Server, Session};
//!
//! /// Completes a client's reserved reply with what the backend said.
//! struct Answer(Reply);
//!
//! impl Waiter for Answer {
//!     fn done(self, _: &mut CoreCtx, reply: Result<&[u8], BackendError>) {
//!         match reply {
//!             Ok(bytes) => self.0.complete(bytes),
//!             Err(e) => self.0.complete(format!("-ERR {e}\r\n")),
//!         }
//!     }
//! }
//!
//! /// Forwards each client line, a RESP command already, to backend 0.
//! struct Front;
//!
//! impl Handler<Lines> for Front {
//!     fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
//!         let Ok(reply) = s.reserve() else { return s.close() };
//!         let request = [line, b"\r\n"].concat(); // An inline command.
//!         // A clone is one reference count: `send` needs the context too.
//!         let mut backends = s.core().state::<Backends<Answer>>().clone();
//!         backends.send(s.core(), 0, &request, Answer(reply));
//!     }
//! }
//!
//! let redis: SocketAddr = "127.0.0.1:6379".parse().unwrap();
//! Server::new(Lines::new(), || Front)
//!     .core_state(move |_| Backends::<Answer>::new(vec![redis], PoolConfig::default()))
//!     .run()?;
//! # Ok::<(), ringwire::ServerError>(())
//! ```
//!
//! Bounds to know: a reply is one frame of the backend session, so the server's
//! `outbound_max_frame` (512 MiB by default, Redis's largest value; not `max_frame`, which
//! bounds what clients send) bounds the largest reply, and is what one connection may hold
//! while a reply arrives; a larger reply closes its connection (its waiters fail as `Closed`).
//! Requests sent while a connection connects wait for the connect (at most the server's
//! `connect_timeout`); their request timeout starts when they are written, once it is open. A
//! panic in a waiter's `done` is caught and logged (what the waiter held is dropped): it does
//! not close the backend connection.
//!
//! While the server drains, a connection stays open as long as its core serves a client (one
//! may still send requests, and a draining core opens no new connection), and closes once
//! none is left and no reply is awaited.
//!
//! Costs per request: one allocation, the copy of the request that
//! [`CoreCtx::write_to`] carries to the connection (applied right after the current callback;
//! every request written to a connection during a loop turn leaves in one send at the end of
//! it), one clock read, and a place in the connection's queue (a ring buffer that grows only to
//! the most requests pending at once). Replies are completed straight from the received bytes,
//! without a copy.

mod link;
mod pool;

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringwire_runtime::CoreCtx;

use pool::Pool;

/// How a [`Backends`] pool connects, pipelines and gives up. Build it from the default,
/// with the `with_*` methods or a struct update
/// (`PoolConfig { conns_per_backend: 2, ..PoolConfig::default() }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections to each backend, per core (default 1). Requests go to the one with the
    /// fewest pending, round robin among equals.
    pub conns_per_backend: usize,
    /// How long a request may wait for its reply, from when it is written to the connection
    /// (default 1 s; `None`: forever; a request sent while its connection connects is written,
    /// and its clock starts, once the connect completes). Past it,
    /// every request pending on its connection fails with [`BackendError::Timeout`] and the
    /// connection is closed and opened again: the replies still to come could no longer be
    /// matched to their requests. Checked with one timer per open connection, which also
    /// fires once per timeout when the connection is idle.
    pub request_timeout: Option<Duration>,
    /// The first back-off after a connection fails (default 10 ms).
    pub backoff_min: Duration,
    /// The longest back-off (default 2 s). Each failure in a row doubles the back-off, up to
    /// this; the wait is drawn between half of it and all of it (jitter), so that cores and
    /// processes do not retry in step.
    pub backoff_max: Duration,
    /// Most requests pending on one connection (default 10 000); past it, `send` fails at
    /// once with [`BackendError::Busy`].
    pub max_pending: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            conns_per_backend: 1,
            request_timeout: Some(Duration::from_secs(1)),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(2),
            max_pending: 10_000,
        }
    }
}

impl PoolConfig {
    /// This configuration with `conns_per_backend` changed (at least 1).
    pub fn with_conns_per_backend(mut self, conns: usize) -> Self {
        self.conns_per_backend = conns.max(1);
        self
    }

    /// This configuration with `request_timeout` changed.
    pub fn with_request_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.request_timeout = timeout.into();
        self
    }

    /// This configuration with the back-off bounds changed.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// This configuration with `max_pending` changed (at least 1).
    pub fn with_max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }
}

/// Whoever waits for a backend's reply: completed exactly once, with the reply or with why
/// there is none.
///
/// `done` runs on the core that sent the request, inline: from the backend connection's
/// callback when the reply comes (or it fails, or times out), or from within
/// [`Backends::send`] itself when the request fails at once. It may send again (through a
/// clone of the pool: the pool holds no borrow while it runs). A panic in `done` is caught and
/// logged; the pool goes on with the other waiters.
pub trait Waiter: 'static {
    /// The request is answered: `Ok` with the raw bytes of the backend's reply (one whole RESP2
    /// reply, an error reply such as `-ERR ...` included: it is the backend's answer; read it
    /// with [`parse_reply`](crate::codec::resp::parse_reply)), valid for this call only; or
    /// `Err` with why no reply will come.
    fn done(self, ctx: &mut CoreCtx, reply: Result<&[u8], BackendError>);
}

/// Why a request got no reply from its backend. Each names the backend's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend cannot be reached: a connect to it failed (or a connection closed with
    /// requests pending), and the pool waits out its back-off before trying again (requests
    /// meanwhile fail at once); or the core is draining and opens no new connection.
    Down {
        /// The backend.
        addr: SocketAddr,
    },
    /// The request (or one before it on the same connection) got no reply within the request
    /// timeout; the connection is opened again.
    Timeout {
        /// The backend.
        addr: SocketAddr,
    },
    /// The connection closed (the backend went away, reset it, or sent what is not RESP2)
    /// before the reply came.
    Closed {
        /// The backend.
        addr: SocketAddr,
    },
    /// The connection already holds [`PoolConfig::max_pending`] requests.
    Busy {
        /// The backend.
        addr: SocketAddr,
    },
}

impl BackendError {
    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            BackendError::Down { addr }
            | BackendError::Timeout { addr }
            | BackendError::Closed { addr }
            | BackendError::Busy { addr } => addr,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Down { addr } => write!(f, "backend {addr} is down"),
            BackendError::Timeout { addr } => {
                write!(
                    f,
                    "backend {addr} did not answer within the request timeout"
                )
            }
            BackendError::Closed { addr } => {
                write!(f, "the connection to backend {addr} closed")
            }
            BackendError::Busy { addr } => {
                write!(f, "backend {addr} has too many requests pending")
            }
        }
    }
}

impl std::error::Error for BackendError {}

/// One backend's counters on one core, as [`Backends::stats`] reads them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BackendStats {
    /// The backend.
    pub addr: SocketAddr,
    /// Requests written (or queued to be, while connecting).
    pub requests: u64,
    /// Requests that failed (every [`BackendError`]).
    pub errors: u64,
    /// Connects after the first of each connection: after a failure, a close or a timeout.
    pub reconnects: u64,
    /// Requests waiting for their reply now.
    pub in_flight: u64,
    /// Whether the backend is marked down now (requests fail at once until its back-off ends).
    pub down: bool,
    /// Reply latency in nanoseconds, from the request's write (for one sent while its
    /// connection connected: from the connect) to the reply's arrival (1 ns to 100 s, two
    /// significant figures; `ringwire::report::table` prints it).
    pub latency: Histogram<u64>,
}

/// Connections to a set of backends, on one core: a handle to the pool (cloning it is one
/// reference count, and the clones share it). `!Send`: each core makes its own, in the
/// builder's `core_state`.
pub struct Backends<W: Waiter> {
    pool: Rc<RefCell<Pool<W>>>,
}

impl<W: Waiter> Clone for Backends<W> {
    fn clone(&self) -> Self {
        Backends {
            pool: self.pool.clone(),
        }
    }
}

impl<W: Waiter> Backends<W> {
    /// A pool for `addrs` (backend `i` is `addrs[i]`). Connects nothing yet: each connection
    /// opens on its first request, or all at once with [`connect_all`](Backends::connect_all).
    pub fn new(addrs: Vec<SocketAddr>, cfg: PoolConfig) -> Self {
        Backends {
            pool: Rc::new(RefCell::new(Pool::new(addrs, cfg))),
        }
    }

    /// Opens every connection not open yet, now (from a callback or a `run_on` task on this
    /// core: the core opens them right after it). A connect that fails marks its backend down
    /// as a request's would.
    pub fn connect_all(&mut self, ctx: &mut CoreCtx) {
        // Connections with no session hold no waiters: nothing fails here.
        Pool::connect_all(&self.pool, ctx);
    }

    /// How many backends.
    pub fn len(&self) -> usize {
        self.pool.borrow().len()
    }

    /// Whether there are no backends.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address of backend `backend`.
    ///
    /// # Panics
    ///
    /// If `backend >= self.len()`.
    pub fn addr(&self, backend: usize) -> SocketAddr {
        self.pool.borrow().addr(backend)
    }

    /// Sends `request` (one or more RESP2 commands, encoded) to backend `backend`; `waiter` is
    /// completed with the reply, or with why there is none. Replies to requests sent to one
    /// connection come back in the order sent; a request that is several commands gets as many
    /// replies, and must have as many waiters: send each command on its own.
    ///
    /// The request is written to the connection with the fewest requests pending (round robin
    /// among equals), opening it if it is not open; while it connects, requests wait in the
    /// pool and are written once it is open. The waiter is completed at once, before `send`
    /// returns, with [`BackendError::Down`] while the backend is marked down (a failed
    /// connect, or a connection closed with requests pending, marks it for its back-off; the
    /// first `send` after the back-off connects again; a connection closed with nothing
    /// pending is just opened again), or when the core opens no more connections (it is
    /// draining or full);
    /// and with [`BackendError::Busy`] when the connection holds
    /// [`PoolConfig::max_pending`] requests.
    ///
    /// # Panics
    ///
    /// If `backend >= self.len()`.
    pub fn send(&mut self, ctx: &mut CoreCtx, backend: usize, request: &[u8], waiter: W) {
        let refused = Pool::enqueue(&self.pool, ctx, backend, request, waiter, Instant::now());
        if let Some((waiter, error)) = refused {
            pool::finish(ctx, waiter, Err(error));
        }
    }

    /// Each backend's counters on this core, in backend order.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.pool.borrow().stats()
    }
}

impl<W: Waiter> fmt::Debug for Backends<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = self.pool.borrow();
        let addrs: Vec<SocketAddr> = (0..pool.len()).map(|i| pool.addr(i)).collect();
        f.debug_struct("Backends")
            .field("addrs", &addrs)
            .finish_non_exhaustive()
    }
}
