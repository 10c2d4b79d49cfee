//! The kit itself: input in any pieces gives the same replies, errors reach `on_error`, closes
//! and timeouts are recorded once, ticks fall on the clock's grid.

use std::time::Duration;

use super::*;
use crate::codec::{CodecError, Decoded};
use crate::timer::TimerId;

/// Newline-terminated lines; a line starting with `!` is malformed.
#[derive(Clone)]
struct Lines;

impl Codec for Lines {
    type Frame<'a> = &'a [u8];
    type Item = [u8];
    fn decode<'a>(&mut self, src: &'a [u8], _: usize) -> Result<Decoded<&'a [u8]>, CodecError> {
        if src.first() == Some(&b'!') {
            return Err(CodecError::Malformed("bang".into()));
        }
        Ok(match src.iter().position(|&b| b == b'\n') {
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

/// Greets, echoes, and obeys a few commands; every callback leaves a trace in `log`.
#[derive(Default)]
struct Echo {
    log: Vec<String>,
}

impl Handler<Lines> for Echo {
    fn on_open(&mut self, s: &mut Session<'_, Lines>) {
        s.send(b"hello").unwrap();
    }
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        match line {
            b"bye" => {
                s.send(b"ciao").unwrap();
                s.close();
            }
            b"tick" => s.set_tick(Duration::from_millis(10)),
            b"untick" => s.set_tick(None),
            b"flood" => {
                for _ in 0..100 {
                    let _ = s.send(&[b'x'; 100]);
                }
            }
            b"connect" => s.connect("127.0.0.1:9".parse().unwrap()),
            _ => s.send(line).unwrap(),
        }
    }
    fn on_tick(&mut self, s: &mut Session<'_, Lines>) {
        s.send(b"T").unwrap();
    }
    fn on_error(&mut self, s: &mut Session<'_, Lines>, error: &SessionError) {
        self.log.push(format!("error {error}"));
        let _ = s.send(b"ERR");
    }
    fn on_close(&mut self, s: &mut Session<'_, Lines>, reason: CloseReason) {
        self.log.push(format!("close {reason:?}"));
        let _ = s.send(b"never written");
    }
}

fn harness() -> Harness<Lines, Echo> {
    Harness::new(Lines, Echo::default())
}

#[test]
fn input_split_at_every_boundary_gives_the_same_replies() {
    let wire = b"one\ntwo\n\nthree\nbye\nafter\n";
    let mut whole = harness();
    assert_eq!(whole.feed(wire), b"hello\none\ntwo\n\nthree\nciao\n");
    for a in 0..=wire.len() {
        for b in a..=wire.len() {
            let mut t = harness();
            let mut out = Vec::new();
            for part in [&wire[..a], &wire[a..b], &wire[b..]] {
                out.extend(t.feed(part));
            }
            assert_eq!(out, whole.written(), "split at {a} and {b}");
            assert_eq!(t.events(), whole.events(), "split at {a} and {b}");
            let (s, w) = (t.stats(), whole.stats());
            assert_eq!(
                (s.frames_in, s.frames_out, s.bytes_out),
                (w.frames_in, w.frames_out, w.bytes_out),
                "split at {a} and {b}"
            );
        }
    }
    assert_eq!(
        whole.stats().frames_in,
        5,
        "nothing is decoded after the close"
    );
}

#[test]
fn a_codec_error_reaches_on_error_then_closes() {
    let mut t = harness();
    assert_eq!(t.feed(b"ok\n!bad\nlost\n"), b"hello\nok\nERR\n");
    assert_eq!(t.closed(), Some(CloseReason::CodecError));
    assert_eq!(t.errors(), ["session 0/0: malformed input: bang"]);
    assert_eq!(
        t.handler().log,
        [
            "error session 0/0: malformed input: bang",
            "close CodecError"
        ]
    );
    assert_eq!(t.feed(b"more\n"), b"", "input after the close is dropped");
    let stats = t.stats();
    assert_eq!(stats.codec_errors, 1);
    assert_eq!(stats.closed_for(CloseReason::CodecError), 1);
}

#[test]
fn a_close_is_recorded_once_and_its_reply_goes_first() {
    let mut t = harness();
    assert_eq!(t.feed(b"bye\n"), b"hello\nciao\n");
    assert_eq!(
        t.events(),
        [
            Event::Opened,
            Event::Wrote(b"hello\nciao\n".to_vec()),
            Event::Closed(CloseReason::Local)
        ]
    );
    t.peer_close();
    t.advance(Duration::from_secs(10));
    assert_eq!(t.handler().log, ["close Local"], "on_close runs once");
    assert!(!t.written().ends_with(b"never written\n"));

    let mut t = harness();
    t.open();
    t.peer_close();
    assert_eq!(t.closed(), Some(CloseReason::PeerClosed));
}

#[test]
fn ticks_fall_on_the_grid_of_the_test_clock() {
    let mut t = harness();
    assert_eq!(
        t.advance(Duration::from_millis(3)),
        b"hello\n",
        "on_open runs first"
    );
    assert_eq!(t.feed(b"tick\n"), b"");
    assert_eq!(t.advance(Duration::from_millis(25)), b"T\nT\n");
    assert_eq!(
        t.ticks(),
        [Duration::from_millis(10), Duration::from_millis(20)]
    );
    assert_eq!(t.now(), Duration::from_millis(28));
    t.feed(b"untick\n");
    assert_eq!(t.advance(Duration::from_secs(1)), b"");
    assert_eq!(t.stats().ticks, 2);
}

#[test]
fn idle_and_read_timeouts_close_on_the_test_clock() {
    let mut t = harness().idle_timeout(Duration::from_millis(100));
    t.advance(Duration::from_millis(60));
    t.feed(b"x\n");
    t.advance(Duration::from_millis(99));
    assert_eq!(
        t.closed(),
        None,
        "input at 60 ms moved the deadline to 160 ms"
    );
    t.advance(Duration::from_millis(1));
    assert_eq!(t.closed(), Some(CloseReason::IdleTimeout));

    let mut t = harness().read_timeout(Duration::from_millis(50));
    t.advance(Duration::from_secs(1));
    assert_eq!(t.closed(), None, "no frame started: nothing to time out");
    t.feed(b"par");
    t.advance(Duration::from_millis(30));
    t.feed(b"ti");
    t.advance(Duration::from_millis(19));
    assert_eq!(t.closed(), None);
    t.advance(Duration::from_millis(1));
    assert_eq!(
        t.closed(),
        Some(CloseReason::ReadTimeout),
        "a trickle does not restart the frame's clock"
    );
}

#[test]
fn output_over_the_limit_closes_without_writing_it() {
    let mut t = harness().max_output(1000);
    assert_eq!(t.feed(b"flood\n"), b"hello\n");
    assert_eq!(t.closed(), Some(CloseReason::OutputLimit));
    assert_eq!(t.errors().len(), 1);
}

#[test]
fn connects_are_recorded_not_made() {
    let mut t = harness();
    t.feed(b"connect\n");
    assert!(t
        .events()
        .contains(&Event::Connect("127.0.0.1:9".parse().unwrap())));
}

/// Answers each line after as many milliseconds as it is long, from `on_timer`; `cancel`
/// cancels the latest pending answer; the answer to `again` is followed at once (a timer set
/// for zero) by `AGAIN`.
#[derive(Default)]
struct Delay {
    waiting: Vec<(TimerId, Vec<u8>)>,
    refused: usize,
}

impl Handler<Lines> for Delay {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        if line == b"cancel" {
            let (id, _) = self.waiting.pop().unwrap();
            assert!(s.cancel_timer(id));
            return;
        }
        match s.set_timer(Duration::from_millis(line.len() as u64)) {
            Ok(id) => self.waiting.push((id, line.to_vec())),
            Err(_) => self.refused += 1,
        }
    }
    fn on_timer(&mut self, s: &mut Session<'_, Lines>, id: TimerId) {
        let i = self.waiting.iter().position(|w| w.0 == id).unwrap();
        let (_, line) = self.waiting.remove(i);
        s.send(&line).unwrap();
        if line == b"again" {
            let id = s.set_timer(Duration::ZERO).unwrap();
            self.waiting.push((id, b"AGAIN".to_vec()));
        }
    }
}

