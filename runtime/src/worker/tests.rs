//! The core's session transitions, driven by synthetic driver events: no kernel involved.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::codec::{CodecError, Decoded};
use crate::driver::Core;
use crate::reply::Reply;
use crate::session::Session;
use crate::timer::Micros;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// What the core asked the driver to do.
#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Open(u32, RawFd),
    Connect(u32, std::net::SocketAddr),
    Send(u32, Vec<u8>, usize),
    Close(u32),
    ShutdownWrite(u32),
    Pause(u32),
    Resume(u32),
    StopAccepting,
}

/// A stand-in driver: reports synthetic events to the core, then records the commands each
/// produced, as a driver would apply them. It keeps the buffer of each send "in flight" until
/// the test reports the send complete.
#[derive(Default)]
struct FakeOps {
    cmds: Vec<Cmd>,
    /// The label the test gave each accepted descriptor, by its real number.
    labels: std::collections::HashMap<RawFd, RawFd>,
    sends: std::collections::HashMap<u32, Box<crate::driver::SendBuf>>,
}

impl FakeOps {
    fn take(&mut self) -> Vec<Cmd> {
        std::mem::take(&mut self.cmds)
    }

    /// Applies the core's queued commands by recording them.
    fn collect(&mut self, w: &mut TestWorker) {
        for cmd in w.commands().drain(..) {
            self.cmds.push(match cmd {
                Command::Open { slot, fd } => {
                    Cmd::Open(slot, self.labels.remove(&fd.as_raw_fd()).unwrap_or(-1))
                }
                Command::Connect { slot, addr, .. } => {
                    Cmd::Connect(slot, addr.as_socket().expect("a TCP connect"))
                }
                Command::Send { slot, send } => {
                    let cmd = Cmd::Send(slot, send.to_vec(), send.iovecs().len());
                    assert!(
                        self.sends.insert(slot, send).is_none(),
                        "two sends in flight"
                    );
                    cmd
                }
                Command::Close { slot } => Cmd::Close(slot),
                Command::ShutdownWrite { slot } => Cmd::ShutdownWrite(slot),
                Command::PauseRecv { slot } => Cmd::Pause(slot),
                Command::ResumeRecv { slot } => Cmd::Resume(slot),
                Command::StopAccepting => Cmd::StopAccepting,
            });
        }
    }

    /// A connection accepted; `label` names it in the `Open` command.
    fn accepted(&mut self, w: &mut TestWorker, label: RawFd) {
        let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        self.labels.insert(fd.as_raw_fd(), label);
        w.accepted(fd);
        self.collect(w);
    }

    fn received(&mut self, w: &mut TestWorker, slot: u32, data: &[u8]) {
        w.received(slot, data);
        self.collect(w);
    }

    fn read_closed(&mut self, w: &mut TestWorker, slot: u32, error: Option<io::Error>) {
        w.read_closed(slot, error);
        self.collect(w);
    }

    fn sent(&mut self, w: &mut TestWorker, slot: u32, result: io::Result<usize>) {
        let send = self.sends.remove(&slot).expect("a send in flight");
        w.sent(slot, send, result);
        self.collect(w);
    }

    fn closed(&mut self, w: &mut TestWorker, slot: u32) {
        self.sends.remove(&slot);
        w.closed(slot);
        self.collect(w);
    }

    fn connected(&mut self, w: &mut TestWorker, slot: u32, result: io::Result<()>) {
        w.connected(slot, result);
        self.collect(w);
    }

    fn woken(&mut self, w: &mut TestWorker) {
        w.woken();
        self.collect(w);
    }

    /// The end of a turn, as `Worker::run` does it with a driver that reported everything.
    /// As `Worker::run` ends a settled turn (the fake driver reads nothing between turns).
    fn end_turn(&mut self, w: &mut TestWorker) {
        w.close_idle();
        w.hand_over_to_kernel();
        w.end_turn();
        self.collect(w);
    }

    fn fire_timers(&mut self, w: &mut TestWorker) {
        w.fire_timers();
        self.collect(w);
    }
}

/// Bytes through as they come; `!` is malformed.
#[derive(Clone)]
pub(crate) struct Bytes;

impl Codec for Bytes {
    type Frame<'a> = &'a [u8];
    type Item = [u8];
    fn decode<'a>(&mut self, src: &'a [u8], _: usize) -> Result<Decoded<&'a [u8]>, CodecError> {
        if src.is_empty() {
            return Ok(Decoded::NeedMore(None));
        }
        if src[0] == b'!' {
            return Err(CodecError::Malformed("bang".into()));
        }
        if src[0] == b'[' {
            // A bracketed frame may arrive split: "[ab" then "c]".
            return Ok(match src.iter().position(|&b| b == b']') {
                Some(end) => Decoded::Frame(&src[..=end], end + 1),
                None => Decoded::NeedMore(None),
            });
        }
        Ok(Decoded::Frame(src, src.len()))
    }
    fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
        dst.extend_from_slice(item);
        Ok(())
    }
}

type Log = Rc<RefCell<Vec<String>>>;

