//! Backpressure and the write timeout: a peer that sends without reading is not read from once
//! its pending output passes the high-water mark, so it costs the server bounded memory and
//! gets every byte back once it reads; a peer that stops reading for good is closed when its
//! output makes no progress for the write timeout, while a slow but steady reader is not.
//!
//! The tests of this file take a lock: the slow-reader test measures the resident memory of
//! the whole process, which a test running beside it would disturb.

mod util;

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::Raw;
use ringwire::CloseReason;
use util::Pattern;

/// One test at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the slow reader sends.
const SLOW_TOTAL: u64 = 256 << 20;

/// Growth of the process's resident memory the slow reader may cause, with the default
/// water marks (1 MiB high): the session's pending output (about the high-water mark), the
/// receives racing the pause (at most the buffer ring, 1024 x 8 KiB), the pool's chunks and
/// allocator slack. Without backpressure the server would hold most of the 256 MiB.
const SLOW_RSS_BOUND: u64 = 64 << 20;

/// How long a write may block before the client counts the server as no longer reading.
const STALL_PROBE: Duration = Duration::from_millis(300);

/// Writes `total` bytes of `pattern` on `writer`. The socket's write timeout is `STALL_PROBE`
/// until the first write that blocks that long; its offset goes to `stalled`, and the writer
/// then blocks as long as [`util::IO_TIMEOUT`]. Half-closes at the end. Returns the stall's
/// offset.
fn write_until_done(
    mut writer: TcpStream,
    pattern: Pattern,
    total: u64,
    stalled: mpsc::Sender<u64>,
) -> Option<u64> {
    writer.set_write_timeout(Some(STALL_PROBE)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stall = None;
    let mut off = 0u64;
    while off < total {
        let n = buf.len().min((total - off) as usize);
        pattern.fill(off, &mut buf[..n]);
        let mut done = 0;
        while done < n {
            match writer.write(&buf[done..n]) {
                Ok(0) => panic!("write returned 0 at {}", off + done as u64),
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if stall.is_none()
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                {
                    let at = off + done as u64;
                    stall = Some(at);
                    let _ = stalled.send(at);
                    writer.set_write_timeout(Some(util::IO_TIMEOUT)).unwrap();
                }
                Err(e) => panic!("write at {}: {e}", off + done as u64),
            }
        }
        off += n as u64;
    }
    util::shutdown_write(&writer);
    stall
}

/// Polls the server's `bytes_in` until it stays the same for `quiet`; returns it.
fn wait_reading_stopped(server: &util::Running, quiet: Duration) -> u64 {
    let deadline = Instant::now() + util::SETTLE_TIMEOUT;
    let mut last = server.total().bytes_in;
    loop {
        thread::sleep(quiet);
        let now = server.total().bytes_in;
        if now == last {
            return now;
        }
        if Instant::now() > deadline {
            panic!(
                "the server kept reading from a peer that does not read: bytes_in {last} -> {now}; {:#?}",
                server.total()
            );
        }
        last = now;
    }
}

#[test]
fn slow_reader_is_paused_with_bounded_memory_then_gets_every_byte() {
    let _serial = serial();
    let server = util::start(util::echo(Raw));
    let pattern = Pattern::new(util::base_seed());
    let mut reader = util::connect(server.addr());
    let writer = reader.try_clone().unwrap();
    server.wait_total("the session to open", |s| s.accepted == 1);
    let rss_before = util::rss_bytes();
    let peak = AtomicU64::new(rss_before);
    let done = AtomicBool::new(false);
    let started = Instant::now();

    thread::scope(|s| {
        // Stops the sampler however this closure ends.
        let _stop_sampler = util::SetOnDrop(&done);
        // Samples this process's resident memory through the whole transfer.
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(util::rss_bytes(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
        });
        let (stall_tx, stall_rx) = mpsc::channel();
        let writing = s.spawn(move || write_until_done(writer, pattern, SLOW_TOTAL, stall_tx));

        // 1. Nobody reads: the client's sends must stall, and the server stop reading.
        let Ok(stalled_at) = stall_rx.recv() else {
            let result = writing.join();
            panic!(
                "the client wrote all {SLOW_TOTAL} bytes without blocking for {STALL_PROBE:?} \
                 while nobody read the echo ({result:?}): the server never stopped reading; {:#?}",
                server.total()
            );
        };
        let bytes_in = wait_reading_stopped(&server, Duration::from_millis(300));
        let paused = server.total();
        let held = paused.bytes_in - paused.bytes_out;
        let rss_paused = util::rss_bytes();
        println!(
            "paused: client blocked after {stalled_at} bytes; server read {bytes_in}, wrote {}, \
             holds {held} unwritten; RSS grew {} KiB; backpressure_pauses {}",
            paused.bytes_out,
            rss_paused.saturating_sub(rss_before) >> 10,
            paused.backpressure_pauses,
        );
        assert!(
            paused.backpressure_pauses >= 1,
            "the server stopped reading without counting a backpressure pause: {paused:#?}"
        );
        assert!(
            held <= SLOW_RSS_BOUND,
            "the server holds {held} bytes of output for a peer that does not read: {paused:#?}"
        );

        // 2. The client reads: every byte comes back, in order.
        let mut buf = vec![0u8; 256 * 1024];
        if let Err(e) = util::read_pattern(&mut reader, pattern, 0, SLOW_TOTAL, &mut buf) {
            panic!("slow reader's echo: {e}; {:#?}", server.total());
        }
        util::expect_eof(&mut reader);
        let stall = writing.join().expect("writer thread");
        assert_eq!(stall, Some(stalled_at));
    });

    let s = server.wait_total("the session to close", |s| s.closed == 1);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(rss_before);
    println!(
        "{SLOW_TOTAL} bytes echoed to a slow reader in {:?}; peak RSS growth {} KiB (bound {} KiB); \
         backpressure_pauses {} writes {} partial_writes {}",
        started.elapsed(),
        growth >> 10,
        SLOW_RSS_BOUND >> 10,
        s.backpressure_pauses,
        s.writes,
        s.partial_writes,
    );
    assert!(
        growth <= SLOW_RSS_BOUND,
        "resident memory grew {growth} bytes while echoing to a slow reader (bound {SLOW_RSS_BOUND})"
    );
    assert_eq!(
        (s.bytes_in, s.bytes_out),
        (SLOW_TOTAL, SLOW_TOTAL),
        "{s:#?}"
    );
    assert_eq!(s.closed_for(CloseReason::PeerClosed), 1, "{s:#?}");
    assert!(s.backpressure_pauses >= 1, "{s:#?}");
    assert_eq!(s.closed_for(CloseReason::WriteTimeout), 0, "{s:#?}");
    server.stop_cleanly();
}

/// The write timeout of the next test.
const WRITE_TIMEOUT: Duration = Duration::from_millis(400);

/// What the stuck client of the next test tries to send: far more than the kernel's buffers
/// and the high-water mark hold.
const STUCK_TOTAL: u64 = 64 << 20;

/// Sends `len` bytes, half-closes, and reads the echo back in 16 KiB reads 10 ms apart: slow,
/// but the server's output always makes progress well within the write timeout.
fn slow_but_steady(addr: std::net::SocketAddr, pattern: Pattern, len: u64) {
    let mut reader = util::connect(addr);
    let mut writer = reader.try_clone().unwrap();
    thread::scope(|s| {
        s.spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0;
            while off < len {
                let n = buf.len().min((len - off) as usize);
                pattern.fill(off, &mut buf[..n]);
                writer.write_all(&buf[..n]).expect("steady writer");
                off += n as u64;
            }
            util::shutdown_write(&writer);
        });
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = 0;
        while got < len {
            let n = buf.len().min((len - got) as usize);
            if let Err(e) = util::read_pattern(&mut reader, pattern, got, got + n as u64, &mut buf)
            {
                panic!("steady reader at {got}: {e}");
            }
            got += n as u64;
            thread::sleep(Duration::from_millis(10));
        }
        util::expect_eof(&mut reader);
    });
}

