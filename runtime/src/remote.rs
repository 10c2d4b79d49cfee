//! Reaching a core from a thread that is not one: run a closure on a core, with the core's
//! per-core state, at the top of the core's next loop turn.
//!
//! The closure travels through the core's off-core queue in the mailbox (bounded, lock-free);
//! the sender rings the core's doorbell (its eventfd) only when the core announced that it is
//! going to sleep. Nothing blocks: a full queue is an error the caller sees, and so is a core
//! that has stopped.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::core_ctx::CoreCtx;
use crate::mailbox::{Bell, Remote, SendError};
use crate::sys;

/// Work sent to a core.
pub(crate) type Task = Box<dyn FnOnce(&mut CoreCtx) + Send>;

/// Runs closures on the server's cores from any thread (a control thread, an event source
/// feeding sessions). Cheap to clone; `Send` and `Sync`.
#[derive(Clone)]
pub struct RemoteHandle {
    remote: Remote<Task>,
    wakers: Arc<Vec<Arc<OwnedFd>>>,
}

impl RemoteHandle {
    pub(crate) fn new(remote: Remote<Task>, wakers: Arc<Vec<Arc<OwnedFd>>>) -> Self {
        RemoteHandle { remote, wakers }
    }

    /// The number of workers (cores) it reaches.
    pub fn workers(&self) -> usize {
        self.remote.cores()
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
        if worker >= self.remote.cores() {
            return Err(RemoteError::NoSuchWorker { worker });
        }
        match self.remote.send(worker, Box::new(f)) {
            Ok(Bell::Ring) => {
                // A failed write leaves the core asleep until its next deadline: say so.
                sys::eventfd_signal(&self.wakers[worker]).map_err(|_| RemoteError::Stopped)
            }
            Ok(Bell::Silent) => Ok(()),
            Err(SendError::Full(_)) => Err(RemoteError::Busy),
            Err(SendError::Closed(_)) => Err(RemoteError::Stopped),
        }
    }
}

impl fmt::Debug for RemoteHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteHandle")
            .field("workers", &self.workers())
            .finish()
    }
}

/// Why [`RemoteHandle::run_on`] did not take the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteError {
    /// There is no worker with this index.
    NoSuchWorker {
        /// The index asked for.
        worker: usize,
    },
    /// The worker's queue of such work is full; try again later.
    Busy,
    /// The worker has stopped.
    Stopped,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::NoSuchWorker { worker } => write!(f, "there is no worker {worker}"),
            RemoteError::Busy => write!(f, "the worker's queue of remote work is full"),
            RemoteError::Stopped => write!(f, "the worker has stopped"),
        }
    }
}

impl std::error::Error for RemoteError {}
