//! The epoll driver's per-session state: what the descriptor is registered for, and the send
//! that waits for the socket to become writable.
//!
//! Invariant: a slot is `Open` from `open`/`connect` until `close`, `Closed` until the core has
//! been told, then `Free`. A blocked send keeps the caller's iovecs (whose memory the core keeps
//! frozen until it hears `sent` or `closed`) in the slot, which never moves.

use std::os::fd::RawFd;

use crate::session::MAX_IOV;
use crate::user_data::UserData;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Free,
    Open,
    /// Descriptor closed; the `closed` event is queued for the core.
    Closed,
}

pub(super) struct Slot {
    pub(super) fd: RawFd,
    pub(super) generation: u32,
    pub(super) life: Life,
    /// The core wants input (not paused for backpressure).
    pub(super) want_read: bool,
    /// The peer's EOF or a receive error was reported: no more reads.
    pub(super) read_done: bool,
    pub(super) connecting: bool,
    /// A send that would have blocked: `iov[..blocked]` waits for EPOLLOUT.
    pub(super) blocked: usize,
    pub(super) iov: [libc::iovec; MAX_IOV],
    /// The descriptor is in the epoll set (which then reports HUP and ERR whatever `events`).
    pub(super) registered: bool,
    /// Events currently registered.
    pub(super) events: u32,
}

impl Slot {
    pub(super) fn new() -> Self {
        Slot {
            fd: -1,
            generation: 0,
            life: Life::Free,
            want_read: true,
            read_done: false,
            connecting: false,
            blocked: 0,
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV],
            registered: false,
            events: 0,
        }
    }

    pub(super) fn open(&mut self, fd: RawFd) {
        debug_assert_eq!(self.life, Life::Free, "slot reused while in use");
        self.fd = fd;
        self.generation = (self.generation + 1) & UserData::GEN_MASK;
        self.life = Life::Open;
        self.want_read = true;
        self.read_done = false;
        self.connecting = false;
        self.blocked = 0;
        self.registered = false;
        self.events = 0;
    }

    /// The events epoll should report for this slot now. Level-triggered: EPOLLIN only while
    /// input is wanted, EPOLLOUT only while a connect or a blocked send waits.
    pub(super) fn interest(&self) -> u32 {
        let mut events = 0;
        if self.want_read && !self.read_done && !self.connecting {
            events |= libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
        }
        if self.connecting || self.blocked > 0 {
            events |= libc::EPOLLOUT as u32;
        }
        events
    }

    pub(super) fn is_current(&self, generation: u32) -> bool {
        self.life == Life::Open && self.generation == generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
    const OUT: u32 = libc::EPOLLOUT as u32;

    #[test]
    fn interest_follows_what_the_session_waits_for() {
        let mut s = Slot::new();
        s.open(5);
        assert_eq!(s.interest(), IN);
        s.want_read = false;
        assert_eq!(
            s.interest(),
            0,
            "paused: no EPOLLIN, or level-triggered epoll spins"
        );
        s.blocked = 2;
        assert_eq!(s.interest(), OUT);
        s.want_read = true;
        assert_eq!(s.interest(), IN | OUT);
        s.read_done = true;
        s.blocked = 0;
        assert_eq!(s.interest(), 0, "after EOF nothing is wanted");
        let mut c = Slot::new();
        c.open(6);
        c.connecting = true;
        assert_eq!(c.interest(), OUT, "a connect waits for writability only");
    }

    #[test]
    fn reuse_changes_generation() {
        let mut s = Slot::new();
        s.open(5);
        let g = s.generation;
        s.life = Life::Closed;
        assert!(!s.is_current(g));
        s.life = Life::Free;
        s.open(7);
        assert!(!s.is_current(g));
        assert!(s.is_current(s.generation));
    }
}
