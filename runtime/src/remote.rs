//! Reaching the cores from a thread that is not one: run a closure on a core with its
//! per-core state, or write to (or close) a session by its handle — a pub/sub fan-out fed by an
//! outside event source.
//!
//! What is sent travels through the core's off-core queue in the mailbox (bounded, lock-free)
//! and runs at the top of the core's next loop turn; the sender rings the core's doorbell only
//! when the core announced that it is going to sleep. Nothing blocks: a full queue is an error
//! the caller sees, and so is a core that has stopped or a session that has gone.

use std::fmt;
use std::sync::Arc;

use crate::core_ctx::CoreCtx;
use crate::reply::SessionHandle;
use crate::route::{Msg, Router};

/// Runs closures on the server's cores and writes to its sessions from any thread (a control
/// thread, an event source feeding sessions). Cheap to clone; `Send` and `Sync`.
#[derive(Clone)]
pub struct RemoteHandle {
    router: Arc<Router>,
}

impl RemoteHandle {
    pub(crate) fn new(router: Arc<Router>) -> Self {
        RemoteHandle { router }
    }

    /// The number of workers (cores) it reaches.
    pub fn workers(&self) -> usize {
        self.router.cores()
    }

    /// Runs `f` on worker `worker` at the top of its next loop turn, with its [`CoreCtx`] (its
    /// per-core state). A panic in `f` is caught and counted there. Fails at once, without
    /// blocking, if there is no such worker, if its queue of such work is full (retry later),
    /// or if it has stopped.
    pub fn run_on(
        &self,
        worker: usize,
        f: impl FnOnce(&mut CoreCtx) + Send + 'static,
    ) -> Result<(), RemoteError> {
        if worker >= self.workers() {
            return Err(RemoteError::NoSuchWorker { worker });
        }
        self.router.send(worker, Msg::Run(Box::new(f)))
    }

    /// Appends `bytes` (already encoded for the session's protocol) to the session's output,
    /// behind its replies still reserved. Fails at once if the session has gone
    /// ([`RemoteError::Gone`]: a handle never reaches another session, even once its slot is
    /// reused), if its core's queue is full or if the core has stopped; a session that goes
    /// while the bytes travel drops them.
    pub fn write_to(
        &self,
        session: SessionHandle,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<(), RemoteError> {
        self.router.check(&session)?;
        let msg = Msg::Write {
            session,
            bytes: bytes.into(),
        };
        self.router.send(session.worker(), msg)
    }

    /// Closes the session once its output is written. Fails as
    /// [`write_to`](RemoteHandle::write_to) does.
    pub fn close_session(&self, session: SessionHandle) -> Result<(), RemoteError> {
        self.router.check(&session)?;
        self.router.send(session.worker(), Msg::Close { session })
    }
}

impl fmt::Debug for RemoteHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteHandle")
            .field("workers", &self.workers())
            .finish()
    }
}

/// Why work or bytes for a core or a session were not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteError {
    /// There is no worker with this index.
    NoSuchWorker {
        /// The index asked for.
        worker: usize,
    },
    /// The queue that would take it is full (the worker's queue of work from other threads,
    /// or the offload pool's); try again later, or answer "busy".
    Busy,
    /// The worker (or the offload pool) has stopped.
    Stopped,
    /// The session the handle names has gone (or the handle is of another server).
    Gone,
    /// The offloaded work panicked (the panic is logged).
    Panicked,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::NoSuchWorker { worker } => write!(f, "there is no worker {worker}"),
            RemoteError::Busy => write!(f, "the queue of work is full"),
            RemoteError::Stopped => write!(f, "the worker has stopped"),
            RemoteError::Gone => write!(f, "the session has gone"),
            RemoteError::Panicked => write!(f, "the offloaded work panicked"),
        }
    }
}

impl std::error::Error for RemoteError {}
