//! TLS sessions over real sockets, with certificates made by each test: a rustls client over a
//! std socket echoes a mebibyte in odd-sized records through the engine (TLS 1.3 and 1.2), and
//! ringwire's own TLS client, both a `Client` and a handler's `CoreCtx::connect_tls`, talks to
//! TLS echo servers, with what each side's handshake settled checked on both sides.
//!
//! The other TLS tests: the handshake's choices (SNI, ALPN, resumption) in tls_handshake.rs,
//! hostile and failing peers in tls_hostile.rs, backpressure and drain in tls_flow.rs, real
//! clients (curl, openssl, redis-cli) in tls_tools.rs, allocations in tls_alloc.rs.

mod util;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::{Len32, Raw};
use ringwire::tls::{rustls, ClientTls, TlsConnect, TlsInfo};
use ringwire::{Client, CloseReason, Handler, Reply, Server, Session, SessionError};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use util::tls::Pki;
use util::tls_client::{self, Ending, TLS12_ONLY};
use util::tls_echo::{self, recording};

/// What the echo test sends.
const MIB: usize = 1 << 20;

/// The sizes of the client's writes, in turn: each write is one record or more (16385 is one
/// byte over a record's plaintext limit), so the server meets records of every shape and
/// records that span its receive buffers.
const PIECES: [usize; 4] = [1, 7, 4093, 16385];

/// Bytes written before their echo is read back: bounded, so neither side's buffers fill.
const WINDOW: usize = 64 * 1024;

