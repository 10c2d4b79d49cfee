//! Baseline: the echo server on tokio-uring. One tokio-uring runtime per core, each on a thread
//! pinned to its CPU with its own SO_REUSEPORT listener; one task per connection that reads into
//! a reused, owned 64 KiB buffer and writes it back with `write_all`.
//!
//! ```text
//! cargo run --release -p ringwire-bench --bin echo-tokio-uring -- --cores 2 --framing len32
//! ```

use std::io;

use ringwire_bench::{len32_scan, EchoArgs, Framing, Ready, READ_BUF};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

fn main() {
    ringwire_bench::run("echo-tokio-uring", worker);
}

fn worker(listener: std::net::TcpListener, args: &EchoArgs, ready: Ready) -> io::Result<()> {
    // The same submission queue size as ringwire; tokio-uring sizes the completion queue.
    let rt = tokio_uring::Runtime::new(tokio_uring::builder().entries(args.ring_entries))?;
    let (framing, max_frame) = (args.framing, args.max_frame);
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener);
        ready.ready();
        loop {
            // Accepted sockets inherit TCP_NODELAY from the listener.
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("echo-tokio-uring: accept: {e}");
                    continue;
                }
            };
            tokio_uring::spawn(async move {
                let _ = match framing {
                    Framing::Raw => echo_raw(stream).await,
                    Framing::Len32 => echo_len32(stream, max_frame).await,
                };
            });
        }
    })
}

/// Echoes bytes as they are read, until EOF; dropping the stream then closes it.
async fn echo_raw(stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let (res, read_buf) = stream.read(buf).await;
        let n = res?;
        if n == 0 {
            return Ok(());
        }
        let (res, slice) = stream.write_all(read_buf.slice(..n)).await;
        res?;
        buf = slice.into_inner();
    }
}

/// Echoes whole frames, all those a read completes in one `write_all`, and keeps the incomplete
/// tail; the buffer grows to hold a frame larger than it. A header over `max_frame` ends the
/// connection.
async fn echo_len32(stream: TcpStream, max_frame: usize) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    let mut filled = 0;
    loop {
        // Reads into buf[filled..]; the buffer's length never falls below `filled`.
        let (res, slice) = stream.read(buf.slice(filled..)).await;
        buf = slice.into_inner();
        let n = res?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let scan = len32_scan(&buf[..filled], max_frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        if scan.whole > 0 {
            let (res, slice) = stream.write_all(buf.slice(..scan.whole)).await;
            buf = slice.into_inner();
            res?;
            buf.copy_within(scan.whole..filled, 0);
            filled -= scan.whole;
        }
        if scan.next > buf.len() {
            buf.resize(scan.next, 0);
        }
    }
}
