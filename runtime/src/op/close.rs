//! Close of a descriptor, batched with the turn's other submissions. Submitted only when no
//! other request names the descriptor.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::user_data::UserData;

pub(crate) fn close(fd: RawFd, ud: UserData) -> squeue::Entry {
    opcode::Close::new(types::Fd(fd))
        .build()
        .user_data(ud.raw())
}
