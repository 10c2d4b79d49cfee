//! The http example against real HTTP clients: curl for status codes, keep-alive reuse,
//! HTTP/1.0, chunked and Content-Length bodies and every error path; wrk for a short load run;
//! raw sockets for pipelining, the cached Date and draining. The server is the example's own
//! service (`examples/http/service.rs`), started in-process.
//!
//! The clients must be installed (scripts/install-test-deps.sh); a missing one fails loudly.
//! Also here: the stable replay of the HTTP fuzz target over the committed corpus.

mod protocols;
mod util;

#[allow(dead_code)]
#[path = "../examples/http/service.rs"]
mod web;

#[path = "../fuzz/src/targets.rs"]
mod fuzz_targets;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use protocols::{run, Output};
use ringwire::codec::http::{self, Http, Limits};
use ringwire::Server;
use util::Running;
use web::Web;

const CURL_TIMEOUT: Duration = Duration::from_secs(30);

/// Bodies over this are refused with 413 by the test servers.
const MAX_BODY: u64 = 64 * 1024;

fn http_server(cores: usize) -> Running {
    let limits = Limits::default()
        .with_max_head(8 * 1024)
        .with_max_body(MAX_BODY);
    let server = Server::new(Http::with_limits(limits), Web::default)
        .bind(util::any_port())
        .cores(cores)
        .max_frame(limits.max_head)
        .on_core_tick(Duration::from_millis(500), |_| http::refresh_date());
    util::start(server)
}

fn url(server: &Running, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.addr().port())
}

/// curl with a time bound and no retries; `args` then `urls`.
fn curl(args: &[&str]) -> Output {
    let mut all = vec!["-sS", "--max-time", "20", "--noproxy", "*"];
    all.extend_from_slice(args);
    run("curl", &all, b"", CURL_TIMEOUT)
}

/// The status code curl saw, via `-w %{http_code}` (body discarded).
fn status(server: &Running, path: &str, args: &[&str]) -> String {
    let u = url(server, path);
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    all.push(&u);
    curl(&all).stdout
}

/// A file of `len` bytes to upload, removed on drop.
struct Upload(PathBuf);

