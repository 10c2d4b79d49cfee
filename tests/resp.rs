//! The kv example against real Redis clients: a scripted redis-cli session over every command,
//! redis-cli's pipe mode, redis-benchmark on 1 and 2 cores, protocol errors that close only
//! their connection, and cross-core visibility of writes. The server is the example's own
//! service (`examples/kv/service.rs`), started in-process; every test that starts one runs
//! once per sharding (`cores::*` shared nothing, `locks::*` the locked store).
//!
//! The clients must be installed (scripts/install-test-deps.sh); a missing one fails loudly.
//! Also here: the stable replay of the RESP and Len32 fuzz targets over the committed corpus.

mod protocols;
mod util;

#[allow(dead_code)]
#[path = "../examples/kv/service.rs"]
mod kv;

#[path = "../fuzz/src/targets.rs"]
mod fuzz_targets;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kv::store::{Keys, Local};
use kv::{Keyspace, Sharding, Store};
use protocols::run;
use ringwire::codec::resp::{encode_command, Limits, Resp};
use util::Running;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Each named test (a function taking the sharding) runs once per sharding.
macro_rules! per_sharding {
    ($($test:ident),* $(,)?) => {
        mod cores {
            $(#[test]
            fn $test() {
                super::$test(super::Sharding::Cores);
            })*
        }
        mod locks {
            $(#[test]
            fn $test() {
                super::$test(super::Sharding::Locks);
            })*
        }
    };
}

per_sharding!(
    redis_cli_session_covers_every_command,
    redis_cli_pipe_mode_is_pipelined,
    redis_benchmark_pipelined_on_one_core,
    redis_benchmark_pipelined_on_two_cores,
    protocol_errors_close_only_their_connection,
    writes_are_visible_across_cores,
    hostile_requests_get_bounded_answers,
);

fn kv_server(cores: usize, limits: Limits, sharding: Sharding) -> Running {
    let server = kv::server(Resp::with_limits(limits), sharding, 64)
        .bind(util::any_port())
        .cores(cores)
        .max_frame(64 * 1024);
    util::start(server)
}

fn port(server: &Running) -> String {
    server.addr().port().to_string()
}

/// redis-cli, one command per line on stdin, as a person types them. Output is redis-cli's
/// raw form (stdout is not a terminal): one line per reply, errors included. On 2 cores: with
/// shared nothing, the keys are spread over both, whichever core the connection is on.
fn redis_cli_session_covers_every_command(sharding: Sharding) {
    let server = kv_server(2, Limits::default(), sharding);
    // Each command and the reply redis-cli prints for it: nil prints as an empty line, and
    // an error is followed by one.
    let session: &[(&str, &str)] = &[
        ("PING", "PONG"),
        ("PING hello", "hello"),
        ("ECHO \"two words\"", "two words"),
        ("SET greeting hello", "OK"),
        ("GET greeting", "hello"),
        ("SET greeting other NX", ""),
        ("SET greeting world XX", "OK"),
        ("GET greeting", "world"),
        ("SET fresh v XX", ""),
        ("SET fresh v NX", "OK"),
        ("SET tmp v EX 100", "OK"),
        ("TTL tmp", "100"),
        ("SET tmp v KEEPTTL", "OK"),
        ("TTL tmp", "100"),
        ("PTTL fresh", "-1"),
        ("TTL nothing", "-2"),
        ("SET tmp v PX 100000 KEEPTTL", "ERR syntax error\n"),
        (
            "SET tmp v EX 0",
            "ERR invalid expire time in 'set' command\n",
        ),
        (
            "SET tmp v EX 10000000000000000",
            "ERR invalid expire time in 'set' command\n",
        ),
        (
            "SET tmp v EX x",
            "ERR value is not an integer or out of range\n",
        ),
        ("SET tmp v NX XX", "ERR syntax error\n"),
        ("EXISTS greeting fresh nothing greeting", "3"),
        ("DEL greeting nothing", "1"),
        ("GET greeting", ""),
        ("INCR counter", "1"),
        ("INCR counter", "2"),
        ("DECR counter", "1"),
        ("INCRBY counter 41", "42"),
        ("DECRBY counter 2", "40"),
        ("GET counter", "40"),
        ("SET big 9223372036854775807", "OK"),
        ("INCR big", "ERR increment or decrement would overflow\n"),
        ("SET word abc", "OK"),
        ("INCR word", "ERR value is not an integer or out of range\n"),
        ("MSET a 1 b 2 c 3", "OK"),
        ("MGET a b nothing c", "1\n2\n\n3"),
        (
            "MSET a",
            "ERR wrong number of arguments for 'mset' command\n",
        ),
        ("DBSIZE", "8"),
        ("SELECT 0", "OK"),
        ("SELECT 1", "ERR DB index is out of range\n"),
        ("CONFIG GET save", "save\n"),
        ("CONFIG GET append*", "appendonly\nno"),
        ("CONFIG GET nothing", ""),
        ("COMMAND COUNT", "23"),
        ("GET", "ERR wrong number of arguments for 'get' command\n"),
        (
            "NOSUCHCOMMAND with args",
            "ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'with' 'args' \n",
        ),
    ];
    let script: String = session.iter().map(|(cmd, _)| format!("{cmd}\n")).collect();
    let out = run(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", &port(&server)],
        script.as_bytes(),
        CLI_TIMEOUT,
    )
    .success();
    let mut got = out.stdout.as_str();
    for (cmd, reply) in session {
        let want = format!("{reply}\n");
        assert!(
            got.starts_with(&want),
            "`{cmd}`: expected {want:?}, redis-cli printed {:?}\nwhole output:\n{}",
            got.lines().next().unwrap_or(""),
            out.stdout
        );
        got = &got[want.len()..];
    }
    assert_eq!(got, "", "more output than replies:\n{}", out.stdout);
    server.stop_cleanly();
}

