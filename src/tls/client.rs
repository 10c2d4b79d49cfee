//! [`ClientTls`]: a client's rustls configuration from PEM, for [`Client::tls`] and
//! `CoreCtx::connect_tls`: the roots it trusts, its own certificate for mutual TLS, ALPN.
//!
//! Invariant: a configuration trusts only the roots it was given. There is no fallback to
//! the system's store or to a bundled one, so a client never trusts more than its operator
//! listed.
//!
//! [`Client::tls`]: crate::Client::tls

use std::path::Path;
use std::sync::Arc;

use super::{alpn_names, pem, provider, rustls, TlsConfigError, TlsConnect, VERSIONS};
use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore};

/// Builds a client's rustls configuration.
///
/// What it builds, unless told otherwise: TLS 1.3 and 1.2 on the aws-lc-rs provider; the
/// server's certificate must chain to a root given with [`ClientTls::root_pem`] or
/// [`ClientTls::root_pem_file`] (at least one is required); no client certificate; no ALPN;
/// resumption with rustls's in-memory session store (256 servers).
///
/// Methods that take input check it at once; a bad one is recorded and [`ClientTls::build`]
/// returns the first such error.
///
/// ```no_run
/// use ringwire::tls::ClientTls;
///
/// let connect = ClientTls::new()
///     .root_pem_file("ca.pem")
///     .alpn(["http/1.1"])
///     .connect("localhost")?;
/// # Ok::<(), ringwire::tls::TlsConfigError>(())
/// ```
#[derive(Debug)]
pub struct ClientTls {
    provider: Arc<CryptoProvider>,
    roots: RootCertStore,
    cert: Option<Arc<CertifiedKey>>,
    alpn: Vec<Vec<u8>>,
    error: Option<TlsConfigError>,
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls::new()
    }
}

impl ClientTls {
    /// A configuration that trusts nothing yet: add roots.
    pub fn new() -> ClientTls {
        ClientTls {
            provider: provider(),
            roots: RootCertStore::empty(),
            cert: None,
            alpn: Vec::new(),
            error: None,
        }
    }

    /// Trusts the CA certificates in `ca_pem` (every `CERTIFICATE` section; at least one).
    /// Adds to the roots given before.
    pub fn root_pem(mut self, ca_pem: &[u8]) -> ClientTls {
        if let Err(e) = pem::add_roots(&mut self.roots, ca_pem, "the root PEM") {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Trusts the CA certificates in the PEM file at `path`, as [`ClientTls::root_pem`].
    pub fn root_pem_file(mut self, path: impl AsRef<Path>) -> ClientTls {
        let path = path.as_ref();
        let added = pem::read(path).and_then(|ca_pem| {
            pem::add_roots(&mut self.roots, &ca_pem, &path.display().to_string())
        });
        if let Err(e) = added {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Presents this certificate chain (end entity first) when the server asks for one
    /// (mutual TLS), signing with the private key in `key_pem`, which must match it.
    pub fn client_cert(mut self, cert_pem: &[u8], key_pem: &[u8]) -> ClientTls {
        let key = pem::certified_key(
            cert_pem,
            "the client certificate PEM",
            key_pem,
            "the client private key PEM",
            &self.provider,
        );
        match key {
            Ok(key) => self.cert = Some(key),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// The application protocols to offer (ALPN), most preferred first. Replaces an earlier
    /// list.
    pub fn alpn<I, P>(mut self, protocols: I) -> ClientTls
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        match alpn_names(protocols) {
            Ok(names) => self.alpn = names,
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// The rustls configuration, or the first error a method above recorded.
    pub fn build(self) -> Result<Arc<ClientConfig>, TlsConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.roots.is_empty() {
            return Err(TlsConfigError::NoRoots);
        }
        let builder = ClientConfig::builder_with_provider(self.provider)
            .with_protocol_versions(VERSIONS)?
            .with_root_certificates(self.roots);
        let mut config = match self.cert {
            Some(key) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        Ok(Arc::new(config))
    }

    /// Builds the configuration and names the server to reach with it: a DNS name (sent as
    /// SNI, and which the server's certificate must carry) or an IP address.
    pub fn connect(self, name: &str) -> Result<TlsConnect, TlsConfigError> {
        TlsConnect::new(self.build()?, name)
            .map_err(|_| TlsConfigError::BadName { name: name.into() })
    }
}
