//! Outbound sessions over Unix domain sockets (`CoreCtx::connect_unix` and
//! `connect_unix_tls`): a TCP front relays each request to a backend listening on a socket
//! file or an abstract name, and the answers come back in request order; the failures a local
//! backend has (no socket file, a file nobody listens on, a full backlog, a path too long for
//! a socket address) reach the handler typed, and only the session that asked is affected.

mod util;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ringwire::codec::Len32;
use ringwire::handlers::Echo;
use ringwire::tls::{rustls, ClientTls, TlsConnect, TlsInfo};
use ringwire::{ConnectError, Handler, Reply, Server, Session, SessionError, UnixAddr};
use util::tls::Pki;
use util::tls_echo;

/// What the relay's upstream sessions saw.
#[derive(Default)]
struct Seen {
    /// `Session::tls` of each upstream session at `on_open` (`None` on a plain one).
    opened: Mutex<Vec<Option<TlsInfo>>>,
    /// Errors `connect_unix` returned at once.
    refused_at_once: Mutex<Vec<String>>,
}

/// A front whose every frame goes to `backend` over a new Unix connection (over TLS with
/// `tls`); the backend's answer, or `ERR <kind>` if the connect failed, is the reply.
struct Relay {
    backend: UnixAddr,
    tls: Option<Arc<TlsConnect>>,
    seen: Arc<Seen>,
}

impl Handler<Len32> for Relay {
    fn on_message(&mut self, s: &mut Session<'_, Len32>, frame: &[u8]) {
        let Ok(reply) = s.reserve() else {
            return s.close();
        };
        let upstream = Upstream {
            request: frame.to_vec(),
            reply: Some(reply),
            seen: self.seen.clone(),
        };
        let core = s.core();
        let listed = match &self.tls {
            Some(tls) => core.connect_unix_tls(&self.backend, tls, Len32, upstream),
            None => core.connect_unix(&self.backend, Len32, upstream),
        };
        if let Err(e) = listed {
            // The reply went with the handler: the front closes once what came before is out.
            let kind = match &e {
                ConnectError::Io(io) => format!("{:?}", io.kind()),
                other => other.to_string(),
            };
            self.seen.refused_at_once.lock().unwrap().push(kind);
        }
    }
}

/// One relayed request: sent once connected, answered with the backend's frame.
struct Upstream {
    request: Vec<u8>,
    reply: Option<Reply>,
    seen: Arc<Seen>,
}

impl Upstream {
    fn answer(&mut self, s: &mut Session<'_, Len32>, payload: &[u8]) {
        if let Some(reply) = self.reply.take() {
            s.complete(reply, &util::len32(payload));
        }
    }
}

impl Handler<Len32> for Upstream {
    fn on_open(&mut self, s: &mut Session<'_, Len32>) {
        assert!(s.is_outbound());
        self.seen.opened.lock().unwrap().push(s.tls().cloned());
        if s.send(&self.request[..]).is_err() {
            s.close();
        }
    }

    fn on_message(&mut self, s: &mut Session<'_, Len32>, frame: &[u8]) {
        self.answer(s, frame);
        s.close();
    }

    fn on_error(&mut self, s: &mut Session<'_, Len32>, error: &SessionError) {
        let kind = match error {
            SessionError::Connect { error, .. } => match error {
                ConnectError::Refused(_) => "refused",
                ConnectError::Busy(_) => "busy",
                ConnectError::TimedOut(_) => "timed out",
                _ => "other connect error",
            },
            _ => "not a connect error",
        };
        self.answer(s, format!("ERR {kind}").as_bytes());
    }
}

/// A front relaying to `backend` (with TLS if `tls`).
fn front(backend: UnixAddr, tls: Option<TlsConnect>) -> (util::Running, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let (tls, factory_seen) = (tls.map(Arc::new), seen.clone());
    let server = Server::new(Len32, move || Relay {
        backend: backend.clone(),
        tls: tls.clone(),
        seen: factory_seen.clone(),
    })
    .bind(util::any_port());
    (util::start(server), seen)
}

