//! Fixed vectors for parse and emit, each rejection and its status, and split-anywhere
//! properties over pipelined requests with bodies.

use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::engine::{BufPool, FrameReader};

const MAX: usize = 1 << 20;

/// A request as the handler sees it once all its frames are in: the head's essentials, the
/// whole body, and whether the body's end was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    version: u8,
    keep_alive: bool,
    body: Vec<u8>,
    complete: bool,
}

fn on_part(seen: &mut Vec<Seen>, part: Part<'_>) {
    match part {
        Part::Head(req) => {
            assert!(
                seen.last().is_none_or(|s| s.complete),
                "head before the last body ended"
            );
            seen.push(Seen {
                method: req.method().into(),
                target: req.target().into(),
                version: req.version(),
                keep_alive: req.keep_alive(),
                body: Vec::new(),
                complete: !req.has_body(),
            });
        }
        Part::Body { data, last } => {
            let s = seen.last_mut().expect("body before any head");
            assert!(!s.complete, "body after the end");
            assert!(
                !data.is_empty() || last,
                "empty body frame that does not end the body"
            );
            s.body.extend_from_slice(data);
            s.complete = last;
        }
    }
}

fn feed(codec: &mut Http, chunks: &[&[u8]]) -> (Vec<Seen>, Option<RequestError>) {
    let mut reader = FrameReader::new();
    let mut pool = BufPool::default();
    let mut seen = Vec::new();
    for chunk in chunks {
        let fed = reader.feed(codec, chunk, MAX, &mut pool, |_, _, part: Part<'_>| {
            on_part(&mut seen, part);
            true
        });
        if let Err(e) = fed {
            let rejection = e.downcast_ref::<Rejection>();
            assert!(rejection.is_some(), "an error without a status: {e:?}");
            return (seen, rejection.map(|r| r.error));
        }
    }
    (seen, None)
}

fn whole(wire: &[u8]) -> (Vec<Seen>, Option<RequestError>) {
    feed(&mut Http::default(), &[wire])
}

fn status_of(wire: &[u8]) -> Option<u16> {
    whole(wire).1.map(RequestError::status)
}

#[test]
fn parses_a_head_and_its_fields() {
    let wire = b"GET /a?b=1 HTTP/1.1\r\nHost: example\r\nX-Long:  v  w \r\nAccept: */*\r\n\r\n";
    let Decoded::Frame(Part::Head(req), used) = Http::default().decode(wire, MAX).unwrap() else {
        panic!()
    };
    assert_eq!(used, wire.len());
    assert_eq!(
        (req.method(), req.target(), req.version()),
        ("GET", "/a?b=1", 1)
    );
    let fields: Vec<(&str, &[u8])> = req.headers().collect();
    assert_eq!(
        fields,
        [
            ("Host", &b"example"[..]),
            ("X-Long", b"v  w"),
            ("Accept", b"*/*")
        ]
    );
    assert_eq!(req.header("x-long"), Some(&b"v  w"[..]));
    assert_eq!(req.header("missing"), None);
    assert!(req.keep_alive() && !req.has_body() && !req.expects_continue());
    assert_eq!(
        req.reply_to(),
        ReplyTo {
            keep_alive: true,
            http10: false,
            head: false
        }
    );
}

#[test]
fn connection_semantics_follow_the_version() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, Close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (b"\r\nGET / HTTP/1.0\r\nHost: a\r\n\r\n", false),
    ];
    for (wire, keep_alive) in cases {
        let (seen, err) = whole(wire);
        assert_eq!(err, None, "{:?}", wire.escape_ascii());
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].keep_alive, *keep_alive, "{:?}", wire.escape_ascii());
    }
}

