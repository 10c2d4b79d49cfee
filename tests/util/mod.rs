//! Helpers shared by the integration tests: servers that stop within a bound, clients with
//! timeouts, waiting on counters, a seeded PRNG and process-level probes (descriptor count,
//! descriptor limit); a redis-server of a test's own (`redis`), certificates for TLS tests
//! (`tls`), rustls clients over std sockets (`tls_client`) and a TLS echo server that records
//! what its sessions saw (`tls_echo`).
//!
//! Invariant: nothing here can block without a bound. Client sockets carry read and write
//! timeouts, waits poll against a deadline, and a server is joined from a helper thread so a
//! worker that never exits fails the test instead of hanging it.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

pub mod redis;
pub mod tls;
pub mod tls_client;
pub mod tls_echo;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Deref;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::Codec;
use ringwire::handlers::Echo;
use ringwire::{CoreSnapshot, Handler, Server, ServerError, ServerHandle};

/// Read and write timeout of every client socket: long enough for a loaded CI machine, short
/// enough that a lost reply fails the test rather than hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a condition on the server's counters may take to become true.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopped server may take to join.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Loopback, port picked by the kernel.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An echo server builder bound to loopback on a kernel-picked port.
pub fn echo<C>(codec: C) -> Server<C, Echo>
where
    C: Codec + Clone + Send,
    Echo: Handler<C>,
{
    Server::new(codec, || Echo).bind(any_port())
}

/// Starts `server`. A kernel without usable io_uring fails the test loudly with the engine's
/// diagnosis: every test here needs it, and skipping would hide a broken setup.
pub fn start<C, H>(server: Server<C, H>) -> Running
where
    C: Codec + Clone + Send,
    H: Handler<C>,
{
    match server.start() {
        Ok(handle) => {
            // Name the driver in the test's output: the suite runs once per driver.
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            eprintln!("{test}: {}", handle.driver());
            Running {
                handle: Some(handle),
            }
        }
        Err(e @ ServerError::IoUringUnavailable { .. }) => panic!(
            "\n\n*** io_uring IS NOT AVAILABLE ON THIS MACHINE: {e}\n\
             *** ringwire's integration tests need a kernel (Linux 6.0 or later) that allows io_uring.\n\n"
        ),
        Err(e) => panic!("server failed to start: {e}"),
    }
}

/// A started server. [`Running::stop_cleanly`] stops it and checks that every worker exited
/// cleanly; dropping it (e.g. while a failed test unwinds) stops it without checking. Both
/// wait at most [`STOP_TIMEOUT`].
pub struct Running {
    handle: Option<ServerHandle>,
}

impl Deref for Running {
    type Target = ServerHandle;

    fn deref(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server already stopped")
    }
}

impl Running {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.local_addr()
    }

    /// Whether the io_uring driver runs (its buffer ring, ENOBUFS and completion-queue
    /// counters mean nothing on epoll).
    pub fn is_uring(&self) -> bool {
        self.driver().starts_with("io_uring")
    }

    /// The counters summed over every core.
    pub fn total(&self) -> CoreSnapshot {
        self.stats().total()
    }

    /// Polls the summed counters until `cond` holds; returns that snapshot. Fails with the
    /// last snapshot after [`SETTLE_TIMEOUT`].
    pub fn wait_total(&self, what: &str, cond: impl Fn(&CoreSnapshot) -> bool) -> CoreSnapshot {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let total = self.total();
            if cond(&total) {
                return total;
            }
            if Instant::now() > deadline {
                panic!("timed out after {SETTLE_TIMEOUT:?} waiting for {what}; stats: {total:#?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Drains for at most `drain` (a drain already begun keeps its earlier deadline) and
    /// asserts that every worker exited without error within `drain` plus [`STOP_TIMEOUT`].
    /// Returns how long the workers took to exit.
    pub fn drain_cleanly(mut self, drain: Duration) -> Duration {
        let handle = self.handle.take().expect("server already stopped");
        let began = Instant::now();
        handle.stopper().shutdown(drain);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(handle.join().map_err(|e| e.to_string()));
        });
        match rx.recv_timeout(drain + STOP_TIMEOUT) {
            Ok(Ok(())) => began.elapsed(),
            Ok(Err(e)) => panic!("server did not stop cleanly: {e}"),
            Err(_) => panic!(
                "workers still running {:?} after the drain",
                drain + STOP_TIMEOUT
            ),
        }
    }

    /// Stops the server and asserts that every worker exited without error, in bounded time.
    pub fn stop_cleanly(mut self) {
        let handle = self.handle.take().expect("server already stopped");
        if let Err(e) = stop_and_join(handle) {
            panic!("server did not stop cleanly: {e}");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            if let Err(e) = stop_and_join(handle) {
                eprintln!("server did not stop cleanly: {e}");
            }
        }
    }
}

