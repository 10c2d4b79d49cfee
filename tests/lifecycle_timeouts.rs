//! Time in the engine: idle and read timeouts close the sessions that hold the server's
//! resources without using them (a slowloris attack), each under its own reason, while other
//! sessions keep being served; session ticks and per-core ticks fire at their period.
//!
//! Timing assertions are one-sided where they can be: a timeout must not fire before its
//! time, and a tick must not fire more often than its period; how late either comes depends
//! on the machine, so the other side is generous.

mod util;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::{Len32, Raw};
use ringwire::{CloseReason, Handler, Server, Session};

/// Silent connections: connected, never send.
const SILENT: usize = 500;
/// Connections that send a `Len32` header and then trickle its payload, one byte at a time.
const TRICKLERS: usize = 100;
/// Idle timeout: far longer than the trickle's gaps, so tricklers never idle out.
const IDLE: Duration = Duration::from_millis(1000);
/// Read timeout: an incomplete frame must be completed within this.
const READ: Duration = Duration::from_millis(400);
/// The tricklers' pace.
const TRICKLE_EVERY: Duration = Duration::from_millis(50);
/// Payload length the tricklers' headers declare: never reached.
const DECLARED: u32 = 1000;

/// Writes one byte to every trickler every `TRICKLE_EVERY` until `stop`; a trickler whose
/// write fails (the server closed it) is left alone from then on. Returns the bytes written
/// to each.
fn trickle(conns: &[TcpStream], stop: &AtomicBool) -> Vec<u32> {
    let mut sent = vec![0u32; conns.len()];
    let mut live = vec![true; conns.len()];
    while !stop.load(Ordering::Relaxed) && live.iter().any(|&l| l) {
        for (i, mut conn) in conns.iter().enumerate() {
            if live[i] && sent[i] + 1 < DECLARED {
                match conn.write(b"x") {
                    Ok(_) => sent[i] += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => live[i] = false,
                }
            }
        }
        thread::sleep(TRICKLE_EVERY);
    }
    sent
}

/// Echoes a frame every 100 ms on a connection opened before the attack, until `stop`;
/// returns the number of echoes. Any failure fails the test.
fn keep_echoing(mut conn: TcpStream, stop: &AtomicBool) -> u64 {
    let mut rng = util::Rng::new(util::base_seed());
    let mut echoes = 0;
    while !stop.load(Ordering::Relaxed) {
        let len = rng.range(1, 4096);
        let payload = rng.bytes(len);
        if let Err(e) = util::try_echo_len32(&mut conn, &payload) {
            panic!("a well-behaved connection stopped echoing during the attack: {e}");
        }
        echoes += 1;
        thread::sleep(Duration::from_millis(100));
    }
    util::echo_len32(&mut conn, b"after the attack");
    echoes + 1
}

