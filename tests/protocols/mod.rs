//! Helpers for the tests that drive the example servers with real clients (redis-cli,
//! redis-benchmark, curl, wrk): finding the tools, and running them with a bound on time.
//!
//! Invariant: a missing tool fails the test loudly (it never skips), and no client runs past
//! its timeout: it is killed and the test fails with what it printed so far.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The path of `tool` on `PATH`; fails the test loudly when it is not installed.
pub fn require(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => path,
        None => panic!(
            "\n\n*** `{tool}` IS NOT INSTALLED: this test drives the server with real clients.\n\
             *** Install them with scripts/install-test-deps.sh (redis-tools, curl, wrk, openssl, redis-server, nutcracker).\n\n"
        ),
    }
}

/// What a client printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Fails the test, showing everything, unless the client exited 0.
    pub fn success(self) -> Output {
        assert!(self.status.success(), "client failed: {self:#?}");
        self
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `tool args...` with `stdin` as its input; kills it and fails the test if it runs
/// longer than `timeout`.
pub fn run(tool: &str, args: &[&str], stdin: &[u8], timeout: Duration) -> Output {
    let path = require(tool);
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&stdin);
        // Dropping `input` closes the client's stdin.
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{tool} {}` still running after {timeout:?}; it printed:\n{}\n{}",
                args.join(" "),
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = feeder.join();
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
