//! Baseline: the echo server on tokio (epoll). One current-thread runtime per core, each on a
//! thread pinned to its CPU with its own SO_REUSEPORT listener; one task per connection that
//! reads into a reused 64 KiB buffer and writes back with `write_all`.
//!
//! ```text
//! cargo run --release -p ringwire-bench --bin echo-tokio -- --cores 2 --framing len32
//! ```

use std::io;

use ringwire_bench::{len32_scan, EchoArgs, Framing, Ready, READ_BUF};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    ringwire_bench::run("echo-tokio", worker);
}

fn worker(listener: std::net::TcpListener, args: &EchoArgs, ready: Ready) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (framing, max_frame) = (args.framing, args.max_frame);
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        ready.ready();
        loop {
            // Accepted sockets inherit TCP_NODELAY from the listener.
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("echo-tokio: accept: {e}");
                    continue;
                }
            };
            tokio::spawn(async move {
                let _ = match framing {
                    Framing::Raw => echo_raw(stream).await,
                    Framing::Len32 => echo_len32(stream, max_frame).await,
                };
            });
        }
    })
}

/// Echoes bytes as they are read, until EOF; dropping the stream then closes it.
async fn echo_raw(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// Echoes whole frames, all those a read completes in one `write_all`, and keeps the incomplete
/// tail; the buffer grows to hold a frame larger than it. A header over `max_frame` ends the
/// connection.
async fn echo_len32(mut stream: TcpStream, max_frame: usize) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let scan = len32_scan(&buf[..filled], max_frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        if scan.whole > 0 {
            stream.write_all(&buf[..scan.whole]).await?;
            buf.copy_within(scan.whole..filled, 0);
            filled -= scan.whole;
        }
        if scan.next > buf.len() {
            buf.resize(scan.next, 0);
        }
    }
}
