//! What a request through a backend pool costs in allocations, once warm: a front forwards
//! pipelined client lines to a `redis-server` through `ringwire::backend` and answers through
//! reserved replies. A counting global allocator counts only on the server's worker thread.
//!
//! The pool's own share is one allocation per request (the copy of the request that
//! `CoreCtx::write_to` carries); completing the client's reply with the backend's bytes is
//! another (`Reply::complete` takes a `Vec`). The test bounds the whole path at two and a half
//! per request and prints the figure.
//!
//! This file holds a single test: the counter is process-wide.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ringwire::backend::{BackendError, Backends, PoolConfig, Waiter};
use ringwire::codec::Lines;
use ringwire::{CoreCtx, Handler, Reply, Server, Session};
use util::redis::Redis;

thread_local! {
    /// Set on the server's worker thread by the worker-start hook.
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Allocations (including reallocations) made on worker threads.
static WORKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; counting neither
// allocates nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[inline]
fn count() {
    if IS_WORKER.try_with(Cell::get).unwrap_or(false) {
        WORKER_ALLOCS.fetch_add(1, Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Completes a client's reply with the backend's raw reply.
struct Answer(Reply);

impl Waiter for Answer {
    fn done(self, _: &mut CoreCtx, reply: Result<&[u8], BackendError>) {
        match reply {
            Ok(bytes) => self.0.complete(bytes),
            Err(e) => self.0.complete(format!("-ERR {e}\r\n")),
        }
    }
}

/// Each line is an inline command, forwarded as it came (with its line end back on).
struct Front {
    request: Vec<u8>,
}

impl Handler<Lines> for Front {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        self.request.clear();
        self.request.extend_from_slice(line);
        self.request.extend_from_slice(b"\r\n");
        let reply = s.reserve().expect("under max_replies");
        let mut backends = s.core().state::<Backends<Answer>>().clone();
        backends.send(s.core(), 0, &self.request, Answer(reply));
    }
}

const DEPTH: usize = 32;
const WARMUP: usize = 10_000;
const MEASURED: usize = 50_000;

fn pump(conn: &mut TcpStream, requests: usize) {
    let batch = "PING\n".repeat(DEPTH);
    let expect = b"+PONG\r\n".repeat(DEPTH);
    let mut back = vec![0u8; expect.len()];
    for _ in 0..requests / DEPTH {
        conn.write_all(batch.as_bytes()).unwrap();
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, expect);
    }
}

#[test]
fn a_request_through_the_pool_costs_one_allocation_of_its_own() {
    let redis = Redis::start();
    let addr = redis.addr();
    let server = util::start(
        Server::new(Lines::new(), || Front {
            request: Vec::new(),
        })
        .core_state(move |_| Backends::<Answer>::new(vec![addr], PoolConfig::default()))
        .cores(1)
        .on_worker_start(|_| IS_WORKER.with(|w| w.set(true)))
        .bind(util::any_port()),
    );
    let mut conn = util::connect(server.addr());
    pump(&mut conn, WARMUP);
    let before = WORKER_ALLOCS.load(Relaxed);
    pump(&mut conn, MEASURED);
    let allocs = WORKER_ALLOCS.load(Relaxed) - before;
    let per_request = allocs as f64 / MEASURED as f64;
    println!("worker allocations: {allocs} for {MEASURED} requests ({per_request:.3} each)");
    assert!(
        per_request <= 2.5,
        "{per_request:.3} allocations per request through the pool"
    );
    drop(conn);
    server.stop_cleanly();
}
