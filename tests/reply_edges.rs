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

// ---------------------------------------------------------------------------------------
// 1. A Reply dropped in a thread-local destructor of a non-core thread after route::LOCAL was
//    destroyed: the Abandon is silently lost (deliver returns Stopped without trying the
//    router), the session hangs with a slot that is never filled.

static REPLIES: Mutex<Option<mpsc::Sender<Reply>>> = Mutex::new(None);

struct Hand;
impl Handler<Lines> for Hand {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, _line: &[u8]) {
        let r = s.reserve().unwrap();
        REPLIES.lock().unwrap().as_ref().unwrap().send(r).unwrap();
    }
}

thread_local! {
    static KEEP: RefCell<Option<Reply>> = const { RefCell::new(None) };
}

#[test]
fn reply_dropped_in_tls_destructor_closes_its_session() {
    let (tx, rx) = mpsc::channel();
    *REPLIES.lock().unwrap() = Some(tx);
    let server = util::start(
        Server::new(Lines::new(), || Hand)
            .cores(1)
            .bind(util::any_port()),
    );
    let mut conn = util::connect(server.addr());
    conn.write_all(b"a\nb\n").unwrap();
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::spawn(move || {
        // KEEP's destructor is registered first...
        KEEP.with(|k| *k.borrow_mut() = Some(first));
        // ...route::LOCAL's second (first touched here), so LOCAL is destroyed first.
        second.complete(b"B\n".to_vec());
    })
    .join()
    .unwrap();
    // `first` was dropped uncompleted: the session must close (ReplyDropped), nothing sent.
    let (got, eof) = read_until_eof(&mut conn, Duration::from_secs(3));
    assert!(
        eof,
        "session still open 3s after its reply was dropped; got {got:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. A core that stops drops what it holds (per-core state, inbox) while still `Entered`:
//    the Abandon for a session of another core goes to LOCAL.out and is never flushed.

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

// ---------------------------------------------------------------------------------------
// 3. Messages a core sends itself are reordered: a nested apply_here (after_callback of an
//    applied message whose on_close sends more) applies later messages before earlier ones.

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

#[test]
fn control_reply_dropped_on_plain_thread_closes_its_session() {
    let (tx, rx) = mpsc::channel();
    *REPLIES.lock().unwrap() = Some(tx);
    let server = util::start(
        Server::new(Lines::new(), || Hand)
            .cores(1)
            .bind(util::any_port()),
    );
    let mut conn = util::connect(server.addr());
    conn.write_all(b"a\nb\n").unwrap();
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::spawn(move || {
        drop(first);
        second.complete(b"B\n".to_vec());
    })
    .join()
    .unwrap();
    let (got, eof) = read_until_eof(&mut conn, Duration::from_secs(3));
    assert!(eof, "got {got:?}");
}

// 4. Test kit: the second Harness on a thread does not own the thread-local mark; once the
//    first is dropped, replies completed in the second's callbacks go nowhere.
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
