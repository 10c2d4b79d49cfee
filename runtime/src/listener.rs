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

/// One listener per core. The first binds `config.addr`; when that asks for port 0 the others
/// bind the port the first one got, so every core serves the same address.
pub(crate) fn bind_all(config: &Config) -> Result<(Vec<OwnedFd>, SocketAddr), ServerError> {
    let err = |addr| move |source| ServerError::Bind { addr, source };
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
