//! The `Lines` codec through the engine over loopback: lines split across writes, a long line
//! that trickles in, `\r\n` and `\n` endings, replies encoded by the codec, and a line over the
//! limit that closes only its session. Also the stable replay of the `lines_decode` fuzz
//! target over the committed corpus.

mod util;

#[path = "../fuzz/src/targets.rs"]
mod fuzz_targets;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use ringwire::codec::Lines;
use ringwire::{Handler, Server, Session};

/// Replies to every line with its length and the line reversed: `5 olleh`.
struct Reverse;

impl Handler<Lines> for Reverse {
    fn on_message(&mut self, session: &mut Session<'_, Lines>, line: &[u8]) {
        let mut reply = format!("{} ", line.len()).into_bytes();
        reply.extend(line.iter().rev());
        if session.send(&reply).is_err() {
            session.close();
        }
    }
}

const MAX_LINE: usize = 4096;

fn server() -> util::Running {
    util::start(
        Server::new(Lines::new(), || Reverse)
            .bind(util::any_port())
            .max_frame(MAX_LINE),
    )
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let n = reader.read_line(&mut line).expect("read a reply line");
    assert!(n > 0, "EOF instead of a reply line");
    line
}

#[test]
fn lines_split_across_writes_are_served_in_order() {
    let server = server();
    let mut conn = util::connect(server.addr());
    let mut replies = BufReader::new(conn.try_clone().unwrap());
    // Two lines and the start of a third in one write; the rest in pieces.
    conn.write_all(b"hello\r\nab\nsplit ").unwrap();
    assert_eq!(read_line(&mut replies), "5 olleh\n");
    assert_eq!(read_line(&mut replies), "2 ba\n");
    conn.write_all(b"acr").unwrap();
    conn.write_all(b"oss\r").unwrap();
    conn.write_all(b"\n\n").unwrap();
    assert_eq!(read_line(&mut replies), "12 ssorca tilps\n");
    assert_eq!(read_line(&mut replies), "0 \n");
    // A line that arrived in part, then its end with short lines behind it: the scan
    // resumed for the first line starts afresh for the next.
    conn.write_all(b"resumed scan").unwrap();
    conn.write_all(b"\nab\n0123456789abcdef\n").unwrap();
    assert_eq!(read_line(&mut replies), "12 nacs demuser\n");
    assert_eq!(read_line(&mut replies), "2 ba\n");
    assert_eq!(read_line(&mut replies), "16 fedcba9876543210\n");
    // A line at the limit, trickled in small writes.
    let long: Vec<u8> = (0..MAX_LINE).map(|i| b'a' + (i % 26) as u8).collect();
    for piece in long.chunks(97) {
        conn.write_all(piece).unwrap();
    }
    conn.write_all(b"\n").unwrap();
    let reply = read_line(&mut replies);
    let mut expected = format!("{MAX_LINE} ").into_bytes();
    expected.extend(long.iter().rev());
    expected.push(b'\n');
    assert_eq!(reply.as_bytes(), expected.as_slice());
    drop(conn);
    server.stop_cleanly();
}

#[test]
fn a_line_over_the_limit_closes_only_its_session() {
    let server = server();
    let mut good = util::connect(server.addr());
    let mut good_replies = BufReader::new(good.try_clone().unwrap());
    let mut bad = util::connect(server.addr());
    bad.write_all(&vec![b'x'; MAX_LINE + 64]).unwrap();
    let before = util::expect_closed(&mut bad);
    assert!(
        before.is_empty(),
        "no reply to a line over the limit: {before:?}"
    );
    good.write_all(b"still here\n").unwrap();
    assert_eq!(read_line(&mut good_replies), "10 ereh llits\n");
    let s = server.wait_total("the long line's session to close", |s| s.closed >= 1);
    assert_eq!(s.closed_for(ringwire::CloseReason::CodecError), 1, "{s:#?}");
    drop(good);
    server.stop_cleanly();
}

/// The fuzz target over the committed corpus and seeded mutations (stable Rust: the libFuzzer
/// runs need nightly, see fuzz/run.sh).
#[test]
fn fuzz_lines_decode_corpus_and_mutations() {
    let n = fuzz_targets::replay(
        "lines_decode",
        fuzz_targets::lines_decode,
        20_000,
        0x5EED_0004,
    );
    println!("lines_decode: {n} inputs");
}
