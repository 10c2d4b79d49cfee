//! The offload pool: a bounded set of threads for work that would stall a core (blocking
//! calls, long computations), whose results go back to the core that asked.
//!
//! A core hands a job over with one non-blocking `try_send` on a bounded channel (std's
//! array channel: lock-free for senders); a full queue is an error the handler sees at once,
//! so it can answer "busy". The pool's threads take jobs in order; the result travels back
//! through the asking core's off-core queue (`crate::route`), waiting there if that queue is
//! full: the pool slows down, the core never blocks. The threads run off the service cores
//! unless the user places them there. Once the server's last core has stopped, jobs still
//! queued are refused (their callbacks, which had nowhere to run, are dropped) and the threads
//! end; a job running then finishes first (blocking code cannot be interrupted).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::error::panic_message;
use crate::remote::RemoteError;

/// Work for the pool.
pub(crate) trait Job: Send {
    /// Runs it (on a pool thread).
    fn run(self: Box<Self>);
    /// It was not taken (the queue is full, or the pool has stopped): tell whoever waits.
    fn refuse(self: Box<Self>, why: RemoteError);
}

/// The cores' way into the pool.
pub(crate) struct Offload {
    jobs: SyncSender<Box<dyn Job>>,
    /// Set when the last core lets go of the pool: jobs still queued are refused, not run.
    stopped: Arc<AtomicBool>,
}

impl Drop for Offload {
    fn drop(&mut self) {
        // The threads see the channel close once they have taken what it holds; what they
        // take from now on is refused rather than run after the server has stopped.
        self.stopped.store(true, Ordering::Release);
    }
}

impl Offload {
    /// Starts `threads` threads (at least one) taking jobs from a queue of `queue` (at least
    /// one), each pinned to `cpus` when it is not empty.
    pub(crate) fn start(threads: usize, queue: usize, cpus: &[usize]) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Box<dyn Job>>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let stopped = Arc::new(AtomicBool::new(false));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let stopped = stopped.clone();
            let cpus = cpus.to_vec();
            std::thread::Builder::new()
                .name(format!("ringwire-pool{i}"))
                .spawn(move || {
                    if !cpus.is_empty() {
                        crate::cpus::pin_to_set(&cpus);
                    }
                    work(&rx, &stopped)
                })?;
        }
        Ok(Offload { jobs: tx, stopped })
    }

    /// Queues `job`; if the queue is full (or the pool has stopped) the job is refused and
    /// the error returned.
    pub(crate) fn submit(&self, job: Box<dyn Job>) -> Result<(), RemoteError> {
        let (job, why) = match self.jobs.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job)) => (job, RemoteError::Busy),
            Err(TrySendError::Disconnected(job)) => (job, RemoteError::Stopped),
        };
        job.refuse(why);
        Err(why)
    }
}

/// A pool thread: takes jobs until every sender has gone. The lock is the pool threads' own
/// (one waits on the channel while the others wait for it); cores never take it.
fn work(jobs: &Mutex<Receiver<Box<dyn Job>>>, stopped: &AtomicBool) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // The job catches its own work's panic (to report it); this catches the rest (a
        // panicking `Drop` in what it holds).
        let stopped = stopped.load(Ordering::Acquire);
        let ran = catch_unwind(AssertUnwindSafe(|| {
            if stopped {
                job.refuse(RemoteError::Stopped);
            } else {
                job.run();
            }
        }));
        if let Err(payload) = ran {
            log::error!(
                "ringwire: an offload job panicked: {}",
                panic_message(&*payload)
            );
        }
    }
}
