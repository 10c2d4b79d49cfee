//! Edges of replies and messages between cores: a reply dropped in a thread-local destructor,
//! or by a core that stops, still closes its session at once; messages a core sends itself
//! keep their order; test-kit sessions on one thread keep their own replies.

mod util;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use ringwire::codec::Lines;
use ringwire::{CloseReason, CoreCtx, Handler, Reply, Server, Session, SessionHandle};

/// Reads until EOF or `limit`; returns (bytes, whether EOF came).
fn read_until_eof(conn: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (got, true), // reset counts as closed
        }
    }
    (got, false)
}

/// Hands every request's reserved reply to the test.
struct Hand(mpsc::Sender<Reply>);
impl Handler<Lines> for Hand {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, _line: &[u8]) {
        let _ = self.0.send(s.reserve().unwrap());
    }
}

/// A server of `Hand`, a connection that sent two requests, and their two replies.
fn two_replies() -> (util::Running, TcpStream, Reply, Reply) {
    let (tx, rx) = mpsc::channel();
    let server = util::start(
        Server::new(Lines::new(), move || Hand(tx.clone()))
            .cores(1)
            .bind(util::any_port()),
    );
    let mut conn = util::connect(server.addr());
    conn.write_all(b"a\nb\n").unwrap();
    let first = rx.recv_timeout(util::IO_TIMEOUT).unwrap();
    let second = rx.recv_timeout(util::IO_TIMEOUT).unwrap();
    (server, conn, first, second)
}

thread_local! {
    static KEEP: RefCell<Option<Reply>> = const { RefCell::new(None) };
}

/// A reply dropped in a thread-local destructor of a thread that is not a core, after the
/// engine's own thread-locals are gone, still reaches its core: the session closes
/// (`ReplyDropped`) rather than wait for a slot never filled.
#[test]
fn reply_dropped_in_tls_destructor_closes_its_session() {
    let (_server, mut conn, first, second) = two_replies();
    std::thread::spawn(move || {
        // KEEP's destructor is registered first...
        KEEP.with(|k| *k.borrow_mut() = Some(first));
        // ...the engine's second (first touched here), so the engine's goes first.
        second.complete(b"B\n".to_vec());
    })
    .join()
    .unwrap();
    let (got, eof) = read_until_eof(&mut conn, util::IO_TIMEOUT);
    assert!(
        eof,
        "session still open after its reply was dropped; got {got:?}"
    );
}

/// The same, dropped plainly on another thread.
#[test]
fn reply_dropped_on_another_thread_closes_its_session() {
    let (_server, mut conn, first, second) = two_replies();
    std::thread::spawn(move || {
        drop(first);
        second.complete(b"B\n".to_vec());
    })
    .join()
    .unwrap();
    let (got, eof) = read_until_eof(&mut conn, util::IO_TIMEOUT);
    assert!(eof, "got {got:?}");
}

// A core that stops drops what it holds (per-core state, inbox): a reply of another core's
// session among it closes that session at once, not at the drain deadline.

struct Park;
impl Handler<Lines> for Park {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, _line: &[u8]) {
        let r = s.reserve().unwrap();
        let other = (s.worker() + 1) % 2;
        s.core()
            .run_on(other, move |ctx: &mut CoreCtx| {
                ctx.state::<Vec<Reply>>().push(r)
            })
            .unwrap();
    }
}

#[test]
fn reply_dropped_by_a_stopping_core_closes_its_session() {
    let server = util::start(
        Server::new(Lines::new(), || Park)
            .cores(2)
            .core_state(|_| Vec::<Reply>::new())
            .bind(util::any_port()),
    );
    let mut conn = util::connect(server.addr());
    conn.write_all(b"a\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    // A drain deadline far beyond the test's wait: only the dropped reply can close the
    // session in time.
    server.stopper().shutdown(Duration::from_secs(60));
    // The other core has no session: it stops at once, dropping its state with the reply.
    let (_, eof) = read_until_eof(&mut conn, util::IO_TIMEOUT);
    assert!(
        eof,
        "the session waited for the drain deadline after {:?}, not closed when its reply was dropped",
        started.elapsed()
    );
}

// Messages a core sends itself apply in the order sent, also when applying one runs user
// code (`on_close`) that sends more.

static NAMES: Mutex<Option<HashMap<String, SessionHandle>>> = Mutex::new(None);

struct Chat;
impl Handler<Lines> for Chat {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        let line = String::from_utf8_lossy(line).to_string();
        let mut w = line.split(' ');
        match (w.next(), w.next(), w.next()) {
            (Some("name"), Some(n), _) => {
                NAMES
                    .lock()
                    .unwrap()
                    .get_or_insert_with(HashMap::new)
                    .insert(n.into(), s.handle());
                s.write(b"ok\n");
            }
            (Some("kick"), Some(victim), Some(tell)) => {
                let names = NAMES.lock().unwrap().clone().unwrap();
                s.core().close_session(names[victim]).unwrap();
                s.core()
                    .write_to(names[tell], b"kicked\n".to_vec())
                    .unwrap();
            }
            _ => {}
        }
    }
    fn on_close(&mut self, s: &mut Session<'_, Lines>, _r: CloseReason) {
        let names = NAMES.lock().unwrap().clone().unwrap_or_default();
        if names.get("a") == Some(&s.handle()) {
            let _ = s.core().write_to(names["b"], b"a left\n".to_vec());
        }
    }
}

#[test]
fn messages_a_core_sends_itself_keep_their_order() {
    let server = util::start(
        Server::new(Lines::new(), || Chat)
            .cores(1)
            .linger(None)
            .bind(util::any_port()),
    );
    let mut a = util::connect(server.addr());
    let mut b = util::connect(server.addr());
    let mut c = util::connect(server.addr());
    for (conn, n) in [(&mut a, "a"), (&mut b, "b"), (&mut c, "c")] {
        conn.write_all(format!("name {n}\n").as_bytes()).unwrap();
        let mut ok = [0u8; 3];
        conn.read_exact(&mut ok).unwrap();
    }
    c.write_all(b"kick a b\n").unwrap();
    let mut got = vec![0u8; "kicked\na left\n".len()];
    b.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "kicked\na left\n");
}

/// Test-kit sessions on one thread keep their own replies, whichever was made first.
struct Later;
impl Handler<Lines> for Later {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        let r = s.reserve().unwrap();
        r.complete([line, b"\n"].concat());
    }
}

#[test]
fn harness_replies_survive_an_earlier_harness() {
    use ringwire::testing::Harness;
    let mut first = Harness::new(Lines::new(), Later);
    let mut second = Harness::new(Lines::new(), Later);
    first.open();
    second.open();
    assert_eq!(second.feed(b"x\n"), b"x\n");
    drop(first);
    assert_eq!(second.feed(b"y\n"), b"y\n", "reply completed inline lost");
}
