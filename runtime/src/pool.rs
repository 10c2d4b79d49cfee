//! A per-core pool of byte buffers, shared by the sessions of one core.
//!
//! Output chunks and incomplete-frame tails come from here and go back here as soon as they
//! are empty, so an idle session holds no buffer and a busy core reuses the same few buffers
//! instead of allocating per message. The pool is bounded in count and in the capacity of
//! what it keeps; anything larger is freed.

/// Byte buffers for one core. Not shared between threads.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    max_count: usize,
    max_capacity: usize,
    min_capacity: usize,
}

impl BufPool {
    /// A pool that keeps at most `max_count` buffers of at most `max_capacity` bytes each, and
    /// hands out buffers of at least `min_capacity` bytes.
    pub fn new(max_count: usize, min_capacity: usize, max_capacity: usize) -> Self {
        BufPool {
            free: Vec::with_capacity(max_count),
            max_count,
            max_capacity,
            min_capacity,
        }
    }

    /// An empty buffer with room for at least `want` bytes.
    #[inline]
    pub fn take(&mut self, want: usize) -> Vec<u8> {
        match self.free.pop() {
            Some(mut buf) => {
                buf.reserve(want);
                buf
            }
            None => Vec::with_capacity(want.max(self.min_capacity)),
        }
    }

    /// Gives a buffer back; it is kept for reuse if the pool has room and it is not too large.
    #[inline]
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        if self.free.len() < self.max_count && buf.capacity() <= self.max_capacity {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Number of buffers waiting for reuse.
    pub fn idle(&self) -> usize {
        self.free.len()
    }
}

impl Default for BufPool {
    fn default() -> Self {
        BufPool::new(1024, 4096, 256 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_and_respects_bounds() {
        let mut pool = BufPool::new(2, 64, 1024);
        let a = pool.take(10);
        assert!(a.capacity() >= 64);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(10);
        assert_eq!(b.as_ptr(), ptr, "a returned buffer is handed out again");
        pool.give(b);
        pool.give(Vec::with_capacity(100));
        pool.give(Vec::with_capacity(100));
        assert_eq!(pool.idle(), 2, "count is bounded");
        let mut pool = BufPool::new(2, 64, 1024);
        pool.give(Vec::with_capacity(4096));
        assert_eq!(pool.idle(), 0, "oversized buffers are freed");
    }
}
