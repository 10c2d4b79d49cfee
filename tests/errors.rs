//! Sessions that end badly end alone: an oversized frame or a panicking handler closes the
//! session that caused it, the core keeps serving every other session, old and new, and the
//! counters say what happened.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use ringwire::codec::Len32;
use ringwire::{CloseReason, Handler, Session};

const MAX_FRAME: usize = 1024;

/// Echoes `Len32` frames, panics on the payload `boom`, and on `quit` replies `bye` and
/// closes.
struct Touchy;

impl Handler<Len32> for Touchy {
    fn on_message(&mut self, session: &mut Session<'_, Len32>, frame: &[u8]) {
        match frame {
            b"boom" => panic!("the peer asked for a panic"),
            b"quit" => {
                session.send(b"bye").expect("encode bye");
                session.close();
            }
            _ => session.send(frame).expect("encode echo"),
        }
    }
}

fn connect_all(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| util::connect(addr)).collect()
}

/// Each connection still echoes: a small frame, an empty one and one of the largest size.
fn assert_all_echo(conns: &mut [TcpStream], when: &str) {
    let big: Vec<u8> = (0..MAX_FRAME).map(|i| i as u8).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        for payload in [&b"still here"[..], b"", &big] {
            if let Err(e) = util::try_echo_len32(s, payload) {
                panic!("connection {i} opened {when} stopped echoing: {e}");
            }
        }
    }
}

#[test]
fn oversized_frame_closes_only_its_connection() {
    let server = util::start(util::echo(Len32).max_frame(MAX_FRAME));
    let addr = server.addr();
    let mut before = connect_all(addr, 4);
    assert_all_echo(&mut before, "before");

    // A header declaring 1 MiB, and a little of its payload, in one write.
    let mut bad = util::connect(addr);
    let mut oversized = (1u32 << 20).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0xAB; 100]);
    bad.write_all(&oversized).unwrap();
    let echoed = util::expect_closed(&mut bad);
    assert!(echoed.is_empty(), "the oversized frame was echoed in part");

    let mut after = connect_all(addr, 4);
    assert_all_echo(&mut before, "before");
    assert_all_echo(&mut after, "after");

    let s = server.wait_total("the bad session to close", |s| s.closed == 1);
    assert_eq!(s.codec_errors, 1, "{s:#?}");
    assert_eq!(s.closed_for(CloseReason::CodecError), 1, "{s:#?}");
    assert_eq!(s.accepted, 9, "{s:#?}");
    assert_eq!(s.panics, 0, "{s:#?}");
    drop((before, after));
    server.wait_total("every session to close", |s| s.closed == 9);
    server.stop_cleanly();
}

/// `max_frame` is inclusive: a payload of exactly that size echoes, one byte more closes.
#[test]
fn max_frame_is_the_largest_accepted_payload() {
    let server = util::start(util::echo(Len32).max_frame(MAX_FRAME));
    let mut ok = util::connect(server.addr());
    util::echo_len32(&mut ok, &[7; MAX_FRAME]);

    let mut bad = util::connect(server.addr());
    bad.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
        .unwrap();
    assert!(util::expect_closed(&mut bad).is_empty());

    util::echo_len32(&mut ok, &[8; MAX_FRAME]);
    let s = server.wait_total("the bad session to close", |s| s.closed == 1);
    assert_eq!(s.codec_errors, 1, "{s:#?}");
    assert_eq!(s.closed_for(CloseReason::CodecError), 1, "{s:#?}");
    server.stop_cleanly();
}

#[test]
fn handler_panic_closes_only_its_session() {
    let server = util::start(
        ringwire::Server::new(Len32, || Touchy)
            .bind(util::any_port())
            .max_frame(MAX_FRAME),
    );
    let addr = server.addr();
    let mut before = connect_all(addr, 4);
    assert_all_echo(&mut before, "before");

    let mut bad = util::connect(addr);
    bad.write_all(&util::len32(b"boom")).unwrap();
    let echoed = util::expect_closed(&mut bad);
    assert!(echoed.is_empty(), "the panicking session replied");

    let mut after = connect_all(addr, 4);
    assert_all_echo(&mut before, "before");
    assert_all_echo(&mut after, "after");

    let s = server.wait_total("the panicked session to close", |s| s.closed == 1);
    assert_eq!(s.panics, 1, "{s:#?}");
    assert_eq!(s.closed_for(CloseReason::Panic), 1, "{s:#?}");
    assert_eq!(s.codec_errors, 0, "{s:#?}");
    drop((before, after));
    server.wait_total("every session to close", |s| s.closed == 9);
    // The worker survived the panic and exits cleanly.
    server.stop_cleanly();
}

/// A handler's close writes what it sent before closing, then the peer sees EOF.
#[test]
fn handler_close_flushes_its_reply_first() {
    let server = util::start(ringwire::Server::new(Len32, || Touchy).bind(util::any_port()));
    let mut other = util::connect(server.addr());
    let mut quitter = util::connect(server.addr());
    util::echo_len32(&mut quitter, b"hello");
    quitter.write_all(&util::len32(b"quit")).unwrap();
    assert_eq!(util::read_n(&mut quitter, 7), util::len32(b"bye"));
    util::expect_eof(&mut quitter);
    util::echo_len32(&mut other, b"unaffected");
    let s = server.wait_total("the quitter to close", |s| s.closed == 1);
    assert_eq!(s.closed_for(CloseReason::Local), 1, "{s:#?}");
    server.stop_cleanly();
}

