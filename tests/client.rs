//! The client side: outbound sessions on per-core loops, and connects from inside a server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringwire::codec::Len32;
use ringwire::handlers::Echo;
use ringwire::{Client, CloseReason, ConnectError, Handler, Server, Session, SessionError};

mod util;

/// Sends `rounds` numbered frames one after another, checking each echo, then closes.
struct PingPong {
    rounds: u32,
    next: u32,
    done: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
}

impl Handler<Len32> for PingPong {
    fn on_open(&mut self, s: &mut Session<'_, Len32>) {
        assert!(s.is_outbound());
        s.send(&self.next.to_be_bytes()).unwrap();
    }

    fn on_message(&mut self, s: &mut Session<'_, Len32>, frame: &[u8]) {
        if frame != self.next.to_be_bytes() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.next += 1;
        if self.next == self.rounds {
            self.done.fetch_add(1, Ordering::Relaxed);
            s.close();
        } else {
            s.send(&self.next.to_be_bytes()).unwrap();
        }
    }
}

fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn client_connections_exchange_frames_with_a_server() {
    let server = util::start(Server::new(Len32, || Echo).bind(util::any_port()));
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let (d, e) = (done.clone(), errors.clone());
    let client = Client::new(Len32, move || PingPong {
        rounds: 1000,
        next: 0,
        done: d.clone(),
        errors: e.clone(),
    })
    .connect(server.local_addr())
    .connections(8)
    .cpus([1])
    .start()
    .unwrap();
    assert_eq!(
        client.target(),
        &ringwire::Target::Tcp(server.local_addr()),
        "a client names its target"
    );
    wait_for(
        "8 connections x 1000 round trips",
        Duration::from_secs(20),
        || done.load(Ordering::Relaxed) == 8,
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    let stats = client.stats().total();
    assert_eq!(stats.connected, 8);
    assert_eq!(stats.frames_in, 8000);
    client.shutdown(Duration::from_secs(1)).unwrap();
    assert_eq!(server.stats().total().frames_in, 8000);
}

/// Records how its session ended.
struct Observe {
    errors: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
}

impl Handler<Len32> for Observe {
    fn on_error(&mut self, _: &mut Session<'_, Len32>, error: &SessionError) {
        if matches!(
            error,
            SessionError::Connect {
                error: ConnectError::Refused(_),
                ..
            }
        ) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn on_close(&mut self, _: &mut Session<'_, Len32>, reason: CloseReason) {
        assert_eq!(reason, CloseReason::IoError);
        self.closes.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_refused_connect_reaches_on_error_and_on_close() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let errors = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let (e, c) = (errors.clone(), closes.clone());
    let client = Client::new(Len32, move || Observe {
        errors: e.clone(),
        closes: c.clone(),
    })
    .connect(port)
    .connections(3)
    .start()
    .unwrap();
    wait_for("3 failed connects", Duration::from_secs(10), || {
        closes.load(Ordering::Relaxed) == 3
    });
    assert_eq!(errors.load(Ordering::Relaxed), 3);
    assert_eq!(client.stats().total().connect_errors, 3);
    client.shutdown(Duration::from_secs(1)).unwrap();
}

/// A server whose sessions, on "fan", open an outbound connection on their own core to the
/// echo server and play ping-pong with it.
struct Fan {
    backend: std::net::SocketAddr,
    inner: PingPong,
}

impl Handler<Len32> for Fan {
    fn on_open(&mut self, s: &mut Session<'_, Len32>) {
        if s.is_outbound() {
            self.inner.on_open(s);
        }
    }
    fn on_message(&mut self, s: &mut Session<'_, Len32>, frame: &[u8]) {
        if s.is_outbound() {
            self.inner.on_message(s, frame);
        } else if frame == b"fan" {
            s.connect(self.backend);
            s.send(b"ok").unwrap();
        }
    }
}

#[test]
fn a_server_session_connects_out_from_its_own_core() {
    let backend = util::start(Server::new(Len32, || Echo).bind(util::any_port()));
    let addr = backend.local_addr();
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let (d, e) = (done.clone(), errors.clone());
    let front = util::start(Server::new(Len32, move || Fan {
        backend: addr,
        inner: PingPong {
            rounds: 10,
            next: 0,
            done: d.clone(),
            errors: e.clone(),
        },
    }));
    let mut conn = std::net::TcpStream::connect(front.local_addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::{Read, Write};
    conn.write_all(&[0, 0, 0, 3, b'f', b'a', b'n']).unwrap();
    let mut reply = [0u8; 6];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, &[0, 0, 0, 2, b'o', b'k']);
    wait_for(
        "the outbound session's round trips",
        Duration::from_secs(10),
        || done.load(Ordering::Relaxed) == 1,
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert_eq!(front.stats().total().connected, 1);
}
