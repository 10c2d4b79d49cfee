//! A session's pending output and the one send buffer the kernel reads it through.
//!
//! Output is a short queue of chunks from the core's [`BufPool`]. A chunk that a send in flight
//! covers is frozen (the kernel reads it) until that send completes; new output goes into a
//! chunk behind it. So replies produced during one loop turn are gathered and written together,
//! at most one write is in flight, and the order of bytes is the order they were produced.
//!
//! A TLS session adds a second queue, of sealed records: the handler's plaintext is encrypted
//! from the first queue into it at the end of the turn ([`Output::seal`]), and sends go out
//! from it. The byte count that backpressure reads counts both queues.

use std::collections::VecDeque;
use std::fmt;
use std::io;

use crate::pool::BufPool;
use crate::reply::ReplySlots;

/// Most chunks one send covers (one sendmsg with this many iovecs at most).
pub(crate) const MAX_IOV: usize = 8;

/// The bytes of one send and what the kernel reads them through: the output chunks it covers
/// (moved out of the session's output, so nothing can write or free them), and the iovecs and
/// msghdr that point into them. Boxed, so moving the value moves no address the kernel holds.
///
/// It goes from the core to the driver with `Command::Send`, stays with the driver until the
/// send's last completion, and comes back with `Core::sent`; a driver that is torn down while
/// the kernel may still read it leaks it instead of freeing it. One per session, reused for
/// every send: nothing is allocated per message.
pub(crate) struct SendBuf {
    chunks: Vec<Vec<u8>>,
    /// Bytes of `chunks[0]` written by earlier sends.
    head: usize,
    /// Bytes this send covers.
    len: usize,
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
}

impl fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBuf")
            .field("chunks", &self.chunks.len())
            .field("len", &self.len)
            .finish()
    }
}

impl SendBuf {
    fn new() -> Box<SendBuf> {
        Box::new(SendBuf {
            chunks: Vec::with_capacity(MAX_IOV),
            head: 0,
            len: 0,
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV],
            // SAFETY: msghdr is plain data; all-zero (no name, no control data) is valid.
            msg: unsafe { std::mem::zeroed() },
        })
    }

    /// The iovecs describing the bytes to send, one per chunk.
    pub(crate) fn iovecs(&self) -> &[libc::iovec] {
        &self.iov[..self.chunks.len()]
    }

    /// The msghdr over [`iovecs`](SendBuf::iovecs), for sendmsg. Its pointers stay valid
    /// while this value lives and is not handed back to the core.
    pub(crate) fn msghdr(&mut self) -> &libc::msghdr {
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.chunks.len() as _;
        &self.msg
    }

    /// Bytes this send covers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends a copy of the bytes this send covers to `dst` (the test kit's "peer").
    pub(crate) fn copy_to(&self, dst: &mut Vec<u8>) {
        for (i, chunk) in self.chunks.iter().enumerate() {
            dst.extend_from_slice(&chunk[if i == 0 { self.head } else { 0 }..]);
        }
    }

    /// The bytes this send covers, copied (for tests).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        self.copy_to(&mut v);
        v
    }
}

#[cfg(test)]
impl SendBuf {
    /// A send buffer covering `bytes`, as a session's output hands one out (tests).
    pub(crate) fn holding(bytes: &[u8]) -> Box<SendBuf> {
        let mut out = Output::default();
        out.tail_chunk(&mut BufPool::default(), 0)
            .extend_from_slice(bytes);
        out.appended(bytes.len());
        out.take_send().expect("bytes to send")
    }
}

/// Where a session's send stands: its one [`SendBuf`] is either here, or with the driver.
#[derive(Debug)]
enum Sending {
    Idle(Box<SendBuf>),
    InFlight,
}

/// Pending output of one session.
#[derive(Debug)]
pub(crate) struct Output {
    /// Output not covered by the send in flight, oldest first.
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of `chunks[0]` already written (a chunk a short send left behind).
    head: usize,
    /// Bytes not yet written, in flight or not (held behind reply slots included).
    pending: usize,
    sending: Sending,
    /// Reply slots reserved and the output held behind them.
    replies: ReplySlots,
    /// A TLS session's sealed records, which its sends carry (`chunks` then holds plaintext
    /// waiting to be sealed); `None` for a plain session, whose sends carry `chunks`.
    sealed: Option<Box<Sealed>>,
}

