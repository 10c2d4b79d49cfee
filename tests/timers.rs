//! One-shot timers on real sockets: a handler that answers every request later, from
//! `on_timer`, with delays that make its timers fire in the reverse of the order the requests
//! came in, while the replies still go out in request order (the handler's job: it holds an
//! answer until the ones before it are out). Pipelined requests, several connections at once,
//! on the driver `RINGWIRE_DRIVER` picks.
//!
//! Nothing here is timed: a reply that never comes fails the test at the client's read
//! timeout.

mod util;

use std::collections::VecDeque;
use std::io::Write;
use std::thread;
use std::time::Duration;

use ringwire::codec::Codec;
use ringwire::codec::Len32;
use ringwire::{CloseReason, Handler, Reply, Server, Session, TimerId};

/// Requests each connection pipelines in one write.
const PIPELINE: u8 = 8;
/// Rounds of pipelined requests per connection.
const ROUNDS: u8 = 3;
/// Connections served at once.
const CONNS: u8 = 4;

/// A request's answer, waiting for its timer.
struct Waiting {
    id: TimerId,
    reply: Vec<u8>,
    due: bool,
}

/// Echoes each `Len32` request after as many milliseconds as its first byte says, from a
/// timer; answers go out in request order.
#[derive(Default)]
struct DelayedEcho {
    waiting: VecDeque<Waiting>,
}

impl Handler<Len32> for DelayedEcho {
    fn on_message(&mut self, session: &mut Session<'_, Len32>, frame: &[u8]) {
        let after = Duration::from_millis(u64::from(frame[0]));
        match session.set_timer(after) {
            Ok(id) => self.waiting.push_back(Waiting {
                id,
                reply: frame.to_vec(),
                due: false,
            }),
            Err(e) => panic!("{e}"),
        }
    }

    fn on_timer(&mut self, session: &mut Session<'_, Len32>, id: TimerId) {
        let fired = self.waiting.iter_mut().find(|w| w.id == id);
        fired.expect("a timer this handler set").due = true;
        while self.waiting.front().is_some_and(|w| w.due) {
            let answer = self.waiting.pop_front().unwrap();
            session.send(&answer.reply).unwrap();
        }
    }
}

/// The same, with reply slots: each request's answer is reserved when it comes and completed
/// from its timer (every third is answered inline instead); the engine keeps the order.
#[derive(Default)]
struct ReservedEcho {
    waiting: Vec<(TimerId, Reply, Vec<u8>)>,
}

impl Handler<Len32> for ReservedEcho {
    fn on_message(&mut self, session: &mut Session<'_, Len32>, frame: &[u8]) {
        if frame[3] % 3 == 2 {
            return session.send(frame).unwrap();
        }
        let reply = session.reserve().unwrap();
        let id = session
            .set_timer(Duration::from_millis(u64::from(frame[0])))
            .unwrap();
        self.waiting.push((id, reply, frame.to_vec()));
    }

    fn on_timer(&mut self, session: &mut Session<'_, Len32>, id: TimerId) {
        let at = self.waiting.iter().position(|w| w.0 == id).unwrap();
        let (_, reply, frame) = self.waiting.swap_remove(at);
        let mut bytes = Vec::new();
        session.codec().encode(&frame, &mut bytes).unwrap();
        session.complete(reply, &bytes);
    }
}

#[test]
fn pipelined_requests_answered_from_timers_come_back_in_order() {
    pipeline_through(Server::new(Len32, DelayedEcho::default), "timers");
}

#[test]
fn reserved_replies_completed_from_timers_come_back_in_order() {
    pipeline_through(Server::new(Len32, ReservedEcho::default), "reply slots");
}

fn pipeline_through<H: Handler<Len32>>(server: Server<Len32, H>, how: &str) {
    println!("answered through {how}");
    let server = util::start(server.bind(util::any_port()).cores(2));
    let addr = server.addr();
    let clients: Vec<_> = (0..CONNS)
        .map(|conn| {
            thread::spawn(move || {
                let mut stream = util::connect(addr);
                for round in 0..ROUNDS {
                    // Later requests wait less: their timers fire first.
                    let requests: Vec<Vec<u8>> = (0..PIPELINE)
                        .map(|i| vec![5 + 5 * (PIPELINE - i), conn, round, i])
                        .collect();
                    let wire: Vec<u8> = requests.iter().flat_map(|r| util::len32(r)).collect();
                    stream.write_all(&wire).unwrap();
                    let back = util::read_n(&mut stream, wire.len());
                    assert_eq!(
                        util::first_difference(&back, &wire),
                        None,
                        "connection {conn}, round {round}: replies out of order or wrong"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let all = u64::from(CONNS) * u64::from(ROUNDS) * u64::from(PIPELINE);
    let s = server.wait_total("every session to close", |s| s.closed == u64::from(CONNS));
    assert!(
        s.timers >= all * 2 / 3,
        "a timer per deferred request: {s:#?}"
    );
    assert_eq!(s.frames_out, all, "{s:#?}");
    assert_eq!(
        s.closed_for(CloseReason::PeerClosed),
        u64::from(CONNS),
        "{s:#?}"
    );
    server.stop_cleanly();
}
