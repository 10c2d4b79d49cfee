//! Graceful shutdown: on `shutdown(deadline)` the server stops accepting at once (new connects
//! are refused), still serves the connections already queued in its listener's backlog, keeps
//! serving its sessions until their peers close, and exits as soon as they have, well before
//! the deadline; every session sees `on_close`. The same through the echo example and SIGTERM.

mod util;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::Raw;
use ringwire::{CloseReason, Handler, Server, Session};
use util::Pattern;

/// Clients that have sent everything and wait for their echo when the drain begins.
const WAITING: usize = 20;
/// What each of them sends: more than the kernel's socket buffers hold, so most of its echo
/// is still the server's pending output when the drain begins.
const WAITING_BYTES: u64 = 6 << 20;
/// Clients that connect while the core is stalled, so they sit in the listener's backlog (or
/// in accept completions not yet handled) when the drain begins.
const BACKLOGGED: usize = 3;
/// The drain deadline.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long the stalling handler blocks its core.
const STALL: Duration = Duration::from_millis(400);

/// What the sessions of the drain test saw.
#[derive(Default)]
struct Seen {
    opened: AtomicU64,
    closed: AtomicU64,
    closed_draining: AtomicU64,
    reasons: Mutex<HashMap<String, u64>>,
    stalling: AtomicBool,
}

/// Echoes, records its open and close, and blocks its core for `STALL` on the frame `STALL`.
struct Drained(Arc<Seen>);

impl Handler<Raw> for Drained {
    fn on_open(&mut self, _session: &mut Session<'_, Raw>) {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
    }

    fn on_message(&mut self, session: &mut Session<'_, Raw>, frame: &[u8]) {
        if frame == b"STALL" {
            self.0.stalling.store(true, Ordering::SeqCst);
            thread::sleep(STALL);
            self.0.stalling.store(false, Ordering::SeqCst);
        }
        session.write(frame);
    }

    fn on_close(&mut self, session: &mut Session<'_, Raw>, reason: CloseReason) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
        if session.is_draining() {
            self.0.closed_draining.fetch_add(1, Ordering::SeqCst);
        }
        *self
            .0
            .reasons
            .lock()
            .unwrap()
            .entry(format!("{reason:?}"))
            .or_default() += 1;
    }
}

fn pattern(seed: u64, conn: usize) -> Pattern {
    Pattern::new(seed ^ (conn as u64 + 1).wrapping_mul(0x9E37_79B9))
}

