//! The TLS examples' services against real TLS clients built on OpenSSL: curl over https
//! against the http service (ALPN http/1.1, keep-alive), `openssl s_client` against an echo
//! server (TLS 1.3 and 1.2, the chain verified), and `redis-cli --tls` against the kv service.
//! The services are the examples' own (examples/http/service.rs, examples/kv/service.rs),
//! started in-process with the TLS configuration the examples build from `--tls-cert` and
//! `--tls-key`.
//!
//! The clients must be installed (scripts/install-test-deps.sh); a missing one, or a
//! redis-cli built without TLS, fails loudly.

mod protocols;
mod util;

#[allow(dead_code)]
#[path = "../examples/http/service.rs"]
mod web;

#[allow(dead_code)]
#[path = "../examples/kv/service.rs"]
mod kv;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use protocols::{run, Output};
use ringwire::codec::http::{self, Http};
use ringwire::codec::resp::Resp;
use ringwire::codec::Raw;
use ringwire::tls::{rustls, ServerTls};
use ringwire::{CloseReason, Server};
use util::tls::Pki;
use util::tls_echo::{self, recording};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The http example's service over TLS, offering ALPN http/1.1 as the example does.
fn https_server(pki: &Pki) -> util::Running {
    let leaf = pki.server("server", &["localhost"]);
    let tls = ServerTls::from_pem_files(&leaf.cert_path, &leaf.key_path)
        .unwrap()
        .alpn(["http/1.1"])
        .build()
        .unwrap();
    let server = Server::new(Http::default(), web::Web::default)
        .bind(util::any_port())
        .on_core_tick(Duration::from_millis(500), |_| http::refresh_date())
        .tls(tls);
    util::start(server)
}

/// curl with a time bound and no retries, resolving `localhost` at `port` to loopback.
fn curl(port: u16, args: &[&str]) -> Output {
    let resolve = format!("localhost:{port}:127.0.0.1");
    let mut all = vec![
        "-sS",
        "--max-time",
        "20",
        "--noproxy",
        "*",
        "--resolve",
        &resolve,
    ];
    all.extend_from_slice(args);
    run("curl", &all, b"", CLIENT_TIMEOUT)
}

#[test]
fn curl_gets_https_with_alpn_and_keep_alive() {
    let pki = Pki::new("curl");
    let server = https_server(&pki);
    let port = server.addr().port();
    let url = format!("https://localhost:{port}/");
    let ca = pki.ca_path.to_str().unwrap();

    // Two URLs in one curl: one connection, one handshake, two responses.
    let out = curl(
        port,
        &[
            "-v",
            "--http1.1",
            "--cacert",
            ca,
            "-w",
            "|%{http_code}|%{http_version}\n",
            &url,
            &url,
        ],
    )
    .success();
    let hello = String::from_utf8_lossy(web::HELLO);
    assert_eq!(out.stdout, format!("{hello}|200|1.1\n").repeat(2));
    for wanted in [
        "SSL certificate verify ok",
        "ALPN: server accepted http/1.1",
        "Re-using existing connection",
    ] {
        assert!(
            out.stderr.contains(wanted),
            "no {wanted:?} in\n{}",
            out.stderr
        );
    }
    let t = server.wait_total("2 responses", |t| t.frames_out == 2);
    assert_eq!(
        (t.accepted, t.tls_handshakes, t.tls_errors),
        (1, 1, 0),
        "{t:#?}"
    );

    // Without the CA, curl refuses the certificate (exit 60), and the server closes that
    // session with a TLS error (curl's alert), nothing else.
    let refused = curl(port, &[&url]);
    assert_eq!(refused.status.code(), Some(60), "{refused:#?}");
    let t = server.wait_total("the refused session to close", |t| t.closed == 2);
    assert_eq!(t.closed_for(CloseReason::TlsError), 1, "{t:#?}");
    assert_eq!((t.tls_handshakes, t.tls_errors), (1, 1), "{t:#?}");
    server.stop_cleanly();
}

