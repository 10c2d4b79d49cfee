//! The provided-buffer ring of one core: buffers the kernel picks from when a receive
//! completes, so an idle connection holds no read buffer.
//!
//! Invariant: every buffer the kernel hands out comes back through [`BufRing::give_back`]
//! exactly once, on every path (stale completions and errors included). The types hold it: a
//! completion yields a [`RecvBuf`] token, which is not `Clone`, is read through the ring, and
//! is consumed by giving it back (dropping one instead trips a debug assertion). The ring memory
//! and the buffers are mapped anonymously and unmapped only when no receive is in flight (the
//! kernel touches them only for a receive); a driver torn down with receives in flight leaks
//! them.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use crate::ring::Ring;
use crate::sys;

/// A provided buffer the kernel filled: `len` bytes of buffer `bid`. Owned by whoever holds
/// the token, until [`BufRing::give_back`] consumes it.
#[derive(Debug)]
#[must_use = "a provided buffer must go back to the ring"]
pub(crate) struct RecvBuf {
    bid: u16,
    len: usize,
}

impl RecvBuf {
    /// The token for buffer `bid` holding `len` bytes, as a receive completion reports it.
    ///
    /// # Safety
    ///
    /// The kernel handed buffer `bid` to us (a receive completion said so, once) and no other
    /// token for it exists until it is given back: giving a buffer back twice would put it in
    /// the ring twice, and the kernel could write into it while a read of it is lent out.
    pub(crate) unsafe fn from_completion(bid: u16, len: usize) -> Self {
        RecvBuf { bid, len }
    }

    /// Bytes received into the buffer.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The buffer id and length, consuming the token without giving the buffer back (tests).
    #[cfg(test)]
    pub(crate) fn into_parts(self) -> (u16, usize) {
        let parts = (self.bid, self.len);
        std::mem::forget(self);
        parts
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        debug_assert!(
            std::thread::panicking(),
            "provided buffer {} dropped without going back to the ring",
            self.bid
        );
    }
}

pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_len: usize,
    bufs: NonNull<u8>,
    bufs_len: usize,
    count: u16,
    buf_size: u32,
    /// Our copy of the tail; published to the kernel after each change.
    tail: u16,
}

impl BufRing {
    /// Maps `count` buffers of `buf_size` bytes, fills the ring with all of them and registers
    /// it with `ring` as buffer group `bgid`.
    pub(crate) fn new(ring: &Ring, bgid: u16, count: u32, buf_size: u32) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 32768);
        let count = count as u16;
        let page = 4096;
        let entries_len =
            (count as usize * std::mem::size_of::<BufRingEntry>()).next_multiple_of(page);
        let bufs_len = (count as usize * buf_size as usize).next_multiple_of(page);
        let entries = sys::mmap_anon(entries_len)?.cast::<BufRingEntry>();
        let bufs = match sys::mmap_anon(bufs_len) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: `entries` was mapped above with this length and is not used after.
                unsafe { sys::munmap(entries.cast(), entries_len) };
                return Err(e);
            }
        };
        let mut this = BufRing {
            entries,
            entries_len,
            bufs,
            bufs_len,
            count,
            buf_size,
            tail: 0,
        };
        for bid in 0..count {
            this.put(bid);
        }
        this.publish();
        // SAFETY: the entries stay mapped until `self` drops, which the driver allows only when
        // no receive is in flight (the kernel reads the ring and writes the buffers only for
        // a receive), and otherwise never (it leaks them).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count,
                bgid,
                0,
            )?;
        }
        Ok(this)
    }

    /// The bytes a receive put in `buf`.
    pub(crate) fn read(&self, buf: &RecvBuf) -> &[u8] {
        let (bid, len) = (buf.bid, buf.len);
        assert!(
            bid < self.count && len <= self.buf_size as usize,
            "buffer {bid} len {len} out of range"
        );
        // SAFETY: `bid` is in range, so the slice lies inside the mapping; the kernel gave the
        // buffer to this completion and will not touch it again until it is given back.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs
                    .as_ptr()
                    .add(bid as usize * self.buf_size as usize),
                len,
            )
        }
    }

    /// Returns buffer `bid` to the kernel.
    #[inline]
    pub(crate) fn give_back(&mut self, buf: RecvBuf) {
        let bid = buf.bid;
        std::mem::forget(buf);
        self.put(bid);
        self.publish();
    }

    fn put(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `idx` < count, inside the entries mapping; the kernel reads only entries
        // between its head and our published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(idx) };
        entry.set_addr(self.bufs.as_ptr() as u64 + bid as u64 * self.buf_size as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's reserved field at the start of the
        // page-aligned ring, valid for the mapping's lifetime; the kernel reads it atomically.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both regions were mapped in `new` with these lengths; the driver drops this
        // only when no receive is in flight, so the kernel no longer uses them.
        unsafe {
            sys::munmap(self.bufs, self.bufs_len);
            sys::munmap(self.entries.cast(), self.entries_len);
        }
    }
}
