//! Where io_uring is unavailable (a seccomp profile denies it, as Docker's and Kubernetes'
//! defaults do), the server falls back to epoll, says why, and serves; forcing io_uring there
//! is an error naming the cause. Forcing epoll never touches io_uring, so even a profile that
//! kills the process on io_uring_setup lets it serve.
//!
//! Each case runs in a child process (this test binary, re-executed): a seccomp filter cannot
//! be removed once installed, and the kernel probe is cached per process. The child's entry
//! point is `#[ignore]`d, so a normal run does not count it as a test; the parent runs it with
//! `--ignored --exact`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use ringwire::codec::Raw;
use ringwire::handlers::Echo;
use ringwire::{DriverKind, Server};

const CHILD: &str = "RINGWIRE_FALLBACK_CHILD";

/// seccomp's return value that fails the syscall with EPERM.
const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
/// seccomp's return value that kills the whole process (SECCOMP_RET_KILL_PROCESS) with SIGSYS.
const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// Installs a seccomp filter on this thread (and threads it creates) that answers
/// io_uring_setup with `action` and allows everything else.
fn filter_io_uring(action: u32) {
    // BPF: load the syscall number; if io_uring_setup return `action`, else ALLOW.
    // (x86_64 and aarch64 both number io_uring_setup 425.)
    let filter = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ld [nr]
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        }, // jeq
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: action,
        }, // ret action
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        }, // ret ALLOW
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with these arguments reads `prog`, which outlives the calls.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let res = libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const _,
        );
        assert_eq!(res, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

fn echo_once(addr: std::net::SocketAddr) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"still serving").unwrap();
    let mut back = [0u8; 13];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still serving");
}

/// The child's entry point: not a test of its own, the parent runs it with `--ignored
/// --exact` and the case in `CHILD`.
#[test]
#[ignore = "run by the fallback tests in a child process"]
fn child_under_seccomp() {
    let case = std::env::var(CHILD).expect("run by the fallback tests, which set the case");
    let server = Server::new(Raw, || Echo).bind("127.0.0.1:0".parse().unwrap());
    match case.as_str() {
        "auto" => {
            filter_io_uring(RET_EPERM);
            probe_fails();
            let handle = server.start().expect("falls back to epoll");
            println!("driver: {}", handle.driver());
            let info = handle.info();
            assert_eq!(info.driver, DriverKind::Epoll);
            let why = info.fallback.as_deref().expect("the fallback's reason");
            println!("info fallback: {why}");
            echo_once(handle.local_addr());
            handle.shutdown(Duration::from_secs(1)).unwrap();
        }
        "forced" => {
            filter_io_uring(RET_EPERM);
            probe_fails();
            match server.driver(DriverKind::IoUring).start() {
                Ok(_) => panic!("forcing io_uring under the filter started a server"),
                Err(e) => println!("error: {e}"),
            }
        }
        // io_uring_setup kills the process: nothing may probe it.
        "kill-epoll-env" | "kill-epoll-builder" => {
            filter_io_uring(RET_KILL_PROCESS);
            let server = if case == "kill-epoll-builder" {
                server.driver(DriverKind::Epoll)
            } else {
                server
            };
            let handle = server.start().expect("serves on epoll");
            println!("driver: {}", handle.driver());
            assert_eq!(handle.info().driver, DriverKind::Epoll);
            assert_eq!(handle.info().fallback, None, "epoll was asked for");
            echo_once(handle.local_addr());
            handle.shutdown(Duration::from_secs(1)).unwrap();
            println!("served on epoll under a killing filter");
        }
        other => panic!("unknown case {other}"),
    }
}

fn probe_fails() {
    match ringwire::probe() {
        Ok(f) => panic!("the probe found io_uring usable under the filter: {f}"),
        Err(e) => println!("probe: {e}"),
    }
}

fn run_child(case: &str, driver_env: Option<&str>) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "child_under_seccomp",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, case)
    .env_remove("RINGWIRE_DRIVER");
    if let Some(driver) = driver_env {
        cmd.env("RINGWIRE_DRIVER", driver);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed ({}):\n{text}",
        out.status
    );
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    text
}

#[test]
fn io_uring_denied_by_seccomp_falls_back_to_epoll_and_says_why() {
    let text = run_child("auto", None);
    println!("{text}");
    assert!(
        text.contains("probe: io_uring_setup failed with EPERM"),
        "{text}"
    );
    assert!(
        text.contains("seccomp"),
        "the diagnostic names the likely cause: {text}"
    );
    assert!(text.contains("driver: epoll driver"), "{text}");
    assert!(
        text.contains("; io_uring unavailable: io_uring_setup failed with EPERM"),
        "{text}"
    );
    assert!(
        text.contains("info fallback: io_uring_setup failed with EPERM"),
        "{text}"
    );
}

#[test]
fn forcing_io_uring_where_it_is_denied_is_an_error() {
    let text = run_child("forced", None);
    println!("{text}");
    let expected =
        "error: io_uring driver forced but unavailable: io_uring_setup failed with EPERM";
    assert!(text.contains(expected), "{text}");
}

#[test]
fn epoll_forced_by_env_serves_where_io_uring_setup_kills() {
    let text = run_child("kill-epoll-env", Some("epoll"));
    println!("{text}");
    assert!(
        text.contains("served on epoll under a killing filter"),
        "{text}"
    );
}

#[test]
fn epoll_forced_by_builder_serves_where_io_uring_setup_kills() {
    let text = run_child("kill-epoll-builder", None);
    println!("{text}");
    assert!(
        text.contains("served on epoll under a killing filter"),
        "{text}"
    );
}
