//! Workers run on CPUs the process may run on: `cores(n)` picks from the affinity mask (as
//! `taskset -c` sets it) rather than assuming CPUs `0..n`, the start-up line names them, and an
//! explicit CPU outside the mask is an error.
//!
//! The case runs in a child process (this test binary, re-executed) that restricts its own
//! affinity first. The child's entry point is `#[ignore]`d, so a normal run does not count it
//! as a test; the parent runs it with `--ignored --exact`.

mod util;

use std::process::Command;

use ringwire::codec::Raw;
use ringwire::handlers::Echo;
use ringwire::{Server, ServerError};

const CHILD: &str = "RINGWIRE_AFFINITY_CHILD";

/// The CPUs the calling thread may run on.
fn allowed() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set; the kernel writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(
            rc,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Restricts the calling thread (and the threads it creates) to `cpu`.
fn restrict_to(cpu: usize) {
    // SAFETY: as above; sched_setaffinity reads the set, which outlives the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The child's entry point: not a test of its own, run by the parent with the CPU in `CHILD`.
#[test]
#[ignore = "run by cores_are_chosen_from_the_allowed_cpus in a child process"]
fn affinity_child() {
    let cpu: usize = std::env::var(CHILD)
        .expect("run by cores_are_chosen_from_the_allowed_cpus, which sets the CPU")
        .parse()
        .unwrap();
    let _ = env_logger::builder()
        .filter_module("ringwire", log::LevelFilter::Info)
        .try_init();
    restrict_to(cpu);
    assert_eq!(allowed(), [cpu]);
    let workers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = workers.clone();
    let server = util::start(
        util::echo(Raw)
            .cores(2)
            .on_worker_start(move |_| seen.lock().unwrap().push(allowed())),
    );
    assert_eq!(server.info().cpus, [cpu, cpu]);
    let mut conn = util::connect(server.addr());
    std::io::Write::write_all(&mut conn, b"pinned").unwrap();
    assert_eq!(util::read_n(&mut conn, 6), b"pinned");
    drop(conn);
    server.stop_cleanly();
    assert_eq!(*workers.lock().unwrap(), [vec![cpu], vec![cpu]]);

    let outside = if cpu == 0 { 1 } else { 0 };
    match Server::new(Raw, || Echo).cpus([outside]).start() {
        Ok(_) => panic!("a worker was pinned to CPU {outside}, outside the allowed {cpu}"),
        Err(e @ ServerError::Config(_)) => println!("error: {e}"),
        Err(e) => panic!("expected a configuration error, got {e}"),
    }
    println!("AFFINITY-CHILD-OK");
}

#[test]
fn cores_are_chosen_from_the_allowed_cpus() {
    let cpus = allowed();
    // The highest allowed CPU: where CPUs `0..n` would be the wrong choice if it is not 0.
    let cpu = *cpus.last().unwrap();
    if cpu == 0 {
        eprintln!(
            "WARNING: this process may run on CPU 0 only, so choosing from the allowed CPUs \
             and choosing 0..n cannot be told apart here"
        );
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "affinity_child", "--nocapture"])
        .env(CHILD, cpu.to_string())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("AFFINITY-CHILD-OK"),
        "the child ran no test:\n{text}"
    );
    assert!(
        text.contains(&format!("(CPUs [{cpu}, {cpu}])")),
        "the start-up line names the CPUs used: {text}"
    );
    let outside = if cpu == 0 { 1 } else { 0 };
    assert!(
        text.contains(&format!(
            "error: invalid configuration: CPU {outside} is not one"
        )),
        "{text}"
    );
}