fn len32_echo_on(path: impl AsRef<Path>) -> util::Running {
    util::start(Server::new(Len32, || Echo).bind_unix(path).cores(2))
}

/// Sends `requests` pipelined (all written before any answer is read), returns the answers'
/// payloads in the order they came.
fn ask(front: &util::Running, requests: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use std::io::Write;
    let mut conn = util::connect(front.addr());
    let wire: Vec<u8> = requests.iter().flat_map(|r| util::len32(r)).collect();
    conn.write_all(&wire).unwrap();
    requests
        .iter()
        .map(|_| {
            let mut len = [0u8; 4];
            conn.read_exact(&mut len).expect("an answer's length");
            util::read_n(&mut conn, u32::from_be_bytes(len) as usize)
        })
        .collect()
}

#[test]
fn a_handler_relays_to_a_unix_backend_and_answers_in_order() {
    const REQUESTS: usize = 16;
    let dir = util::TempDir::new("relay");
    let backend = len32_echo_on(dir.sock());
    let (front, seen) = front(UnixAddr::new(dir.sock()), None);
    let mut rng = util::Rng::new(util::base_seed());
    // Sizes from a byte to past a receive buffer, so the backends answer at different times.
    let requests: Vec<Vec<u8>> = (0..REQUESTS)
        .map(|i| rng.bytes(1 + (i * 9973) % 100_000))
        .collect();
    let answers = ask(&front, &requests);
    for (i, (got, want)) in answers.iter().zip(&requests).enumerate() {
        assert!(got == want, "answer {i} is not request {i}'s echo");
    }
    let opened = seen.opened.lock().unwrap().clone();
    assert_eq!(opened.len(), REQUESTS);
    assert!(opened.iter().all(Option::is_none), "plain sessions");
    let f = front.total();
    assert_eq!(
        (f.connected, f.connect_errors),
        (REQUESTS as u64, 0),
        "{f:#?}"
    );
    let b = backend.wait_total("the backend's sessions", |t| t.accepted == REQUESTS as u64);
    assert_eq!(
        b.bytes_in,
        requests.iter().map(|r| 4 + r.len() as u64).sum()
    );
    front.stop_cleanly();
    backend.stop_cleanly();
}

#[test]
fn a_backend_on_an_abstract_name_is_reached() {
    let name = format!("@rw-connect-{}-abstract", std::process::id());
    let backend = len32_echo_on(&name);
    let (front, _) = front(UnixAddr::new(&name), None);
    let request = b"to an abstract name".to_vec();
    assert_eq!(ask(&front, std::slice::from_ref(&request)), [request]);
    front.stop_cleanly();
    backend.stop_cleanly();
}