#[test]
fn peer_that_stops_reading_is_closed_by_the_write_timeout() {
    let _serial = serial();
    let server = util::start(
        util::echo(Raw)
            .water_marks(64 << 10, 16 << 10)
            .write_timeout(WRITE_TIMEOUT),
    );
    let addr = server.addr();
    let seed = util::base_seed();
    thread::scope(|s| {
        // Beside it, a reader slower than the whole timeout, but steady: never timed out.
        let steady = s.spawn(move || slow_but_steady(addr, Pattern::new(seed ^ 1), 2 << 20));

        let mut stuck = util::connect(addr);
        let mut writer = stuck.try_clone().unwrap();
        let pattern = Pattern::new(seed ^ 2);
        let connected = Instant::now();
        // Writes without ever reading, until the server's close makes a write fail.
        let writing = s.spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0u64;
            while off < STUCK_TOTAL {
                pattern.fill(off, &mut buf);
                match writer.write(&buf) {
                    Ok(n) => off += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return (off, Some(e)),
                }
            }
            (off, None)
        });
        // Nothing reads until the server's close shows in the writes (a reset: the server
        // closes with input unread). A write that blocks for the socket's whole timeout means
        // the server neither closed nor read.
        let (written, error) = writing.join().expect("stuck writer");
        let closed_after = connected.elapsed();
        let Some(error) = error else {
            panic!("the client wrote {STUCK_TOTAL} bytes without reading and was never stopped");
        };
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            "the stuck client's write ended with {error} after {written} bytes, \
             not with the server's close; {:#?}",
            server.total()
        );
        // Then the client sees EOF or the reset, and only echo bytes before it.
        let echoed = util::expect_closed(&mut stuck);
        println!(
            "stuck client: closed about {closed_after:?} after connecting (write timeout \
             {WRITE_TIMEOUT:?}), having written {written} bytes ({error}); {} bytes of echo \
             were readable after",
            echoed.len()
        );
        assert!(
            closed_after >= WRITE_TIMEOUT,
            "closed {closed_after:?} after connecting, before the write timeout could pass"
        );
        if let Some(at) = pattern.first_mismatch(0, &echoed) {
            panic!("echoed byte {at} differs before the close");
        }
        let s1 = server.wait_total("the stuck session to close", |s| {
            s.closed_for(CloseReason::WriteTimeout) == 1
        });
        println!("after the write timeout: {s1:?}");
        assert!(s1.backpressure_pauses >= 1, "{s1:#?}");
        steady.join().expect("the slow but steady reader failed");
    });
    let s = server.wait_total("both sessions to close", |s| s.closed == 2);
    assert_eq!(s.closed_for(CloseReason::WriteTimeout), 1, "{s:#?}");
    assert_eq!(
        s.closed_for(CloseReason::PeerClosed),
        1,
        "the steady reader must end by its own half-close: {s:#?}"
    );
    assert_eq!(
        s.closed_for(CloseReason::IdleTimeout) + s.closed_for(CloseReason::ReadTimeout),
        0,
        "{s:#?}"
    );
    let mut fresh = util::connect(addr);
    fresh.write_all(b"still serving").unwrap();
    assert_eq!(util::read_n(&mut fresh, 13), b"still serving");
    server.stop_cleanly();
}

