//! Replies that come later and from elsewhere keep request order: one connection pipelines
//! 10,000 requests, each answered at random inline, by another core (`submit_to`), by the
//! offload pool (`spawn_blocking`), by a reply completed on another core, or after a one-shot
//! timer; the replies come back in request order, byte-exact. Sent in bursts with pauses, so
//! the cores go to sleep between them and every burst must wake them (a lost wake-up hangs
//! the test until its read timeout).

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use ringwire::codec::Lines;
use ringwire::{CoreCtx, Handler, RemoteError, Reply, Server, Session, SessionHandle, TimerId};

/// Answers `<n> <how>` with `<n> <how> <worker that computed it>\n`, where `how` is one of
/// `inline`, `core`, `pool`, `remote` or `timer`.
struct Mixed {
    timers: HashMap<TimerId, (Reply, Vec<u8>)>,
}

fn answer(line: &[u8], by: usize) -> Vec<u8> {
    let mut v = line.to_vec();
    v.extend_from_slice(format!(" {by}\n").as_bytes());
    v
}

impl Handler<Lines> for Mixed {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        let how = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
        let me = s.worker();
        let other = (me + 1) % s.core().workers();
        match how {
            b"inline" => s.write(&answer(line, me)),
            b"core" => {
                // Computed on the other core, completed back here.
                let reply = s.reserve().unwrap();
                let line = line.to_vec();
                s.core()
                    .submit_to(
                        other,
                        |ctx: &mut CoreCtx| ctx.worker(),
                        move |_: &mut CoreCtx, by: usize| reply.complete(answer(&line, by)),
                    )
                    .unwrap();
            }
            b"remote" => {
                // Completed on the other core itself: the bytes travel back on their own.
                let reply = s.reserve().unwrap();
                let line = line.to_vec();
                s.core()
                    .run_on(other, move |ctx: &mut CoreCtx| {
                        reply.complete(answer(&line, ctx.worker()))
                    })
                    .unwrap();
            }
            b"pool" => {
                let reply = s.reserve().unwrap();
                let line = line.to_vec();
                s.core()
                    .spawn_blocking(
                        move || answer(&line, usize::MAX),
                        move |_: &mut CoreCtx, bytes: Result<Vec<u8>, RemoteError>| {
                            reply.complete(bytes.expect("the pool's queue is sized for the test"))
                        },
                    )
                    .unwrap();
            }
            b"timer" => {
                let reply = s.reserve().unwrap();
                let id = s.set_timer(Duration::from_micros(50)).unwrap();
                self.timers.insert(id, (reply, answer(line, me)));
            }
            _ => s.close(),
        }
    }

    fn on_timer(&mut self, s: &mut Session<'_, Lines>, id: TimerId) {
        if let Some((reply, bytes)) = self.timers.remove(&id) {
            s.complete(reply, &bytes);
        }
    }
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const HOWS: [&str; 5] = ["inline", "core", "pool", "remote", "timer"];

#[test]
fn replies_from_everywhere_arrive_in_request_order() {
    let server = util::start(
        Server::new(Lines::new(), || Mixed {
            timers: HashMap::new(),
        })
        .cores(2)
        .max_timers(20_000)
        .offload_pool(2, 20_000)
        .bind(util::any_port()),
    );
    // Both workers serve a connection of their own (SO_REUSEPORT picks), so "the other core"
    // is core 0 for some and core 1 for others.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut conns: Vec<_> = (0..2).map(|_| util::connect(server.addr())).collect();
    let (total, burst) = (10_000, 500);
    for (c, conn) in conns.iter_mut().enumerate() {
        let mut expected = Vec::new();
        let mut own: Option<String> = None;
        let mut sent = 0;
        while sent < total {
            let mut out = Vec::new();
            let mut want = Vec::new();
            for n in sent..(sent + burst).min(total) {
                let how = HOWS[(rng.next() % HOWS.len() as u64) as usize];
                out.extend_from_slice(format!("{n} {how}\n").as_bytes());
                want.push(format!("{n} {how}"));
            }
            sent += want.len();
            conn.write_all(&out).unwrap();
            let got = read_lines(conn, want.len());
            for (line, want) in got.iter().zip(&want) {
                assert!(
                    line.starts_with(want.as_str()) && line[want.len()..].starts_with(' '),
                    "connection {c}: expected a reply to {want:?}, got {line:?}"
                );
                // Who computed it: the session's own core inline and after a timer, the other
                // core for `core` and `remote`.
                let by = &line[want.len() + 1..];
                let how = want.rsplit(' ').next().unwrap();
                match how {
                    "inline" | "timer" => {
                        assert_eq!(*own.get_or_insert_with(|| by.to_owned()), by, "{line}")
                    }
                    "core" | "remote" => {
                        assert_ne!(own.as_deref(), Some(by), "{line}: ran on the other core")
                    }
                    _ => {}
                }
            }
            expected.extend(want);
            // Let the cores sleep: the next burst must wake them.
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(expected.len(), total);
    }
    let stats = server.total();
    assert!(
        stats.mail_out > 0 && stats.mail_in > 0,
        "work went between the cores: {stats:?}"
    );
    server.stop_cleanly();
}

/// Reads `n` lines (each ending in `\n`) from `conn`.
fn read_lines(conn: &mut std::net::TcpStream, n: usize) -> Vec<String> {
    let mut lines = Vec::with_capacity(n);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while lines.len() < n {
        let got = match conn.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            got => got
                .expect("replies arrive before the read timeout (a lost wake-up would stall them)"),
        };
        assert!(got > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..got]);
        while let Some(at) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=at).collect();
            lines.push(String::from_utf8(line[..at].to_vec()).unwrap());
        }
    }
    assert!(buf.is_empty(), "nothing more than asked for: {buf:?}");
    lines
}

