//! The io_uring driver's per-session state: which operations are in flight, the send buffer
//! the kernel reads, and the descriptor.
//!
//! Invariant: a slot goes `Free -> Open -> Closing -> CloseSubmitted -> Free`, and the close is
//! submitted only when no receive, send or cancel of the slot is in flight. The slot owns its
//! descriptor (`OwnedFd`) until the close is submitted, when the ring takes it; it owns the
//! [`SendBuf`] of a send in flight until that send's completion. The slot lives in a vector
//! that never reallocates, so `addr` keeps its address while a connect may read it.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use crate::driver::{next_generation, DriverSlot, SendBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Free,
    Open,
    /// Close requested; waiting for in-flight operations to finish.
    Closing,
    /// The close of the descriptor is submitted.
    CloseSubmitted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recv {
    /// No receive armed (after EOF or an error).
    Idle,
    /// A multishot receive is armed.
    Armed,
    /// Ended for lack of buffers (or stopped by the kernel); queued for re-arm at turn end.
    Starved,
    /// Armed, with a cancel submitted (reading paused); its final completion is awaited.
    Cancelling,
}

/// What a close request needs submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CloseStep {
    /// Operations are in flight: cancel them; the close follows when they have completed.
    Cancel,
    /// Nothing in flight: close the descriptor now.
    Close,
    /// Already closing.
    Nothing,
}

pub(super) struct IoSlot {
    /// Until the close is submitted.
    pub(super) fd: Option<OwnedFd>,
    pub(super) generation: u32,
    pub(super) life: Life,
    pub(super) recv: Recv,
    /// The core wants to receive (false while paused for backpressure).
    pub(super) want_recv: bool,
    /// The send in flight: the kernel reads its bytes, iovecs and msghdr until it completes.
    pub(super) send: Option<Box<SendBuf>>,
    /// An outbound session's connect is in flight.
    pub(super) connecting: bool,
    /// Cancels of this slot's operations in flight.
    pub(super) cancels: u8,
    /// The peer address a connect in flight points to.
    pub(super) addr: libc::sockaddr_storage,
}

impl DriverSlot for IoSlot {
    fn new() -> Self {
        IoSlot::unused()
    }

    /// The completion names this slot as it is now (not a session that has gone).
    fn is_current(&self, generation: u32) -> bool {
        self.life != Life::Free && self.generation == generation
    }
}

impl IoSlot {
    fn unused() -> Self {
        IoSlot {
            fd: None,
            generation: 0,
            life: Life::Free,
            recv: Recv::Idle,
            want_recv: true,
            send: None,
            connecting: false,
            cancels: 0,
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (unspecified) address.
            addr: unsafe { std::mem::zeroed() },
        }
    }

    /// Takes `fd` as a new session; the generation changes so old completions are recognised.
    pub(super) fn open(&mut self, fd: OwnedFd) {
        debug_assert_eq!(self.life, Life::Free, "slot reused while in use");
        debug_assert!(self.send.is_none());
        self.fd = Some(fd);
        self.generation = next_generation(self.generation);
        self.life = Life::Open;
        self.recv = Recv::Idle;
        self.want_recv = true;
        self.connecting = false;
        self.cancels = 0;
    }

    /// The descriptor, for a submission. Only while the slot owns it (before the close).
    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Hands the descriptor to the close being submitted: from here the ring closes it.
    pub(super) fn take_fd_for_close(&mut self) -> RawFd {
        debug_assert_eq!(self.life, Life::CloseSubmitted);
        self.fd.take().map_or(-1, IntoRawFd::into_raw_fd)
    }

    /// A receive is armed or still to post its final completion.
    pub(super) fn recv_in_flight(&self) -> bool {
        matches!(self.recv, Recv::Armed | Recv::Cancelling)
    }