/// redis-cli --pipe sends its whole input at once (pipelined), then counts the replies and
/// the errors among them. The server decodes many commands per receive and writes their
/// replies together.
fn redis_cli_pipe_mode_is_pipelined(sharding: Sharding) {
    let server = kv_server(2, Limits::default(), sharding);
    let mut input = Vec::new();
    let n = 20_000;
    for i in 0..n {
        encode_command(
            &[b"SET".as_slice(), format!("k{i}").as_bytes(), b"v"],
            &mut input,
        );
    }
    encode_command(&[b"INCR".as_slice(), b"k0"], &mut input); // an error reply
    input.extend_from_slice(b"PING\r\n"); // inline form, in the middle of arrays
    encode_command(&[b"GET".as_slice(), b"k7"], &mut input);
    let out = run(
        "redis-cli",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port(&server),
            "--pipe",
            "--pipe-timeout",
            "20",
        ],
        &input,
        CLI_TIMEOUT,
    );
    // redis-cli --pipe exits 1 when any reply was an error; one is.
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let replies = n + 3;
    assert!(
        out.stdout
            .contains(&format!("errors: 1, replies: {replies}")),
        "redis-cli --pipe said:\n{}{}",
        out.stdout,
        out.stderr
    );
    let mut conn = util::connect(server.addr());
    request(&mut conn, &[b"DBSIZE"]);
    assert_eq!(reply(&mut conn), format!(":{n}"));
    drop(conn);
    let total = server.total();
    // redis-cli adds commands of its own (an ECHO to find the last reply, for one).
    assert!(total.frames_out >= replies as u64, "{total:?}");
    assert!(
        total.writes * 8 < total.frames_out,
        "pipelined replies should share writes: {} replies in {} writes",
        total.frames_out,
        total.writes
    );
    server.stop_cleanly();
}

fn bench(cores: usize, sharding: Sharding) {
    let server = kv_server(cores, Limits::default(), sharding);
    let out = run(
        "redis-benchmark",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port(&server),
            "-n",
            "100000",
            "-t",
            "ping,set,get,incr,mset",
            "-P",
            "16",
            "-q",
        ],
        b"",
        BENCH_TIMEOUT,
    )
    .success();
    // -q prints one summary line per test; progress lines end in '\r'.
    let summaries: Vec<&str> = out
        .stdout
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| l.contains("requests per second") && !l.contains("rps="))
        .collect();
    let tests = ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET"];
    for t in tests {
        assert!(
            summaries
                .iter()
                .any(|l| l.starts_with(&format!("{t}:")) || l.starts_with(&format!("{t} "))),
            "no result for {t}:\n{}",
            out.stdout
        );
    }
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("Error") && !all.contains("ERR"), "{all}");
    let total = server.total();
    assert_eq!(total.codec_errors, 0);
    assert!(total.frames_in >= 600_000, "{total:?}");
    assert!(
        total.frames_out >= 8 * total.writes,
        "-P 16 should put many replies in each write: {} replies in {} writes",
        total.frames_out,
        total.writes
    );
    println!(
        "{cores} core(s), {sharding:?}: {} replies in {} writes, {} messages between cores; {}",
        total.frames_out,
        total.writes,
        total.mail_out,
        summaries.join("; ")
    );
    server.stop_cleanly();
}

