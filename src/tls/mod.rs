//! TLS for servers and clients: rustls configurations built from PEM, and what a session's
//! handshake settled.
//!
//! A server serves TLS with [`Server::tls`](crate::Server::tls), given the configuration a
//! [`ServerTls`] builds; a client (or a handler's `CoreCtx::connect_tls`) speaks it with a
//! [`TlsConnect`], which [`ClientTls::connect`] makes.
//!
//! ```no_run
//! use ringwire::codec::Raw;
//! use ringwire::handlers::Echo;
//! use ringwire::tls::ServerTls;
//! use ringwire::Server;
//!
//! let tls = ServerTls::from_pem_files("cert.pem", "key.pem")?
//!     .alpn(["http/1.1"])
//!     .build()?;
//! Server::new(Raw, || Echo)
//!     .bind("127.0.0.1:8443".parse()?)
//!     .tls(tls)
//!     .run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What every configuration built here shares, and a reader must keep:
//!
//! - Crypto is rustls's aws-lc-rs provider, named explicitly (never the process-wide default,
//!   so another crate installing a different one does not change what ringwire does), with
//!   TLS 1.3 and TLS 1.2, and the hybrid post-quantum key exchange X25519MLKEM768 preferred.
//! - Session resumption is on: a returning client skips the certificate exchange and the
//!   signature, most of a full handshake's cost.
//! - A server's traffic secrets are extractable (`enable_secret_extraction`) only where the
//!   kernel offers kernel TLS, so that the engine can hand them to it after the handshake
//!   (see [`Server::kernel_tls`](crate::Server::kernel_tls)); a client's never are.
//! - Bad input is reported by [`TlsConfigError`], naming the file or the PEM it was found in.
//!   Builder methods that take input record the first error they meet and `build` returns it,
//!   so a chain of calls reads without a `?` on each.

mod client;
mod error;
mod pem;
mod server;
#[cfg(test)]
mod tests;

pub use client::ClientTls;
pub use error::TlsConfigError;
/// Whether the kernel offers kernel TLS (probed once per process), or why not.
pub use ringwire_runtime::probe::kernel_tls;
pub use ringwire_runtime::tls::{rustls, TlsConnect, TlsInfo};
pub use server::ServerTls;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::SupportedProtocolVersion;

/// The protocol versions every configuration here offers, most preferred first.
const VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider of every configuration here: aws-lc-rs (runtime/src/tls.rs says why).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// ALPN protocol names as rustls takes them; a name must be 1 to 255 bytes (RFC 7301).
fn alpn_names<I, P>(protocols: I) -> Result<Vec<Vec<u8>>, TlsConfigError>
where
    I: IntoIterator<Item = P>,
    P: AsRef<[u8]>,
{
    protocols
        .into_iter()
        .map(|p| {
            let name = p.as_ref();
            match name.len() {
                1..=255 => Ok(name.to_vec()),
                _ => Err(TlsConfigError::BadAlpn {
                    protocol: name.to_vec(),
                }),
            }
        })
        .collect()
}
