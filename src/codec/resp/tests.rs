//! Fixed vectors for parse and emit, the limits, and split-anywhere properties.

use proptest::prelude::*;

use super::*;
use crate::engine::{BufPool, FrameReader};

const MAX: usize = 1 << 20;

fn decode_one(src: &[u8]) -> Result<Decoded<Vec<Vec<u8>>>, CodecError> {
    Ok(match Resp::default().decode(src, MAX)? {
        Decoded::Frame(cmd, used) => Decoded::Frame(cmd.args().map(<[u8]>::to_vec).collect(), used),
        Decoded::NeedMore(n) => Decoded::NeedMore(n),
        _ => unreachable!("a codec returns a frame or asks for more"),
    })
}

fn args(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Every command of `chunks` fed in order through a `FrameReader`, as argument lists.
fn feed_all(
    codec: &mut Resp,
    chunks: &[&[u8]],
    max: usize,
) -> Result<Vec<Vec<Vec<u8>>>, CodecError> {
    let mut reader = FrameReader::new();
    let mut pool = BufPool::default();
    let mut got = Vec::new();
    for chunk in chunks {
        reader.feed(codec, chunk, max, &mut pool, |_, _, cmd: Command<'_>| {
            assert_eq!(cmd.args().count(), cmd.len());
            got.push(cmd.args().map(<[u8]>::to_vec).collect());
            true
        })?;
    }
    assert_eq!(reader.buffered(), 0, "bytes left over");
    Ok(got)
}

#[test]
fn parses_arrays_of_bulk_strings() {
    let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nb\0\r\n";
    assert_eq!(
        decode_one(wire).unwrap(),
        Decoded::Frame(
            vec![b"SET".to_vec(), b"k".to_vec(), b"a\r\nb\0".to_vec()],
            wire.len()
        )
    );
    assert_eq!(
        decode_one(b"*1\r\n$0\r\n\r\n").unwrap(),
        Decoded::Frame(vec![vec![]], 10)
    );
}