#[test]
fn slowloris_connections_are_closed_by_idle_and_read_timeouts() {
    util::raise_nofile(2 * (SILENT + TRICKLERS) as u64 + 512);
    let server = util::start(util::echo(Len32).idle_timeout(IDLE).read_timeout(READ));
    let addr = server.addr();
    let stop_trickle = AtomicBool::new(false);
    let stop_echo = AtomicBool::new(false);

    thread::scope(|s| {
        // Stop the helper threads however this closure ends.
        let _stop_trickle = util::SetOnDrop(&stop_trickle);
        let _stop_echo = util::SetOnDrop(&stop_echo);
        let fresh = util::connect(addr);
        let echoing = s.spawn(|| keep_echoing(fresh, &stop_echo));

        let started = Instant::now();
        let mut tricklers: Vec<TcpStream> = (0..TRICKLERS).map(|_| util::connect(addr)).collect();
        for conn in &mut tricklers {
            conn.write_all(&DECLARED.to_be_bytes()).unwrap();
        }
        let stop = &stop_trickle;
        let trickling = s.spawn(move || {
            let sent = trickle(&tricklers, stop);
            (tricklers, sent)
        });
        let mut silent: Vec<TcpStream> = (0..SILENT).map(|_| util::connect(addr)).collect();
        println!(
            "{TRICKLERS} tricklers and {SILENT} silent connections opened in {:?}",
            started.elapsed()
        );

        // Nothing may close before the earliest timeout could have passed.
        let check_at = started + READ / 2;
        thread::sleep(check_at.saturating_duration_since(Instant::now()));
        let early = server.total();
        if started.elapsed() < READ {
            assert_eq!(
                early.closed,
                0,
                "sessions closed {:?} after the first connect, before any timeout: {early:#?}",
                started.elapsed()
            );
        } else {
            println!("early-close check skipped: the machine was too slow to make it in time");
        }

        let s1 = server.wait_total("every slowloris connection to time out", |s| {
            // A reason is counted when the close begins, `closed` when the slot is freed.
            s.closed_for(CloseReason::IdleTimeout) >= SILENT as u64
                && s.closed_for(CloseReason::ReadTimeout) >= TRICKLERS as u64
                && s.closed >= (SILENT + TRICKLERS) as u64
        });
        let elapsed = started.elapsed();
        stop_trickle.store(true, Ordering::Relaxed);
        let (mut tricklers, sent) = trickling.join().expect("trickle thread");
        println!(
            "timed out {elapsed:?} after the first connect; tricklers sent {}..={} bytes of \
             {DECLARED}; {s1:?}",
            sent.iter().min().unwrap(),
            sent.iter().max().unwrap()
        );
        assert!(
            elapsed >= IDLE,
            "{SILENT} idle timeouts within {elapsed:?}, less than the idle timeout {IDLE:?}"
        );
        assert_eq!(
            s1.closed_for(CloseReason::IdleTimeout),
            SILENT as u64,
            "{s1:#?}"
        );
        assert_eq!(
            s1.closed_for(CloseReason::ReadTimeout),
            TRICKLERS as u64,
            "{s1:#?}"
        );
        assert_eq!(s1.closed, (SILENT + TRICKLERS) as u64, "{s1:#?}");
        assert_eq!(s1.accepted, (SILENT + TRICKLERS + 1) as u64, "{s1:#?}");
        assert_eq!(s1.codec_errors, 0, "{s1:#?}");
        assert!(
            s1.bytes_in >= (TRICKLERS * 4) as u64,
            "the tricklers' headers were not all received: {s1:#?}"
        );

        // Every client sees its connection closed, with nothing echoed.
        for (i, conn) in silent.iter_mut().chain(tricklers.iter_mut()).enumerate() {
            let seen = util::expect_closed(conn);
            assert!(seen.is_empty(), "connection {i} got {} bytes", seen.len());
        }

        // The well-behaved connection was served through it all, and still is.
        stop_echo.store(true, Ordering::Relaxed);
        let echoes = echoing.join().expect("echo thread");
        println!("the well-behaved connection echoed {echoes} frames meanwhile");
    });
    let s = server.wait_total("the well-behaved session to close", |s| {
        s.closed == (SILENT + TRICKLERS + 1) as u64
    });
    assert_eq!(s.closed_for(CloseReason::PeerClosed), 1, "{s:#?}");
    assert_eq!(
        s.closed_for(CloseReason::IdleTimeout),
        SILENT as u64,
        "{s:#?}"
    );
    assert_eq!(
        s.closed_for(CloseReason::ReadTimeout),
        TRICKLERS as u64,
        "{s:#?}"
    );
    server.stop_cleanly();
}

/// The read timeout of the next test.
const STEADY_READ: Duration = Duration::from_millis(300);
/// How long the steady stream runs: several read timeouts.
const STEADY_RUN: Duration = Duration::from_millis(1500);

