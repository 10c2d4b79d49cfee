//! Stopping on signals, in the library: the first SIGTERM drains (new connections are
//! refused, open sessions are still served), a second stops at once (open sessions close), and
//! once the server has stopped SIGTERM terminates the process again, as by default. Through
//! `Server::run_until_signal` and through `signal::drain_on_signal` on a handle.
//!
//! Each case runs in a child process (this test binary, re-executed), which the parent sends
//! signals to. The child's entry point is `#[ignore]`d, so a normal run does not count it as a
//! test; the parent runs it with `--ignored --exact`.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ringwire::codec::Raw;
use ringwire::handlers::Echo;
use ringwire::{signal, Server};

const CHILD: &str = "RINGWIRE_SIGNAL_CHILD";
const PORT_LINE: &str = "SIGNAL-CHILD-PORT ";
const RESULT_LINE: &str = "SIGNAL-CHILD-RESULT ";
/// Far longer than the test waits: only the second signal can end the drain in time.
const DRAIN: Duration = Duration::from_secs(120);

/// The child's entry point: not a test of its own, the parent runs it with the case in
/// `CHILD`.
#[test]
#[ignore = "run by the signal tests in a child process"]
fn signal_child() {
    let case = std::env::var(CHILD).expect("run by the signal tests, which set the case");
    let result = match case.as_str() {
        "run" => {
            // A port nobody listens on, for the server to bind.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            println!("\n{PORT_LINE}{port}");
            Server::new(Raw, || Echo)
                .bind(SocketAddr::from(([127, 0, 0, 1], port)))
                .run_until_signal(DRAIN)
        }
        "watch" => {
            let handle = Server::new(Raw, || Echo)
                .bind(util::any_port())
                .start()
                .unwrap();
            let watch = signal::drain_on_signal(handle.stopper(), DRAIN).unwrap();
            println!("\n{PORT_LINE}{}", handle.local_addr().port());
            let result = handle.join();
            drop(watch);
            result
        }
        other => panic!("unknown case {other}"),
    };
    println!("\n{RESULT_LINE}{result:?}");
    // The server has stopped: SIGTERM must terminate the process again.
    // SAFETY: raise takes a signal number.
    unsafe { libc::raise(libc::SIGTERM) };
    thread::sleep(Duration::from_millis(500));
    println!("\n{RESULT_LINE}SIGTERM was ignored after the server stopped");
}

/// The child: this test binary re-executed for one case.
struct ChildProcess(util::ChildLines);

impl ChildProcess {
    fn spawn(case: &str) -> Self {
        ChildProcess(util::ChildLines::spawn(
            Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "signal_child", "--nocapture"])
                .env(CHILD, case),
        ))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill takes a process id and a signal number.
        let rc = unsafe { libc::kill(self.0.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl std::ops::Deref for ChildProcess {
    type Target = util::ChildLines;
    fn deref(&self) -> &util::ChildLines {
        &self.0
    }
}

impl std::ops::DerefMut for ChildProcess {
    fn deref_mut(&mut self) -> &mut util::ChildLines {
        &mut self.0
    }
}

/// Connects, retrying while the server starts.
fn connect_when_up(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(addr) {
            Ok(conn) => {
                conn.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
                conn.set_write_timeout(Some(util::IO_TIMEOUT)).unwrap();
                return conn;
            }
            Err(e) if Instant::now() > deadline => panic!("the child never listened: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn echo(conn: &mut TcpStream, payload: &[u8]) {
    conn.write_all(payload).unwrap();
    assert_eq!(util::read_n(conn, payload.len()), payload);
}

fn first_drains_second_stops(case: &str) {
    let mut child = ChildProcess::spawn(case);
    let port: u16 = child.line_after(PORT_LINE).trim().parse().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut open = connect_when_up(addr);
    echo(&mut open, b"before any signal");

    child.signal(libc::SIGTERM);
    util::wait_refused(addr, Duration::from_secs(10)).expect("draining refuses new connections");
    echo(&mut open, b"served while draining");

    child.signal(libc::SIGTERM);
    let rest = util::expect_closed(&mut open);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(child.line_after(RESULT_LINE), "Ok(())");
    let status = child.child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "after the server stopped, SIGTERM terminates the child again: {status}"
    );
}

#[test]
fn run_until_signal_drains_on_the_first_signal_and_stops_on_the_second() {
    first_drains_second_stops("run");
}

#[test]
fn drain_on_signal_drains_on_the_first_signal_and_stops_on_the_second() {
    first_drains_second_stops("watch");
}