/// The times the session's timers fired, on the test clock.
fn timer_times<C: Codec, H: Handler<C>>(t: &Harness<C, H>) -> Vec<Duration> {
    let times = t.events().iter().filter_map(|e| match e {
        Event::Timer(_, at) => Some(*at),
        _ => None,
    });
    times.collect()
}

#[test]
fn timers_fire_in_deadline_order_on_the_test_clock() {
    let mut t = Harness::new(Lines, Delay::default());
    assert_eq!(t.feed(b"ccc\na\nbb\nxxxx\ncancel\n"), b"");
    assert_eq!(t.advance(Duration::from_micros(999)), b"");
    let ms = Duration::from_millis;
    let us = Duration::from_micros;
    assert_eq!(t.advance(ms(9) + us(1)), b"a\nbb\nccc\n");
    assert_eq!(timer_times(&t), [ms(1), ms(2), ms(3)], "xxxx was cancelled");
    assert_eq!(t.stats().timers, 3);
    // One set for zero from on_timer fires after it, a microsecond later on the test clock.
    t.feed(b"again\n");
    assert_eq!(t.advance(ms(5)), b"again\n");
    assert_eq!(t.advance(us(1)), b"AGAIN\n");
    assert_eq!(timer_times(&t)[3..], [ms(15), ms(15) + us(1)]);
    assert!(t.handler().waiting.is_empty());
}

