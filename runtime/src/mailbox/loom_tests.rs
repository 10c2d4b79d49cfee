//! A loom model of the flag-and-queue protocol: every interleaving and every weak-memory
//! outcome loom can produce of a consumer that drains, announces sleep and waits on a doorbell,
//! against producers that publish and ring only when they see the announcement.
//!
//! The property is "no lost wake-up": the consumer stops only after it has received every
//! message, and blocks only on the doorbell; if it ever sleeps while a message waits and no
//! ring is coming, every thread ends up blocked or finished and loom reports a deadlock.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom cargo test -p ringwire-runtime
//! --lib --release mailbox::loom`.

use loom::sync::atomic::AtomicUsize;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::{mesh, Bell, Capacity, Inbox, Mesh, Source};

const CAPACITY: Capacity = Capacity { ring: 2, remote: 2 };

/// A sticky doorbell, like an eventfd: a ring before the wait makes the wait return.
#[derive(Default)]
struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn wait(&self) {
        let mut rung = self.rung.lock().unwrap();
        while !*rung {
            rung = self.cv.wait(rung).unwrap();
        }
        *rung = false;
    }
}

/// The worker's loop, reduced to the mailbox: drain at the top of a turn; when nothing came,
/// announce sleep and block on the doorbell unless the final check found something.
fn consume(inbox: &mut Inbox<u32>, bell: &Doorbell, expected: usize) -> Vec<(Source, u32)> {
    let mut got = Vec::new();
    loop {
        // A budget of 1 makes the model explore turns that leave messages behind.
        inbox.drain(1, |from, m| got.push((from, m)));
        if got.len() == expected {
            return got;
        }
        if inbox.prepare_sleep() {
            bell.wait();
            inbox.woke();
        }
    }
}

#[test]
fn core_to_sleeping_core() {
    loom::model(|| {
        let Mesh {
            mut cores,
            remote: _remote,
        } = mesh::<u32>(2, CAPACITY);
        let mut outbox = cores.pop().unwrap().outbox;
        let mut inbox = cores.pop().unwrap().inbox;
        let bell = Arc::new(Doorbell::default());
        let producer = {
            let bell = bell.clone();
            thread::spawn(move || {
                // Two turns, one message each.
                for m in 0..2 {
                    outbox.push(0, m).unwrap();
                    outbox.flush(|target| {
                        assert_eq!(target, 0);
                        bell.ring();
                    });
                }
            })
        };
        let got = consume(&mut inbox, &bell, 2);
        assert_eq!(got, vec![(Source::Core(1), 0), (Source::Core(1), 1)]);
        producer.join().unwrap();
    });
}

#[test]
fn core_and_off_core_thread_to_sleeping_core() {
    // Three threads explored exhaustively take hours; a bound of four preemptions covers the
    // bugs this protocol can have (a lost wake-up needs one preemption between a producer's
    // publish and its flag load, or between the consumer's announcement and its final look).
    // LOOM_MAX_PREEMPTIONS overrides it.
    let mut model = loom::model::Builder::new();
    model.preemption_bound.get_or_insert(4);
    model.check(|| {
        let Mesh { mut cores, remote } = mesh::<u32>(2, CAPACITY);
        let mut outbox = cores.pop().unwrap().outbox;
        let mut inbox = cores.pop().unwrap().inbox;
        let bell = Arc::new(Doorbell::default());
        let core = {
            let bell = bell.clone();
            thread::spawn(move || {
                outbox.push(0, 1).unwrap();
                outbox.flush(|_| bell.ring());
            })
        };
        let off_core = {
            let bell = bell.clone();
            thread::spawn(move || {
                if remote.send(0, 2).unwrap() == Bell::Ring {
                    bell.ring();
                }
            })
        };
        let mut got = consume(&mut inbox, &bell, 2);
        got.sort_by_key(|&(_, m)| m);
        assert_eq!(got, vec![(Source::Core(1), 1), (Source::Remote, 2)]);
        core.join().unwrap();
        off_core.join().unwrap();
    });
}

/// Counts its drops, to check that every message is dropped exactly once however a close
/// races a send.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, loom::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn close_races_send() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let Mesh { mut cores, remote } = mesh::<Counted>(2, CAPACITY);
        let mut outbox = cores.pop().unwrap().outbox;
        let inbox = cores.pop().unwrap().inbox;
        let producer = {
            let drops = drops.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    // Accepted or handed back; either way it is dropped once, somewhere.
                    let _ = outbox.push(0, Counted(drops.clone()));
                    outbox.flush(|_| {});
                }
                let _ = remote.send(0, Counted(drops.clone()));
            })
        };
        inbox.close(|_, m| drop(m));
        producer.join().unwrap();
        drop(cores);
        assert_eq!(drops.load(loom::sync::atomic::Ordering::Relaxed), 3);
    });
}

#[test]
fn full_ring_spills_and_still_wakes_the_consumer() {
    // A ring of one slot: the second and third messages spill into the producer's overflow
    // and reach the ring over later flushes, while the consumer sleeps between them.
    let mut model = loom::model::Builder::new();
    model.preemption_bound.get_or_insert(3);
    model.check(|| {
        let Mesh { mut cores, .. } = mesh::<u32>(2, Capacity { ring: 1, remote: 2 });
        let mut outbox = cores.pop().unwrap().outbox;
        let mut inbox = cores.pop().unwrap().inbox;
        let bell = Arc::new(Doorbell::default());
        let producer = {
            let bell = bell.clone();
            thread::spawn(move || {
                for m in 0..3 {
                    outbox.push(0, m).unwrap();
                }
                // A worker with a backlog keeps flushing each turn (bounded waits).
                loop {
                    outbox.flush(|_| bell.ring());
                    if !outbox.is_backlogged() {
                        break;
                    }
                    thread::yield_now();
                }
            })
        };
        let got = consume(&mut inbox, &bell, 3);
        let got: Vec<u32> = got.into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, [0, 1, 2]);
        producer.join().unwrap();
    });
}
