//! What a running server is made of, as its start-up line says it: for a service that prints
//! or exports it its own way (the line itself goes to `log`, which prints nothing without a
//! backend).

use std::fmt;
use std::net::SocketAddr;

use crate::probe::DriverKind;
use crate::unix::UnixAddr;

/// What a server (or client) runs on; see [`ServerHandle::info`](crate::ServerHandle::info).
/// Its `Display` is the start-up line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The driver in use: [`DriverKind::IoUring`] or [`DriverKind::Epoll`], never `Auto`.
    pub driver: DriverKind,
    /// The driver and its features, e.g. `io_uring driver (multishot accept and recv, ...)`.
    pub driver_detail: String,
    /// Why io_uring is not used, where epoll was picked for want of it (`None` where io_uring
    /// runs, or epoll was asked for).
    pub fallback: Option<String>,
    /// The CPU of each worker, in worker order.
    pub cpus: Vec<usize>,
    /// Whether workers are pinned to their CPUs.
    pub pinned: bool,
    /// The address listened on (a server) or connected to (a client).
    pub addr: SocketAddr,
    /// The Unix socket listened on, for a server on one (`addr` is then unspecified).
    pub unix: Option<UnixAddr>,
    /// A server (listening) rather than a client.
    pub listening: bool,
    /// How its sessions speak TLS, if they do: who does the record layer, and whether the
    /// kernel offers kernel TLS.
    pub tls: Option<String>,
}

impl fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.driver_detail)?;
        if let Some(why) = &self.fallback {
            write!(f, "; io_uring unavailable: {why}")?;
        }
        write!(
            f,
            " on {} core(s) ({} {:?}), {} {}",
            self.cpus.len(),
            if self.pinned {
                "CPUs"
            } else {
                "unpinned, CPUs"
            },
            self.cpus,
            if self.listening {
                "listening on"
            } else {
                "connecting to"
            },
            match &self.unix {
                Some(unix) => format!("unix:{unix}"),
                None => self.addr.to_string(),
            }
        )?;
        if let Some(tls) = &self.tls {
            write!(f, "; {tls}")?;
        }
        Ok(())
    }
}