impl Upload {
    fn new(name: &str, len: usize) -> Upload {
        let path =
            std::env::temp_dir().join(format!("ringwire-http-{}-{name}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&path, data).expect("write the upload file");
        Upload(path)
    }

    fn arg(&self) -> String {
        format!("@{}", self.0.display())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn curl_gets_statuses_and_bodies() {
    let server = http_server(1);
    let out = curl(&["-i", &url(&server, "/")]).success();
    assert!(
        out.stdout.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\r\nContent-Type: text/plain\r\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\r\nContent-Length: 13\r\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("\r\n\r\nHello, World!"),
        "{}",
        out.stdout
    );
    let head = curl(&["-I", &url(&server, "/")]).success();
    assert!(
        head.stdout.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        head.stdout
    );
    assert!(
        head.stdout.contains("Content-Length: 13"),
        "{}",
        head.stdout
    );
    assert!(
        head.stdout.ends_with("\r\n\r\n"),
        "HEAD has no body: {}",
        head.stdout
    );
    assert_eq!(status(&server, "/?q=1", &[]), "200");
    assert_eq!(status(&server, "/missing", &[]), "404");
    assert_eq!(status(&server, "/", &["-X", "DELETE"]), "405");
    let allow = curl(&["-i", "-X", "DELETE", &url(&server, "/")]).success();
    assert!(
        allow.stdout.contains("\r\nAllow: GET, HEAD, POST, PUT\r\n"),
        "{}",
        allow.stdout
    );
    assert_eq!(server.total().codec_errors, 0);
    server.stop_cleanly();
}

#[test]
fn curl_reuses_kept_alive_connections() {
    let server = http_server(1);
    let u = url(&server, "/");
    let out = curl(&["-v", &u, &u, &u]).success();
    assert_eq!(out.stdout, "Hello, World!".repeat(3));
    assert!(
        out.stderr.contains("Re-using existing connection"),
        "{}",
        out.stderr
    );
    let total = server.wait_total("3 responses", |t| t.frames_out == 3);
    assert_eq!(total.accepted, 1, "one connection for three requests");
    // Connection: close is honoured: one connection per request.
    let out = curl(&["-v", "-H", "Connection: close", &u, &u]).success();
    assert!(!out.stderr.contains("Re-using"), "{}", out.stderr);
    assert!(out.stderr.contains("< Connection: close"), "{}", out.stderr);
    let total = server.wait_total("5 responses", |t| t.frames_out == 5);
    assert_eq!(total.accepted, 3);
    // curl has exited: every connection is closed, two of them by the server.
    let total = server.wait_total("the connections to close", |t| t.closed == 3);
    assert_eq!(
        total.closed_for(ringwire::CloseReason::Local),
        2,
        "{total:?}"
    );
    server.stop_cleanly();
}

#[test]
fn curl_speaks_http_1_0() {
    let server = http_server(1);
    let u = url(&server, "/");
    // Without keep-alive, the server closes after the response.
    let out = curl(&["-0", "-v", &u, &u]).success();
    assert_eq!(out.stdout, "Hello, World!".repeat(2));
    assert!(out.stderr.contains("> GET / HTTP/1.0"), "{}", out.stderr);
    assert!(out.stderr.contains("< Connection: close"), "{}", out.stderr);
    assert_eq!(
        server
            .wait_total("2 responses", |t| t.frames_out == 2)
            .accepted,
        2
    );
    // With Connection: keep-alive, the server says so and keeps it.
    let out = curl(&["-0", "-v", "-H", "Connection: keep-alive", &u, &u]).success();
    assert!(
        out.stderr.contains("< Connection: keep-alive"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Re-using existing connection"),
        "{}",
        out.stderr
    );
    assert_eq!(
        server
            .wait_total("4 responses", |t| t.frames_out == 4)
            .accepted,
        3
    );
    server.stop_cleanly();
}

#[test]
fn curl_uploads_are_read_and_discarded() {
    let server = http_server(1);
    let u = url(&server, "/");
    let small = Upload::new("small", 1000);
    let large = Upload::new("large", 60_000);
    let out = curl(&["--data-binary", &small.arg(), &u]).success();
    assert_eq!(out.stdout, "discarded 1000 bytes\n");
    // A client that asks for 100 Continue before sending its body gets it.
    let out = curl(&[
        "-v",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &large.arg(),
        &u,
    ])
    .success();
    assert_eq!(out.stdout, "discarded 60000 bytes\n");
    assert!(
        out.stderr.contains("< HTTP/1.1 100 Continue"),
        "{}",
        out.stderr
    );
    for upload in [&small, &large] {
        let out = curl(&[
            "-v",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &upload.arg(),
            &u,
        ])
        .success();
        assert!(
            out.stderr.contains("> Transfer-Encoding: chunked"),
            "{}",
            out.stderr
        );
        let len = std::fs::metadata(&upload.0).unwrap().len();
        assert_eq!(out.stdout, format!("discarded {len} bytes\n"));
    }
    let out = curl(&["-X", "PUT", "--data-binary", "", &u]).success();
    assert_eq!(out.stdout, "discarded 0 bytes\n");
    server.stop_cleanly();
}

/// Each rejection: its status, `Connection: close`, and a closed connection; a kept-alive
/// bystander connection is not affected.
#[test]
fn curl_error_paths_close_only_their_connection() {
    let server = http_server(1);
    let u = url(&server, "/");
    let mut bystander = util::connect(server.addr());
    let check_bystander = |bystander: &mut TcpStream| {
        bystander
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let reply = read_response(bystander);
        assert!(
            reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("Hello, World!"),
            "{reply}"
        );
    };
    check_bystander(&mut bystander);
    let big = Upload::new("over", MAX_BODY as usize + 1);
    let huge = "h".repeat(9000);
    let huge_header = format!("X-Huge: {huge}");
    let big_arg = big.arg();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // A method with a space makes the request line malformed.
        ("400", vec!["-X", "GE T"]),
        (
            "400",
            vec![
                "-H",
                "Transfer-Encoding: chunked",
                "-H",
                "Content-Length: 5",
                "--data-binary",
                "hello",
            ],
        ),
        (
            "400",
            vec!["-H", "Content-Length: 1x", "--data-binary", "h"],
        ),
        ("431", vec!["-H", &huge_header]),
        ("413", vec!["--data-binary", &big_arg]),
        (
            "501",
            vec![
                "-H",
                "Transfer-Encoding: gzip",
                "-H",
                "Content-Length:",
                "--data-binary",
                "x",
            ],
        ),
    ];
    for (done, (want, args)) in (1..).zip(&cases) {
        let mut all = vec!["-v", "-i"];
        all.extend_from_slice(args);
        all.push(&u);
        let out = curl(&all);
        let first = out.stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("HTTP/1.1 {want} ")),
            "{args:?}: {out:#?}"
        );
        assert!(
            out.stdout.contains("\r\nConnection: close\r\n"),
            "{args:?}: {out:#?}"
        );
        server.wait_total("the rejected connection to close", |t| {
            t.codec_errors == done && t.closed == done
        });
        check_bystander(&mut bystander);
    }
    server.stop_cleanly();
}

/// A chunked body that passes the limit mid-stream: 413 when its chunk is announced.
#[test]
fn chunked_body_over_the_limit_is_refused() {
    let server = http_server(1);
    let mut s = util::connect(server.addr());
    let mut wire = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'z'; 40_000];
    for _ in 0..2 {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(&chunk);
        wire.extend_from_slice(b"\r\n");
    }
    s.write_all(&wire).unwrap();
    let reply = String::from_utf8_lossy(&util::expect_closed(&mut s)).into_owned();
    assert!(
        reply.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
        "{reply}"
    );
    server.stop_cleanly();
}

/// Reads one response with a Content-Length body.
fn read_response(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend_from_slice(&util::read_n(s, 1));
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let body = util::read_n(s, len);
    head + &String::from_utf8_lossy(&body)
}

/// Pipelined requests are answered in order, and the answers to one receive go out in one
/// write.
#[test]
fn pipelined_requests_are_answered_in_order_and_together() {
    let server = http_server(1);
    let mut s = util::connect(server.addr());
    let wire = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
                 POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
                 HEAD / HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
                 GET /never HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(wire).unwrap();
    let all = String::from_utf8(util::expect_closed(&mut s)).unwrap();
    let statuses: Vec<&str> = all.matches("HTTP/1.1 ").map(|_| "").collect();
    assert_eq!(statuses.len(), 5, "{all}");
    let order: Vec<usize> = [
        "200 OK",
        "404 Not Found",
        "discarded 3 bytes",
        "Content-Length: 13\r\n\r\nHTTP",
        "Connection: close",
    ]
    .iter()
    .map(|m| {
        all.find(m)
            .unwrap_or_else(|| panic!("{m:?} missing: {all}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order: {all}");
    assert!(
        !all.contains("never") && all.ends_with("Hello, World!"),
        "{all}"
    );
    let total = server.wait_total("the connection to close", |t| t.closed == 1);
    assert_eq!(total.frames_out, 5);
    assert_eq!(total.writes, 1, "five responses, one write: {total:?}");
    server.stop_cleanly();
}

#[test]
fn date_header_is_current() {
    let server = http_server(1);
    let mut s = util::connect(server.addr());
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let reply = read_response(&mut s);
        let date = reply
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .expect("a Date header");
        let now = SystemTime::now();
        let recent: Vec<String> = (0..3)
            .map(|back| {
                String::from_utf8(http::imf_fixdate(now - Duration::from_secs(back)).to_vec())
                    .unwrap()
            })
            .collect();
        assert!(
            recent.iter().any(|d| d == date),
            "Date {date:?} is not within 2 s of now {recent:?}"
        );
        std::thread::sleep(Duration::from_millis(700));
    }
    server.stop_cleanly();
}

/// On a drain, an idle kept-alive connection is closed at once (as Go's `Shutdown` and nginx
/// do), and a request whose body is still arriving is served to the end, its response saying
/// `Connection: close`; so the server stops long before the drain deadline.
#[test]
fn draining_closes_idle_connections_and_finishes_requests_in_progress() {
    let server = http_server(1);
    let mut idle = util::connect(server.addr());
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(!read_response(&mut idle).contains("Connection: close"));
    // A request whose head is in but whose body is not all there yet.
    let mut upload = util::connect(server.addr());
    upload
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        .unwrap();
    // Let the head and half the body reach the server (a later request on the same core).
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_response(&mut idle);
    std::thread::sleep(Duration::from_millis(50));

    server.stopper().shutdown(Duration::from_secs(30));
    let seen = util::expect_closed(&mut idle);
    assert!(
        seen.is_empty(),
        "the idle connection is closed without a word: {seen:?}"
    );
    std::thread::sleep(Duration::from_millis(50));
    upload.write_all(b"56789").unwrap();
    let reply = String::from_utf8(util::expect_closed(&mut upload)).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200 OK") && reply.contains("\r\nConnection: close\r\n"),
        "the request in progress is answered, then the connection closes: {reply}"
    );
    let took = server
        .join_within(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the drain did not end: {e}"));
    assert!(
        took < Duration::from_secs(15),
        "drain took {took:?}: it waited for the deadline"
    );
}

fn wrk(cores: usize) {
    let server = http_server(cores);
    let out = run(
        "wrk",
        &[
            "-t1",
            "-c16",
            "-d2s",
            "--timeout",
            "5s",
            "--latency",
            &url(&server, "/"),
        ],
        b"",
        Duration::from_secs(60),
    )
    .success();
    assert!(!out.stdout.contains("Socket errors"), "{}", out.stdout);
    assert!(!out.stdout.contains("Non-2xx"), "{}", out.stdout);
    let requests: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count: {}", out.stdout));
    assert!(requests > 1000, "{}", out.stdout);
    let total = server.total();
    assert_eq!(total.codec_errors, 0);
    assert!(total.frames_out >= requests, "{total:?}");
    println!(
        "wrk on {cores} core(s): {requests} requests\n{}",
        out.stdout
    );
    server.stop_cleanly();
}

#[test]
fn wrk_runs_clean_on_one_core() {
    wrk(1);
}

#[test]
fn wrk_runs_clean_on_two_cores() {
    wrk(2);
}

/// The fuzz target over the committed corpus and seeded mutations (stable Rust: the
/// libFuzzer runs need nightly, see fuzz/run.sh).
#[test]
fn fuzz_http_decode_corpus_and_mutations() {
    let n = fuzz_targets::replay(
        "http_decode",
        fuzz_targets::http_decode,
        20_000,
        0x5EED_0003,
    );
    println!("http_decode: {n} inputs");
}
