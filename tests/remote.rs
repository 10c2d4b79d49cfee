//! Work sent to the cores from a thread that is not one: closures run on the worker asked
//! for, with its per-core state, each exactly once, also while the core sleeps (the doorbell);
//! a full queue and a stopped server are errors the sender sees.

mod util;

use std::sync::mpsc;
use std::time::Duration;

use ringwire::codec::Raw;
use ringwire::handlers::Echo;
use ringwire::{CoreCtx, RemoteError, Server};

/// Sends work to every worker, `rounds` times `per_round` closures each, pausing between
/// rounds so the cores go to sleep in between: every closure runs once, on its worker.
#[test]
fn closures_run_on_the_worker_asked_for_with_its_state() {
    let server = util::start(
        Server::new(Raw, || Echo)
            .core_state(|worker| (worker, 0u64))
            .cores(2)
            .bind(util::any_port()),
    );
    let remote = server.remote();
    assert_eq!(remote.workers(), 2);
    let (rounds, per_round) = (20, 200);
    let deadline = std::time::Instant::now() + util::STOP_TIMEOUT;
    for _ in 0..rounds {
        for worker in 0..2 {
            let mut sent = 0;
            while sent < per_round {
                match remote.run_on(worker, move |ctx: &mut CoreCtx| {
                    let (me, count) = ctx.state::<(usize, u64)>();
                    assert_eq!(*me, worker, "run on the worker asked for");
                    *count += 1;
                }) {
                    Ok(()) => sent += 1,
                    // The queue holds 1024: a core that has not drained yet (or one that
                    // sleeps on it, which the deadline turns into a failure).
                    Err(RemoteError::Busy) => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "worker {worker} never drained its queue: a lost wake-up"
                        );
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // Let the cores go to sleep: the next round must wake them.
        std::thread::sleep(Duration::from_millis(5));
    }
    let (tx, rx) = mpsc::channel();
    for worker in 0..2 {
        let tx = tx.clone();
        remote
            .run_on(worker, move |ctx: &mut CoreCtx| {
                let _ = tx.send(*ctx.state::<(usize, u64)>());
            })
            .unwrap();
    }
    let mut counts: Vec<(usize, u64)> = (0..2)
        .map(|_| {
            rx.recv_timeout(util::STOP_TIMEOUT)
                .expect("the cores ran the work")
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [(0, rounds * per_round), (1, rounds * per_round)],
        "every closure ran exactly once"
    );
    assert!(matches!(
        remote.run_on(2, |_| {}),
        Err(RemoteError::NoSuchWorker { worker: 2 })
    ));
    server.stop_cleanly();
    assert_eq!(remote.run_on(0, |_| {}), Err(RemoteError::Stopped));
}

/// A closure that panics is caught and counted; the core goes on.
#[test]
fn a_panicking_closure_is_caught_and_the_core_goes_on() {
    let server = util::start(Server::new(Raw, || Echo).bind(util::any_port()));
    let remote = server.remote();
    remote.run_on(0, |_| panic!("remote work panics")).unwrap();
    server.wait_total("the panic counted", |s| s.panics == 1);
    let (tx, rx) = mpsc::channel();
    remote
        .run_on(0, move |_| {
            let _ = tx.send(());
        })
        .unwrap();
    rx.recv_timeout(util::STOP_TIMEOUT)
        .expect("the core still runs work");
    let mut c = util::connect(server.addr());
    std::io::Write::write_all(&mut c, b"still serving").unwrap();
    assert_eq!(util::read_n(&mut c, 13), b"still serving");
    server.stop_cleanly();
}
