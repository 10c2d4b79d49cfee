//! Limits: past `max_sessions` a connection is accepted and closed at once, and counted; a
//! server out of descriptors (EMFILE) backs off instead of spinning or dying, serves what it
//! holds, and recovers once descriptors are free.
//!
//! The EMFILE server runs in a child process (this test binary, re-executed to run only
//! `emfile_child_server`), so lowering its descriptor limit cannot starve the tests here.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::{Len32, Raw};
use ringwire::CloseReason;

const MAX_SESSIONS: usize = 10;
const PAST_LIMIT: usize = 5;

#[test]
fn connections_past_max_sessions_are_closed_at_once_and_counted() {
    let server = util::start(util::echo(Len32).max_sessions(MAX_SESSIONS));
    let addr = server.addr();
    let mut inside: Vec<TcpStream> = (0..MAX_SESSIONS).map(|_| util::connect(addr)).collect();
    for (i, conn) in inside.iter_mut().enumerate() {
        util::echo_len32(conn, format!("inside {i}").as_bytes());
    }
    server.wait_total("the sessions inside the limit", |s| {
        s.accepted == MAX_SESSIONS as u64
    });

    let mut past: Vec<TcpStream> = (0..PAST_LIMIT).map(|_| util::connect(addr)).collect();
    for (i, conn) in past.iter_mut().enumerate() {
        let seen = util::expect_closed(conn);
        assert!(
            seen.is_empty(),
            "connection {i} past the limit got {seen:?}"
        );
    }
    let s = server.wait_total("the connections past the limit to be rejected", |s| {
        s.rejected == PAST_LIMIT as u64
    });
    assert_eq!(s.accepted, MAX_SESSIONS as u64, "{s:#?}");
    assert_eq!(
        s.closed, 0,
        "a rejected connection is never a session: {s:#?}"
    );

    // The sessions inside the limit are still served.
    for (i, conn) in inside.iter_mut().enumerate() {
        util::echo_len32(conn, format!("still inside {i}").as_bytes());
    }
    // A freed session makes room for one more.
    drop(inside.pop());
    server.wait_total("the dropped session to close", |s| s.closed == 1);
    let mut again = util::connect(addr);
    util::echo_len32(&mut again, b"room again");
    inside.push(again);
    let s = server.total();
    assert_eq!(s.accepted, MAX_SESSIONS as u64 + 1, "{s:#?}");
    assert_eq!(s.rejected, PAST_LIMIT as u64, "{s:#?}");
    drop(inside);
    let s = server.wait_total("every session to close", |s| {
        s.closed == MAX_SESSIONS as u64 + 1
    });
    assert_eq!(
        s.closed_for(CloseReason::PeerClosed),
        MAX_SESSIONS as u64 + 1,
        "{s:#?}"
    );
    server.stop_cleanly();
}

/// Set in the child's environment: run the EMFILE server.
const CHILD_ENV: &str = "RINGWIRE_TEST_EMFILE_CHILD";
/// The child's descriptor limit.
const CHILD_NOFILE: u64 = 64;
/// Connections the parent opens: well past what the child can hold.
const EMFILE_CONNS: usize = 100;
/// Markers of the child's output lines (the test harness prints around them).
const PORT_LINE: &str = "EMFILE-CHILD-PORT ";
const STATS_LINE: &str = "EMFILE-CHILD-STATS ";

/// Not a test of its own: the server side of `server_out_of_descriptors_backs_off_and_recovers`,
/// run in a child process (`--ignored --exact`) with `RINGWIRE_TEST_EMFILE_CHILD` set.
#[test]
#[ignore = "run by server_out_of_descriptors_backs_off_and_recovers in a child process"]
fn emfile_child_server() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "run by server_out_of_descriptors_backs_off_and_recovers, which sets {CHILD_ENV}"
    );
    let lim = libc::rlimit {
        rlim_cur: CHILD_NOFILE,
        rlim_max: CHILD_NOFILE,
    };
    // SAFETY: setrlimit reads the struct we pass, which outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
    let server = util::start(util::echo(Raw));
    let counters = server.core_stats().to_vec();
    println!(
        "\n{PORT_LINE}{} fds {}",
        server.addr().port(),
        util::fd_count()
    );
    // Serve until the parent closes our stdin (or dies).
    let _ = io::stdin().read_to_end(&mut Vec::new());
    server.stop_cleanly();
    let mut s = ringwire::CoreSnapshot::default();
    for core in &counters {
        s.merge(&core.snapshot());
    }
    println!(
        "\n{STATS_LINE}accepted={} accept_backoffs={} rejected={} closed={} worker_deaths={}",
        s.accepted, s.accept_backoffs, s.rejected, s.closed, s.worker_deaths
    );
}

