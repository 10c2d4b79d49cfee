//! Unix domain stream sockets: the same codecs and handlers over a socket file or an abstract
//! name; a live server's path is never taken, a dead one's file is replaced, a file that is
//! not a socket is never removed, and the file goes when the server stops. Every core accepts
//! on the one socket: the spread test prints how the connections fell.

mod protocols;
mod util;

#[allow(dead_code)]
#[path = "../examples/kv/service.rs"]
mod kv;

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ringwire::codec::Raw;
use ringwire::{Server, ServerError, UnixAddr};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn echo_server(path: impl AsRef<Path>, cores: usize) -> util::Running {
    util::start(
        Server::new(Raw, || ringwire::handlers::Echo)
            .bind_unix(path)
            .cores(cores),
    )
}

fn connect(path: &Path) -> UnixStream {
    let conn = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {path:?}: {e}"));
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}

fn echo_once(conn: &mut UnixStream, payload: &[u8]) {
    conn.write_all(payload).unwrap();
    let mut back = vec![0; payload.len()];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(back, payload);
}

#[test]
fn echo_is_byte_exact_over_a_unix_socket() {
    let dir = util::TempDir::new("echo");
    let server = echo_server(dir.sock(), 2);
    assert_eq!(server.unix_path(), Some(dir.sock().as_path()));
    let mut rng = util::Rng::new(util::base_seed());
    let payload = rng.bytes(1 << 20);
    let conn = connect(&dir.sock());
    let mut writer = conn.try_clone().unwrap();
    let sent = payload.clone();
    let seed = rng.next_u64();
    let feeder = std::thread::spawn(move || {
        // Fragmented writes, from one byte to a few buffers' worth.
        let mut rng = util::Rng::new(seed);
        let mut at = 0;
        while at < sent.len() {
            let n = rng.range(1, 20_000).min(sent.len() - at);
            writer.write_all(&sent[at..at + n]).unwrap();
            at += n;
        }
    });
    let mut back = vec![0; payload.len()];
    (&conn).read_exact(&mut back).unwrap();
    feeder.join().unwrap();
    assert_eq!(util::first_difference(&back, &payload), None);
    drop(conn);
    server.stop_cleanly();
}

#[test]
fn a_live_servers_path_is_never_taken() {
    let dir = util::TempDir::new("live");
    let first = echo_server(dir.sock(), 1);
    let err = Server::new(Raw, || ringwire::handlers::Echo)
        .bind_unix(dir.sock())
        .start()
        .err()
        .expect("a second server started on a live server's path");
    let path = dir.sock().display().to_string();
    match &err {
        ServerError::UnixAddrInUse { path: named } => assert_eq!(*named, path),
        other => panic!("expected UnixAddrInUse, got {other}"),
    }
    assert!(err.to_string().contains(&path), "{err}");
    // The first still owns the file and serves.
    echo_once(&mut connect(&dir.sock()), b"still mine");
    first.stop_cleanly();
    assert!(!dir.sock().exists(), "the socket file outlived its server");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = util::TempDir::new("stale");
    // A dead server's socket: the file stays, nobody accepts (connect says ECONNREFUSED).
    drop(UnixListener::bind(dir.sock()).unwrap());
    assert!(std::fs::metadata(dir.sock())
        .unwrap()
        .file_type()
        .is_socket());
    let server = echo_server(dir.sock(), 1);
    echo_once(&mut connect(&dir.sock()), b"fresh");
    server.stop_cleanly();
}

#[test]
fn a_file_that_is_not_a_socket_is_refused_and_kept() {
    let dir = util::TempDir::new("notsock");
    std::fs::write(dir.sock(), b"precious").unwrap();
    let err = Server::new(Raw, || ringwire::handlers::Echo)
        .bind_unix(dir.sock())
        .start()
        .err()
        .expect("started over a regular file");
    assert!(
        matches!(&err, ServerError::UnixNotSocket { path } if *path == dir.sock().display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.sock()).unwrap(), b"precious");
}

