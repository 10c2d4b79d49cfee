//! The ring: setup with the best flags the kernel accepts, pushing submissions, entering the
//! kernel once per loop turn, and reaping completions.
//!
//! Invariant: [`Ring::push`] is the only place an entry reaches the submission queue. Its
//! caller guarantees that whatever the entry points to stays valid until the entry's
//! completion has been reaped.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use io_uring::{cqueue, squeue, types, IoUring};

/// A completion, copied out of the completion queue so the queue's slot is free at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) user_data: u64,
    pub(crate) res: i32,
    pub(crate) flags: u32,
}

impl From<&cqueue::Entry> for Completion {
    fn from(e: &cqueue::Entry) -> Self {
        Completion {
            user_data: e.user_data(),
            res: e.result(),
            flags: e.flags(),
        }
    }
}

impl Completion {
    /// `IORING_CQE_F_MORE`: the multishot operation stays armed.
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion carries, if any.
    pub(crate) fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// How the kernel runs our completions' task work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskRun {
    /// SINGLE_ISSUER | DEFER_TASKRUN: task work runs only when we enter to wait.
    Deferred,
    /// COOP_TASKRUN: no interrupting IPIs, task work on our next kernel transition.
    Cooperative,
    /// The kernel's default.
    Default,
}

static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

pub(crate) struct Ring {
    uring: IoUring,
    taskrun: TaskRun,
}

impl Ring {
    /// Sets up a ring with `sq` submission and `cq` completion entries, trying
    /// SINGLE_ISSUER | DEFER_TASKRUN first and falling back to flags the kernel accepts.
    /// Must be called on the thread that will submit.
    pub(crate) fn new(sq: u32, cq: u32) -> io::Result<Ring> {
        Ring::trying(
            sq,
            cq,
            &[TaskRun::Deferred, TaskRun::Cooperative, TaskRun::Default],
        )
    }

    /// Sets up a ring trying the task-run modes `attempts` in order (tests pick one, to see
    /// the driver under a mode this kernel would not fall back to).
    pub(crate) fn trying(sq: u32, cq: u32, attempts: &[TaskRun]) -> io::Result<Ring> {
        let mut first_error = None;
        for &taskrun in attempts {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq).setup_clamp().setup_submit_all();
            match taskrun {
                TaskRun::Deferred => {
                    builder.setup_single_issuer().setup_defer_taskrun();
                }
                TaskRun::Cooperative => {
                    builder.setup_coop_taskrun().setup_taskrun_flag();
                }
                TaskRun::Default => {}
            }
            match builder.build(sq) {
                Ok(uring) => {
                    if taskrun != attempts[0] && !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "ringwire: kernel refused DEFER_TASKRUN ({}); using {taskrun:?} task running",
                            first_error.as_ref().map_or_else(String::new, |e: &io::Error| e.to_string())
                        );
                    }
                    return Ok(Ring { uring, taskrun });
                }
                // Only EINVAL means "flags not supported"; anything else will not improve.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_error.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
    }

    pub(crate) fn taskrun(&self) -> TaskRun {
        self.taskrun
    }

    pub(crate) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }

    /// The ring's own descriptor (for another ring to name in a MSG_RING).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is open while the ring lives, which the borrow of `self`
        // outlasts. (The `io-uring` crate's own `AsFd` needs its `io_safety` feature.)
        unsafe { BorrowedFd::borrow_raw(self.uring.as_raw_fd()) }
    }

    /// The kernel honours `IOSQE_CQE_SKIP_SUCCESS` (IORING_FEAT_CQE_SKIP, Linux 5.17).
    pub(crate) fn skips_success(&self) -> bool {
        self.uring.params().is_feature_skip_cqe_on_success()
    }

    /// Nothing queued waits for the kernel: the last enter consumed every entry.
    pub(crate) fn sq_is_empty(&mut self) -> bool {
        self.uring.submission().is_empty()
    }

    pub(crate) fn cq_capacity(&self) -> usize {
        self.uring.params().cq_entries() as usize
    }

    /// Queues `entry`; when the submission queue is full, submits what is queued and retries.
    /// Never drops an entry.
    ///
    /// # Safety
    ///
    /// Every buffer, iovec, msghdr or sockaddr that `entry` points to must stay valid (and,
    /// for what the kernel writes, unaliased) until the completion of `entry` is reaped; for
    /// a multishot entry, until its final completion (one without `IORING_CQE_F_MORE`).
    pub(crate) unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..64 {
            // SAFETY: the caller upholds the contract above for everything `entry` names.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            match self.uring.submit() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                    ) =>
                {
                    // The kernel is short of room for completions; give it a moment to drain.
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "submission queue stays full",
        ))
    }

    /// Submits what is queued and waits for at least one completion, or until `timeout`.
    pub(crate) fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let res = match timeout {
            None => self.uring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
        };
        match res {
            Ok(_) => Ok(()),
            // Timed out, interrupted, or completions must be reaped before more can be
            // submitted: all mean "go and reap". EBADR says the kernel dropped completions
            // (it could not even queue them on its overflow list); the error state is cleared
            // by reporting it, the loss shows in the dropped count, which the driver counts as
            // an overflow, and the core goes on (a session that lost a completion is ended by
            // its timeouts).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::EBADR)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves up to `max` completions into `out` and frees their queue slots.
    pub(crate) fn reap(&mut self, out: &mut Vec<Completion>, max: usize) -> usize {
        let mut cq = self.uring.completion();
        let before = out.len();
        for entry in cq.by_ref().take(max) {
            out.push(Completion::from(&entry));
        }
        cq.sync();
        out.len() - before
    }

    /// The kernel holds completions it could not post (IORING_SQ_CQ_OVERFLOW).
    pub(crate) fn overflowed(&mut self) -> bool {
        self.uring.submission().cq_overflow()
    }

    /// Completions the kernel dropped for lack of room (only without IORING_FEAT_NODROP).
    pub(crate) fn dropped(&mut self) -> u32 {
        self.uring.completion().overflow()
    }
}