/// Sealed records waiting for the wire, oldest first.
#[derive(Debug, Default)]
struct Sealed {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of `chunks[0]` already written.
    head: usize,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            chunks: VecDeque::new(),
            head: 0,
            pending: 0,
            sending: Sending::Idle(SendBuf::new()),
            replies: ReplySlots::default(),
            sealed: None,
        }
    }
}

impl Output {
    /// Bytes not yet written.
    pub(crate) fn len(&self) -> usize {
        self.pending
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// A send is in flight: the driver holds this session's [`SendBuf`].
    pub(crate) fn in_flight(&self) -> bool {
        matches!(self.sending, Sending::InFlight)
    }

    /// Some output is not covered by a send in flight (on a TLS session: sealed, or waiting
    /// to be sealed).
    pub(crate) fn has_unsent(&self) -> bool {
        self.chunks.iter().any(|c| !c.is_empty())
            || self.sealed.as_ref().is_some_and(|s| !s.chunks.is_empty())
    }

    /// Makes this a TLS session's output: sends carry sealed records from now on.
    pub(crate) fn seal_output(&mut self) {
        self.sealed.get_or_insert_with(Box::default);
    }

    /// Hands the plaintext ready to go (none held behind a reply slot) to `seal`, oldest
    /// first, until it is all taken or `seal` takes nothing (no room for now). `seal` returns
    /// how many bytes it took. Returns the bytes taken.
    pub(crate) fn seal_plain(
        &mut self,
        pool: &mut BufPool,
        mut seal: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        debug_assert!(self.sealed.is_some(), "sealing a plain session's output");
        let mut taken = 0;
        while let Some(front) = self.chunks.front() {
            let n = if front.len() > self.head {
                seal(&front[self.head..])?
            } else {
                0
            };
            taken += n;
            self.head += n;
            self.pending -= n;
            if self.head < front.len() {
                break; // No room for the rest now.
            }
            let chunk = self.chunks.pop_front().expect("the front chunk");
            pool.give(chunk);
            self.head = 0;
            if n == 0 {
                break; // Only an empty tail chunk is empty.
            }
        }
        Ok(taken)
    }

    /// Sealed records wait for the wire.
    pub(crate) fn has_sealed(&self) -> bool {
        self.sealed.as_ref().is_some_and(|s| !s.chunks.is_empty())
    }

    /// The kernel seals from now on (kernel TLS): sends carry the output as it is. Only with no
    /// sealed record waiting.
    pub(crate) fn unseal(&mut self) {
        debug_assert!(!self.has_sealed() && !self.in_flight());
        self.sealed = None;
    }

    /// Drops the plaintext waiting to be sealed (a TLS session that can seal no more).
    pub(crate) fn discard_plain(&mut self, pool: &mut BufPool) {
        let mut dropped = 0;
        for chunk in self.chunks.drain(..) {
            dropped += chunk.len();
            pool.give(chunk);
        }
        self.pending -= dropped - std::mem::take(&mut self.head);
    }

    /// Appends the sealed bytes `write` produces (at least `want` expected) to the wire queue.
    /// Returns how many it wrote.
    pub(crate) fn push_sealed(
        &mut self,
        pool: &mut BufPool,
        want: usize,
        write: impl FnOnce(&mut Vec<u8>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let sealed = self
            .sealed
            .as_mut()
            .expect("push_sealed on a TLS session's output");
        if sealed.chunks.is_empty() {
            sealed.chunks.push_back(pool.take(want));
        }
        // The tail is never a chunk a send in flight covers: those have left this queue.
        let tail = sealed.chunks.back_mut().expect("a chunk was just ensured");
        let n = write(tail)?;
        self.pending += n;
        Ok(n)
    }

    /// The chunk new output is appended to (never one a send in flight covers: those have
    /// left this queue).
    pub(crate) fn tail_chunk(&mut self, pool: &mut BufPool, want: usize) -> &mut Vec<u8> {
        if let Some(held) = self.replies.tail() {
            // Behind a reply not yet completed.
            return held;
        }
        if self.chunks.is_empty() {
            self.chunks.push_back(pool.take(want));
        }
        self.chunks.back_mut().expect("a chunk was just ensured")
    }

    /// Accounts for `n` bytes appended to the tail chunk.
    pub(crate) fn appended(&mut self, n: usize) {
        self.pending += n;
    }

    /// Accounts for `n` unsent bytes removed from the tail chunk (by a misbehaving codec).
    pub(crate) fn removed(&mut self, n: usize) {
        self.pending = self.pending.saturating_sub(n);
    }

    /// Moves the unwritten output (up to [`MAX_IOV`] chunks) into this session's send buffer
    /// for the driver. `None` if a send is in flight or nothing is unsent.
    pub(crate) fn take_send(&mut self) -> Option<Box<SendBuf>> {
        if !self.has_unsent() {
            return None;
        }
        let Sending::Idle(mut send) = std::mem::replace(&mut self.sending, Sending::InFlight)
        else {
            return None;
        };
        debug_assert!(send.chunks.is_empty());
        // A TLS session sends its sealed records; a plain one its output as it is.
        let (chunks, head) = match &mut self.sealed {
            Some(sealed) => (&mut sealed.chunks, &mut sealed.head),
            None => (&mut self.chunks, &mut self.head),
        };
        send.head = *head;
        send.len = 0;
        while send.chunks.len() < MAX_IOV {
            let Some(chunk) = chunks.pop_front() else {
                break;
            };
            let start = if send.chunks.is_empty() { send.head } else { 0 };
            if chunk.len() == start {
                // Only the tail chunk can be empty (an encode error truncated it).
                debug_assert!(chunks.is_empty(), "an empty chunk before the tail");
                chunks.push_front(chunk);
                break;
            }
            let i = send.chunks.len();
            send.iov[i] = libc::iovec {
                iov_base: chunk[start..].as_ptr() as *mut libc::c_void,
                iov_len: chunk.len() - start,
            };
            send.len += chunk.len() - start;
            // Moving the Vec moves its handle, not its heap bytes: the iovec stays valid.
            send.chunks.push(chunk);
        }
        if send.chunks.is_empty() {
            self.sending = Sending::Idle(send);
            return None;
        }
        *head = 0;
        Some(send)
    }

    /// The send in flight wrote `written` bytes and `send` is back: release what was written
    /// and put the rest back in front of the queue. Returns whether the send was short.
    pub(crate) fn complete(
        &mut self,
        mut send: Box<SendBuf>,
        written: usize,
        pool: &mut BufPool,
    ) -> bool {
        debug_assert!(self.in_flight() && written <= send.len);
        let written = written.min(send.len).min(self.pending);
        let partial = written < send.len;
        self.pending -= written;
        let mut left = written;
        let mut head = send.head;
        let mut back = 0;
        let (chunks, queue_head) = match &mut self.sealed {
            Some(sealed) => (&mut sealed.chunks, &mut sealed.head),
            None => (&mut self.chunks, &mut self.head),
        };
        for chunk in send.chunks.drain(..) {
            let unwritten = chunk.len() - head;
            if left >= unwritten {
                left -= unwritten;
                pool.give(chunk);
                head = 0;
            } else {
                // Unwritten bytes go back, in order, ahead of output produced meanwhile.
                chunks.insert(back, chunk);
                if back == 0 {
                    *queue_head = head + left;
                }
                back += 1;
                left = 0;
                head = 0;
            }
        }
        send.len = 0;
        send.head = 0;
        self.sending = Sending::Idle(send);
        if self.pending == 0 {
            // Drop an empty tail chunk left behind an exact write.
            while let Some(chunk) = self.chunks.pop_front() {
                pool.give(chunk);
            }
            self.head = 0;
            if let Some(sealed) = &mut self.sealed {
                while let Some(chunk) = sealed.chunks.pop_front() {
                    pool.give(chunk);
                }
                sealed.head = 0;
            }
        }
        partial
    }

    /// Gives every chunk not in flight back.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        for chunk in self.chunks.drain(..) {
            pool.give(chunk);
        }
        if let Some(sealed) = &mut self.sealed {
            for chunk in sealed.chunks.drain(..) {
                pool.give(chunk);
            }
            sealed.head = 0;
        }
        self.replies.clear();
        self.head = 0;
        self.pending = 0;
    }