/// Replies to each len32 frame (a 4-byte sequence number) with `AMP_REPLY` bytes that start
/// with the same number, and records the most output it ever saw pending.
struct Amplifier {
    max_pending: std::sync::Arc<AtomicU64>,
}

const AMP_REPLY: usize = 16 << 10;
const AMP_HIGH: usize = 256 << 10;

impl ringwire::Handler<ringwire::codec::Len32> for Amplifier {
    fn on_message(
        &mut self,
        session: &mut ringwire::Session<'_, ringwire::codec::Len32>,
        frame: &[u8],
    ) {
        let mut reply = [0xab_u8; AMP_REPLY];
        reply[..4].copy_from_slice(&frame[..4]);
        session.send(&reply).unwrap();
        self.max_pending
            .fetch_max(session.pending_output() as u64, Ordering::Relaxed);
    }
}

/// Small requests with large replies, sent without reading: decoding stops as soon as the
/// output passes the high-water mark (the rest of the receive is held, not decoded), so the
/// pending output never exceeds the mark by more than one reply; every reply still arrives,
/// in order, including those for requests held when the client half-closed.
#[test]
fn amplifying_requests_stop_decoding_at_the_high_water_mark() {
    let _serial = serial();
    const FRAMES: u32 = 8192;
    let max_pending = std::sync::Arc::new(AtomicU64::new(0));
    let factory = {
        let max_pending = max_pending.clone();
        move || Amplifier {
            max_pending: max_pending.clone(),
        }
    };
    let server = util::start(
        ringwire::Server::new(ringwire::codec::Len32, factory)
            .bind(util::any_port())
            .water_marks(AMP_HIGH, AMP_HIGH / 4),
    );
    for half_close in [false, true] {
        let mut stream = util::connect(server.addr());
        let mut requests = Vec::with_capacity(FRAMES as usize * 8);
        for seq in 0..FRAMES {
            requests.extend_from_slice(&util::len32(&seq.to_be_bytes()));
        }
        // 64 KiB: the kernel takes it all before the client reads anything.
        stream.write_all(&requests).unwrap();
        if half_close {
            util::shutdown_write(&stream);
        }
        let frame = 4 + AMP_REPLY;
        for seq in 0..FRAMES {
            let got = util::read_n(&mut stream, frame);
            assert_eq!(
                &got[..4],
                &(AMP_REPLY as u32).to_be_bytes(),
                "reply {seq}'s header"
            );
            assert_eq!(&got[4..8], &seq.to_be_bytes(), "reply {seq} out of order");
            assert!(got[8..].iter().all(|&b| b == 0xab), "reply {seq}'s body");
        }
        if half_close {
            util::expect_eof(&mut stream);
        }
    }
    let s = server.total();
    let max = max_pending.load(Ordering::Relaxed);
    println!("most output pending: {max} bytes (high-water mark {AMP_HIGH}); {s:?}");
    assert!(s.backpressure_pauses >= 1, "{s:#?}");
    assert!(
        max <= (AMP_HIGH + 4 + AMP_REPLY) as u64,
        "pending output reached {max} bytes, past the high-water mark {AMP_HIGH} plus one reply"
    );
    server.stop_cleanly();
}
