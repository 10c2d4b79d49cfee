//! Connection churn: thousands of connections open at once, then closed, in order or by
//! reset; every session is accepted, served and closed, and every descriptor the server took
//! is given back, the server's own once it stops.
//!
//! This file holds a single test on purpose: it counts the descriptors of the whole process,
//! which a test running beside it would disturb.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::Raw;
use ringwire::CloseReason;

/// Connections held open at once.
const HELD: usize = 2000;
/// Threads that open them (concurrent connects hit the multishot accept in bursts).
const OPENERS: usize = 8;
/// Connect-echo-close cycles per churning thread, after the held phase.
const CYCLES: usize = 250;
const CHURNERS: usize = 4;

fn open_many(addr: SocketAddr) -> Vec<TcpStream> {
    thread::scope(|s| {
        let openers: Vec<_> = (0..OPENERS)
            .map(|_| {
                s.spawn(move || {
                    (0..HELD / OPENERS)
                        .map(|_| util::connect(addr))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        openers
            .into_iter()
            .flat_map(|t| t.join().expect("opener thread"))
            .collect()
    })
}

/// Connects, echoes one byte, and closes: in order, or with a reset (SO_LINGER 0) on odd
/// cycles.
fn churn(addr: SocketAddr, thread_no: usize) {
    for cycle in 0..CYCLES {
        let mut s = util::connect(addr);
        let byte = [(thread_no * CYCLES + cycle) as u8];
        s.write_all(&byte).unwrap();
        assert_eq!(util::read_n(&mut s, 1), byte, "churn {thread_no}/{cycle}");
        if cycle % 2 == 1 {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    }
}

#[test]
fn thousands_of_connections_come_and_go_without_leaks() {
    // Client and server ends of every held connection, plus what the harness holds.
    let limit = util::raise_nofile(2 * HELD as u64 + 512);
    println!("RLIMIT_NOFILE {limit}");
    let before_server = util::fd_count();
    let server = util::start(util::echo(Raw));
    let addr = server.addr();
    let baseline = util::fd_count();

    // 1. Hold HELD connections open at once, each echoing a byte, then close them all.
    let started = Instant::now();
    let mut conns = open_many(addr);
    assert_eq!(conns.len(), HELD);
    server.wait_total("every connection accepted", |s| s.accepted == HELD as u64);
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&[i as u8]).unwrap();
    }
    for (i, s) in conns.iter_mut().enumerate() {
        assert_eq!(util::read_n(s, 1), [i as u8], "connection {i}");
    }
    let open = util::fd_count();
    assert!(
        open >= baseline + 2 * HELD,
        "{open} descriptors with {HELD} connections held, {baseline} before: \
         the server does not hold one per session"
    );
    drop(conns);
    util::wait_fds(baseline, "after closing the held connections");
    let s = server.wait_total("every held session closed", |s| s.closed == HELD as u64);
    println!("held phase: {:?}, {s:?}", started.elapsed());
    assert_eq!(s.accepted, HELD as u64, "{s:#?}");
    assert_eq!(s.closed_for(CloseReason::PeerClosed), HELD as u64, "{s:#?}");
    assert_eq!(s.rejected + s.accept_backoffs, 0, "{s:#?}");

    // 2. Churn: connections opened and closed (half by reset) while others are opening,
    // reusing the slots the held phase freed.
    let started = Instant::now();
    thread::scope(|s| {
        for t in 0..CHURNERS {
            s.spawn(move || churn(addr, t));
        }
    });
    let total = (HELD + CHURNERS * CYCLES) as u64;
    util::wait_fds(baseline, "after churning");
    let s = server.wait_total("every churned session closed", |s| s.closed == total);
    println!("churn phase: {:?}, {s:?}", started.elapsed());
    assert_eq!(s.accepted, total, "{s:#?}");
    let resets = (CHURNERS * CYCLES / 2) as u64;
    assert_eq!(
        s.closed_for(CloseReason::PeerClosed) + s.closed_for(CloseReason::Reset),
        total,
        "{s:#?}"
    );
    assert_eq!(s.closed_for(CloseReason::Reset), resets, "{s:#?}");

    // 3. A stopped server gives back its listener, ring and wake-up descriptors too.
    server.stop_cleanly();
    util::wait_fds(before_server, "after the server stopped");
}