/// A client connection (as [`util::connect`]) whose receive buffer is fixed small, so that
/// what it does not read stays in the server rather than in its own socket.
fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_recv_buffer_size(16 << 10).expect("SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), util::IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(util::IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Polls until `cond` holds, at most `within`.
fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn shutdown_drains_backlog_and_sessions_then_exits_before_the_deadline() {
    let seen = Arc::new(Seen::default());
    let factory_seen = seen.clone();
    // High water above what a client sends: they all finish sending without reading.
    let server = util::start(
        Server::new(Raw, move || Drained(factory_seen.clone()))
            .bind(util::any_port())
            .water_marks(16 << 20, 4 << 20),
    );
    let addr = server.addr();
    let counters = server.core_stats().to_vec();

    // 1. Clients that have sent everything and await their echo, unread.
    let seed = util::base_seed();
    let mut waiting: Vec<TcpStream> = (0..WAITING).map(|_| connect_small_rcvbuf(addr)).collect();
    thread::scope(|s| {
        for (conn, stream) in waiting.iter_mut().enumerate() {
            s.spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut off = 0;
                while off < WAITING_BYTES {
                    let n = buf.len().min((WAITING_BYTES - off) as usize);
                    pattern(seed, conn).fill(off, &mut buf[..n]);
                    stream.write_all(&buf[..n]).expect("write before the drain");
                    off += n as u64;
                }
            });
        }
    });
    let sent = WAITING as u64 * WAITING_BYTES;
    let s = server.wait_total("every byte received", |s| s.bytes_in == sent);
    println!(
        "before the drain: {} bytes received, {} written, {} pending in the server",
        s.bytes_in,
        s.bytes_out,
        s.bytes_in - s.bytes_out
    );
    assert!(
        s.bytes_out < s.bytes_in,
        "the kernel's buffers took every echo: this test would not see a drain cut output short"
    );

    // 2. Stall the core; meanwhile ask for the drain, then connect more clients: the listener
    // is still open (the core has not seen the request), so they queue in its backlog, and
    // the drain must serve them, not reset them.
    let mut staller = util::connect(addr);
    staller.write_all(b"STALL").unwrap();
    wait_for("the core to stall", util::SETTLE_TIMEOUT, || {
        seen.stalling.load(Ordering::SeqCst)
    });
    let stopper = server.stopper();
    let drain_began = Instant::now();
    thread::spawn(move || stopper.shutdown(DEADLINE))
        .join()
        .expect("shutdown from another thread");
    let mut backlogged: Vec<TcpStream> = (0..BACKLOGGED)
        .map(|i| {
            let mut c = util::connect(addr);
            c.write_all(format!("backlogged {i}").as_bytes()).unwrap();
            c
        })
        .collect();
    if !seen.stalling.load(Ordering::SeqCst) {
        eprintln!(
            "NOTE: the {STALL:?} stall ended before the backlogged clients had connected \
             ({:?} after the drain was asked for): the machine is slow, and this run may not \
             have queued them behind the drain request",
            drain_began.elapsed()
        );
    }
    wait_for("the stall to end", util::SETTLE_TIMEOUT, || {
        !seen.stalling.load(Ordering::SeqCst)
    });

    // 3. New connections are refused once the listener is closed: not accepted and closed.
    let accepted_before_refusal = util::wait_refused(addr, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("during the drain: {e}"));
    println!(
        "refused {:?} after the drain began ({accepted_before_refusal} accepted before)",
        drain_began.elapsed()
    );

    // 4. Everyone still gets a whole echo, then closes.
    thread::scope(|s| {
        for (conn, stream) in waiting.iter_mut().enumerate() {
            s.spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                if let Err(e) =
                    util::read_pattern(stream, pattern(seed, conn), 0, WAITING_BYTES, &mut buf)
                {
                    panic!("client {conn}, echo during the drain: {e}");
                }
            });
        }
    });
    for (i, c) in backlogged.iter_mut().enumerate() {
        let want = format!("backlogged {i}");
        assert_eq!(
            util::read_n(c, want.len()),
            want.as_bytes(),
            "backlogged client {i}"
        );
    }
    assert_eq!(util::read_n(&mut staller, 5), b"STALL");
    drop((waiting, backlogged, staller));

    // 5. The server exits once its peers have closed, long before the deadline.
    let joined = server
        .join_within(DEADLINE + util::STOP_TIMEOUT)
        .unwrap_or_else(|e| panic!("join after the drain: {e}"));
    let exited = drain_began.elapsed();
    let mut s = ringwire::CoreSnapshot::default();
    for core in &counters {
        s.merge(&core.snapshot());
    }
    let reasons = seen.reasons.lock().unwrap().clone();
    println!(
        "exited {exited:?} after the drain began (joined in {joined:?}); on_close reasons \
         {reasons:?}; drained_accepts {}; {s:?}",
        s.drained_accepts
    );
    assert!(
        exited < DEADLINE,
        "the server exited {exited:?} after the drain began, not before the {DEADLINE:?} \
         deadline: it waited for the deadline instead of for its peers"
    );
    // Connects that raced the listener's close may have been served too, or reset unseen.
    let least = (WAITING + 1 + BACKLOGGED) as u64;
    let most = least + accepted_before_refusal as u64;
    assert!(
        (least..=most).contains(&s.accepted) && s.rejected == 0,
        "expected {least}..={most} sessions, none rejected: {s:#?}"
    );
    let (opened, closed) = (
        seen.opened.load(Ordering::SeqCst),
        seen.closed.load(Ordering::SeqCst),
    );
    assert_eq!(opened, s.accepted, "on_open once per session: {s:#?}");
    assert_eq!(closed, opened, "on_close once per session: {reasons:?}");
    assert!(
        seen.closed_draining.load(Ordering::SeqCst) >= least,
        "a session open when the drain began did not see is_draining() in on_close"
    );
    assert_eq!(s.closed, s.accepted, "{s:#?}");
    assert_eq!(
        s.closed_for(CloseReason::PeerClosed),
        s.accepted,
        "every session ended by its peer (a Raw stream is never idle), none cut at the \
         deadline: {s:#?}"
    );
    assert_eq!(s.closed_for(CloseReason::Shutdown), 0, "{s:#?}");
    assert_eq!(s.bytes_out, s.bytes_in, "{s:#?}");
}

