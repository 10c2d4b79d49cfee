//! The io_uring driver's doorbell: ringing a sleeping core with an IORING_OP_MSG_RING from
//! this core's own ring (see `crate::doorbell` for the shared table and why its descriptors
//! stay valid), and the completions that go with it.
//!
//! The entry is only queued here; it reaches the kernel with this core's next enter, which
//! comes right after the turn's `flush_mail` (the core's wait, or its turn without waiting).
//! With `IOSQE_CQE_SKIP_SUCCESS` a delivered doorbell costs the sender no completion; a failed
//! one completes here and the target is rung through its eventfd instead (counted). On the
//! target, the kernel posts a completion tagged [`crate::doorbell::RUNG`] (for a ring with
//! DEFER_TASKRUN, as task work on its thread, which wakes it in its wait); it means only
//! "look at your mailbox", which the worker does at the top of every turn.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::UringDriver;
use crate::doorbell::{Doorbells, RUNG};
use crate::op;
use crate::ring::{Completion, Ring};
use crate::user_data::UserData;

/// This core's place among its server's doorbells.
pub(crate) struct CoreBell {
    pub(crate) bells: Arc<Doorbells>,
    /// This core's index.
    pub(crate) core: usize,
}

/// The driver's doorbell state.
pub(super) struct Bell {
    table: Arc<Doorbells>,
    core: usize,
    /// Submit with `IOSQE_CQE_SKIP_SUCCESS` (the kernel has it).
    skip_success: bool,
    /// The target rings named by entries still queued: held until an enter has consumed them,
    /// so that their descriptors stay the targets' rings (see `crate::doorbell`).
    held: Vec<Arc<OwnedFd>>,
}

impl Bell {
    /// Shares `ring` in the table; `None` (eventfd doorbells) if MSG_RING is not used, or the
    /// descriptor could not be duplicated.
    pub(super) fn publish(bell: Option<CoreBell>, ring: &Ring) -> Option<Bell> {
        let CoreBell { bells, core } = bell?;
        if !bells.uses_msg_ring() {
            return None;
        }
        if let Err(e) = bells.publish(core, ring.as_fd()) {
            log::warn!("ringwire: worker {core}: cannot share its ring ({e}); eventfd doorbell");
            return None;
        }
        Some(Bell {
            table: bells,
            core,
            skip_success: ring.skips_success(),
            held: Vec::new(),
        })
    }
}

impl UringDriver {
    /// Queues a MSG_RING to core `target`'s ring; false if it has none here (the caller rings
    /// its eventfd).
    pub(super) fn ring_doorbell(&mut self, target: usize) -> bool {
        let Some(bell) = &mut self.bell else {
            return false;
        };
        let Some(ring) = bell.table.ring_fd(target) else {
            return false;
        };
        let entry = op::msg_ring::data(
            ring.as_raw_fd(),
            RUNG,
            UserData::msg_ring(target),
            bell.skip_success,
        );
        bell.held.push(ring);
        // SAFETY: a MSG_RING points to no memory; the descriptor it names stays open and the
        // target's ring (held in `bell.held`) until an enter has consumed the entry.
        unsafe { self.push(&entry) };
        self.stats.doorbells.add(1);
        true
    }

    /// After an enter: the rings named by entries the kernel has consumed may be let go.
    pub(super) fn release_rings(&mut self) {
        if let Some(bell) = &mut self.bell {
            if !bell.held.is_empty() && self.ring.sq_is_empty() {
                bell.held.clear();
            }
        }
    }

    /// This core's MSG_RING completed: only a failure does, when the kernel skips successes.
    /// The target is rung through its eventfd instead.
    pub(super) fn complete_msg_ring(&mut self, ud: UserData, c: &Completion) {
        if c.res >= 0 {
            return; // Delivered (a kernel without CQE_SKIP reports it).
        }
        let target = ud.slot() as usize;
        let Some(bell) = &self.bell else {
            debug_assert!(false, "a MSG_RING completion without doorbells");
            return;
        };
        log::debug!(
            "ringwire: worker {}: MSG_RING to worker {target} failed ({}); eventfd instead",
            bell.core,
            crate::sys::cqe_error(c.res)
        );
        self.stats.doorbell_fallbacks.add(1);
        self.stats.eventfd_bells.add(1);
        bell.table.ring_eventfd(target);
    }

    /// The driver is going: no core finds this ring from now on.
    pub(super) fn revoke_ring(&mut self) {
        if let Some(bell) = &self.bell {
            bell.table.revoke(bell.core);
        }
    }

    /// The doorbell, for the start-up line.
    pub(super) fn doorbell_kind(&self) -> &'static str {
        if self.bell.is_some() {
            "doorbell MSG_RING"
        } else {
            "doorbell eventfd"
        }
    }
}
