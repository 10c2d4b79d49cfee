//! What can be wrong with the input of a TLS configuration: each error names the file or the
//! PEM it was found in (`what`), so a server that refuses to start says which flag to fix.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::rustls;
use rustls::pki_types::pem;
use rustls::server::VerifierBuilderError;

/// Why a TLS configuration could not be built.
///
/// `what` fields name the input: a file's path, or a description such as "the certificate
/// PEM" for bytes passed in.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The input holds no `CERTIFICATE` section.
    NoCertificate {
        /// The input.
        what: String,
    },
    /// The input holds no private key section (`PRIVATE KEY`, `RSA PRIVATE KEY` or
    /// `EC PRIVATE KEY`).
    NoPrivateKey {
        /// The input.
        what: String,
    },
    /// The input is not well-formed PEM (a missing end line, bad base64, ...).
    BadPem {
        /// The input.
        what: String,
        /// What the PEM parser said.
        error: pem::Error,
    },
    /// A certificate that is not a well-formed X.509 certificate.
    BadCertificate {
        /// The input it came from.
        what: String,
        /// What rustls said.
        error: rustls::Error,
    },
    /// A private key the crypto provider cannot use (malformed, or an unsupported algorithm).
    BadPrivateKey {
        /// The input it came from.
        what: String,
        /// What rustls said.
        error: rustls::Error,
    },
    /// The private key is not the one the certificate was issued for.
    KeyMismatch {
        /// Where the certificate came from.
        cert: String,
        /// Where the key came from.
        key: String,
    },
    /// Not a valid server name: a DNS name (for SNI) or, to connect, a DNS name or an IP
    /// address.
    BadName {
        /// The name as given.
        name: String,
    },
    /// The certificate given for an SNI name is not valid for that name.
    NameMismatch {
        /// The SNI name.
        name: String,
        /// What the name check said.
        error: rustls::Error,
    },
    /// The same SNI name was given two certificates.
    DuplicateName {
        /// The SNI name.
        name: String,
    },
    /// An ALPN protocol name that is empty or longer than 255 bytes.
    BadAlpn {
        /// The name as given.
        protocol: Vec<u8>,
    },
    /// A client configuration without any trusted root certificate.
    NoRoots,
    /// The client-certificate verifier (mutual TLS) could not be built.
    ClientVerifier(VerifierBuilderError),
    /// rustls refused the configuration.
    Rustls(rustls::Error),
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfigError::Io { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            TlsConfigError::NoCertificate { what } => write!(f, "no certificate in {what}"),
            TlsConfigError::NoPrivateKey { what } => write!(f, "no private key in {what}"),
            TlsConfigError::BadPem { what, error } => write!(f, "malformed PEM in {what}: {error}"),
            TlsConfigError::BadCertificate { what, error } => {
                write!(f, "bad certificate in {what}: {error}")
            }
            TlsConfigError::BadPrivateKey { what, error } => {
                write!(f, "unusable private key in {what}: {error}")
            }
            TlsConfigError::KeyMismatch { cert, key } => write!(
                f,
                "the private key in {key} does not match the certificate in {cert}"
            ),
            TlsConfigError::BadName { name } => write!(f, "{name:?} is not a valid server name"),
            TlsConfigError::NameMismatch { name, error } => write!(
                f,
                "the certificate for SNI name {name:?} is not valid for that name: {error}"
            ),
            TlsConfigError::DuplicateName { name } => {
                write!(f, "SNI name {name:?} was given two certificates")
            }
            TlsConfigError::BadAlpn { protocol } => write!(
                f,
                "ALPN protocol name {:?} is {} bytes; names are 1 to 255 bytes",
                String::from_utf8_lossy(protocol),
                protocol.len()
            ),
            TlsConfigError::NoRoots => f.write_str(
                "no trusted root certificate (add one with ClientTls::root_pem or root_pem_file)",
            ),
            TlsConfigError::ClientVerifier(e) => {
                write!(f, "cannot build the client certificate verifier: {e}")
            }
            TlsConfigError::Rustls(e) => write!(f, "rustls refused the configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsConfigError::Io { error, .. } => Some(error),
            TlsConfigError::BadPem { error, .. } => Some(error),
            TlsConfigError::BadCertificate { error, .. }
            | TlsConfigError::BadPrivateKey { error, .. }
            | TlsConfigError::NameMismatch { error, .. }
            | TlsConfigError::Rustls(error) => Some(error),
            TlsConfigError::ClientVerifier(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for TlsConfigError {
    fn from(e: rustls::Error) -> Self {
        TlsConfigError::Rustls(e)
    }
}

/// A file that cannot be read keeps its error kind; anything else is bad input.
impl From<TlsConfigError> for io::Error {
    fn from(e: TlsConfigError) -> io::Error {
        let kind = match &e {
            TlsConfigError::Io { error, .. } => error.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}
