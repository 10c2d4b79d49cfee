//! Shared code of ringwire's benchmark binaries: the echo servers' command line (the same as
//! `examples/echo.rs`), the per-core SO_REUSEPORT listeners, the pinned worker threads, and the
//! `len32` frame checks the baselines use.
//!
//! Invariant: every baseline serves exactly what ringwire's echo example serves, on the same
//! command line, so that a benchmark compares engines and nothing else.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;

use clap::{Parser, ValueEnum};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog of every baseline listener (ringwire's default).
pub const BACKLOG: i32 = 1024;

/// Size of the read buffer each tokio and tokio-uring connection reuses.
pub const READ_BUF: usize = 64 * 1024;

/// What the echo servers echo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Framing {
    /// Every byte, in order, as it arrives.
    Raw,
    /// Whole frames of a 4-byte big-endian length and then the payload, prefix included.
    Len32,
}

/// The echo servers' command line; the same flags and defaults as `examples/echo.rs`.
#[derive(Parser, Debug, Clone)]
#[command(version)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,
    /// Number of cores (workers pinned to CPUs 0..N).
    #[arg(long, default_value_t = 1, conflicts_with = "cpus")]
    pub cores: usize,
    /// Explicit CPU list, e.g. 0,2,4.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Framing: raw bytes, or 4-byte big-endian length prefixed frames.
    #[arg(long, value_enum, default_value = "raw")]
    pub framing: Framing,
    /// Largest frame accepted, in bytes; a larger one closes its connection.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_frame: usize,
    /// Submission queue entries per core (io_uring servers).
    #[arg(long, default_value_t = 1024)]
    pub ring_entries: u32,
    /// Provided receive buffers per core (a power of two; the floor only).
    #[arg(long, default_value_t = 1024)]
    pub buffers: u32,
    /// Size of each provided receive buffer, in bytes (the floor only).
    #[arg(long, default_value_t = 8192)]
    pub buf_size: u32,
}

impl EchoArgs {
    /// The CPUs to run one worker on each, in order.
    pub fn cpu_list(&self) -> Vec<usize> {
        match &self.cpus {
            Some(cpus) => cpus.clone(),
            None => (0..self.cores).collect(),
        }
    }
}

/// A listening socket on `addr` with SO_REUSEADDR, SO_REUSEPORT and TCP_NODELAY (which Linux
/// copies to every accepted socket). It is blocking, as io_uring wants; a tokio caller sets it
/// non-blocking.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// `count` listeners on `addr`; with port 0 the first picks the port and the others follow.
/// Returns them with the address they serve.
pub fn reuseport_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    let first = reuseport_listener(addr, backlog)?;
    let local = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(reuseport_listener(local, backlog)?);
    }
    Ok((listeners, local))
}

/// A worker's report that it is set up and serving.
pub struct Ready(mpsc::Sender<io::Result<()>>);

impl Ready {
    /// Tells the main thread this worker serves.
    pub fn ready(&self) {
        let _ = self.0.send(Ok(()));
    }
}

/// Runs an echo server: binds one listener per CPU, starts a worker thread per CPU pinned to it
/// (`worker` gets the listener, the arguments and a [`Ready`] to call once set up), prints
/// `listening on ADDR` when every worker serves, and exits 0 on SIGINT or SIGTERM. Exits 1 if
/// a worker fails.
pub fn run<W>(name: &'static str, worker: W) -> !
where
    W: Fn(TcpListener, &EchoArgs, Ready) -> io::Result<()> + Send + Sync + Clone + 'static,
{
    let args = EchoArgs::parse();
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("{name}: {what}: {e}");
        std::process::exit(1)
    };
    let cpus = args.cpu_list();
    if cpus.is_empty() {
        fail("arguments", &"at least one core is needed");
    }
    let mut signals = Signals::new([SIGINT, SIGTERM]).unwrap_or_else(|e| fail("signals", &e));
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            std::process::exit(0);
        }
    });
    let (listeners, local) = reuseport_listeners(args.addr, cpus.len(), BACKLOG)
        .unwrap_or_else(|e| fail(&format!("bind {}", args.addr), &e));
    let (tx, rx) = mpsc::channel();
    for (&cpu, listener) in cpus.iter().zip(listeners) {
        let (tx, args, worker) = (tx.clone(), args.clone(), worker.clone());
        std::thread::Builder::new()
            .name(format!("{name}-{cpu}"))
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    eprintln!("{name}: cannot pin a worker to CPU {cpu}; it runs unpinned");
                }
                let result = worker(listener, &args, Ready(tx.clone()));
                let _ = tx.send(result.and(Err(io::Error::other("worker stopped"))));
            })
            .unwrap_or_else(|e| fail("spawn", &e));
    }
    drop(tx);
    for _ in &cpus {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fail("worker setup", &e),
            Err(_) => fail("worker setup", &"a worker exited"),
        }
    }
    println!("listening on {local}");
    let _ = io::stdout().flush();
    match rx.recv() {
        Ok(Err(e)) => fail("worker", &e),
        _ => fail("worker", &"stopped"),
    }
}