/// When set, the next clone of [`ClonePanics`] panics.
static PANIC_ON_CLONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `Len32`, whose `Clone` (user code the engine runs for every new session) can panic.
struct ClonePanics;

impl Clone for ClonePanics {
    fn clone(&self) -> Self {
        if PANIC_ON_CLONE.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("codec clone asked to panic");
        }
        ClonePanics
    }
}

impl ringwire::Codec for ClonePanics {
    type Frame<'a> = &'a [u8];
    type Item = [u8];

    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<ringwire::codec::Decoded<&'a [u8]>, ringwire::codec::CodecError> {
        Len32.decode(src, max_frame)
    }

    fn encode(
        &mut self,
        item: &[u8],
        dst: &mut Vec<u8>,
    ) -> Result<(), ringwire::codec::CodecError> {
        Len32.encode(item, dst)
    }
}

struct EchoPanicky;

impl Handler<ClonePanics> for EchoPanicky {
    fn on_message(&mut self, session: &mut Session<'_, ClonePanics>, frame: &[u8]) {
        session.send(frame).expect("encode echo");
    }
}

/// A codec whose clone panics when a session opens refuses that connection only: the core
/// survives and serves its sessions, old and new.
#[test]
fn codec_clone_panic_refuses_only_that_connection() {
    let server = util::start(
        ringwire::Server::new(ClonePanics, || EchoPanicky)
            .bind(util::any_port())
            .max_frame(MAX_FRAME),
    );
    let addr = server.addr();
    let mut before = connect_all(addr, 4);
    assert_all_echo(&mut before, "before");

    PANIC_ON_CLONE.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut refused = util::connect(addr);
    // The connection is accepted by the kernel, then closed by the engine without a reply.
    let _ = refused.write_all(&util::len32(b"hello"));
    let echoed = util::expect_closed(&mut refused);
    assert!(echoed.is_empty(), "the refused connection was served");

    let mut after = connect_all(addr, 4);
    assert_all_echo(&mut before, "before");
    assert_all_echo(&mut after, "after");
    let s = server.total();
    assert_eq!(s.panics, 1, "{s:#?}");
    assert_eq!(s.worker_deaths, 0, "{s:#?}");
    drop((before, after));
    server.wait_total("every session to close", |s| s.closed == 8);
    server.stop_cleanly();
}

/// On `flood`, sends 64 KiB replies in one callback until the session refuses more, and
/// records how many it took and the error `on_error` got; otherwise echoes.
struct Flooder {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Handler<Len32> for Flooder {
    fn on_message(&mut self, session: &mut Session<'_, Len32>, frame: &[u8]) {
        if frame != b"flood" {
            return session.send(frame).expect("encode echo");
        }
        let piece = vec![7u8; 64 << 10];
        let mut sent = 0;
        // Bounded: 4096 pieces are 256 MiB, far past the 1 MiB limit.
        while sent < 4096 && session.send(&piece).is_ok() {
            sent += 1;
        }
        let line = format!("sent {sent}, pending {}", session.pending_output());
        self.seen.lock().unwrap().push(line);
    }

    fn on_error(&mut self, _: &mut Session<'_, Len32>, error: &ringwire::SessionError) {
        self.seen.lock().unwrap().push(error.to_string());
    }
}

/// A handler that produces more output in one callback than the session's limit gets a
/// refusal from `send`, its session is closed with its own reason and error, and the other
/// sessions keep echoing.
#[test]
fn output_over_the_limit_closes_only_its_session() {
    const LIMIT: usize = 1 << 20;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let factory = {
        let seen = seen.clone();
        move || Flooder { seen: seen.clone() }
    };
    let server = util::start(
        ringwire::Server::new(Len32, factory)
            .bind(util::any_port())
            .max_frame(MAX_FRAME)
            .water_marks(LIMIT / 4, LIMIT / 16)
            .max_output(LIMIT),
    );
    let addr = server.addr();
    let mut others = connect_all(addr, 4);
    assert_all_echo(&mut others, "before");

    let mut bad = util::connect(addr);
    bad.write_all(&util::len32(b"flood")).unwrap();
    util::expect_closed(&mut bad);
    let s = server.wait_total("the flooding session to close", |s| s.closed == 1);
    assert_eq!(s.closed_for(CloseReason::OutputLimit), 1, "{s:#?}");
    let seen = seen.lock().unwrap().clone();
    println!("{seen:?}");
    let piece = (64 << 10) + 4;
    assert_eq!(seen.len(), 2, "{seen:?}");
    let sent: usize = seen[0]["sent ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sent,
        LIMIT / piece + 1,
        "sends stop at the first one past the limit: {seen:?}"
    );
    assert!(
        seen[1].contains("over the limit of 1048576"),
        "on_error names the limit: {seen:?}"
    );

    assert_all_echo(&mut others, "after");
    drop(others);
    server.wait_total("every session to close", |s| s.closed == 5);
    server.stop_cleanly();
}
