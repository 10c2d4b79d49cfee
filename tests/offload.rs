//! The offload pool: blocking work leaves the core, its result comes back to the session in
//! request order, a full queue is an error the handler turns into an answer, and the pool's
//! threads run off the service cores.

mod util;

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringwire::codec::Lines;
use ringwire::{CoreCtx, Handler, RemoteError, Server, Session};

/// `block`: a job that waits until the test releases it; `job <n>`: a job answering `<n>`;
/// `cpus`: a job answering the CPUs its thread may run on; anything else: answered inline.
struct Offloading {
    gate: Arc<Mutex<mpsc::Receiver<()>>>,
    started: mpsc::Sender<()>,
}

impl Handler<Lines> for Offloading {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        let text = String::from_utf8_lossy(line).into_owned();
        let reply = s.reserve().unwrap();
        let (gate, started) = (self.gate.clone(), self.started.clone());
        let job = move || -> String {
            match text.as_str() {
                "block" => {
                    let _ = started.send(());
                    let _ = gate.lock().unwrap().recv_timeout(util::IO_TIMEOUT);
                    "released".into()
                }
                "cpus" => format!("{:?}", allowed_cpus()),
                other => other.to_owned(),
            }
        };
        let done = s
            .core()
            .spawn_blocking(job, move |_: &mut CoreCtx, answer| {
                // A full queue answers "busy" in the request's place.
                let answer = answer.unwrap_or_else(|e: RemoteError| {
                    assert_eq!(e, RemoteError::Busy);
                    "busy".into()
                });
                reply.complete(format!("{answer}\n"))
            });
        assert!(matches!(done, Ok(()) | Err(RemoteError::Busy)), "{done:?}");
    }
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set, which the kernel fills.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: the kernel writes at most `size` bytes into `set`.
    assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut set) }, 0);
    // SAFETY: every index is below the set's capacity.
    (0..8 * size)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

#[test]
fn a_full_pool_says_busy_and_results_keep_request_order() {
    let (release, gate) = mpsc::channel();
    let gate = Arc::new(Mutex::new(gate));
    let (started_tx, started) = mpsc::channel();
    let server = util::start(
        Server::new(Lines::new(), move || Offloading {
            gate: gate.clone(),
            started: started_tx.clone(),
        })
        .cores(1)
        .offload_pool(1, 1)
        .bind(util::any_port()),
    );
    let mut conn = util::connect(server.addr());
    // The one thread blocks; one job waits in the queue; the next finds it full.
    conn.write_all(b"block\n").unwrap();
    started.recv_timeout(util::IO_TIMEOUT).unwrap();
    conn.write_all(b"one\ntwo\n").unwrap();
    // `two` is refused at once, but its answer waits behind `block` and `one`: nothing yet.
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut probe = [0u8; 1];
    assert!(std::io::Read::read(&mut conn, &mut probe).is_err());
    conn.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    release.send(()).unwrap();
    let want = b"released\none\nbusy\n";
    assert_eq!(util::read_n(&mut conn, want.len()), want);
    // The pool serves again.
    conn.write_all(b"three\n").unwrap();
    assert_eq!(util::read_n(&mut conn, 6), b"three\n");
    server.stop_cleanly();
}

#[test]
fn the_pool_runs_off_the_service_cores() {
    let allowed = allowed_cpus();
    if allowed.len() < 2 {
        eprintln!("skipped: one CPU allowed, the pool shares it");
        return;
    }
    let (_release, gate) = mpsc::channel();
    let (started_tx, _started) = mpsc::channel();
    let gate = Arc::new(Mutex::new(gate));
    let server = util::start(
        Server::new(Lines::new(), move || Offloading {
            gate: gate.clone(),
            started: started_tx.clone(),
        })
        .cpus([allowed[0]])
        .bind(util::any_port()),
    );
    let mut conn = util::connect(server.addr());
    conn.write_all(b"cpus\n").unwrap();
    let want = format!("{:?}\n", &allowed[1..]);
    assert_eq!(
        String::from_utf8(util::read_n(&mut conn, want.len())).unwrap(),
        want
    );
    server.stop_cleanly();
}
