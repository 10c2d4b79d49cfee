//! `ServerHandle::info`: what the start-up line says (driver, fallback reason, CPUs, address),
//! for a service without a `log` backend to print its own way.

mod util;

use std::io::Write;

use ringwire::codec::Raw;
use ringwire::DriverKind;

#[test]
fn info_names_the_driver_cpus_and_address_of_a_serving_server() {
    let server = util::start(util::echo(Raw).cores(2));
    let info = server.info().clone();
    println!("{info}");
    assert_eq!(info.addr, server.addr());
    assert!(info.listening && info.pinned);
    assert_eq!(info.cpus.len(), 2);
    match std::env::var("RINGWIRE_DRIVER").ok().as_deref() {
        Some("epoll") => assert_eq!(info.driver, DriverKind::Epoll),
        Some("uring") => assert_eq!(info.driver, DriverKind::IoUring),
        _ => assert_ne!(info.driver, DriverKind::Auto),
    }
    assert_eq!(info.driver == DriverKind::IoUring, server.is_uring());
    if info.driver == DriverKind::IoUring {
        assert!(
            info.driver_detail.starts_with("io_uring driver"),
            "{info:?}"
        );
        assert_eq!(info.fallback, None);
    } else {
        assert!(info.driver_detail.starts_with("epoll driver"), "{info:?}");
    }
    let line = info.to_string();
    assert!(line.starts_with(&info.driver_detail), "{line}");
    assert!(
        line.contains(&format!("on 2 core(s) (CPUs {:?})", info.cpus)),
        "{line}"
    );
    assert!(
        line.ends_with(&format!("listening on {}", server.addr())),
        "{line}"
    );
    // It describes a server that serves.
    let mut conn = util::connect(info.addr);
    conn.write_all(b"info").unwrap();
    assert_eq!(util::read_n(&mut conn, 4), b"info");
    drop(conn);
    server.stop_cleanly();
}

#[test]
fn info_of_an_unpinned_server_says_so() {
    let server = util::start(util::echo(Raw).cpus([0]).pin(false));
    let info = server.info();
    assert!(!info.pinned);
    assert_eq!(info.cpus, [0]);
    assert!(info.to_string().contains("(unpinned, CPUs [0])"), "{info}");
    server.stop_cleanly();
}
