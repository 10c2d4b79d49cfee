//! The epoll driver's per-session state: what the descriptor is registered for, and the send
//! that waits for the socket to become writable.
//!
//! Invariant: a slot is `Open` from `Open`/`Connect` until `Close`, `Closed` until the core has
//! been told, then `Free`. It owns its descriptor while open (closing drops it), and a send
//! that would have blocked keeps its [`SendBuf`] here until the socket is writable.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::driver::{next_generation, DriverSlot, SendBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Free,
    Open,
    /// Descriptor closed; the `closed` event is queued for the core.
    Closed,
}

pub(super) struct Slot {
    /// While open.
    pub(super) fd: Option<OwnedFd>,
    pub(super) generation: u32,
    pub(super) life: Life,
    /// The core wants input (not paused for backpressure).
    pub(super) want_read: bool,
    /// The peer's EOF or a receive error was reported: no more reads.
    pub(super) read_done: bool,
    pub(super) connecting: bool,
    /// A send that would have blocked waits for EPOLLOUT.
    pub(super) blocked: Option<Box<SendBuf>>,
    /// The descriptor is in the epoll set (which then reports HUP and ERR whatever `events`).
    pub(super) registered: bool,
    /// Events currently registered.
    pub(super) events: u32,
}

impl DriverSlot for Slot {
    fn new() -> Self {
        Slot::unused()
    }

    fn is_current(&self, generation: u32) -> bool {
        self.life == Life::Open && self.generation == generation
    }
}

impl Slot {
    fn unused() -> Self {
        Slot {
            fd: None,
            generation: 0,
            life: Life::Free,
            want_read: true,
            read_done: false,
            connecting: false,
            blocked: None,
            registered: false,
            events: 0,
        }
    }

    pub(super) fn open(&mut self, fd: OwnedFd) {
        debug_assert_eq!(self.life, Life::Free, "slot reused while in use");
        self.fd = Some(fd);
        self.generation = next_generation(self.generation);
        self.life = Life::Open;
        self.want_read = true;
        self.read_done = false;
        self.connecting = false;
        self.blocked = None;
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
        if self.connecting || self.blocked.is_some() {
            events |= libc::EPOLLOUT as u32;
        }
        events
    }

    /// The descriptor of an open slot.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("an open slot has a descriptor")
            .as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    const IN: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
    const OUT: u32 = libc::EPOLLOUT as u32;

    #[test]
    fn interest_follows_what_the_session_waits_for() {
        let mut s = Slot::new();
        s.open(dev_null());
        assert_eq!(s.interest(), IN);
        s.want_read = false;
        assert_eq!(
            s.interest(),
            0,
            "paused: no EPOLLIN, or level-triggered epoll spins"
        );
        s.blocked = Some(SendBuf::holding(b"x"));
        assert_eq!(s.interest(), OUT);
        s.want_read = true;
        assert_eq!(s.interest(), IN | OUT);
        s.read_done = true;
        s.blocked = None;
        assert_eq!(s.interest(), 0, "after EOF nothing is wanted");
        let mut c = Slot::new();
        c.open(dev_null());
        c.connecting = true;
        assert_eq!(c.interest(), OUT, "a connect waits for writability only");
    }

    #[test]
    fn reuse_changes_generation() {
        let mut s = Slot::new();
        s.open(dev_null());
        let g = s.generation;
        s.life = Life::Closed;
        assert!(!s.is_current(g));
        s.life = Life::Free;
        s.open(dev_null());
        assert!(!s.is_current(g));
        assert!(s.is_current(s.generation));
    }
}
