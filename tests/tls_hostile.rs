//! Hostile and failing TLS peers: plain text instead of a ClientHello, a client that does not
//! trust the server, a record cut short by the peer's FIN, a record whose ciphertext was
//! altered, handshakes that never finish, and a client without the certificate mutual TLS
//! requires. Each closes only its own session, with its own reason and counter, while a
//! session that completed its handshake first (the bystander) is still served afterwards.

mod util;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringwire::codec::Raw;
use ringwire::tls::rustls;
use ringwire::CloseReason;
use rustls::{AlertDescription, CertificateError, ClientConfig};
use util::tls::Pki;
use util::tls_client::{self, Ending, TlsStream};
use util::tls_echo::{self, recording, Seen};

/// A TLS echo server (1 core: the bystander and the hostile peer share it), its recorder,
/// and a client configuration that trusts it.
struct Setup {
    _pki: Pki,
    server: util::Running,
    seen: Arc<Seen>,
    config: Arc<ClientConfig>,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        Setup::with(tag, |server| server)
    }

    fn with(
        tag: &str,
        build: impl FnOnce(
            ringwire::Server<Raw, tls_echo::Recorder>,
        ) -> ringwire::Server<Raw, tls_echo::Recorder>,
    ) -> Setup {
        let pki = Pki::new(tag);
        let leaf = pki.server("server", &["localhost"]);
        let (server, seen) = recording(Raw, tls_echo::server_tls(&leaf), false);
        let server = util::start(build(server));
        let config = Arc::new(tls_client::client_config(
            &pki.ca_pem,
            tls_client::ANY_VERSION,
        ));
        Setup {
            _pki: pki,
            server,
            seen,
            config,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// A session that completes its handshake and echoes before the hostile peer comes.
    fn bystander(&self) -> TlsStream {
        let mut stream = tls_client::connect(self.addr(), &self.config, "localhost");
        tls_client::echo(&mut stream, b"bystander, before");
        self.seen.wait_opened(1);
        stream
    }

    /// The bystander is still served, and its session is still open: of the `closed`
    /// sessions (all but the bystander), none closed for another reason than `reason`.
    fn check_after(&self, bystander: &mut TlsStream, closed: usize, reason: CloseReason) {
        tls_client::echo(bystander, b"bystander, after: still served");
        let closes = self.seen.closes();
        assert_eq!(closes, vec![reason; closed], "close reasons");
        let s = self.server.total();
        assert_eq!(s.closed, closed as u64, "{s:#?}");
        assert_eq!(s.closed_for(reason), closed as u64, "{s:#?}");
    }

    /// Stops the server once the bystander closed cleanly (its close_notify answered).
    fn finish(self, mut bystander: TlsStream) {
        bystander.conn.send_close_notify();
        bystander.flush().unwrap();
        let (ending, _) = tls_client::read_to_end(&mut bystander.conn, &mut bystander.sock);
        assert!(matches!(ending, Ending::CloseNotify), "{ending:?}");
        self.server.stop_cleanly();
    }
}

/// The rustls error inside an `io::Error` from a rustls stream.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

#[test]
fn plain_text_instead_of_a_client_hello_closes_with_tls_error() {
    let s = Setup::new("garbage");
    let mut bystander = s.bystander();
    let mut plain = util::connect(s.addr());
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let answer = util::expect_closed(&mut plain);
    println!("the server answered plain text with {answer:02x?}");
    // Nothing but (at most) an alert record: content type 21.
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "not an alert: {answer:02x?}"
    );
    s.seen.wait_closes(1);
    let errors = s.seen.errors();
    println!("on_error saw {errors:?}");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("InvalidMessage"), "{errors:?}");
    s.check_after(&mut bystander, 1, CloseReason::TlsError);
    let t = s.server.total();
    assert_eq!((t.tls_errors, t.tls_handshakes), (1, 1), "{t:#?}");
    s.finish(bystander);
}

