//! A plain read, used for the core's wake-up eventfd.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::user_data::UserData;

pub(crate) fn read(fd: RawFd, buf: *mut u8, len: u32, ud: UserData) -> squeue::Entry {
    opcode::Read::new(types::Fd(fd), buf, len)
        .build()
        .user_data(ud.raw())
}