/// What `openssl s_client` printed, and how it exited.
struct SClient {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `openssl s_client` against `addr` as `localhost`, trusting `ca`, with `extra` flags;
/// sends `line` and keeps its input open until the echo of the line is printed (at its end of
/// input s_client closes at once, which could cut the echo off), then closes it: s_client
/// sends a close_notify and exits. Killed, and the test failed, after `CLIENT_TIMEOUT`.
fn s_client(addr: SocketAddr, ca: &Path, extra: &[&str], line: &str) -> SClient {
    let path = protocols::require("openssl");
    let connect = addr.to_string();
    let mut child = Command::new(&path)
        .args(["s_client", "-connect", &connect, "-servername", "localhost"])
        .arg("-CAfile")
        .arg(ca)
        .args(["-verify_return_error"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let mut stdout = child.stdout.take().unwrap();
    let (tx, chunks) = mpsc::channel::<Vec<u8>>();
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(line) {
        let left = deadline.saturating_duration_since(Instant::now());
        match chunks.recv_timeout(left) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(_) => break, // exited, or the deadline: what it printed says which
        }
    }
    drop(stdin);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "openssl s_client still running after {CLIENT_TIMEOUT:?}; it printed:\n{}",
                String::from_utf8_lossy(&out)
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = reader.join();
    out.extend(chunks.try_iter().flatten());
    SClient {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: errors.join().unwrap_or_default(),
    }
}

#[test]
fn openssl_s_client_echoes_a_line_over_tls13_and_tls12() {
    let pki = Pki::new("s-client");
    let leaf = pki.server("server", &["localhost"]);
    let (server, seen) = recording(Raw, tls_echo::server_tls(&leaf), false);
    let server = util::start(server);

    let cases = [
        (&[][..], "TLSv1.3", rustls::ProtocolVersion::TLSv1_3),
        (
            &["-tls1_2"][..],
            "TLSv1.2",
            rustls::ProtocolVersion::TLSv1_2,
        ),
    ];
    for (i, (flags, name, version)) in cases.into_iter().enumerate() {
        let line = format!("hello from openssl over {name}");
        let out = s_client(server.addr(), &pki.ca_path, flags, &line);
        let shown = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
        assert!(out.status.success(), "s_client failed: {shown}");
        for wanted in [
            "Verify return code: 0 (ok)",
            &format!("New, {name}, Cipher is"),
            &line,
        ] {
            assert!(out.stdout.contains(wanted), "no {wanted:?} in {shown}");
        }
        assert_eq!(seen.wait_opened(i + 1)[i].version, Some(version));
        println!("{name}: {line:?} echoed, chain verified");
    }
    // s_client ends with a close_notify: a clean end of input for both sessions.
    assert_eq!(seen.wait_closes(2), [CloseReason::PeerClosed; 2]);
    let t = server.total();
    assert_eq!((t.tls_handshakes, t.tls_errors), (2, 0), "{t:#?}");
    server.stop_cleanly();
}

#[test]
fn redis_cli_speaks_tls_to_the_kv_service() {
    let help = run("redis-cli", &["--help"], b"", CLIENT_TIMEOUT);
    assert!(
        help.stdout.contains("--tls") || help.stderr.contains("--tls"),
        "\n\n*** THIS redis-cli WAS BUILT WITHOUT TLS: `redis-cli --help` does not mention --tls.\n\
         *** The kv service's TLS cannot be tested with it.\n\n{help:#?}"
    );
    let pki = Pki::new("redis-cli");
    // hiredis checks the chain; the address is in the certificate too, for clients that also
    // check the name they connected to.
    let leaf = pki.server("server", &["localhost", "127.0.0.1"]);
    let tls = tls_echo::server_tls(&leaf).build().unwrap();
    let server = kv::server(Resp::default(), kv::Sharding::Locks, 16)
        .bind(util::any_port())
        .tls(tls);
    let server = util::start(server);
    let port = server.addr().port().to_string();
    let ca = pki.ca_path.to_str().unwrap();
    let cli = |args: &[&str]| -> String {
        let mut all = vec!["--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        let out = run("redis-cli", &all, b"", CLIENT_TIMEOUT).success();
        assert!(out.stderr.is_empty(), "redis-cli {args:?}: {out:#?}");
        out.stdout
    };
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["SET", "greeting", "hello over TLS"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello over TLS\n");
    let t = server.wait_total("3 sessions to close", |t| t.closed == 3);
    assert_eq!((t.tls_handshakes, t.tls_errors), (3, 0), "{t:#?}");
    assert_eq!(t.codec_errors, 0, "{t:#?}");
    server.stop_cleanly();
}
