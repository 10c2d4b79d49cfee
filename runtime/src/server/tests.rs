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

/// Fills large blocks with 0xDD when they are freed, so that a send the kernel makes from
/// freed output shows as 0xDD on the wire instead of passing unnoticed.
struct PoisonOnFree;

// SAFETY: forwards to the system allocator; writes only inside the block being freed.
unsafe impl std::alloc::GlobalAlloc for PoisonOnFree {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if layout.size() >= 64 << 10 {
            // SAFETY: `ptr` points to `layout.size()` bytes owned by the caller until freed.
            unsafe { std::ptr::write_bytes(ptr, 0xdd, layout.size()) };
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: PoisonOnFree = PoisonOnFree;

/// Wraps a driver; once `trigger` is set, panics at the end of the next turn (once).
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
    fn apply(&mut self, commands: &mut Vec<Command>) {
        self.inner.apply(commands);
    }

    fn turn<K: Core>(&mut self, timeout: Option<Duration>, core: &mut K) -> io::Result<()> {
        self.inner.turn(timeout, core)?;
        if self.trigger.swap(false, Ordering::AcqRel) {
            panic!("injected engine fault");
        }
        Ok(())
    }

    fn is_quiescent(&self) -> bool {
        self.inner.is_quiescent()
    }

    fn settled(&self) -> bool {
        self.inner.settled()
    }

    fn abort_all(&mut self) {
        self.inner.abort_all();
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn doorbell(&mut self, target: usize) -> bool {
        self.inner.doorbell(target)
    }
}

/// Echoes. Its `Drop` panics on core 1's thread (the core that dies), so the test also sees
/// that handlers dropped after a death cannot take the thread down with them.
struct Echo;

impl Drop for Echo {
    fn drop(&mut self) {
        if std::thread::current().name() == Some("ringwire-w1") {
            panic!("a handler's drop panics");
        }
    }
}

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

/// Reads until EOF or a reset; fails on anything else, a timeout included.
fn drain(stream: &mut TcpStream, name: &str) -> Vec<u8> {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the dead core's {name} session did not end: {e}"),
        }
    }
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
    let handle = start(config, Bytes, |_: &mut CoreCtx| Echo, hooks).expect("server starts");
    let addr = handle.local_addr();

    // A live connection on core 0, two on core 1 (the kernel picks the core by hashing the
    // ports): one that stalls with output pending, one to wake the core.
    let mut core0 = Vec::new();
    let mut core1 = Vec::new();
    for _ in 0..512 {
        if !core0.is_empty() && core1.len() >= 2 {
            break;
        }
        let before = accepted(&handle, 1);
        let mut stream = TcpStream::connect(addr).expect("connect");
        echo_once(&mut stream, b"hello").expect("echo before the fault");
        if accepted(&handle, 1) > before {
            core1.push(stream);
        } else {
            core0.push(stream);
        }
    }
    assert!(
        !core0.is_empty() && core1.len() >= 2,
        "512 connections did not spread over both cores"
    );
    let mut survivor = core0.swap_remove(0);
    let (mut stalled, mut poker) = (core1.swap_remove(0), core1.swap_remove(0));

    // The stalled peer sends without reading, so its echo is pending in the engine (and on
    // io_uring a send is in flight) when the core dies.
    fn pattern(i: usize) -> u8 {
        b'a' + (i % 26) as u8 // never `!` or `[`
    }
    let sent: Vec<u8> = (0..(64 << 20)).map(pattern).collect();
    let mut writer = stalled.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut written = 0;
    while written < sent.len() {
        match writer.write(&sent[written..]) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("stalled peer's write: {e}"),
        }
    }
    assert!(
        handle.core_stats()[1].backpressure_pauses.get() > 0,
        "the stalled peer never filled its output ({written} bytes written)"
    );

    // The stalled peer starts reading as the core dies, so that a send left in flight would
    // find room and go out.
    let reading = std::thread::spawn(move || drain(&mut stalled, "stalled"));
    trigger.store(true, Ordering::Release);
    poker.write_all(b"wake").expect("write to the dying core");
    let deadline = Instant::now() + IO_TIMEOUT;
    while handle.core_stats()[1].worker_deaths.get() == 0 {
        assert!(Instant::now() < deadline, "core 1 did not die");
        std::thread::sleep(Duration::from_millis(5));
    }

    // The dead core's sessions end (EOF or reset) rather than hang, and what the stalled peer
    // reads is its own echo: no freed memory went out.
    drain(&mut poker, "poker");
    let got = reading.join().expect("stalled reader");
    let bad = got.iter().enumerate().position(|(i, &b)| b != pattern(i));
    assert_eq!(bad, None, "the stalled peer read {} bytes", got.len());

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
    // The poker's and the stalled peer's handlers panicked when dropped; both were caught.
    assert!(handle.core_stats()[1].panics.get() >= 2);

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
