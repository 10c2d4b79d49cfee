//! Temporary smoke test of the engine's TLS path.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use ringwire::codec::Raw;
use ringwire::handlers::Echo;
use ringwire::tls::rustls;
use ringwire::Server;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

#[test]
fn echo_over_tls() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let scfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let server = Server::new(Raw, || Echo).tls(scfg).start().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let ccfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(ccfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(server.local_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let data: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut back = vec![0u8; data.len()];
    std::thread::scope(|s| {
        // Writes and reads on one stream: interleave in pieces.
        let mut sent = 0;
        let mut got = 0;
        while got < data.len() {
            if sent < data.len() {
                let n = (data.len() - sent).min(4093);
                tls.write_all(&data[sent..sent + n]).unwrap();
                sent += n;
            }
            if sent == data.len() || sent - got > 64 * 1024 {
                let n = tls.read(&mut back[got..]).unwrap();
                assert!(n > 0);
                got += n;
            }
        }
        let _ = s;
    });
    assert!(back == data);
    let stats = server.stats();
    eprintln!("{stats:?}");
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    let r = tls.read_to_end(&mut rest);
    eprintln!("end: {r:?}");
    server.shutdown(Duration::from_secs(1)).unwrap();
}