    pub(super) fn request_close(&mut self) -> CloseStep {
        if self.life != Life::Open {
            return CloseStep::Nothing;
        }
        self.life = Life::Closing;
        // A pause's cancel still in flight counts too: the close must follow its completion.
        if self.recv_in_flight() || self.send.is_some() || self.connecting || self.cancels > 0 {
            self.cancels += 1;
            CloseStep::Cancel
        } else {
            self.recv = Recv::Idle;
            self.life = Life::CloseSubmitted;
            CloseStep::Close
        }
    }

    /// After an operation of a closing slot completed: whether the close may be submitted now.
    pub(super) fn settle(&mut self) -> bool {
        if self.life == Life::Closing
            && !self.recv_in_flight()
            && self.send.is_none()
            && !self.connecting
            && self.cancels == 0
        {
            self.recv = Recv::Idle;
            self.life = Life::CloseSubmitted;
            true
        } else {
            false
        }
    }

    /// The descriptor is closed; the slot may be reused.
    pub(super) fn free(&mut self) {
        debug_assert_eq!(self.life, Life::CloseSubmitted);
        debug_assert!(self.fd.is_none() && self.send.is_none());
        self.life = Life::Free;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    /// What the close completion does: the descriptor is gone.
    fn close_fd(s: &mut IoSlot) {
        // SAFETY: the slot handed its descriptor to the close; nothing else names it.
        unsafe { crate::sys::close(s.take_fd_for_close()) };
    }

    fn open_slot() -> IoSlot {
        let mut s = IoSlot::new();
        s.open(dev_null());
        s.recv = Recv::Armed;
        s
    }

    #[test]
    fn close_waits_for_cancelled_ops_in_any_order() {
        // Cancel's completion first, then the receive's final one.
        let mut s = open_slot();
        s.send = Some(SendBuf::holding(b"x"));
        assert_eq!(s.request_close(), CloseStep::Cancel);
        s.cancels -= 1;
        assert!(!s.settle(), "recv and send still in flight");
        s.recv = Recv::Idle;
        assert!(!s.settle(), "send still in flight");
        s.send = None;
        assert!(s.settle());
        assert_eq!(s.life, Life::CloseSubmitted);
        assert!(!s.settle(), "close is submitted once");

        // The receive's final completion first, then the cancel's.
        let mut s = open_slot();
        assert_eq!(s.request_close(), CloseStep::Cancel);
        s.recv = Recv::Idle;
        assert!(!s.settle(), "cancel still in flight");
        s.cancels -= 1;
        assert!(s.settle());
    }

    #[test]
    fn close_while_a_pause_cancel_is_in_flight_waits_for_both_cancels() {
        let mut s = open_slot();
        // Paused: the receive's cancel is in flight.
        s.want_recv = false;
        s.recv = Recv::Cancelling;
        s.cancels += 1;
        assert_eq!(s.request_close(), CloseStep::Cancel);
        assert_eq!(s.cancels, 2);
        s.recv = Recv::Idle;
        s.cancels -= 1;
        assert!(!s.settle());
        s.cancels -= 1;
        assert!(s.settle());
    }

    #[test]
    fn idle_slot_closes_at_once_and_only_once() {
        let mut s = open_slot();
        s.recv = Recv::Starved;
        assert_eq!(s.request_close(), CloseStep::Close);
        assert_eq!(s.request_close(), CloseStep::Nothing);
        close_fd(&mut s);
        s.free();
        assert_eq!(s.life, Life::Free);
    }

    #[test]
    fn reuse_changes_generation() {
        let mut s = open_slot();
        let g = s.generation;
        assert!(s.is_current(g));
        s.request_close();
        s.cancels -= 1;
        s.recv = Recv::Idle;
        s.settle();
        close_fd(&mut s);
        s.free();
        assert!(!s.is_current(g), "a freed slot matches no completion");
        s.open(dev_null());
        assert!(
            !s.is_current(g),
            "the old generation stays stale after reuse"
        );
        assert!(s.is_current(s.generation));
    }
}
