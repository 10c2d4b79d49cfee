//! Connect of an outbound session's socket. The address lives in the session's I/O slot until
//! the completion arrives.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::ring::Completion;
use crate::sys;
use crate::user_data::UserData;

pub(crate) fn connect(
    fd: RawFd,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    ud: UserData,
) -> squeue::Entry {
    opcode::Connect::new(types::Fd(fd), addr, len)
        .build()
        .user_data(ud.raw())
}

pub(crate) fn complete(c: &Completion) -> io::Result<()> {
    if c.res >= 0 {
        Ok(())
    } else {
        Err(sys::cqe_error(c.res))
    }
}