#[test]
fn streams_content_length_bodies() {
    let wire = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let (seen, err) = whole(wire);
    assert_eq!(err, None);
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].body.as_slice(), seen[0].complete),
        (&b"hello"[..], true)
    );
    assert_eq!(seen[1].method, "GET");
    // Split inside the body: two body frames, the second one last.
    let mut codec = Http::default();
    let mut frames = Vec::new();
    for piece in [&wire[..50], &wire[50..]] {
        let mut at = 0;
        while let Decoded::Frame(part, n) = codec.decode(&piece[at..], MAX).unwrap() {
            frames.push(format!("{part:?}"));
            at += n;
            if at == piece.len() {
                break;
            }
        }
    }
    assert_eq!(frames.len(), 4, "{frames:#?}");
    assert!(frames[1].contains("last: false") && frames[2].contains("last: true"));
}

#[test]
fn streams_chunked_bodies() {
    let wire = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n\
                 GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    let (seen, err) = whole(wire);
    assert_eq!(err, None);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, b"hello 0123456789");
    assert!(seen[0].complete);
    assert_eq!(seen[1].target, "/next");
}

#[test]
fn rejections_carry_their_status() {
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "v".repeat(9000)
    );
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X: v\r\n".repeat(MAX_HEADERS)
    );
    // 50 one-byte chunks, each with 200 bytes of extensions: 10 KB, over the 8 KiB limit.
    let extensions = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        format!("1;x={}\r\na\r\n", "e".repeat(196)).repeat(50)
    );
    let cases: Vec<(&[u8], u16)> = vec![
        (extensions.as_bytes(), 400),
        (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nX: a\nContent-Length: 3\r\n\r\nabc", 400),
        (b"GET  HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxyz", 400),
        (big_head.as_bytes(), 431),
        (many.as_bytes(), 431),
    ];
    for (wire, status) in cases {
        assert_eq!(
            status_of(wire),
            Some(status),
            "{:?}",
            wire.escape_ascii().to_string()
        );
    }
    // A body over the limit across chunks: 413 when the chunk passing it is announced.
    let mut codec = Http::with_limits(Limits {
        max_head: 1024,
        max_body: 8,
    });
    let wire =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n4\r\n";
    let (seen, err) = feed(&mut codec, &[wire]);
    assert_eq!(err, Some(RequestError::ContentTooLarge));
    assert_eq!(seen[0].body, b"hello");
    // An incomplete head within the limit just needs more.
    assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
}

#[test]
fn expect_continue_is_reported_for_bodies_only() {
    let wire = b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    let Decoded::Frame(Part::Head(req), _) = Http::default().decode(wire, MAX).unwrap() else {
        panic!()
    };
    assert!(req.expects_continue());
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
    let Decoded::Frame(Part::Head(req), _) = Http::default().decode(wire, MAX).unwrap() else {
        panic!()
    };
    assert!(!req.expects_continue());
}

