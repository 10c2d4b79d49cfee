//! Sends of a session's output: `send` for one contiguous chunk, `sendmsg` with several iovecs
//! when output is split. Always MSG_NOSIGNAL: a peer that went away gives EPIPE, never SIGPIPE
//! (writev cannot do that, and a program embedding ringwire may not ignore SIGPIPE).

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::ring::Completion;
use crate::sys;
use crate::user_data::UserData;

pub(crate) fn send(fd: RawFd, buf: *const u8, len: u32, ud: UserData) -> squeue::Entry {
    opcode::Send::new(types::Fd(fd), buf, len)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(ud.raw())
}

pub(crate) fn sendmsg(fd: RawFd, msg: *const libc::msghdr, ud: UserData) -> squeue::Entry {
    opcode::SendMsg::new(types::Fd(fd), msg)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build()
        .user_data(ud.raw())
}

/// Bytes written, or why not.
pub(crate) fn complete(c: &Completion) -> io::Result<usize> {
    if c.res >= 0 {
        Ok(c.res as usize)
    } else {
        Err(sys::cqe_error(c.res))
    }
}