/// Echoes 1 MiB of random bytes through a TLS echo server in `PIECES`-sized writes with a
/// rustls client offering `versions`; checks every byte, the version, the counters, and that
/// a close_notify from the client is answered with one.
fn echo_a_mebibyte(versions: &[&'static SupportedProtocolVersion], expect: ProtocolVersion) {
    let pki = Pki::new("echo");
    let leaf = pki.server("server", &["localhost"]);
    let (server, seen) = recording(Raw, tls_echo::server_tls(&leaf), false);
    let server = util::start(server);
    let config = Arc::new(tls_client::client_config(&pki.ca_pem, versions));
    let mut stream = tls_client::connect(server.addr(), &config, "localhost");
    assert_eq!(stream.conn.protocol_version(), Some(expect));

    let data = util::Rng::new(util::base_seed()).bytes(MIB);
    let mut back = vec![0u8; WINDOW + PIECES.iter().max().unwrap()];
    let (mut sent, mut piece) = (0, 0);
    while sent < MIB {
        let from = sent;
        while sent < MIB && sent - from < WINDOW {
            let n = PIECES[piece % PIECES.len()].min(MIB - sent);
            piece += 1;
            stream
                .write_all(&data[sent..sent + n])
                .unwrap_or_else(|e| panic!("write of {n} bytes at {sent}: {e}"));
            sent += n;
        }
        let back = &mut back[..sent - from];
        std::io::Read::read_exact(&mut stream, back)
            .unwrap_or_else(|e| panic!("echo of bytes {from}..{sent}: {e}"));
        if let Some(i) = util::first_difference(back, &data[from..sent]) {
            panic!("echo differs at byte {}", from + i);
        }
    }
    println!("{piece} writes of {PIECES:?} bytes echoed, {MIB} bytes in all");

    // A clean end: the client's close_notify, answered by the server's.
    stream.conn.send_close_notify();
    stream.flush().expect("flush the close_notify");
    let (ending, rest) = tls_client::read_to_end(&mut stream.conn, &mut stream.sock);
    assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    assert!(
        matches!(ending, Ending::CloseNotify),
        "expected the server's close_notify, got {ending:?}"
    );
    assert_eq!(seen.wait_closes(1), [CloseReason::PeerClosed]);
    let s = server.total();
    assert_eq!(
        (s.tls_handshakes, s.tls_errors, s.frames_in > 0),
        (1, 0, true),
        "{s:#?}"
    );
    assert!(
        s.bytes_in > MIB as u64,
        "bytes_in counts ciphertext: {}",
        s.bytes_in
    );
    assert_eq!(seen.opened()[0].version, Some(expect));
    assert!(seen.errors().is_empty(), "{:?}", seen.errors());
    server.stop_cleanly();
}

#[test]
fn rustls_client_echoes_a_mebibyte_in_odd_pieces_over_tls13() {
    echo_a_mebibyte(tls_client::ANY_VERSION, ProtocolVersion::TLSv1_3);
}

#[test]
fn rustls_client_echoes_a_mebibyte_in_odd_pieces_over_tls12() {
    echo_a_mebibyte(TLS12_ONLY, ProtocolVersion::TLSv1_2);
}

/// The frame sizes the ringwire client sends, one after another.
const FRAMES: [usize; 5] = [1, 7, 4093, 16385, 100_000];

/// What the ringwire client's session saw.
#[derive(Default)]
struct ClientSeen {
    info: Mutex<Option<TlsInfo>>,
    echoed: AtomicUsize,
    wrong: AtomicUsize,
    closes: Mutex<Vec<CloseReason>>,
    errors: Mutex<Vec<String>>,
}

/// Sends each of `FRAMES` in turn (frame `i` filled with byte `i`), checking each echo;
/// closes after the last.
struct Frames {
    seen: Arc<ClientSeen>,
    next: usize,
}

impl Frames {
    fn send_next(&mut self, s: &mut Session<'_, Len32>) {
        let frame = vec![self.next as u8; FRAMES[self.next]];
        if s.send(&frame).is_err() {
            s.close();
        }
    }
}

impl Handler<Len32> for Frames {
    fn on_open(&mut self, s: &mut Session<'_, Len32>) {
        *self.seen.info.lock().unwrap() = s.tls().cloned();
        self.send_next(s);
    }

    fn on_message(&mut self, s: &mut Session<'_, Len32>, frame: &[u8]) {
        let i = self.next;
        if frame.len() != FRAMES[i] || frame.iter().any(|&b| b != i as u8) {
            self.seen.wrong.fetch_add(1, Ordering::SeqCst);
        }
        self.seen.echoed.fetch_add(1, Ordering::SeqCst);
        self.next += 1;
        if self.next == FRAMES.len() {
            s.close();
        } else {
            self.send_next(s);
        }
    }

    fn on_error(&mut self, _s: &mut Session<'_, Len32>, error: &SessionError) {
        self.seen.errors.lock().unwrap().push(error.to_string());
    }

    fn on_close(&mut self, _s: &mut Session<'_, Len32>, reason: CloseReason) {
        self.seen.closes.lock().unwrap().push(reason);
    }
}

/// Polls until `cond` holds; fails after [`util::SETTLE_TIMEOUT`] with `what`.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + util::SETTLE_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ringwire_client_speaks_tls_to_a_tls_echo_server() {
    let pki = Pki::new("client");
    let leaf = pki.server("server", &["localhost"]);
    let client_leaf = pki.client("client", "ringwire client");
    let tls = tls_echo::server_tls(&leaf)
        .alpn(["rw/1"])
        .client_auth(&pki.ca_pem, true);
    let (server, server_seen) = recording(Len32, tls, false);
    let server = util::start(server);

    let connect = ClientTls::new()
        .root_pem(&pki.ca_pem)
        .client_cert(&client_leaf.cert_pem, &client_leaf.key_pem)
        .alpn(["other", "rw/1"])
        .connect("localhost")
        .expect("client TLS configuration");
    let seen = Arc::new(ClientSeen::default());
    let factory_seen = seen.clone();
    let client = Client::new(Len32, move || Frames {
        seen: factory_seen.clone(),
        next: 0,
    })
    .connect(server.addr())
    .tls(connect)
    .start()
    .expect("start the client");
    println!("client on {}", client.driver());

    wait_for("the client's session to close", || {
        !seen.closes.lock().unwrap().is_empty()
    });
    let errors = seen.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert_eq!(seen.echoed.load(Ordering::SeqCst), FRAMES.len());
    assert_eq!(seen.wrong.load(Ordering::SeqCst), 0, "an echo differed");
    assert_eq!(*seen.closes.lock().unwrap(), [CloseReason::Local]);

    // The client's view: TLS 1.3, the ALPN both speak, the server's certificate.
    let info = seen
        .info
        .lock()
        .unwrap()
        .clone()
        .expect("the client's TlsInfo");
    println!("client saw {}", tls_echo::summary(&info));
    assert_eq!(info.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(info.alpn.as_deref(), Some(&b"rw/1"[..]));
    assert_eq!(info.peer_certificates.first(), Some(&leaf.cert_der));
    assert!(!info.resumed);

    // The server's view: the same, and the client's certificate (mutual TLS) and SNI.
    let info = server_seen.wait_opened(1).remove(0);
    assert_eq!(info.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(info.alpn.as_deref(), Some(&b"rw/1"[..]));
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
    assert_eq!(info.peer_certificates.first(), Some(&client_leaf.cert_der));
    let c = client.stats().total();
    assert_eq!((c.tls_handshakes, c.tls_errors), (1, 0), "{c:#?}");
    // The client's close_notify reaches the server as a clean end of input.
    assert_eq!(server_seen.wait_closes(1), [CloseReason::PeerClosed]);
    let s = server.total();
    assert_eq!((s.tls_handshakes, s.tls_errors), (1, 0), "{s:#?}");
    assert_eq!(s.frames_in, FRAMES.len() as u64);
    client.shutdown(Duration::from_secs(1)).unwrap();
    server.stop_cleanly();
}

/// What the relay's upstream sessions saw.
#[derive(Default)]
struct RelaySeen {
    upstream: Mutex<Vec<TlsInfo>>,
    errors: Mutex<Vec<String>>,
}

/// A TLS front: each frame from its client is relayed over a new TLS connection (made with
/// `CoreCtx::connect_tls`) to the backend, and the backend's answer is the reply.
struct Relay {
    backend: SocketAddr,
    tls: Arc<TlsConnect>,
    seen: Arc<RelaySeen>,
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
        if let Err(e) = s
            .core()
            .connect_tls(self.backend, &self.tls, Len32, upstream)
        {
            // The reply was dropped with the handler: the session closes (ReplyDropped).
            self.seen.errors.lock().unwrap().push(e.to_string());
        }
    }
}

/// One relayed request: sent once the TLS handshake is done, answered with the backend's
/// frame.
struct Upstream {
    request: Vec<u8>,
    reply: Option<Reply>,
    seen: Arc<RelaySeen>,
}

impl Handler<Len32> for Upstream {
    fn on_open(&mut self, s: &mut Session<'_, Len32>) {
        let info = s
            .tls()
            .cloned()
            .expect("a TLS connect opens with its TlsInfo");
        self.seen.upstream.lock().unwrap().push(info);
        if s.send(&self.request[..]).is_err() {
            s.close();
        }
    }

    fn on_message(&mut self, s: &mut Session<'_, Len32>, frame: &[u8]) {
        if let Some(reply) = self.reply.take() {
            s.complete(reply, &util::len32(frame));
        }
        s.close();
    }

    fn on_error(&mut self, _s: &mut Session<'_, Len32>, error: &SessionError) {
        self.seen.errors.lock().unwrap().push(error.to_string());
    }
}

#[test]
fn handler_relays_over_connect_tls_to_a_second_tls_server() {
    const REQUESTS: usize = 4;
    let pki = Pki::new("relay");
    let front_leaf = pki.server("front", &["localhost"]);
    let back_leaf = pki.server("back", &["backend.test"]);
    let (backend, back_seen) = recording(
        Len32,
        tls_echo::server_tls(&back_leaf).alpn(["rw/1"]),
        false,
    );
    let backend = util::start(backend);

    let connect = ClientTls::new()
        .root_pem(&pki.ca_pem)
        .alpn(["rw/1"])
        .connect("backend.test")
        .expect("client TLS configuration");
    let (tls, backend_addr) = (Arc::new(connect), backend.addr());
    let seen = Arc::new(RelaySeen::default());
    let factory_seen = seen.clone();
    let front_tls = tls_echo::server_tls(&front_leaf).build().unwrap();
    let front = util::start(
        Server::new(Len32, move || Relay {
            backend: backend_addr,
            tls: tls.clone(),
            seen: factory_seen.clone(),
        })
        .bind(util::any_port())
        .tls(front_tls),
    );

    let config = Arc::new(tls_client::client_config(
        &pki.ca_pem,
        tls_client::ANY_VERSION,
    ));
    let mut stream = tls_client::connect(front.addr(), &config, "localhost");
    for i in 0..REQUESTS {
        let payload = vec![b'a' + i as u8; 1000 * (i + 1)];
        tls_client::echo(&mut stream, &util::len32(&payload));
    }
    let errors = seen.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "relay errors: {errors:?}");

    // The upstream sessions' view: TLS 1.3, the backend's ALPN and certificate; every one
    // after the first resumed with a ticket an earlier one received.
    let upstream = seen.upstream.lock().unwrap().clone();
    assert_eq!(upstream.len(), REQUESTS);
    for (i, info) in upstream.iter().enumerate() {
        println!("upstream {i}: {}", tls_echo::summary(info));
        assert_eq!(info.version, Some(ProtocolVersion::TLSv1_3));
        assert_eq!(info.alpn.as_deref(), Some(&b"rw/1"[..]));
        assert_eq!(info.peer_certificates.first(), Some(&back_leaf.cert_der));
        assert_eq!(
            info.resumed,
            i > 0,
            "upstream {i} resumed: {}",
            info.resumed
        );
    }
    // The backend's view: the relay asked for backend.test, with ALPN.
    let opened = back_seen.wait_opened(REQUESTS);
    for info in &opened {
        assert_eq!(info.server_name.as_deref(), Some("backend.test"));
        assert_eq!(info.alpn.as_deref(), Some(&b"rw/1"[..]));
        assert!(info.peer_certificates.is_empty());
    }
    // Each upstream closed after its answer, with a close_notify the backend saw as a clean
    // end; no TLS error anywhere.
    let closes = back_seen.wait_closes(REQUESTS);
    assert!(
        closes.iter().all(|&r| r == CloseReason::PeerClosed),
        "{closes:?}"
    );
    let (f, b) = (front.total(), backend.total());
    // The front's core counts its client's handshake and its own connects'.
    assert_eq!(
        (f.tls_handshakes, f.tls_errors),
        (1 + REQUESTS as u64, 0),
        "front {f:#?}"
    );
    assert_eq!(f.connected, REQUESTS as u64, "front {f:#?}");
    assert_eq!(
        (b.tls_handshakes, b.tls_errors),
        (REQUESTS as u64, 0),
        "backend {b:#?}"
    );
    drop(stream);
    front.stop_cleanly();
    backend.stop_cleanly();
}

