//! TLS sessions: rustls between the socket and the codec.
//!
//! A TLS session is a session like any other (same codec, handler and `Session`), with a
//! rustls connection in its state. Ciphertext the driver received goes into rustls, which
//! decrypts each record and keeps its plaintext in a buffer of its own; the codec decodes from
//! there, with no copy on our side. The handler's output is encrypted into the session's send
//! queue at the end of the turn, as one batch. rustls allocates one buffer per record each way
//! (0.23.48: its encrypter returns an owned record, and a decrypted record's plaintext is moved
//! to a buffer of its own): two allocations per request and reply of one record each, shared by
//! every frame a record carries (tests/tls_alloc.rs measures it); the engine adds none. The handshake runs on the owning core before `on_open`. Where the kernel offers
//! kernel TLS, an accepted session's record layer goes to it afterwards (`ktls.rs`).
//!
//! Crypto provider: aws-lc-rs, rustls's default. It has the hybrid post-quantum key exchange
//! (X25519MLKEM768, preferred) that rustls 0.23.48 deprecated the `ring` provider for lacking,
//! and assembly AES-GCM and ChaCha20-Poly1305 for the record layer, where a busy connection
//! spends its time. It costs about a minute of C build on a fresh machine (no cmake needed).

use std::io::Write;
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::{CertificateDer, InvalidDnsNameError, ServerName};

use crate::output::Output;
use crate::pool::BufPool;

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
    /// connect), end entity first; empty if the peer sent none.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The kernel does the record layer (kTLS) rather than rustls in user space. Set once the
    /// handover is done, which is after `on_open` (at the end of a later loop turn).
    pub kernel: bool,
}

/// Bytes of room a chunk of sealed records is taken with: a whole record (16 KiB of
/// plaintext) and its header, content type and tag.
const SEALED_CHUNK: usize = 16 * 1024 + 64;

/// A session's rustls connection, as its core drives it: ciphertext in with
/// [`read_tls`](TlsSession::read_tls) and [`process`](TlsSession::process), plaintext out
/// with [`plaintext`](TlsSession::plaintext) (borrowed from rustls's buffer, no copy), and
/// the handler's output sealed into the session's send queue with [`seal`](TlsSession::seal).
pub(crate) struct TlsSession {
    conn: rustls::Connection,
    /// The handshake is done (and `on_open` ran or is running).
    pub(crate) opened: bool,
    /// A close_notify was queued: nothing more is sealed.
    closing: bool,
    /// rustls failed (a bad record, a failed handshake): nothing more is sealed but the alert
    /// it queued.
    pub(crate) failed: bool,
    /// The peer's record stream: the current record's header bytes seen so far, and what is
    /// left of its body. Says whether rustls holds part of a record (a frame has begun).
    header: [u8; 5],
    header_len: u8,
    body_left: usize,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("closing", &self.closing)
            .field("failed", &self.failed)
            .finish()
    }
}

impl TlsSession {
    /// The server side of an accepted connection.
    pub(crate) fn server(config: &Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        let conn = rustls::ServerConnection::new(Arc::clone(config))?;
        Ok(Self::new(conn.into()))
    }

    /// The client side of a connect; its ClientHello is queued at once.
    pub(crate) fn client(connect: &TlsConnect) -> Result<Self, rustls::Error> {
        let conn = rustls::ClientConnection::new(
            Arc::clone(&connect.config),
            connect.server_name.clone(),
        )?;
        Ok(Self::new(conn.into()))
    }

    fn new(conn: rustls::Connection) -> Self {
        TlsSession {
            conn,
            opened: false,
            closing: false,
            failed: false,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Follows the record framing of ciphertext about to go into rustls.
    pub(crate) fn track(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                continue;
            }
            let have = self.header_len as usize;
            let n = (5 - have).min(data.len());
            self.header[have..have + n].copy_from_slice(&data[..n]);
            self.header_len += n as u8;
            data = &data[n..];
            if self.header_len == 5 {
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                self.header_len = 0;
            }
        }
    }

    /// The peer has sent part of a record and not the rest.
    pub(crate) fn mid_record(&self) -> bool {
        self.header_len > 0 || self.body_left > 0
    }

    /// The handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Moves ciphertext from `rest` into rustls (advancing `rest`); rustls takes what fits in
    /// its record buffer.
    pub(crate) fn read_tls(&mut self, rest: &mut &[u8]) -> std::io::Result<usize> {
        self.conn.read_tls(rest)
    }

    /// Decrypts and processes the records rustls holds.
    pub(crate) fn process(&mut self) -> Result<rustls::IoState, rustls::Error> {
        self.conn.process_new_packets()
    }

    /// The next piece of decrypted plaintext, borrowed from rustls's buffer; `None` when
    /// there is none. Hand back what was used with [`consume`](TlsSession::consume).
    pub(crate) fn plaintext(&mut self) -> Option<&[u8]> {
        match self.conn.reader().into_first_chunk() {
            Ok(chunk) if !chunk.is_empty() => Some(chunk),
            _ => None,
        }
    }