fn text(r: &Response) -> String {
    let mut out = Vec::new();
    r.encode(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn emits_responses() {
    let date = String::from_utf8(date().to_vec()).unwrap();
    let r = Response::new(200, "Hello\n").content_type("text/plain");
    assert_eq!(
        text(&r),
        format!(
            "HTTP/1.1 200 OK\r\nServer: ringwire\r\nDate: {date}\r\nContent-Type: text/plain\r\n\
             Content-Length: 6\r\n\r\nHello\n"
        )
    );
    let to10 = ReplyTo {
        keep_alive: true,
        http10: true,
        head: false,
    };
    assert!(text(&r.clone().to(to10)).contains("\r\nConnection: keep-alive\r\n\r\nHello\n"));
    let head = ReplyTo {
        keep_alive: false,
        http10: false,
        head: true,
    };
    assert!(text(&r.clone().to(head)).ends_with("Content-Length: 6\r\nConnection: close\r\n\r\n"));
    let allow = Response::new(405, "").headers(&[("Allow", "GET, HEAD")]);
    assert!(text(&allow).starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
    assert!(text(&allow).ends_with("Content-Length: 0\r\nAllow: GET, HEAD\r\n\r\n"));
    assert!(!text(&Response::new(204, "x")).contains("Content-Length"));
    assert!(text(&Response::new(204, "x")).ends_with("\r\n\r\n"));
    let e = error_response(RequestError::HeaderFieldsTooLarge);
    assert!(text(&e).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    assert!(text(&e).contains("Connection: close"));
    assert!(Response::new(42, "").encode(&mut Vec::new()).is_err());
}

#[test]
fn formats_http_dates() {
    let at = |secs| {
        String::from_utf8(imf_fixdate(UNIX_EPOCH + Duration::from_secs(secs)).to_vec()).unwrap()
    };
    assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(at(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    refresh_date();
    assert!(date().ends_with(b" GMT"));
}

/// A stream of pipelined requests, with bodies of each kind.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<Seen>)> {
    let request = (
        0..3u8,
        prop::collection::vec(any::<u8>(), 0..50),
        prop::collection::vec(1..20usize, 1..5),
        any::<bool>(),
    );
    prop::collection::vec(request, 1..6).prop_map(|reqs| {
        let mut wire = Vec::new();
        let mut seen = Vec::new();
        for (i, (kind, body, chunk_sizes, close)) in reqs.into_iter().enumerate() {
            let target = format!("/r{i}");
            let conn = if close { "Connection: close\r\n" } else { "" };
            let (method, body) = match kind {
                0 => {
                    wire.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: h\r\n{conn}\r\n").as_bytes());
                    ("GET", Vec::new())
                }
                1 => {
                    wire.extend_from_slice(
                        format!("POST {target} HTTP/1.1\r\nHost: h\r\n{conn}Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    wire.extend_from_slice(&body);
                    ("POST", body)
                }
                _ => {
                    wire.extend_from_slice(
                        format!("PUT {target} HTTP/1.1\r\nHost: h\r\n{conn}Transfer-Encoding: chunked\r\n\r\n").as_bytes(),
                    );
                    let mut rest = &body[..];
                    for size in chunk_sizes.iter().cycle() {
                        if rest.is_empty() {
                            break;
                        }
                        let n = (*size).min(rest.len());
                        wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                        wire.extend_from_slice(&rest[..n]);
                        wire.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    wire.extend_from_slice(b"0\r\n\r\n");
                    ("PUT", body)
                }
            };
            seen.push(Seen {
                method: method.into(),
                target,
                version: 1,
                keep_alive: !close,
                body,
                complete: true,
            });
        }
        (wire, seen)
    })
}

proptest! {
    #[test]
    fn split_streams_decode_like_whole_ones((wire, expected) in stream(), cut in any::<prop::sample::Index>()) {
        let second = cut.index(wire.len() + 1);
        for a in 0..=wire.len() {
            let (lo, hi) = (a.min(second), a.max(second));
            let (seen, err) = feed(&mut Http::default(), &[&wire[..lo], &wire[lo..hi], &wire[hi..]]);
            prop_assert_eq!(err, None);
            prop_assert_eq!(&seen, &expected, "split at {} and {}", lo, hi);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(
        wire in prop::collection::vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
    ) {
        let at = cut.index(wire.len() + 1);
        let limits = Limits { max_head: 128, max_body: 64 };
        let whole = feed(&mut Http::with_limits(limits), &[&wire]);
        let split = feed(&mut Http::with_limits(limits), &[&wire[..at], &wire[at..]]);
        prop_assert_eq!(whole, split);
    }
}

#[test]
fn a_rejection_travels_inside_the_codec_error() {
    let wire = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    let err = Http::default().decode(wire, MAX).unwrap_err();
    let rejection = err
        .downcast_ref::<Rejection>()
        .expect("the codec's own error");
    assert_eq!(rejection.error, RequestError::BadRequest);
    assert_eq!(err.to_string(), "400 Bad Request: repeated Content-Length");
    let big = Http::with_limits(Limits::default().with_max_body(10))
        .decode(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
            MAX,
        )
        .unwrap_err();
    assert_eq!(
        big.to_string(),
        "413 Content Too Large: body of 11 bytes over the limit of 10"
    );
}