thread_local! {
    /// `TestHandler::on_error` writes nothing (the TLS tests' quiet handler).
    pub(crate) static QUIET_ON_ERROR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Echoes; panics on "boom"; closes on "bye"; logs callbacks. Timers: `t=<µs>` sets one,
/// `r=<µs>` sets one whose `on_timer` sets another for zero, `c=<n>` cancels the `n`th set; each
/// is named in the log by the order it was set.
struct TestHandler {
    log: Log,
    timers: Vec<crate::timer::TimerId>,
    /// Timers whose firing sets another for zero.
    rearm: Vec<crate::timer::TimerId>,
}

impl TestHandler {
    fn set_timer(&mut self, s: &mut Session<'_, Bytes>, micros: &[u8]) -> Option<usize> {
        let micros: u64 = std::str::from_utf8(micros).unwrap().parse().unwrap();
        match s.set_timer(std::time::Duration::from_micros(micros)) {
            Ok(id) => {
                self.timers.push(id);
                Some(self.timers.len() - 1)
            }
            Err(e) => {
                self.log.borrow_mut().push(format!("set_timer: {e}"));
                None
            }
        }
    }
}

impl Handler<Bytes> for TestHandler {
    fn on_open(&mut self, s: &mut Session<'_, Bytes>) {
        self.log.borrow_mut().push(format!("open {}", s.id()));
    }
    fn on_message(&mut self, s: &mut Session<'_, Bytes>, frame: &[u8]) {
        match frame {
            b"boom" => panic!("boom"),
            b"bye" => {
                s.send(b"ok").unwrap();
                s.close();
            }
            b"tick" => s.set_tick(Some(std::time::Duration::from_millis(10))),
            b"dial" => s.connect("127.0.0.1:9".parse().unwrap()),
            [b't', b'=', micros @ ..] => {
                self.set_timer(s, micros);
            }
            [b'r', b'=', micros @ ..] => {
                if let Some(n) = self.set_timer(s, micros) {
                    self.rearm.push(self.timers[n]);
                }
            }
            [b'c', b'=', n @ ..] => {
                let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
                let cancelled = s.cancel_timer(self.timers[n]);
                self.log
                    .borrow_mut()
                    .push(format!("cancel {n} {cancelled}"));
            }
            _ => s.send(frame).unwrap(),
        }
    }
    fn on_tick(&mut self, s: &mut Session<'_, Bytes>) {
        s.send(b"T").unwrap();
    }
    fn on_timer(&mut self, s: &mut Session<'_, Bytes>, id: crate::timer::TimerId) {
        let n = self.timers.iter().position(|&t| t == id).unwrap();
        self.log.borrow_mut().push(format!("timer {n}"));
        if self.rearm.contains(&id) {
            self.set_timer(s, b"0");
        }
    }
    fn on_close(&mut self, _: &mut Session<'_, Bytes>, reason: CloseReason) {
        self.log.borrow_mut().push(format!("close {reason:?}"));
    }
    fn on_error(&mut self, s: &mut Session<'_, Bytes>, error: &SessionError) {
        self.log.borrow_mut().push(format!("error {error}"));
        if QUIET_ON_ERROR.with(|q| q.get()) {
            return;
        }
        s.send(b"ERR").unwrap();
    }
}

type TestWorker = Worker<Bytes, TestHandler, Box<dyn Fn(&mut CoreCtx) -> TestHandler>>;

fn worker() -> (TestWorker, Log, Arc<CoreStats>, Arc<Control>) {
    worker_with(Timeouts::default())
}

// The factory shares the test's Rc log: fine, the worker under test runs on this thread only.
#[allow(clippy::arc_with_non_send_sync)]
fn worker_with(timeouts: Timeouts) -> (TestWorker, Log, Arc<CoreStats>, Arc<Control>) {
    let log: Log = Rc::default();
    let stats = Arc::new(CoreStats::default());
    let factory_log = log.clone();
    let factory: Box<dyn Fn(&mut CoreCtx) -> TestHandler> = Box::new(move |_| TestHandler {
        log: factory_log.clone(),
        timers: Vec::new(),
        rearm: Vec::new(),
    });
    let cfg = WorkerConfig {
        core: 0,
        max_sessions: 4,
        max_frame: 1024,
        outbound_max_frame: 1024,
        timeouts,
        high_water: 8,
        low_water: 2,
        max_output: 1 << 20,
        max_timers: 3,
        max_replies: 2,
        core_tick: None,
        nodelay: true,
        connect_timeout: None,
        connect: None,
        latency: None,
        linger: None,
        tls: None,
        tls_connect: None,
        handshake_timeout: None,
        kernel_tls: false,
    };
    let control = Arc::new(Control::new());
    let w = Worker::new(
        cfg,
        Bytes,
        Arc::new(factory),
        stats.clone(),
        control.clone(),
        CoreCtx::for_test(Box::new(())),
    );
    (w, log, stats, control)
}

fn dev_null() -> RawFd {
    std::os::fd::IntoRawFd::into_raw_fd(std::fs::File::open("/dev/null").unwrap())
}

fn send(slot: u32, bytes: &[u8], iovecs: usize) -> Cmd {
    Cmd::Send(slot, bytes.to_vec(), iovecs)
}

#[test]
fn replies_of_a_turn_go_out_in_one_send_and_partial_writes_resume() {
    let (mut w, _, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    assert_eq!(ops.take(), [Cmd::Open(0, 10)]);
    ops.received(&mut w, 0, b"ab");
    ops.received(&mut w, 0, b"cd");
    assert_eq!(ops.take(), [], "nothing is written before the turn ends");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(0, b"abcd", 1)]);
    ops.received(&mut w, 0, b"ef");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [], "one send in flight at a time");
    ops.sent(&mut w, 0, Ok(2));
    ops.end_turn(&mut w);
    assert_eq!(
        ops.take(),
        [send(0, b"cdef", 2)],
        "the rest goes out as one sendmsg"
    );
    ops.sent(&mut w, 0, Ok(4));
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), []);
    let s = stats.snapshot();
    assert_eq!(
        (s.writes, s.partial_writes, s.bytes_out, s.frames_in),
        (2, 1, 6, 3)
    );
}

