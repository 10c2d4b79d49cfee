//! Entry points for ringwire's micro-benchmarks into engine internals that are not public API
//! (user_data encoding, the timer heap, provided-buffer recycling). Not for other uses; hidden
//! from the docs, exempt from semver, and built only with the `bench-support` feature (which
//! ringwire-bench turns on).

use std::io;

use crate::buf_ring::{BufRing, RecvBuf};
use crate::ring::Ring;
use crate::timer::Timers;
use crate::user_data::{Op, UserData};

/// Encodes a receive's user_data and decodes its fields again.
#[inline]
pub fn user_data_round_trip(slot: u32, generation: u32) -> (bool, u32, u32) {
    let ud = UserData::from_raw(UserData::new(Op::Recv, slot, generation).raw());
    (ud.op() == Some(Op::Recv), ud.slot(), ud.generation())
}

/// The per-core deadline heap.
#[derive(Default)]
pub struct TimerHeap(Timers);

impl TimerHeap {
    /// Schedules `slot` at `at` (microseconds on the core's clock, as the engine's timers).
    #[inline]
    pub fn schedule(&mut self, at: u64, slot: u32) {
        self.0.schedule(at, slot, slot as u64);
    }

    /// Pops one entry due at `now` (microseconds).
    #[inline]
    pub fn pop_due(&mut self, now: u64) -> Option<u32> {
        self.0.pop_due(now).map(|(_, slot, _)| slot)
    }
}

/// A ring with a registered provided-buffer ring, to time reading and giving buffers back.
///
/// No receive is ever armed on this ring, so the kernel never takes a buffer and never reads
/// the ring: the bench stands in for it, taking buffers in ring order and giving each back
/// once, so every buffer is given back only after it was taken. (The published tail runs
/// ahead of a head the kernel never moves, which is harmless only because nothing consumes.)
pub struct ProvidedBuffers {
    // Field order is drop order: the ring goes before the buffers it registered.
    _ring: Ring,
    bufs: BufRing,
    count: u16,
    next: u16,
}

impl ProvidedBuffers {
    /// A small ring and `count` buffers (a power of two) of `size` bytes.
    pub fn new(count: u32, size: u32) -> io::Result<Self> {
        let ring = Ring::new(8, 16)?;
        let bufs = BufRing::new(&ring, 0, count, size)?;
        Ok(ProvidedBuffers {
            _ring: ring,
            bufs,
            count: count as u16,
            next: 0,
        })
    }

    /// Takes the buffer the kernel would fill next, reads `len` bytes of it as a completion
    /// would, and gives it back.
    #[inline]
    pub fn recycle(&mut self, len: usize) -> u8 {
        // SAFETY: no receive is armed on this ring, so the kernel never takes a buffer; we take
        // `next` as it would, and give it back below before taking another.
        let buf = unsafe { RecvBuf::from_completion(self.next, len) };
        self.next = (self.next + 1) & (self.count - 1);
        let first = self.bufs.read(&buf).first().copied().unwrap_or(0);
        self.bufs.give_back(buf);
        first
    }
}
