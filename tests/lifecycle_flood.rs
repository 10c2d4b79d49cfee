//! A connection flood: thousands of connections opened at once by many threads, all held
//! open together, each echoing once, then all closed. Every one is accepted and served, none is
//! rejected or delayed by an accept failure, and the process's descriptors return to where
//! they were; then the server still serves.
//!
//! This file holds a single test on purpose: it counts the descriptors of the whole process,
//! which a test running beside it would disturb.

mod util;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::Raw;
use ringwire::CloseReason;

/// Connections held open at once.
const CONNS: usize = 5000;
/// Threads that open them, concurrently.
const OPENERS: usize = 25;

/// Makes the opener threads wait for each other (and for the main thread's checks) without a
/// `Barrier`, which would hang the test if one thread failed before reaching it.
struct Gate {
    arrived: AtomicUsize,
    open: AtomicBool,
}

impl Gate {
    /// Arrives, then waits until the gate opens (at most a generous bound).
    fn arrive_and_wait(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + 3 * util::SETTLE_TIMEOUT;
        while !self.open.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until `n` threads arrived; false if they did not in time.
    fn wait_arrivals(&self, n: usize) -> bool {
        let deadline = Instant::now() + 2 * util::SETTLE_TIMEOUT;
        while self.arrived.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

/// Opens the gate when dropped: a failing main thread never leaves the openers waiting.
struct OpenOnDrop<'a>(&'a Gate);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open.store(true, Ordering::SeqCst);
    }
}

/// One opener: connects its share, waits at the gate with all of them open, echoes 8 bytes
/// on each, and closes them. Returns an error instead of panicking before the gate.
fn opener(addr: SocketAddr, thread_no: usize, gate: &Gate) -> Result<usize, String> {
    let mut conns = Vec::with_capacity(CONNS / OPENERS);
    let mut failure = None;
    for i in 0..CONNS / OPENERS {
        match TcpStream::connect_timeout(&addr, util::IO_TIMEOUT) {
            Ok(c) => conns.push(c),
            Err(e) => {
                failure = Some(format!("opener {thread_no}: connect {i}: {e}"));
                break;
            }
        }
    }
    gate.arrive_and_wait();
    if let Some(f) = failure {
        return Err(f);
    }
    let echo = |c: &mut TcpStream, id: u64| -> io::Result<()> {
        c.set_read_timeout(Some(util::IO_TIMEOUT))?;
        c.write_all(&id.to_le_bytes())?;
        let back = util::read_n(c, 8);
        if back != id.to_le_bytes() {
            return Err(io::Error::other(format!("echoed {back:?}")));
        }
        Ok(())
    };
    for (i, c) in conns.iter_mut().enumerate() {
        let id = (thread_no * CONNS + i) as u64;
        echo(c, id).map_err(|e| format!("opener {thread_no}: echo on {i}: {e}"))?;
    }
    Ok(conns.len())
}

#[test]
fn connection_flood_is_served_and_leaves_no_descriptor_behind() {
    let limit = util::raise_nofile(2 * CONNS as u64 + 512);
    println!("RLIMIT_NOFILE {limit}");
    let before_server = util::fd_count();
    let server = util::start(util::echo(Raw).cores(2));
    let addr = server.addr();
    let baseline = util::fd_count();
    let gate = Gate {
        arrived: AtomicUsize::new(0),
        open: AtomicBool::new(false),
    };

    let started = Instant::now();
    let results: Vec<Result<usize, String>> = thread::scope(|s| {
        let threads: Vec<_> = (0..OPENERS)
            .map(|t| {
                let gate = &gate;
                s.spawn(move || opener(addr, t, gate))
            })
            .collect();
        {
            let _open = OpenOnDrop(&gate);
            assert!(
                gate.wait_arrivals(OPENERS),
                "the openers did not all arrive"
            );
            let opened = started.elapsed();
            // Every connection is open at once, and the server holds a session for each.
            let s = server.wait_total("every connection accepted", |s| {
                s.accepted + s.rejected >= CONNS as u64
            });
            let open = util::fd_count();
            println!(
                "{CONNS} connections opened by {OPENERS} threads in {opened:?}; {open} \
                 descriptors open ({baseline} before); {s:?}"
            );
            assert_eq!(s.accepted, CONNS as u64, "{s:#?}");
            assert_eq!((s.rejected, s.accept_backoffs), (0, 0), "{s:#?}");
            let per_core: Vec<u64> = server.stats().cores.iter().map(|c| c.accepted).collect();
            println!("accepted per core: {per_core:?}");
            assert!(
                per_core.iter().all(|&n| n > 0),
                "SO_REUSEPORT gave one core no connection out of {CONNS}: {per_core:?}"
            );
            assert!(
                open >= baseline + 2 * CONNS,
                "{open} descriptors with {CONNS} connections held, {baseline} before"
            );
        }
        threads
            .into_iter()
            .map(|t| t.join().expect("opener thread"))
            .collect()
    });
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} openers failed: {failures:?}",
        failures.len()
    );

    util::wait_fds(baseline, "after the flood closed");
    let s = server.wait_total("every session to close", |s| s.closed == CONNS as u64);
    println!("flood served and closed in {:?}; {s:?}", started.elapsed());
    assert_eq!(
        s.closed_for(CloseReason::PeerClosed),
        CONNS as u64,
        "{s:#?}"
    );
    assert_eq!(s.bytes_in, 8 * CONNS as u64, "{s:#?}");
    assert_eq!(s.bytes_out, 8 * CONNS as u64, "{s:#?}");
    assert_eq!((s.panics, s.worker_deaths), (0, 0), "{s:#?}");

    let mut fresh = util::connect(addr);
    fresh.write_all(b"after the flood").unwrap();
    assert_eq!(util::read_n(&mut fresh, 15), b"after the flood");
    drop(fresh);
    server.wait_total("the last session to close", |s| {
        s.closed == CONNS as u64 + 1
    });
    server.stop_cleanly();
    util::wait_fds(before_server, "after the server stopped");
}