    /// Bytes are being written: some are in flight or ready to send (output held behind an
    /// unfilled reply is not: it is waiting for the reply, not for the peer).
    pub(crate) fn writing(&self) -> bool {
        self.in_flight() || self.has_unsent()
    }

    /// Reply slots outstanding (reserved, not yet released to the send queue).
    pub(crate) fn outstanding(&self) -> usize {
        self.replies.outstanding()
    }

    /// Reserves a reply slot; output produced from now on waits behind it.
    pub(crate) fn reserve(&mut self) -> u64 {
        self.replies.reserve()
    }

    /// Fills reply slot `id` and moves what is ready to the send queue, in order. `false` if
    /// the slot is not outstanding.
    pub(crate) fn fill(&mut self, id: u64, bytes: Vec<u8>) -> bool {
        let len = bytes.len();
        if !self.replies.fill(id, bytes) {
            return false;
        }
        self.pending += len;
        let chunks = &mut self.chunks;
        // Into the tail chunk (never one in flight: those have left this queue), so that no
        // empty chunk ends up in front of bytes and many small replies make few iovecs.
        self.replies.release(|piece| match chunks.back_mut() {
            Some(tail) => tail.extend_from_slice(&piece),
            None => chunks.push_back(piece),
        });
        true
    }

    /// A reply was dropped uncompleted: drops its slot and everything after it; what comes
    /// before it can still be written.
    pub(crate) fn cut_at(&mut self, id: u64) {
        let dropped = self.replies.cut_from(id);
        self.pending = self.pending.saturating_sub(dropped);
    }

