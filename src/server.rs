//! The `Server` builder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringwire_runtime::{Codec, Config, DriverKind, Handler, Hooks, ServerError, ServerHandle};

/// Builds and starts a server: one pinned worker per core, each with its own listener on the
/// shared address (SO_REUSEPORT), its own io_uring and buffers, running `codec` and handlers
/// made by the factory inline.
///
/// The codec is a prototype, cloned into each session (codecs may keep per-connection state).
/// The factory makes one handler per session, on the core that accepted it (see [`Handler`]
/// for why handlers live per session).
///
/// ```no_run
/// use ringwire::{codec::Len32, handlers::Echo, Server};
///
/// let server = Server::new(Len32, || Echo)
///     .bind("127.0.0.1:7000".parse().unwrap())
///     .cores(2)
///     .max_frame(64 * 1024)
///     .start()?;
/// println!("listening on {}", server.local_addr());
/// server.join()?;
/// # Ok::<(), ringwire::ServerError>(())
/// ```
pub struct Server<C, F> {
    config: Config,
    codec: C,
    factory: F,
    hooks: Hooks,
}

impl<C, H, F> Server<C, F>
where
    C: Codec + Clone + Send,
    H: Handler<C>,
    F: Fn() -> H + Send + Sync + 'static,
{
    /// A server speaking `codec`, with a handler per session from `factory`. Defaults: binds
    /// 127.0.0.1 on a port the kernel picks, 1 core (CPU 0), 1 MiB frames.
    pub fn new(codec: C, factory: F) -> Self {
        Server {
            config: Config::default(),
            codec,
            factory,
            hooks: Hooks::default(),
        }
    }

    /// The address to listen on. Port 0 lets the kernel pick (see
    /// [`ServerHandle::local_addr`]).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.addr = addr;
        self
    }

    /// Runs `n` workers, pinned to CPUs `0..n`.
    pub fn cores(mut self, n: usize) -> Self {
        self.config.cpus = (0..n).collect();
        self
    }

    /// Runs one worker per listed CPU, pinned to it.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.config.cpus = cpus.into_iter().collect();
        self
    }

    /// Pin workers to their CPUs (default: yes).
    pub fn pin(mut self, pin: bool) -> Self {
        self.config.pin = pin;
        self
    }

    /// Largest frame the codec accepts; a larger one closes its session with an error.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.config.max_frame = bytes;
        self
    }

    /// Submission queue entries of each core's ring (a power of two; default 1024).
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.config.ring_entries = entries;
        self
    }

    /// Completion queue entries (a power of two; default: four times the submission queue and
    /// at least twice the buffer count).
    pub fn cq_entries(mut self, entries: u32) -> Self {
        self.config.cq_entries = entries;
        self
    }

    /// Provided receive buffers per core: `count` (a power of two) of `size` bytes each.
    pub fn buffers(mut self, count: u32, size: u32) -> Self {
        self.config.buf_count = count;
        self.config.buf_size = size;
        self
    }

    /// Listen backlog of each core's listener (default 1024).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// TCP_NODELAY on accepted connections (default: on).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.config.nodelay = on;
        self
    }

    /// Most sessions per core (default 65536); past it a new connection is accepted and
    /// closed at once, and counted as rejected.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.config.max_sessions = n;
        self
    }

    /// Closes a session that received nothing for `timeout` (default: never). A session can
    /// change its own with [`Session::set_idle_timeout`](crate::Session::set_idle_timeout).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// Closes a session whose incomplete frame is not completed within `timeout`: the slow
    /// trickle of a frame that never ends (default: never).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = Some(timeout);
        self
    }

    /// Closes a session whose pending output makes no progress for `timeout`: a peer that
    /// stopped reading (default: never).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = Some(timeout);
        self
    }

    /// Backpressure: above `high` bytes of pending output a session is not read from until its
    /// output drains to `low` bytes (defaults 1 MiB and 256 KiB). A peer that sends without
    /// reading costs the server at most about `high` plus one receive's worth of input and its
    /// replies.
    pub fn water_marks(mut self, high: usize, low: usize) -> Self {
        self.config.high_water = high;
        self.config.low_water = low;
        self
    }

    /// How long a session closed from our side (the handler's `close`, a codec error) lingers
    /// before its descriptor closes: its sending side is shut down (the peer reads the last
    /// reply, then EOF) and input is read and dropped until the peer's EOF, at most this long.
    /// Closing while the peer still sends would reset the connection and could destroy the
    /// last reply. Default 2 s; `None` closes at once.
    pub fn linger(mut self, linger: Option<Duration>) -> Self {
        self.config.linger = linger;
        self
    }

    /// Runs `hook(worker_index)` on each worker thread every `period`, between loop turns:
    /// per-core housekeeping, such as refreshing a cached `Date` header in a thread local.
    pub fn on_core_tick(
        mut self,
        period: Duration,
        hook: impl Fn(usize) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_core_tick = Some((period, Arc::new(hook)));
        self
    }

    /// Runs `hook(worker_index)` on each worker thread before it serves.
    pub fn on_worker_start(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.hooks.on_worker_start = Some(Arc::new(hook));
        self
    }

    /// The I/O driver: io_uring where it works, else epoll (`Auto`, the default, which the
    /// environment variable `RINGWIRE_DRIVER=auto|uring|epoll` may override), or one forced.
    /// Forcing io_uring where it cannot work makes `start` fail with the reason.
    pub fn driver(mut self, kind: DriverKind) -> Self {
        self.config.driver = kind;
        self
    }

    /// Records per-core histograms of in-server handling time (frame decoded to replies
    /// encoded) and of loop-turn time, read through
    /// [`ServerHandle::latency`](crate::ServerHandle::latency) and printed with
    /// [`report`](crate::report). Off by default (it costs two clock reads per frame).
    pub fn record_latency(mut self, on: bool) -> Self {
        self.config.record_latency = on;
        self
    }

    /// The engine configuration built so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts serving and returns once every core serves.
    pub fn start(self) -> Result<ServerHandle, ServerError> {
        ringwire_runtime::start(self.config, self.codec, self.factory, self.hooks)
    }

    /// Starts serving and blocks until the server stops.
    pub fn run(self) -> Result<(), ServerError> {
        self.start()?.join()
    }
}
