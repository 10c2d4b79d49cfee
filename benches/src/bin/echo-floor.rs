//! The floor: the echo server in plain `io-uring` code, with no abstraction, as the reference
//! for what io_uring costs. The same ring flags, queue sizes and buffers as ringwire: one pinned
//! thread per core with its own SO_REUSEPORT listener, multishot accept, multishot receive over
//! a provided-buffer ring, one send per receive (at most one in flight per connection, the rest
//! waiting in a pending buffer), one `submit_and_wait(1)` per loop turn. `len32` echoes bytes
//! as they arrive (the same bytes as whole-frame echo) but checks every header.
//!
//! Invariant: a connection's slot is removed (and its close submitted) only when it has no
//! receive and no send in flight, so a completion's slot always names its own connection.
//!
//! ```text
//! cargo run --release -p ringwire-bench --bin echo-floor -- --cores 2 --framing len32
//! ```

#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};
use ringwire_bench::{EchoArgs, Framing, Len32Guard, Ready};
use slab::Slab;

const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const CLOSE: u64 = 3;
const BGID: u16 = 0;

/// user_data: the operation kind in the high 32 bits, the connection slot in the low 32.
fn ud(kind: u64, slot: usize) -> u64 {
    kind << 32 | slot as u64
}

fn main() {
    ringwire_bench::run("echo-floor", worker);
}

#[derive(PartialEq)]
enum Recv {
    Armed,
    /// Ended with ENOBUFS; re-armed at the end of the loop turn.
    Starved,
    Off,
}

struct Conn {
    fd: RawFd,
    recv: Recv,
    sending: bool,
    /// Bytes of the send in flight are `out[sent..]`; `out` is not touched until it completes.
    out: Vec<u8>,
    sent: usize,
    /// Received while a send is in flight.
    pending: Vec<u8>,
    eof: bool,
    dead: bool,
    /// `--max-frame` with `len32` framing, whose headers `guard` checks.
    max_frame: Option<usize>,
    guard: Len32Guard,
}