fn redis_benchmark_pipelined_on_one_core(sharding: Sharding) {
    bench(1, sharding);
}

fn redis_benchmark_pipelined_on_two_cores(sharding: Sharding) {
    bench(2, sharding);
}

fn request(stream: &mut TcpStream, args: &[&[u8]]) {
    let mut wire = Vec::new();
    encode_command(args, &mut wire);
    stream.write_all(&wire).unwrap();
}

/// Reads one reply line (simple, error, integer) or a bulk string.
fn reply(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&line)),
            Ok(_) => line.push(byte[0]),
            // A read with a timeout is not restarted after an interruption (see util::read_n).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "read failed after {:?}: {e}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
    let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
    match text.strip_prefix('$').map(str::parse::<i64>) {
        Some(Ok(n)) if n >= 0 => {
            let body = util::read_n(stream, n as usize + 2);
            String::from_utf8_lossy(&body[..n as usize]).into_owned()
        }
        _ => text,
    }
}

/// A malformed or over-limit request gets a RESP error and closes that connection only.
fn protocol_errors_close_only_their_connection(sharding: Sharding) {
    let limits = Limits::default()
        .with_max_bulk(100)
        .with_max_args(4)
        .with_max_inline(64);
    let server = kv_server(1, limits, sharding);
    let mut bystander = util::connect(server.addr());
    request(&mut bystander, &[b"SET", b"k", b"v"]);
    assert_eq!(reply(&mut bystander), "+OK");
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n*1\r\n$4\r\nPING\r\n",
            "-ERR Protocol error: expected '$', got '*'",
        ),
        (b"*x\r\n", "-ERR Protocol error: invalid multibulk length"),
        (b"*5\r\n", "-ERR Protocol error: invalid multibulk length"),
        (
            b"*1\r\n$101\r\n",
            "-ERR Protocol error: bulk length 101 exceeds the limit of 100",
        ),
        (&[b'a'; 65], "-ERR Protocol error: too big inline request"),
    ];
    for (wire, expected) in cases {
        let mut victim = util::connect(server.addr());
        request(&mut victim, &[b"PING"]);
        assert_eq!(reply(&mut victim), "+PONG");
        victim.write_all(wire).unwrap();
        let rest = String::from_utf8_lossy(&util::expect_closed(&mut victim)).into_owned();
        assert!(
            rest.starts_with(expected),
            "{:?} got {rest:?}",
            wire.escape_ascii().to_string()
        );
        // The other connection is untouched.
        request(&mut bystander, &[b"GET", b"k"]);
        assert_eq!(reply(&mut bystander), "v");
    }
    // An unknown command is an error reply, not a protocol error: the connection stays.
    request(&mut bystander, &[b"FLY", b"away"]);
    assert!(reply(&mut bystander).starts_with("-ERR unknown command 'FLY'"));
    request(&mut bystander, &[b"PING"]);
    assert_eq!(reply(&mut bystander), "+PONG");
    assert_eq!(server.total().codec_errors, cases.len() as u64);
    // QUIT: +OK, then the server closes; nothing after it is answered.
    bystander.write_all(b"QUIT\r\nPING\r\n").unwrap();
    assert_eq!(util::expect_closed(&mut bystander), b"+OK\r\n");
    server.stop_cleanly();
}

/// Connections landing on each core of a 2-core server: a value set through one is seen by a
/// GET through the other as soon as the SET's reply has arrived.
fn writes_are_visible_across_cores(sharding: Sharding) {
    let server = kv_server(2, Limits::default(), sharding);
    let mut by_core: [Vec<TcpStream>; 2] = [Vec::new(), Vec::new()];
    let mut opened = 0;
    while by_core.iter().any(Vec::is_empty) {
        assert!(opened < 200, "the kernel put 200 connections on one core");
        let stream = util::connect(server.addr());
        opened += 1;
        let stats = server.wait_total("the connection to be accepted", |t| t.accepted == opened);
        let _ = stats;
        let cores = server.stats().cores;
        let core = (0..2)
            .find(|&c| cores[c].accepted as usize > by_core[c].len())
            .expect("a core accepted it");
        by_core[core].push(stream);
    }
    let [mut a, mut b] = by_core.map(|mut v| v.swap_remove(0));
    for i in 0..2000 {
        let value = format!("v{i}");
        let (writer, reader) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        request(writer, &[b"SET", b"shared", value.as_bytes()]);
        assert_eq!(reply(writer), "+OK");
        request(reader, &[b"GET", b"shared"]);
        assert_eq!(reply(reader), value, "round {i}");
        request(reader, &[b"INCR", b"n"]);
        assert_eq!(reply(reader), format!(":{}", i + 1));
    }
    server.stop_cleanly();
}

