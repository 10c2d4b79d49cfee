//! Fixed vectors for parse and emit, the limits, the cost of a line that trickles in, and
//! split-anywhere properties.

use proptest::prelude::*;

use super::*;
use crate::engine::BufPool;
use crate::engine::FrameReader;

const MAX: usize = 1 << 20;

/// Every frame of `chunks` fed in order through a `FrameReader`, as the engine does.
fn feed_all(codec: &mut Lines, chunks: &[&[u8]], max: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut reader = FrameReader::new();
    let mut pool = BufPool::default();
    let mut got = Vec::new();
    for chunk in chunks {
        reader.feed(codec, chunk, max, &mut pool, |_, _, line: &[u8]| {
            got.push(line.to_vec());
            true
        })?;
    }
    Ok(got)
}

/// The lines decoded before the stream ended or failed, and whether it failed.
fn verdict(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, bool) {
    let mut reader = FrameReader::new();
    let mut pool = BufPool::default();
    let mut codec = Lines::new();
    let mut got = Vec::new();
    for chunk in chunks {
        let fed = reader.feed(&mut codec, chunk, max, &mut pool, |_, _, line: &[u8]| {
            got.push(line.to_vec());
            true
        });
        if fed.is_err() {
            return (got, true);
        }
    }
    (got, false)
}

fn lines(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|l| l.as_bytes().to_vec()).collect()
}

#[test]
fn parses_fixed_vectors() {
    let cases: &[(&[u8], Decoded<&[u8]>)] = &[
        (b"", Decoded::NeedMore(None)),
        (b"abc", Decoded::NeedMore(None)),
        (b"\n", Decoded::Frame(b"", 1)),
        (b"\r\n", Decoded::Frame(b"", 2)),
        (b"abc\n", Decoded::Frame(b"abc", 4)),
        (b"abc\r\ndef\r\n", Decoded::Frame(b"abc", 5)),
        (b"a\rb\n", Decoded::Frame(b"a\rb", 4)),
        (b"a\r\r\n", Decoded::Frame(b"a\r", 4)),
    ];
    for (wire, expected) in cases {
        assert_eq!(
            &Lines::new().decode(wire, MAX).unwrap(),
            expected,
            "{wire:?}"
        );
    }
    let mut nul = Lines::with_delimiter(0);
    assert_eq!(
        nul.decode(b"a\r\0b", MAX).unwrap(),
        Decoded::Frame(&b"a\r"[..], 3)
    );
    assert_eq!(nul.decode(b"a\nb", MAX).unwrap(), Decoded::NeedMore(None));
}

#[test]
fn emits_fixed_vectors() {
    let mut wire = Vec::new();
    let mut codec = Lines::new();
    codec.encode(b"one", &mut wire).unwrap();
    codec.encode(b"", &mut wire).unwrap();
    Lines::with_delimiter(b';')
        .encode(b"two", &mut wire)
        .unwrap();
    assert_eq!(wire, b"one\n\ntwo;");
    assert!(matches!(
        codec.encode(b"two\nlines", &mut wire),
        Err(CodecError::Encode(_))
    ));
    assert_eq!(wire, b"one\n\ntwo;", "a rejected item writes nothing");
}

