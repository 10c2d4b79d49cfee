//! Several cores: connections spread over the cores' listeners (SO_REUSEPORT), and each
//! connection gets back exactly its own bytes, never another's, whichever core serves it.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::thread;

use ringwire::codec::Raw;
use ringwire::CloseReason;

const CONNS: usize = 200;
const CLIENT_THREADS: usize = 8;
const ROUNDS: usize = 8;
/// Bytes each connection sends per round (a multiple of the 4-byte pattern word).
const ROUND_BYTES: usize = 2048;

/// The bytes connection `conn` sends in `round`: 4-byte words of (connection id, word index),
/// so a misdelivered reply names the connection it was meant for.
fn pattern(conn: usize, round: usize) -> Vec<u8> {
    let words = ROUND_BYTES / 4;
    (0..words)
        .flat_map(|w| {
            let word = (round * words + w) as u16;
            let mut b = [0u8; 4];
            b[..2].copy_from_slice(&(conn as u16).to_be_bytes());
            b[2..].copy_from_slice(&word.to_be_bytes());
            b
        })
        .collect()
}

fn check(conn: usize, round: usize, sent: &[u8], back: &[u8]) {
    if let Some(i) = util::first_difference(sent, back) {
        let w = i / 4 * 4;
        let owner = u16::from_be_bytes([back[w], back[w + 1]]);
        panic!(
            "conn {conn} round {round}: byte {i} differs; the word there belongs to conn {owner} \
             (word {:?}, expected {:?})",
            &back[w..w + 4],
            &sent[w..w + 4]
        );
    }
}

/// One client thread drives its share of the connections in lock-step rounds: write to each,
/// then read each one's echo back.
fn drive(conns: &mut [(usize, TcpStream)]) {
    for round in 0..ROUNDS {
        let sent: Vec<Vec<u8>> = conns.iter().map(|(id, _)| pattern(*id, round)).collect();
        for ((id, stream), bytes) in conns.iter_mut().zip(&sent) {
            stream
                .write_all(bytes)
                .unwrap_or_else(|e| panic!("conn {id} round {round}: write: {e}"));
        }
        for ((id, stream), bytes) in conns.iter_mut().zip(&sent) {
            let back = util::read_n(stream, bytes.len());
            check(*id, round, bytes, &back);
        }
    }
}

#[test]
fn two_cores_serve_200_connections_without_crosstalk() {
    let server = util::start(util::echo(Raw).cores(2));
    let addr = server.addr();
    // Every connection is open before any sends, so both cores hold many sessions at once.
    let mut conns: Vec<(usize, TcpStream)> =
        (0..CONNS).map(|id| (id, util::connect(addr))).collect();
    server.wait_total("every connection accepted", |s| s.accepted == CONNS as u64);
    thread::scope(|s| {
        for share in conns.chunks_mut(CONNS.div_ceil(CLIENT_THREADS)) {
            s.spawn(move || drive(share));
        }
    });
    for (_, stream) in &mut conns {
        util::shutdown_write(stream);
        util::expect_eof(stream);
    }
    drop(conns);
    server.wait_total("every session closed", |s| s.closed == CONNS as u64);

    let stats = server.stats();
    let per_conn = (ROUNDS * ROUND_BYTES) as u64;
    for (core, c) in stats.cores.iter().enumerate() {
        println!(
            "core {core}: accepted {} closed {} bytes_in {} bytes_out {}",
            c.accepted, c.closed, c.bytes_in, c.bytes_out
        );
        assert!(c.accepted > 0, "core {core} accepted nothing: {stats:#?}");
        assert_eq!(c.closed, c.accepted, "core {core}: {c:#?}");
        assert_eq!(
            (c.bytes_in, c.bytes_out),
            (c.accepted * per_conn, c.accepted * per_conn),
            "core {core}: every session's bytes in and out on the core that accepted it"
        );
    }
    let total = stats.total();
    assert_eq!(total.accepted, CONNS as u64);
    assert_eq!(total.closed_for(CloseReason::PeerClosed), CONNS as u64);
    assert_eq!(total.rejected, 0);
    server.stop_cleanly();
}