#[test]
fn expired_keys_are_gone_from_the_locked_store() {
    let store = Store::new(4);
    let expiring = kv::Expiry::After(30);
    assert!(store.set(
        b"t",
        kv::Value::from_bytes(b"1"),
        kv::Condition::Always,
        expiring
    ));
    assert!(store.set(
        b"u",
        kv::Value::from_bytes(b"x"),
        kv::Condition::Always,
        expiring
    ));
    assert!(store.exists(b"t"));
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(store.get(b"t"), None);
    assert_eq!(store.len(), 1, "t went when touched, u is still held");
    let swept: usize = (0..4).map(|_| store.sweep_next()).sum();
    assert_eq!(swept, 1);
    assert_eq!(store.len(), 0);
}

#[test]
fn expired_keys_are_gone_from_a_cores_own_keys() {
    let mut keys = Local::new(4);
    let expiring = kv::Expiry::After(30);
    for key in [&b"t"[..], b"u"] {
        assert!(keys.set(
            key,
            kv::Value::from_bytes(b"1"),
            kv::Condition::Always,
            expiring
        ));
    }
    assert!(keys.set(
        b"v",
        kv::Value::from_bytes(b"2"),
        kv::Condition::Always,
        kv::Expiry::Never
    ));
    assert!(keys.exists(b"t"));
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(keys.get(b"t"), None);
    assert_eq!(keys.count(), 2, "t went when touched, u is still held");
    let swept: usize = (0..4).map(|_| keys.sweep_next()).sum();
    assert_eq!(swept, 1);
    assert_eq!(keys.count(), 1);
    // One map alone: what the locked store's shards and a core's maps are made of.
    let mut one = Keys::default();
    let (set, _trash) = one.set(b"t", kv::Value::Int(1), kv::Condition::Always, expiring);
    assert!(set);
    assert_eq!(one.sweep(), Some(0), "not expired yet");
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(one.sweep(), Some(1));
    assert_eq!(one.sweep(), None, "no key has a deadline");
}

/// The fuzz targets over the committed corpus and seeded mutations (stable Rust: the
/// libFuzzer runs need nightly, see fuzz/run.sh).
#[test]
fn fuzz_resp_decode_corpus_and_mutations() {
    let n = fuzz_targets::replay(
        "resp_decode",
        fuzz_targets::resp_decode,
        20_000,
        0x5EED_0001,
    );
    println!("resp_decode: {n} inputs");
}

#[test]
fn fuzz_len32_decode_corpus_and_mutations() {
    let n = fuzz_targets::replay(
        "len32_decode",
        fuzz_targets::len32_decode,
        20_000,
        0x5EED_0002,
    );
    println!("len32_decode: {n} inputs");
}

/// Requests that would make the server do unbounded work or build an unbounded reply get a
/// bounded answer, and the connection keeps serving.
fn hostile_requests_get_bounded_answers(sharding: Sharding) {
    let server = kv_server(2, Limits::default(), sharding);
    let mut conn = util::connect(server.addr());
    // A pattern that makes a backtracking matcher run for hours (or overflow its stack).
    let mut pattern = vec![b'*'; 60_000];
    pattern.push(b'x');
    request(&mut conn, &[b"CONFIG", b"GET", &pattern]);
    assert_eq!(reply(&mut conn), "*0");
    // An MGET whose reply would be 70 MiB: refused, not built.
    let value = vec![b'v'; 60 << 10];
    request(&mut conn, &[b"SET", b"big", &value]);
    assert_eq!(reply(&mut conn), "+OK");
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(std::iter::repeat_n(&b"big"[..], 1200));
    request(&mut conn, &mget);
    assert_eq!(reply(&mut conn), "-ERR MGET reply would exceed 64 MiB");
    request(&mut conn, &[b"PING"]);
    assert_eq!(reply(&mut conn), "+PONG");
    server.stop_cleanly();
}