#[test]
fn eof_flushes_pending_output_then_closes() {
    let (mut w, log, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"xyz");
    ops.end_turn(&mut w);
    ops.take();
    ops.read_closed(&mut w, 0, None);
    assert_eq!(ops.take(), [], "output still in flight: no close yet");
    ops.sent(&mut w, 0, Ok(3));
    assert_eq!(ops.take(), [Cmd::Close(0)]);
    ops.received(&mut w, 0, b"late");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [], "nothing is handled after close");
    ops.closed(&mut w, 0);
    assert!(w.conns.is_empty());
    assert_eq!(log.borrow().last().unwrap(), "close PeerClosed");
    assert_eq!(stats.snapshot().closed_for(CloseReason::PeerClosed), 1);
    assert_eq!(stats.snapshot().closed, 1);
}

#[test]
fn handler_close_flushes_its_reply_first() {
    let (mut w, log, _, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    ops.received(&mut w, 0, b"bye");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(0, b"ok", 1)]);
    ops.sent(&mut w, 0, Ok(2));
    assert_eq!(ops.take(), [Cmd::Close(0)]);
    assert_eq!(log.borrow().last().unwrap(), "close Local");
}

#[test]
fn a_panic_closes_only_its_session() {
    let (mut w, log, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.accepted(&mut w, 11);
    ops.take();
    ops.received(&mut w, 1, b"boom");
    ops.received(&mut w, 0, b"fine");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [Cmd::Close(1), send(0, b"fine", 1)]);
    assert_eq!(stats.snapshot().panics, 1);
    assert_eq!(stats.snapshot().closed_for(CloseReason::Panic), 1);
    assert!(
        log.borrow()
            .iter()
            .any(|l| l.contains("on_message panicked: boom")),
        "{log:?}"
    );
}

#[test]
fn malformed_input_gets_its_error_reply_then_close() {
    let (mut w, log, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    ops.received(&mut w, 0, b"!x");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(0, b"ERR", 1)]);
    ops.received(&mut w, 0, b"ignored");
    ops.sent(&mut w, 0, Ok(3));
    assert_eq!(ops.take(), [Cmd::Close(0)]);
    assert_eq!(stats.snapshot().codec_errors, 1);
    assert_eq!(log.borrow().last().unwrap(), "close CodecError");
}

#[test]
fn reset_during_send_closes_cleanly() {
    let (mut w, log, _, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"a");
    ops.end_turn(&mut w);
    ops.take();
    ops.sent(&mut w, 0, Err(io::Error::from_raw_os_error(libc::EPIPE)));
    assert_eq!(ops.take(), [Cmd::Close(0)]);
    assert_eq!(log.borrow().last().unwrap(), "close Reset");
}

#[test]
fn session_limit_rejects_and_freed_slots_are_reused() {
    let (mut w, log, stats, _) = worker();
    let mut ops = FakeOps::default();
    for fd in 100..104 {
        ops.accepted(&mut w, fd);
    }
    // The fifth is over the limit of 4: closed at once (so it must be a real descriptor).
    ops.accepted(&mut w, dev_null());
    assert_eq!(stats.snapshot().rejected, 1);
    assert_eq!(ops.take().len(), 4);
    ops.read_closed(
        &mut w,
        2,
        Some(io::Error::from_raw_os_error(libc::ECONNRESET)),
    );
    assert_eq!(ops.take(), [Cmd::Close(2)]);
    ops.accepted(&mut w, dev_null());
    assert_eq!(
        ops.take(),
        [],
        "slot 2 is not reused before the driver reports it closed"
    );
    assert_eq!(stats.snapshot().rejected, 2);
    ops.closed(&mut w, 2);
    ops.accepted(&mut w, 201);
    assert_eq!(ops.take(), [Cmd::Open(2, 201)]);
    let opens: Vec<_> = log
        .borrow()
        .iter()
        .filter(|l| l.starts_with("open"))
        .cloned()
        .collect();
    assert_eq!(
        opens.last().unwrap(),
        "open 0/4",
        "a reused slot gets a new session id"
    );
}

#[test]
fn stop_closes_every_session_and_stops_accepting() {
    let (mut w, _, stats, control) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.accepted(&mut w, 11);
    ops.take();
    ops.woken(&mut w);
    assert_eq!(
        ops.take(),
        [],
        "a wake-up without a stop request does nothing"
    );
    control.request_stop(std::time::Duration::ZERO);
    ops.woken(&mut w);
    assert_eq!(
        ops.take(),
        [Cmd::StopAccepting, Cmd::Close(0), Cmd::Close(1)]
    );
    ops.closed(&mut w, 0);
    ops.closed(&mut w, 1);
    assert!(w.conns.is_empty());
    assert_eq!(stats.snapshot().closed_for(CloseReason::Shutdown), 2);
}

#[test]
fn output_above_high_water_pauses_reading_until_it_drains() {
    let (mut w, _, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    ops.received(&mut w, 0, b"0123456789");
    assert_eq!(
        ops.take(),
        [Cmd::Pause(0)],
        "10 bytes pending > high water 8"
    );
    // Data racing the pause is held, not decoded (and not dropped).
    ops.received(&mut w, 0, b"ab");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(0, b"0123456789", 1)]);
    ops.sent(&mut w, 0, Ok(7));
    assert_eq!(ops.take(), [], "3 bytes pending is above low water 2");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(0, b"789", 1)]);
    // At the low mark the held input is decoded, then reading resumes.
    ops.sent(&mut w, 0, Ok(2));
    assert_eq!(ops.take(), [Cmd::Resume(0)]);
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(0, b"9ab", 1)]);
    assert_eq!(stats.snapshot().backpressure_pauses, 1);
    assert_eq!(stats.snapshot().frames_in, 2);
}

