//! Replies that come later: a session's output as a sequence of reply slots.
//!
//! A handler that cannot answer inline (it waits for a timer, another core, the offload pool
//! or a backend session) reserves a slot with `Session::reserve` and gets a [`Reply`]. Output
//! produced after the reservation (inline replies to later requests) is held behind it; when
//! the reply is completed, its bytes and everything held behind it go out, in order, up to the
//! next slot not yet filled. With nothing reserved nothing changes: inline output goes straight
//! to the session's send queue.
//!
//! A `Reply` is `Send`: it may be completed (or dropped) on any core or thread. Its bytes
//! travel to the owning core as a message (`crate::route`): on the owning core itself they are
//! applied right after the current callback; from another core, at the end of that core's
//! turn; from any other thread, at once through the core's off-core queue.
//!
//! Invariants: bytes leave in the order the slots were reserved and the inline output was
//! produced; at most `max_replies` slots are outstanding per session (reading pauses at the
//! bound, as at the high-water mark); a reply of a session that has gone completes nothing; a
//! [`Reply`] dropped without being completed closes its session with
//! [`CloseReason::ReplyDropped`](crate::CloseReason::ReplyDropped) once the replies before it
//! are written, since the peer would wait for an answer that never comes.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::route::{self, Msg, Router};
use crate::session::SessionId;

/// Names a session for as long as it lives: its server, its worker, its slot and its sequence
/// number, so that a handle of a session that has gone reaches nothing, even once its slot is
/// reused, and a handle of one server never reaches a session of another. `Copy` and `Send`:
/// keep it anywhere, and write to the session or close it through
/// [`CoreCtx::write_to`](crate::CoreCtx::write_to) or a
/// [`RemoteHandle`](crate::RemoteHandle).
///
/// Two handles are equal when they name the same session (server, worker and sequence number;
/// the slot is where to look, and a handle `CoreCtx::connect` gave out before the session had a
/// slot has none).
#[derive(Clone, Copy)]
pub struct SessionHandle {
    pub(crate) server: u32,
    pub(crate) worker: u32,
    /// The session's key in its core's table, or [`SessionHandle::UNPLACED`].
    pub(crate) slot: u32,
    /// The session's id (`SessionId::as_u64`), unique on its worker.
    pub(crate) seq: u64,
}

impl SessionHandle {
    /// The slot of a handle given out before its session had one: its core finds the slot by
    /// the id.
    pub(crate) const UNPLACED: u32 = u32::MAX;

    /// A handle of session `id`, whose slot its core does not know yet.
    pub(crate) fn unplaced(server: u32, id: SessionId) -> Self {
        SessionHandle {
            server,
            worker: id.worker() as u32,
            slot: Self::UNPLACED,
            seq: id.as_u64(),
        }
    }

    /// The worker (core) that owns the session.
    pub fn worker(&self) -> usize {
        self.worker as usize
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        SessionId::from_u64(self.seq)
    }
}

impl PartialEq for SessionHandle {
    fn eq(&self, other: &Self) -> bool {
        self.server == other.server && self.worker == other.worker && self.seq == other.seq
    }
}

impl Eq for SessionHandle {}

impl std::hash::Hash for SessionHandle {
    fn hash<S: std::hash::Hasher>(&self, state: &mut S) {
        self.server.hash(state);
        self.worker.hash(state);
        self.seq.hash(state);
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.slot == Self::UNPLACED {
            write!(f, "SessionHandle({}/-#{})", self.worker, self.seq)
        } else {
            write!(
                f,
                "SessionHandle({}/{}#{})",
                self.worker, self.slot, self.seq
            )
        }
    }
}

/// A place in a session's output order, to be filled later with [`Reply::complete`] (or
/// [`Session::complete`](crate::Session::complete)) on any core or thread. Dropping it without
/// completing it closes the session once the replies before it are written.
#[must_use = "a reserved reply holds up the session's output until it is completed"]
pub struct Reply {
    pub(crate) session: SessionHandle,
    pub(crate) id: u64,
    /// Completed (or handed over to be): its drop reports nothing.
    pub(crate) done: bool,
    /// The way to the owning core from a thread that is not one of the server's cores (`None`
    /// in the test kit).
    router: Option<Arc<Router>>,
}

impl Reply {
    pub(crate) fn new(session: SessionHandle, id: u64, router: Option<Arc<Router>>) -> Self {
        Reply {
            session,
            id,
            done: false,
            router,
        }
    }

    /// The session this reply belongs to.
    pub fn session(&self) -> SessionHandle {
        self.session
    }

