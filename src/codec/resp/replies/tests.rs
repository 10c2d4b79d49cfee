//! Fixed vectors for each reply type, the limits, `parse_reply`, and split-anywhere properties.

use bytes::Bytes;
use proptest::prelude::*;

use super::super::Reply;
use super::*;
use crate::engine::{BufPool, FrameReader};
use ringwire_runtime::DEFAULT_OUTBOUND_MAX_FRAME;

const MAX: usize = 1 << 20;

fn decode(src: &[u8]) -> Result<Decoded<&[u8]>, CodecError> {
    RespReplies::default().decode(src, MAX)
}

/// Every reply of `chunks` fed in order through a `FrameReader`, as raw bytes.
fn feed_all(
    codec: &mut RespReplies,
    chunks: &[&[u8]],
    max: usize,
) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut reader = FrameReader::new();
    let mut pool = BufPool::default();
    let mut got = Vec::new();
    for chunk in chunks {
        reader.feed(codec, chunk, max, &mut pool, |_, _, reply: &[u8]| {
            got.push(reply.to_vec());
            true
        })?;
    }
    assert_eq!(reader.buffered(), 0, "bytes left over");
    Ok(got)
}

#[test]
fn decodes_each_reply_type_whole() {
    for wire in [
        &b"+OK\r\n"[..],
        b"+\r\n",
        b"-ERR unknown command 'FOO'\r\n",
        b":0\r\n",
        b":-42\r\n",
        b":9223372036854775807\r\n",
        b":-9223372036854775808\r\n",
        b"$0\r\n\r\n",
        b"$5\r\na\r\nb\0\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n",
        b"*2\r\n*2\r\n+a\r\n*0\r\n*-1\r\n",
    ] {
        assert_eq!(
            decode(wire).unwrap(),
            Decoded::Frame(wire, wire.len()),
            "{}",
            wire.escape_ascii()
        );
        let mut more = wire.to_vec();
        more.extend_from_slice(b":1\r\n");
        assert_eq!(decode(&more).unwrap(), Decoded::Frame(wire, wire.len()));
    }
}

#[test]
fn every_strict_prefix_needs_more_without_error() {
    let wire = b"*3\r\n$5\r\nhello\r\n*2\r\n:-7\r\n-ERR x\r\n+OK\r\n";
    for cut in 0..wire.len() {
        match decode(&wire[..cut]) {
            Ok(Decoded::NeedMore(_)) => {}
            other => panic!("prefix of {cut} bytes: {other:?}"),
        }
    }
}

#[test]
fn a_bulk_string_says_the_whole_size_once_its_header_is_read() {
    assert_eq!(decode(b"$5\r\nab").unwrap(), Decoded::NeedMore(Some(11)));
    // The last element of an array: the reply's size is known too.
    assert_eq!(
        decode(b"*2\r\n:1\r\n$3\r\na").unwrap(),
        Decoded::NeedMore(Some(17))
    );
    // Not the last: it is not.
    assert_eq!(decode(b"*2\r\n$3\r\na").unwrap(), Decoded::NeedMore(None));
}

#[test]
fn malformed_replies_are_errors() {
    for wire in [
        &b"%1\r\n"[..],
        b"_\r\n",
        b"$-2\r\n",
        b"*-2\r\n",
        b":12a\r\n",
        b":\r\n",
        b":9223372036854775808\r\n",
        b"$3\r\nabcd\r\n",
        b"+OK\rX",
        b"+OK\n",
        b"$1x\r\n",
        b"*1\r\n!\r\n",
    ] {
        assert!(
            matches!(decode(wire), Err(CodecError::Malformed(_))),
            "{}: {:?}",
            wire.escape_ascii(),
            decode(wire)
        );
    }
}

