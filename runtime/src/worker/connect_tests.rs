//! Outbound sessions of another protocol (`CoreCtx::connect`), driven by synthetic driver
//! events: handles given out at once, replies completed across protocols, typed connect
//! failures, the connect timeout, the synchronous refusals, and stale handles.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use super::tests::Bytes;
use super::*;
use crate::codec::{CodecError, Decoded};
use crate::driver::Core;
use crate::error::ConnectError;
use crate::reply::{Reply, SessionHandle};
use crate::session::{Session, SessionId};

/// Where the backend is: nothing connects in these tests.
const BACKEND: &str = "127.0.0.1:9";

/// Newline-terminated lines: the backend's protocol, another codec than the front's.
struct Nl;

impl Codec for Nl {
    type Frame<'a> = &'a [u8];
    type Item = [u8];
    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<&'a [u8]>, CodecError> {
        let end = src.iter().position(|&b| b == b'\n');
        let len = end.unwrap_or(src.len());
        if len > max_frame {
            return Err(CodecError::FrameTooLarge {
                len,
                max: max_frame,
            });
        }
        Ok(match end {
            Some(i) => Decoded::Frame(&src[..i], i + 1),
            None => Decoded::NeedMore(None),
        })
    }
    fn encode(&mut self, line: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
        dst.extend_from_slice(line);
        dst.push(b'\n');
        Ok(())
    }
}

/// The per-core state: what happened, and the handles given out.
#[derive(Default)]
struct Seen {
    log: Vec<String>,
    /// Handles of the front sessions (from `Session::handle`), in the order they opened.
    fronts: Vec<SessionHandle>,
    /// Handles `CoreCtx::connect` returned.
    backends: Vec<SessionHandle>,
    /// Handles the backends saw for themselves (`Session::handle`).
    backends_seen: Vec<SessionHandle>,
}

type Shared = Rc<RefCell<Seen>>;

fn seen(s: &mut CoreCtx) -> Shared {
    s.state::<Shared>().clone()
}

/// The front: "p" forwards to a new backend whose answer completes a reserved reply; anything
/// else is echoed (behind the replies reserved before it).
struct Front;

impl Handler<Bytes> for Front {
    fn on_open(&mut self, s: &mut Session<'_, Bytes>) {
        let handle = s.handle();
        seen(s.core()).borrow_mut().fronts.push(handle);
    }
    fn on_message(&mut self, s: &mut Session<'_, Bytes>, frame: &[u8]) {
        if frame != b"p" {
            return s.send(frame).unwrap();
        }
        let reply = s.reserve().unwrap();
        let shared = seen(s.core());
        let back = Back {
            reply: Some(reply),
            seen: shared.clone(),
        };
        match s.core().connect(BACKEND.parse().unwrap(), Nl, back) {
            Ok(handle) => shared.borrow_mut().backends.push(handle),
            Err(e) => shared.borrow_mut().log.push(format!("connect: {e}")),
        }
    }
}

/// The backend: asks on open, and completes the front's reply with the answer, or with "ERR"
/// if the connect fails.
struct Back {
    reply: Option<Reply>,
    seen: Shared,
}

impl Handler<Nl> for Back {
    fn on_open(&mut self, s: &mut Session<'_, Nl>) {
        self.seen.borrow_mut().backends_seen.push(s.handle());
        s.send(b"req").unwrap();
    }
    fn on_message(&mut self, s: &mut Session<'_, Nl>, answer: &[u8]) {
        if let Some(reply) = self.reply.take() {
            s.complete(reply, answer);
        }
    }
    fn on_error(&mut self, s: &mut Session<'_, Nl>, error: &SessionError) {
        let kind = match error {
            SessionError::Connect { error, .. } => match error {
                ConnectError::Refused(_) => "refused",
                ConnectError::Unreachable(_) => "unreachable",
                ConnectError::TimedOut(_) => "timed out",
                ConnectError::Busy(_) => "busy",
                _ => "other",
            },
            _ => "not a connect error",
        };
        self.seen
            .borrow_mut()
            .log
            .push(format!("back error: {kind}"));
        if let Some(reply) = self.reply.take() {
            s.complete(reply, b"ERR");
        }
    }
    fn on_close(&mut self, _: &mut Session<'_, Nl>, reason: CloseReason) {
        self.seen
            .borrow_mut()
            .log
            .push(format!("back close: {reason:?}"));
    }
}

type FrontWorker = Worker<Bytes, Front, fn(&mut CoreCtx) -> Front>;

fn front(_: &mut CoreCtx) -> Front {
    Front
}

fn worker(max_sessions: usize, connect_timeout: Option<Micros>) -> (FrontWorker, Shared) {
    worker_framed(max_sessions, connect_timeout, 1024)
}