/// Sessions still open when the drain deadline passes are closed then, as `Shutdown`, each
/// with `on_close`, and `ServerHandle::shutdown` returns right after.
#[test]
fn shutdown_closes_what_is_left_at_the_deadline() {
    const IDLE: usize = 3;
    const STUCK: usize = 2;
    const SHORT: Duration = Duration::from_millis(300);
    let seen = Arc::new(Seen::default());
    let factory_seen = seen.clone();
    let handle = Server::new(Raw, move || Drained(factory_seen.clone()))
        .bind(util::any_port())
        .water_marks(16 << 20, 4 << 20)
        .start()
        .unwrap_or_else(|e| panic!("server failed to start: {e}"));
    eprintln!(
        "shutdown_closes_what_is_left_at_the_deadline: {}",
        handle.driver()
    );
    let addr = handle.local_addr();
    let counters = handle.core_stats().to_vec();
    let seed = util::base_seed();
    // Connected and silent; and sent 6 MiB without reading the echo: neither ever closes.
    let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| util::connect(addr)).collect();
    let mut stuck: Vec<TcpStream> = (0..STUCK).map(|_| connect_small_rcvbuf(addr)).collect();
    for (conn, c) in stuck.iter_mut().enumerate() {
        let mut buf = vec![0u8; 6 << 20];
        pattern(seed, conn).fill(0, &mut buf);
        c.write_all(&buf).unwrap();
    }
    let total = || {
        let mut s = ringwire::CoreSnapshot::default();
        for core in &counters {
            s.merge(&core.snapshot());
        }
        s
    };
    wait_for("the stuck clients' bytes", util::SETTLE_TIMEOUT, || {
        total().bytes_in == STUCK as u64 * (6 << 20)
    });

    let began = Instant::now();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.shutdown(SHORT).map_err(|e| e.to_string()));
    });
    let refused = util::wait_refused(addr, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("during the drain: {e}"));
    let result = rx
        .recv_timeout(SHORT + util::STOP_TIMEOUT)
        .unwrap_or_else(|_| panic!("ServerHandle::shutdown({SHORT:?}) did not return"));
    let took = began.elapsed();
    result.unwrap_or_else(|e| panic!("shutdown failed: {e}"));
    // Every client sees its connection closed: the stuck ones after a part of their echo.
    for (i, c) in idle.iter_mut().enumerate() {
        let seen = util::expect_closed(c);
        assert!(seen.is_empty(), "idle client {i} got {} bytes", seen.len());
    }
    for (conn, c) in stuck.iter_mut().enumerate() {
        let echoed = util::expect_closed(c);
        assert!(
            echoed.len() < 6 << 20,
            "stuck client {conn} got its whole echo"
        );
        if let Some(at) = pattern(seed, conn).first_mismatch(0, &echoed) {
            panic!("stuck client {conn}: echoed byte {at} differs");
        }
    }
    let s = total();
    let reasons = seen.reasons.lock().unwrap().clone();
    println!(
        "shutdown({SHORT:?}) returned after {took:?}; on_close reasons {reasons:?}; \
         {refused} connects accepted before refusal; {s:?}"
    );
    assert!(
        took >= SHORT - Duration::from_millis(20),
        "shutdown returned after {took:?}, before its {SHORT:?} deadline, with sessions open"
    );
    let sessions = (IDLE + STUCK) as u64;
    assert!(s.accepted >= sessions, "{s:#?}");
    assert_eq!(
        s.closed_for(CloseReason::Shutdown),
        sessions,
        "the sessions open at the deadline close as Shutdown: {s:#?}"
    );
    assert_eq!(s.closed, s.accepted, "{s:#?}");
    assert_eq!(
        seen.closed.load(Ordering::SeqCst),
        s.accepted,
        "{reasons:?}"
    );
    assert_eq!(seen.opened.load(Ordering::SeqCst), s.accepted);
    // The connects that raced the drain request may have come and gone before it.
    assert!(
        seen.closed_draining.load(Ordering::SeqCst) >= sessions,
        "a session open when the drain began did not see is_draining() in on_close"
    );
}

/// The echo example, built next to this test binary (`cargo test` builds the examples).
fn echo_example() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> -> target/<profile>/examples/echo
    let path = exe.parent()?.parent()?.join("examples").join("echo");
    path.is_file().then_some(path)
}

/// The example process; killed if the test fails before it exits.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The echo example running with `args`, its address, and a thread collecting its stderr;
/// `None` (said loudly) if the example binary was not built.
fn spawn_echo(args: &[&str]) -> Option<(Example, SocketAddr, thread::JoinHandle<String>)> {
    let Some(binary) = echo_example() else {
        eprintln!(
            "\n*** SKIPPED: example binary not built: no target/<profile>/examples/echo next to \
             {:?}. `cargo test` builds it; `cargo test --test lifecycle_shutdown` alone does not.\n",
            std::env::current_exe().ok()
        );
        return None;
    };
    if let (Ok(example), Ok(test)) = (
        binary.metadata().and_then(|m| m.modified()),
        std::env::current_exe().and_then(|p| p.metadata()?.modified()),
    ) {
        if example < test {
            eprintln!("note: {} is older than this test binary", binary.display());
        }
    }
    let mut child = Example(
        Command::new(&binary)
            .args(["--addr", "127.0.0.1:0", "--cores", "1"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display())),
    );
    let mut stderr = child.0.stderr.take().unwrap();
    let stderr_thread = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the example's 'listening on' line");
    let addr: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    println!("example: {line}");
    Some((child, addr, stderr_thread))
}

