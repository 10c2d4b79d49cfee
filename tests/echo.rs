//! Echo under fragmentation: every byte a client sends comes back, in order, once, whatever
//! the sizes of the client's writes and of the server's receive buffers.
//!
//! The clients write random chunks (1 byte to 64 KiB) while reading concurrently, so frames
//! reach the server split anywhere, `Len32` headers included. The tiny-buffer runs force every
//! frame through the incomplete-tail path and the buffer ring through ENOBUFS and re-arms; the
//! overflowing run makes the kernel end multishot receives for lack of completion queue room.

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::Instant;

use ringwire::codec::{Codec, Len32, Raw};
use ringwire::handlers::Echo;
use ringwire::{CloseReason, Handler};
use util::{Rng, Running};

/// Concurrent connections per run.
const CONNS: usize = 32;

/// Receive buffers small enough that almost every frame arrives in pieces.
const TINY_COUNT: u32 = 64;
const TINY_SIZE: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Raw,
    Len32,
}

/// What one run sends.
struct Plan {
    framing: Framing,
    /// Approximate bytes each connection sends.
    bytes_per_conn: usize,
    /// Largest `Len32` payload.
    max_payload: usize,
}

/// One connection's byte stream and the number of frames in it (for `Len32`).
struct Stream {
    bytes: Vec<u8>,
    frames: u64,
}

fn make_stream(plan: &Plan, rng: &mut Rng) -> Stream {
    match plan.framing {
        Framing::Raw => Stream {
            bytes: rng.bytes(plan.bytes_per_conn),
            frames: 0,
        },
        Framing::Len32 => {
            let mut bytes = Vec::with_capacity(plan.bytes_per_conn + plan.max_payload + 4);
            let mut frames = 0;
            while bytes.len() < plan.bytes_per_conn {
                // Mostly small frames (many headers per buffer, some split), some empty, some
                // spanning several receive buffers.
                let len = match rng.range(0, 19) {
                    0 => 0,
                    1..=9 => rng.range(1, 16),
                    10..=16 => rng.range(17, 2048),
                    17 | 18 => rng.range(2049, 8192),
                    _ => rng.range(8193, plan.max_payload),
                };
                bytes.extend_from_slice(&(len as u32).to_be_bytes());
                let start = bytes.len();
                bytes.resize(start + len, 0);
                rng.fill(&mut bytes[start..]);
                frames += 1;
            }
            Stream { bytes, frames }
        }
    }
}

/// Sizes of the client's writes: a third tiny (splitting headers), a third small, a third up
/// to 64 KiB.
fn chunk_size(rng: &mut Rng) -> usize {
    match rng.range(0, 2) {
        0 => rng.range(1, 8),
        1 => rng.range(1, 1024),
        _ => rng.range(1, 64 * 1024),
    }
}

/// Writes `data` in random chunks from one thread while another reads and checks every byte;
/// then half-closes and expects EOF right after the last echoed byte.
fn run_client(addr: SocketAddr, conn: usize, data: &[u8], mut rng: Rng) {
    let mut reader = util::connect(addr);
    let mut writer = reader.try_clone().expect("clone client socket");
    thread::scope(|s| {
        s.spawn(move || {
            let mut off = 0;
            while off < data.len() {
                let n = chunk_size(&mut rng).min(data.len() - off);
                writer
                    .write_all(&data[off..off + n])
                    .unwrap_or_else(|e| panic!("conn {conn}: write at {off}: {e}"));
                off += n;
            }
            util::shutdown_write(&writer);
        });
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < data.len() {
            let n = match reader.read(&mut buf) {
                Ok(0) => panic!("conn {conn}: EOF after {got} of {} bytes", data.len()),
                Ok(n) => n,
                Err(e) => panic!("conn {conn}: read after {got} of {} bytes: {e}", data.len()),
            };
            assert!(
                got + n <= data.len(),
                "conn {conn}: {} bytes echoed, only {} sent",
                got + n,
                data.len()
            );
            if let Some(i) = util::first_difference(&buf[..n], &data[got..got + n]) {
                panic!(
                    "conn {conn}: echoed byte {} is {:#04x}, sent {:#04x}",
                    got + i,
                    buf[i],
                    data[got + i]
                );
            }
            got += n;
        }
        util::expect_eof(&mut reader);
    });
}

