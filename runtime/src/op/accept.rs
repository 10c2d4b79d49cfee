//! Multishot accept: one submission yields a completion per accepted connection until it ends
//! (and a single-shot accept, for a listener several cores share).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

use crate::ring::Completion;
use crate::sys;
use crate::user_data::UserData;

/// A multishot accept on `listener`; accepted sockets are close-on-exec.
pub(crate) fn multishot(listener: RawFd, ud: UserData) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(listener))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ud.raw())
}

/// A single-shot accept on `listener` (one connection, then re-armed); accepted sockets are
/// close-on-exec. For a listener the cores share: each re-arm queues this ring's waiter
/// behind the other cores', so the kernel, which wakes the first waiter, takes turns.
pub(crate) fn single(listener: RawFd, ud: UserData) -> squeue::Entry {
    opcode::Accept::new(
        types::Fd(listener),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .flags(libc::SOCK_CLOEXEC)
    .build()
    .user_data(ud.raw())
}

/// What one accept completion says.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// A new connection's descriptor; the accept is still armed when `more`.
    Conn { fd: OwnedFd, more: bool },
    /// The accept ended without error and must be re-armed.
    Ended,
    /// The accept failed and ended (EMFILE, ENFILE, ECANCELED, ...).
    Failed(io::Error),
}

///
/// # Safety
///
/// `c` was reaped from the ring and is handled once: a descriptor it carries becomes an
/// `OwnedFd`, which closes it.
pub(crate) unsafe fn complete(c: &Completion) -> Accepted {
    if c.res >= 0 {
        Accepted::Conn {
            // SAFETY: a non-negative accept result is a descriptor the kernel just created for
            // us, and this completion is handled once (this function's contract).
            fd: unsafe { OwnedFd::from_raw_fd(c.res) },
            more: c.more(),
        }
    } else if c.more() {
        // An error that leaves the accept armed (a connection aborted before accept).
        Accepted::Failed(sys::cqe_error(c.res))
    } else if c.res == -libc::ECONNABORTED {
        Accepted::Ended
    } else {
        Accepted::Failed(sys::cqe_error(c.res))
    }
}