#[test]
fn a_client_that_does_not_trust_the_server_fails_and_the_server_closes_it() {
    let s = Setup::new("untrusted");
    let mut bystander = s.bystander();
    let other = Pki::new("other-ca");
    let distrustful = Arc::new(tls_client::client_config(
        &other.ca_pem,
        tls_client::ANY_VERSION,
    ));
    let (_stream, done) = tls_client::try_connect(s.addr(), &distrustful, "localhost");
    let e = done.expect_err("a handshake with a certificate from an unknown CA");
    assert!(
        matches!(
            rustls_error(&e),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "client side: {e:?}"
    );
    // The client's alert (unknown_ca) reaches the server, which closes the session.
    s.seen.wait_closes(1);
    let errors = s.seen.errors();
    println!("on_error saw {errors:?}");
    assert_eq!(errors, ["AlertReceived(UnknownCA)"]);
    s.check_after(&mut bystander, 1, CloseReason::TlsError);
    let t = s.server.total();
    assert_eq!((t.tls_errors, t.tls_handshakes), (1, 1), "{t:#?}");
    s.finish(bystander);
}

/// A client connection that completed its handshake and one echo (so the server's session
/// is open before what comes next: a bad record that arrived with the client's Finished would
/// fail the session before it opened), to be driven record by record.
fn raw_session(s: &Setup) -> (rustls::ClientConnection, std::net::TcpStream) {
    let mut stream = tls_client::connect(s.addr(), &s.config, "localhost");
    tls_client::echo(&mut stream, b"opened");
    s.seen.wait_opened(2);
    (stream.conn, stream.sock)
}

/// One application-data record carrying `plain`, as bytes to send.
fn record(conn: &mut rustls::ClientConnection, plain: &[u8]) -> Vec<u8> {
    conn.writer().write_all(plain).unwrap();
    let record = tls_client::take_records(conn);
    assert_eq!(record[0], 0x17, "an application-data record");
    assert_eq!(record.len(), 5 + plain.len() + 1 + 16, "one TLS 1.3 record");
    record
}

/// The peer's FIN in the middle of a record: the session closes (no hang), and none of the
/// record's plaintext reaches the handler (it never decrypted).
///
/// What the engine does: it hands rustls the first half, rustls waits for the rest, and the
/// FIN ends the input as any FIN does: the session closes as `PeerClosed`, after its
/// close_notify, without a TLS error. rustls keeps the half record and is never asked whether
/// the stream ended cleanly (`IoState::peer_has_closed` is only a close_notify). A client
/// reading such a stream would see a truncation (rustls's `UnexpectedEof`); for a server that
/// never got a whole record, there is nothing to deliver, and `PeerClosed` is the sensible
/// reason (`TlsError` would also do; what matters is that nothing of the record leaks into the
/// codec and the session does not wait for bytes that cannot come).
#[test]
fn a_record_cut_short_by_the_peers_fin_closes_only_its_session() {
    let s = Setup::new("truncated");
    let mut bystander = s.bystander();
    let (mut conn, mut sock) = raw_session(&s);
    let bytes = record(&mut conn, b"this record is cut in half");
    let frames_before = s.server.total().frames_in;
    sock.write_all(&bytes[..bytes.len() / 2]).unwrap();
    util::shutdown_write(&sock);
    let (ending, plain) = tls_client::read_to_end(&mut conn, &mut sock);
    println!("the truncating client saw {ending:?}");
    assert!(plain.is_empty(), "echoed {plain:?}");
    assert!(
        matches!(ending, Ending::CloseNotify),
        "expected the server's close_notify, got {ending:?}"
    );
    s.seen.wait_closes(1);
    assert!(s.seen.errors().is_empty(), "{:?}", s.seen.errors());
    s.check_after(&mut bystander, 1, CloseReason::PeerClosed);
    let t = s.server.total();
    // Nothing of the cut record was decoded: only the bystander's echo since.
    assert_eq!(t.frames_in, frames_before + 1, "{t:#?}");
    assert_eq!((t.tls_errors, t.tls_handshakes), (0, 2), "{t:#?}");
    s.finish(bystander);
}

#[test]
fn a_corrupted_record_fails_with_bad_record_mac() {
    let s = Setup::new("corrupted");
    let mut bystander = s.bystander();
    let (mut conn, mut sock) = raw_session(&s);
    let mut bytes = record(&mut conn, b"one bit of this record is flipped");
    bytes[5 + 3] ^= 0x01; // in the ciphertext, past the 5-byte header
    sock.write_all(&bytes).unwrap();
    let (ending, plain) = tls_client::read_to_end(&mut conn, &mut sock);
    println!("the client saw {ending:?}");
    assert!(plain.is_empty(), "echoed {plain:?}");
    assert!(
        matches!(
            ending,
            Ending::Tls(rustls::Error::AlertReceived(AlertDescription::BadRecordMac))
        ),
        "expected a bad_record_mac alert, got {ending:?}"
    );
    s.seen.wait_closes(1);
    assert_eq!(s.seen.errors(), ["DecryptError"]);
    s.check_after(&mut bystander, 1, CloseReason::TlsError);
    let t = s.server.total();
    assert_eq!((t.tls_errors, t.tls_handshakes), (1, 2), "{t:#?}");
    s.finish(bystander);
}

#[test]
fn handshakes_that_never_finish_close_at_the_handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let s = Setup::with("slow", |server| server.handshake_timeout(TIMEOUT));
    let mut bystander = s.bystander();

    // One peer sends nothing; another half a ClientHello.
    let mut silent = util::connect(s.addr());
    let mut hello = tls_client::client_connection(&s.config, "localhost");
    let hello = tls_client::take_records(&mut hello);
    let mut half = util::connect(s.addr());
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    let began = Instant::now();
    for (what, stream) in [("silent", &mut silent), ("half a ClientHello", &mut half)] {
        let answer = util::expect_closed(stream);
        println!(
            "{what}: closed after {:?} (timeout {TIMEOUT:?}), sent {} bytes",
            began.elapsed(),
            answer.len()
        );
        assert!(answer.is_empty(), "{what}: got {answer:02x?}");
    }
    s.seen.wait_closes(2);
    assert!(s.seen.errors().is_empty(), "{:?}", s.seen.errors());
    // The bystander has been idle longer than the handshake timeout: it does not apply to an
    // open session.
    s.check_after(&mut bystander, 2, CloseReason::HandshakeTimeout);
    let t = s.server.total();
    assert_eq!((t.tls_errors, t.tls_handshakes), (2, 1), "{t:#?}");
    s.finish(bystander);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_and_shows_the_others() {
    let pki = Pki::new("mtls");
    let leaf = pki.server("server", &["localhost"]);
    let client_leaf = pki.client("client", "client one");
    let tls = tls_echo::server_tls(&leaf).client_auth(&pki.ca_pem, true);
    let (server, seen) = recording(Raw, tls, true);
    let server = util::start(server);

    // A client with a certificate: the handler greets it with the certificate it verified.
    let with_cert = Arc::new(tls_client::client_config_with_cert(
        &pki.ca_pem,
        &client_leaf.cert_pem,
        &client_leaf.key_pem,
    ));
    let mut good = tls_client::connect(server.addr(), &with_cert, "localhost");
    let len = u32::from_be_bytes(read_exact::<4>(&mut good)) as usize;
    let mut der = vec![0; len];
    std::io::Read::read_exact(&mut good, &mut der).unwrap();
    assert_eq!(
        der,
        client_leaf.cert_der.as_ref(),
        "the handler's peer certificate"
    );
    assert_eq!(
        seen.wait_opened(1)[0].peer_certificates,
        [client_leaf.cert_der.clone()]
    );
    tls_client::echo(&mut good, b"with a certificate");

    // A client without one: under TLS 1.3 its side of the handshake ends before the server
    // has checked, so the refusal (a certificate_required alert) comes on its first read.
    let without = Arc::new(tls_client::client_config(
        &pki.ca_pem,
        tls_client::ANY_VERSION,
    ));
    let (mut bad, done) = tls_client::try_connect(server.addr(), &without, "localhost");
    let ending = match done {
        Err(e) => format!("{e:?}"),
        Ok(()) => format!(
            "{:?}",
            tls_client::read_to_end(&mut bad.conn, &mut bad.sock)
        ),
    };
    println!("the client without a certificate saw {ending}");
    assert!(
        ending.contains("AlertReceived(CertificateRequired)"),
        "{ending}"
    );
    assert_eq!(seen.wait_closes(1), [CloseReason::TlsError]);
    assert_eq!(seen.errors(), ["NoCertificatesPresented"]);
    // Only the client with a certificate opened, and it is still served.
    tls_client::echo(&mut good, b"still served");
    assert_eq!(seen.opened().len(), 1);
    let t = server.total();
    assert_eq!(
        (t.tls_errors, t.tls_handshakes, t.closed),
        (1, 1, 1),
        "{t:#?}"
    );
    drop(good);
    server.stop_cleanly();
}

fn read_exact<const N: usize>(stream: &mut TlsStream) -> [u8; N] {
    let mut buf = [0; N];
    std::io::Read::read_exact(stream, &mut buf).unwrap();
    buf
}
