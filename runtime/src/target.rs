//! Where an outbound session connects: a TCP address, or a Unix domain stream socket (a
//! socket file or an abstract name).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::SockAddr;

use crate::sys;
use crate::unix::UnixAddr;

/// The address of an outbound connection: `Session::connect` and a `Client` take one, and
/// either kind of address converts into it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix domain stream socket.
    Unix(UnixAddr),
}

impl Target {
    /// A new socket for the connect and the kernel's form of the address. A Unix socket is
    /// non-blocking: a listener with a full backlog fails its connect at once (EAGAIN, see
    /// `ConnectError::Busy`) rather than parking it until the connect timeout. Fails for a
    /// Unix path too long for a socket address.
    pub(crate) fn socket(&self, nodelay: bool) -> io::Result<(OwnedFd, SockAddr)> {
        match self {
            Target::Tcp(addr) => Ok((sys::tcp_socket(*addr, nodelay)?, (*addr).into())),
            Target::Unix(addr) => {
                let sock_addr = addr.sock_addr()?;
                Ok((sys::unix_socket()?, sock_addr))
            }
        }
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target::Tcp(addr)
    }
}

impl From<UnixAddr> for Target {
    fn from(addr: UnixAddr) -> Target {
        Target::Unix(addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => addr.fmt(f),
            Target::Unix(addr) => write!(f, "unix:{addr}"),
        }
    }
}