#[test]
fn input_held_by_a_pause_is_answered_before_the_peers_eof_closes() {
    let (mut w, log, _, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    ops.received(&mut w, 0, b"0123456789");
    ops.received(&mut w, 0, b"ab");
    ops.read_closed(&mut w, 0, None);
    ops.end_turn(&mut w);
    assert_eq!(
        ops.take(),
        [Cmd::Pause(0), send(0, b"0123456789", 1)],
        "the EOF waits behind the held input"
    );
    ops.sent(&mut w, 0, Ok(10));
    ops.end_turn(&mut w);
    assert_eq!(
        ops.take(),
        [send(0, b"ab", 1)],
        "held input answered, no re-arm"
    );
    ops.sent(&mut w, 0, Ok(2));
    assert_eq!(ops.take(), [Cmd::Close(0)]);
    ops.closed(&mut w, 0);
    assert_eq!(log.borrow().last().unwrap(), "close PeerClosed");
}

fn timeouts(idle: Option<u64>, read: Option<u64>, write: Option<u64>) -> Timeouts {
    Timeouts {
        idle,
        read,
        write,
        tick: None,
    }
}

/// Runs the core's timers as if the turn happened at `now`.
fn at(w: &mut TestWorker, ops: &mut FakeOps, now: Micros) {
    w.now = now;
    ops.fire_timers(w);
    ops.end_turn(w);
}

#[test]
fn idle_timeout_counts_from_the_last_receive() {
    let (mut w, log, stats, _) = worker_with(timeouts(Some(100), None, None));
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    w.now = 50;
    ops.received(&mut w, 0, b"x");
    ops.end_turn(&mut w);
    w.now = 60;
    ops.sent(&mut w, 0, Ok(1));
    ops.take();
    at(&mut w, &mut ops, 100);
    assert!(
        !ops.take().contains(&Cmd::Close(0)),
        "activity at 50 moved the deadline to 150"
    );
    at(&mut w, &mut ops, 149);
    assert!(!ops.take().contains(&Cmd::Close(0)));
    at(&mut w, &mut ops, 150);
    assert!(ops.take().contains(&Cmd::Close(0)));
    assert_eq!(log.borrow().last().unwrap(), "close IdleTimeout");
    assert_eq!(stats.snapshot().closed_for(CloseReason::IdleTimeout), 1);
}

#[test]
fn read_timeout_closes_a_frame_that_never_completes() {
    let (mut w, log, _, _) = worker_with(timeouts(Some(1000), Some(100), None));
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    w.now = 10;
    ops.received(&mut w, 0, b"[ab");
    w.now = 90;
    ops.received(&mut w, 0, b"c");
    at(&mut w, &mut ops, 109);
    assert_eq!(
        ops.take(),
        [],
        "the trickle does not restart the frame's clock"
    );
    at(&mut w, &mut ops, 110);
    assert_eq!(ops.take(), [Cmd::Close(0)]);
    assert_eq!(log.borrow().last().unwrap(), "close ReadTimeout");
}

#[test]
fn read_timeout_restarts_with_each_new_frame() {
    let (mut w, _, _, _) = worker_with(timeouts(None, Some(100), None));
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    w.now = 10;
    ops.received(&mut w, 0, b"[a");
    w.now = 90;
    // Completes the frame and starts the next one.
    ops.received(&mut w, 0, b"b][c");
    ops.end_turn(&mut w);
    ops.take();
    at(&mut w, &mut ops, 110);
    assert_eq!(ops.take(), [], "the frame started at 90 has until 190");
    at(&mut w, &mut ops, 190);
    assert_eq!(ops.take(), [Cmd::Close(0)]);
}

#[test]
fn write_timeout_closes_output_that_makes_no_progress() {
    let (mut w, log, _, _) = worker_with(timeouts(None, None, Some(100)));
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"abcdef");
    ops.end_turn(&mut w);
    ops.take();
    w.now = 80;
    ops.sent(&mut w, 0, Ok(2));
    ops.end_turn(&mut w);
    ops.take();
    at(&mut w, &mut ops, 179);
    assert_eq!(ops.take(), [], "progress at 80 moved the deadline to 180");
    at(&mut w, &mut ops, 180);
    assert_eq!(ops.take(), [Cmd::Close(0)]);
    assert_eq!(log.borrow().last().unwrap(), "close WriteTimeout");
}

