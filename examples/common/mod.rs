//! What the example servers share: the command-line flags every server takes, the TLS flags
//! of those that serve TLS, and serving until a signal (the first SIGINT/SIGTERM drains, a
//! second stops at once).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ringwire::tls::{rustls, ServerTls, TlsConfigError};
use ringwire::{Codec, CoreSnapshot, Handler, Server, ServerError, ServerHandle};
use signal_hook::consts::SIGUSR1;
use signal_hook::iterator::Signals;

/// Flags of every example server (besides `--addr` and its protocol's own).
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Number of cores (workers pinned to the first N CPUs the process may run on).
    #[arg(long, default_value_t = 1, conflicts_with = "cpus")]
    pub cores: usize,
    /// Explicit CPU list, e.g. 0,2,4.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Submission queue entries per core.
    #[arg(long, default_value_t = 1024)]
    pub ring_entries: u32,
    /// Provided receive buffers per core (a power of two).
    #[arg(long, default_value_t = 1024)]
    pub buffers: u32,
    /// Size of each provided receive buffer, in bytes.
    #[arg(long, default_value_t = 8192)]
    pub buf_size: u32,
    /// Most sessions per core; more are accepted and closed at once.
    #[arg(long, default_value_t = 65536)]
    pub max_conns: usize,
    /// Close sessions that receive nothing for this long.
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Close sessions whose incomplete frame is not completed within this long.
    #[arg(long)]
    pub read_timeout_ms: Option<u64>,
    /// Close sessions whose pending output makes no progress for this long.
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// Join another process already listening on the address (a zero-downtime restart)
    /// instead of failing with "address in use".
    #[arg(long)]
    pub share_port: bool,
    /// Listen on this Unix socket instead of `--addr`: a path, or `@name` for an abstract
    /// name. A dead server's socket file there is replaced; a live server's is not.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<std::path::PathBuf>,
    /// Mode of the Unix socket file, in octal (e.g. 660).
    #[arg(long, value_parser = parse_octal, requires = "unix")]
    pub unix_mode: Option<u32>,
    /// On SIGINT/SIGTERM, serve open sessions for at most this long before closing them.
    #[arg(long, default_value_t = 10_000)]
    pub drain_ms: u64,
}

/// Flags of the example servers that serve TLS (echo, http, kv): both or neither.
// The proxy includes this module too, and serves plain TCP only.
#[allow(dead_code)]
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Serve TLS with the certificate chain in this PEM file (server certificate first, then
    /// its intermediates).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert`, in PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[allow(dead_code)]
impl TlsArgs {
    /// The server's TLS configuration, offering the application protocols `alpn`; `None`
    /// without the flags. Fails on a file that cannot be read, a certificate or key that
    /// cannot be used, or a key that is not the certificate's.
    pub fn server_config(
        &self,
        alpn: &[&str],
    ) -> Result<Option<Arc<rustls::ServerConfig>>, TlsConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let config = ServerTls::from_pem_files(cert, key)?.alpn(alpn).build()?;
        Ok(Some(config))
    }
}

/// Serves TLS with `tls`, if given: the server's configuration from [`TlsArgs`].
#[allow(dead_code)]
pub fn with_tls<C, H>(server: Server<C, H>, tls: Option<Arc<rustls::ServerConfig>>) -> Server<C, H>
where
    C: Codec + Clone + Send,
    H: Handler<C>,
{
    match tls {
        Some(config) => server.tls(config),
        None => server,
    }
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|e| format!("{s:?}: {e}"))
}

/// Where a started server listens, for its start-up line: the Unix socket, or the address.
pub fn listening_on(handle: &ServerHandle) -> String {
    match handle.unix_addr() {
        Some(unix) => format!("unix:{unix}"),
        None => handle.local_addr().to_string(),
    }
}

impl ServerArgs {
    /// Applies the flags to a server being built.
    pub fn apply<C, H>(&self, server: Server<C, H>) -> Server<C, H>
    where
        C: Codec + Clone + Send,
        H: Handler<C>,
    {
        let ms = Duration::from_millis;
        let mut server = server
            .ring_entries(self.ring_entries)
            .buffers(self.buffers, self.buf_size)
            .max_sessions(self.max_conns)
            .share_port(self.share_port);
        if let Some(path) = &self.unix {
            server = server.bind_unix(path);
        }
        if let Some(mode) = self.unix_mode {
            server = server.unix_mode(mode);
        }
        if let Some(t) = self.idle_timeout_ms {
            server = server.idle_timeout(ms(t));
        }
        if let Some(t) = self.read_timeout_ms {
            server = server.read_timeout(ms(t));
        }
        if let Some(t) = self.write_timeout_ms {
            server = server.write_timeout(ms(t));
        }
        match &self.cpus {
            Some(cpus) => server.cpus(cpus.iter().copied()),
            None => server.cores(self.cores),
        }
    }

    /// How long SIGINT/SIGTERM drains.
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
}

/// Serves until the server stops: the first SIGINT or SIGTERM drains for at most `drain`, a
/// second stops at once (the library's [`ringwire::signal::drain_on_signal`]); SIGUSR1 calls
/// `on_usr1`. `announce` runs once the signals are caught (it prints the "listening on" line
/// that scripts and tests wait for: a signal sent after it drains, never kills). Returns the
/// counters summed over the cores.
pub fn serve_until_signalled(
    handle: ServerHandle,
    drain: Duration,
    announce: impl FnOnce(&ServerHandle),
    on_usr1: impl Fn() + Send + 'static,
) -> Result<CoreSnapshot, ServerError> {
    let _watch =
        ringwire::signal::drain_on_signal(handle.stopper(), drain).map_err(ServerError::Spawn)?;
    let mut usr1 = Signals::new([SIGUSR1]).map_err(ServerError::Spawn)?;
    // The thread waits for SIGUSR1 until the process exits.
    std::thread::spawn(move || usr1.forever().for_each(|_| on_usr1()));
    announce(&handle);
    let counters = handle.core_stats().to_vec();
    handle.join()?;
    let mut total = CoreSnapshot::default();
    for core in &counters {
        total.merge(&core.snapshot());
    }
    Ok(total)
}
