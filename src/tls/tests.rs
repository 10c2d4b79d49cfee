//! The builders' configurations in real handshakes, without sockets: a rustls client and
//! server connection in memory, bytes moved between them until both are done (or one fails),
//! with certificates from a fresh CA per test (tests/util/tls.rs).

use std::sync::Arc;

use super::{rustls, ClientTls, ServerTls, TlsConfigError};
use rustls::pki_types::ServerName;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind,
    ProtocolVersion, ServerConfig, ServerConnection,
};

#[allow(dead_code)]
#[path = "../../tests/util/tls.rs"]
mod pki;

use pki::{Leaf, Pki};

/// A handshake that failed: what each side's rustls said (the one that refused, and the one
/// that got its alert).
#[derive(Debug)]
struct Failed {
    server: Option<rustls::Error>,
    client: Option<rustls::Error>,
}

/// A client and a server connection after their handshake.
struct Pair {
    client: ClientConnection,
    server: ServerConnection,
}

/// Runs a handshake between a client configured with `client` asking for `name` and a server
/// configured with `server`, then moves whatever else is pending (TLS 1.3 tickets come after
/// the handshake), so a second handshake with the same client configuration can resume.
fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    name: &str,
) -> Result<Pair, Box<Failed>> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut pair = Pair {
        client: ClientConnection::new(client.clone(), name).unwrap(),
        server: ServerConnection::new(server.clone()).unwrap(),
    };
    for _ in 0..32 {
        let to_server = match flight(&mut pair.client, &mut pair.server) {
            Ok(n) => n,
            Err(e) => return Err(pair.failed(Some(e), None)),
        };
        let to_client = match flight(&mut pair.server, &mut pair.client) {
            Ok(n) => n,
            Err(e) => return Err(pair.failed(None, Some(e))),
        };
        let done = !pair.client.is_handshaking() && !pair.server.is_handshaking();
        if to_server + to_client == 0 {
            assert!(done, "handshake stalled with nothing to send");
            return Ok(pair);
        }
    }
    panic!("handshake did not finish in 32 flights");
}

impl Pair {
    /// The handshake failed with `server` or `client`: deliver the failing side's alert to
    /// the other, and return both sides' errors.
    fn failed(
        mut self,
        server: Option<rustls::Error>,
        client: Option<rustls::Error>,
    ) -> Box<Failed> {
        let (server, client) = match (server, client) {
            (Some(s), _) => (Some(s), flight(&mut self.server, &mut self.client).err()),
            (None, Some(c)) => (flight(&mut self.client, &mut self.server).err(), Some(c)),
            (None, None) => unreachable!("a failure names a side"),
        };
        Box::new(Failed { server, client })
    }
}

/// Moves everything `from` has to send into `to`, and has `to` process it. Returns the bytes
/// moved, or `to`'s error.
fn flight<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
) -> Result<usize, rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(bytes.len())
}

/// A CA, a server certificate for "localhost" and a client that trusts the CA.
struct Setup {
    pki: Pki,
    server: Leaf,
}

fn setup(tag: &str) -> Setup {
    let pki = Pki::new(tag);
    let server = pki.server("localhost", &["localhost"]);
    Setup { pki, server }
}

impl Setup {
    fn server_tls(&self) -> ServerTls {
        ServerTls::from_pem(&self.server.cert_pem, &self.server.key_pem).unwrap()
    }

    fn client_tls(&self) -> ClientTls {
        ClientTls::new().root_pem(&self.pki.ca_pem)
    }
}

/// The end-entity certificate `pair`'s client was shown.
fn server_cert(pair: &Pair) -> &[u8] {
    pair.client
        .peer_certificates()
        .expect("a server certificate")[0]
        .as_ref()
}

