//! The `Client` builder: outbound connections on per-core loops.

use crate::factory::{Factory, MakeHandler};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::settings::engine_settings;
use ringwire_runtime::{
    Codec, Config, CoreLatency, CoreStats, Handler, Hooks, ServerError, ServerHandle, ServerStats,
    Stopper, Target, UnixAddr,
};

/// A running client: its target, its counters, and the means to stop and join it. Dropping
/// the handle stops the client and waits for its workers.
pub struct ClientHandle {
    inner: ServerHandle,
    target: Target,
}

impl ClientHandle {
    /// Where the client connects.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A snapshot of every worker's counters.
    pub fn stats(&self) -> ServerStats {
        self.inner.stats()
    }

    /// The live (read-only) counters of each worker, in worker order.
    pub fn core_stats(&self) -> &[Arc<CoreStats>] {
        self.inner.core_stats()
    }

    /// Each worker's latency histograms (empty unless
    /// [`record_latency`](Client::record_latency) was set).
    pub fn latency(&self) -> &[CoreLatency] {
        self.inner.latency()
    }

    /// What the client runs on (see [`ServerHandle::driver`]).
    pub fn driver(&self) -> &str {
        self.inner.driver()
    }

    /// A handle that stops the client from any thread.
    pub fn stopper(&self) -> Stopper {
        self.inner.stopper()
    }

    /// Stops at once, closing every connection; [`join`](ClientHandle::join) waits.
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// Lets every connection run until its peer closes it or `timeout` has passed, closes
    /// what is left, and waits for the workers (see [`Stopper::shutdown`]).
    pub fn shutdown(self, timeout: Duration) -> Result<(), ServerError> {
        self.inner.shutdown(timeout)
    }

    /// Waits for every worker to exit; returns the first failure.
    pub fn join(self) -> Result<(), ServerError> {
        self.inner.join()
    }
}

/// Builds and starts a client: one pinned worker per core, each opening `connections`
/// connections to the target on its own io_uring, with the same [`Codec`] and [`Handler`]
/// traits as a server. Handlers see `on_open` once connected; a failed connect reaches
/// `on_error` (a [`SessionError::Connect`](crate::SessionError::Connect), which says why:
/// refused, unreachable, timed out, ...) and `on_close`.
///
/// From inside a server, a handler opens connections on its own core with
/// [`Session::connect`](crate::Session::connect), or, speaking another protocol with a handler
/// of another type, with [`CoreCtx::connect`](crate::CoreCtx::connect).
///
/// ```no_run
/// use ringwire::{codec::Len32, Client, Handler, Session};
///
/// struct Ping;
/// impl Handler<Len32> for Ping {
///     fn on_open(&mut self, s: &mut Session<'_, Len32>) {
///         let _ = s.send(b"ping");
///     }
///     fn on_message(&mut self, s: &mut Session<'_, Len32>, reply: &[u8]) {
///         assert_eq!(reply, b"ping");
///         s.close();
///     }
/// }
///
/// let client = Client::new(Len32, || Ping)
///     .connect("127.0.0.1:7000".parse().unwrap())
///     .connections(10)
///     .start()?;
/// client.shutdown(std::time::Duration::from_secs(1))?;
/// # Ok::<(), ringwire::ServerError>(())
/// ```
pub struct Client<C, H> {
    config: Config,
    codec: C,
    factory: Factory<H>,
    hooks: Hooks,
    connections: usize,
    target: Target,
}

impl<C, H> Client<C, H>
where
    C: Codec + Clone + Send,
    H: Handler<C>,
{
    /// A client speaking `codec`, with a handler per connection from `factory` (a closure
    /// taking nothing, or the core's [`CoreCtx`](crate::CoreCtx): see [`MakeHandler`]).
    /// Defaults: 1 core (the first CPU this process may run on), 1 connection per core, to
    /// 127.0.0.1:7000.
    pub fn new<A>(codec: C, factory: impl MakeHandler<H, A>) -> Self {
        let config = Config {
            listen: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            ..Config::default()
        };
        Client {
            config,
            codec,
            factory: crate::factory::boxed(factory),
            hooks: Hooks::default(),
            connections: 1,
            target: Target::Tcp(SocketAddr::from(([127, 0, 0, 1], 7000))),
        }
    }

    engine_settings!();

    /// The address to connect to.
    pub fn connect(mut self, addr: SocketAddr) -> Self {
        self.config.addr = addr;
        self.target = Target::Tcp(addr);
        self
    }

    /// Connects to a Unix domain stream socket instead: a socket file's path, or an abstract
    /// name written `@name`. A listener whose backlog is full fails a connect at once
    /// ([`ConnectError::Busy`](crate::ConnectError::Busy), through `on_error`).
    pub fn connect_unix(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.target = Target::Unix(UnixAddr::new(path));
        self
    }

    /// Speaks TLS on every connection: `tls` names the rustls client configuration and the
    /// server's name; each session's handshake runs before `on_open`.
    pub fn tls(mut self, tls: crate::tls::TlsConnect) -> Self {
        self.config.tls_connect = Some(tls);
        self
    }

    /// Connections each core opens when it starts.
    pub fn connections(mut self, per_core: usize) -> Self {
        self.connections = per_core;
        self
    }

    /// Starts the workers; each opens its connections right away.
    pub fn start(mut self) -> Result<ClientHandle, ServerError> {
        self.config.connect = Some((self.target.clone(), self.connections));
        self.config.max_sessions = self.config.max_sessions.max(self.connections);
        let inner = ringwire_runtime::start(self.config, self.codec, self.factory, self.hooks)?;
        Ok(ClientHandle {
            inner,
            target: self.target,
        })
    }
}
