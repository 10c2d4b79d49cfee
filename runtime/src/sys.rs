//! Raw system calls, each wrapped once.
//!
//! Every libc call in the engine goes through [`cvt`], which turns the C convention (-1 and
//! `errno`) into `io::Error`, and every negative completion result becomes an `io::Error` in
//! [`cqe_error`], so errors are converted in exactly two places.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Turns a libc return value into `io::Result`, reading `errno` when it is -1.
pub(crate) fn cvt(res: libc::c_int) -> io::Result<libc::c_int> {
    if res == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// The one place a negative completion result (`-errno`) becomes an `io::Error`.
pub(crate) fn cqe_error(res: i32) -> io::Error {
    debug_assert!(res < 0, "cqe_error on a non-negative result {res}");
    io::Error::from_raw_os_error(-res)
}

/// Closes `fd` now. Used only where no operation can still name it.
pub(crate) fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and nothing else will use or close it afterwards.
    let res = unsafe { libc::close(fd) };
    debug_assert!(
        res == 0,
        "close({fd}) failed: {}",
        io::Error::last_os_error()
    );
}

/// A blocking (io_uring then polls it rather than failing with EAGAIN), close-on-exec eventfd: the wake-up other threads use to reach a core.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking whoever waits on it.
pub(crate) fn eventfd_signal(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: the pointer and length describe `one`, which outlives the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    match n {
        8 => Ok(()),
        // The counter is saturated: a wake-up is already pending, which is all we want.
        -1 if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => Ok(()),
        -1 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::other("short eventfd write")),
    }
}

fn borrow(fd: &RawFd) -> BorrowedFd<'_> {
    // SAFETY: callers pass descriptors they keep open for the duration of the borrow.
    unsafe { BorrowedFd::borrow_raw(*fd) }
}

/// The address of the peer connected to `fd`.
pub(crate) fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    let addr = socket2::SockRef::from(&borrow(&fd)).peer_addr()?;
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "peer is not an IP socket"))
}

/// Sets TCP_NODELAY on `fd`.
pub(crate) fn set_nodelay(fd: RawFd, on: bool) -> io::Result<()> {
    socket2::SockRef::from(&borrow(&fd)).set_tcp_nodelay(on)
}

/// Reads TCP_NODELAY from `fd`.
pub(crate) fn nodelay(fd: RawFd) -> io::Result<bool> {
    socket2::SockRef::from(&borrow(&fd)).tcp_nodelay()
}
