//! IORING_OP_MSG_RING with data: posts a completion on another ring, the doorbell between
//! cores. The entry names the target ring by descriptor only; the kernel looks it up when the
//! entry is submitted, so the descriptor must still be the target's ring then (the caller's
//! burden, see `crate::doorbell`). It points to no memory.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::user_data::UserData;

/// Posts a completion with user_data `posted` (and result 0) on the ring `ring_fd`. `ud` is
/// this entry's own user_data; with `skip_success` the sender sees a completion only if the
/// message could not be posted.
pub(crate) fn data(
    ring_fd: RawFd,
    posted: UserData,
    ud: UserData,
    skip_success: bool,
) -> squeue::Entry {
    let entry = opcode::MsgRingData::new(types::Fd(ring_fd), 0, posted.raw(), None)
        .build()
        .user_data(ud.raw());
    if skip_success {
        entry.flags(squeue::Flags::SKIP_SUCCESS)
    } else {
        entry
    }
}
