//! TLS clients for the integration tests: rustls over a std `TcpStream`, as a peer that is not
//! ringwire would speak it. Configurations trust a test's CA (tests/util/tls.rs) and may be
//! limited to one protocol version; a connection is either a `StreamOwned` that did its
//! handshake, or a bare `ClientConnection` a test drives record by record (to truncate or
//! corrupt one).
//!
//! Invariant: as in the rest of this folder, nothing blocks without a bound: every socket
//! comes from [`super::connect`] (read and write timeouts), and a handshake that fails or
//! stalls returns an error instead of waiting.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};

/// A rustls client connection over a blocking socket.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// TLS 1.3 and 1.2, as ringwire offers them.
pub const ANY_VERSION: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// TLS 1.2 only.
pub const TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// rustls's aws-lc-rs provider, named explicitly (as ringwire does).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The CA certificates in `ca_pem` as a root store.
pub fn roots(ca_pem: &[u8]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    roots
}

/// A client configuration trusting `ca_pem`, offering `versions`, without a client
/// certificate. Returned unshared so a test can set ALPN or turn SNI off first.
pub fn client_config(
    ca_pem: &[u8],
    versions: &[&'static SupportedProtocolVersion],
) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth()
}

/// As [`client_config`], presenting the certificate `cert_pem` (key `key_pem`) when asked.
pub fn client_config_with_cert(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> ClientConfig {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("client certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("client key PEM");
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(ANY_VERSION)
        .expect("protocol versions")
        .with_root_certificates(roots(ca_pem))
        .with_client_auth_cert(chain, key)
        .expect("client certificate and key")
}

/// A client connection to the server named `name` (a DNS name or an IP address).
pub fn client_connection(config: &Arc<ClientConfig>, name: &str) -> ClientConnection {
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    ClientConnection::new(config.clone(), name).expect("client connection")
}

/// Connects to `addr` and does the handshake as `name`; the error is rustls's (or the
/// socket's) as `io::Error`. The stream is returned either way, for a test to look at.
pub fn try_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> (TlsStream, io::Result<()>) {
    let conn = client_connection(config, name);
    let mut stream = StreamOwned::new(conn, super::connect(addr));
    let done = handshake(&mut stream.conn, &mut stream.sock);
    (stream, done)
}

/// Connects to `addr` and does the handshake as `name`; fails the test if it fails.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> TlsStream {
    let (stream, done) = try_connect(addr, config, name);
    if let Err(e) = done {
        panic!("TLS handshake with {addr} as {name:?}: {e}");
    }
    stream
}

/// Moves records until `conn`'s handshake is done (and its last flight written).
pub fn handshake(conn: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}

/// Writes `payload` and reads as many bytes back, failing the test unless they are the same.
pub fn echo(stream: &mut TlsStream, payload: &[u8]) {
    stream
        .write_all(payload)
        .unwrap_or_else(|e| panic!("TLS write of {} bytes: {e}", payload.len()));
    stream.flush().expect("TLS flush");
    let mut back = vec![0; payload.len()];
    stream
        .read_exact(&mut back)
        .unwrap_or_else(|e| panic!("TLS echo of {} bytes: {e}", payload.len()));
    assert!(
        back == payload,
        "TLS echo of {} bytes differs at byte {:?}",
        payload.len(),
        super::first_difference(&back, payload)
    );
}

/// The bytes of the TLS records `conn` has queued (handshake messages, application data,
/// alerts), taken out instead of written, so a test can send them as it likes.
pub fn take_records(conn: &mut ClientConnection) -> Vec<u8> {
    let mut records = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut records).expect("write_tls into a Vec");
    }
    records
}

/// How a TLS connection ended, as the client saw it.
#[derive(Debug)]
pub enum Ending {
    /// A close_notify, then EOF: rustls's read returned `Ok(0)`.
    CloseNotify,
    /// EOF (or a reset) without a close_notify.
    Eof,
    /// rustls failed: an alert from the server, or a record it could not read.
    Tls(rustls::Error),
    /// The socket failed otherwise (a timeout: the server kept the connection open).
    Io(io::Error),
}

/// Reads from `conn` until the connection ends; returns how, and the plaintext that came
/// before.
pub fn read_to_end(conn: &mut ClientConnection, sock: &mut TcpStream) -> (Ending, Vec<u8>) {
    let mut plain = Vec::new();
    loop {
        match conn.reader().read_to_end(&mut plain) {
            Ok(_) => return (Ending::CloseNotify, plain),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (Ending::Eof, plain),
            Err(e) => return (Ending::Io(e), plain),
        }
        match conn.read_tls(sock) {
            Ok(0) => {
                // EOF: rustls says whether a close_notify came first.
                if let Err(e) = conn.process_new_packets() {
                    return (Ending::Tls(e), plain);
                }
                continue;
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return (Ending::Eof, plain)
            }
            Err(e) => return (Ending::Io(e), plain),
        }
        if let Err(e) = conn.process_new_packets() {
            return (Ending::Tls(e), plain);
        }
    }
}
