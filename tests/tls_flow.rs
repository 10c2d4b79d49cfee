//! Flow control and the end of TLS sessions: a client that sends without reading makes the
//! server pause its reading (backpressure counts pending output, which for TLS is sealed
//! records) and gets every byte back once it reads; a server draining for shutdown, or a
//! session's idle timeout, closes an idle TLS session with a close_notify, which the client
//! sees as a clean end (rather than a truncation).

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::{Len32, Raw};
use ringwire::tls::rustls;
use ringwire::CloseReason;
use rustls::ClientConnection;
use util::tls::Pki;
use util::tls_client::{self, Ending};
use util::tls_echo::{self, recording};
use util::Pattern;

/// What the backpressure client sends.
const TOTAL: u64 = 32 << 20;
/// The server's water marks: far below what the client sends.
const HIGH_WATER: usize = 256 << 10;
const LOW_WATER: usize = 64 << 10;
/// How long a write may block before the client counts the server as no longer reading.
const STALL_PROBE: Duration = Duration::from_millis(300);
/// The longest the whole exchange may take once the client reads.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(60);

/// A client connection whose receive buffer is fixed small, so that what it does not read
/// stays in the server rather than in its own socket.
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

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A client that streams `pattern`'s bytes through a rustls connection and checks what comes
/// back, one step at a time (the socket's timeouts bound each step).
struct Pump {
    conn: ClientConnection,
    sock: TcpStream,
    pattern: Pattern,
    sent: u64,
    received: u64,
    buf: Vec<u8>,
}

impl Pump {
    /// Seals more plaintext if rustls has nothing left to write, then writes ciphertext until
    /// the socket blocks; `false` if it blocked.
    fn write(&mut self) -> bool {
        if self.sent < TOTAL && !self.conn.wants_write() {
            let n = self.buf.len().min((TOTAL - self.sent) as usize);
            self.pattern.fill(self.sent, &mut self.buf[..n]);
            let took = self.conn.writer().write(&self.buf[..n]).expect("seal");
            self.sent += took as u64;
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if would_block(&e) => return false,
                Err(e) => panic!("write at {} of {TOTAL}: {e}", self.sent),
            }
        }
        true
    }

    /// Waits (at most a second) until the socket can be read, or written if there is
    /// something to write.
    fn wait_ready(&self) {
        let mut events = libc::POLLIN;
        if self.sent < TOTAL || self.conn.wants_write() {
            events |= libc::POLLOUT;
        }
        let mut fd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd we pass, which outlives the call.
        let n = unsafe { libc::poll(&mut fd, 1, 1000) };
        assert!(n >= 0, "poll: {}", io::Error::last_os_error());
    }

    /// Reads what the socket has (if anything), decrypts it and checks the plaintext.
    fn read(&mut self) {
        match self.conn.read_tls(&mut self.sock) {
            Ok(0) => panic!("EOF after {} of {TOTAL} bytes", self.received),
            Ok(_) => {}
            Err(e) if would_block(&e) => return,
            Err(e) => panic!("read after {} of {TOTAL} bytes: {e}", self.received),
        }
        self.conn
            .process_new_packets()
            .unwrap_or_else(|e| panic!("TLS after {} of {TOTAL} bytes: {e}", self.received));
        loop {
            match self.conn.reader().read(&mut self.buf) {
                Ok(0) => panic!("close_notify after {} of {TOTAL} bytes", self.received),
                Ok(n) => {
                    if let Some(bad) = self.pattern.first_mismatch(self.received, &self.buf[..n]) {
                        panic!("byte {bad} differs from what was sent");
                    }
                    self.received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("plaintext after {} bytes: {e}", self.received),
            }
        }
    }
}