/// A worker whose outbound sessions take frames of up to `outbound_max_frame` bytes (accepted
/// ones: 1024). The per-core state is an Rc: fine, the worker under test runs on this thread
/// only.
#[allow(clippy::arc_with_non_send_sync)]
fn worker_framed(
    max_sessions: usize,
    connect_timeout: Option<Micros>,
    outbound_max_frame: usize,
) -> (FrontWorker, Shared) {
    let cfg = WorkerConfig {
        core: 0,
        max_sessions,
        max_frame: 1024,
        outbound_max_frame,
        timeouts: Timeouts::default(),
        high_water: 1 << 16,
        low_water: 1 << 10,
        max_output: 1 << 20,
        max_timers: 3,
        max_replies: 8,
        core_tick: None,
        nodelay: true,
        connect_timeout,
        connect: None,
        latency: None,
        linger: None,
        tls: None,
        tls_connect: None,
        handshake_timeout: None,
        kernel_tls: false,
    };
    let shared = Shared::default();
    let ctx = CoreCtx::for_test(Box::new(shared.clone()));
    let stats = Arc::new(CoreStats::default());
    let control = Arc::new(Control::new());
    let factory = front as fn(&mut CoreCtx) -> Front;
    let w = Worker::new(cfg, Bytes, Arc::new(factory), stats, control, ctx);
    (w, shared)
}

fn accept(w: &mut FrontWorker) {
    let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    w.accepted(fd);
}

/// Ends a turn and returns the commands, sends as `send <slot> <bytes>`; each send completes at
/// once.
fn turn(w: &mut FrontWorker) -> Vec<String> {
    w.end_turn();
    let mut out = Vec::new();
    for cmd in w.commands().drain(..).collect::<Vec<_>>() {
        match cmd {
            Command::Send { slot, send } => {
                out.push(format!(
                    "send {slot} {}",
                    String::from_utf8_lossy(&send.to_vec())
                ));
                let n = send.len();
                w.sent(slot, send, Ok(n));
            }
            Command::Connect { slot, addr, .. } => {
                let addr = match addr.as_socket() {
                    Some(tcp) => tcp.to_string(),
                    None => crate::unix::UnixAddr::from_sock_addr(&addr)
                        .map_or_else(|| "?".into(), |unix| format!("unix:{unix}")),
                };
                out.push(format!("connect {slot} {addr}"))
            }
            Command::Open { slot, .. } => out.push(format!("open {slot}")),
            cmd => out.push(format!("{cmd:?}")),
        }
    }
    out
}

fn os_error(errno: i32) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(errno))
}

#[test]
fn a_backend_of_another_protocol_answers_the_fronts_reply_in_order() {
    let (mut w, seen) = worker(8, None);
    accept(&mut w);
    w.received(0, b"p");
    let backend = seen.borrow().backends[0];
    assert_eq!(
        w.resolve(backend),
        Some(1),
        "opened right after the callback that asked"
    );
    w.received(0, b"after");
    assert_eq!(
        turn(&mut w),
        ["open 0", &format!("connect 1 {BACKEND}")],
        "the echo waits behind the reserved reply; nothing is sent while connecting"
    );
    w.connected(1, Ok(()));
    assert_eq!(turn(&mut w), ["send 1 req\n"]);
    w.received(1, b"ans");
    assert_eq!(turn(&mut w), Vec::<String>::new(), "half a line");
    w.received(1, b"wer\n");
    assert_eq!(turn(&mut w), ["send 0 answerafter"]);
    let seen = seen.borrow();
    assert_eq!(
        seen.backends_seen,
        [backend],
        "the handle given out names the session its callbacks see"
    );
    assert_eq!(w.stats.snapshot().connected, 1);
}

/// A backend's reply larger than the accepted sessions' `max_frame` is bounded by
/// `outbound_max_frame` only: one large reply does not close the backend connection.
#[test]
fn outbound_sessions_have_their_own_frame_bound() {
    let answer = vec![b'a'; 4000];
    let reply = [&answer[..], b"\n"].concat();
    let (mut w, seen) = worker_framed(8, None, 1 << 20);
    accept(&mut w);
    w.received(0, b"p");
    turn(&mut w);
    w.connected(1, Ok(()));
    assert_eq!(turn(&mut w), ["send 1 req\n"]);
    w.received(1, &reply);
    let out = turn(&mut w);
    assert_eq!(out, [format!("send 0 {}", "a".repeat(4000))]);
    assert_eq!(w.stats.snapshot().codec_errors, 0);
    assert!(seen.borrow().log.is_empty(), "{:?}", seen.borrow().log);

    // Under a bound smaller than the reply, the backend session fails as it did before.
    let (mut w, seen) = worker_framed(8, None, 1024);
    accept(&mut w);
    w.received(0, b"p");
    turn(&mut w);
    w.connected(1, Ok(()));
    turn(&mut w);
    w.received(1, &reply);
    turn(&mut w);
    assert_eq!(w.stats.snapshot().codec_errors, 1);
    assert_eq!(
        seen.borrow().log.last().map(String::as_str),
        Some("back close: CodecError")
    );
}

