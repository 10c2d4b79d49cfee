//! [`ServerTls`]: a server's rustls configuration from PEM, with certificates chosen by SNI,
//! ALPN, client certificates (mutual TLS) and session resumption.
//!
//! Invariant: the configuration always has a certificate to present. A client that sends no
//! SNI, or a name no `.sni` certificate was given for, gets the default one (see
//! [`SniResolver`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{alpn_names, pem, provider, rustls, TlsConfigError, VERSIONS};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{DnsName, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert,
    ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Sessions the stateful resumption cache keeps by default (rustls's own default).
const SESSION_CACHE: usize = 256;

/// Builds a server's rustls configuration, for [`Server::tls`](crate::Server::tls).
///
/// What it builds, unless told otherwise: TLS 1.3 and 1.2 on the aws-lc-rs provider; the
/// default certificate for every client; no ALPN; no client certificates; resumption by
/// tickets and by a session cache of 256 entries.
///
/// Methods that take input check it at once; a bad one is recorded and [`ServerTls::build`]
/// returns the first such error.
#[derive(Debug)]
pub struct ServerTls {
    provider: Arc<CryptoProvider>,
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
    alpn: Vec<Vec<u8>>,
    client_auth: Option<ClientAuth>,
    session_cache: usize,
    tickets: bool,
    error: Option<TlsConfigError>,
}

/// Client certificates: the CAs that may issue them, and whether a client must present one.
#[derive(Debug)]
struct ClientAuth {
    roots: RootCertStore,
    required: bool,
}

impl ServerTls {
    /// The certificate chain in the PEM file `cert_path` (end entity first, then the
    /// intermediates) with the private key in `key_path` (PKCS#8, PKCS#1 or SEC1). One file
    /// holding both works too. Fails if a file cannot be read, holds no certificate or no
    /// key, or the key is not the certificate's.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<ServerTls, TlsConfigError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let provider = provider();
        let default = pem::certified_key(
            &pem::read(cert_path)?,
            &cert_path.display().to_string(),
            &pem::read(key_path)?,
            &key_path.display().to_string(),
            &provider,
        )?;
        Ok(ServerTls::with_default(provider, default))
    }

    /// As [`ServerTls::from_pem_files`], from PEM bytes.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerTls, TlsConfigError> {
        let provider = provider();
        let default = pem::certified_key(
            cert_pem,
            "the certificate PEM",
            key_pem,
            "the private key PEM",
            &provider,
        )?;
        Ok(ServerTls::with_default(provider, default))
    }

    fn with_default(provider: Arc<CryptoProvider>, default: Arc<CertifiedKey>) -> ServerTls {
        ServerTls {
            provider,
            default,
            by_name: HashMap::new(),
            alpn: Vec::new(),
            client_auth: None,
            session_cache: SESSION_CACHE,
            tickets: true,
            error: None,
        }
    }

    /// Presents this certificate chain (with its key) to clients that ask for `name` by SNI,
    /// instead of the default one. `name` is a DNS name, matched exactly but for case; it
    /// cannot be a pattern such as `*.example.com` (give each name its own call: the
    /// certificate itself may be a wildcard one). The certificate must be valid for `name`,
    /// and the key must be the certificate's.
    pub fn sni(mut self, name: &str, cert_pem: &[u8], key_pem: &[u8]) -> ServerTls {
        if let Err(e) = self.add_sni(name, cert_pem, key_pem) {
            self.error.get_or_insert(e);
        }
        self
    }

    fn add_sni(
        &mut self,
        name: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<(), TlsConfigError> {
        let dns = DnsName::try_from(name)
            .map_err(|_| TlsConfigError::BadName { name: name.into() })?
            .to_lowercase_owned();
        let cert_what = format!("the certificate PEM for {name}");
        let key_what = format!("the private key PEM for {name}");
        let key = pem::certified_key(cert_pem, &cert_what, key_pem, &key_what, &self.provider)?;
        let cert = ParsedCertificate::try_from(&key.cert[0]).map_err(|error| {
            TlsConfigError::BadCertificate {
                what: cert_what,
                error,
            }
        })?;
        rustls::client::verify_server_name(&cert, &ServerName::DnsName(dns.clone())).map_err(
            |error| TlsConfigError::NameMismatch {
                name: name.into(),
                error,
            },
        )?;
        let dns = dns.as_ref().to_owned();
        if self.by_name.contains_key(&dns) {
            return Err(TlsConfigError::DuplicateName { name: name.into() });
        }
        self.by_name.insert(dns, key);
        Ok(())
    }

    /// The application protocols the server speaks (ALPN), most preferred first, e.g.
    /// `["h2", "http/1.1"]`. A client that offers ALPN but none of these is refused (RFC
    /// 7301); one that offers none is served. Replaces an earlier list.
    pub fn alpn<I, P>(mut self, protocols: I) -> ServerTls
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

    /// Asks clients for a certificate issued by one of the CAs in `ca_pem` (mutual TLS).
    ///
    /// With `required`, a client without one is refused. Without, it is served, and its
    /// session has no peer certificate
    /// ([`TlsInfo::peer_certificates`](super::TlsInfo::peer_certificates) is empty); a
    /// certificate that is presented must still verify. Replaces an earlier call's CAs.
    pub fn client_auth(mut self, ca_pem: &[u8], required: bool) -> ServerTls {
        match pem::roots(ca_pem, "the client CA PEM") {
            Ok(roots) => self.client_auth = Some(ClientAuth { roots, required }),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// How many sessions the stateful resumption cache keeps (default 256); 0 turns it off.
    ///
    /// The cache serves TLS 1.2 clients that do not take tickets, and TLS 1.3 resumption
    /// when tickets are off. It is one map behind a lock, shared by every core: with tickets
    /// on, most resumptions never touch it.
    pub fn session_cache(mut self, sessions: usize) -> ServerTls {
        self.session_cache = sessions;
        self
    }

    /// Whether to resume sessions with stateless tickets (default: yes). Their keys are
    /// random, made when [`ServerTls::build`] runs and rotated every 6 hours, so tickets
    /// outlive neither the process nor 12 hours, and two processes sharing a port do not
    /// accept each other's.
    pub fn tickets(mut self, on: bool) -> ServerTls {
        self.tickets = on;
        self
    }

    /// The rustls configuration, or the first error a method above recorded.
    pub fn build(self) -> Result<Arc<ServerConfig>, TlsConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let verifier: Arc<dyn ClientCertVerifier> = match self.client_auth {
            None => Arc::new(rustls::server::NoClientAuth),
            Some(auth) => {
                let builder = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(auth.roots),
                    self.provider.clone(),
                );
                let builder = match auth.required {
                    true => builder,
                    false => builder.allow_unauthenticated(),
                };
                builder.build().map_err(TlsConfigError::ClientVerifier)?
            }
        };
        let resolver = SniResolver {
            default: self.default,
            by_name: self.by_name,
        };
        let mut config = ServerConfig::builder_with_provider(self.provider)
            .with_protocol_versions(VERSIONS)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = self.alpn;
        config.session_storage = match self.session_cache {
            0 => Arc::new(NoServerSessionStorage {}),
            n => ServerSessionMemoryCache::new(n),
        };
        if self.tickets {
            config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        }
        // The engine hands sessions' keys to the kernel where it offers kernel TLS; elsewhere
        // they stay in rustls, which need not let them out.
        config.enable_secret_extraction = ringwire_runtime::probe::kernel_tls().is_ok();
        Ok(Arc::new(config))
    }
}

/// Picks the certificate for a client's SNI name, falling back to the default one when the
/// client sent no name or one that has no certificate of its own.
///
/// rustls's `ResolvesServerCertUsingSni` refuses such a client instead. That would refuse
/// every client that reaches the server by IP address (SNI cannot carry one), health checks,
/// and clients that send a name the operator did not list; a fallback is what web servers
/// do (nginx's `default_server`), and it is the client's own check of the name that decides.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    /// By lowercase name: rustls lowercases the client's SNI before it gets here.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello.server_name().and_then(|name| self.by_name.get(name));
        Some(named.unwrap_or(&self.default).clone())
    }
}