#[test]
fn a_line_at_the_limit_passes_and_one_past_it_fails_without_its_delimiter() {
    let max = 8;
    let at_limit = b"12345678\r\n";
    assert_eq!(
        Lines::new().decode(at_limit, max).unwrap(),
        Decoded::Frame(&b"12345678"[..], 10)
    );
    assert_eq!(
        Lines::with_delimiter(b'\n')
            .decode(b"12345678\n", max)
            .unwrap(),
        Decoded::Frame(&b"12345678"[..], 9)
    );
    // Past the limit, known before the delimiter arrives.
    assert!(matches!(
        Lines::new().decode(b"123456789x", max),
        Err(CodecError::FrameTooLarge { max: 8, .. })
    ));
    assert!(matches!(
        Lines::with_delimiter(b'\n').decode(b"123456789", max),
        Err(CodecError::FrameTooLarge { max: 8, .. })
    ));
    // With the delimiter in view but the line too long.
    assert!(matches!(
        Lines::new().decode(b"123456789\n", max),
        Err(CodecError::FrameTooLarge { len: 9, max: 8 })
    ));
    // The codec's own limit, when smaller than the server's.
    assert!(matches!(
        Lines::new().max_line(3).decode(b"abcd\n", max),
        Err(CodecError::FrameTooLarge { len: 4, max: 3 })
    ));
    // Through the reader, a long line fails as soon as it passes the limit.
    let long = [b'x'; 64];
    let chunks: Vec<&[u8]> = long.chunks(1).collect();
    assert!(matches!(
        feed_all(&mut Lines::new(), &chunks, 16),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

/// A line fed one byte at a time is scanned once: the codec resumes where it stopped instead
/// of scanning the whole line again on every receive.
#[test]
fn a_line_fed_byte_by_byte_is_scanned_once() {
    const N: usize = 20_000;
    let mut wire = vec![b'x'; N];
    wire.extend_from_slice(b"\r\nnext\n");
    let chunks: Vec<&[u8]> = wire.chunks(1).collect();
    let mut codec = Lines::new();
    let got = feed_all(&mut codec, &chunks, MAX).unwrap();
    assert_eq!(got, vec![vec![b'x'; N], b"next".to_vec()]);
    // Each byte is looked at once; a rescan from the start would cost about N²/2.
    assert!(
        codec.looked_at <= wire.len() + 16,
        "{} bytes scanned for a stream of {}",
        codec.looked_at,
        wire.len()
    );
}

#[test]
fn a_frame_resets_the_resumed_scan() {
    let mut codec = Lines::new();
    assert_eq!(codec.decode(b"ab", MAX).unwrap(), Decoded::NeedMore(None));
    assert_eq!(
        codec.decode(b"abc\nd", MAX).unwrap(),
        Decoded::Frame(&b"abc"[..], 4)
    );
    // The next line starts afresh.
    assert_eq!(
        codec.decode(b"\n", MAX).unwrap(),
        Decoded::Frame(&b""[..], 1)
    );
    // Input shorter than what was scanned (not the engine's way) is scanned again.
    assert_eq!(
        codec.decode(b"abcdef", MAX).unwrap(),
        Decoded::NeedMore(None)
    );
    assert_eq!(
        codec.decode(b"a\n", MAX).unwrap(),
        Decoded::Frame(&b"a"[..], 2)
    );
}

#[test]
fn whole_split_and_single_byte_feeds_agree() {
    let wire = b"one\r\ntwo\n\nthree\r\n";
    let expected = lines(&["one", "two", "", "three"]);
    for at in 0..=wire.len() {
        let got = feed_all(&mut Lines::new(), &[&wire[..at], &wire[at..]], MAX).unwrap();
        assert_eq!(got, expected, "split at {at}");
    }
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
        0..40,
    )
}

proptest! {
    #[test]
    fn split_streams_decode_like_whole_ones(
        list in prop::collection::vec(line(), 1..12),
        crlf in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        for l in &list {
            wire.extend_from_slice(l);
            wire.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        let whole = feed_all(&mut Lines::new(), &[&wire], MAX);
        let expected: Vec<Vec<u8>> = list
            .iter()
            .map(|l| match (crlf, l.as_slice()) {
                (false, [rest @ .., b'\r']) => rest.to_vec(),
                _ => l.clone(),
            })
            .collect();
        prop_assert_eq!(whole.as_ref(), Ok(&expected));
        for at in 0..=wire.len() {
            let got = feed_all(&mut Lines::new(), &[&wire[..at], &wire[at..]], MAX);
            prop_assert_eq!(got.as_ref(), Ok(&expected), "split at {}", at);
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(feed_all(&mut Lines::new(), &bytes, MAX), Ok(expected));
    }

    #[test]
    fn arbitrary_bytes_split_anywhere_give_the_same_lines_and_verdict(
        wire in prop::collection::vec(prop::sample::select(b"ab\r\n".to_vec()), 0..120),
        max in 0usize..12,
    ) {
        let whole = verdict(&[&wire], max);
        for at in 0..=wire.len() {
            prop_assert_eq!(&verdict(&[&wire[..at], &wire[at..]], max), &whole, "split at {}", at);
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(&verdict(&bytes, max), &whole);
    }
}

#[test]
fn a_clone_starts_its_scan_afresh() {
    let mut prototype = Lines::new();
    assert_eq!(
        prototype.decode(b"abcdefghi", 1024).unwrap(),
        Decoded::NeedMore(None)
    );
    // The engine clones the prototype into each new session.
    let mut session = prototype.clone();
    assert_eq!(
        session.decode(b"abcdefghi\nXYZ", 1024).unwrap(),
        Decoded::Frame(&b"abcdefghi"[..], 10)
    );
}