#[test]
fn connect_failures_reach_the_handler_classified() {
    for (errno, kind) in [
        (libc::ECONNREFUSED, "refused"),
        (libc::EHOSTUNREACH, "unreachable"),
        (libc::ENETUNREACH, "unreachable"),
        (libc::ETIMEDOUT, "timed out"),
        // A Unix listener's full backlog, and a Unix path with no socket file.
        (libc::EAGAIN, "busy"),
        (libc::ENOENT, "refused"),
        (libc::EACCES, "other"),
    ] {
        let (mut w, seen) = worker(8, None);
        accept(&mut w);
        w.received(0, b"p");
        turn(&mut w);
        w.connected(1, os_error(errno));
        assert_eq!(
            turn(&mut w),
            ["Close { slot: 1 }", "send 0 ERR"],
            "errno {errno}"
        );
        assert_eq!(
            seen.borrow().log,
            [format!("back error: {kind}"), "back close: IoError".into()]
        );
        assert_eq!(w.stats.snapshot().connect_errors, 1);
    }
}

#[test]
fn a_connect_not_established_in_time_fails_as_timed_out() {
    let (mut w, seen) = worker(8, Some(1_000));
    w.now = 500;
    accept(&mut w);
    w.received(0, b"p");
    turn(&mut w);
    assert_eq!(w.timers.next(), Some(1_500), "on the core's deadline heap");
    w.now = 1_499;
    w.fire_timers();
    assert_eq!(turn(&mut w), Vec::<String>::new());
    w.now = 1_500;
    w.fire_timers();
    assert_eq!(turn(&mut w), ["Close { slot: 1 }", "send 0 ERR"]);
    assert_eq!(
        seen.borrow().log,
        ["back error: timed out", "back close: IoError"]
    );
    // A connect that succeeds in time leaves nothing due.
    w.received(0, b"p");
    turn(&mut w);
    w.connected(2, Ok(()));
    w.now = 10_000;
    w.fire_timers();
    assert_eq!(turn(&mut w), ["send 2 req\n"]);
}

#[test]
fn connect_fails_at_once_without_room_or_once_draining() {
    let (mut w, seen) = worker(3, None);
    accept(&mut w);
    w.received(0, b"p");
    w.received(0, b"p");
    assert_eq!(seen.borrow().backends.len(), 2);
    w.received(0, b"p");
    assert_eq!(
        seen.borrow().log,
        ["connect: no room: the core holds its maximum of 3 sessions"]
    );
    let (mut w, seen) = worker(8, None);
    accept(&mut w);
    w.control.request_stop(std::time::Duration::from_secs(60));
    w.woken();
    w.received(0, b"p");
    assert_eq!(
        seen.borrow().log,
        ["connect: the core is draining or stopped"]
    );
    assert!(seen.borrow().backends.is_empty());
}

#[test]
fn a_stale_handle_reaches_nothing_once_its_slot_is_reused() {
    let (mut w, seen) = worker(8, None);
    accept(&mut w);
    w.received(0, b"p");
    turn(&mut w);
    let (a, backend) = (seen.borrow().fronts[0], seen.borrow().backends[0]);
    assert_eq!((w.resolve(a), w.resolve(backend)), (Some(0), Some(1)));
    // The front goes (reset), its reply still held by the backend; another takes its slot.
    w.read_closed(0, Some(io::Error::from_raw_os_error(libc::ECONNRESET)));
    assert_eq!(turn(&mut w), ["Close { slot: 0 }"]);
    w.closed(0);
    accept(&mut w);
    let b = seen.borrow().fronts[1];
    assert_eq!(w.resolve(a), None, "a's handle is stale");
    assert_eq!(w.resolve(b), Some(0), "b took a's slot");
    assert_ne!(a, b);
    // The backend answers a's reply: nothing reaches b.
    w.connected(1, Ok(()));
    w.received(1, b"for a\n");
    assert_eq!(turn(&mut w), ["open 0", "send 1 req\n"]);
    w.received(0, b"mine");
    assert_eq!(turn(&mut w), ["send 0 mine"]);
    // The backend goes; a new one takes its slot: the old handle reaches nothing either.
    w.read_closed(1, None);
    w.closed(1);
    turn(&mut w);
    assert_eq!(w.resolve(backend), None);
    w.received(0, b"p");
    let again = seen.borrow().backends[1];
    assert_eq!(w.resolve(again), Some(1));
    assert_eq!(w.resolve(backend), None, "slot 1 holds another session now");
    // Nor does a handle of another core's session.
    let elsewhere = SessionHandle {
        server: 0,
        worker: 1,
        slot: 0,
        seq: SessionId::new(1, 0).as_u64(),
    };
    assert_eq!(w.resolve(elsewhere), None);
    // Nor one of another server's session in the same slot.
    let other_server = SessionHandle { server: 7, ..b };
    assert_eq!(w.resolve(other_server), None);
}