/// Stops and joins from a helper thread, so a worker that never exits costs a bounded wait.
fn stop_and_join(handle: ServerHandle) -> Result<(), String> {
    handle.stop();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.join().map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(STOP_TIMEOUT) {
        Ok(result) => result,
        Err(_) => Err(format!("workers still running {STOP_TIMEOUT:?} after stop")),
    }
}

/// A client connection with read and write timeouts and TCP_NODELAY (so small writes go out
/// as they are, which fragments what the server receives).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads exactly `n` bytes, failing the test with what was missing.
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match stream.read(&mut buf[got..]) {
            Ok(0) => panic!("EOF after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {got} of {n} bytes: {e}"),
        }
    }
    buf
}

/// Asserts the next read is EOF: the server closed in order and sent nothing more.
pub fn expect_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} more bytes: {:?}", &buf[..n.min(64)]),
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

/// Reads until the server's close shows (EOF or a reset) and returns whatever came before.
/// Fails if the connection is still open after [`IO_TIMEOUT`].
pub fn expect_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return seen
            }
            Err(e) => panic!("expected the server to close the connection, got {e}"),
        }
    }
}

/// A `Len32` frame: 4-byte big-endian length, then the payload.
pub fn len32(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Sends one `Len32` frame and checks that the echo is the same frame.
pub fn try_echo_len32(stream: &mut TcpStream, payload: &[u8]) -> Result<(), String> {
    let frame = len32(payload);
    stream
        .write_all(&frame)
        .map_err(|e| format!("write of a {}-byte frame: {e}", payload.len()))?;
    let mut back = vec![0; frame.len()];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("echo of a {}-byte frame: {e}", payload.len()))?;
    match first_difference(&back, &frame) {
        None => Ok(()),
        Some(i) => Err(format!(
            "echo of a {}-byte frame differs at byte {i}",
            payload.len()
        )),
    }
}

/// Sends one `Len32` frame and asserts the echo is the same frame.
pub fn echo_len32(stream: &mut TcpStream, payload: &[u8]) {
    if let Err(e) = try_echo_len32(stream, payload) {
        panic!("{e}");
    }
}

/// Closes the client's sending side.
pub fn shutdown_write(stream: &TcpStream) {
    stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
}

/// Index of the first byte where `a` and `b` differ.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Open descriptors of this process (the server runs in-process, so its sockets, rings and
/// eventfds count too).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// Waits until the process's descriptor count is back to `baseline`, failing after
/// [`SETTLE_TIMEOUT`].
pub fn wait_fds(baseline: usize, what: &str) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let now = fd_count();
        if now == baseline {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: {now} descriptors open {SETTLE_TIMEOUT:?} later, {baseline} before");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; fails the test if that is below `need`.
/// Returns the new soft limit.
pub fn raise_nofile(need: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which outlives the call.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) },
        0,
        "getrlimit: {}",
        io::Error::last_os_error()
    );
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we pass, which outlives the call.
        assert_eq!(
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) },
            0,
            "setrlimit: {}",
            io::Error::last_os_error()
        );
    }
    assert!(
        lim.rlim_cur >= need,
        "RLIMIT_NOFILE hard limit {} is below the {need} descriptors this test needs \
         (raise it with `ulimit -Hn`)",
        lim.rlim_max
    );
    lim.rlim_cur
}

/// The base seed of the tests' PRNGs: `RINGWIRE_TEST_SEED` when set (to replay a failure),
/// else a fixed value. Printed so a failure can be replayed.
pub fn base_seed() -> u64 {
    let seed = std::env::var("RINGWIRE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_1234_ABCD_0001);
    println!("seed {seed} (set RINGWIRE_TEST_SEED to replay)");
    seed
}

/// SplitMix64: small, fast, and good enough to pick sizes and fill payloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next_u64() % n == 0
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

impl Running {
    /// Waits at most `limit` for every worker to exit, without asking them to stop (for a
    /// server already draining: [`Running::stop_cleanly`] would cut the drain short); returns
    /// how long the wait took, or why it failed.
    pub fn join_within(mut self, limit: Duration) -> Result<Duration, String> {
        let handle = self.handle.take().expect("server already stopped");
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(handle.join().map_err(|e| e.to_string()));
        });
        match rx.recv_timeout(limit) {
            Ok(result) => result.map(|()| started.elapsed()),
            Err(_) => Err(format!(
                "workers still running {limit:?} after the join began"
            )),
        }
    }
}