/// Runs every connection of a plan at once against `server`; returns (bytes, frames) sent.
fn run_clients(server: &Running, plan: &Plan, seed: u64) -> (u64, u64) {
    let mut rng = Rng::new(seed);
    let streams: Vec<Stream> = (0..CONNS).map(|_| make_stream(plan, &mut rng)).collect();
    let addr = server.addr();
    thread::scope(|s| {
        for (conn, stream) in streams.iter().enumerate() {
            let client_rng = Rng::new(seed ^ (conn as u64 + 1).wrapping_mul(0x9E37_79B9));
            s.spawn(move || run_client(addr, conn, &stream.bytes, client_rng));
        }
    });
    let bytes = streams.iter().map(|s| s.bytes.len() as u64).sum();
    let frames = streams.iter().map(|s| s.frames).sum();
    (bytes, frames)
}

/// The server's resources in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// The defaults: 1024 buffers of 8 KiB.
    Default,
    /// 64 buffers of 16 bytes: nearly every frame is split, and receives run out of buffers.
    Tiny,
    /// Tiny buffers and a ring of 4 submission and 8 completion entries: the completion queue
    /// overflows, the kernel stops multishot receives, and the engine must re-arm them.
    TinyOverflowing,
}

fn fragmented_echo<C>(codec: C, plan: Plan, setup: Setup)
where
    C: Codec + Clone + Send,
    Echo: Handler<C>,
{
    let seed = util::base_seed() ^ ((plan.framing as u64) << 8) ^ setup as u64;
    let mut builder = util::echo(codec);
    if setup != Setup::Default {
        builder = builder.buffers(TINY_COUNT, TINY_SIZE);
    }
    if setup == Setup::TinyOverflowing {
        builder = builder.ring_entries(4).cq_entries(8);
    }
    let server = util::start(builder);
    let started = Instant::now();
    let (bytes, frames) = run_clients(&server, &plan, seed);
    let s = server.wait_total("every session to close", |s| s.closed == CONNS as u64);
    println!(
        "{:?} {setup:?}: {CONNS} conns, {bytes} bytes, {frames} frames in {:?}; recvs {} \
         tail_copies {} tail_bytes {} enobufs {} recv_rearms {} cq_overflows {} writes {}",
        plan.framing,
        started.elapsed(),
        s.recvs,
        s.tail_copies,
        s.tail_bytes,
        s.enobufs,
        s.recv_rearms,
        s.cq_overflows,
        s.writes,
    );

    assert_eq!(s.accepted, CONNS as u64, "{s:#?}");
    assert_eq!(
        s.closed_for(CloseReason::PeerClosed),
        CONNS as u64,
        "every session ends by the client's half-close: {s:#?}"
    );
    assert_eq!(s.bytes_in, bytes, "bytes received by the server: {s:#?}");
    assert_eq!(s.bytes_out, bytes, "bytes written by the server: {s:#?}");
    assert_eq!((s.codec_errors, s.panics), (0, 0), "{s:#?}");
    assert_eq!(s.frames_out, s.frames_in, "echo sends one frame per frame");
    match plan.framing {
        Framing::Raw => {
            assert_eq!(s.tail_copies, 0, "Raw never holds an incomplete frame");
            assert_eq!(s.frames_in, s.recvs, "Raw: one frame per receive");
        }
        Framing::Len32 => {
            assert_eq!(s.frames_in, frames, "Len32 frames decoded");
            // io_uring's tiny provided buffers split frames whatever the timing; epoll reads
            // 64 KiB at a time, so a connection's 32 KiB may arrive whole before it is read.
            if server.is_uring() {
                assert!(s.tail_copies > 0, "the incomplete-tail path never ran");
            }
            assert!(
                s.tail_bytes <= bytes,
                "more bytes copied to tails than received"
            );
        }
    }
    if setup != Setup::Default && !server.is_uring() {
        eprintln!(
            "{setup:?}: buffer ring and completion queue checks skipped on {}",
            server.driver()
        );
        server.stop_cleanly();
        return;
    }
    if setup != Setup::Default {
        assert!(
            s.recvs >= bytes.div_ceil(TINY_SIZE as u64),
            "{} receives cannot carry {bytes} bytes in {TINY_SIZE}-byte buffers",
            s.recvs
        );
    }
    match setup {
        Setup::Default => {}
        // 32 busy connections share 64 buffers: receives run dry and must be re-armed.
        Setup::Tiny => assert!(s.enobufs > 0, "the buffer ring never ran dry: {s:#?}"),
        Setup::TinyOverflowing => {
            assert!(
                s.cq_overflows > 0,
                "the completion queue never overflowed: {s:#?}"
            )
        }
    }
    if setup != Setup::Default {
        assert!(s.recv_rearms > 0, "no receive was ever re-armed: {s:#?}");
    }
    server.stop_cleanly();
}

