//! What a worker gives the handlers on its core: the worker's index and per-core user state.
//!
//! Each worker thread owns one [`CoreCtx`]; it is never shared or sent, so per-core state is
//! plain data (a map, an `Rc`, a cache) with no lock. The handler factory gets it when it makes
//! a session's handler, and every callback reaches it through `Session::core`.

use std::any::Any;
use std::fmt;

use crate::reply::SessionHandle;

/// The context of one worker (one pinned core's loop): its index, and the per-core state the
/// server's `core_state` initialiser made for it on that core's thread (`()` without one).
///
/// Only the engine makes one (so a callback cannot swap its core's context for another); the
/// `core_state` builder method of `ringwire` shows it in use.
pub struct CoreCtx {
    worker: usize,
    state: Box<dyn Any>,
    /// Replies completed during a callback for other sessions of this core, applied by the
    /// core right after it: (session, reply id, bytes).
    pub(crate) completions: Vec<(SessionHandle, u64, Vec<u8>)>,
}

impl CoreCtx {
    /// A context for worker `worker` holding `state`.
    pub(crate) fn new(worker: usize, state: Box<dyn Any>) -> Self {
        CoreCtx {
            worker,
            state,
            completions: Vec::new(),
        }
    }

    /// The index of the worker (0-based, in start order); not a CPU number.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The per-core state, which must be a `T` (the type the server's `core_state`
    /// initialiser returns).
    ///
    /// # Panics
    ///
    /// If the state is of another type: a programming error, named in the message.
    pub fn state<T: 'static>(&mut self) -> &mut T {
        match self.state.downcast_mut::<T>() {
            Some(state) => state,
            None => panic!(
                "ringwire: the per-core state is not a {} (set it with core_state on the \
                 server or client builder)",
                std::any::type_name::<T>()
            ),
        }
    }

    /// The per-core state if it is a `T`.
    pub fn try_state<T: 'static>(&mut self) -> Option<&mut T> {
        self.state.downcast_mut::<T>()
    }
}

impl fmt::Debug for CoreCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreCtx")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}
