//! A TLS echo server for the tests whose sessions record what they saw: what each handshake
//! settled (`Session::tls` at `on_open`), the errors that reached `on_error` and each close's
//! reason, so a test checks them per session rather than only through the counters.
//!
//! Invariant: waits on what was recorded poll against [`super::SETTLE_TIMEOUT`].

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::Codec;
use ringwire::tls::{ServerTls, TlsInfo};
use ringwire::{CloseReason, Handler, Server, Session, SessionError};

use super::tls::Leaf;

/// What the sessions of a recording server saw, in the order they saw it.
#[derive(Debug, Default)]
pub struct Seen {
    /// `Session::tls` of each session at `on_open`.
    pub opened: Mutex<Vec<TlsInfo>>,
    /// Each error that reached `on_error`: rustls's error (`Debug`) for `SessionError::Tls`,
    /// else the error's text.
    pub errors: Mutex<Vec<String>>,
    /// Each close's reason.
    pub closes: Mutex<Vec<CloseReason>>,
}

impl Seen {
    /// The infos recorded so far.
    pub fn opened(&self) -> Vec<TlsInfo> {
        self.opened.lock().unwrap().clone()
    }

    /// The errors recorded so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// The close reasons recorded so far.
    pub fn closes(&self) -> Vec<CloseReason> {
        self.closes.lock().unwrap().clone()
    }

    /// Waits until `n` sessions have opened; returns their infos.
    pub fn wait_opened(&self, n: usize) -> Vec<TlsInfo> {
        wait_len("sessions to open", n, || self.opened())
    }

    /// Waits until `n` sessions have closed; returns the reasons.
    pub fn wait_closes(&self, n: usize) -> Vec<CloseReason> {
        wait_len("sessions to close", n, || self.closes())
    }
}

/// Polls `get` until it holds at least `n` items; fails after [`super::SETTLE_TIMEOUT`].
fn wait_len<T: std::fmt::Debug>(what: &str, n: usize, get: impl Fn() -> Vec<T>) -> Vec<T> {
    let deadline = Instant::now() + super::SETTLE_TIMEOUT;
    loop {
        let items = get();
        if items.len() >= n {
            return items;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {n} {what}; got {items:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Echoes every frame, and records into its server's [`Seen`]. With `greet`, `on_open`
/// first writes the peer's (the client's) first certificate, as a 4-byte big-endian length
/// and the DER (length 0 without one): proof that the handler sees what mutual TLS verified.
pub struct Recorder {
    seen: Arc<Seen>,
    greet: bool,
}

impl<C> Handler<C> for Recorder
where
    C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]>,
{
    fn on_open(&mut self, session: &mut Session<'_, C>) {
        let info = session
            .tls()
            .cloned()
            .expect("a TLS session opens with its TlsInfo");
        if self.greet {
            let cert = info
                .peer_certificates
                .first()
                .map_or(&[][..], |c| c.as_ref());
            session.write(&(cert.len() as u32).to_be_bytes());
            session.write(cert);
        }
        self.seen.opened.lock().unwrap().push(info);
    }

    fn on_message(&mut self, session: &mut Session<'_, C>, frame: &[u8]) {
        if session.send(frame).is_err() {
            session.close();
        }
    }

    fn on_error(&mut self, _session: &mut Session<'_, C>, error: &SessionError) {
        let text = match error {
            SessionError::Tls { error, .. } => format!("{error:?}"),
            other => other.to_string(),
        };
        self.seen.errors.lock().unwrap().push(text);
    }

    fn on_close(&mut self, _session: &mut Session<'_, C>, reason: CloseReason) {
        self.seen.closes.lock().unwrap().push(reason);
    }
}

/// A server (loopback, kernel-picked port, 1 core) serving TLS with `tls`, whose sessions
/// echo and record into the returned [`Seen`]; `greet` as for [`Recorder`].
pub fn recording<C>(codec: C, tls: ServerTls, greet: bool) -> (Server<C, Recorder>, Arc<Seen>)
where
    C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]> + Clone + Send,
{
    let seen = Arc::new(Seen::default());
    let recorded = seen.clone();
    let config = tls.build().expect("server TLS configuration");
    let server = Server::new(codec, move || Recorder {
        seen: recorded.clone(),
        greet,
    })
    .bind(super::any_port())
    .tls(config);
    (server, seen)
}

/// The server configuration for `leaf` (no ALPN, no client certificates, resumption on).
pub fn server_tls(leaf: &Leaf) -> ServerTls {
    ServerTls::from_pem(&leaf.cert_pem, &leaf.key_pem).expect("server certificate and key")
}

/// `info` on one line, certificates counted rather than dumped.
pub fn summary(info: &TlsInfo) -> String {
    format!(
        "{:?} {:?}, ALPN {:?}, SNI {:?}, resumed {}, {} peer certificate(s)",
        info.version,
        info.cipher_suite,
        info.alpn.as_deref().map(String::from_utf8_lossy),
        info.server_name,
        info.resumed,
        info.peer_certificates.len(),
    )
}