#[test]
fn timers_are_bounded_and_end_with_the_session() {
    let mut t = Harness::new(Lines, Delay::default()).max_timers(2);
    t.feed(b"a\nb\nc\n");
    assert_eq!(t.handler().refused, 1, "the third is over max_timers");
    t.peer_close();
    t.advance(Duration::from_secs(1));
    assert_eq!(
        timer_times(&t),
        [std::time::Duration::ZERO; 0],
        "a closed session's timers never fire"
    );
    assert_eq!(t.written(), b"");
}

/// Answers "slow" lines 10 ms later through a reserved reply, others at once.
#[derive(Default)]
struct Slow {
    waiting: Vec<(TimerId, crate::reply::Reply)>,
}

impl Handler<Lines> for Slow {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        if line == b"slow" {
            let reply = s.reserve().unwrap();
            let id = s.set_timer(Duration::from_millis(10)).unwrap();
            self.waiting.push((id, reply));
        } else {
            s.send(line).unwrap();
        }
    }

    fn on_timer(&mut self, s: &mut Session<'_, Lines>, id: TimerId) {
        let at = self.waiting.iter().position(|w| w.0 == id).unwrap();
        let (_, reply) = self.waiting.remove(at);
        s.complete(reply, b"SLOW\n");
    }
}

#[test]
fn reserved_replies_keep_their_place_on_the_test_clock() {
    let mut t = Harness::new(Lines, Slow::default()).idle_timeout(Duration::from_millis(5));
    assert_eq!(
        t.feed(b"slow\nfast\n"),
        b"",
        "the fast answer waits behind the slow one"
    );
    // Waiting for its reply is not idleness: no idle close at 5 ms.
    assert_eq!(t.advance(Duration::from_millis(10)), b"SLOW\nfast\n");
    assert_eq!(t.closed(), None);
    // The idle clock started again when the reply went out.
    t.advance(Duration::from_millis(4));
    assert_eq!(t.closed(), None);
    t.advance(Duration::from_millis(2));
    assert_eq!(t.closed(), Some(CloseReason::IdleTimeout));
}

/// Forwards each line to a backend of another type, with the reply reserved for it.
struct Forward;

/// The backend: never runs in the kit; it only holds its reply.
struct Held {
    _reply: crate::reply::Reply,
}

impl Handler<Lines> for Held {}

impl Handler<Lines> for Forward {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, _: &[u8]) {
        let reply = s.reserve().unwrap();
        let own = s.handle();
        let backend = s
            .core()
            .connect(
                "127.0.0.1:9".parse().unwrap(),
                Lines,
                Held { _reply: reply },
            )
            .unwrap();
        assert_ne!(backend, own, "a session of its own");
    }
}

#[test]
fn connects_of_another_protocol_are_recorded_and_their_handlers_kept() {
    let mut t = Harness::new(Lines, Forward);
    assert_eq!(t.feed(b"a\nb\n"), b"");
    let connects = t.events().iter().filter(|e| matches!(e, Event::Connect(_)));
    assert_eq!(connects.count(), 2);
    assert_eq!(
        t.closed(),
        None,
        "the backends' handlers hold the replies: not dropped"
    );
}
