//! The engine under resource pressure: a completion queue too small for the load (the kernel
//! overflows it and ends multishot receives), a buffer ring too small for the load (receives
//! end with ENOBUFS), and peers that reset mid-echo. Every byte of every surviving stream
//! comes back exactly, the pressure shows in the counters, and the server keeps serving.
//!
//! The completion-queue and buffer-ring counters mean something only on io_uring; on epoll
//! those checks are skipped, loudly, and the echo is still checked.

mod util;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::Raw;
use ringwire::CloseReason;
use util::{Pattern, Rng, Running};

/// Sends `len` bytes of `pattern` in random-sized writes from one thread while another reads
/// the echo and checks every byte; then half-closes and expects EOF after the last byte.
fn echo_stream(addr: SocketAddr, conn: usize, pattern: Pattern, len: u64, mut rng: Rng) {
    let mut reader = util::connect(addr);
    let mut writer = reader.try_clone().expect("clone client socket");
    thread::scope(|s| {
        s.spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0u64;
            while off < len {
                let n = rng.range(1, buf.len()).min((len - off) as usize);
                pattern.fill(off, &mut buf[..n]);
                writer
                    .write_all(&buf[..n])
                    .unwrap_or_else(|e| panic!("conn {conn}: write at {off}: {e}"));
                off += n as u64;
            }
            util::shutdown_write(&writer);
        });
        let mut buf = vec![0u8; 64 * 1024];
        if let Err(e) = util::read_pattern(&mut reader, pattern, 0, len, &mut buf) {
            panic!("conn {conn}: {e}");
        }
        util::expect_eof(&mut reader);
    });
}

/// `conns` connections at once, each echoing `len` bytes; checks the counters every echo
/// must satisfy and returns them.
fn busy_echo(server: &Running, conns: usize, len: u64) -> ringwire::CoreSnapshot {
    let seed = util::base_seed();
    let addr = server.addr();
    let started = Instant::now();
    thread::scope(|s| {
        for conn in 0..conns {
            let pattern = Pattern::new(seed ^ (conn as u64 + 1).wrapping_mul(0x9E37_79B9));
            let rng = Rng::new(seed.rotate_left(17) ^ conn as u64);
            s.spawn(move || echo_stream(addr, conn, pattern, len, rng));
        }
    });
    let total = conns as u64 * len;
    let s = server.wait_total("every session to close", |s| s.closed == conns as u64);
    println!(
        "{conns} connections echoed {total} bytes in {:?}: recvs {} enobufs {} recv_rearms {} \
         cq_overflows {} writes {} partial_writes {} backpressure_pauses {}",
        started.elapsed(),
        s.recvs,
        s.enobufs,
        s.recv_rearms,
        s.cq_overflows,
        s.writes,
        s.partial_writes,
        s.backpressure_pauses
    );
    assert_eq!(s.accepted, conns as u64, "{s:#?}");
    assert_eq!(
        s.closed_for(CloseReason::PeerClosed),
        conns as u64,
        "{s:#?}"
    );
    assert_eq!((s.bytes_in, s.bytes_out), (total, total), "{s:#?}");
    assert_eq!(
        (s.panics, s.codec_errors, s.worker_deaths),
        (0, 0, 0),
        "{s:#?}"
    );
    s
}

#[test]
fn overflowing_completion_queue_loses_no_byte() {
    const CONNS: usize = 100;
    let server = util::start(util::echo(Raw).ring_entries(4).cq_entries(8));
    let s = busy_echo(&server, CONNS, 256 << 10);
    if server.is_uring() {
        assert!(
            s.cq_overflows > 0,
            "{CONNS} busy connections never overflowed an 8-entry completion queue: {s:#?}"
        );
        assert!(
            s.recv_rearms > 0,
            "the overflow ended no multishot receive: {s:#?}"
        );
    } else {
        eprintln!(
            "SKIPPED completion-queue overflow checks (cq_overflows, recv_rearms): not \
             meaningful on {}; the echo itself was checked",
            server.driver()
        );
    }
    server.stop_cleanly();
}

#[test]
fn exhausted_buffer_ring_loses_no_byte() {
    const CONNS: usize = 64;
    const COUNT: u32 = 16;
    const SIZE: u32 = 256;
    let server = util::start(util::echo(Raw).buffers(COUNT, SIZE));
    let len = 64 << 10;
    let s = busy_echo(&server, CONNS, len);
    if server.is_uring() {
        assert!(
            s.enobufs > 0,
            "{CONNS} busy connections never emptied a ring of {COUNT} buffers: {s:#?}"
        );
        assert!(s.recv_rearms >= s.enobufs, "{s:#?}");
        assert!(
            s.recvs >= CONNS as u64 * len / SIZE as u64,
            "{} receives cannot carry the bytes in {SIZE}-byte buffers",
            s.recvs
        );
    } else {
        eprintln!(
            "SKIPPED buffer-ring checks (enobufs, recv_rearms): not meaningful on {}; the \
             echo itself was checked",
            server.driver()
        );
    }
    server.stop_cleanly();
}

/// Clients that reset (SO_LINGER 0) while their echo is in full flow.
const FLOWING: usize = 25;
/// Clients that reset while the server is paused on them (backpressure), a send blocked.
const PAUSED: usize = 25;
/// What each flowing client would send, if it did not reset first.
const RESET_TOTAL: u64 = 8 << 20;
/// Most a paused client sends before its writes must have blocked.
const PAUSED_CAP: u64 = 128 << 20;