/// The read timeout is about one frame taking too long, not about the stream: a client that
/// streams frames steadily, every one completed within milliseconds, is never closed by it,
/// even when its writes never line up with frame boundaries (so that after nearly every
/// receive the server holds the start of the next frame).
#[test]
fn read_timeout_spares_a_steady_stream_of_frames() {
    const PAYLOAD: usize = 1000;
    // Coprime with the 1004-byte frames: a write ends on a frame boundary once in 1004.
    const WRITE: usize = 997;
    let server = util::start(util::echo(Len32).read_timeout(STEADY_READ));
    let mut reader = util::connect(server.addr());
    let mut writer = reader.try_clone().unwrap();
    let mut rng = util::Rng::new(util::base_seed());
    let mut stream = Vec::new();
    // Enough frames for the whole run at one write every 10 ms.
    let writes = (STEADY_RUN.as_millis() / 10) as usize;
    while stream.len() < writes * WRITE {
        stream.extend_from_slice(&util::len32(&rng.bytes(PAYLOAD)));
    }
    let frames = stream.len() / (PAYLOAD + 4);
    let started = Instant::now();
    let result = thread::scope(|s| {
        let stream = &stream;
        s.spawn(move || {
            for chunk in stream.chunks(WRITE) {
                if writer.write_all(chunk).is_err() {
                    return; // Closed by the server: the reader reports it.
                }
                thread::sleep(Duration::from_millis(10));
            }
            util::shutdown_write(&writer);
        });
        let mut back = vec![0u8; stream.len()];
        let mut got = 0;
        while got < back.len() {
            match reader.read(&mut back[got..]) {
                Ok(0) => return Err(format!("EOF after {got} of {} bytes", back.len())),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("{e} after {got} of {} bytes", back.len())),
            }
        }
        if let Some(i) = util::first_difference(&back, stream) {
            return Err(format!("echoed byte {i} differs"));
        }
        util::expect_eof(&mut reader);
        Ok(())
    });
    let s = server.wait_total("the session to close", |s| s.closed == 1);
    println!(
        "{frames} frames streamed over {:?} in {WRITE}-byte writes; tail_copies {}; {s:?}",
        started.elapsed(),
        s.tail_copies
    );
    assert_eq!(
        s.closed_for(CloseReason::ReadTimeout),
        0,
        "a client completing a frame every ~10 ms was closed by a {STEADY_READ:?} read \
         timeout ({:?}); echo: {result:?}",
        result.as_ref().err()
    );
    result.unwrap_or_else(|e| panic!("steady stream: {e}"));
    assert_eq!(s.frames_in, frames as u64, "{s:#?}");
    assert_eq!(s.closed_for(CloseReason::PeerClosed), 1, "{s:#?}");
    server.stop_cleanly();
}

/// A session paused by backpressure is not idle: the peer is sending, the server is not
/// reading. Pausing longer than the idle timeout must not close it, and once the peer reads,
/// every byte comes back.
#[test]
fn idle_timeout_spares_a_session_paused_by_backpressure() {
    const IDLE_SHORT: Duration = Duration::from_millis(300);
    const TOTAL: u64 = 32 << 20;
    let server = util::start(
        util::echo(Raw)
            .idle_timeout(IDLE_SHORT)
            .water_marks(64 << 10, 16 << 10),
    );
    let pattern = util::Pattern::new(util::base_seed());
    let mut reader = util::connect(server.addr());
    let mut writer = reader.try_clone().unwrap();
    thread::scope(|s| {
        s.spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0;
            while off < TOTAL {
                let n = buf.len().min((TOTAL - off) as usize);
                pattern.fill(off, &mut buf[..n]);
                if let Err(e) = writer.write_all(&buf[..n]) {
                    panic!("write at {off}: {e}");
                }
                off += n as u64;
            }
            util::shutdown_write(&writer);
        });
        // Read nothing until the server has paused the session, then for three idle timeouts.
        let paused = server.wait_total("the session to be paused", |s| s.backpressure_pauses >= 1);
        thread::sleep(3 * IDLE_SHORT);
        let after = server.total();
        println!("paused for {:?}: {after:?}", 3 * IDLE_SHORT);
        assert_eq!(
            after.closed_for(CloseReason::IdleTimeout),
            0,
            "a session paused by backpressure was closed as idle: {after:#?}"
        );
        assert!(paused.bytes_in < TOTAL, "{paused:#?}");
        let mut buf = vec![0u8; 256 * 1024];
        if let Err(e) = util::read_pattern(&mut reader, pattern, 0, TOTAL, &mut buf) {
            panic!("echo after the pause: {e}; {:#?}", server.total());
        }
        util::expect_eof(&mut reader);
    });
    let s = server.wait_total("the session to close", |s| s.closed == 1);
    assert_eq!(s.closed_for(CloseReason::PeerClosed), 1, "{s:#?}");
    assert_eq!((s.bytes_in, s.bytes_out), (TOTAL, TOTAL), "{s:#?}");
    server.stop_cleanly();
}

/// Tick period of the next tests.
const TICK: Duration = Duration::from_millis(20);
/// How long the tick tests let ticks run.
const TICK_RUN: Duration = Duration::from_millis(500);

/// Starts ticking when opened and writes `t` on every tick; the byte `S` from the peer stops
/// the ticks, answered by `!`.
struct Ticker;

impl Handler<Raw> for Ticker {
    fn on_open(&mut self, session: &mut Session<'_, Raw>) {
        session.set_tick(Some(TICK));
    }

    fn on_tick(&mut self, session: &mut Session<'_, Raw>) {
        session.write(b"t");
    }

    fn on_message(&mut self, session: &mut Session<'_, Raw>, frame: &[u8]) {
        if frame.contains(&b'S') {
            session.set_tick(None);
            session.write(b"!");
        }
    }
}

