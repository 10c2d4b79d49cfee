//! The fuzz targets' bodies, shared by the libFuzzer binaries (`fuzz/fuzz_targets/`, run with
//! `cargo +nightly fuzz run NAME`) and by stable `cargo test` runs that replay the committed
//! corpus plus seeded mutations of it (`tests/resp.rs`, `tests/http.rs`, `tests/lines.rs`).
//!
//! Each target decodes its input three ways — whole, split at a point the input picks, and one
//! byte at a time — through `FrameReader`, as the engine does, and asserts that the three give
//! the same frames and the same verdict; along the way `FrameReader` and the codecs' own debug
//! assertions check that every frame consumes between 1 and all of the bytes at hand. The
//! RESP target also re-encodes every command and decodes it back.

// Each includer uses a different part of this file.
#![allow(dead_code)]

use std::fmt::Debug;
use std::path::Path;

use ringwire::codec::{http, resp, Codec};
use ringwire::engine::{BufPool, FrameReader};

/// Largest frame the targets allow: small, so that inputs reach the limits.
const MAX_FRAME: usize = 512;

/// Feeds `chunks` through a reader; frames as `describe` renders them, and whether it failed.
fn feed<C: Codec>(
    mut codec: C,
    chunks: &[&[u8]],
    describe: &mut dyn FnMut(&C, C::Frame<'_>) -> String,
) -> (Vec<String>, bool) {
    let mut reader = FrameReader::new();
    let mut pool = BufPool::default();
    let mut frames = Vec::new();
    for chunk in chunks {
        let fed = reader.feed(&mut codec, chunk, MAX_FRAME, &mut pool, |c, _, f| {
            frames.push(describe(c, f));
            true
        });
        if fed.is_err() {
            return (frames, true);
        }
    }
    (frames, false)
}

/// Decodes `data` whole, split, and byte by byte; asserts the three agree.
fn three_ways<C: Codec + Clone, T: Debug + PartialEq>(
    codec: C,
    data: &[u8],
    describe: &mut dyn FnMut(&C, C::Frame<'_>) -> String,
    normalize: fn(Vec<String>) -> T,
) -> Vec<String> {
    let (whole, whole_err) = feed(codec.clone(), &[data], describe);
    let at = match data {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])) % (data.len() + 1),
        _ => 0,
    };
    let (split, split_err) = feed(codec.clone(), &[&data[..at], &data[at..]], describe);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    let (single, single_err) = feed(codec, &bytes, describe);
    assert_eq!(whole_err, split_err, "verdict differs when split at {at}");
    assert_eq!(whole_err, single_err, "verdict differs fed byte by byte");
    let expected = normalize(whole.clone());
    assert_eq!(
        expected,
        normalize(split),
        "frames differ when split at {at}"
    );
    assert_eq!(
        expected,
        normalize(single),
        "frames differ fed byte by byte"
    );
    whole
}

/// The RESP request decoder.
pub fn resp_decode(data: &[u8]) {
    let limits = resp::Limits::default()
        .with_max_bulk(128)
        .with_max_args(16)
        .with_max_inline(128);
    let codec = resp::Resp::with_limits(limits);
    let mut commands: Vec<Vec<Vec<u8>>> = Vec::new();
    three_ways(
        codec,
        data,
        &mut |_, cmd: resp::Command<'_>| {
            let args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
            assert_eq!(args.len(), cmd.len(), "argument count");
            commands.push(args.clone());
            format!("{args:?}")
        },
        |v| v,
    );
    // Every command decoded re-encodes to the array form and decodes back the same.
    for args in commands {
        let mut wire = Vec::new();
        resp::encode_command(&args, &mut wire);
        let mut codec = resp::Resp::default();
        match codec.decode(&wire, usize::MAX) {
            Ok(ringwire::codec::Decoded::Frame(cmd, used)) => {
                assert_eq!(used, wire.len());
                let back: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
                assert_eq!(back, args);
            }
            other => panic!("re-encoded command does not decode: {other:?}"),
        }
    }
}

