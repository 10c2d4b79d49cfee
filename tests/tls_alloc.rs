//! Allocations per message through TLS: once warm, how many heap allocations the worker makes
//! per echoed frame on a TLS session, one frame per round trip and 16 frames per write. A
//! counting global allocator counts only on the server's worker threads, which the
//! worker-start hook marks (as tests/alloc.rs does for plain sessions, where the count is
//! next to zero).
//!
//! This file holds a single test: the counter is process-wide.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use ringwire::codec::Len32;
use util::tls::Pki;
use util::tls_client::{self, TlsStream};
use util::tls_echo::{self, recording};

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

const PAYLOAD: usize = 64;
const WARMUP: usize = 2_000;
const MEASURED: usize = 20_000;
/// Frames per write in the pipelined run.
const PIPELINED: usize = 16;

/// Allocations per echoed frame allowed one frame per round trip. Each round trip is one
/// record in and one record out, and rustls allocates one `Vec` for each (seen in backtraces
/// of the counted allocations):
/// - decrypting: the record is decrypted in place in rustls's receive buffer, then its
///   plaintext is moved out into a `Vec` of its own (`Payload::into_vec` in
///   `CommonState::take_received_plaintext`) that waits in rustls's plaintext queue until the
///   engine reads it;
/// - encrypting: each sealed record gets a new buffer (`PrefixedPayload::with_capacity` in
///   `RecordLayer::encrypt_outgoing`) queued until the engine copies it out with `write_tls`.
///
/// The engine itself allocates nothing per message (tests/alloc.rs), so the count is 2 per
/// round trip; the bound leaves room for rustls's queues growing now and then. Per message,
/// the cost falls with the frames a record carries.
const PER_ROUND_TRIP: f64 = 3.0;

/// Echoes `messages` frames, `per_write` to a write (one TLS record each way), checking each
/// batch; returns the worker allocations made meanwhile.
fn pump(stream: &mut TlsStream, messages: usize, per_write: usize, tag: u8) -> u64 {
    let frame = util::len32(&[tag; PAYLOAD]);
    let batch = frame.repeat(per_write);
    let before = WORKER_ALLOCS.load(Relaxed);
    for _ in 0..messages / per_write {
        tls_client::echo(stream, &batch);
    }
    WORKER_ALLOCS.load(Relaxed) - before
}

#[test]
fn tls_echo_allocates_per_record_not_per_message() {
    let pki = Pki::new("alloc");
    let leaf = pki.server("server", &["localhost"]);
    let (server, _seen) = recording(Len32, tls_echo::server_tls(&leaf), false);
    let server = util::start(server.on_worker_start(|_| IS_WORKER.with(|w| w.set(true))));
    let config = Arc::new(tls_client::client_config(
        &pki.ca_pem,
        tls_client::ANY_VERSION,
    ));
    let mut stream = tls_client::connect(server.addr(), &config, "localhost");

    let warmup = pump(&mut stream, WARMUP, 1, 1) + pump(&mut stream, WARMUP, PIPELINED, 2);
    assert!(
        warmup > 0,
        "no allocation counted on the workers at all: is the worker-start hook running?"
    );
    let single = pump(&mut stream, MEASURED, 1, 3);
    let pipelined = pump(&mut stream, MEASURED, PIPELINED, 4);
    let per_single = single as f64 / MEASURED as f64;
    let per_pipelined = pipelined as f64 / MEASURED as f64;
    println!(
        "worker allocations per echoed message over TLS: {per_single:.3} one frame per round \
         trip ({single} for {MEASURED}), {per_pipelined:.3} with {PIPELINED} frames per write \
         ({pipelined} for {MEASURED}); {warmup} during warm-up"
    );
    let s = server.total();
    assert_eq!(s.frames_in, (2 * (WARMUP + MEASURED)) as u64, "{s:#?}");
    assert!(
        per_single <= PER_ROUND_TRIP,
        "{per_single:.3} worker allocations per round trip (at most {PER_ROUND_TRIP})"
    );
    // The cost is per record, not per message: 16 frames share a record each way.
    assert!(
        per_pipelined <= PER_ROUND_TRIP / PIPELINED as f64,
        "{per_pipelined:.3} worker allocations per pipelined message (at most {:.3})",
        PER_ROUND_TRIP / PIPELINED as f64
    );
    drop(stream);
    server.wait_total("the session to close", |s| s.closed == 1);
    server.stop_cleanly();
}
