//! Raw system calls, each wrapped once.
//!
//! Every libc call in the engine goes through [`cvt`], which turns the C convention (-1 and
//! `errno`) into `io::Error`, and every negative completion result becomes an `io::Error` in
//! [`cqe_error`], so errors are converted in exactly two places.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The integer types libc calls return, where -1 means "see errno".
pub(crate) trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}

impl MinusOne for libc::c_int {
    const MINUS_ONE: Self = -1;
}

impl MinusOne for libc::ssize_t {
    const MINUS_ONE: Self = -1;
}

/// Turns a libc return value into `io::Result`, reading `errno` when it is -1.
pub(crate) fn cvt<T: MinusOne>(res: T) -> io::Result<T> {
    if res == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// An anonymous, private, read-write mapping of `len` bytes.
pub(crate) fn mmap_anon(len: usize) -> io::Result<std::ptr::NonNull<u8>> {
    // SAFETY: an anonymous private mapping; no file, no fixed address.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps a mapping made by [`mmap_anon`].
///
/// # Safety
///
/// `ptr` and `len` are a mapping from [`mmap_anon`], nothing refers to it any more (neither
/// our code nor the kernel), and it is unmapped once.
pub(crate) unsafe fn munmap(ptr: std::ptr::NonNull<u8>, len: usize) {
    // SAFETY: this function's contract.
    let res = cvt(unsafe { libc::munmap(ptr.as_ptr().cast(), len) });
    debug_assert!(res.is_ok(), "munmap: {res:?}");
}

/// Shuts down both directions of a socket: its peer sees the end now, and operations
/// in flight on it complete (a receive with EOF, a send with EPIPE).
pub(crate) fn shutdown_both(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both)
}

/// RLIMIT_MEMLOCK's soft limit (`None`: unlimited).
pub(crate) fn memlock_limit() -> io::Result<Option<u64>> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` outlives the call; the kernel writes it.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) })?;
    Ok((lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur))
}

/// The CPUs the calling thread may run on (its affinity mask), in ascending order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: the kernel writes at most `size` bytes into `set`, which outlives the call.
    cvt(unsafe { libc::sched_getaffinity(0, size, &mut set) })?;
    // SAFETY: CPU_ISSET reads `set`; every index is below the set's capacity.
    Ok((0..8 * size)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Takes an exclusive `flock` on `fd` without waiting: `Ok(false)` if another holds it.
pub(crate) fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock on a descriptor the caller keeps open for the call.
    match cvt(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lets the calling thread run on `cpus` only.
pub(crate) fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    for &cpu in cpus.iter().filter(|&&cpu| cpu < 8 * size) {
        // SAFETY: the index is below the set's capacity (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: the kernel reads `size` bytes of `set`, which outlives the call.
    cvt(unsafe { libc::sched_setaffinity(0, size, &set) }).map(drop)
}

/// The one place a negative completion result (`-errno`) becomes an `io::Error`.
pub(crate) fn cqe_error(res: i32) -> io::Error {
    debug_assert!(res < 0, "cqe_error on a non-negative result {res}");
    io::Error::from_raw_os_error(-res)
}

/// Closes `fd` now.
///
/// # Safety
///
/// The caller owns `fd`, no operation in flight names it, and nothing uses or closes it
/// afterwards (the number may be reused at once). Where the type can carry this, hold an
/// `OwnedFd` and drop it instead.
pub(crate) unsafe fn close(fd: RawFd) {
    // SAFETY: this function's contract.
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
    match cvt(unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) }) {
        Ok(8) => Ok(()),
        // The counter is saturated: a wake-up is already pending, which is all we want.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(io::Error::other("short eventfd write")),
    }
}

/// IORING_REGISTER_SEND_MSG_RING (Linux 6.13): runs the IORING_OP_MSG_RING that `entry`
/// describes at once, from a thread that has no ring of its own (`io_uring_register` on no
/// ring, fd -1). Fails as the operation would (EBADF, EBADFD, EOVERFLOW, ...), or with EINVAL
/// on a kernel without it.
pub(crate) fn send_msg_ring(entry: &io_uring::squeue::Entry) -> io::Result<()> {
    const IORING_REGISTER_SEND_MSG_RING: libc::c_uint = 31;
    const _: () = assert!(std::mem::size_of::<io_uring::squeue::Entry>() == 64);
    // SAFETY: `squeue::Entry` is `repr(C)` around the kernel's 64-byte `io_uring_sqe` (checked
    // above); the kernel copies one entry from the pointer, which is valid for the call. The
    // descriptor the entry names is the caller's to keep open (it is looked up during the call).
    let res = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            -1 as libc::c_int,
            IORING_REGISTER_SEND_MSG_RING,
            (entry as *const io_uring::squeue::Entry).cast::<libc::c_void>(),
            1 as libc::c_uint,
        )
    };
    cvt(res as libc::ssize_t).map(drop)
}

/// A new close-on-exec TCP socket for a connection to `addr`, with TCP_NODELAY if asked.
pub(crate) fn tcp_socket(addr: SocketAddr, nodelay: bool) -> io::Result<OwnedFd> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(
        domain,
        socket2::Type::STREAM.cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(nodelay)?;
    Ok(OwnedFd::from(socket))
}

/// A new Unix domain stream socket for a connect, non-blocking: a listener with a full backlog
/// fails the connect at once (EAGAIN) instead of parking it until there is room.
pub(crate) fn unix_socket() -> io::Result<OwnedFd> {
    let socket = socket2::Socket::new(
        socket2::Domain::UNIX,
        socket2::Type::STREAM.cloexec().nonblocking(),
        None,
    )?;
    Ok(OwnedFd::from(socket))
}

/// Borrows a descriptor the engine keeps open: a session's, which its driver closes only after
/// the core has let go of the session (`Command::Close`), or a driver slot's own.
///
/// # Safety
///
/// `fd` is an open descriptor (so never -1) and stays open for the borrow's lifetime.
pub(crate) unsafe fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: this function's contract.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// The address of the peer connected to `fd`.
pub(crate) fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let addr = socket2::SockRef::from(&fd).peer_addr()?;
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "peer is not an IP socket (a Unix socket's peer)",
        )
    })
}

/// Shuts down the sending side of a socket: the peer reads EOF after what was sent.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write)
}

/// Sets TCP_NODELAY on `fd`.
pub(crate) fn set_nodelay(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    socket2::SockRef::from(&fd).set_tcp_nodelay(on)
}

/// Reads TCP_NODELAY from `fd`.
pub(crate) fn nodelay(fd: BorrowedFd<'_>) -> io::Result<bool> {
    socket2::SockRef::from(&fd).tcp_nodelay()
}

/// Accepts one queued connection (close-on-exec; non-blocking when asked).
pub(crate) fn accept(listener: BorrowedFd<'_>, nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    let fd = listener.as_raw_fd();
    // SAFETY: null address pointers: the kernel writes no address.
    let conn =
        cvt(unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), flags) })?;
    // SAFETY: `conn` was just created by accept4 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(conn) })
}

/// Sets or clears O_NONBLOCK on `fd`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    socket2::SockRef::from(&fd).set_nonblocking(on)
}

/// A close-on-exec epoll instance.
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds, modifies or removes `fd` in `epfd`, with `events` and the token `data`.
pub(crate) fn epoll_ctl(
    epfd: RawFd,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    // SAFETY: `event` outlives the call; the kernel copies it.
    cvt(unsafe { libc::epoll_ctl(epfd, op, fd, &mut event) }).map(drop)
}

/// Waits for events on `epfd` for at most `timeout_ms` (-1: forever). EINTR reads as no events.
pub(crate) fn epoll_wait(
    epfd: RawFd,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as i32;
    // SAFETY: the kernel writes at most `max` events into `events`.
    match cvt(unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), max, timeout_ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
        Err(e) => Err(e),
    }
}

/// One non-blocking receive into `buf`.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    cvt(n).map(|n| n as usize)
}

/// One non-blocking sendmsg of `iov`, without SIGPIPE.
///
/// # Safety
///
/// Every iovec must describe readable memory that stays valid for the call.
pub(crate) unsafe fn sendmsg(fd: BorrowedFd<'_>, iov: &[libc::iovec]) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    let fd = fd.as_raw_fd();
    let n = if let [one] = iov {
        // One buffer: plain send, which spares the kernel copying a msghdr and an iovec array.
        // SAFETY: the iovec describes readable memory, valid per this function's contract.
        unsafe { libc::send(fd, one.iov_base, one.iov_len, flags) }
    } else {
        // SAFETY: all-zero is a valid msghdr (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: `msg` points to `iov`, valid per this function's contract.
        unsafe { libc::sendmsg(fd, &msg, flags) }
    };
    cvt(n).map(|n| n as usize)
}

/// Starts a non-blocking connect of `fd` to `addr`; `Ok(true)` if it completed at once.
pub(crate) fn connect(fd: BorrowedFd<'_>, addr: &socket2::SockAddr) -> io::Result<bool> {
    match socket2::SockRef::from(&fd).connect(addr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Bytes received by the socket and not yet read (FIONREAD).
pub(crate) fn unread(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer, which points to `n`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
}

/// The pending error of a socket (SO_ERROR), e.g. the outcome of a non-blocking connect.
pub(crate) fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    socket2::SockRef::from(&fd).take_error()
}

/// Reads (and so resets) an eventfd's counter (called when epoll says it is readable).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut value = 0u64;
    // SAFETY: the kernel writes 8 bytes into `value`.
    cvt(unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) }).map(drop)
}

/// Attaches the upper layer protocol `name` (e.g. `tls`) to the TCP socket `fd` (TCP_ULP).
pub(crate) fn set_tcp_ulp(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    /// TCP_ULP from linux/tcp.h (libc does not name it).
    const TCP_ULP: libc::c_int = 31;
    // SAFETY: `fd` is open for the borrow; the option value is `name`'s bytes, read by the
    // kernel during the call only.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    })
    .map(drop)
}
