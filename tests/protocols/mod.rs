//! Helpers for the tests that drive the example servers with real clients (redis-cli,
//! redis-benchmark, curl, wrk): finding the tools, and running them with a bound on time.
//!
//! Invariant: a missing tool fails the test loudly (it never skips), and no client runs past
//! its timeout: it is killed and the test fails with what it printed so far.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The path of `tool` on `PATH`; fails the test loudly when it is not installed.
pub fn require(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => path,
        None => panic!(
            "\n\n*** `{tool}` IS NOT INSTALLED: this test drives the server with real clients.\n\
             *** Install them with scripts/install-test-deps.sh (redis-tools, curl, wrk).\n\n"
        ),
    }
}

/// What a client printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Fails the test, showing everything, unless the client exited 0.
    pub fn success(self) -> Output {
        assert!(self.status.success(), "client failed: {self:#?}");
        self
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `tool args...` with `stdin` as its input; kills it and fails the test if it runs
/// longer than `timeout`.
pub fn run(tool: &str, args: &[&str], stdin: &[u8], timeout: Duration) -> Output {
    let path = require(tool);
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&stdin);
        // Dropping `input` closes the client's stdin.
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{tool} {}` still running after {timeout:?}; it printed:\n{}\n{}",
                args.join(" "),
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = feeder.join();
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

// ---- Servers and sockets -------------------------------------------------------------------
// (Kept here rather than in tests/util so that these tests depend only on the public API.)

use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::sync::mpsc;

use ringwire::codec::Codec;
use ringwire::{CoreSnapshot, Handler, Server, ServerError, ServerHandle};

/// Read and write timeout of client sockets.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a stopped server may take to join, and a counter to reach a value.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loopback, port picked by the kernel.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Starts `server`; a kernel without usable io_uring fails the test loudly.
pub fn start<C, H, F>(server: Server<C, F>) -> Running
where
    C: Codec + Clone + Send,
    H: Handler<C>,
    F: Fn() -> H + Send + Sync + 'static,
{
    match server.start() {
        Ok(handle) => Running(Some(handle)),
        Err(e @ ServerError::IoUringUnavailable { .. }) => panic!(
            "\n\n*** io_uring IS NOT AVAILABLE ON THIS MACHINE: {e}\n\
             *** ringwire's integration tests need a kernel (5.19+) that allows io_uring.\n\n"
        ),
        Err(e) => panic!("server failed to start: {e}"),
    }
}

/// A started server, stopped (in bounded time) when dropped or by [`Running::stop`].
pub struct Running(Option<ServerHandle>);

impl Deref for Running {
    type Target = ServerHandle;

    fn deref(&self) -> &ServerHandle {
        self.0.as_ref().expect("server already stopped")
    }
}

impl Running {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.local_addr()
    }

    /// The counters summed over every core.
    pub fn total(&self) -> CoreSnapshot {
        self.stats().total()
    }

    /// Polls the summed counters until `cond` holds; fails after [`SETTLE_TIMEOUT`].
    pub fn wait_total(&self, what: &str, cond: impl Fn(&CoreSnapshot) -> bool) -> CoreSnapshot {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let total = self.total();
            if cond(&total) {
                return total;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {total:#?}"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Drains for at most `deadline`, then asserts every worker exited cleanly in bounded time.
    pub fn shutdown_within(mut self, deadline: Duration) {
        let handle = self.0.take().expect("server already stopped");
        if let Err(e) = join_bounded(handle, deadline) {
            panic!("server did not stop cleanly: {e}");
        }
    }

    /// Stops at once and asserts every worker exited cleanly.
    pub fn stop(self) {
        self.shutdown_within(Duration::ZERO);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            if let Err(e) = join_bounded(handle, Duration::ZERO) {
                eprintln!("server did not stop cleanly: {e}");
            }
        }
    }
}

fn join_bounded(handle: ServerHandle, drain: Duration) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.shutdown(drain).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(drain + SETTLE_TIMEOUT) {
        Ok(result) => result,
        Err(_) => Err(format!(
            "workers still running {:?} after stop",
            drain + SETTLE_TIMEOUT
        )),
    }
}

/// A client connection with read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads exactly `n` bytes.
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Reads until the server closes (EOF or reset); returns what came before.
pub fn expect_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return seen,
            Err(e) => panic!(
                "expected the server to close, got {e} after {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}