fn sigterm(child: &Example) -> Instant {
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
    Instant::now()
}

/// Waits for the example to exit, at most `limit` after `since`.
fn wait_exit(child: &mut Example, since: Instant, limit: Duration) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            return status;
        }
        if since.elapsed() > limit {
            panic!("the example still runs {:?} after SIGTERM", since.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn echo_example_drains_on_sigterm_and_exits_zero() {
    const CLIENTS: usize = 5;
    let seed = util::base_seed();
    const BYTES: u64 = 1 << 20;
    let drain_ms = DEADLINE.as_millis().to_string();
    let Some((mut child, addr, stderr_thread)) =
        spawn_echo(&["--framing", "raw", "--drain-ms", &drain_ms])
    else {
        return;
    };

    // Clients that have sent everything and wait for the echo.
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| util::connect(addr)).collect();
    for (conn, c) in clients.iter_mut().enumerate() {
        let mut buf = vec![0u8; BYTES as usize];
        pattern(seed, conn).fill(0, &mut buf);
        c.write_all(&buf).unwrap();
    }
    let signalled = sigterm(&child);
    let refused = util::wait_refused(addr, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("after SIGTERM: {e}"));
    for (conn, c) in clients.iter_mut().enumerate() {
        let mut buf = vec![0u8; 64 * 1024];
        if let Err(e) = util::read_pattern(c, pattern(seed, conn), 0, BYTES, &mut buf) {
            let status = wait_exit(&mut child, signalled, DEADLINE + util::STOP_TIMEOUT);
            let stderr = stderr_thread.join().unwrap_or_default();
            panic!("client {conn}, echo after SIGTERM: {e}; the example exited with {status}, its stderr:\n{stderr}");
        }
    }
    drop(clients);
    let status = wait_exit(&mut child, signalled, DEADLINE + util::STOP_TIMEOUT);
    let exited = signalled.elapsed();
    let stderr = stderr_thread.join().unwrap_or_default();
    println!(
        "example exited with {status} {exited:?} after SIGTERM ({refused} connects accepted \
         before refusal); its stderr:\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{stderr}");
    assert!(
        exited < DEADLINE,
        "the example exited {exited:?} after SIGTERM: it waited for the drain deadline instead \
         of for its peers; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("stopped after"),
        "the example did not report its stop; stderr:\n{stderr}"
    );
}

/// Clients that keep their connections open after their echo (as connection pools do) are
/// closed at once on SIGTERM, not waited for until the drain deadline; a client in the middle
/// of a frame gets its reply first, then the close.
#[test]
fn echo_example_closes_idle_sessions_at_once_on_sigterm() {
    const IDLE: usize = 20;
    /// Far beyond the time the test allows for the exit: reaching it means idle sessions were
    /// waited for.
    const LONG_DRAIN: Duration = Duration::from_secs(60);
    let drain_ms = LONG_DRAIN.as_millis().to_string();
    let Some((mut child, addr, stderr_thread)) =
        spawn_echo(&["--framing", "len32", "--drain-ms", &drain_ms])
    else {
        return;
    };
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            let mut c = util::connect(addr);
            util::echo_len32(&mut c, format!("client {i}").as_bytes());
            c
        })
        .collect();
    let payload: Vec<u8> = (0..200u8).collect();
    let frame = util::len32(&payload);
    let mut midway = util::connect(addr);
    midway.write_all(&frame[..100]).unwrap();
    // Let the half frame reach the server (a later echo on the same core, and a pause).
    util::echo_len32(&mut idle[0], b"after the half frame");
    thread::sleep(Duration::from_millis(100));

    let signalled = sigterm(&child);
    let refused = util::wait_refused(addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after SIGTERM: {e}"));
    for (i, c) in idle.iter_mut().enumerate() {
        c.set_read_timeout(Some(util::STOP_TIMEOUT)).unwrap();
        let mut byte = [0u8; 1];
        match c.read(&mut byte) {
            Ok(0) => {}
            other => panic!("idle client {i}: expected the server's close, got {other:?}"),
        }
    }
    midway.write_all(&frame[100..]).unwrap();
    assert_eq!(
        util::read_n(&mut midway, frame.len()),
        frame,
        "the frame in progress at SIGTERM is answered"
    );
    util::expect_eof(&mut midway);
    let status = wait_exit(&mut child, signalled, LONG_DRAIN / 3);
    let exited = signalled.elapsed();
    let stderr = stderr_thread.join().unwrap_or_default();
    println!(
        "example exited with {status} {exited:?} after SIGTERM ({refused} connects accepted \
         before refusal), with {IDLE} idle clients still connected; stderr:\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{stderr}");
    drop(idle);
}
