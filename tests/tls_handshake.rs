//! What a TLS handshake through the engine settles, seen from both ends: the certificate SNI
//! picks (and the default one without SNI), the ALPN protocol the handler sees in
//! `Session::tls`, and resumption of an earlier session (TLS 1.3 tickets, TLS 1.2 tickets or
//! session IDs) by a client that keeps its configuration.

mod util;

use std::sync::Arc;

use ringwire::codec::Raw;
use ringwire::tls::rustls;
use ringwire::CloseReason;
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion, SupportedProtocolVersion};
use util::tls::Pki;
use util::tls_client::{self, Ending, TlsStream};
use util::tls_echo::{self, recording};

/// The certificate the server presented to `stream`.
fn server_cert(stream: &TlsStream) -> Vec<u8> {
    stream
        .conn
        .peer_certificates()
        .expect("the server's certificate")[0]
        .to_vec()
}

#[test]
fn sni_picks_the_certificate_and_no_sni_gets_the_default() {
    let pki = Pki::new("sni");
    let default = pki.server("default", &["localhost"]);
    let other = pki.server("other", &["other.test"]);
    let tls = tls_echo::server_tls(&default).sni("other.test", &other.cert_pem, &other.key_pem);
    let (server, seen) = recording(Raw, tls, false);
    let server = util::start(server);
    let config = tls_client::client_config(&pki.ca_pem, tls_client::ANY_VERSION);
    let mut no_sni = config.clone();
    no_sni.enable_sni = false;
    let (config, no_sni) = (Arc::new(config), Arc::new(no_sni));

    // (client configuration, name it verifies, certificate expected, SNI the server saw)
    let cases = [
        (&config, "localhost", &default, Some("localhost")),
        (&config, "other.test", &other, Some("other.test")),
        (&no_sni, "localhost", &default, None),
    ];
    for (i, (config, name, leaf, sni)) in cases.into_iter().enumerate() {
        let mut stream = tls_client::connect(server.addr(), config, name);
        assert_eq!(
            server_cert(&stream),
            leaf.cert_der.as_ref(),
            "case {i}: the certificate for {name:?} (SNI {sni:?})"
        );
        tls_client::echo(&mut stream, name.as_bytes());
        let info = &seen.wait_opened(i + 1)[i];
        assert_eq!(info.server_name.as_deref(), sni, "case {i}");
        println!(
            "verified {name:?}, the server saw SNI {:?}",
            info.server_name
        );
    }
    let t = server.total();
    assert_eq!((t.tls_handshakes, t.tls_errors), (3, 0), "{t:#?}");
    server.stop_cleanly();
}

#[test]
fn alpn_is_what_the_handler_sees() {
    let pki = Pki::new("alpn");
    let leaf = pki.server("server", &["localhost"]);
    let tls = tls_echo::server_tls(&leaf).alpn(["rw/2", "rw/1"]);
    let (server, seen) = recording(Raw, tls, false);
    let server = util::start(server);
    let base = tls_client::client_config(&pki.ca_pem, tls_client::ANY_VERSION);

    // (protocols the client offers, protocol agreed)
    let cases: [(&[&[u8]], Option<&[u8]>); 3] = [
        (&[b"rw/1", b"rw/2"], Some(b"rw/2")), // the server's preference wins
        (&[b"other", b"rw/1"], Some(b"rw/1")),
        (&[], None), // a client that offers none is served without
    ];
    for (i, (offered, agreed)) in cases.into_iter().enumerate() {
        let mut config = base.clone();
        config.alpn_protocols = offered.iter().map(|p| p.to_vec()).collect();
        let mut stream = tls_client::connect(server.addr(), &Arc::new(config), "localhost");
        assert_eq!(stream.conn.alpn_protocol(), agreed, "case {i}: client");
        tls_client::echo(&mut stream, b"alpn");
        assert_eq!(
            seen.wait_opened(i + 1)[i].alpn.as_deref(),
            agreed,
            "case {i}: Session::tls().alpn"
        );
    }

    // A client that offers only protocols the server does not speak is refused (RFC 7301).
    let mut config = base.clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let (_stream, done) = tls_client::try_connect(server.addr(), &Arc::new(config), "localhost");
    let e = done.expect_err("no common protocol");
    println!("a client with no common protocol: {e}");
    assert!(format!("{e:?}").contains("NoApplicationProtocol"), "{e:?}");
    assert_eq!(seen.wait_closes(4).last(), Some(&CloseReason::TlsError));
    assert_eq!(seen.errors(), ["NoApplicationProtocol"]);
    let t = server.total();
    assert_eq!((t.tls_handshakes, t.tls_errors), (3, 1), "{t:#?}");
    server.stop_cleanly();
}

/// Two connections with one client configuration: the second resumes the first's session,
/// as the client's `handshake_kind` and the handler's `Session::tls().resumed` both say.
fn second_connection_resumes(versions: &[&'static SupportedProtocolVersion], v: ProtocolVersion) {
    let pki = Pki::new("resume");
    let leaf = pki.server("server", &["localhost"]);
    let (server, seen) = recording(Raw, tls_echo::server_tls(&leaf), false);
    let server = util::start(server);
    let config: Arc<ClientConfig> = Arc::new(tls_client::client_config(&pki.ca_pem, versions));

    let mut kinds = Vec::new();
    for i in 0..2 {
        let mut stream = tls_client::connect(server.addr(), &config, "localhost");
        assert_eq!(stream.conn.protocol_version(), Some(v));
        // The echo also brings the TLS 1.3 tickets, which the server sends after its
        // handshake, into the client's store.
        tls_client::echo(&mut stream, format!("connection {i}").as_bytes());
        kinds.push(stream.conn.handshake_kind());
        stream.conn.send_close_notify();
        std::io::Write::flush(&mut stream).unwrap();
        let (ending, _) = tls_client::read_to_end(&mut stream.conn, &mut stream.sock);
        assert!(matches!(ending, Ending::CloseNotify), "{ending:?}");
    }
    println!("{v:?}: handshakes {kinds:?}");
    assert_eq!(
        kinds,
        [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]
    );
    let resumed: Vec<bool> = seen.wait_opened(2).iter().map(|i| i.resumed).collect();
    assert_eq!(resumed, [false, true], "Session::tls().resumed");
    assert_eq!(seen.wait_closes(2), [CloseReason::PeerClosed; 2]);
    let t = server.total();
    assert_eq!((t.tls_handshakes, t.tls_errors), (2, 0), "{t:#?}");
    server.stop_cleanly();
}

#[test]
fn second_connection_resumes_over_tls13() {
    second_connection_resumes(tls_client::ANY_VERSION, ProtocolVersion::TLSv1_3);
}

#[test]
fn second_connection_resumes_over_tls12() {
    second_connection_resumes(tls_client::TLS12_ONLY, ProtocolVersion::TLSv1_2);
}
