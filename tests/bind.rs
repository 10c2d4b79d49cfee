//! Listening where another socket already listens: SO_REUSEPORT would let a second server join
//! silently and take part of the first one's connections, so it is an error naming the address
//! unless sharing the port is asked for (a zero-downtime restart).

mod util;

use std::io::{Read, Write};
use std::net::TcpListener;

use ringwire::codec::Raw;
use ringwire::ServerError;

/// Echoes `payload` over a new connection to `addr`.
fn echo_once(addr: std::net::SocketAddr, payload: &[u8]) {
    let mut conn = util::connect(addr);
    conn.write_all(payload).unwrap();
    let mut back = vec![0; payload.len()];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(back, payload);
}

#[test]
fn a_second_server_on_the_same_address_fails_naming_it() {
    let first = util::start(util::echo(Raw).cores(2));
    let addr = first.addr();
    match util::echo(Raw).bind(addr).start() {
        Ok(second) => panic!(
            "a second server started on {addr}, sharing it silently ({})",
            second.driver()
        ),
        Err(ServerError::AddrInUse { addr: named }) => {
            assert_eq!(named, addr);
            let text = ServerError::AddrInUse { addr }.to_string();
            assert!(text.contains(&addr.to_string()), "{text}");
            assert!(text.contains("address in use"), "{text}");
            assert!(text.contains("share_port"), "{text}");
        }
        Err(other) => panic!("expected AddrInUse for {addr}, got {other}"),
    }
    // The first server still serves every connection.
    for i in 0..8u8 {
        echo_once(addr, &[i; 16]);
    }
    first.stop_cleanly();
}

#[test]
fn a_plain_listener_on_the_address_is_also_refused() {
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    match util::echo(Raw).bind(addr).start() {
        Ok(_) => panic!("started on {addr}, where another listener is"),
        Err(e) => assert!(
            matches!(e, ServerError::AddrInUse { addr: named } if named == addr),
            "{e}"
        ),
    }
}

#[test]
fn with_share_port_both_servers_start_and_the_second_serves_alone_after_the_first_stops() {
    let first = util::start(util::echo(Raw));
    let addr = first.addr();
    let second = util::start(util::echo(Raw).bind(addr).share_port(true));
    assert_eq!(second.addr(), addr);
    // Connections reach one or the other; each is served.
    for i in 0..8u8 {
        echo_once(addr, &[i; 16]);
    }
    first.stop_cleanly();
    for i in 0..8u8 {
        echo_once(addr, &[i; 16]);
    }
    assert!(second.total().accepted >= 8, "{:#?}", second.total());
    second.stop_cleanly();
}