/// The HTTP/1.1 request decoder. Body frames are split differently by different feeds, so
/// what is compared is each request's head and whole body.
pub fn http_decode(data: &[u8]) {
    let limits = http::Limits::default()
        .with_max_head(256)
        .with_max_body(256);
    three_ways(
        http::Http::with_limits(limits),
        data,
        &mut |codec, part: http::Part<'_>| match part {
            http::Part::Head(req) => {
                let fields: Vec<_> = req.headers().collect();
                assert!(fields.len() <= http::MAX_HEADERS);
                format!(
                    "H {} {} {} {:?} {} {:?}",
                    req.method(),
                    req.target(),
                    req.version(),
                    req.body(),
                    req.keep_alive(),
                    fields
                )
            }
            http::Part::Body { data, last } => {
                assert!(
                    !data.is_empty() || last,
                    "empty body frame that is not the last"
                );
                assert_eq!(codec.in_body(), !last, "body state after a body frame");
                format!("B {} {}", data.escape_ascii(), last)
            }
        },
        |frames| {
            // Join consecutive body pieces.
            let mut out: Vec<String> = Vec::new();
            for f in frames {
                match (out.last_mut(), f.strip_prefix("B ")) {
                    (Some(prev), Some(body))
                        if prev.starts_with("B ") && prev.ends_with(" false") =>
                    {
                        prev.truncate(prev.len() - " false".len());
                        let (bytes, last) = body.rsplit_once(' ').unwrap_or((body, ""));
                        prev.push_str(bytes);
                        prev.push(' ');
                        prev.push_str(last);
                    }
                    _ => out.push(f),
                }
            }
            out
        },
    );
}

/// The `Len32` decoder.
pub fn len32_decode(data: &[u8]) {
    three_ways(
        ringwire::codec::Len32,
        data,
        &mut |_, frame: &[u8]| {
            assert!(frame.len() <= MAX_FRAME);
            format!("{}", frame.escape_ascii())
        },
        |v| v,
    );
}

/// The `Lines` decoder.
pub fn lines_decode(data: &[u8]) {
    three_ways(
        ringwire::codec::Lines::new(),
        data,
        &mut |_, line: &[u8]| {
            assert!(line.len() <= MAX_FRAME);
            assert!(!line.contains(&b'\n'));
            format!("{}", line.escape_ascii())
        },
        |v| v,
    );
}

/// SplitMix64, for the stable mutation runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the decoders, for mutations to insert.
const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"*",
    b"$",
    b"-1",
    b"0",
    b"999999999999999999999",
    b":",
    b" ",
    b"\r",
    b"chunked",
    b"Content-Length: ",
    b"Transfer-Encoding: ",
    b"0\r\n\r\n",
    b"HTTP/1.1",
    b";",
];

/// One mutation of `input`, libFuzzer-style: flip, insert, delete, duplicate or splice.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if at < out.len() => {
                let n = rng.below(out.len() - at + 1).min(8);
                out.drain(at..at + n);
            }
            3 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, token.iter().copied());
            }
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                out.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                let end = (at + rng.below(16)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
        }
    }
    out.truncate(4096);
    out
}

/// Runs `target` over every file of `fuzz/corpus/NAME` and `mutations` seeded mutations of
/// them; returns the number of inputs run. A corpus that is missing or empty fails: the
/// corpus is committed.
pub fn replay(name: &str, target: fn(&[u8]), mutations: usize, seed: u64) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("corpus entry").path()).expect("corpus file"))
        .collect();
    corpus.sort();
    assert!(!corpus.is_empty(), "corpus {} is empty", dir.display());
    for input in &corpus {
        target(input);
    }
    let mut rng = Rng(seed);
    for i in 0..mutations {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base, &corpus);
        let result = std::panic::catch_unwind(|| target(&input));
        if let Err(panic) = result {
            eprintln!(
                "{name}: mutation {i} (seed {seed}) fails; input: {:?}",
                input.escape_ascii().to_string()
            );
            std::panic::resume_unwind(panic);
        }
    }
    corpus.len() + mutations
}
