//! TLS sessions: rustls between the socket and the codec.
//!
//! A TLS session is a session like any other (same codec, handler and `Session`), with a
//! rustls connection in its state. Ciphertext the driver received goes into rustls; the
//! plaintext it yields is decoded straight from rustls's record buffer (no copy on our side);
//! the handler's output is encrypted into the session's send queue at the end of the turn, as
//! one batch. The handshake runs on the owning core before `on_open`.
//!
//! Crypto provider: `ring`. It builds with a C compiler alone (aws-lc-rs needs cmake and a
//! longer build on every fresh CI machine), and its AES-GCM and ChaCha20-Poly1305 are the same
//! hand-written assembly class as aws-lc's for the record layer, which is what a busy
//! connection spends its time in.

use std::sync::Arc;

pub use rustls;
use rustls::pki_types::{CertificateDer, InvalidDnsNameError, ServerName};

/// How an outbound connection speaks TLS: the rustls client configuration and the name the
/// server's certificate must carry (also sent as SNI).
#[derive(Clone, Debug)]
pub struct TlsConnect {
    /// The rustls client configuration (roots, client certificate, ALPN, resumption).
    pub config: Arc<rustls::ClientConfig>,
    /// The server's name, as its certificate carries it.
    pub server_name: ServerName<'static>,
}

impl TlsConnect {
    /// TLS to the server named `name` (a DNS name or an IP address) with `config`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<TlsConnect, InvalidDnsNameError> {
        Ok(TlsConnect {
            config,
            server_name: ServerName::try_from(name.to_owned())?,
        })
    }
}

/// What a session's handshake settled, for its handler ([`Session::tls`]).
///
/// [`Session::tls`]: crate::Session::tls
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version (TLS 1.3 or 1.2).
    pub version: Option<rustls::ProtocolVersion>,
    /// The cipher suite.
    pub cipher_suite: Option<rustls::CipherSuite>,
    /// The protocol ALPN chose, if any.
    pub alpn: Option<Vec<u8>>,
    /// The name the client asked for (SNI), on a server's session.
    pub server_name: Option<String>,
    /// The handshake resumed an earlier session (a ticket or the session cache).
    pub resumed: bool,
    /// The peer's certificate chain (a client's, under mutual TLS; the server's, on a
    /// connect), end entity first.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The kernel does the record layer (kTLS) rather than rustls in user space.
    pub kernel: bool,
}