#[test]
fn ticks_of_the_same_period_fall_on_one_grid() {
    let (mut w, _, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.accepted(&mut w, 11);
    w.now = 3_000;
    ops.received(&mut w, 0, b"tick");
    w.now = 7_000;
    ops.received(&mut w, 1, b"tick");
    ops.end_turn(&mut w);
    ops.take();
    at(&mut w, &mut ops, 9_999);
    assert_eq!(ops.take(), []);
    at(&mut w, &mut ops, 10_000);
    assert_eq!(
        ops.take(),
        [send(0, b"T", 1), send(1, b"T", 1)],
        "both tick in one turn"
    );
    assert_eq!(stats.snapshot().ticks, 2);
}

#[test]
fn tick_fires_at_the_period_the_handler_set() {
    let (mut w, _, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"tick");
    ops.take();
    at(&mut w, &mut ops, 9_999);
    assert_eq!(ops.take(), []);
    at(&mut w, &mut ops, 10_000);
    assert_eq!(ops.take(), [send(0, b"T", 1)]);
    ops.sent(&mut w, 0, Ok(1));
    at(&mut w, &mut ops, 20_000);
    assert_eq!(ops.take(), [send(0, b"T", 1)]);
    assert_eq!(stats.snapshot().ticks, 2);
}

#[test]
fn drain_closes_idle_sessions_at_once_and_busy_ones_once_answered() {
    let (mut w, log, stats, control) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10); // Idle.
    ops.accepted(&mut w, 11); // In the middle of a frame.
    ops.accepted(&mut w, 12); // Its reply is being written.
    ops.take();
    ops.received(&mut w, 1, b"[ab");
    ops.received(&mut w, 2, b"x");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(2, b"x", 1)]);
    control.request_stop(std::time::Duration::from_secs(3600));
    ops.woken(&mut w);
    assert_eq!(ops.take(), [Cmd::StopAccepting]);
    ops.end_turn(&mut w);
    assert_eq!(
        ops.take(),
        [Cmd::Close(0)],
        "only the idle session closes, at the end of the turn"
    );
    assert_eq!(log.borrow().last().unwrap(), "close Drained");
    // The frame in progress is completed, answered, and then the session closes.
    ops.received(&mut w, 1, b"c]");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(1, b"[abc]", 1)]);
    ops.sent(&mut w, 1, Ok(5));
    ops.sent(&mut w, 2, Ok(1));
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [Cmd::Close(1), Cmd::Close(2)]);
    // A connection from the listener's backlog is served its first request, then closed.
    ops.accepted(&mut w, 13);
    assert_eq!(ops.take(), [Cmd::Open(3, 13)]);
    ops.received(&mut w, 3, b"hi");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [send(3, b"hi", 1)]);
    ops.sent(&mut w, 3, Ok(2));
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [Cmd::Close(3)]);
    for slot in 0..4 {
        ops.closed(&mut w, slot);
    }
    assert_eq!(stats.snapshot().closed_for(CloseReason::Drained), 4);
    // One that never sends is cut off at the deadline.
    ops.accepted(&mut w, 14);
    ops.take();
    control.request_stop(std::time::Duration::ZERO);
    ops.woken(&mut w);
    assert_eq!(
        ops.take(),
        [Cmd::Close(3)],
        "the slab reuses the last freed slot"
    );
    assert_eq!(log.borrow().last().unwrap(), "close Shutdown");
}

/// Keeps its session through a drain until it sees "last", then says goodbye and closes.
struct Goodbye;

impl Handler<Bytes> for Goodbye {
    fn on_message(&mut self, s: &mut Session<'_, Bytes>, frame: &[u8]) {
        s.send(frame).unwrap();
        if s.is_draining() && frame == b"last" {
            s.send(b"bye").unwrap();
            s.close_when_idle();
        }
    }
    fn on_drain(&mut self, _: &mut Session<'_, Bytes>) {}
}

#[test]
fn on_drain_can_keep_a_session_until_a_protocol_boundary() {
    let stats = Arc::new(CoreStats::default());
    let control = Arc::new(Control::new());
    let (w, _, _, _) = worker();
    let mut w: Worker<Bytes, Goodbye, _> = Worker::new(
        w.cfg,
        Bytes,
        Arc::new(|_: &mut CoreCtx| Goodbye),
        stats.clone(),
        control.clone(),
        CoreCtx::for_test(Box::new(())),
    );
    let mut cmds = Vec::new();
    let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    w.accepted(fd);
    control.request_stop(std::time::Duration::from_secs(3600));
    w.woken();
    cmds.append(w.commands());
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Close { .. })),
        "kept by its handler: {cmds:?}"
    );
    w.received(0, b"more");
    w.received(0, b"last");
    w.end_turn();
    let send = match w.commands().pop() {
        Some(Command::Send { slot: 0, send }) => send,
        other => panic!("expected a send, got {other:?}"),
    };
    assert_eq!(send.to_vec(), b"morelastbye");
    let n = send.len();
    w.sent(0, send, Ok(n));
    w.close_idle();
    w.end_turn();
    // (The 11 bytes passed the test's 8-byte high-water mark: reading paused and resumed.)
    assert!(
        matches!(w.commands().last(), Some(Command::Close { slot: 0 })),
        "closed once its goodbye was written: {:?}",
        w.commands()
    );
}

#[test]
fn a_close_from_our_side_lingers_for_the_peers_eof() {
    let (mut w, log, _, _) = worker();
    w.cfg.linger = Some(100);
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.accepted(&mut w, 11);
    ops.take();
    ops.received(&mut w, 0, b"bye");
    ops.received(&mut w, 1, b"!malformed");
    ops.end_turn(&mut w);
    ops.take();
    ops.sent(&mut w, 0, Ok(2));
    ops.sent(&mut w, 1, Ok(3));
    assert_eq!(
        ops.take(),
        [Cmd::ShutdownWrite(0), Cmd::ShutdownWrite(1)],
        "FIN first, no reset"
    );
    ops.received(&mut w, 0, b"more input is dropped");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), []);
    ops.read_closed(&mut w, 0, None);
    assert_eq!(
        ops.take(),
        [Cmd::Close(0)],
        "the peer's EOF ends the linger"
    );
    assert_eq!(log.borrow().last().unwrap(), "close Local");
    at(&mut w, &mut ops, 99);
    assert_eq!(ops.take(), []);
    at(&mut w, &mut ops, 100);
    assert_eq!(
        ops.take(),
        [Cmd::Close(1)],
        "the linger deadline ends it otherwise"
    );
    assert_eq!(log.borrow().last().unwrap(), "close CodecError");
}

