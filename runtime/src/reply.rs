//! Replies that come later: a session's output as a sequence of reply slots.
//!
//! A handler that cannot answer inline (it waits for a timer, or for another session of its
//! core, such as a backend connection) reserves a slot with `Session::reserve` and gets a
//! [`Reply`]. Output produced after the reservation (inline replies to later requests) is held
//! behind it; when the reply is completed, its bytes and everything held behind it go out, in
//! order, up to the next slot not yet filled. With nothing reserved nothing changes: inline
//! output goes straight to the session's send queue.
//!
//! Invariants: bytes leave in the order the slots were reserved and the inline output was
//! produced; at most `max_replies` slots are outstanding per session (reading pauses at the
//! bound, as at the high-water mark); a reply of a session that has gone completes nothing; a
//! [`Reply`] dropped without being completed closes its session with
//! [`CloseReason::ReplyDropped`](crate::CloseReason::ReplyDropped), since the peer would wait
//! for an answer that never comes.
//!
//! For now a reply is completed on its own core (from any callback there): it is not `Send`.
//! Completing one from another core or thread comes with the cross-core transport.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;

use crate::session::SessionId;

/// Names a session for as long as it lives: its worker, its slot and its sequence number, so
/// that a handle of a session that has gone reaches nothing, even once its slot is reused.
///
/// Two handles are equal when they name the same session (worker and sequence number; the
/// slot is where to look, and a handle `CoreCtx::connect` gave out before the session had a
/// slot has none).
#[derive(Clone, Copy)]
pub struct SessionHandle {
    pub(crate) worker: usize,
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
    pub(crate) fn unplaced(id: SessionId) -> Self {
        SessionHandle {
            worker: id.worker(),
            slot: Self::UNPLACED,
            seq: id.as_u64(),
        }
    }

    /// The worker (core) that owns the session.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        SessionId::from_u64(self.seq)
    }
}

impl PartialEq for SessionHandle {
    fn eq(&self, other: &Self) -> bool {
        self.worker == other.worker && self.seq == other.seq
    }
}

impl Eq for SessionHandle {}

impl std::hash::Hash for SessionHandle {
    fn hash<S: std::hash::Hasher>(&self, state: &mut S) {
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

/// A place in a session's output order, to be filled later with
/// [`Session::complete`](crate::Session::complete) from any callback on the session's core.
/// Dropping it without completing it closes the session.
#[must_use = "a reserved reply holds up the session's output until it is completed"]
pub struct Reply {
    pub(crate) session: SessionHandle,
    pub(crate) id: u64,
    /// Completed (or handed over to be): its drop reports nothing.
    pub(crate) done: bool,
    /// Completed on its own core only, for now.
    _not_send: PhantomData<*const ()>,
}

impl Reply {
    pub(crate) fn new(session: SessionHandle, id: u64) -> Self {
        Reply {
            session,
            id,
            done: false,
            _not_send: PhantomData,
        }
    }

    /// The session this reply belongs to.
    pub fn session(&self) -> SessionHandle {
        self.session
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({:?} #{})", self.session, self.id)
    }
}

thread_local! {
    /// Replies dropped on this thread without being completed, for its core to close their
    /// sessions at the end of the callback (a `Reply` never leaves its core's thread).
    static ABANDONED: RefCell<Vec<(SessionHandle, u64)>> = const { RefCell::new(Vec::new()) };
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.done {
            let entry = (self.session, self.id);
            // During a thread's teardown the list may be gone; the session goes with it.
            let _ = ABANDONED.try_with(|list| list.borrow_mut().push(entry));
        }
    }
}

/// Takes the replies abandoned on this thread since the last call.
pub(crate) fn take_abandoned(into: &mut Vec<(SessionHandle, u64)>) {
    ABANDONED.with(|list| into.append(&mut list.borrow_mut()));
}

/// Why a reply could not be reserved or completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// The session has `limit` replies outstanding already.
    TooMany {
        /// The session's bound (`max_replies`).
        limit: usize,
    },
    /// The reply belongs to a session of another core.
    OtherCore,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::TooMany { limit } => {
                write!(f, "the session has {limit} replies outstanding already")
            }
            ReplyError::OtherCore => write!(f, "the reply belongs to a session of another core"),
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
    pub(crate) fn fill(&mut self, id: u64, bytes: &[u8]) -> bool {
        match self.held.iter_mut().find(|h| h.id == id) {
            Some(h) if h.filled.is_none() => {
                h.filled = Some(bytes.to_vec());
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
        assert!(slots.fill(b, b"B"));
        assert_eq!(slots.release(|v| out.push(v)), 0, "b waits behind a");
        assert!(slots.fill(a, b"A"));
        assert!(!slots.fill(a, b"again"), "a slot is filled once");
        slots.release(|v| out.push(v));
        assert_eq!(out.concat(), b"A[after a]B[after b]");
        assert_eq!(slots.outstanding(), 0);
        assert!(
            slots.tail().is_none(),
            "inline output goes straight out again"
        );
    }
}
