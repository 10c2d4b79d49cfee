//! Certificates for TLS tests, made with rcgen: a throw-away CA and leaf certificates it
//! signs (servers for some DNS names or IP addresses, clients for mutual TLS), as PEM bytes
//! and as PEM files in a folder of their own, for tests that start the examples, curl or
//! openssl. The library's unit tests include this file too (src/tls/tests.rs), so it uses
//! only rcgen and rustls, nothing else of this folder.
//!
//! Invariant: each `Pki` writes only under its own folder, which it removes when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// A CA for one test, and the folder its files go in.
pub struct Pki {
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// The CA certificate's file (`ca.pem`).
    pub ca_path: PathBuf,
}

/// A certificate the CA signed, with its private key.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: Vec<u8>,
    /// Its private key (ECDSA P-256, PKCS#8), PEM.
    pub key_pem: Vec<u8>,
    /// The certificate, DER, to compare with what a peer presented.
    pub cert_der: CertificateDer<'static>,
    /// The certificate's file (`<stem>.pem`).
    pub cert_path: PathBuf,
    /// The key's file (`<stem>.key`).
    pub key_path: PathBuf,
}

impl Pki {
    /// A new CA, named after `tag`, with its certificate written to `ca.pem` in a new folder
    /// under the system's temporary directory.
    pub fn new(tag: &str) -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ringwire-tls-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!("ringwire test CA {tag}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = issuer.pem().into_bytes();
        let ca_path = write(&dir, "ca.pem", &ca_pem);
        Pki {
            dir,
            issuer,
            ca_pem,
            ca_path,
        }
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server certificate for `names` (DNS names or IP addresses), written to
    /// `<stem>.pem` and `<stem>.key`.
    pub fn server(&self, stem: &str, names: &[&str]) -> Leaf {
        self.leaf(stem, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (mutual TLS) for `name`, written to `<stem>.pem` and
    /// `<stem>.key`.
    pub fn client(&self, stem: &str, name: &str) -> Leaf {
        self.leaf(stem, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, stem: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name = common_name(&names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_pem = cert.pem().into_bytes();
        let key_pem = key.serialize_pem().into_bytes();
        Leaf {
            cert_path: write(&self.dir, &format!("{stem}.pem"), &cert_pem),
            key_path: write(&self.dir, &format!("{stem}.key"), &key_pem),
            cert_der: cert.der().clone(),
            cert_pem,
            key_pem,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}