/// Resident memory of this process in bytes: resident pages from `/proc/self/statm` times the
/// page size. The server runs in-process, so its buffers count here.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/self/statm: {statm:?}"));
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(page > 0, "sysconf(_SC_PAGESIZE) failed");
    pages * page as u64
}

/// An endless byte stream, a function of (seed, offset), for streams too long to keep in
/// memory. Every 8-byte word is a hash of its index, so a byte that comes back duplicated,
/// dropped, reordered or from another connection's stream (another seed) is caught.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    seed: u64,
}

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern { seed }
    }

    fn word(&self, index: u64) -> [u8; 8] {
        Rng::new(self.seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F))
            .next_u64()
            .to_le_bytes()
    }

    /// Fills `buf` with the stream's bytes from `offset` on.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut i = 0;
        while i < buf.len() {
            let word = self.word(pos / 8);
            let start = (pos % 8) as usize;
            let n = (8 - start).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&word[start..start + n]);
            i += n;
            pos += n as u64;
        }
    }

    /// The stream offset of the first byte of `buf` that is not the stream's byte at
    /// `offset + index`, if any.
    pub fn first_mismatch(&self, offset: u64, buf: &[u8]) -> Option<u64> {
        let mut pos = offset;
        let mut i = 0;
        while i < buf.len() {
            let word = self.word(pos / 8);
            let start = (pos % 8) as usize;
            let n = (8 - start).min(buf.len() - i);
            if buf[i..i + n] != word[start..start + n] {
                let j = (0..n).find(|&j| buf[i + j] != word[start + j]).unwrap_or(0);
                return Some(pos + j as u64);
            }
            i += n;
            pos += n as u64;
        }
        None
    }
}

/// Reads the bytes `from..to` of `pattern`'s stream from `stream` (through `buf`) and checks
/// each against the pattern; the error says where the stream went wrong.
pub fn read_pattern(
    stream: &mut TcpStream,
    pattern: Pattern,
    from: u64,
    to: u64,
    buf: &mut [u8],
) -> Result<(), String> {
    let mut at = from;
    while at < to {
        let want = buf.len().min((to - at) as usize);
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("EOF at byte {at}, expected {to}")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed at byte {at} of {to}: {e}")),
        };
        if let Some(bad) = pattern.first_mismatch(at, &buf[..n]) {
            return Err(format!("byte {bad} differs from what was sent"));
        }
        at += n as u64;
    }
    Ok(())
}

/// Connects until the connection is refused (every listener closed), for at most `within`.
/// Returns how many attempts were accepted (into a backlog) before the first refusal; each of
/// those is closed at once. Fails on any other error, or if nothing was refused in time.
pub fn wait_refused(addr: SocketAddr, within: Duration) -> Result<usize, String> {
    let deadline = Instant::now() + within;
    let mut accepted = 0;
    loop {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(accepted),
            // A connect racing the listener's close is reset rather than refused.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(accepted),
            Err(e) => return Err(format!("connect to {addr}: {e}, expected it to be refused")),
            Ok(stream) => {
                accepted += 1;
                drop(stream);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{addr} still accepts connections {within:?} later ({accepted} accepted)"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sets its flag when dropped: a helper thread told to stop by the flag stops even when the
/// test panics (a scoped thread that never stops would hang the test instead of failing it).
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A child process whose stdout lines are read as they come (and echoed, prefixed `child:`);
/// killed if still running when dropped (a test that fails before it exits).
pub struct ChildLines {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildLines {
    /// Spawns `command` with its stdout piped.
    pub fn spawn(command: &mut std::process::Command) -> Self {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                println!("child: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildLines { child, lines }
    }

    /// The rest of the first line of the child's output (from here on) that contains
    /// `marker`; fails after 30 s without one.
    pub fn line_after(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(marker) {
                        return line[at + marker.len()..].to_owned();
                    }
                }
                Err(e) => panic!("no {marker:?} line from the child: {e}"),
            }
        }
    }

    /// Whether the child still runs.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for ChildLines {
    fn drop(&mut self) {
        if self.is_alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A backend that accepts and reads, and never answers (for request timeouts). Its threads end
/// with the test process.
pub fn silent_backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind(any_port()).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A fresh directory under the system's temp dir, removed with everything in it on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rw-unix-{}-{n}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The socket path tests use in it.
    pub fn sock(&self) -> std::path::PathBuf {
        self.0.join("s.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