#[test]
fn a_client_that_does_not_read_is_paused_then_gets_every_byte() {
    let pki = Pki::new("backpressure");
    let leaf = pki.server("server", &["localhost"]);
    let (server, seen) = recording(Raw, tls_echo::server_tls(&leaf), false);
    let server = util::start(server.water_marks(HIGH_WATER, LOW_WATER));
    let config = Arc::new(tls_client::client_config(
        &pki.ca_pem,
        tls_client::ANY_VERSION,
    ));
    let mut conn = tls_client::client_connection(&config, "localhost");
    let mut sock = connect_small_rcvbuf(server.addr());
    tls_client::handshake(&mut conn, &mut sock).expect("handshake");
    let mut pump = Pump {
        conn,
        sock,
        pattern: Pattern::new(util::base_seed()),
        sent: 0,
        received: 0,
        buf: vec![0; 64 << 10],
    };

    // 1. Send without reading until a write blocks for STALL_PROBE: the server has stopped
    // reading, its output over the high-water mark.
    pump.sock.set_write_timeout(Some(STALL_PROBE)).unwrap();
    while pump.write() {
        assert!(
            pump.sent < TOTAL,
            "{TOTAL} bytes sent and none read, and the server still reads: {:#?}",
            server.total()
        );
    }
    let s = server.wait_total("the session to pause", |s| s.backpressure_pauses > 0);
    println!(
        "stalled after sending {} bytes: server received {} and sent {} bytes (ciphertext), \
         {} pauses",
        pump.sent, s.bytes_in, s.bytes_out, s.backpressure_pauses
    );

    // 2. Read everything back, sending the rest on the way, as the socket allows.
    pump.sock.set_nonblocking(true).unwrap();
    let began = Instant::now();
    while pump.received < TOTAL {
        pump.wait_ready();
        pump.write();
        pump.read();
        assert!(
            began.elapsed() < EXCHANGE_LIMIT,
            "{} of {TOTAL} bytes back after {EXCHANGE_LIMIT:?}: {:#?}",
            pump.received,
            server.total()
        );
    }
    let s = server.total();
    println!(
        "{TOTAL} bytes echoed in {:?}; {} pauses, {} writes, {} partial",
        began.elapsed(),
        s.backpressure_pauses,
        s.writes,
        s.partial_writes
    );
    assert_eq!(pump.received, TOTAL);
    assert_eq!((s.tls_handshakes, s.tls_errors), (1, 0), "{s:#?}");

    pump.sock.set_nonblocking(false).unwrap();
    pump.conn.send_close_notify();
    tls_client::handshake(&mut pump.conn, &mut pump.sock).expect("send the close_notify");
    let (ending, rest) = tls_client::read_to_end(&mut pump.conn, &mut pump.sock);
    assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    assert!(matches!(ending, Ending::CloseNotify), "{ending:?}");
    assert_eq!(seen.wait_closes(1), [CloseReason::PeerClosed]);
    server.stop_cleanly();
}

#[test]
fn drain_closes_an_idle_tls_session_with_a_close_notify() {
    const DRAIN: Duration = Duration::from_secs(2);
    let pki = Pki::new("drain");
    let leaf = pki.server("server", &["localhost"]);
    // Len32: an idle session is at a frame boundary, so the drain closes it at once (a Raw
    // stream never is, and would be served until the deadline).
    let (server, seen) = recording(Len32, tls_echo::server_tls(&leaf), false);
    let server = util::start(server);
    let config = Arc::new(tls_client::client_config(
        &pki.ca_pem,
        tls_client::ANY_VERSION,
    ));
    let mut stream = tls_client::connect(server.addr(), &config, "localhost");
    tls_client::echo(&mut stream, &util::len32(b"before the drain"));
    seen.wait_opened(1);

    let stopper = server.stopper();
    let began = Instant::now();
    thread::spawn(move || stopper.shutdown(DRAIN))
        .join()
        .expect("shutdown from another thread");
    let (ending, rest) = tls_client::read_to_end(&mut stream.conn, &mut stream.sock);
    println!(
        "the client saw {ending:?} {:?} after the drain began",
        began.elapsed()
    );
    assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    assert_eq!(seen.wait_closes(1), [CloseReason::Drained]);
    assert!(
        matches!(ending, Ending::CloseNotify),
        "the drained session closed without a close_notify: the client saw {ending:?} \
         (a truncation, to a TLS client)"
    );
    let counters = server.core_stats().to_vec();
    server
        .join_within(DRAIN + util::STOP_TIMEOUT)
        .expect("workers exit after the drain");
    let mut t = ringwire::CoreSnapshot::default();
    for core in &counters {
        t.merge(&core.snapshot());
    }
    assert_eq!(t.closed_for(CloseReason::Drained), 1, "{t:#?}");
    assert_eq!((t.tls_handshakes, t.tls_errors), (1, 0), "{t:#?}");
}

#[test]
fn idle_timeout_closes_a_tls_session_with_a_close_notify() {
    const IDLE: Duration = Duration::from_millis(300);
    let pki = Pki::new("idle");
    let leaf = pki.server("server", &["localhost"]);
    let (server, seen) = recording(Raw, tls_echo::server_tls(&leaf), false);
    let server = util::start(server.idle_timeout(IDLE));
    let config = Arc::new(tls_client::client_config(
        &pki.ca_pem,
        tls_client::ANY_VERSION,
    ));
    let mut stream = tls_client::connect(server.addr(), &config, "localhost");
    tls_client::echo(&mut stream, b"then idle");
    let began = Instant::now();
    let (ending, rest) = tls_client::read_to_end(&mut stream.conn, &mut stream.sock);
    println!(
        "the client saw {ending:?} {:?} after its echo",
        began.elapsed()
    );
    assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    assert_eq!(seen.wait_closes(1), [CloseReason::IdleTimeout]);
    assert!(
        matches!(ending, Ending::CloseNotify),
        "the idle session closed without a close_notify: the client saw {ending:?} \
         (a truncation, to a TLS client)"
    );
    let t = server.total();
    assert_eq!((t.tls_handshakes, t.tls_errors), (1, 0), "{t:#?}");
    server.stop_cleanly();
}
