//! Every core's doorbell: how to wake a core that announced it sleeps (`crate::mailbox` says
//! when to ring). Each core has an eventfd, which works from any thread and under either
//! driver; where the io_uring driver runs and the kernel has IORING_OP_MSG_RING, each core's
//! ring descriptor is shared too, so that another core rings it with a MSG_RING from its own
//! ring (no system call of its own: the entry leaves with the sender's next enter, the one it
//! then waits in) and a thread with no ring with IORING_REGISTER_SEND_MSG_RING (Linux 6.13).
//! The woken core sees one completion with a reserved user_data and nothing to read.
//!
//! **The invariant a reader must keep: a MSG_RING names a descriptor only while it is the
//! target's ring.** The kernel looks the descriptor up when the entry is submitted, which for
//! a core is its next enter, not when the entry is queued. A plain table of descriptor numbers
//! would let a sender name a number that the target's exit closed and another `open` reused
//! (a socket: an error; another ring, even another server's: a stray completion there). So the
//! table holds, per core, a *duplicate* of its ring descriptor in an `Arc`, published by the
//! core once its ring exists (before it reports ready) and taken back by [`Doorbells::revoke`]
//! when its driver is dropped, which is before its ring closes and before its mailbox closes
//! (so once `Router::is_closed(core)` holds, nobody finds the descriptor here any more). A
//! sender clones the `Arc` under the entry's lock and holds the clone until the kernel has
//! consumed its entry: a core until an enter left its submission queue empty, a thread for
//! its system call. The duplicate, and with it the number, stays open while any entry may
//! name it, and closes with the last holder, so no number is reused under a sender. (The
//! price: a sender's clone keeps an exited core's ring from being torn down until the sender's
//! next enter.)

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::op;
use crate::sys;
use crate::user_data::{Op, UserData};

/// The doorbells of one server's cores. Shared by its cores' drivers and its `Router`.
pub(crate) struct Doorbells {
    /// `eventfds[core]`: the core's wake-up eventfd, read by its driver.
    eventfds: Arc<Vec<Arc<OwnedFd>>>,
    /// `rings[core]`: a duplicate of the core's ring descriptor, while it serves.
    rings: Box<[Mutex<Option<Arc<OwnedFd>>>]>,
    /// The cores' drivers publish their rings: the io_uring driver runs, MSG_RING works and
    /// the configuration wants it.
    msg_ring: bool,
    /// Threads without a ring may ring cores with IORING_REGISTER_SEND_MSG_RING.
    blind: bool,
}

/// What a MSG_RING doorbell posts on the target's ring.
pub(crate) const RUNG: UserData = UserData::engine(Op::Doorbell);

impl Doorbells {
    /// The doorbells of `eventfds.len()` cores. `msg_ring`: cores publish their rings for
    /// MSG_RING; `blind`: threads without a ring may send MSG_RING too.
    pub(crate) fn new(eventfds: Arc<Vec<Arc<OwnedFd>>>, msg_ring: bool, blind: bool) -> Self {
        let rings = (0..eventfds.len()).map(|_| Mutex::new(None)).collect();
        Doorbells {
            eventfds,
            rings,
            msg_ring,
            blind: msg_ring && blind,
        }
    }

    /// Whether cores ring each other over MSG_RING (else over eventfds only).
    pub(crate) fn uses_msg_ring(&self) -> bool {
        self.msg_ring
    }

    fn slot(&self, core: usize) -> MutexGuard<'_, Option<Arc<OwnedFd>>> {
        // A panic while holding the lock leaves the slot consistent (one store or one clone).
        self.rings[core]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Core `core`'s driver shares its ring: a duplicate of `ring`, kept until [`revoke`].
    ///
    /// [`revoke`]: Doorbells::revoke
    pub(crate) fn publish(&self, core: usize, ring: BorrowedFd<'_>) -> io::Result<()> {
        if !self.msg_ring {
            return Ok(());
        }
        let dup = ring.try_clone_to_owned()?;
        *self.slot(core) = Some(Arc::new(dup));
        Ok(())
    }

