//! A `redis-server` of its own for a test: on loopback, on a port the kernel picked, without
//! persistence, killed when dropped. Failing to start it fails the test (CI installs it with
//! `scripts/install-test-deps.sh`).
//!
//! Invariant: a `Redis` is ready only once the server answering on its port is its own
//! process (INFO's `process_id`): the port is picked by binding and releasing it, so another
//! test may take it first, and then this one's server exits and another answers there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Ports tried before giving up: each failure is another test taking the port first.
const ATTEMPTS: usize = 5;

/// A `redis-server` on loopback, killed when dropped.
pub struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    /// Starts one on a port the kernel picks; if another process takes the port first,
    /// tries another.
    pub fn start() -> Redis {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let port = TcpListener::bind(super::any_port())
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            match Redis::try_on(port) {
                Ok(redis) => return redis,
                Err(e) => failures.push(format!("port {port}: {e}")),
            }
        }
        panic!("redis-server did not start: {}", failures.join("; "))
    }

    /// Starts one on `port`, and waits until it answers.
    pub fn on(port: u16) -> Redis {
        Redis::try_on(port).unwrap_or_else(|e| panic!("redis-server on port {port}: {e}"))
    }

    /// Starts one on `port`, and waits until it answers; fails if it exits first (the port is
    /// taken) or does not answer within the settle timeout.
    fn try_on(port: u16) -> Result<Redis, String> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "\n*** cannot start redis-server ({e}); scripts/install-test-deps.sh \
                     installs it\n"
                )
            });
        // Killed when dropped, on every failure below.
        let mut redis = Redis { port, child };
        let deadline = Instant::now() + super::SETTLE_TIMEOUT;
        loop {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!("exited at start ({status})"));
            }
            if let Some(pid) = redis.answering_pid() {
                if pid == redis.child.id() {
                    return Ok(redis);
                }
                // Another process's server holds the port; ours is about to exit.
            }
            if Instant::now() > deadline {
                return Err("never answered".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the redis-server answering on this port, if one does.
    fn answering_pid(&self) -> Option<u32> {
        let mut conn = TcpStream::connect(self.addr()).ok()?;
        conn.set_read_timeout(Some(super::IO_TIMEOUT)).ok()?;
        conn.write_all(b"INFO server\r\n").ok()?;
        let mut reader = BufReader::new(conn);
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let len: usize = header.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut info = vec![0; len + 2];
        reader.read_exact(&mut info).ok()?;
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|line| line.strip_prefix("process_id:")?.trim().parse().ok())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(mut self) -> u16 {
        self.stop();
        self.port
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