#[test]
fn raw_fragmented_echo_default_buffers() {
    let plan = Plan {
        framing: Framing::Raw,
        bytes_per_conn: 512 * 1024,
        max_payload: 0,
    };
    fragmented_echo(Raw, plan, Setup::Default);
}

#[test]
fn raw_fragmented_echo_tiny_buffers() {
    let plan = Plan {
        framing: Framing::Raw,
        bytes_per_conn: 64 * 1024,
        max_payload: 0,
    };
    fragmented_echo(Raw, plan, Setup::Tiny);
}

#[test]
fn len32_fragmented_echo_default_buffers() {
    let plan = Plan {
        framing: Framing::Len32,
        bytes_per_conn: 512 * 1024,
        max_payload: 96 * 1024,
    };
    fragmented_echo(Len32, plan, Setup::Default);
}

#[test]
fn len32_fragmented_echo_tiny_buffers() {
    let plan = Plan {
        framing: Framing::Len32,
        bytes_per_conn: 96 * 1024,
        max_payload: 24 * 1024,
    };
    fragmented_echo(Len32, plan, Setup::Tiny);
}

#[test]
fn len32_fragmented_echo_overflowing_completion_queue() {
    let plan = Plan {
        framing: Framing::Len32,
        bytes_per_conn: 32 * 1024,
        max_payload: 16 * 1024,
    };
    fragmented_echo(Len32, plan, Setup::TinyOverflowing);
}

/// The client sends 1 MiB and half-closes; the server echoes all of it, then closes.
#[test]
fn half_close_echoes_everything_then_eof() {
    const SIZE: usize = 1 << 20;
    let server = util::start(util::echo(Raw));
    let data = Rng::new(util::base_seed()).bytes(SIZE);
    let mut reader = util::connect(server.addr());
    let mut writer = reader.try_clone().unwrap();
    thread::scope(|s| {
        let data = &data;
        s.spawn(move || {
            writer.write_all(data).expect("write 1 MiB");
            util::shutdown_write(&writer);
        });
        let back = util::read_n(&mut reader, SIZE);
        if let Some(i) = util::first_difference(&back, data) {
            panic!("echoed byte {i} differs");
        }
        util::expect_eof(&mut reader);
    });
    let s = server.wait_total("the session to close", |s| s.closed == 1);
    assert_eq!(s.closed_for(CloseReason::PeerClosed), 1, "{s:#?}");
    assert_eq!((s.bytes_in, s.bytes_out), (SIZE as u64, SIZE as u64));
    server.stop_cleanly();
}
