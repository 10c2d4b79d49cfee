//! The `Server` builder.

use std::net::SocketAddr;
use std::time::Duration;

use crate::factory::{Factory, MakeHandler};
use crate::settings::engine_settings;
use ringwire_runtime::{Codec, Config, Handler, Hooks, ServerError, ServerHandle};

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
pub struct Server<C, H> {
    config: Config,
    codec: C,
    factory: Factory<H>,
    hooks: Hooks,
}

impl<C, H> Server<C, H>
where
    C: Codec + Clone + Send,
    H: Handler<C>,
{
    /// A server speaking `codec`, with a handler per session from `factory` (a closure taking
    /// nothing, or the core's [`CoreCtx`](crate::CoreCtx): see [`MakeHandler`]). Defaults:
    /// binds 127.0.0.1 on a port the kernel picks, 1 core (the first CPU this process may run
    /// on), 1 MiB frames.
    pub fn new<A>(codec: C, factory: impl MakeHandler<H, A>) -> Self {
        Server {
            config: Config::default(),
            codec,
            factory: crate::factory::boxed(factory),
            hooks: Hooks::default(),
        }
    }

    engine_settings!();

    /// Serves TLS with this rustls configuration (see [`crate::tls`] for building one from
    /// PEM files): every session does a handshake before `on_open`, and the handler sees
    /// plaintext. rustls does the record layer in user space (the start-up line says whether
    /// the kernel offers kernel TLS, which is not used yet).
    pub fn tls(
        mut self,
        config: impl Into<std::sync::Arc<crate::tls::rustls::ServerConfig>>,
    ) -> Self {
        self.config.tls = Some(config.into());
        self
    }

    /// Closes a TLS session whose handshake is not done this long after it was accepted
    /// (default 10 s).
    pub fn handshake_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.handshake_timeout = timeout.into();
        self
    }

    /// Hands TLS sessions' record layer to the kernel (kTLS) after their handshake where the
    /// kernel offers it (default: yes; `Config::kernel_tls` says on what conditions); off,
    /// rustls always does it in user space.
    pub fn kernel_tls(mut self, on: bool) -> Self {
        self.config.kernel_tls = on;
        self
    }

    /// The address to listen on. Port 0 lets the kernel pick (see
    /// [`ServerHandle::local_addr`]).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.addr = addr;
        self
    }

    /// Listens on a Unix domain stream socket instead of an IP address: a filesystem path, or
    /// an abstract name written `@name` (Linux; no file). Same codecs, handlers and sessions;
    /// [`ServerHandle::unix_path`] says where, and [`Session::peer_addr`](crate::Session::peer_addr)
    /// is an error for these sessions.
    ///
    /// Every core accepts on the one socket (SO_REUSEPORT does not spread Unix connections);
    /// the kernel hands each connection to one waiting core. `start` fails with
    /// [`ServerError::UnixAddrInUse`] where a live server listens on the path, and with
    /// [`ServerError::UnixNotSocket`] where a file that is not a socket is there; a socket
    /// file left by a dead server (nobody accepts on it) is replaced. The file is removed when
    /// the server stops, if it is still the one it bound.
    ///
    /// ```no_run
    /// use ringwire::{codec::Len32, handlers::Echo, Server};
    ///
    /// let server = Server::new(Len32, || Echo).bind_unix("/tmp/echo.sock").cores(2).start()?;
    /// println!("listening on {}", server.unix_path().unwrap().display());
    /// # Ok::<(), ringwire::ServerError>(())
    /// ```
    pub fn bind_unix(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.config.unix = Some(ringwire_runtime::UnixAddr::new(path));
        self
    }

    /// Same as [`bind_unix`](Server::bind_unix).
    pub fn unix(self, path: impl AsRef<std::path::Path>) -> Self {
        self.bind_unix(path)
    }

    /// Mode of the Unix socket file (e.g. `0o660`: connecting needs write permission on it);
    /// default: as the process's umask leaves it.
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.config.unix_mode = Some(mode);
        self
    }

    /// Largest frame accepted on a session a handler opened with a connect
    /// ([`Session::connect`](crate::Session::connect), [`CoreCtx::connect`](crate::CoreCtx::connect)):
    /// a backend's reply, which a client's request can make far larger than any request
    /// (default 512 MiB, Redis's `proto-max-bulk-len`). [`max_frame`](Server::max_frame)
    /// bounds what clients send; this bounds what backends send back, so that one large reply
    /// does not close a connection that other clients' requests share. The bound is memory:
    /// while a frame arrives its connection holds it whole, so each outbound connection may
    /// hold up to this many bytes (plus a few KiB) at once.
    pub fn outbound_max_frame(mut self, bytes: usize) -> Self {
        self.config.outbound_max_frame = bytes;
        self
    }

    /// Listen backlog of each core's listener (default 1024).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// Joins the listeners another process already has on the address instead of failing
    /// (default: no). Every core listens with SO_REUSEPORT, which would let a second server
    /// on the same address silently take part of the first one's connections; so by default
    /// `start` fails with [`ServerError::AddrInUse`] where another socket listens there.
    ///
    /// For a zero-downtime restart, start the new process with `share_port(true)` while the
    /// old one still serves (the kernel spreads new connections over both), then stop the old
    /// one with a drain ([`ServerHandle::shutdown`]). Both must run as the same user.
    pub fn share_port(mut self, share: bool) -> Self {
        self.config.share_port = share;
        self
    }

    /// Starts serving and returns once every core serves.
    pub fn start(self) -> Result<ServerHandle, ServerError> {
        ringwire_runtime::start(self.config, self.codec, self.factory, self.hooks)
    }

    /// Starts serving and blocks until the server stops.
    pub fn run(self) -> Result<(), ServerError> {
        self.start()?.join()
    }

    /// Starts serving and blocks until a signal stops the server: the first SIGINT or SIGTERM
    /// drains for at most `drain` (stops accepting, serves the open sessions until their
    /// peers close or `drain` passes), a second stops at once. The signals are caught from
    /// before the server starts; once this returns they terminate the process again. See
    /// [`signal::drain_on_signal`](crate::signal::drain_on_signal) to watch a handle you
    /// keep.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use ringwire::{codec::Len32, handlers::Echo, Server};
    ///
    /// Server::new(Len32, || Echo).cores(2).run_until_signal(Duration::from_secs(10))?;
    /// # Ok::<(), ringwire::ServerError>(())
    /// ```
    pub fn run_until_signal(self, drain: Duration) -> Result<(), ServerError> {
        let signals = crate::signal::catch_signals().map_err(ServerError::Spawn)?;
        let handle = match self.start() {
            Ok(handle) => handle,
            Err(e) => {
                crate::signal::release(signals);
                return Err(e);
            }
        };
        let _watch = crate::signal::watch(signals, handle.stopper(), drain);
        handle.join()
    }
}
