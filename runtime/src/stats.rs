//! Per-core counters, written by their core only and readable from any thread.
//!
//! Invariant: each [`Counter`] has exactly one writer, the core that owns it, so an increment
//! is a relaxed load and store (a plain `mov` on x86), not a locked read-modify-write. Readers
//! on other threads see a recent value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::session::CloseReason;

/// A counter with a single writer, the engine's core that owns it; read-only to everyone else.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning core calls this.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// The live counters of one core, written by that core only; read them with
        /// [`Counter::get`] or take a [`snapshot`](CoreStats::snapshot).
        #[derive(Debug, Default)]
        pub struct CoreStats {
            $( $(#[$doc])* pub $name: Counter, )*
            /// Sessions closed, by [`CloseReason`] (indexed as [`CloseReason::ALL`]).
            pub closed_by: [Counter; CloseReason::ALL.len()],
        }

        /// A copy of one core's counters at one moment.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct CoreSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
            /// Sessions closed, by [`CloseReason`] (indexed as [`CloseReason::ALL`]).
            pub closed_by: [u64; CloseReason::ALL.len()],
        }

        impl CoreStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> CoreSnapshot {
                CoreSnapshot {
                    $( $name: self.$name.get(), )*
                    closed_by: std::array::from_fn(|i| self.closed_by[i].get()),
                }
            }
        }

        impl CoreSnapshot {
            /// Adds another core's counters to these.
            pub fn merge(&mut self, other: &CoreSnapshot) {
                $( self.$name += other.$name; )*
                for (a, b) in self.closed_by.iter_mut().zip(other.closed_by) {
                    *a += b;
                }
            }
        }
    };
}

counters! {
    /// Connections accepted and given a session.
    accepted,
    /// Connections accepted and closed at once (session limit reached, or shutting down).
    rejected,
    /// Outbound sessions connected.
    connected,
    /// Outbound connects that failed (or found no room).
    connect_errors,
    /// Sessions closed (their slot freed).
    closed,
    /// Bytes received.
    bytes_in,
    /// Bytes written.
    bytes_out,
    /// Frames decoded.
    frames_in,
    /// Frames encoded through `Session::send`.
    frames_out,
    /// Receive completions that carried data.
    recvs,
    /// Sends submitted (one per session per turn at most).
    writes,
    /// Sends that wrote less than asked, resumed later.
    partial_writes,
    /// Receives whose incomplete frame was copied into the session's tail buffer.
    tail_copies,
    /// Bytes copied into tail buffers.
    tail_bytes,
    /// Multishot receives ended by an empty buffer ring (ENOBUFS), re-armed at turn end.
    enobufs,
    /// Multishot receives re-armed for any reason.
    recv_rearms,
    /// Accept failures (EMFILE, ENFILE, ...), each followed by a back-off before re-arming.
    accept_backoffs,
    /// Loop turns that found the completion queue overflowed.
    cq_overflows,
    /// Codec errors (malformed or oversized input).
    codec_errors,
    /// Panics caught in handler or codec callbacks.
    panics,
    /// Sessions whose reading was paused because output passed the high-water mark.
    backpressure_pauses,
    /// Timer deadlines handled (stale ones included).
    timer_fires,
    /// Calls of `Handler::on_tick`.
    ticks,
    /// Calls of `Handler::on_timer` (one-shot timers fired).
    timers,
    /// Connections taken from the listener's backlog while draining for shutdown.
    drained_accepts,
    /// Worker threads that died from an engine panic (their listener is closed).
    worker_deaths,
    /// Loop turns (enters into the kernel that waited).
    turns,
    /// Completions processed.
    completions,
    /// Messages this core took from its mailbox (work, replies, writes from other cores and
    /// threads).
    mail_in,
    /// Messages this core sent to other cores.
    mail_out,
    /// Writes and closes by handle that found their session gone on arrival.
    stale_messages,
    /// TLS handshakes completed.
    tls_handshakes,
    /// TLS sessions that failed: not TLS, a failed handshake, a bad record, or a handshake
    /// timeout.
    tls_errors,
    /// TLS sessions whose record layer was handed to the kernel (kTLS) after the handshake.
    tls_kernel,
    /// TLS sessions kept in user space because the kernel refused the handover (the ULP could
    /// not be attached).
    tls_kernel_refused,

    /// Sleeping cores this core rang with an IORING_OP_MSG_RING from its own ring.
    doorbells,
    /// Sleeping cores this core rang through their eventfd (the epoll driver, MSG_RING off or
    /// unavailable, or a MSG_RING that failed).
    eventfd_bells,
    /// MSG_RING doorbells that failed, each rung through the target's eventfd instead.
    doorbell_fallbacks,
}

impl CoreSnapshot {
    /// Sessions closed for `reason`.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed_by[reason.index()]
    }
}

/// Counters of every core of a server.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// One snapshot per core, in core order.
    pub cores: Vec<CoreSnapshot>,
}

impl ServerStats {
    /// The sum over all cores.
    pub fn total(&self) -> CoreSnapshot {
        let mut total = CoreSnapshot::default();
        for core in &self.cores {
            total.merge(core);
        }
        total
    }
}