/// Kernel TLS where the kernel offers it, rustls where it does not: the start-up line says
/// which, and a session echoes either way. On a kernel with the `tls` ULP (and the epoll
/// driver, or io_uring with DEFER_TASKRUN) this runs the handover for real: the session must
/// then be the kernel's; on one without (this project's CI machines), it checks the fallback.
#[test]
fn kernel_tls_where_the_kernel_offers_it_else_rustls() {
    let pki = Pki::new("ktls");
    let leaf = pki.server("server", &["localhost"]);
    let (server, seen) = recording(Len32, tls_echo::server_tls(&leaf), false);
    let server = util::start(server);
    let line = server.info().to_string();
    println!("start-up line: {line}");
    let offered = ringwire::tls::kernel_tls();
    println!("kernel TLS probe: {offered:?}");
    if offered.is_err() {
        assert!(line.contains("kernel TLS not used"), "{line}");
    }
    let config = Arc::new(tls_client::client_config(
        &pki.ca_pem,
        tls_client::ANY_VERSION,
    ));
    let mut stream = tls_client::connect(server.addr(), &config, "localhost");
    for i in 0..50u32 {
        let frame = util::len32(format!("frame {i} {}", "x".repeat(i as usize * 97)).as_bytes());
        tls_client::echo(&mut stream, &frame);
    }
    seen.wait_opened(1);
    let s = server.total();
    println!(
        "tls_kernel {}, tls_kernel_refused {}",
        s.tls_kernel, s.tls_kernel_refused
    );
    let handed = !line.contains("kernel TLS not used");
    assert_eq!(s.tls_kernel, u64::from(handed), "{s:?}");
    assert_eq!(s.tls_errors, 0, "{s:?}");
}