/// A `len32` header declared a frame over the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The declared payload length.
    pub len: usize,
}

/// Where the whole `len32` frames at the start of a buffer end, and how long the buffer must
/// be (counted from that end) for the next frame to be whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Len32Scan {
    /// Bytes of whole frames at the start of the buffer.
    pub whole: usize,
    /// Size of the next frame, prefix included (4 while its prefix is incomplete).
    pub next: usize,
}

/// Finds the whole frames at the start of `buf`, checking every complete header against
/// `max_frame` (a payload length; the prefix does not count).
pub fn len32_scan(buf: &[u8], max_frame: usize) -> Result<Len32Scan, FrameTooLarge> {
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + 4) else {
            return Ok(Len32Scan {
                whole: pos,
                next: 4,
            });
        };
        let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
        if len > max_frame {
            return Err(FrameTooLarge { len });
        }
        if buf.len() - pos < 4 + len {
            return Ok(Len32Scan {
                whole: pos,
                next: 4 + len,
            });
        }
        pos += 4 + len;
    }
}

/// Checks a `len32` stream as it passes in pieces, without holding any of it: the floor echoes
/// bytes as they arrive and needs only the headers.
#[derive(Debug, Default, Clone)]
pub struct Len32Guard {
    header: [u8; 4],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
}

impl Len32Guard {
    /// Takes the next bytes of the stream; fails at the first header over `max_frame`.
    pub fn feed(&mut self, mut data: &[u8], max_frame: usize) -> Result<(), FrameTooLarge> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (4 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 4 {
                self.have = 0;
                let len = u32::from_be_bytes(self.header) as usize;
                if len > max_frame {
                    return Err(FrameTooLarge { len });
                }
                self.payload_left = len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = (len as u32).to_be_bytes().to_vec();
        f.extend((0..len).map(|i| i as u8));
        f
    }

    #[test]
    fn scan_finds_whole_frames_and_the_next_size() {
        let mut buf = frame(3);
        buf.extend(frame(0));
        buf.extend(&frame(10)[..7]);
        assert_eq!(
            len32_scan(&buf, 100),
            Ok(Len32Scan {
                whole: 11,
                next: 14
            })
        );
        assert_eq!(
            len32_scan(&buf[..9], 100),
            Ok(Len32Scan { whole: 7, next: 4 })
        );
        assert_eq!(len32_scan(&[], 100), Ok(Len32Scan { whole: 0, next: 4 }));
    }

    #[test]
    fn scan_rejects_a_frame_over_the_maximum() {
        let mut buf = frame(3);
        buf.extend(101u32.to_be_bytes());
        assert_eq!(len32_scan(&buf, 100), Err(FrameTooLarge { len: 101 }));
        assert!(len32_scan(&frame(100), 100).is_ok());
    }

    #[test]
    fn guard_accepts_a_stream_split_anywhere_and_rejects_oversize() {
        let mut stream = Vec::new();
        for len in [0, 1, 5, 300, 2] {
            stream.extend(frame(len));
        }
        for split in 0..=stream.len() {
            let mut g = Len32Guard::default();
            g.feed(&stream[..split], 300).unwrap();
            g.feed(&stream[split..], 300).unwrap();
            assert_eq!((g.have, g.payload_left), (0, 0));
        }
        let mut bad = frame(2);
        bad.extend(301u32.to_be_bytes());
        for split in 0..=bad.len() {
            let mut g = Len32Guard::default();
            let r = g
                .feed(&bad[..split], 300)
                .and_then(|()| g.feed(&bad[split..], 300));
            assert_eq!(r, Err(FrameTooLarge { len: 301 }));
        }
    }
}
