//! The doorbell between cores: a core that publishes work for a sleeping core wakes it with an
//! IORING_OP_MSG_RING from its own ring where the io_uring driver runs and the kernel has it,
//! and through the sleeper's eventfd otherwise (epoll, or `msg_ring(false)`). Requests that go
//! core A -> core B -> core A are sent in bursts separated by pauses, so both cores are asleep
//! (with no timeout) when each burst begins; the counters say which doorbell woke them.
//!
//! `doorbell_round_trip_latency` (ignored) prints the A -> B -> A round trip with B asleep,
//! MSG_RING against eventfd, alternating in one run:
//! `RINGWIRE_DRIVER=uring cargo test --release --test doorbell -- --ignored --nocapture`.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use ringwire::codec::Lines;
use ringwire::{CoreCtx, Handler, Server, Session};

/// Answers each line with `<nanoseconds> <worker>\n`: the time from the request's arrival on
/// this core, through a call to the other core (`submit_to`), to the result back here.
struct Hop;

impl Handler<Lines> for Hop {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, _line: &[u8]) {
        let reply = s.reserve().unwrap();
        let other = (s.worker() + 1) % s.core().workers();
        let began = Instant::now();
        s.core()
            .submit_to(
                other,
                |ctx: &mut CoreCtx| ctx.worker(),
                move |_: &mut CoreCtx, by: usize| {
                    let nanos = began.elapsed().as_nanos();
                    reply.complete(format!("{nanos} {by}\n").into_bytes());
                },
            )
            .unwrap();
    }
}

fn server(msg_ring: bool) -> util::Running {
    util::start(
        Server::new(Lines::new(), || Hop)
            .cores(2)
            .msg_ring(msg_ring)
            .bind(util::any_port()),
    )
}

/// Sends `rounds` bursts of `burst` requests, pausing `pause` between bursts (so both cores
/// sleep), and returns each request's round trip between the cores, in nanoseconds.
fn hops(server: &util::Running, rounds: usize, burst: usize, pause: Duration) -> Vec<u64> {
    let conn = util::connect(server.addr());
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    let mut times = Vec::with_capacity(rounds * burst);
    let mut line = String::new();
    for _ in 0..rounds {
        std::thread::sleep(pause);
        for _ in 0..burst {
            conn.write_all(b"hop\n").unwrap();
            line.clear();
            reader
                .read_line(&mut line)
                .expect("a reply before the read timeout (a lost wake-up would stall it)");
            let nanos = line.split(' ').next().unwrap().parse().unwrap();
            times.push(nanos);
        }
    }
    times
}

fn msg_ring_available() -> bool {
    matches!(ringwire::probe(), Ok(f) if f.msg_ring)
}

#[test]
fn a_sleeping_core_is_woken_by_msg_ring_or_else_its_eventfd() {
    for msg_ring in [true, false] {
        let server = server(msg_ring);
        let times = hops(&server, 20, 5, Duration::from_millis(3));
        assert_eq!(times.len(), 100);
        let stats = server.total();
        let driver = server.driver().to_owned();
        assert!(stats.mail_out >= 200, "every request went there and back");
        let rings = stats.doorbells + stats.eventfd_bells;
        assert!(rings >= 20, "each burst found a core asleep: {stats:?}");
        if server.is_uring() && msg_ring && msg_ring_available() {
            assert!(driver.contains("doorbell MSG_RING"), "{driver}");
            assert_eq!(
                (stats.eventfd_bells, stats.doorbell_fallbacks),
                (0, 0),
                "every wake-up between the cores was a MSG_RING: {stats:?}"
            );
        } else {
            if server.is_uring() {
                assert!(driver.contains("doorbell eventfd"), "{driver}");
                if msg_ring {
                    eprintln!("*** MSG_RING UNAVAILABLE on this kernel: eventfd doorbells only");
                }
            }
            assert_eq!(stats.doorbells, 0, "{stats:?}");
        }
        server.stop_cleanly();
    }
}

/// Median and 90th percentile of `v`, in microseconds.
fn summary(v: &mut [u64]) -> (f64, f64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    (at(0.5), at(0.9))
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn doorbell_round_trip_latency() {
    let (rounds, per_round) = (6, 400);
    let mut medians = [Vec::new(), Vec::new()];
    let mut all = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for msg_ring in order {
            let server = server(msg_ring);
            // One request at a time, 1 ms apart: both cores are asleep when it arrives.
            let mut times = hops(&server, per_round, 1, Duration::from_millis(1));
            let stats = server.total();
            server.stop_cleanly();
            let (p50, p90) = summary(&mut times);
            let name = if msg_ring { "msg_ring" } else { "eventfd " };
            println!(
                "round {round} {name}: median {p50:7.1} us  p90 {p90:7.1} us  \
                 (doorbells {}, eventfd {})",
                stats.doorbells, stats.eventfd_bells
            );
            let i = usize::from(!msg_ring);
            medians[i].push(p50);
            all[i].extend(times);
        }
    }
    for (i, name) in ["msg_ring", "eventfd "].iter().enumerate() {
        let mut m = medians[i].clone();
        m.sort_by(f64::total_cmp);
        let (p50, p90) = summary(&mut all[i]);
        println!(
            "{name}: median of round medians {:.1} us; all {} samples: median {p50:.1} us, p90 {p90:.1} us",
            m[m.len() / 2],
            all[i].len()
        );
    }
}
