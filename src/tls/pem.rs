//! Certificates and keys from PEM (rustls-pki-types' own parser), with the input named in
//! every error.
//!
//! Invariant: a certificate and key pair leaves here only as a [`CertifiedKey`] whose key was
//! checked against the certificate, so a mismatched pair fails at start-up, not on the first
//! handshake.

use std::path::Path;
use std::sync::Arc;

use super::{rustls, TlsConfigError};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{Error, InconsistentKeys, RootCertStore};

/// The bytes of the file at `path`.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|error| TlsConfigError::Io {
        path: path.to_owned(),
        error,
    })
}

/// Every certificate in `pem`, in order (a chain: end entity first); at least one.
pub(super) fn certs(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad_pem(what, error))?;
    match certs.is_empty() {
        true => Err(TlsConfigError::NoCertificate { what: what.into() }),
        false => Ok(certs),
    }
}

/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub(super) fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsConfigError::NoPrivateKey { what: what.into() },
        error => bad_pem(what, error),
    })
}

/// A trust store of every certificate in `pem`; at least one, each well-formed.
pub(super) fn roots(pem: &[u8], what: &str) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    add_roots(&mut roots, pem, what)?;
    Ok(roots)
}

/// Adds every certificate in `pem` to `roots`; at least one, each well-formed.
pub(super) fn add_roots(
    roots: &mut RootCertStore,
    pem: &[u8],
    what: &str,
) -> Result<(), TlsConfigError> {
    for cert in certs(pem, what)? {
        roots
            .add(cert)
            .map_err(|error| TlsConfigError::BadCertificate {
                what: what.into(),
                error,
            })?;
    }
    Ok(())
}

/// The certificate chain in `cert_pem` with the key in `key_pem`, the key checked against the
/// chain's first certificate. `cert_what` and `key_what` name the two inputs.
pub(super) fn certified_key(
    cert_pem: &[u8],
    cert_what: &str,
    key_pem: &[u8],
    key_what: &str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsConfigError> {
    let chain = certs(cert_pem, cert_what)?;
    let key = key(key_pem, key_what)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsConfigError::BadPrivateKey {
            what: key_what.into(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // As rustls's own `CertifiedKey::from_der`: a key that cannot tell its public half
    // (`Unknown`) is taken on trust; the ring provider's keys all can.
    match certified.keys_match() {
        Ok(()) | Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsConfigError::KeyMismatch {
                cert: cert_what.into(),
                key: key_what.into(),
            })
        }
        Err(error) => Err(TlsConfigError::BadCertificate {
            what: cert_what.into(),
            error,
        }),
    }
}

fn bad_pem(what: &str, error: pem::Error) -> TlsConfigError {
    TlsConfigError::BadPem {
        what: what.into(),
        error,
    }
}
