//! The listening sockets: one per core on the same address, with SO_REUSEPORT, so the kernel
//! spreads new connections over the cores' accept queues.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::error::ServerError;
use crate::sys;

fn bind_one(addr: SocketAddr, backlog: i32, nodelay: bool) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: no syscall per accept.
    socket.set_tcp_nodelay(nodelay)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// Whether another socket already listens on `addr`. SO_REUSEPORT would let our listeners
/// join its group silently and take part of its traffic, so a socket without SO_REUSEPORT
/// (but with SO_REUSEADDR, which ignores connections lingering in TIME_WAIT) tries the
/// address first: the kernel refuses it only where a socket is bound there.
///
/// Two servers starting at the same instant can both pass this check; it is for the common
/// mistake (a second instance started by hand or by a supervisor), not a lock.
fn check_free(addr: SocketAddr) -> Result<(), ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    match socket.bind(&addr.into()) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            Err(ServerError::AddrInUse { addr })
        }
        // Any other failure shows again, in context, when the listeners bind.
        _ => Ok(()),
    }
}

/// One listener per core. The first binds `config.addr`; when that asks for port 0 the others
/// bind the port the first one got, so every core serves the same address. Unless
/// `config.share_port`, an address another socket already listens on fails with
/// [`ServerError::AddrInUse`].
pub(crate) fn bind_all(config: &Config) -> Result<(Vec<OwnedFd>, SocketAddr), ServerError> {
    if !config.share_port && config.addr.port() != 0 {
        check_free(config.addr)?;
    }
    let err = |addr| {
        move |source: io::Error| match source.raw_os_error() {
            Some(libc::EADDRINUSE) => ServerError::AddrInUse { addr },
            _ => ServerError::Bind { addr, source },
        }
    };
    let first = bind_one(config.addr, config.backlog, config.nodelay).map_err(err(config.addr))?;
    let local = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| ServerError::Bind {
            addr: config.addr,
            source: io::Error::other("listener has no IP address"),
        })?;
    let mut listeners = vec![OwnedFd::from(first)];
    for _ in 1..config.cpus.len() {
        let socket = bind_one(local, config.backlog, config.nodelay).map_err(err(local))?;
        listeners.push(OwnedFd::from(socket));
    }
    Ok((listeners, local))
}

/// Takes the connections queued in `listener`'s backlog (at most `limit`), handing each to
/// `take`, then closes the listener. Closing a SO_REUSEPORT listener first would reset them.
/// Accepted sockets are non-blocking when asked.
///
/// O_NONBLOCK is set on the listener's file description, which a Unix server's cores share
/// (duplicates of one descriptor): the others, still accepting, see it too. Harmless: an
/// epoll core set it at its start (a blocking accept could sleep once another core took the
/// connection it was woken for), and an io_uring accept waits for a connection whatever the
/// flag since Linux 5.18 (the driver needs 6.0; a test in `driver::uring` pins it). Nothing
/// else accepts on these descriptors.
pub(crate) fn drain(
    listener: OwnedFd,
    nonblocking: bool,
    limit: usize,
    mut take: impl FnMut(OwnedFd),
) {
    if sys::set_nonblocking(listener.as_fd(), true).is_ok() {
        for _ in 0..limit {
            match sys::accept(listener.as_fd(), nonblocking) {
                Ok(fd) => take(fd),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => {}
                Err(_) => break,
            }
        }
    }
    drop(listener);
}