    /// Completes the reply with `bytes`, already encoded for the session's protocol, from any
    /// core or thread; they go out in the session's order. A reply of a session that has gone
    /// completes nothing. From a thread that is not one of the server's cores this may wait
    /// while the owning core's queue is full (the core drains it every loop turn).
    pub fn complete(mut self, bytes: impl Into<Vec<u8>>) {
        self.done = true;
        let msg = Msg::Fill {
            session: self.session,
            id: self.id,
            bytes: bytes.into(),
        };
        self.send(msg);
    }

    fn send(&self, msg: Msg) {
        // An error means the owning core has stopped: its session has gone with it.
        let _ = route::deliver(
            self.router.as_ref(),
            self.session.server,
            self.session.worker(),
            msg,
            true,
        );
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({:?} #{})", self.session, self.id)
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.done {
            self.send(Msg::Abandon {
                session: self.session,
                id: self.id,
            });
        }
    }
}

/// Why a reply could not be reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// The session has `limit` replies outstanding already.
    TooMany {
        /// The session's bound (`max_replies`).
        limit: usize,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::TooMany { limit } => {
                write!(f, "the session has {limit} replies outstanding already")
            }
        }
    }
}

impl std::error::Error for ReplyError {}

/// One reserved slot and the inline output produced after it.
#[derive(Debug)]
struct Held {
    id: u64,
    filled: Option<Vec<u8>>,
    after: Vec<u8>,
}

/// The reply slots of one session, behind its send queue.
#[derive(Debug, Default)]
pub(crate) struct ReplySlots {
    held: VecDeque<Held>,
    next_id: u64,
}

impl ReplySlots {
    /// Slots reserved and not yet released to the send queue.
    pub(crate) fn outstanding(&self) -> usize {
        self.held.len()
    }

    /// Reserves the next slot; returns its id.
    pub(crate) fn reserve(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.held.push_back(Held {
            id,
            filled: None,
            after: Vec::new(),
        });
        id
    }

    /// Where inline output goes while a slot is outstanding (behind the newest one).
    pub(crate) fn tail(&mut self) -> Option<&mut Vec<u8>> {
        self.held.back_mut().map(|h| &mut h.after)
    }

    /// Fills slot `id` with `bytes`. `false` if there is no such slot outstanding (a reply
    /// completed twice cannot happen: completing consumes the `Reply`).
    pub(crate) fn fill(&mut self, id: u64, bytes: Vec<u8>) -> bool {
        match self.held.iter_mut().find(|h| h.id == id) {
            Some(h) if h.filled.is_none() => {
                h.filled = Some(bytes);
                true
            }
            _ => false,
        }
    }

    /// Whether slot `id` is outstanding and unfilled.
    pub(crate) fn is_waiting(&self, id: u64) -> bool {
        self.held.iter().any(|h| h.id == id && h.filled.is_none())
    }

    /// Moves the filled slots at the front, with the output held behind each, to `out`, in
    /// order. Returns the bytes moved.
    pub(crate) fn release(&mut self, mut out: impl FnMut(Vec<u8>)) -> usize {
        let mut moved = 0;
        while self.held.front().is_some_and(|h| h.filled.is_some()) {
            let h = self.held.pop_front().expect("checked");
            let bytes = h.filled.expect("checked");
            moved += bytes.len() + h.after.len();
            if !bytes.is_empty() {
                out(bytes);
            }
            if !h.after.is_empty() {
                out(h.after);
            }
        }
        moved
    }

    /// Drops slot `id` and every slot after it, with the output held behind them (a reply
    /// dropped uncompleted: what follows it can never be sent in order). Returns the bytes
    /// dropped.
    pub(crate) fn cut_from(&mut self, id: u64) -> usize {
        let Some(at) = self.held.iter().position(|h| h.id == id) else {
            return 0;
        };
        self.held
            .drain(at..)
            .map(|h| h.filled.map_or(0, |b| b.len()) + h.after.len())
            .sum()
    }

    /// Drops every slot (the session is closing).
    pub(crate) fn clear(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_waits_behind_the_first_unfilled_slot() {
        let mut slots = ReplySlots::default();
        let a = slots.reserve();
        slots.tail().unwrap().extend_from_slice(b"[after a]");
        let b = slots.reserve();
        slots.tail().unwrap().extend_from_slice(b"[after b]");
        let mut out = Vec::new();
        assert!(slots.fill(b, b"B".to_vec()));
        assert_eq!(slots.release(|v| out.push(v)), 0, "b waits behind a");
        assert!(slots.fill(a, b"A".to_vec()));
        assert!(!slots.fill(a, b"again".to_vec()), "a slot is filled once");
        slots.release(|v| out.push(v));
        assert_eq!(out.concat(), b"A[after a]B[after b]");
        assert_eq!(slots.outstanding(), 0);
        assert!(
            slots.tail().is_none(),
            "inline output goes straight out again"
        );
    }
}
