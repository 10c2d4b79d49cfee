//! Real Redis processes for the proxy tests: `redis-server` backends and twemproxy
//! (`nutcracker`) on kernel-picked loopback ports, each killed when its guard drops (a failing
//! test included); and a RESP client that reads whole replies of any type.
//!
//! Invariant: nothing here waits without a bound. A process that does not answer PING within
//! [`READY_TIMEOUT`] fails the test; client sockets carry the tests' I/O timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::resp::encode_command;

use super::util;

/// How long a started process may take to answer PING.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The path of `tool`, on `PATH` or in `/usr/sbin` (where Debian puts nutcracker); fails the
/// test loudly when it is not installed.
pub fn tool(name: &str) -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin").join(name);
    if sbin.is_file() {
        return sbin;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "\n\n*** `{name}` IS NOT INSTALLED: the proxy tests run real Redis servers and \
             twemproxy.\n*** Install them with scripts/install-test-deps.sh (redis-server, \
             nutcracker).\n\n"
        )
    })
}

/// A loopback port nothing listens on right now (the kernel's pick).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Polls until `addr` answers PING with `+PONG`; fails after [`READY_TIMEOUT`], or at once if
/// `child` has exited. The caller's guard already holds `child`, so a failure kills it.
fn wait_ready(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("{what} on {addr} exited at start: {status}");
        }
        if let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 7];
            if conn.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
                && conn.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} on {addr} not answering after {READY_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill(); // SIGKILL: no goodbye to its clients, as a crash.
        let _ = child.wait();
    }
}

/// A `redis-server` on a loopback port, persisting nothing; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` and waits until it answers.
    pub fn start_on(port: u16) -> Self {
        let mut server = RedisServer { child: None, port };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new(tool("redis-server"))
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let addr = self.addr();
        wait_ready(addr, self.child.insert(child), "redis-server");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills it at once (SIGKILL): its connections reset or end with no reply.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port (empty: it persists nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A client connected to it directly.
    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// twemproxy in front of `backends`, configured as the proxy places keys: `hash: fnv1a_64`,
/// `distribution: ketama`, servers `HOST:PORT:1` in order, no names; killed when dropped.
pub struct Nutcracker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Nutcracker {
    /// Starts it and waits until it answers.
    pub fn start(backends: &[SocketAddr]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("ringwire-nutcracker-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nutcracker's directory");
        let mut yml = format!(
            "proxy:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
             redis: true\n  servers:\n"
        );
        for addr in backends {
            yml.push_str(&format!("   - {addr}:1\n"));
        }
        let conf = dir.join("nutcracker.yml");
        std::fs::write(&conf, yml).expect("write nutcracker.yml");
        let child = Command::new(tool("nutcracker"))
            .arg("-c")
            .arg(&conf)
            .args(["-s", &free_port().to_string(), "-a", "127.0.0.1", "-o"])
            .arg(dir.join("nutcracker.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nutcracker");
        let mut guard = Nutcracker {
            child: Some(child),
            port,
            dir,
        };
        let addr = guard.addr();
        wait_ready(addr, guard.child.as_mut().unwrap(), "nutcracker");
        guard
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RESP2 reply, parsed whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

impl Value {
    /// A bulk string of `text`.
    pub fn bulk(text: impl AsRef<[u8]>) -> Value {
        Value::Bulk(Some(text.as_ref().to_vec()))
    }

    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// The error text, if it is an error.
    pub fn error(&self) -> Option<&str> {
        match self {
            Value::Error(text) => Some(text),
            _ => None,
        }
    }
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let end = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[at..at + end], at + end + 2))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first whole reply in `buf` and its length; `None` if incomplete. Fails the test on a
/// malformed one.
pub fn parse(buf: &[u8]) -> Option<(Value, usize)> {
    let (head, next) = line(buf, 1)?;
    let int = || -> i64 {
        text(head)
            .parse()
            .unwrap_or_else(|_| panic!("malformed reply {:?}", text(buf)))
    };
    Some(match buf[0] {
        b'+' => (Value::Simple(text(head)), next),
        b'-' => (Value::Error(text(head)), next),
        b':' => (Value::Int(int()), next),
        b'$' if int() < 0 => (Value::Bulk(None), next),
        b'$' => {
            let end = next + int() as usize;
            let data = buf.get(next..end)?.to_vec();
            buf.get(end + 1)?;
            (Value::Bulk(Some(data)), end + 2)
        }
        b'*' if int() < 0 => (Value::Array(None), next),
        b'*' => {
            let mut at = next;
            let mut items = Vec::new();
            for _ in 0..int() {
                let (item, used) = parse(&buf[at..])?;
                items.push(item);
                at += used;
            }
            (Value::Array(Some(items)), at)
        }
        other => panic!("unknown reply type {:?} in {:?}", other as char, text(buf)),
    })
}

/// A client connection that sends commands and reads whole replies.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects, with the tests' I/O timeouts.
    pub fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: util::connect(addr),
            buf: Vec::new(),
        }
    }

    /// Another handle on the same connection (for a writer thread), with its own buffer.
    pub fn try_clone(&self) -> Client {
        Client {
            stream: self.stream.try_clone().expect("clone the connection"),
            buf: Vec::new(),
        }
    }

    /// Appends `args` as a command to `wire`.
    pub fn encode(args: &[&[u8]], wire: &mut Vec<u8>) {
        encode_command(args, wire);
    }

    /// Writes raw bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Sends one command.
    pub fn send(&mut self, args: &[&[u8]]) {
        let mut wire = Vec::new();
        encode_command(args, &mut wire);
        self.write(&wire);
    }

    /// Reads the next reply; fails the test on EOF or the read timeout.
    pub fn read(&mut self) -> Value {
        self.try_read().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads the next reply, or says why there is none (EOF, an error, the timeout).
    pub fn try_read(&mut self) -> Result<Value, String> {
        loop {
            if let Some((value, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Ok(value);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(format!("EOF after {:?}", text(&self.buf))),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read failed after {:?}: {e}", text(&self.buf))),
            }
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Value {
        self.send(args);
        self.read()
    }
}
