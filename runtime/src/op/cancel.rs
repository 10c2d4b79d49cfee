//! Cancellation. Closing a descriptor does not cancel io_uring requests on it, so a session's
//! requests are cancelled by descriptor first; each cancelled request still posts its own
//! final completion, in either order relative to the cancel's.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::user_data::UserData;

/// Cancels every request on `fd`.
pub(crate) fn all_on_fd(fd: RawFd, ud: UserData) -> squeue::Entry {
    opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
        .build()
        .user_data(ud.raw())
}

/// Cancels the request submitted with `target`.
pub(crate) fn by_user_data(target: UserData, ud: UserData) -> squeue::Entry {
    opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target.raw()).all())
        .build()
        .user_data(ud.raw())
}