#[test]
fn no_socket_file_and_a_file_nobody_listens_on_are_refused() {
    let dir = util::TempDir::new("refused");
    // A bound socket that never listens: its file exists, connects are refused.
    let dead = dir.0.join("dead.sock");
    let _bound = {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.bind(&socket2::SockAddr::unix(&dead).unwrap()).unwrap();
        s
    };
    for path in [dir.0.join("missing.sock"), dead] {
        let (front, _) = front(UnixAddr::new(&path), None);
        let answers = ask(&front, &[b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            answers,
            [b"ERR refused".to_vec(), b"ERR refused".to_vec()],
            "{path:?}"
        );
        let f = front.total();
        assert_eq!((f.connected, f.connect_errors), (0, 2), "{path:?}: {f:#?}");
        front.stop_cleanly();
    }
}

#[test]
fn a_full_backlog_fails_the_connect_at_once_as_busy() {
    let dir = util::TempDir::new("busy");
    let path = dir.sock();
    let listener =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    listener.listen(1).unwrap();
    // Fill its backlog (it never accepts) until a non-blocking connect says EAGAIN.
    let mut queued = Vec::new();
    loop {
        let s = socket2::Socket::new(
            socket2::Domain::UNIX,
            socket2::Type::STREAM.nonblocking(),
            None,
        )
        .unwrap();
        match s.connect(&socket2::SockAddr::unix(&path).unwrap()) {
            Ok(()) => queued.push(s),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(
            queued.len() < 64,
            "the backlog of 1 takes more than 64 connections"
        );
    }
    println!(
        "backlog full after {} connections (listener fd {})",
        queued.len(),
        listener.as_raw_fd()
    );
    let (front, _) = front(UnixAddr::new(&path), None);
    // A connect that waited for room would wait forever here, and answer "timed out" at the
    // connect timeout at best.
    assert_eq!(ask(&front, &[b"x".to_vec()]), [b"ERR busy".to_vec()]);
    drop(queued);
    let f = front.total();
    assert_eq!((f.connected, f.connect_errors), (0, 1), "{f:#?}");
    front.stop_cleanly();
}

#[test]
fn a_path_too_long_for_a_socket_address_fails_at_once() {
    let long = format!("/tmp/{}", "x".repeat(200));
    let (front, seen) = front(UnixAddr::new(&long), None);
    let mut conn = util::connect(front.addr());
    std::io::Write::write_all(&mut conn, &util::len32(b"q")).unwrap();
    // Its reply was dropped uncompleted: the front session closes, answering nothing.
    util::expect_eof(&mut conn);
    assert_eq!(
        *seen.refused_at_once.lock().unwrap(),
        ["InvalidInput".to_string()]
    );
    let f = front.total();
    assert_eq!(
        (f.connected, f.connect_errors),
        (0, 0),
        "nothing was opened: {f:#?}"
    );
    front.stop_cleanly();
}

#[test]
fn connect_unix_tls_relays_to_a_tls_backend_on_a_socket_file() {
    const REQUESTS: usize = 3;
    let dir = util::TempDir::new("tls");
    let pki = Pki::new("unix-connect");
    let leaf = pki.server("back", &["backend.test"]);
    let (backend, back_seen) = tls_echo::recording(Len32, tls_echo::server_tls(&leaf), false);
    let backend = util::start(backend.bind_unix(dir.sock()));
    let connect = ClientTls::new()
        .root_pem(&pki.ca_pem)
        .connect("backend.test")
        .expect("client TLS configuration");
    let (front, seen) = front(UnixAddr::new(dir.sock()), Some(connect));
    let requests: Vec<Vec<u8>> = (0..REQUESTS)
        .map(|i| vec![b'a' + i as u8; 5000 * (i + 1)])
        .collect();
    assert_eq!(ask(&front, &requests), requests);
    let opened = seen.opened.lock().unwrap().clone();
    assert_eq!(opened.len(), REQUESTS);
    for info in &opened {
        let info = info.as_ref().expect("a TLS upstream has its TlsInfo");
        assert_eq!(info.version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(info.peer_certificates.first(), Some(&leaf.cert_der));
        assert!(!info.kernel, "no kernel TLS over a Unix socket");
    }
    for info in back_seen.wait_opened(REQUESTS) {
        assert_eq!(info.server_name.as_deref(), Some("backend.test"));
    }
    let f = front.total();
    assert_eq!(
        (f.tls_handshakes, f.tls_errors),
        (REQUESTS as u64, 0),
        "{f:#?}"
    );
    front.stop_cleanly();
    backend.stop_cleanly();
}

/// Sends numbered frames one after another over each connection, checking each echo, and
/// counts the connections that got all `ROUNDS` back.
struct PingPong {
    next: u32,
    done: Arc<std::sync::atomic::AtomicUsize>,
}

const ROUNDS: u32 = 200;

impl Handler<Len32> for PingPong {
    fn on_open(&mut self, s: &mut Session<'_, Len32>) {
        assert!(s.is_outbound());
        assert!(s.peer_addr().is_err(), "a Unix peer has no SocketAddr");
        s.send(&self.next.to_be_bytes()).unwrap();
    }

    fn on_message(&mut self, s: &mut Session<'_, Len32>, frame: &[u8]) {
        assert_eq!(
            frame,
            self.next.to_be_bytes(),
            "echo of frame {}",
            self.next
        );
        self.next += 1;
        if self.next == ROUNDS {
            self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            s.close();
        } else {
            s.send(&self.next.to_be_bytes()).unwrap();
        }
    }
}

fn wait_done(done: &std::sync::atomic::AtomicUsize, n: usize) {
    let deadline = std::time::Instant::now() + util::SETTLE_TIMEOUT;
    while done.load(std::sync::atomic::Ordering::Relaxed) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} connections finished",
            done.load(std::sync::atomic::Ordering::Relaxed)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_client_connects_over_a_unix_socket() {
    const CONNECTIONS: usize = 8;
    let dir = util::TempDir::new("client");
    let server = len32_echo_on(dir.sock());
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d = done.clone();
    let client = ringwire::Client::new(Len32, move || PingPong {
        next: 0,
        done: d.clone(),
    })
    .connect_unix(dir.sock())
    .connections(CONNECTIONS)
    .start()
    .unwrap();
    assert_eq!(
        client.target(),
        &ringwire::Target::Unix(UnixAddr::new(dir.sock()))
    );
    wait_done(&done, CONNECTIONS);
    let c = client.stats().total();
    assert_eq!(
        (c.connected, c.connect_errors),
        (CONNECTIONS as u64, 0),
        "{c:#?}"
    );
    client.shutdown(std::time::Duration::from_secs(1)).unwrap();
    let s = server.total();
    assert_eq!(s.frames_in, CONNECTIONS as u64 * ROUNDS as u64);
    server.stop_cleanly();
}

/// An accepted session opens one connection of its own protocol to `backend` on its first
/// frame (`Session::connect_unix`); that connection, made by the same factory, ping-pongs with
/// the backend.
struct Spawner {
    backend: UnixAddr,
    done: Arc<std::sync::atomic::AtomicUsize>,
    inner: Option<PingPong>,
}

impl Handler<Len32> for Spawner {
    fn on_open(&mut self, s: &mut Session<'_, Len32>) {
        if s.is_outbound() {
            let mut p = PingPong {
                next: 0,
                done: self.done.clone(),
            };
            p.on_open(s);
            self.inner = Some(p);
        }
    }

    fn on_message(&mut self, s: &mut Session<'_, Len32>, frame: &[u8]) {
        match &mut self.inner {
            Some(p) => p.on_message(s, frame),
            None => {
                s.connect_unix(&self.backend);
                s.send(b"dialled").unwrap();
            }
        }
    }
}

#[test]
fn a_session_connects_over_a_unix_socket_with_its_own_protocol() {
    let dir = util::TempDir::new("session");
    let backend = len32_echo_on(dir.sock());
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (d, target) = (done.clone(), UnixAddr::new(dir.sock()));
    // Accepted sessions spawn; outbound ones (made by the same factory) ping-pong.
    let front = util::start(
        Server::new(Len32, move || Spawner {
            backend: target.clone(),
            done: d.clone(),
            inner: None,
        })
        .bind(util::any_port()),
    );
    let answers = ask(&front, &[b"go".to_vec()]);
    assert_eq!(answers, [b"dialled".to_vec()]);
    wait_done(&done, 1);
    let b = backend.total();
    assert_eq!((b.accepted, b.frames_in), (1, ROUNDS as u64));
    let f = front.wait_total("the connect", |t| t.connected == 1);
    assert_eq!(f.connect_errors, 0, "{f:#?}");
    front.stop_cleanly();
    backend.stop_cleanly();
}
