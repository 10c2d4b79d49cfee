//! Per-core state over real sockets: made once per worker on its own thread, reached from the
//! handler factory and from every callback, shared by the sessions of one core only; a panic
//! in its initialiser fails the start.

mod util;

use std::collections::HashMap;
use std::rc::Rc;

use ringwire::codec::Len32;
use ringwire::{CoreCtx, Handler, Server, ServerError, Session};

/// One core's tally; an `Rc` inside shows the state need not be `Send`.
struct Tally {
    worker: usize,
    frames: u64,
    _not_send: Rc<()>,
}

/// Answers each frame with "worker:frames-seen-by-this-core".
struct Counter;

impl Handler<Len32> for Counter {
    fn on_message(&mut self, s: &mut Session<'_, Len32>, _: &[u8]) {
        let worker = s.worker();
        let tally = s.core().state::<Tally>();
        assert_eq!(tally.worker, worker, "the state of the session's own core");
        tally.frames += 1;
        let reply = format!("{}:{}", tally.worker, tally.frames);
        s.send(reply.as_bytes()).unwrap();
    }
}

#[test]
fn each_core_counts_its_own_sessions_frames() {
    let server = util::start(
        Server::new(Len32, |ctx: &mut CoreCtx| {
            // The factory sees the same state every callback will.
            let worker = ctx.worker();
            assert_eq!(ctx.state::<Tally>().worker, worker);
            Counter
        })
        .core_state(|worker| Tally {
            worker,
            frames: 0,
            _not_send: Rc::new(()),
        })
        .cores(2)
        .bind(util::any_port()),
    );
    let mut seen: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut conns: Vec<_> = (0..8).map(|_| util::connect(server.addr())).collect();
    for round in 0..5 {
        for c in &mut conns {
            std::io::Write::write_all(c, &util::len32(format!("{round}").as_bytes())).unwrap();
            let header = util::read_n(c, 4);
            let len = u32::from_be_bytes(header.try_into().unwrap()) as usize;
            let reply = String::from_utf8(util::read_n(c, len)).unwrap();
            let (worker, n) = reply.split_once(':').unwrap();
            seen.entry(worker.parse().unwrap())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    let total: usize = seen.values().map(Vec::len).sum();
    assert_eq!(total, 40);
    for (worker, counts) in &seen {
        // Frames answered one at a time: each core's count goes 1, 2, 3, ... with no gap,
        // however its sessions interleave, and no other core's frames in it.
        let expected: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(counts, &expected, "worker {worker}: {seen:?}");
    }
    server.stop_cleanly();
}

#[test]
fn a_panicking_initialiser_fails_the_start() {
    let result = Server::new(Len32, || Counter)
        .core_state(|worker| -> u64 { panic!("no state for worker {worker}") })
        .bind(util::any_port())
        .start();
    match result {
        Err(ServerError::WorkerPanicked { message, .. }) => {
            assert!(message.contains("no state for worker 0"), "{message}")
        }
        Err(other) => panic!("expected WorkerPanicked, got {other}"),
        Ok(_) => panic!("started although the per-core state could not be made"),
    }
}