#[test]
fn session_tick_fires_at_its_period_until_stopped() {
    let server = util::start(Server::new(Raw, || Ticker).bind(util::any_port()));
    let started = Instant::now();
    let mut conn = util::connect(server.addr());
    thread::sleep(TICK_RUN);
    conn.write_all(b"S").unwrap();
    let mut ticks = 0u64;
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(1) if byte[0] == b't' => ticks += 1,
            Ok(1) if byte[0] == b'!' => break,
            Ok(0) => panic!("EOF after {ticks} ticks"),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => panic!("after {ticks} ticks, read {other:?} {byte:?}"),
        }
    }
    // Every tick fired between the connect and the reply to the stop.
    let ran = started.elapsed();
    // The ticks stopped: nothing more comes.
    conn.set_read_timeout(Some(Duration::from_millis(10 * TICK.as_millis() as u64)))
        .unwrap();
    loop {
        match conn.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => panic!("after set_tick(None), read {other:?} {byte:?}"),
        }
    }
    let s = server.total();
    let most = (ran.as_millis() / TICK.as_millis()) as u64 + 2;
    println!(
        "{ticks} ticks of {TICK:?} in {ran:?} (at most {most} possible); ticks counter {}",
        s.ticks
    );
    // About 25; fewer only if the machine starves the core for most of the run.
    assert!(ticks >= 10, "{ticks} ticks of {TICK:?} in {ran:?}");
    assert!(
        ticks <= most,
        "{ticks} ticks of {TICK:?} in {ran:?}: faster than the period"
    );
    assert_eq!(
        s.ticks, ticks,
        "the ticks counter disagrees with on_tick: {s:#?}"
    );
    assert!(s.timer_fires >= ticks, "{s:#?}");
    drop(conn);
    let s = server.wait_total("the session to close", |s| s.closed == 1);
    assert_eq!(s.ticks, ticks, "a tick fired after set_tick(None): {s:#?}");
    assert_eq!(s.closed_for(CloseReason::PeerClosed), 1, "{s:#?}");
    server.stop_cleanly();
}

#[test]
fn core_tick_fires_on_every_core_at_its_period() {
    let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let hook_counts = counts.clone();
    let started = Instant::now();
    let server = util::start(util::echo(Raw).cores(2).on_core_tick(TICK, move |core| {
        hook_counts[core].fetch_add(1, Ordering::Relaxed);
    }));
    // Ticks come whether the cores are busy or idle: serve a little meanwhile.
    let mut conn = util::connect(server.addr());
    let until = started + TICK_RUN;
    while Instant::now() < until {
        conn.write_all(b"ping").unwrap();
        assert_eq!(util::read_n(&mut conn, 4), b"ping");
        thread::sleep(Duration::from_millis(50));
    }
    let seen: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let ran = started.elapsed();
    let most = (ran.as_millis() / TICK.as_millis()) as u64 + 2;
    println!("core ticks of {TICK:?} in {ran:?}: {seen:?} (at most {most} possible)");
    for (core, &n) in seen.iter().enumerate() {
        assert!(
            (10..=most).contains(&n),
            "core {core}: {n} ticks of {TICK:?} in {ran:?}"
        );
    }
    drop(conn);
    server.wait_total("the session to close", |s| s.closed == 1);
    server.stop_cleanly();
}

/// Replies "bye" and closes the session.
struct Bye;

impl Handler<Raw> for Bye {
    fn on_message(&mut self, s: &mut Session<'_, Raw>, _: &[u8]) {
        s.write(b"bye");
        s.close();
    }
}

/// A session closed from our side lingers for the peer's EOF at most `linger`, then closes,
/// even when no other timer would wake its core: a peer that reads the last reply and the
/// EOF, but never closes, does not hold the session open.
#[test]
fn a_lingering_session_closes_at_its_deadline_when_the_peer_never_closes() {
    let server = util::start(
        Server::new(Raw, || Bye)
            .linger(Duration::from_millis(200))
            .bind(util::any_port()),
    );
    let mut c = util::connect(server.addr());
    c.write_all(b"hi").unwrap();
    assert_eq!(util::read_n(&mut c, 3), b"bye");
    util::expect_eof(&mut c);
    let s = server.wait_total("the lingering session's close", |s| s.closed == 1);
    assert_eq!(s.closed_for(CloseReason::Local), 1, "{s:#?}");
    drop(c);
    server.stop_cleanly();
}