#[test]
fn tls13_handshake_with_the_default_configuration() {
    let s = setup("tls13");
    let pair = handshake(
        &s.server_tls().build().unwrap(),
        &s.client_tls().build().unwrap(),
        "localhost",
    )
    .unwrap();
    assert_eq!(
        pair.server.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        pair.client.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(server_cert(&pair), s.server.cert_der.as_ref());
    assert_eq!(pair.server.handshake_kind(), Some(HandshakeKind::Full));
}

#[test]
fn tls12_handshake_with_a_client_limited_to_tls12() {
    let s = setup("tls12");
    let client = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(super::pem::roots(&s.pki.ca_pem, "ca").unwrap())
        .with_no_client_auth();
    let pair = handshake(
        &s.server_tls().build().unwrap(),
        &Arc::new(client),
        "localhost",
    )
    .unwrap();
    assert_eq!(
        pair.server.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    assert_eq!(server_cert(&pair), s.server.cert_der.as_ref());
}

#[test]
fn files_give_the_same_configuration_as_bytes() {
    let s = setup("files");
    let server = ServerTls::from_pem_files(&s.server.cert_path, &s.server.key_path)
        .unwrap()
        .build()
        .unwrap();
    let client = ClientTls::new()
        .root_pem_file(&s.pki.ca_path)
        .build()
        .unwrap();
    let pair = handshake(&server, &client, "localhost").unwrap();
    assert_eq!(server_cert(&pair), s.server.cert_der.as_ref());
}

/// A server with a default certificate for "localhost" and "fallback.test", and one for
/// "other.test" chosen by SNI.
fn sni_server(s: &Setup, other: &Leaf) -> Arc<ServerConfig> {
    s.server_tls()
        .sni("Other.Test", &other.cert_pem, &other.key_pem)
        .build()
        .unwrap()
}

#[test]
fn sni_picks_the_certificate_for_the_name() {
    let s = setup("sni");
    let other = s.pki.server("other", &["other.test"]);
    let server = sni_server(&s, &other);
    let client = s.client_tls().build().unwrap();

    let pair = handshake(&server, &client, "other.test").unwrap();
    assert_eq!(server_cert(&pair), other.cert_der.as_ref());
    assert_eq!(pair.server.server_name(), Some("other.test"));

    let pair = handshake(&server, &client, "localhost").unwrap();
    assert_eq!(server_cert(&pair), s.server.cert_der.as_ref());
}

#[test]
fn no_sni_or_an_unknown_name_gets_the_default_certificate() {
    let pki = Pki::new("sni-default");
    let default = pki.server("default", &["localhost", "fallback.test"]);
    let other = pki.server("other", &["other.test"]);
    let server = ServerTls::from_pem(&default.cert_pem, &default.key_pem)
        .unwrap()
        .sni("other.test", &other.cert_pem, &other.key_pem)
        .build()
        .unwrap();

    // A name with no certificate of its own.
    let client = ClientTls::new().root_pem(&pki.ca_pem).build().unwrap();
    let pair = handshake(&server, &client, "fallback.test").unwrap();
    assert_eq!(pair.server.server_name(), Some("fallback.test"));
    assert_eq!(server_cert(&pair), default.cert_der.as_ref());

    // No SNI at all.
    let mut no_sni = (*client).clone();
    no_sni.enable_sni = false;
    let pair = handshake(&server, &Arc::new(no_sni), "localhost").unwrap();
    assert_eq!(pair.server.server_name(), None);
    assert_eq!(server_cert(&pair), default.cert_der.as_ref());
}

#[test]
fn alpn_picks_the_servers_preferred_common_protocol() {
    let s = setup("alpn");
    let server = s.server_tls().alpn(["h2", "http/1.1"]).build().unwrap();

    let client = s.client_tls().alpn(["http/1.1", "h2"]).build().unwrap();
    let pair = handshake(&server, &client, "localhost").unwrap();
    assert_eq!(pair.client.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(pair.server.alpn_protocol(), Some(&b"h2"[..]));

    let client = s.client_tls().alpn(["http/1.1"]).build().unwrap();
    let pair = handshake(&server, &client, "localhost").unwrap();
    assert_eq!(pair.client.alpn_protocol(), Some(&b"http/1.1"[..]));

    // Offering only protocols the server does not speak is refused (RFC 7301).
    let client = s.client_tls().alpn([b"imap".as_slice()]).build().unwrap();
    let failed = handshake(&server, &client, "localhost")
        .err()
        .expect("refused");
    assert!(
        matches!(failed.server, Some(rustls::Error::NoApplicationProtocol)),
        "{failed:?}"
    );
}

#[test]
fn mutual_tls_required_refuses_a_client_without_a_certificate() {
    let s = setup("mtls");
    let server = s
        .server_tls()
        .client_auth(&s.pki.ca_pem, true)
        .build()
        .unwrap();

    let failed = handshake(&server, &s.client_tls().build().unwrap(), "localhost")
        .err()
        .expect("a client without a certificate is refused");
    assert!(
        matches!(failed.server, Some(rustls::Error::NoCertificatesPresented)),
        "{failed:?}"
    );
    // The client is told why (TLS 1.3's `certificate_required` alert).
    assert!(
        matches!(
            failed.client,
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
            ))
        ),
        "{failed:?}"
    );

    let me = s.pki.client("client", "client.test");
    let client = s
        .client_tls()
        .client_cert(&me.cert_pem, &me.key_pem)
        .build()
        .unwrap();
    let pair = handshake(&server, &client, "localhost").unwrap();
    let seen = pair
        .server
        .peer_certificates()
        .expect("the client's certificate");
    assert_eq!(seen[0].as_ref(), me.cert_der.as_ref());
}

#[test]
fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let s = setup("mtls-ca");
    let stranger = Pki::new("mtls-stranger").client("client", "client.test");
    let server = s
        .server_tls()
        .client_auth(&s.pki.ca_pem, false)
        .build()
        .unwrap();
    let client = s
        .client_tls()
        .client_cert(&stranger.cert_pem, &stranger.key_pem)
        .build()
        .unwrap();
    let failed = handshake(&server, &client, "localhost")
        .err()
        .expect("refused");
    assert!(
        matches!(
            failed.server,
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "{failed:?}"
    );
}

#[test]
fn mutual_tls_optional_serves_a_client_without_a_certificate() {
    let s = setup("mtls-optional");
    let server = s
        .server_tls()
        .client_auth(&s.pki.ca_pem, false)
        .build()
        .unwrap();

    let pair = handshake(&server, &s.client_tls().build().unwrap(), "localhost").unwrap();
    assert!(pair.server.peer_certificates().is_none());

    let me = s.pki.client("client", "client.test");
    let client = s
        .client_tls()
        .client_cert(&me.cert_pem, &me.key_pem)
        .build()
        .unwrap();
    let pair = handshake(&server, &client, "localhost").unwrap();
    let seen = pair
        .server
        .peer_certificates()
        .expect("the client's certificate");
    assert_eq!(seen[0].as_ref(), me.cert_der.as_ref());
}

/// The kind of a second handshake, by a client that did a first one with the same
/// configuration, on TLS 1.3 and on TLS 1.2.
fn second_handshake(s: &Setup, server: ServerTls) -> [HandshakeKind; 2] {
    let server = server.build().unwrap();
    let tls13 = s.client_tls().build().unwrap();
    let tls12 = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(super::pem::roots(&s.pki.ca_pem, "ca").unwrap())
        .with_no_client_auth();
    [tls13, Arc::new(tls12)].map(|client| {
        let first = handshake(&server, &client, "localhost").unwrap();
        assert_eq!(first.server.handshake_kind(), Some(HandshakeKind::Full));
        let second = handshake(&server, &client, "localhost").unwrap();
        assert_eq!(
            second.client.handshake_kind(),
            second.server.handshake_kind()
        );
        second.server.handshake_kind().unwrap()
    })
}

#[test]
fn resumption_is_on_by_default() {
    let s = setup("resume");
    let kinds = second_handshake(&s, s.server_tls());
    assert_eq!(kinds, [HandshakeKind::Resumed; 2]);
}

#[test]
fn resumption_by_tickets_alone_and_by_the_cache_alone() {
    let s = setup("resume-each");
    let tickets = second_handshake(&s, s.server_tls().session_cache(0));
    assert_eq!(tickets, [HandshakeKind::Resumed; 2], "tickets only");
    let cache = second_handshake(&s, s.server_tls().tickets(false));
    assert_eq!(cache, [HandshakeKind::Resumed; 2], "session cache only");
}

#[test]
fn resumption_off_makes_every_handshake_full() {
    let s = setup("resume-off");
    let kinds = second_handshake(&s, s.server_tls().session_cache(0).tickets(false));
    assert_eq!(kinds, [HandshakeKind::Full; 2]);
}

#[test]
fn secrets_are_extractable_only_where_the_kernel_takes_them() {
    // The engine hands a server's keys to the kernel where it offers kernel TLS; elsewhere, and
    // for a client always, they stay in rustls.
    let s = setup("secrets");
    let kernel = ringwire_runtime::probe::kernel_tls().is_ok();
    assert_eq!(
        s.server_tls().build().unwrap().enable_secret_extraction,
        kernel
    );
    assert!(!s.client_tls().build().unwrap().enable_secret_extraction);
}

#[test]
fn client_connect_names_the_server() {
    let s = setup("connect");
    let connect = s.client_tls().connect("localhost").unwrap();
    assert_eq!(
        connect.server_name,
        ServerName::try_from("localhost").unwrap()
    );
    let err = s.client_tls().connect("not a name").unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::BadName { name } if name == "not a name"),
        "{err}"
    );
}