/// A session's handle reaches that session only: once it has gone, writing to or closing its
/// handle fails with `Gone` at once, from another thread and from a core, and a new session in
/// the same slot receives nothing.
#[test]
fn stale_handles_never_reach_a_new_session() {
    struct Tell(mpsc::Sender<SessionHandle>);
    impl Handler<Lines> for Tell {
        fn on_open(&mut self, s: &mut Session<'_, Lines>) {
            let _ = self.0.send(s.handle());
        }
        fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
            // `stale <n>`: write to the handle numbered n (sent to the test earlier) from this
            // core, and say what happened.
            let text = std::str::from_utf8(line).unwrap();
            if let Some(h) = text.strip_prefix("stale ") {
                let h = decode(h);
                let result = s.core().write_to(h, b"LEAK\n".to_vec());
                s.write(format!("{result:?}\n").as_bytes());
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = util::start(
        Server::new(Lines::new(), move || Tell(tx.clone()))
            .cores(1)
            .bind(util::any_port()),
    );
    let remote = server.remote();
    let first = util::connect(server.addr());
    let old = rx.recv_timeout(util::IO_TIMEOUT).unwrap();
    // A live handle reaches its session.
    remote.write_to(old, b"hello\n".to_vec()).unwrap();
    let mut first = first;
    assert_eq!(util::read_n(&mut first, 6), b"hello\n");
    drop(first);
    server.wait_total("the first session closed", |s| s.closed == 1);
    let mut second = util::connect(server.addr());
    let new = rx.recv_timeout(util::IO_TIMEOUT).unwrap();
    assert_eq!(
        format!("{old:?}").split('#').next(),
        format!("{new:?}").split('#').next(),
        "the new session reuses the slot"
    );
    assert_ne!(old, new);
    assert_eq!(
        remote.write_to(old, b"LEAK\n".to_vec()),
        Err(RemoteError::Gone)
    );
    assert_eq!(remote.close_session(old), Err(RemoteError::Gone));
    second
        .write_all(format!("stale {}\n", encode(old)).as_bytes())
        .unwrap();
    let reply = util::read_n(&mut second, "Err(Gone)\n".len());
    assert_eq!(reply, b"Err(Gone)\n");
    // Nothing else arrives: the stale writes reached nobody.
    remote.write_to(new, b"end\n".to_vec()).unwrap();
    assert_eq!(util::read_n(&mut second, 4), b"end\n");
    // Closing by handle closes after the output is written.
    remote.close_session(new).unwrap();
    util::expect_eof(&mut second);
    server.stop_cleanly();
}

// A handle cannot be rebuilt from text outside the crate, so the test's protocol names
// handles by their index in this table.
fn encode(h: SessionHandle) -> usize {
    let mut table = HANDLES.lock().unwrap();
    table.push(h);
    table.len() - 1
}

fn decode(s: &str) -> SessionHandle {
    HANDLES.lock().unwrap()[s.trim().parse::<usize>().unwrap()]
}

static HANDLES: std::sync::Mutex<Vec<SessionHandle>> = std::sync::Mutex::new(Vec::new());

/// A session paused at its bound of outstanding replies (`max_replies`) is handed no request
/// while it stays there, even when a later reply is completed before an earlier one (the
/// earlier slot still holds the count at the bound). Before the fix, resuming decoded the held
/// input before checking the bound, and the third request's `reserve` failed with `TooMany`.
#[test]
fn no_request_is_delivered_at_the_bound_of_outstanding_replies() {
    /// `slow` answers after 50 ms, anything else after 1 ms, each through a reserved reply.
    struct Later(HashMap<TimerId, Reply>);
    impl Handler<Lines> for Later {
        fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
            let ms = if line == b"slow" { 50 } else { 1 };
            match s.reserve() {
                Ok(reply) => {
                    let id = s.set_timer(Duration::from_millis(ms)).unwrap();
                    self.0.insert(id, reply);
                }
                Err(e) => s.write(format!("reserve failed: {e}\n").as_bytes()),
            }
        }
        fn on_timer(&mut self, s: &mut Session<'_, Lines>, id: TimerId) {
            if let Some(reply) = self.0.remove(&id) {
                s.complete(reply, b"done\n");
            }
        }
    }
    let server = util::start(
        Server::new(Lines::new(), || Later(HashMap::new()))
            .cores(1)
            .max_replies(2)
            .bind(util::any_port()),
    );
    let mut conn = util::connect(server.addr());
    // `slow` and `fast` reach the bound; `fast` completes first and `third` is delivered.
    conn.write_all(b"slow\nfast\nthird\n").unwrap();
    let lines = read_lines(&mut conn, 3);
    assert_eq!(lines, ["done", "done", "done"]);
    server.stop_cleanly();
}