/// Provided buffers: the ring entries and then the buffers, in one anonymous mapping that is
/// never unmapped (workers run until the process exits), so it outlives the ring.
struct BufRing {
    entries: *mut BufRingEntry,
    bufs: *mut u8,
    mask: u16,
    size: usize,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring, count: u32, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--buffers must be a power of two up to 32768 and --buf-size positive",
            ));
        }
        let ring_len = (count as usize * size_of::<BufRingEntry>()).next_multiple_of(4096);
        let len = ring_len + count as usize * size as usize;
        // SAFETY: a fresh anonymous private mapping; no file, no fixed address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut bufs = BufRing {
            entries: base.cast(),
            // SAFETY: `ring_len` < `len`, inside the mapping.
            bufs: unsafe { base.cast::<u8>().add(ring_len) },
            mask: (count - 1) as u16,
            size: size as usize,
            tail: 0,
        };
        for bid in 0..count {
            bufs.put(bid as u16);
        }
        bufs.publish();
        // SAFETY: the page-aligned entries stay mapped for the life of the process.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(base as u64, count as u16, BGID, 0)?
        };
        Ok(bufs)
    }

    fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid <= self.mask && len <= self.size);
        // SAFETY: in range of the mapping; the kernel handed this buffer to the completion and
        // does not write it again until it is given back.
        unsafe { std::slice::from_raw_parts(self.bufs.add(bid as usize * self.size), len) }
    }

    fn give_back(&mut self, bid: u16) {
        self.put(bid);
        self.publish();
    }

    fn put(&mut self, bid: u16) {
        // SAFETY: the index is masked into the entries; the kernel reads only entries up to the
        // published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries.add((self.tail & self.mask) as usize) };
        entry.set_addr(self.bufs as u64 + bid as u64 * self.size as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail overlays entry 0's reserved field, valid while the mapping lives;
        // the kernel reads it atomically.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

/// Queues `entry`, submitting first when the submission queue is full.
///
/// # Safety
///
/// Whatever `entry` points to stays valid until its (last) completion is reaped.
unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) {
    // SAFETY: forwarded from this function's contract.
    while unsafe { ring.submission().push(entry) }.is_err() {
        if let Err(e) = ring.submit() {
            let busy = matches!(
                e.raw_os_error(),
                Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
            );
            assert!(busy, "io_uring submit: {e}");
        }
    }
}

fn arm_recv(ring: &mut IoUring, c: &mut Conn, slot: usize) {
    c.recv = Recv::Armed;
    let entry = opcode::RecvMulti::new(Fd(c.fd), BGID)
        .build()
        .user_data(ud(RECV, slot));
    // SAFETY: a multishot receive points only to the buffer ring, which is never unmapped.
    unsafe { push(ring, &entry) };
}

fn send(ring: &mut IoUring, c: &mut Conn, slot: usize) {
    c.sending = true;
    let rest = &c.out[c.sent..];
    let entry = opcode::Send::new(
        Fd(c.fd),
        rest.as_ptr(),
        rest.len().min(u32::MAX as usize) as u32,
    )
    .flags(libc::MSG_NOSIGNAL)
    .build()
    .user_data(ud(SEND, slot));
    // SAFETY: `out` is neither changed nor dropped while `sending` (the slot is not removed
    // while a send is in flight, and the slab growing moves the Vec but not its bytes).
    unsafe { push(ring, &entry) };
}

/// Stops the connection: shutting the socket down ends its receive and any send in flight.
fn kill(c: &mut Conn) {
    c.dead = true;
    c.pending = Vec::new();
    // SAFETY: shutdown takes no pointers; the fd is open until the slot's close.
    unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
}

/// Closes the connection once nothing is in flight and nothing is left to echo after EOF.
fn settle(ring: &mut IoUring, conns: &mut Slab<Conn>, slot: usize) {
    let c = &conns[slot];
    let drained = c.eof && c.out.is_empty() && c.pending.is_empty();
    if c.recv != Recv::Armed && !c.sending && (c.dead || drained) {
        let entry = opcode::Close::new(Fd(c.fd))
            .build()
            .user_data(ud(CLOSE, slot));
        // SAFETY: a close points to nothing.
        unsafe { push(ring, &entry) };
        conns.remove(slot);
    }
}

/// A receive completion: echo what it carries (checking `len32` headers), re-arm if it ended.
fn on_recv(
    ring: &mut IoUring,
    conns: &mut Slab<Conn>,
    bufs: &mut BufRing,
    starved: &mut Vec<usize>,
    slot: usize,
    res: i32,
    flags: u32,
) {
    let c = &mut conns[slot];
    if res > 0 {
        let bid = cqueue::buffer_select(flags).expect("receive without a buffer");
        let data = bufs.get(bid, res as usize);
        let bad = c
            .max_frame
            .is_some_and(|max| c.guard.feed(data, max).is_err());
        if c.dead {
            // Stopping: the bytes are dropped.
        } else if bad {
            kill(c);
        } else if c.sending {
            c.pending.extend_from_slice(data);
        } else {
            c.out.extend_from_slice(data);
            send(ring, c, slot);
        }
        bufs.give_back(bid);
    }
    if !cqueue::more(flags) {
        c.recv = Recv::Off;
        match res {
            _ if c.dead => {}
            1.. => arm_recv(ring, c, slot),
            0 => c.eof = true,
            e if e == -libc::ENOBUFS => {
                c.recv = Recv::Starved;
                starved.push(slot);
            }
            _ => kill(c),
        }
    }
    settle(ring, conns, slot);
}

/// A send completion: send the rest, then what is pending.
fn on_send(ring: &mut IoUring, conns: &mut Slab<Conn>, slot: usize, res: i32) {
    let c = &mut conns[slot];
    c.sending = false;
    if res < 0 {
        kill(c);
    } else if !c.dead {
        c.sent += res as usize;
        if c.sent == c.out.len() {
            c.out.clear();
            c.sent = 0;
            std::mem::swap(&mut c.out, &mut c.pending);
        }
        if !c.out.is_empty() {
            send(ring, c, slot);
        }
    }
    settle(ring, conns, slot);
}

fn worker(listener: TcpListener, args: &EchoArgs, ready: Ready) -> io::Result<()> {
    let cq = (args.ring_entries * 4)
        .max(args.buffers * 2)
        .next_power_of_two();
    let max_frame = (args.framing == Framing::Len32).then_some(args.max_frame);
    let mut ring = IoUring::builder()
        .setup_cqsize(cq)
        .setup_clamp()
        .setup_submit_all()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(args.ring_entries)?;
    let mut bufs = BufRing::new(&ring, args.buffers, args.buf_size)?;
    let mut conns: Slab<Conn> = Slab::with_capacity(1024);
    let mut starved: Vec<usize> = Vec::new();
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(cq as usize);
    let mut accept_armed = false;
    ready.ready();
    loop {
        if !accept_armed {
            let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(ud(ACCEPT, 0));
            // SAFETY: a multishot accept without an address points to nothing.
            unsafe { push(&mut ring, &entry) };
            accept_armed = true;
        }
        if let Err(e) = ring.submit_and_wait(1) {
            if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) {
                return Err(e);
            }
        }
        cqes.clear();
        cqes.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, res, flags) in &cqes {
            let slot = (data & 0xffff_ffff) as usize;
            match data >> 32 {
                ACCEPT => {
                    accept_armed &= cqueue::more(flags);
                    if res >= 0 {
                        // TCP_NODELAY is inherited from the listener.
                        let slot = conns.insert(Conn {
                            fd: res,
                            recv: Recv::Off,
                            sending: false,
                            out: Vec::new(),
                            sent: 0,
                            pending: Vec::new(),
                            eof: false,
                            dead: false,
                            max_frame,
                            guard: Len32Guard::default(),
                        });
                        arm_recv(&mut ring, &mut conns[slot], slot);
                    }
                }
                RECV => on_recv(
                    &mut ring,
                    &mut conns,
                    &mut bufs,
                    &mut starved,
                    slot,
                    res,
                    flags,
                ),
                SEND => on_send(&mut ring, &mut conns, slot, res),
                _ => {} // CLOSE: nothing to do.
            }
        }
        // The turn's buffers are back: receives that ran dry can go again.
        for slot in starved.drain(..) {
            if let Some(c) = conns.get_mut(slot) {
                if c.recv == Recv::Starved {
                    arm_recv(&mut ring, c, slot);
                }
            }
        }
    }
}