// ---- Outbound sessions at the limits: the session bound, handles of sessions still
// connecting, and timeouts once connected.

/// A handler factory that opens one backend per accepted session (a per-client upstream).
fn front_with_backend(ctx: &mut CoreCtx) -> Front {
    let shared = seen(ctx);
    let back = Back {
        reply: None,
        seen: shared.clone(),
    };
    match ctx.connect(BACKEND.parse().unwrap(), Nl, back) {
        Ok(h) => shared.borrow_mut().backends.push(h),
        Err(e) => shared.borrow_mut().log.push(format!("connect: {e}")),
    }
    Front
}

#[test]
fn a_connect_from_the_factory_never_passes_max_sessions() {
    let (w, _seen) = worker(3, None);
    // Same worker, but with a factory that connects.
    let Worker {
        cfg,
        codec,
        stats,
        control,
        ctx,
        ..
    } = w;
    let factory = front_with_backend as fn(&mut CoreCtx) -> Front;
    let mut w: FrontWorker = Worker::new(cfg, codec, Arc::new(factory), stats, control, ctx);
    accept(&mut w); // front 0 + backend 1
    let cmds = turn(&mut w);
    accept(&mut w); // 2 held, room for 1: front 2 ... and backend 3?
    let cmds2 = turn(&mut w);
    assert!(
        w.conns.len() <= 3,
        "core holds {} sessions with max_sessions 3: {cmds:?} {cmds2:?}",
        w.conns.len()
    );
}

#[test]
fn close_session_reaches_a_session_still_connecting() {
    let (mut w, seen) = worker(8, None);
    accept(&mut w);
    w.received(0, b"p");
    turn(&mut w);
    let backend = seen.borrow().backends[0];
    // What `CoreCtx::close_session(backend)` delivers (it returned Ok).
    w.apply_msg(Msg::Close { session: backend });
    let cmds = turn(&mut w);
    assert!(
        cmds.iter().any(|c| c == "Close { slot: 1 }"),
        "close by handle of a connecting session was dropped: {cmds:?}, stale={}",
        w.stats.snapshot().stale_messages
    );
}

#[test]
fn a_write_to_a_session_still_connecting_is_not_lost() {
    let (mut w, seen) = worker(8, None);
    accept(&mut w);
    w.received(0, b"p");
    turn(&mut w);
    let backend = seen.borrow().backends[0];
    w.apply_msg(Msg::Write {
        session: backend,
        bytes: b"hello\n".to_vec(),
    });
    w.connected(1, Ok(()));
    let cmds = turn(&mut w);
    assert!(
        cmds.iter().any(|c| c.contains("hello")),
        "bytes written by handle before the connect completed were dropped: {cmds:?}, stale={}",
        w.stats.snapshot().stale_messages
    );
}

/// A backend that stays silent after connecting.
struct Quiet {
    seen: Shared,
}
impl Handler<Nl> for Quiet {
    fn on_close(&mut self, _: &mut Session<'_, Nl>, reason: CloseReason) {
        self.seen
            .borrow_mut()
            .log
            .push(format!("quiet close: {reason:?}"));
    }
}

#[test]
fn the_idle_timeout_of_a_connected_session_is_armed_on_connect() {
    for connect_timeout in [None, Some(5_000_000)] {
        let (mut w, seen) = worker(8, connect_timeout);
        w.cfg.timeouts = Timeouts::new(Some(std::time::Duration::from_millis(1)), None, None);
        let q = Quiet { seen: seen.clone() };
        let h = w.ctx.connect(BACKEND.parse().unwrap(), Nl, q).unwrap();
        turn(&mut w);
        let slot = w.resolve(h).unwrap();
        w.now = 100;
        w.connected(slot, Ok(()));
        turn(&mut w);
        w.now = 10_000; // 10 ms later: idle for ten times the idle timeout.
        w.fire_timers();
        turn(&mut w);
        assert_eq!(
            seen.borrow().log,
            ["quiet close: IdleTimeout"],
            "connect_timeout {connect_timeout:?}: next timer entry at {:?}",
            w.timers.next()
        );
    }
}