    /// `n` bytes of the plaintext were handled.
    pub(crate) fn consume(&mut self, n: usize) {
        std::io::BufRead::consume(&mut self.conn.reader(), n);
    }

    /// What the handshake settled.
    pub(crate) fn info(&self) -> TlsInfo {
        let (server_name, resumed) = match &self.conn {
            rustls::Connection::Server(s) => (s.server_name().map(str::to_owned), false),
            rustls::Connection::Client(_) => (None, false),
        };
        let resumed = resumed || self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        TlsInfo {
            version: self.conn.protocol_version(),
            cipher_suite: self.conn.negotiated_cipher_suite().map(|s| s.suite()),
            alpn: self.conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name,
            resumed,
            peer_certificates: self
                .conn
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
            kernel: false,
        }
    }

    /// Moves the records rustls has queued (handshake messages, alerts, tickets) into the
    /// session's send queue.
    pub(crate) fn flush_records(
        &mut self,
        out: &mut Output,
        pool: &mut BufPool,
    ) -> std::io::Result<()> {
        while self.conn.wants_write() {
            if out.push_sealed(pool, SEALED_CHUNK, |dst| self.conn.write_tls(dst))? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Seals the plaintext ready in `out` (once the handshake allows application data) and
    /// moves every record into its send queue, oldest first. rustls takes plaintext up to
    /// its buffer limit at a time; the records are moved out before it takes more.
    ///
    /// Once closing (a close_notify sent) or failed, nothing more can be sealed: plaintext
    /// produced after that (an `on_error` reply, a tick's output) is dropped, so the session
    /// can finish closing.
    pub(crate) fn seal(&mut self, out: &mut Output, pool: &mut BufPool) -> std::io::Result<()> {
        if self.closing || self.failed {
            out.discard_plain(pool);
            return self.flush_records(out, pool);
        }
        loop {
            let mut took = 0;
            if !self.conn.is_handshaking() && !self.closing && !self.failed {
                took = out.seal_plain(pool, |plain| self.conn.writer().write(plain))?;
            }
            self.flush_records(out, pool)?;
            if took == 0 {
                return Ok(());
            }
        }
    }

    /// Moves what rustls parked to send (a KeyUpdate answering the peer's, which it queues
    /// apart from its other records) into its queue of records; `true` if it has records to
    /// send, which must reach the wire before a handover.
    pub(crate) fn settle_writes(&mut self) -> bool {
        let _ = self.conn.writer().write(&[]);
        self.conn.wants_write()
    }

    /// Whether the session can go to the kernel now (see [`crate::ktls`]): a server's, open,
    /// not closing or failed, nothing rustls holds to send, no part of the peer's record
    /// held, and a version and cipher suite the kernel takes.
    pub(crate) fn may_hand_over(&self) -> bool {
        self.kernel_can_take()
            && self.opened
            && !self.closing
            && !self.failed
            && !self.conn.wants_write()
            && !self.mid_record()
    }

    /// Whether the kernel could ever take the session: a server's, with a version and cipher
    /// suite it took keys for at the probe (settled once the handshake is done).
    pub(crate) fn kernel_can_take(&self) -> bool {
        let takes = match (
            self.conn.protocol_version(),
            self.conn.negotiated_cipher_suite(),
        ) {
            (Some(version), Some(suite)) => crate::ktls::supported(version, suite.suite()),
            _ => false,
        };
        matches!(self.conn, rustls::Connection::Server(_)) && takes
    }

    /// Whether the session can never go to the kernel (it is closing or failed).
    pub(crate) fn is_ending(&self) -> bool {
        self.closing || self.failed
    }

    /// Takes the traffic secrets out of rustls, in the kernel's form: transmit, then receive.
    /// Consumes the connection: rustls can do nothing for the session afterwards.
    pub(crate) fn into_kernel(
        self,
    ) -> Result<(crate::ktls::CryptoInfo, crate::ktls::CryptoInfo), String> {
        let version = self.conn.protocol_version().ok_or("no protocol version")?;
        let secrets = match self.conn {
            rustls::Connection::Server(s) => s.dangerous_extract_secrets(),
            rustls::Connection::Client(c) => c.dangerous_extract_secrets(),
        }
        .map_err(|e| e.to_string())?;
        let (tx_seq, tx) = &secrets.tx;
        let (rx_seq, rx) = &secrets.rx;
        let tx = crate::ktls::CryptoInfo::new(version, *tx_seq, tx);
        let rx = crate::ktls::CryptoInfo::new(version, *rx_seq, rx);
        tx.zip(rx)
            .ok_or_else(|| "a cipher the kernel does not take".to_owned())
    }

    /// Queues a close_notify if the session is open and has not sent one (nor failed):
    /// `true` if it did, and the caller flushes it before closing.
    pub(crate) fn close_notify(&mut self) -> bool {
        if !self.opened || self.closing || self.failed {
            return false;
        }
        self.closing = true;
        self.conn.send_close_notify();
        true
    }
}
