//! Where io_uring is unavailable (a seccomp profile denies it, as Docker's and Kubernetes'
//! defaults do), the server falls back to epoll, says why, and serves; forcing io_uring there
//! is an error naming the cause.
//!
//! Each case runs in a child process (this test binary, re-executed): a seccomp filter cannot
//! be removed once installed, and the kernel probe is cached per process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use ringwire::codec::Raw;
use ringwire::handlers::Echo;
use ringwire::{DriverKind, Server};

const CHILD: &str = "RINGWIRE_FALLBACK_CHILD";

/// Installs a seccomp filter on this thread (and threads it creates) that fails
/// io_uring_setup with EPERM and allows everything else.
fn deny_io_uring() {
    // BPF: load the syscall number; if io_uring_setup return ERRNO(EPERM), else ALLOW.
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
            k: 0x0005_0000 | libc::EPERM as u32,
        }, // ret ERRNO
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

/// The child: runs only when re-executed with `CHILD` set.
#[test]
fn child_under_seccomp() {
    let Ok(case) = std::env::var(CHILD) else {
        return;
    };
    deny_io_uring();
    match ringwire::probe() {
        Ok(f) => panic!("the probe found io_uring usable under the filter: {f}"),
        Err(e) => println!("probe: {e}"),
    }
    let server = Server::new(Raw, || Echo).bind("127.0.0.1:0".parse().unwrap());
    match case.as_str() {
        "auto" => {
            let handle = server.start().expect("falls back to epoll");
            println!("driver: {}", handle.driver());
            echo_once(handle.local_addr());
            handle.shutdown(Duration::from_secs(1)).unwrap();
        }
        "forced" => match server.driver(DriverKind::IoUring).start() {
            Ok(_) => panic!("forcing io_uring under the filter started a server"),
            Err(e) => println!("error: {e}"),
        },
        other => panic!("unknown case {other}"),
    }
}

fn run_child(case: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_under_seccomp",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, case)
        .env_remove("RINGWIRE_DRIVER")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    text
}

#[test]
fn io_uring_denied_by_seccomp_falls_back_to_epoll_and_says_why() {
    let text = run_child("auto");
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
}

#[test]
fn forcing_io_uring_where_it_is_denied_is_an_error() {
    let text = run_child("forced");
    println!("{text}");
    let expected =
        "error: io_uring driver forced but unavailable: io_uring_setup failed with EPERM";
    assert!(text.contains(expected), "{text}");
}
