//! A `redis-server` of its own for a test: on loopback, on a port the kernel picked, without
//! persistence, killed when dropped. Failing to start it fails the test (CI installs it with
//! `scripts/install-test-deps.sh`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A `redis-server` on loopback, killed when dropped.
pub struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    /// Starts one on a port the kernel picks.
    pub fn start() -> Redis {
        let port = TcpListener::bind(super::any_port())
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::on(port)
    }

    /// Starts one on `port`, and waits until it answers.
    pub fn on(port: u16) -> Redis {
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
        let mut redis = Redis { port, child };
        let deadline = Instant::now() + super::SETTLE_TIMEOUT;
        loop {
            if let Ok(mut conn) = TcpStream::connect(redis.addr()) {
                conn.set_read_timeout(Some(super::IO_TIMEOUT)).unwrap();
                let mut pong = [0u8; 7];
                if conn.write_all(b"PING\r\n").is_ok()
                    && conn.read_exact(&mut pong).is_ok()
                    && &pong == b"+PONG\r\n"
                {
                    return redis;
                }
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server on port {port} exited: {status}");
            }
            assert!(Instant::now() < deadline, "redis-server never answered");
            thread::sleep(Duration::from_millis(20));
        }
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