#[test]
fn a_missing_file_names_its_path() {
    let s = setup("missing");
    let missing = s.pki.dir().join("missing.pem");
    let err = ServerTls::from_pem_files(&missing, &s.server.key_path).unwrap_err();
    match &err {
        TlsConfigError::Io { path, error } => {
            assert_eq!(path, &missing);
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(err.to_string().contains("missing.pem"), "{err}");
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::NotFound
    );

    let err = ClientTls::new()
        .root_pem_file(&missing)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::Io { path, .. } if path == &missing),
        "{err}"
    );
}

#[test]
fn pem_without_a_key_or_a_certificate_is_refused() {
    let s = setup("no-key");
    let err = ServerTls::from_pem(&s.server.cert_pem, &s.server.cert_pem).unwrap_err();
    assert!(matches!(err, TlsConfigError::NoPrivateKey { .. }), "{err}");

    // The key file given as the certificate: named by its path.
    let err = ServerTls::from_pem_files(&s.server.key_path, &s.server.key_path).unwrap_err();
    match &err {
        TlsConfigError::NoCertificate { what } => {
            assert_eq!(what, &s.server.key_path.display().to_string())
        }
        other => panic!("expected NoCertificate, got {other:?}"),
    }

    let err = ClientTls::new().root_pem(b"not PEM").build().unwrap_err();
    assert!(matches!(err, TlsConfigError::NoCertificate { .. }), "{err}");

    let truncated = &s.server.cert_pem[..s.server.cert_pem.len() - 30];
    let err = ServerTls::from_pem(truncated, &s.server.key_pem).unwrap_err();
    assert!(matches!(err, TlsConfigError::BadPem { .. }), "{err}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let s = setup("mismatch");
    let other = s.pki.server("other", &["localhost"]);
    let err = ServerTls::from_pem_files(&s.server.cert_path, &other.key_path).unwrap_err();
    match &err {
        TlsConfigError::KeyMismatch { cert, key } => {
            assert_eq!(cert, &s.server.cert_path.display().to_string());
            assert_eq!(key, &other.key_path.display().to_string());
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }

    let err = s
        .server_tls()
        .sni("localhost", &s.server.cert_pem, &other.key_pem)
        .build()
        .unwrap_err();
    assert!(matches!(err, TlsConfigError::KeyMismatch { .. }), "{err}");

    let err = s
        .client_tls()
        .client_cert(&s.server.cert_pem, &other.key_pem)
        .build()
        .unwrap_err();
    assert!(matches!(err, TlsConfigError::KeyMismatch { .. }), "{err}");
}

#[test]
fn bad_sni_names_are_refused() {
    let s = setup("sni-names");
    let other = s.pki.server("other", &["other.test"]);
    let add = |name: &str| {
        s.server_tls()
            .sni(name, &other.cert_pem, &other.key_pem)
            .build()
            .unwrap_err()
    };
    let err = add("elsewhere.test");
    assert!(
        matches!(&err, TlsConfigError::NameMismatch { name, .. } if name == "elsewhere.test"),
        "{err}"
    );
    assert!(matches!(add("127.0.0.1"), TlsConfigError::BadName { .. }));
    assert!(matches!(add("*.test"), TlsConfigError::BadName { .. }));

    let err = s
        .server_tls()
        .sni("other.test", &other.cert_pem, &other.key_pem)
        .sni("OTHER.test", &other.cert_pem, &other.key_pem)
        .build()
        .unwrap_err();
    assert!(matches!(err, TlsConfigError::DuplicateName { .. }), "{err}");
}

#[test]
fn other_bad_input_is_refused() {
    let s = setup("other-errors");
    let err = ClientTls::new().build().unwrap_err();
    assert!(matches!(err, TlsConfigError::NoRoots), "{err}");

    let err = s.server_tls().alpn(["h2", ""]).build().unwrap_err();
    assert!(matches!(err, TlsConfigError::BadAlpn { .. }), "{err}");
    let long = vec![b'x'; 256];
    let err = s.client_tls().alpn([long]).build().unwrap_err();
    assert!(matches!(err, TlsConfigError::BadAlpn { .. }), "{err}");

    // The first error is the one reported.
    let err = ClientTls::new()
        .root_pem(b"")
        .alpn([""])
        .build()
        .unwrap_err();
    assert!(matches!(err, TlsConfigError::NoCertificate { .. }), "{err}");
}
