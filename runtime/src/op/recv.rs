//! Multishot receive over the core's provided-buffer ring: one submission yields a completion
//! per filled buffer until it ends (EOF, error, buffers ran dry, or the kernel stopped it).

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::buf_ring::RecvBuf;
use crate::ring::Completion;
use crate::sys;
use crate::user_data::UserData;

pub(crate) fn multishot(fd: RawFd, bgid: u16, ud: UserData) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), bgid)
        .build()
        .user_data(ud.raw())
}

/// How a multishot receive ended.
#[derive(Debug)]
pub(crate) enum RecvEnd {
    /// The peer closed its side (a zero-length receive).
    Eof,
    /// The buffer ring ran dry (ENOBUFS); the data waits in the socket. Re-arm once buffers
    /// are back.
    NoBuffers,
    /// Ended by our cancellation.
    Cancelled,
    /// Ended by the kernel without an error (e.g. completion queue overflow): re-arm.
    Stopped,
    /// Failed.
    Failed(io::Error),
}

/// What one receive completion carries.
#[derive(Debug)]
pub(crate) struct RecvCqe {
    /// Buffer id and length of received bytes (zero if the completion carries a buffer but
    /// no data).
    pub(crate) data: Option<RecvBuf>,
    /// Set when the receive is no longer armed.
    pub(crate) end: Option<RecvEnd>,
}

///
/// # Safety
///
/// `c` was reaped from the ring and is handled once: a buffer it carries becomes a `RecvBuf`.
pub(crate) unsafe fn complete(c: &Completion) -> RecvCqe {
    // A completion that carries a buffer hands it over whatever its result (an EOF or error
    // may, on some kernels): it must go back to the ring even when it holds no bytes.
    let data = c
        .buffer()
        // SAFETY: this function's contract: the kernel handed this buffer to this completion.
        .map(|bid| unsafe { RecvBuf::from_completion(bid, c.res.max(0) as usize) });
    let end = if c.more() {
        None
    } else {
        Some(match c.res {
            0 => RecvEnd::Eof,
            n if n > 0 => RecvEnd::Stopped,
            n if n == -libc::ENOBUFS => RecvEnd::NoBuffers,
            n if n == -libc::ECANCELED => RecvEnd::Cancelled,
            n => RecvEnd::Failed(sys::cqe_error(n)),
        })
    };
    RecvCqe { data, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The kernel ABI values (include/uapi/linux/io_uring.h).
    const MORE: u32 = 1 << 1;
    const BUFFER: u32 = 1 << 0;
    const SHIFT: u32 = 16;

    /// Decodes a fabricated completion.
    fn decode(c: &Completion) -> RecvCqe {
        // SAFETY: each is decoded once, and a buffer it names is consumed with `into_parts`
        // (never given back to a ring).
        unsafe { complete(c) }
    }

    fn cqe(res: i32, flags: u32) -> Completion {
        Completion {
            user_data: 0,
            res,
            flags,
        }
    }

    #[test]
    fn data_with_more_stays_armed() {
        let r = decode(&cqe(100, MORE | BUFFER | (7 << SHIFT)));
        assert_eq!(r.data.map(RecvBuf::into_parts), Some((7, 100)));
        assert!(r.end.is_none());
    }

    #[test]
    fn data_without_more_must_be_rearmed() {
        let r = decode(&cqe(5, BUFFER | (3 << SHIFT)));
        assert_eq!(r.data.map(RecvBuf::into_parts), Some((3, 5)));
        assert!(matches!(r.end, Some(RecvEnd::Stopped)));
    }

    #[test]
    fn terminal_results() {
        assert!(matches!(decode(&cqe(0, 0)).end, Some(RecvEnd::Eof)));
        assert!(matches!(
            decode(&cqe(-libc::ENOBUFS, 0)).end,
            Some(RecvEnd::NoBuffers)
        ));
        assert!(matches!(
            decode(&cqe(-libc::ECANCELED, 0)).end,
            Some(RecvEnd::Cancelled)
        ));
        match decode(&cqe(-libc::ECONNRESET, 0)).end {
            Some(RecvEnd::Failed(e)) => assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET)),
            other => panic!("{other:?}"),
        }
        assert!(decode(&cqe(0, 0)).data.is_none());
    }

    #[test]
    fn a_buffer_on_an_empty_completion_is_still_handed_back() {
        let r = decode(&cqe(0, BUFFER | (9 << SHIFT)));
        assert_eq!(r.data.map(RecvBuf::into_parts), Some((9, 0)));
        assert!(matches!(r.end, Some(RecvEnd::Eof)));
    }
}
