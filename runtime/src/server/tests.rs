//! A worker that dies from an engine panic, over real loopback sockets: its listener leaves
//! the SO_REUSEPORT group, its sessions' peers see the end, the other core keeps serving, and
//! the server reports the death. User code cannot cause such a panic, so the test injects one
//! through a driver that panics after a turn.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::session::Session;
use crate::worker::tests::Bytes;

/// Wraps a driver; once `trigger` is set, panics at the end of the next turn.
pub(super) struct Faulty<D> {
    inner: D,
    trigger: Arc<AtomicBool>,
}

impl<D> Faulty<D> {
    pub(super) fn new(inner: D, trigger: Arc<AtomicBool>) -> Self {
        Faulty { inner, trigger }
    }
}

impl<D: Driver> Driver for Faulty<D> {
    type Ops = D::Ops;

    fn ops(&mut self) -> &mut D::Ops {
        self.inner.ops()
    }

    fn turn<S: crate::driver::Sink<D::Ops>>(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut S,
    ) -> io::Result<()> {
        self.inner.turn(timeout, sink)?;
        if self.trigger.load(Ordering::Acquire) {
            panic!("injected engine fault");
        }
        Ok(())
    }

    fn is_quiescent(&self) -> bool {
        self.inner.is_quiescent()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

struct Echo;

impl Handler<Bytes> for Echo {
    fn on_message(&mut self, session: &mut Session<'_, Bytes>, frame: &[u8]) {
        session.write(frame); // no frame here starts with `!` or `[`
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects and echoes one message; fails on any error, EOF or timeout.
fn echo_once(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(msg)?;
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got)?;
    assert_eq!(got, msg, "echo mismatch");
    Ok(())
}

fn accepted(handle: &ServerHandle, core: usize) -> u64 {
    handle.core_stats()[core].accepted.get()
}

fn worker_death(driver: DriverKind) {
    if driver == DriverKind::IoUring && probe::probe().is_err() {
        eprintln!("io_uring unavailable here; the epoll variant covers the death path");
        return;
    }
    eprintln!("driver: {driver:?}");
    let trigger = Arc::new(AtomicBool::new(false));
    let config = Config {
        cpus: vec![0, 1],
        pin: false,
        driver,
        ..Config::default()
    };
    let hooks = Hooks {
        fault: Some((1, trigger.clone())),
        ..Hooks::default()
    };
    let handle = start(config, Bytes, || Echo, hooks).expect("server starts");
    let addr = handle.local_addr();

    // One live connection on each core (the kernel picks the core by hashing the ports).
    let mut on_core: [Option<TcpStream>; 2] = [None, None];
    for _ in 0..256 {
        if on_core.iter().all(Option::is_some) {
            break;
        }
        let before = [accepted(&handle, 0), accepted(&handle, 1)];
        let mut stream = TcpStream::connect(addr).expect("connect");
        echo_once(&mut stream, b"hello").expect("echo before the fault");
        let core = usize::from(accepted(&handle, 1) > before[1]);
        on_core[core].get_or_insert(stream);
    }
    let [Some(mut survivor), Some(mut victim)] = on_core else {
        panic!("256 connections all landed on one core");
    };

    trigger.store(true, Ordering::Release);
    victim.write_all(b"wake").expect("write to the dying core");
    let deadline = Instant::now() + IO_TIMEOUT;
    while handle.core_stats()[1].worker_deaths.get() == 0 {
        assert!(Instant::now() < deadline, "core 1 did not die");
        std::thread::sleep(Duration::from_millis(5));
    }

    // The dead core's session ends (EOF or reset), rather than hanging.
    victim.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match victim.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue, // the echo of "wake" may have been sent before the panic
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the dead core's session did not end: {e}"),
        }
    }

    // The other core keeps its session and takes every new connection.
    echo_once(&mut survivor, b"still here").expect("survivor echoes");
    let before = accepted(&handle, 0);
    for i in 0..64 {
        let mut stream = TcpStream::connect(addr).expect("connect after the death");
        echo_once(&mut stream, format!("after {i}").as_bytes())
            .unwrap_or_else(|e| panic!("connection {i} after the death: {e}"));
    }
    assert_eq!(accepted(&handle, 0) - before, 64);
    assert_eq!(handle.stats().total().worker_deaths, 1);

    handle.stop();
    match handle.join() {
        Err(ServerError::WorkerPanicked { core: 1, message }) => {
            assert!(message.contains("injected engine fault"), "{message}")
        }
        other => panic!("expected core 1's death to be reported, got {other:?}"),
    }
}

#[test]
fn dead_uring_worker_leaves_the_group_and_ends_its_sessions() {
    worker_death(DriverKind::IoUring);
}

#[test]
fn dead_epoll_worker_leaves_the_group_and_ends_its_sessions() {
    worker_death(DriverKind::Epoll);
}
