//! Per-core backend pools against real `redis-server` processes on loopback (started here on
//! ephemeral ports, without persistence, killed at the end) and a std listener that never
//! answers: pipelined requests over several connections come back in order; a backend killed
//! mid-pipeline fails its pending and new requests at once, and serves again once restarted on
//! its port; a silent backend times requests out; a client that leaves with requests in flight
//! leaves the backend connection as it was.
//!
//! The front is a tiny server: each client line (`[@N ]WORD...`) goes to backend N (0 without a
//! prefix) as a RESP command, and comes back as one line: `+OK`, `-ERR ...`, `:3`, `$value`,
//! `$nil`, `*[..]`, or `!` and the error (`!down`, `!closed`, `!timeout`, `!busy`).

mod util;

use util::redis::Redis;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringwire::backend::{BackendError, BackendStats, Backends, PoolConfig, Waiter};
use ringwire::codec::resp::{encode_command, parse_reply, ReplyView};
use ringwire::codec::Lines;
use ringwire::{CoreCtx, Handler, Reply, Server, Session};

/// What waits for a backend's reply: a client's reserved reply, or a test's own list on the
/// core (to see when `done` runs).
enum Wait {
    Client(Reply),
    Here(Rc<RefCell<Vec<String>>>),
}

impl Waiter for Wait {
    fn done(self, _: &mut CoreCtx, reply: Result<&[u8], BackendError>) {
        let line = match reply {
            Ok(bytes) => render(bytes),
            Err(BackendError::Down { .. }) => "!down".to_owned(),
            Err(BackendError::Closed { .. }) => "!closed".to_owned(),
            Err(BackendError::Timeout { .. }) => "!timeout".to_owned(),
            Err(BackendError::Busy { .. }) => "!busy".to_owned(),
            Err(other) => format!("!{other}"),
        };
        match self {
            Wait::Client(reply) => reply.complete(line + "\n"),
            Wait::Here(lines) => lines.borrow_mut().push(line),
        }
    }
}

/// One reply as a line.
fn render(bytes: &[u8]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match parse_reply(bytes).expect("the codec hands over whole replies") {
        ReplyView::Simple(s) => format!("+{}", text(s)),
        ReplyView::Error(s) => format!("-{}", text(s)),
        ReplyView::Integer(n) => format!(":{n}"),
        ReplyView::Bulk(Some(b)) => format!("${}", text(b)),
        ReplyView::Bulk(None) => "$nil".to_owned(),
        ReplyView::Array(None) => "*nil".to_owned(),
        ReplyView::Array(Some(items)) => {
            let items: Vec<String> = items.map(render).collect();
            format!("*[{}]", items.join(","))
        }
    }
}

/// The front: each line to a backend, answered in order with the reply.
struct Front;

impl Handler<Lines> for Front {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        let line = std::str::from_utf8(line).unwrap();
        let (backend, command) = match line.strip_prefix('@') {
            Some(rest) => {
                let (n, command) = rest.split_once(' ').unwrap();
                (n.parse().unwrap(), command)
            }
            None => (0, line),
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        let mut request = Vec::new();
        encode_command(&words, &mut request);
        let reply = s
            .reserve()
            .expect("under max_replies: reading pauses at the bound");
        let mut backends = s.core().state::<Backends<Wait>>().clone();
        backends.send(s.core(), backend, &request, Wait::Client(reply));
    }
}

fn front(addrs: Vec<SocketAddr>, cfg: PoolConfig, cores: usize) -> util::Running {
    util::start(
        Server::new(Lines::new(), || Front)
            .core_state(move |_| Backends::<Wait>::new(addrs.clone(), cfg))
            .cores(cores)
            .bind(util::any_port()),
    )
}