#[test]
fn limits_bind_before_anything_is_buffered() {
    let limits = ReplyLimits::default()
        .with_max_bulk(4)
        .with_max_elements(2)
        .with_max_depth(2);
    let mut codec = RespReplies::with_limits(limits);
    assert!(codec.decode(b"$5\r\n", MAX).is_err(), "bulk over max_bulk");
    assert!(
        codec.decode(b"*3\r\n", MAX).is_err(),
        "array over max_elements"
    );
    assert!(codec.decode(b"*1\r\n*1\r\n:1\r\n", MAX).is_ok());
    assert!(
        codec.decode(b"*1\r\n*1\r\n*1\r\n", MAX).is_err(),
        "nesting over max_depth"
    );
    // An empty or null array nests nothing.
    assert!(codec.decode(b"*1\r\n*1\r\n*0\r\n", MAX).is_ok());
    assert!(matches!(
        RespReplies::default().decode(b"$100\r\n", 64),
        Err(CodecError::FrameTooLarge { len: 108, max: 64 })
    ));
    assert!(matches!(
        RespReplies::default().decode(b"*30\r\n", 64),
        Err(CodecError::FrameTooLarge { .. })
    ));
    assert!(matches!(
        RespReplies::default().decode(&[b'+'; 100], 64),
        Err(CodecError::Malformed(_))
    ));
    assert_eq!(
        ReplyLimits::default().with_max_depth(1000).max_depth,
        MAX_DEPTH
    );
}

/// The largest lengths a reply can declare fail with a typed error naming them, on any target
/// (on a 32-bit one they do not even fit a `usize`).
#[test]
fn lengths_past_any_limit_fail_typed() {
    for (wire, want) in [
        (
            &b"$9223372036854775807\r\n"[..],
            "bulk length 9223372036854775807 exceeds the limit of 536870912",
        ),
        (
            b"*9223372036854775807\r\n",
            "array of 9223372036854775807 elements exceeds the limit of 16777216",
        ),
    ] {
        assert_eq!(
            RespReplies::default().decode(wire, usize::MAX),
            Err(CodecError::Malformed(want.into()))
        );
    }
    assert_eq!(ReplyLimits::default().max_bulk, DEFAULT_OUTBOUND_MAX_FRAME);
}

#[test]
fn a_deep_nesting_is_walked_without_recursion() {
    let mut wire = b"*1\r\n".repeat(MAX_DEPTH);
    wire.extend_from_slice(b":1\r\n");
    let limits = ReplyLimits::default().with_max_depth(MAX_DEPTH);
    let mut codec = RespReplies::with_limits(limits);
    assert_eq!(
        codec.decode(&wire, MAX).unwrap(),
        Decoded::Frame(&wire[..], wire.len())
    );
    let mut deeper = b"*1\r\n".to_vec();
    deeper.extend_from_slice(&wire);
    assert!(codec.decode(&deeper, MAX).is_err());
    assert!(parse_reply(&wire).is_ok());
    assert!(parse_reply(&deeper).is_err());
}

#[test]
fn an_array_trickled_in_resumes_where_it_stopped() {
    let mut wire = b"*1000\r\n".to_vec();
    for i in 0..1000 {
        wire.extend_from_slice(format!(":{i}\r\n").as_bytes());
    }
    let chunks: Vec<&[u8]> = wire.chunks(3).collect();
    let mut codec = RespReplies::default();
    assert_eq!(feed_all(&mut codec, &chunks, MAX).unwrap(), [wire.clone()]);
    // Another reply presented after an incomplete one is walked from its start.
    assert_eq!(
        codec.decode(b"*2\r\n:1", MAX).unwrap(),
        Decoded::NeedMore(None)
    );
    assert_eq!(
        codec.decode(b"+OK\r\n", MAX).unwrap(),
        Decoded::Frame(&b"+OK\r\n"[..], 5)
    );
}

#[test]
fn encode_sends_the_bytes_as_they_are() {
    let mut out = Vec::new();
    RespReplies::default()
        .encode(b"*1\r\n$4\r\nPING\r\n", &mut out)
        .unwrap();
    assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
}