#[test]
fn a_peer_that_closed_first_is_not_lingered_for() {
    let (mut w, _, _, _) = worker();
    w.cfg.linger = Some(100);
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"x");
    ops.read_closed(&mut w, 0, None);
    ops.end_turn(&mut w);
    ops.take();
    ops.sent(&mut w, 0, Ok(1));
    assert_eq!(ops.take(), [Cmd::Close(0)]);
}

/// Counts the frames of every session of its core in the core's state.
struct CountsPerCore {
    made_on: usize,
}

impl Handler<Bytes> for CountsPerCore {
    fn on_message(&mut self, s: &mut Session<'_, Bytes>, _: &[u8]) {
        let core = s.core();
        assert_eq!(core.worker(), self.made_on);
        *core.state::<u64>() += 1;
        let total = *core.state::<u64>();
        s.send(total.to_string().as_bytes()).unwrap();
    }
}

#[test]
fn per_core_state_is_reached_from_the_factory_and_every_session() {
    let (w, _, stats, control) = worker();
    let factory = |ctx: &mut CoreCtx| {
        *ctx.state::<u64>() += 100; // One per handler made.
        CountsPerCore {
            made_on: ctx.worker(),
        }
    };
    let mut w: Worker<Bytes, CountsPerCore, _> = Worker::new(
        w.cfg,
        Bytes,
        Arc::new(factory),
        stats,
        control,
        CoreCtx::for_test(Box::new(0u64)),
    );
    for _ in 0..2 {
        w.accepted(std::fs::File::open("/dev/null").unwrap().into());
    }
    w.received(0, b"a");
    w.received(1, b"b");
    w.received(0, b"c");
    w.end_turn();
    let sent: Vec<Vec<u8>> = w
        .commands()
        .drain(..)
        .filter_map(|c| match c {
            Command::Send { send, .. } => Some(send.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        [b"201203".to_vec(), b"202".to_vec()],
        "one counter for both sessions"
    );
}

#[test]
fn a_drain_leaves_outbound_sessions_to_their_handler() {
    let (mut w, _, _, control) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"dial");
    ops.end_turn(&mut w);
    assert_eq!(
        ops.take(),
        [
            Cmd::Open(0, 10),
            Cmd::Connect(1, "127.0.0.1:9".parse().unwrap())
        ]
    );
    ops.connected(&mut w, 1, Ok(()));
    control.request_stop(std::time::Duration::from_secs(3600));
    ops.woken(&mut w);
    ops.end_turn(&mut w);
    assert_eq!(
        ops.take(),
        [Cmd::StopAccepting, Cmd::Close(0)],
        "the idle inbound session closes; the outbound one may await a response"
    );
}

/// The log entries after the first `skip`.
fn log_after(log: &Log, skip: usize) -> Vec<String> {
    log.borrow()[skip..].to_vec()
}

#[test]
fn timers_fire_in_deadline_order_up_to_the_bound() {
    let (mut w, log, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    let opened = log.borrow().len();
    for frame in [&b"t=300"[..], b"t=100", b"t=300", b"t=50"] {
        ops.received(&mut w, 0, frame);
    }
    assert_eq!(
        log_after(&log, opened),
        ["set_timer: the session already has 3 timers pending (max_timers)"],
        "the fourth is over max_timers"
    );
    assert_eq!(w.conns[0].timer_at, 100, "one heap entry, at the earliest");
    at(&mut w, &mut ops, 99);
    assert_eq!(log.borrow().len(), opened + 1);
    at(&mut w, &mut ops, 100);
    assert_eq!(log.borrow().last().unwrap(), "timer 1");
    at(&mut w, &mut ops, 1_000);
    assert_eq!(
        log_after(&log, opened + 1),
        ["timer 1", "timer 0", "timer 2"],
        "equal deadlines fire in the order set"
    );
    assert_eq!(stats.snapshot().timers, 3);
    // Fired timers make room again.
    ops.received(&mut w, 0, b"t=10");
    at(&mut w, &mut ops, 1_010);
    assert_eq!(log.borrow().last().unwrap(), "timer 3");
    assert_eq!(ops.take(), [], "timers alone write nothing");
}

#[test]
fn a_cancelled_timer_never_fires() {
    let (mut w, log, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"t=100");
    ops.received(&mut w, 0, b"t=200");
    ops.received(&mut w, 0, b"c=0");
    assert_eq!(log.borrow().last().unwrap(), "cancel 0 true");
    let before = log.borrow().len();
    at(&mut w, &mut ops, 100);
    assert_eq!(
        log.borrow().len(),
        before,
        "the cancelled timer's entry found nothing due"
    );
    at(&mut w, &mut ops, 199);
    assert_eq!(log.borrow().len(), before);
    at(&mut w, &mut ops, 200);
    assert_eq!(log_after(&log, before), ["timer 1"]);
    ops.received(&mut w, 0, b"c=1");
    ops.received(&mut w, 0, b"c=0");
    assert_eq!(
        log_after(&log, before + 1),
        ["cancel 1 false", "cancel 0 false"],
        "neither a fired timer nor a cancelled one is pending"
    );
    assert_eq!(stats.snapshot().timers, 1);
}

#[test]
fn a_closed_sessions_timers_never_fire_not_even_in_its_reused_slot() {
    let (mut w, log, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"t=100");
    ops.received(&mut w, 0, b"t=500");
    ops.read_closed(&mut w, 0, None); // The peer's EOF: nothing pending, so it closes.
    assert_eq!(ops.take(), [Cmd::Open(0, 10), Cmd::Close(0)]);
    ops.closed(&mut w, 0);
    w.now = 50;
    ops.accepted(&mut w, 11);
    assert_eq!(ops.take(), [Cmd::Open(0, 11)], "the slot is reused");
    ops.received(&mut w, 0, b"t=450");
    let before = log.borrow().len();
    at(&mut w, &mut ops, 100);
    at(&mut w, &mut ops, 499);
    assert_eq!(
        log.borrow().len(),
        before,
        "the old session's timers are gone with it"
    );
    at(&mut w, &mut ops, 500);
    assert_eq!(
        log_after(&log, before),
        ["timer 0"],
        "the new session's own timer"
    );
    // A session closing with timers pending: a panic.
    ops.received(&mut w, 0, b"t=10");
    ops.received(&mut w, 0, b"boom");
    at(&mut w, &mut ops, 1_000);
    assert_eq!(log.borrow().last().unwrap(), "close Panic");
    assert_eq!(stats.snapshot().timers, 1);
}

#[test]
fn a_timer_set_from_on_timer_for_zero_fires_in_a_later_turn() {
    let (mut w, log, stats, _) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"r=100");
    let before = log.borrow().len();
    at(&mut w, &mut ops, 100);
    assert_eq!(
        log_after(&log, before),
        ["timer 0"],
        "the timer set for zero waits for a later turn"
    );
    assert_eq!(w.conns[0].timer_at, 101, "and is on the heap for it");
    at(&mut w, &mut ops, 101);
    assert_eq!(log_after(&log, before), ["timer 0", "timer 1"]);
    assert_eq!(stats.snapshot().timers, 2);
}

#[test]
fn pending_timers_do_not_hold_a_drain() {
    let (mut w, log, _, control) = worker();
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"t=100");
    ops.take();
    control.request_stop(std::time::Duration::from_secs(3600));
    ops.woken(&mut w);
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [Cmd::StopAccepting, Cmd::Close(0)]);
    assert_eq!(log.borrow().last().unwrap(), "close Drained");
    at(&mut w, &mut ops, 100);
    assert!(!log.borrow().iter().any(|l| l.starts_with("timer")));
}