/// Each core's pool counters, core by core.
fn stats(server: &util::Running, cores: usize) -> Vec<Vec<BackendStats>> {
    (0..cores)
        .map(|core| {
            let (tx, rx) = mpsc::channel();
            server
                .remote()
                .run_on(core, move |ctx| {
                    let _ = tx.send(ctx.state::<Backends<Wait>>().stats());
                })
                .unwrap();
            rx.recv_timeout(util::IO_TIMEOUT).unwrap()
        })
        .collect()
}

/// Polls core 0's counters of backend 0 until `cond` holds; fails after
/// [`util::SETTLE_TIMEOUT`] with the last ones.
fn wait_stats(server: &util::Running, what: &str, cond: impl Fn(&BackendStats) -> bool) {
    let deadline = Instant::now() + util::SETTLE_TIMEOUT;
    loop {
        let s = stats(server, 1).remove(0).remove(0);
        if cond(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Sends one command straight to a redis-server and returns its reply's first line.
fn redis_command(addr: SocketAddr, words: &[&str]) -> String {
    let mut conn = util::connect(addr);
    let mut request = Vec::new();
    encode_command(words, &mut request);
    conn.write_all(&request).unwrap();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// A client of the front: send lines, read lines.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn new(server: &util::Running) -> Client {
        let conn = util::connect(server.addr());
        Client {
            writer: conn.try_clone().unwrap(),
            reader: BufReader::new(conn),
        }
    }

    fn send(&mut self, lines: &str) {
        self.writer.write_all(lines.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "the front closed: {line:?}");
        line.pop();
        line
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(&format!("{line}\n"));
        self.line()
    }
}

#[test]
fn pipelined_requests_over_several_connections_come_back_in_order() {
    const CLIENTS: usize = 4;
    const EACH: usize = 2500;
    let redis = Redis::start();
    let cfg = PoolConfig::default().with_conns_per_backend(2);
    let server = front(vec![redis.addr()], cfg, 2);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = Client::new(&server);
            thread::spawn(move || {
                let sets: String = (0..EACH).map(|i| format!("SET k{c}-{i} v{i}\n")).collect();
                client.send(&sets);
                for _ in 0..EACH {
                    assert_eq!(client.line(), "+OK");
                }
                // Read back in one pipeline: each answer in its request's place.
                let gets: String = (0..EACH).map(|i| format!("GET k{c}-{i}\n")).collect();
                client.send(&gets);
                for i in 0..EACH {
                    assert_eq!(client.line(), format!("$v{i}"), "client {c}, request {i}");
                }
                assert_eq!(client.ask("GET missing"), "$nil");
                let unknown = client.ask("NOSUCHCOMMAND");
                assert!(unknown.starts_with("-ERR unknown command"), "{unknown}");
                assert_eq!(client.ask("MGET k0-1 missing"), "*[$v1,$nil]");
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let per_core = stats(&server, 2);
    let total: u64 = per_core.iter().map(|core| core[0].requests).sum();
    assert_eq!(total, (CLIENTS * (2 * EACH + 3)) as u64);
    for core in &per_core {
        let s = &core[0];
        assert_eq!(s.addr, redis.addr());
        assert_eq!(
            (s.errors, s.reconnects, s.in_flight, s.down),
            (0, 0, 0, false)
        );
        assert_eq!(s.latency.len(), s.requests);
    }
    server.stop_cleanly();
}

#[test]
fn a_backend_killed_mid_pipeline_fails_fast_and_serves_again_once_restarted() {
    let redis = Redis::start();
    let cfg = PoolConfig::default()
        .with_request_timeout(Duration::from_secs(10))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(500));
    let server = front(vec![redis.addr()], cfg, 1);
    let mut client = Client::new(&server);
    assert_eq!(client.ask("PING"), "+PONG");
    // A blocked request holds the pipeline behind it; the backend dies meanwhile.
    let mut pipeline = String::from("BLPOP nothing 5\n");
    for _ in 0..100 {
        pipeline.push_str("PING\n");
    }
    client.send(&pipeline);
    thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    let port = redis.kill();
    for i in 0..101 {
        assert_eq!(client.line(), "!closed", "pending request {i}");
    }
    // New requests fail at once: down (or, just as the back-off ends, refused on connect).
    for _ in 0..20 {
        assert_eq!(client.ask("PING"), "!down");
    }
    let failed_within = killed.elapsed();
    assert!(failed_within < Duration::from_secs(2), "{failed_within:?}");
    let before = &stats(&server, 1)[0][0];
    assert!(before.down || before.errors >= 121, "{before:?}");
    assert_eq!(before.in_flight, 0);

    let redis = Redis::on(port);
    let back = Instant::now();
    loop {
        match client.ask("PING").as_str() {
            "+PONG" => break,
            "!down" => {}
            other => panic!("unexpected {other}"),
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "never served again"
        );
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("served again {:?} after the restart", back.elapsed());
    assert_eq!(client.ask("SET a 1"), "+OK");
    assert_eq!(client.ask("GET a"), "$1");
    let after = &stats(&server, 1)[0][0];
    assert!(after.reconnects >= 1 && !after.down, "{after:?}");
    drop(redis);
    server.stop_cleanly();
}

#[test]
fn a_backend_that_is_not_there_is_down_at_once() {
    let nowhere = TcpListener::bind(util::any_port())
        .unwrap()
        .local_addr()
        .unwrap();
    // A back-off long enough that the backend is still down when checked below.
    let cfg = PoolConfig::default().with_backoff(Duration::from_secs(5), Duration::from_secs(10));
    let server = front(vec![nowhere], cfg, 1);
    let mut client = Client::new(&server);
    let asked = Instant::now();
    client.send(&"PING\n".repeat(10));
    for _ in 0..10 {
        assert_eq!(client.line(), "!down");
    }
    assert!(asked.elapsed() < Duration::from_secs(2));
    let s = &stats(&server, 1)[0][0];
    assert_eq!((s.errors, s.down), (10, true), "{s:?}");
    // While down, `send` completes the waiter before it returns.
    let (tx, rx) = mpsc::channel();
    server
        .remote()
        .run_on(0, move |ctx| {
            let lines = Rc::new(RefCell::new(Vec::new()));
            let mut backends = ctx.state::<Backends<Wait>>().clone();
            backends.send(ctx, 0, b"*1\r\n$4\r\nPING\r\n", Wait::Here(lines.clone()));
            let _ = tx.send(lines.take());
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(util::IO_TIMEOUT).unwrap(), ["!down"]);
    server.stop_cleanly();
}

#[test]
fn a_backend_that_stops_answering_times_requests_out() {
    let cfg = PoolConfig::default()
        .with_request_timeout(Duration::from_millis(300))
        .with_max_pending(3);
    let server = front(vec![util::silent_backend()], cfg, 1);
    let mut client = Client::new(&server);
    let asked = Instant::now();
    client.send(&"PING\n".repeat(4));
    // The fourth finds its connection full.
    let mut lines: Vec<String> = (0..4).map(|_| client.line()).collect();
    let took = asked.elapsed();
    assert_eq!(lines.pop().unwrap(), "!busy");
    assert_eq!(lines, ["!timeout"; 3]);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    // The connection was opened again: the next request times out on its own clock.
    let asked = Instant::now();
    assert_eq!(client.ask("PING"), "!timeout");
    assert!(asked.elapsed() >= Duration::from_millis(290));
    let s = &stats(&server, 1)[0][0];
    assert_eq!((s.errors, s.reconnects, s.in_flight), (5, 2, 0), "{s:?}");
    server.stop_cleanly();
}

#[test]
fn a_client_that_leaves_with_requests_in_flight_leaves_the_backend_connection() {
    let redis = Redis::start();
    let server = front(vec![redis.addr()], PoolConfig::default(), 1);
    let mut a = Client::new(&server);
    assert_eq!(a.ask("SET x 0"), "+OK");
    let mut pipeline = String::from("BLPOP nothing 0.3\n");
    for _ in 0..500 {
        pipeline.push_str("INCR x\n");
    }
    a.send(&pipeline);
    // Every line reached the pool (written, or queued behind the BLPOP) before a leaves.
    wait_stats(&server, "a's 501 requests to reach the pool", |s| {
        s.requests == 502
    });
    drop(a);
    // Another client is served in order on the same connection, behind a's requests.
    let mut b = Client::new(&server);
    assert_eq!(b.ask("GET x"), "$500");
    assert_eq!(b.ask("INCR x"), ":501");
    let s = &stats(&server, 1)[0][0];
    assert_eq!((s.errors, s.reconnects, s.in_flight), (0, 0, 0), "{s:?}");
    assert_eq!(s.requests, 504);
    drop(b);
    server.stop_cleanly();
}

/// A connection the backend closes with nothing pending (`CLIENT KILL`, as its idle timeout
/// would) costs nothing: the backend is not marked down, and the next requests open it again.
#[test]
fn an_idle_connection_closed_by_the_backend_is_opened_again_not_marked_down() {
    let redis = Redis::start();
    let cfg = PoolConfig::default().with_conns_per_backend(2);
    let server = front(vec![redis.addr()], cfg, 1);
    let mut client = Client::new(&server);
    // One request on each connection (round robin among equals).
    assert_eq!(client.ask("PING"), "+PONG");
    assert_eq!(client.ask("PING"), "+PONG");
    let closed = server.total().closed;
    let killed = redis_command(redis.addr(), &["CLIENT", "KILL", "TYPE", "normal"]);
    let killed: u64 = killed.strip_prefix(':').unwrap().parse().unwrap();
    assert!(killed >= 2, "killed {killed}");
    server.wait_total("both backend connections to close", |t| {
        t.closed >= closed + 2
    });
    for _ in 0..4 {
        assert_eq!(client.ask("PING"), "+PONG");
    }
    assert_eq!(client.ask("SET k v"), "+OK");
    let s = &stats(&server, 1)[0][0];
    assert_eq!((s.errors, s.down, s.in_flight), (0, false, 0), "{s:?}");
    assert!(s.reconnects >= 1, "{s:?}");
    server.stop_cleanly();
}

/// A backend whose listen queue is full at first: the pool's connect completes only when the
/// kernel sends its SYN again (after 1 s), while a request waits for it. A request timeout
/// shorter than that wait counts from when the request is written, once connected.
#[test]
fn the_request_timeout_counts_from_the_write_not_from_the_connect() {
    let timeout = Duration::from_millis(300);
    let backend = late_backend(Duration::from_millis(500));
    let cfg = PoolConfig::default().with_request_timeout(timeout);
    let server = front(vec![backend], cfg, 1);
    let mut client = Client::new(&server);
    let asked = Instant::now();
    assert_eq!(client.ask("PING"), "+PONG");
    let took = asked.elapsed();
    eprintln!("connected and answered after {took:?}");
    assert!(
        took > timeout,
        "the connect was not delayed ({took:?}): this test proves nothing"
    );
    let s = &stats(&server, 1)[0][0];
    assert_eq!((s.errors, s.in_flight, s.down), (0, 0, false), "{s:?}");
    server.stop_cleanly();
}

/// A backend answering `+PONG` to each PING, whose listener accepts nothing for `delay`
/// first: its accept queue holds one connection (backlog 0), taken by a connection made here,
/// so the kernel drops the SYNs of other connects until the queue is emptied.
fn late_backend(delay: Duration) -> SocketAddr {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind(util::any_port()).unwrap();
    // SAFETY: listen on a socket this function owns; a second listen changes the backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let addr = listener.local_addr().unwrap();
    let filler = TcpStream::connect(addr).unwrap();
    // Ends with the test process.
    thread::spawn(move || {
        thread::sleep(delay);
        let _filler = filler;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(at) = seen.windows(4).position(|w| w == b"PING") {
                        seen.drain(..at + 4);
                        if conn.write_all(b"+PONG\r\n").is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}