#[test]
fn parse_reply_reads_each_kind() {
    assert_eq!(parse_reply(b"+OK\r\n").unwrap(), ReplyView::Simple(b"OK"));
    assert_eq!(
        parse_reply(b"-WRONGTYPE x\r\n").unwrap(),
        ReplyView::Error(b"WRONGTYPE x")
    );
    assert_eq!(
        parse_reply(b":-9223372036854775808\r\n").unwrap(),
        ReplyView::Integer(i64::MIN)
    );
    assert_eq!(
        parse_reply(b"$3\r\na\rb\r\n").unwrap(),
        ReplyView::Bulk(Some(b"a\rb"))
    );
    assert_eq!(
        parse_reply(b"$0\r\n\r\n").unwrap(),
        ReplyView::Bulk(Some(b""))
    );
    assert_eq!(parse_reply(b"$-1\r\n").unwrap(), ReplyView::Bulk(None));
    assert_eq!(parse_reply(b"*-1\r\n").unwrap(), ReplyView::Array(None));
    let Ok(ReplyView::Array(Some(empty))) = parse_reply(b"*0\r\n") else {
        panic!()
    };
    assert!(empty.is_empty());

    let wire = b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n:2\r\n$-1\r\n";
    let Ok(ReplyView::Array(Some(items))) = parse_reply(wire) else {
        panic!()
    };
    assert_eq!(items.len(), 3);
    assert_eq!(items.as_bytes(), &wire[4..]);
    let parts: Vec<&[u8]> = items.collect();
    assert_eq!(
        parts,
        [&b"$1\r\na\r\n"[..], b"*2\r\n:1\r\n:2\r\n", b"$-1\r\n"]
    );
    let Ok(ReplyView::Array(Some(inner))) = parse_reply(parts[1]) else {
        panic!()
    };
    let sum: i64 = inner
        .map(|n| match parse_reply(n) {
            Ok(ReplyView::Integer(n)) => n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(sum, 3);
}

#[test]
fn parse_reply_takes_exactly_one_whole_reply() {
    for wire in [
        &b""[..],
        b":1\r\n:2\r\n",
        b"$3\r\nab",
        b"*2\r\n:1\r\n",
        b"%0\r\n",
    ] {
        assert!(
            matches!(parse_reply(wire), Err(CodecError::Malformed(_))),
            "{}",
            wire.escape_ascii()
        );
    }
}

/// Any RESP2 reply, nested up to four levels.
fn reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Reply::Simple(s.into())),
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Reply::Error(s.into())),
        any::<i64>().prop_map(Reply::Integer),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Reply::Bulk(Bytes::from(b))),
        Just(Reply::Null),
        Just(Reply::NullArray),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        proptest::collection::vec(inner, 0..8).prop_map(Reply::Array)
    })
}

/// The encodings of `replies`, each on its own, and back to back.
fn wire_of(replies: &[Reply]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let each: Vec<Vec<u8>> = replies
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            r.encode(&mut out).unwrap();
            out
        })
        .collect();
    let whole = each.concat();
    (each, whole)
}

/// `parse_reply` read back into a `Reply`, through `ArrayView` for arrays.
fn read_back(bytes: &[u8]) -> Reply {
    match parse_reply(bytes).unwrap() {
        ReplyView::Simple(s) => Reply::Simple(String::from_utf8(s.to_vec()).unwrap().into()),
        ReplyView::Error(s) => Reply::Error(String::from_utf8(s.to_vec()).unwrap().into()),
        ReplyView::Integer(n) => Reply::Integer(n),
        ReplyView::Bulk(Some(b)) => Reply::Bulk(Bytes::copy_from_slice(b)),
        ReplyView::Bulk(None) => Reply::Null,
        ReplyView::Array(None) => Reply::NullArray,
        ReplyView::Array(Some(items)) => Reply::Array(items.map(read_back).collect()),
    }
}

proptest! {
    #[test]
    fn any_split_of_valid_replies_decodes_the_same(
        replies in proptest::collection::vec(reply(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let (each, whole) = wire_of(&replies);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(whole.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut chunks = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([whole.len()]) {
            chunks.push(&whole[from..cut]);
            from = cut;
        }
        let mut codec = RespReplies::default();
        prop_assert_eq!(&feed_all(&mut codec, &[&whole], MAX).unwrap(), &each);
        prop_assert_eq!(&feed_all(&mut codec, &chunks, MAX).unwrap(), &each);
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        prop_assert_eq!(&feed_all(&mut codec, &bytes, MAX).unwrap(), &each);
        for (reply, wire) in replies.iter().zip(&each) {
            prop_assert_eq!(&read_back(wire), reply);
        }
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(&bytes);
        let _ = parse_reply(&bytes);
        if let Ok(ReplyView::Array(Some(items))) = parse_reply(&bytes) {
            for item in items {
                prop_assert!(parse_reply(item).is_ok());
            }
        }
    }
}
