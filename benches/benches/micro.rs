//! Micro-benchmarks of the data path's small steps: codec decode and encode, the frame
//! reader over whole and split frames, provided-buffer recycling, user_data encoding and the
//! timer heap. Each reports a time per element (frame, buffer, entry).
//!
//! ```text
//! cargo bench -p ringwire-bench --bench micro            # all, about 2 s of measurement each
//! cargo bench -p ringwire-bench --bench micro -- codec   # only those whose name has "codec"
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringwire::codec::{Codec, Decoded, Len32, Raw};
use ringwire::engine::{BufPool, FrameReader};
use ringwire_runtime::bench_support::{user_data_round_trip, ProvidedBuffers, TimerHeap};

/// Frames in each codec benchmark's buffer.
const FRAMES: usize = 1024;
/// Payload bytes of each frame.
const PAYLOAD: usize = 64;
const MAX_FRAME: usize = 1 << 20;

/// `FRAMES` len32 frames of `PAYLOAD` bytes, back to back.
fn len32_stream() -> Vec<u8> {
    let payload: Vec<u8> = (0..PAYLOAD as u8).collect();
    let mut out = Vec::new();
    for _ in 0..FRAMES {
        Len32.encode(&payload, &mut out).unwrap();
    }
    out
}

/// Decodes every frame at the start of `buf`; returns the payload bytes seen.
fn decode_all<C>(codec: &mut C, mut buf: &[u8]) -> usize
where
    C: for<'a> Codec<Frame<'a> = &'a [u8]>,
{
    let mut bytes = 0;
    while let Ok(Decoded::Frame(frame, used)) = codec.decode(buf, MAX_FRAME) {
        bytes += black_box(frame).len();
        buf = &buf[used..];
    }
    bytes
}

fn codecs(c: &mut Criterion) {
    let stream = len32_stream();
    let payload = vec![7u8; PAYLOAD];
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(FRAMES as u64));

    group.bench_function("len32_decode_64B", |b| {
        b.iter(|| decode_all(&mut Len32, black_box(&stream)))
    });
    let mut out = Vec::with_capacity(stream.len());
    group.bench_function("len32_encode_64B", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..FRAMES {
                Len32.encode(black_box(&payload), &mut out).unwrap();
            }
            out.len()
        })
    });
    // Raw hands over whatever arrived: one frame per buffer. Cut a buffer of FRAMES x 64
    // bytes into 64-byte reads to time the per-frame cost.
    let raw = vec![1u8; FRAMES * PAYLOAD];
    group.bench_function("raw_decode_64B", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for chunk in black_box(&raw).chunks(PAYLOAD) {
                if let Ok(Decoded::Frame(f, _)) = Raw.decode(chunk, MAX_FRAME) {
                    bytes += black_box(f).len();
                }
            }
            bytes
        })
    });
    group.bench_function("raw_encode_64B", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..FRAMES {
                Raw.encode(black_box(&payload), &mut out).unwrap();
            }
            out.len()
        })
    });
    group.finish();
}

fn frame_reader(c: &mut Criterion) {
    let stream = len32_stream();
    let mut group = c.benchmark_group("frame_reader");
    group.throughput(Throughput::Elements(FRAMES as u64));
    let mut pool = BufPool::default();
    let mut reader = FrameReader::new();

    // The common case: a receive buffer holding many whole frames, decoded in place.
    group.bench_function("feed_whole_len32_64B", |b| {
        b.iter(|| {
            let fed = reader
                .feed(
                    &mut Len32,
                    black_box(&stream),
                    MAX_FRAME,
                    &mut pool,
                    |_, _, f| {
                        black_box(f);
                        true
                    },
                )
                .unwrap();
            assert_eq!(fed.frames, FRAMES);
        })
    });
    // The same stream arriving in 100-byte reads: most frames straddle two reads, so the
    // reader copies their start into its tail buffer and completes them from the next read.
    group.bench_function("feed_split_100B_len32_64B", |b| {
        b.iter(|| {
            let mut frames = 0;
            for piece in black_box(&stream).chunks(100) {
                let fed = reader
                    .feed(&mut Len32, piece, MAX_FRAME, &mut pool, |_, _, f| {
                        black_box(f);
                        true
                    })
                    .unwrap();
                frames += fed.frames;
            }
            assert_eq!(frames, FRAMES);
        })
    });
    group.finish();
}

fn user_data(c: &mut Criterion) {
    let mut group = c.benchmark_group("user_data");
    group.throughput(Throughput::Elements(1024));
    group.bench_function("round_trip", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for slot in 0..1024u32 {
                let (ok, s, g) = user_data_round_trip(black_box(slot), black_box(slot ^ 0x5a5a));
                acc = acc.wrapping_add(s ^ g ^ ok as u32);
            }
            acc
        })
    });
    group.finish();
}

fn timer(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer");
    group.throughput(Throughput::Elements(1024));
    let mut heap = TimerHeap::default();
    // Deadlines in a scrambled order, as sessions' timeouts land.
    let deadlines: Vec<u64> = (0..1024u64).map(|i| (i * 7919) % 1024).collect();
    group.bench_function("schedule_then_pop_due_1024", |b| {
        b.iter(|| {
            for (slot, &at) in deadlines.iter().enumerate() {
                heap.schedule(at, slot as u32);
            }
            let mut popped = 0;
            while heap.pop_due(black_box(2048)).is_some() {
                popped += 1;
            }
            assert_eq!(popped, 1024);
        })
    });
    group.finish();
}

fn provided_buffers(c: &mut Criterion) {
    let mut bufs = match ProvidedBuffers::new(1024, 4096) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "\n*** provided_buffers benchmark SKIPPED: io_uring buffer ring unavailable: {e} ***\n"
            );
            return;
        }
    };
    let mut group = c.benchmark_group("provided_buffers");
    group.throughput(Throughput::Elements(1024));
    group.bench_function("recycle_1024", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for _ in 0..1024 {
                acc ^= bufs.recycle(black_box(64));
            }
            acc
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = micro;
    config = config();
    targets = codecs, frame_reader, user_data, timer, provided_buffers
}
criterion_main!(micro);