#[test]
fn timers_fire_while_flushing_but_not_once_lingering() {
    let (mut w, log, _, _) = worker();
    w.cfg.linger = Some(10_000);
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.received(&mut w, 0, b"t=100");
    ops.received(&mut w, 0, b"t=200");
    ops.received(&mut w, 0, b"bye");
    ops.end_turn(&mut w);
    assert_eq!(ops.take(), [Cmd::Open(0, 10), send(0, b"ok", 1)]);
    at(&mut w, &mut ops, 100);
    assert_eq!(
        log.borrow().last().unwrap(),
        "timer 0",
        "flushing: the session can still write"
    );
    ops.sent(&mut w, 0, Ok(2));
    assert_eq!(ops.take(), [Cmd::ShutdownWrite(0)]);
    let before = log.borrow().len();
    at(&mut w, &mut ops, 200);
    assert_eq!(
        log.borrow().len(),
        before,
        "lingering: its sending side is shut"
    );
    at(&mut w, &mut ops, 10_100);
    assert_eq!(ops.take(), [Cmd::Close(0)]);
    assert_eq!(log_after(&log, before), ["close Local"]);
}

/// Replies later: "r" reserves a reply (kept in the core's state), "f" completes the oldest
/// kept one with "R", "d" drops the oldest, anything else is echoed inline.
struct Deferring;

impl Handler<Bytes> for Deferring {
    fn on_message(&mut self, s: &mut Session<'_, Bytes>, frame: &[u8]) {
        match frame {
            b"r" => match s.reserve() {
                Ok(reply) => s.core().state::<Vec<Reply>>().push(reply),
                Err(e) => s.send(e.to_string().as_bytes()).unwrap(),
            },
            b"f" => {
                let reply = s.core().state::<Vec<Reply>>().remove(0);
                s.complete(reply, b"R");
            }
            b"d" => drop(s.core().state::<Vec<Reply>>().remove(0)),
            _ => s.send(frame).unwrap(),
        }
    }
}

fn deferring(
    max_replies: usize,
) -> (
    Worker<Bytes, Deferring, impl Fn(&mut CoreCtx) -> Deferring>,
    Arc<CoreStats>,
) {
    let (w, _, stats, control) = worker();
    let mut cfg = w.cfg;
    cfg.max_replies = max_replies;
    let w = Worker::new(
        cfg,
        Bytes,
        Arc::new(|_: &mut CoreCtx| Deferring),
        stats.clone(),
        control,
        CoreCtx::for_test(Box::new(Vec::<Reply>::new())),
    );
    (w, stats)
}

/// What the worker asked the driver to send, and the other commands, after a turn.
fn turn_sends<F: Fn(&mut CoreCtx) -> Deferring>(
    w: &mut Worker<Bytes, Deferring, F>,
) -> (Vec<Vec<u8>>, Vec<String>) {
    w.close_idle();
    w.end_turn();
    let (mut sends, mut other) = (Vec::new(), Vec::new());
    // Each send completes at once, which may release more for the next end of turn.
    for _ in 0..2 {
        let cmds: Vec<Command> = w.commands().drain(..).collect();
        for cmd in cmds {
            match cmd {
                Command::Send { slot, send } => {
                    sends.push(send.to_vec());
                    let n = send.len();
                    w.sent(slot, send, Ok(n));
                }
                cmd => other.push(format!("{cmd:?}")),
            }
        }
        w.end_turn();
    }
    (sends, other)
}