/// Resets `conn`: SO_LINGER 0, then close.
fn reset(conn: TcpStream) {
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
}

/// Writes `pattern` until `total` bytes are written or a write blocks for the socket's write
/// timeout while `stop()` holds. Returns the bytes written.
fn write_until_blocked(
    writer: &mut TcpStream,
    conn: usize,
    pattern: Pattern,
    total: u64,
    stop: impl Fn() -> bool,
) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    while off < total {
        let n = buf.len().min((total - off) as usize);
        pattern.fill(off, &mut buf[..n]);
        match writer.write(&buf[..n]) {
            Ok(k) => off += k as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("conn {conn}: write at {off}: {e}"),
        }
    }
    off
}

/// Sends up to `RESET_TOTAL` bytes while reading back the first `read` bytes of the echo
/// (checked), then stops reading, and resets once its writes block.
fn reset_mid_echo(addr: SocketAddr, conn: usize, pattern: Pattern, read: u64) {
    let mut reader = util::connect(addr);
    let mut writer = reader.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let stop = &stop;
        // Stops the writer however this closure ends.
        let _stop_writer = util::SetOnDrop(stop);
        let writing = s.spawn(move || {
            write_until_blocked(&mut writer, conn, pattern, RESET_TOTAL, || {
                stop.load(Ordering::Relaxed)
            })
        });
        let mut buf = vec![0u8; 64 * 1024];
        if let Err(e) = util::read_pattern(&mut reader, pattern, 0, read, &mut buf) {
            panic!("conn {conn}: {e}");
        }
        stop.store(true, Ordering::Relaxed);
        writing.join().expect("writer");
    });
    reset(reader);
}

/// Sends without ever reading until a write blocks for 300 ms: by then the server has stopped
/// reading it. Returns the connection, to be reset.
fn stall(addr: SocketAddr, conn: usize, pattern: Pattern) -> TcpStream {
    let mut stream = util::connect(addr);
    stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let sent = write_until_blocked(&mut stream, conn, pattern, PAUSED_CAP, || true);
    assert!(
        sent < PAUSED_CAP,
        "conn {conn}: sent {sent} bytes without reading and never blocked"
    );
    stream
}

#[test]
fn peers_resetting_mid_echo_end_alone() {
    let server = util::start(util::echo(Raw).water_marks(256 << 10, 64 << 10));
    let addr = server.addr();
    let seed = util::base_seed();
    let mut rng = Rng::new(seed);
    let pattern = |conn: usize| Pattern::new(seed ^ (conn as u64 + 1).wrapping_mul(0x9E37_79B9));

    // 1. Resets while data flows both ways.
    thread::scope(|s| {
        for conn in 0..FLOWING {
            let read = rng.range(64 << 10, 4 << 20) as u64;
            let pattern = pattern(conn);
            s.spawn(move || reset_mid_echo(addr, conn, pattern, read));
        }
    });
    let s = server.wait_total("every flowing session to close", |s| {
        s.closed == FLOWING as u64
    });
    println!(
        "{FLOWING} resets mid-flow: Reset {}, IoError {}",
        s.closed_for(CloseReason::Reset),
        s.closed_for(CloseReason::IoError)
    );

    // 2. Resets of sessions the server has paused, each with a send blocked on a full socket.
    let pauses_before = s.backpressure_pauses;
    let stalled: Vec<TcpStream> = thread::scope(|s| {
        let threads: Vec<_> = (FLOWING..FLOWING + PAUSED)
            .map(|conn| {
                let pattern = pattern(conn);
                s.spawn(move || stall(addr, conn, pattern))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("stalling client"))
            .collect()
    });
    let s = server.wait_total("every stalled session to be paused", |s| {
        s.backpressure_pauses >= pauses_before + PAUSED as u64
    });
    assert_eq!(s.closed, FLOWING as u64, "{s:#?}");
    stalled.into_iter().for_each(reset);

    let s = server.wait_total("every reset session to close", |s| {
        s.closed == (FLOWING + PAUSED) as u64
    });
    let (resets, io_errors) = (
        s.closed_for(CloseReason::Reset),
        s.closed_for(CloseReason::IoError),
    );
    println!(
        "{} resets: closed as Reset {resets}, IoError {io_errors}; {s:?}",
        FLOWING + PAUSED
    );
    assert_eq!(s.accepted, (FLOWING + PAUSED) as u64, "{s:#?}");
    assert_eq!(
        resets + io_errors,
        (FLOWING + PAUSED) as u64,
        "a reset peer's session must close as Reset (or IoError): {s:#?}"
    );
    assert_eq!((s.panics, s.worker_deaths), (0, 0), "{s:#?}");

    // The server survived and serves a new connection.
    let mut fresh = util::connect(addr);
    fresh.write_all(b"after the resets").unwrap();
    assert_eq!(util::read_n(&mut fresh, 16), b"after the resets");
    drop(fresh);
    let s = server.wait_total("the fresh session to close", |s| {
        s.closed == (FLOWING + PAUSED) as u64 + 1
    });
    assert_eq!(s.closed_for(CloseReason::PeerClosed), 1, "{s:#?}");
    server.stop_cleanly();
}