    /// Whether reply slot `id` is outstanding and not yet filled.
    pub(crate) fn is_waiting(&self, id: u64) -> bool {
        self.replies.is_waiting(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut pool = BufPool::default();
        let mut out = Output::default();
        out.tail_chunk(&mut pool, 0).extend_from_slice(b"hello ");
        out.appended(6);
        let send = out.take_send().expect("output to send");
        assert_eq!(send.to_vec(), b"hello ");
        assert!(!out.has_unsent());
        assert!(out.take_send().is_none(), "one send in flight at a time");
        // Output produced while the send is in flight goes to a new chunk.
        let frozen = send.iovecs()[0].iov_base;
        out.tail_chunk(&mut pool, 0).extend_from_slice(b"world");
        out.appended(5);
        assert!(out.has_unsent());
        assert!(
            out.complete(send, 2, &mut pool),
            "a short write is reported"
        );
        let send = out.take_send().unwrap();
        assert_eq!(
            send.iovecs().len(),
            2,
            "split output goes out as one sendmsg with two iovecs"
        );
        assert_eq!(send.iovecs()[0].iov_base as usize, frozen as usize + 2);
        assert_eq!(send.to_vec(), b"llo world");
        assert!(!out.complete(send, 9, &mut pool));
        assert!(out.is_empty());
        assert_eq!(out.chunks.len(), 0, "written chunks go back to the pool");
        assert_eq!(pool.idle(), 2);
    }

    #[test]
    fn a_short_write_over_several_chunks_keeps_the_order() {
        let mut pool = BufPool::default();
        let mut out = Output::default();
        // Three chunks, as short sends over several chunks leave them.
        for piece in [&b"ab"[..], b"cd", b"ef"] {
            out.chunks.push_back(piece.to_vec());
            out.appended(2);
        }
        let send = out.take_send().unwrap();
        assert_eq!(send.to_vec(), b"abcdef");
        out.tail_chunk(&mut pool, 0).extend_from_slice(b"gh");
        out.appended(2);
        out.complete(send, 3, &mut pool);
        let send = out.take_send().unwrap();
        assert_eq!(send.to_vec(), b"defgh");
        out.complete(send, 5, &mut pool);
        assert!(out.is_empty() && !out.has_unsent());
    }
}