#[test]
fn replies_leave_in_the_order_they_were_reserved() {
    let (mut w, _) = deferring(8);
    w.accepted(std::fs::File::open("/dev/null").unwrap().into());
    w.commands().clear();
    w.received(0, b"r");
    w.received(0, b"1");
    w.received(0, b"r");
    w.received(0, b"2");
    assert_eq!(
        turn_sends(&mut w).0,
        Vec::<Vec<u8>>::new(),
        "held behind the first reply"
    );
    w.received(0, b"f");
    assert_eq!(
        turn_sends(&mut w).0.concat(),
        b"R1",
        "the first reply and what followed it, up to the next unfilled one"
    );
    w.received(0, b"f");
    w.received(0, b"3");
    assert_eq!(turn_sends(&mut w).0.concat(), b"R23");
    w.received(0, b"4");
    assert_eq!(
        turn_sends(&mut w).0.concat(),
        b"4",
        "nothing reserved: straight out"
    );
}

#[test]
fn a_session_can_complete_another_sessions_reply() {
    let (mut w, _) = deferring(8);
    for _ in 0..2 {
        w.accepted(std::fs::File::open("/dev/null").unwrap().into());
    }
    w.commands().clear();
    w.received(0, b"r");
    w.received(0, b"after");
    assert!(turn_sends(&mut w).0.is_empty());
    // Session 1 (a backend, say) completes session 0's reply.
    w.received(1, b"f");
    assert_eq!(turn_sends(&mut w).0.concat(), b"Rafter");
}

#[test]
fn reading_pauses_at_the_bound_of_outstanding_replies() {
    let (mut w, _) = deferring(2);
    w.accepted(std::fs::File::open("/dev/null").unwrap().into());
    w.commands().clear();
    w.received(0, b"r");
    w.received(0, b"r");
    let (_, other) = turn_sends(&mut w);
    assert_eq!(other, ["PauseRecv { slot: 0 }"]);
    // Input racing the pause is held, not decoded: no third reserve fails.
    w.received(0, b"r");
    w.received(1, b"ignored: no such session");
    w.received(0, b"f");
    let (_, other) = turn_sends(&mut w);
    assert!(other.is_empty(), "still paused: {other:?}");
}

#[test]
fn a_dropped_reply_closes_its_session_and_late_replies_complete_nothing() {
    let (mut w, stats) = deferring(8);
    for _ in 0..2 {
        w.accepted(std::fs::File::open("/dev/null").unwrap().into());
    }
    w.commands().clear();
    w.received(0, b"r");
    w.received(1, b"r");
    w.received(0, b"d"); // Drops session 0's reply.
    let (_, other) = turn_sends(&mut w);
    assert_eq!(other, ["Close { slot: 0 }"]);
    w.closed(0);
    assert_eq!(stats.snapshot().closed_for(CloseReason::ReplyDropped), 1);
    // Session 1 still waits for its own; a new session in slot 0 is not touched by it.
    w.accepted(std::fs::File::open("/dev/null").unwrap().into());
    w.commands().clear();
    w.received(1, b"f");
    assert_eq!(turn_sends(&mut w).0.concat(), b"R");
}

#[test]
fn the_idle_clock_waits_for_outstanding_replies_and_restarts_when_they_are_out() {
    let (w, _) = deferring(8);
    let mut cfg = w.cfg;
    cfg.timeouts = timeouts(Some(100), None, None);
    let stats = Arc::new(CoreStats::default());
    let mut w = Worker::new(
        cfg,
        Bytes,
        Arc::new(|_: &mut CoreCtx| Deferring),
        stats.clone(),
        Arc::new(Control::new()),
        CoreCtx::for_test(Box::new(Vec::<Reply>::new())),
    );
    for _ in 0..2 {
        w.accepted(std::fs::File::open("/dev/null").unwrap().into());
    }
    w.received(0, b"r");
    w.commands().clear();
    let close_of_0 = |w: &mut Worker<_, _, _>| {
        w.commands()
            .iter()
            .any(|c| matches!(c, Command::Close { slot: 0 }))
    };
    w.now = 140;
    w.received(1, b"x"); // Session 1 is not idle.
    turn_sends(&mut w);
    w.now = 150;
    w.fire_timers();
    assert!(!close_of_0(&mut w), "waiting for its reply is not idleness");
    // Session 1 keeps itself busy, then completes session 0's reply at 200.
    w.now = 200;
    w.received(1, b"f");
    w.fire_timers();
    let (sends, _) = turn_sends(&mut w);
    assert_eq!(
        sends.concat(),
        b"R",
        "the reply goes out; the session is not closed first"
    );
    w.now = 250;
    w.fire_timers();
    assert!(
        !close_of_0(&mut w),
        "the idle clock restarted when the reply went out"
    );
    w.now = 310;
    w.fire_timers();
    assert!(close_of_0(&mut w), "idle for 100 since the reply: closed");
}

#[test]
fn a_dropped_reply_lets_what_was_answered_before_it_go_out_first() {
    let (mut w, stats) = deferring(8);
    w.accepted(std::fs::File::open("/dev/null").unwrap().into());
    w.commands().clear();
    w.received(0, b"r"); // A
    w.received(0, b"r"); // B
    w.received(0, b"x"); // Inline, behind B.
    w.received(0, b"f"); // A is answered...
    w.received(0, b"d"); // ...and B dropped, in the same turn.
    let (sends, other) = turn_sends(&mut w);
    assert_eq!(
        sends.concat(),
        b"R",
        "A goes out; what was held behind B cannot, in order"
    );
    assert_eq!(other, ["Close { slot: 0 }"]);
    w.closed(0);
    assert_eq!(stats.snapshot().closed_for(CloseReason::ReplyDropped), 1);
}

mod tls;