#[test]
fn the_socket_file_is_removed_on_stop_only_if_still_ours() {
    let dir = util::TempDir::new("cleanup");
    let server = util::start(
        Server::new(Raw, || ringwire::handlers::Echo)
            .bind_unix(dir.sock())
            .unix_mode(0o600),
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.sock()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    server.stop_cleanly();
    assert!(
        !dir.sock().exists(),
        "the socket file outlived a clean stop"
    );

    // Someone replaced the file while the server ran: theirs stays.
    let server = echo_server(dir.sock(), 1);
    std::fs::remove_file(dir.sock()).unwrap();
    std::fs::write(dir.sock(), b"theirs").unwrap();
    server.stop_cleanly();
    assert_eq!(std::fs::read(dir.sock()).unwrap(), b"theirs");
}

#[test]
fn a_drain_serves_open_unix_sessions() {
    let dir = util::TempDir::new("drain");
    let server = echo_server(dir.sock(), 2);
    let mut conn = connect(&dir.sock());
    echo_once(&mut conn, b"before");
    let began = Instant::now();
    let drain = Duration::from_secs(5);
    let stopping = std::thread::spawn(move || server.drain_cleanly(drain));
    std::thread::sleep(Duration::from_millis(200));
    // The open session is still served while the server drains.
    echo_once(&mut conn, b"during the drain");
    drop(conn);
    stopping.join().unwrap();
    assert!(
        began.elapsed() < drain,
        "the drain waited for a closed peer"
    );
    assert!(!dir.sock().exists(), "the socket file outlived the drain");
}

/// 100 connections, opened one after another and left open and idle, fall on both cores,
/// and not all but a few on one: each core takes at least a fifth. The cores take turns at
/// the accept (each re-queues its waiter behind the other's after a connection), so an even
/// split is expected; the bound leaves room for a core the noisy machine kept off its CPU
/// while the other took its turns.
#[test]
fn connections_spread_over_two_cores() {
    let dir = util::TempDir::new("spread");
    let server = echo_server(dir.sock(), 2);
    let n = 100;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = connect(&dir.sock());
        // Echoed once, so the accept has been counted when the stats are read.
        echo_once(&mut conn, b"x");
        conns.push(conn);
    }
    let per_core: Vec<u64> = server.stats().cores.iter().map(|c| c.accepted).collect();
    eprintln!(
        "unix spread over 2 cores ({}): {per_core:?} of {n}",
        server.driver()
    );
    assert_eq!(per_core.iter().sum::<u64>(), n as u64);
    let least = n as u64 / 5;
    assert!(
        per_core.iter().all(|&c| c >= least),
        "a core took fewer than {least} of {n}: {per_core:?}"
    );
    drop(conns);
    server.stop_cleanly();
}

#[test]
fn an_abstract_name_needs_no_file() {
    let name = format!("ringwire-test-{}-abstract", std::process::id());
    let server = echo_server(format!("@{name}"), 1);
    assert_eq!(server.unix_path(), None);
    assert_eq!(
        server.unix_addr(),
        Some(&UnixAddr::Abstract(name.as_bytes().to_vec()))
    );
    let addr = UnixSocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut conn = UnixStream::connect_addr(&addr).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    echo_once(&mut conn, b"abstract");
    match Server::new(Raw, || ringwire::handlers::Echo)
        .bind_unix(format!("@{name}"))
        .start()
    {
        Err(ServerError::UnixAddrInUse { path }) => assert_eq!(path, format!("@{name}")),
        Err(other) => panic!("expected UnixAddrInUse, got {other}"),
        Ok(_) => panic!("a second server took a live abstract name"),
    }
    drop(conn);
    server.stop_cleanly();
}

#[test]
fn redis_cli_talks_to_kv_over_a_unix_socket() {
    let dir = util::TempDir::new("kv");
    let server = kv::server(
        ringwire::codec::resp::Resp::default(),
        kv::Sharding::Cores,
        64,
    )
    .bind_unix(dir.sock())
    .cores(2);
    let server = util::start(server);
    let sock = dir.sock().display().to_string();
    let out = protocols::run(
        "redis-cli",
        &["-s", &sock],
        b"PING\nSET k v\nGET k\n",
        Duration::from_secs(30),
    )
    .success();
    assert_eq!(out.stdout, "PONG\nOK\nv\n", "stderr: {}", out.stderr);
    server.stop_cleanly();
}

/// Servers starting on one path at the same moment never take each other's file: at most one
/// starts, and a server that starts is reachable through the path for as long as it runs
/// (the others fail with `UnixAddrInUse`). Two starters race 20 times.
#[test]
fn servers_starting_together_never_take_each_others_path() {
    let dir = util::TempDir::new("race");
    for round in 0..20 {
        let barrier = std::sync::Barrier::new(2);
        let path = dir.sock();
        let started: Vec<Result<ringwire::ServerHandle, ServerError>> = std::thread::scope(|s| {
            let starters: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Server::new(Raw, || ringwire::handlers::Echo)
                            .bind_unix(&path)
                            .cores(1)
                            .start()
                    })
                })
                .collect();
            starters.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut live = Vec::new();
        for result in started {
            match result {
                Ok(handle) => live.push(handle),
                Err(ServerError::UnixAddrInUse { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(live.len(), 1, "round {round}: exactly one server starts");
        // The one that started owns the path: a client reaches it there.
        echo_once(&mut connect(&path), b"mine");
        drop(live);
        assert!(
            !path.exists(),
            "round {round}: the file outlived its server"
        );
    }
}