#[test]
fn parses_inline_commands() {
    assert_eq!(
        decode_one(b"PING\r\n").unwrap(),
        Decoded::Frame(args(&["PING"]), 6)
    );
    assert_eq!(
        decode_one(b"PING\n").unwrap(),
        Decoded::Frame(args(&["PING"]), 5)
    );
    assert_eq!(
        decode_one(b"  set \t k  v\r\nGET").unwrap(),
        Decoded::Frame(args(&["set", "k", "v"]), 14)
    );
    let mut codec = Resp::default();
    let Decoded::Frame(cmd, _) = codec.decode(b"ECHO hi\r\n", MAX).unwrap() else {
        panic!()
    };
    assert!(cmd.is_inline());
    assert_eq!(cmd.name(), Some(&b"ECHO"[..]));
    assert_eq!(format!("{cmd:?}"), r#"["ECHO", "hi"]"#);
}

#[test]
fn empty_requests_are_frames_without_arguments() {
    for wire in [&b"*0\r\n"[..], b"*-1\r\n", b"\r\n", b"   \n"] {
        match decode_one(wire).unwrap() {
            Decoded::Frame(a, used) => {
                assert!(a.is_empty(), "{wire:?}");
                assert_eq!(used, wire.len());
            }
            other => panic!("{wire:?}: {other:?}"),
        }
    }
}

#[test]
fn incomplete_input_needs_more() {
    let wire = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
    for end in 0..wire.len() {
        match decode_one(&wire[..end]).unwrap() {
            Decoded::NeedMore(Some(total)) => {
                assert_eq!(total, wire.len(), "hint at {end}");
                assert!(end >= 18, "hint given only past the last header ({end})");
            }
            Decoded::NeedMore(None) => assert!(end < 18, "{end}"),
            Decoded::Frame(..) => panic!("frame from {end} of {} bytes", wire.len()),
            _ => unreachable!(),
        }
    }
    assert_eq!(decode_one(b"PIN").unwrap(), Decoded::NeedMore(None));
}

#[test]
fn rejects_malformed_requests() {
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", "expected '$', got '*'"),
        (b"*1\r\n:1\r\n", "expected '$', got ':'"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*\r\n", "invalid multibulk length"),
        (b"*1\rx", "invalid multibulk length"),
        (b"*1234567890123456789\r\n", "invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$1x\r\n", "invalid bulk length"),
        (b"*1\r\n$1\r\nab\r\n", "bulk string not followed by CRLF"),
    ];
    for (wire, why) in cases {
        match decode_one(wire) {
            Err(CodecError::Malformed(m)) => assert_eq!(m, *why, "{:?}", wire.escape_ascii()),
            other => panic!("{:?}: {other:?}", wire.escape_ascii()),
        }
    }
}

#[test]
fn enforces_limits() {
    let limits = Limits {
        max_bulk: 8,
        max_args: 3,
        max_inline: 16,
    };
    // A fresh codec per request: one that said NeedMore expects the same request again.
    let codec = || Resp::with_limits(limits);
    let err = codec().decode(b"*1\r\n$9\r\n", MAX).unwrap_err();
    assert_eq!(
        err,
        CodecError::Malformed("bulk length 9 exceeds the limit of 8".into())
    );
    assert!(codec().decode(b"*1\r\n$8\r\n", MAX).is_ok());
    let err = codec().decode(b"*4\r\n", MAX).unwrap_err();
    assert_eq!(
        err,
        CodecError::Malformed("invalid multibulk length".into())
    );
    let err = codec().decode(&[b'x'; 17], MAX).unwrap_err();
    assert_eq!(err, CodecError::Malformed("too big inline request".into()));
    assert_eq!(
        codec().decode(&[b'x'; 16], MAX).unwrap(),
        Decoded::NeedMore(None)
    );
    // The frame size binds before anything is buffered: the header alone is enough.
    let codec = Resp::default;
    assert!(matches!(
        codec().decode(b"*1\r\n$100\r\n", 64),
        Err(CodecError::FrameTooLarge { len: 112, max: 64 })
    ));
    assert!(matches!(
        codec().decode(b"*100\r\n", 64),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn emits_replies() {
    let cases: Vec<(Reply, &[u8])> = vec![
        (Reply::OK, b"+OK\r\n"),
        (Reply::error("ERR syntax error"), b"-ERR syntax error\r\n"),
        (Reply::Integer(0), b":0\r\n"),
        (Reply::Integer(-42), b":-42\r\n"),
        (Reply::Integer(i64::MIN), b":-9223372036854775808\r\n"),
        (
            Reply::Bulk(Bytes::from_static(b"a\r\nb")),
            b"$4\r\na\r\nb\r\n",
        ),
        (Reply::Bulk(Bytes::new()), b"$0\r\n\r\n"),
        (Reply::BulkInteger(1234), b"$4\r\n1234\r\n"),
        (Reply::Null, b"$-1\r\n"),
        (Reply::NullArray, b"*-1\r\n"),
        (Reply::Array(vec![]), b"*0\r\n"),
        (
            Reply::Array(vec![
                Reply::Bulk("save".into()),
                Reply::Array(vec![Reply::Integer(1), Reply::Null]),
            ]),
            b"*2\r\n$4\r\nsave\r\n*2\r\n:1\r\n$-1\r\n",
        ),
    ];
    for (reply, wire) in cases {
        let mut out = b"x".to_vec();
        Resp::default().encode(&reply, &mut out).unwrap();
        assert_eq!(&out[1..], wire, "{reply:?}");
    }
    let mut out = Vec::new();
    assert!(Reply::Simple("a\r\nb".into()).encode(&mut out).is_err());
}

#[test]
fn protocol_errors_read_like_redis() {
    let reply = protocol_error(&CodecError::Malformed("invalid bulk length".into()));
    assert_eq!(
        reply,
        Reply::Error("ERR Protocol error: invalid bulk length".into())
    );
    let mut out = Vec::new();
    protocol_error(&CodecError::FrameTooLarge { len: 9, max: 8 })
        .encode(&mut out)
        .unwrap();
    assert!(
        out.starts_with(b"-ERR Protocol error: frame of 9 bytes"),
        "{out:?}"
    );
}

#[test]
fn encode_command_round_trips() {
    let cmd = args(&["MSET", "a", "", "b", "x y\r\n"]);
    let mut wire = Vec::new();
    encode_command(&cmd, &mut wire);
    assert_eq!(decode_one(&wire).unwrap(), Decoded::Frame(cmd, wire.len()));
}

/// A fixed stream of both forms, split at every pair of points.
#[test]
fn every_split_point_yields_the_same_commands() {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for cmd in [
        args(&["SET", "key:1", "hello"]),
        args(&["GET", "key:1"]),
        args(&["MSET", "a", "1", "b", ""]),
    ] {
        encode_command(&cmd, &mut wire);
        expected.push(cmd);
    }
    wire.extend_from_slice(b"PING\r\nECHO  x\n");
    expected.push(args(&["PING"]));
    expected.push(args(&["ECHO", "x"]));
    for a in 0..=wire.len() {
        for b in a..=wire.len() {
            let got = feed_all(
                &mut Resp::default(),
                &[&wire[..a], &wire[a..b], &wire[b..]],
                MAX,
            )
            .unwrap();
            assert_eq!(got, expected, "split at {a} and {b}");
        }
    }
}

fn command() -> impl Strategy<Value = (Vec<Vec<u8>>, bool)> {
    prop_oneof![
        // Array form: any bytes, empty arguments included.
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6)
            .prop_map(|a| (a, false)),
        // Inline form: words without spaces.
        prop::collection::vec("[a-zA-Z0-9:_]{1,12}", 1..5)
            .prop_map(|w| (w.into_iter().map(String::into_bytes).collect(), true)),
    ]
}

proptest! {
    #[test]
    fn split_streams_decode_like_whole_ones(
        cmds in prop::collection::vec(command(), 1..12),
        crlf in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = Vec::new();
        for (cmd, inline) in &cmds {
            if *inline {
                let words: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
                wire.extend_from_slice(&words.join(&b' '));
                wire.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            } else {
                encode_command(cmd, &mut wire);
            }
        }
        let expected: Vec<Vec<Vec<u8>>> = cmds.into_iter().map(|(c, _)| c).collect();
        let second = cut.index(wire.len() + 1);
        for a in 0..=wire.len() {
            let (lo, hi) = (a.min(second), a.max(second));
            let got = feed_all(&mut Resp::default(), &[&wire[..lo], &wire[lo..hi], &wire[hi..]], MAX);
            prop_assert_eq!(got.as_ref(), Ok(&expected), "split at {} and {}", lo, hi);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(
        wire in prop::collection::vec(any::<u8>(), 0..200),
        cut in any::<prop::sample::Index>(),
    ) {
        let whole = feed_all_lenient(&wire, &[]);
        let at = cut.index(wire.len() + 1);
        let split = feed_all_lenient(&wire[..at], &wire[at..]);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn replies_encode_as_resp(values in prop::collection::vec(any::<i64>(), 0..8), bulk in prop::collection::vec(any::<u8>(), 0..64)) {
        let reply = Reply::Array(values.iter().map(|&v| Reply::BulkInteger(v)).chain([Reply::Bulk(bulk.clone().into())]).collect());
        let mut out = Vec::new();
        reply.encode(&mut out).unwrap();
        // A reply of bulk strings is also a valid request array: decode it back.
        let Decoded::Frame(cmd, used) = Resp::default().decode(&out, MAX).unwrap() else {
            panic!("incomplete");
        };
        prop_assert_eq!(used, out.len());
        let mut expected: Vec<Vec<u8>> = values.iter().map(|v| v.to_string().into_bytes()).collect();
        expected.push(bulk);
        prop_assert_eq!(cmd.args().map(<[u8]>::to_vec).collect::<Vec<_>>(), expected);
    }
}

/// Feeds two pieces; the commands decoded, and whether it ended in an error. After an error
/// the reader is not fed again (the engine closes the session).
fn feed_all_lenient(a: &[u8], b: &[u8]) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut codec = Resp::with_limits(Limits {
        max_bulk: 64,
        max_args: 8,
        max_inline: 64,
    });
    let mut reader = FrameReader::new();
    let mut pool = BufPool::default();
    let mut got = Vec::new();
    for part in [a, b] {
        let fed = reader.feed(
            &mut codec,
            part,
            256,
            &mut pool,
            |_, _, cmd: Command<'_>| {
                got.push(cmd.args().map(<[u8]>::to_vec).collect());
                true
            },
        );
        if fed.is_err() {
            return (got, true);
        }
    }
    (got, false)
}

thread_local! {
    /// Array elements `decode_array` has checked on this thread.
    pub(super) static ELEMENTS_CHECKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A large array trickled in a few bytes at a time is checked element by element once, not
/// from its start on every receive: decoding resumes where the last attempt stopped.
#[test]
fn a_trickled_array_is_not_reparsed_on_every_receive() {
    const ARGS: usize = 20_000;
    let mut wire = format!("*{ARGS}\r\n").into_bytes();
    for i in 0..ARGS {
        let arg = format!("{i:08}");
        wire.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    let mut reader = FrameReader::new();
    let mut pool = BufPool::default();
    let mut codec = Resp::default();
    let mut frames = 0;
    ELEMENTS_CHECKED.with(|n| n.set(0));
    for piece in wire.chunks(3) {
        reader
            .feed(
                &mut codec,
                piece,
                MAX,
                &mut pool,
                |_, _, cmd: Command<'_>| {
                    assert_eq!(cmd.args().count(), ARGS);
                    assert!(cmd
                        .args()
                        .enumerate()
                        .all(|(i, a)| a == format!("{i:08}").as_bytes()));
                    frames += 1;
                    true
                },
            )
            .unwrap();
    }
    assert_eq!(frames, 1);
    let receives = wire.len().div_ceil(3);
    let checked = ELEMENTS_CHECKED.with(|n| n.get());
    println!("{checked} element checks for {ARGS} elements in {receives} receives");
    // Each receive re-checks at most the element it stopped in.
    assert!(checked <= ARGS + receives, "{checked} element checks");
}