/// The child server: this test binary re-executed.
struct ChildServer;

impl ChildServer {
    fn spawn() -> util::ChildLines {
        let exe = std::env::current_exe().expect("current_exe");
        util::ChildLines::spawn(
            Command::new(exe)
                .args(["--ignored", "--exact", "emfile_child_server", "--nocapture"])
                .env(CHILD_ENV, "1")
                .stdin(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
    }
}

/// Writes `payload` and asserts it comes back.
fn echo_raw(conn: &mut TcpStream, payload: &[u8]) {
    conn.write_all(payload).expect("write");
    assert_eq!(util::read_n(conn, payload.len()), payload);
}

/// Connects, writes and reads back a few bytes, with short timeouts.
fn try_echo_raw(addr: SocketAddr, payload: &[u8]) -> io::Result<()> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(payload)?;
    let mut back = vec![0; payload.len()];
    conn.read_exact(&mut back)?;
    if back != payload {
        return Err(io::Error::other(format!("echoed {back:?}")));
    }
    Ok(())
}

#[test]
fn server_out_of_descriptors_backs_off_and_recovers() {
    let mut child = ChildServer::spawn();
    let port: u16 = child
        .line_after(PORT_LINE)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the child's port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Far more connections than the child has descriptors: the kernel queues the rest in the
    // listener's backlog, and the child's accepts fail with EMFILE.
    let mut conns: Vec<TcpStream> = (0..EMFILE_CONNS).map(|_| util::connect(addr)).collect();
    // The first ones were accepted before the table filled, and are served meanwhile.
    echo_raw(&mut conns[0], b"served while out of descriptors");
    thread::sleep(Duration::from_millis(200));
    assert!(child.is_alive(), "the server died out of descriptors");
    echo_raw(&mut conns[1], b"still served");

    // Free the descriptors; the server takes the queued connections and a new one again,
    // once its back-off (at most 1 s) has passed.
    drop(conns);
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match try_echo_raw(addr, b"recovered") {
            Ok(()) => break,
            Err(e) if started.elapsed() < Duration::from_secs(15) => {
                println!("attempt {attempts}: {e}");
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the server did not recover from EMFILE: {e}"),
        }
    }
    println!(
        "a new connection echoed {:?} after the others closed ({attempts} attempts)",
        started.elapsed()
    );
    assert!(child.is_alive(), "the child server exited");

    // Closing the child's stdin stops it; it reports its counters.
    drop(child.child.stdin.take());
    let stats = child.line_after(STATS_LINE);
    let field = |name: &str| -> u64 {
        stats
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the child's stats {stats:?}"))
    };
    let status = child.child.wait().expect("wait for the child");
    assert!(status.success(), "the child server failed: {status}");
    let (accepted, backoffs) = (field("accepted"), field("accept_backoffs"));
    assert!(
        backoffs > 0,
        "the child never counted an accept failure with a {CHILD_NOFILE}-descriptor limit and \
         {EMFILE_CONNS} connections: {stats}"
    );
    assert!(
        accepted > EMFILE_CONNS as u64,
        "every queued connection and the new one are accepted in the end: {stats}"
    );
    // A back-off doubles from 1 ms to 1 s: a few dozen failures at most in this test's
    // seconds at EMFILE, where a loop retrying at once would fail thousands of times.
    assert!(
        backoffs <= 200,
        "{backoffs} accept failures: the server retries accept in a tight loop: {stats}"
    );
    assert_eq!(field("worker_deaths"), 0, "{stats}");
    assert_eq!(field("rejected"), 0, "{stats}");
}