    /// Core `core`'s driver is going: no sender finds its ring from now on. The duplicate
    /// closes once the last sender holding it has had its entry consumed.
    pub(crate) fn revoke(&self, core: usize) {
        let ring = self.slot(core).take();
        drop(ring);
    }

    /// Core `core`'s ring, to name in a MSG_RING; the descriptor stays the target's ring while
    /// the returned `Arc` is held. `None`: the core has no ring here (epoll, MSG_RING off, or
    /// it has stopped).
    pub(crate) fn ring_fd(&self, core: usize) -> Option<Arc<OwnedFd>> {
        if !self.msg_ring {
            return None;
        }
        self.slot(core).clone()
    }

    /// Core `core`'s eventfd.
    #[cfg(test)]
    pub(crate) fn eventfd(&self, core: usize) -> &OwnedFd {
        &self.eventfds[core]
    }

    /// Rings core `core` through its eventfd.
    pub(crate) fn ring_eventfd(&self, core: usize) {
        if let Err(e) = sys::eventfd_signal(&self.eventfds[core]) {
            log::error!("ringwire: cannot wake worker {core}: {e}");
        }
    }

    /// Rings core `core` from a thread that has no ring: a MSG_RING sent with
    /// IORING_REGISTER_SEND_MSG_RING where the kernel has it and the core has a ring, else its
    /// eventfd.
    pub(crate) fn ring_off_core(&self, core: usize) {
        if self.blind {
            if let Some(ring) = self.ring_fd(core) {
                // `ring` is held across the call, in which the kernel looks the descriptor up.
                let entry = op::msg_ring::data(ring.as_raw_fd(), RUNG, RUNG, false);
                if sys::send_msg_ring(&entry).is_ok() {
                    return;
                }
            }
        }
        self.ring_eventfd(core);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn bells(cores: usize, msg_ring: bool) -> Doorbells {
        let eventfds = (0..cores)
            .map(|_| Arc::new(sys::eventfd().unwrap()))
            .collect();
        Doorbells::new(Arc::new(eventfds), msg_ring, true)
    }

    #[test]
    fn a_revoked_ring_is_not_handed_out_but_stays_open_while_held() {
        let table = bells(2, true);
        let ring = sys::eventfd().unwrap(); // Any descriptor will do for the table itself.
        table.publish(1, ring.as_fd()).unwrap();
        assert!(table.ring_fd(0).is_none(), "core 0 published nothing");
        let held = table.ring_fd(1).expect("core 1's ring");
        assert_ne!(
            held.as_raw_fd(),
            ring.as_raw_fd(),
            "a duplicate, not the ring's own"
        );
        table.revoke(1);
        assert!(
            table.ring_fd(1).is_none(),
            "nobody finds it after the revoke"
        );
        // The holder's duplicate is still open: its number cannot have been reused.
        let flags = sys::cvt(fd_flags(held.as_raw_fd()));
        assert!(flags.is_ok(), "held duplicate still open");
    }

    #[test]
    fn without_msg_ring_nothing_is_published() {
        let table = bells(1, false);
        let ring = sys::eventfd().unwrap();
        table.publish(0, ring.as_fd()).unwrap();
        assert!(table.ring_fd(0).is_none());
        assert!(!table.uses_msg_ring());
        // The eventfd path still works.
        table.ring_eventfd(0);
        table.ring_off_core(0);
        sys::eventfd_drain(table.eventfds[0].as_fd()).unwrap();
    }

    fn fd_flags(fd: std::os::fd::RawFd) -> libc::c_int {
        // SAFETY: F_GETFD reads a descriptor's flags; no memory is passed.
        unsafe { libc::fcntl(fd, libc::F_GETFD) }
    }
}
