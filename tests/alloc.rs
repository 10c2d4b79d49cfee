//! No allocation per message: once warm, the workers echo a hundred thousand frames with (next
//! to) no heap allocation. A counting global allocator counts only on the server's worker
//! threads, which the worker-start hook marks.
//!
//! This file holds a single test: the counter is process-wide.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::Instant;

use ringwire::codec::Len32;

thread_local! {
    /// Set on the server's worker threads by the worker-start hook. A const-initialised
    /// `Cell<bool>` needs no destructor, so reading it never allocates.
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Allocations (including reallocations) made on worker threads.
static WORKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

struct Counting;

impl Counting {
    #[inline]
    fn count(&self) {
        if IS_WORKER.try_with(Cell::get).unwrap_or(false) {
            WORKER_ALLOCS.fetch_add(1, Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting neither
// allocates nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNS: usize = 4;
const PAYLOAD: usize = 64;
/// Frames written per batch before reading their echoes.
const DEPTH: usize = 8;
const WARMUP: usize = 20_000;
const MEASURED: usize = 100_000;

/// Echoes `messages` frames on each of `conns`' share, `DEPTH` at a time, checking every echo.
fn pump(conns: &mut [TcpStream], messages: usize) {
    thread::scope(|s| {
        for (c, stream) in conns.iter_mut().enumerate() {
            s.spawn(move || {
                let frame = PAYLOAD + 4;
                let mut out = vec![0u8; frame * DEPTH];
                let mut back = vec![0u8; frame * DEPTH];
                let batches = messages / CONNS / DEPTH;
                for batch in 0..batches {
                    for (i, f) in out.chunks_mut(frame).enumerate() {
                        f[..4].copy_from_slice(&(PAYLOAD as u32).to_be_bytes());
                        f[4..].fill((c * 31 + batch * DEPTH + i) as u8);
                    }
                    stream.write_all(&out).expect("write batch");
                    stream.read_exact(&mut back).expect("read echoes");
                    assert!(back == out, "conn {c} batch {batch}: echo differs");
                }
            });
        }
    });
}

#[test]
fn echo_allocates_nothing_per_message_once_warm() {
    let server =
        util::start(util::echo(Len32).on_worker_start(|_| IS_WORKER.with(|w| w.set(true))));
    let mut conns: Vec<TcpStream> = (0..CONNS).map(|_| util::connect(server.addr())).collect();

    pump(&mut conns, WARMUP);
    let before = WORKER_ALLOCS.load(Relaxed);
    assert!(
        before > 0,
        "no allocation counted on the workers at all: is the worker-start hook running?"
    );
    let started = Instant::now();
    pump(&mut conns, MEASURED);
    let elapsed = started.elapsed();
    let after = WORKER_ALLOCS.load(Relaxed);

    let allocs = after - before;
    let s = server.total();
    println!(
        "worker allocations: {before} during start-up and warm-up, {allocs} during {MEASURED} \
         echoed messages ({:.5} per message), {elapsed:?}; frames_in {} writes {}",
        allocs as f64 / MEASURED as f64,
        s.frames_in,
        s.writes
    );
    assert_eq!(s.frames_in, (WARMUP + MEASURED) as u64);
    assert!(
        allocs <= (MEASURED / 1000) as u64,
        "{allocs} worker allocations for {MEASURED} messages (at most {} allowed)",
        MEASURED / 1000
    );
    drop(conns);
    server.wait_total("every session to close", |s| s.closed == CONNS as u64);
    server.stop_cleanly();
}
