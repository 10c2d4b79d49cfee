//! An HTTP/1.1 server: `GET /` answers a small fixed body; keep-alive by default,
//! `Connection: close` honoured, HTTP/1.0 handled, pipelined requests answered in order and
//! written together; request bodies (Content-Length or chunked) read and discarded up to
//! `--max-body` (413 past it). Routes and error statuses are listed in `http/service.rs`.
//! The `Date` header is cached per core and refreshed by the per-core tick. On SIGINT or
//! SIGTERM it drains (stops accepting, answers each open connection's next request with
//! `Connection: close`, at most `--drain-ms`) and exits 0.
//!
//! ```text
//! cargo run --release --example http -- --addr 127.0.0.1:8080 --cores 2
//! wrk -t1 -c50 -d10s http://127.0.0.1:8080/
//! ```

#[path = "http/service.rs"]
mod service;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringwire::codec::http::{self, Http, Limits};
use ringwire::Server;
use service::Web;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// ringwire HTTP/1.1 server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Number of cores (workers pinned to CPUs 0..N).
    #[arg(long, default_value_t = 1, conflicts_with = "cpus")]
    cores: usize,
    /// Explicit CPU list, e.g. 0,2,4.
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Largest request head (request line and header fields), in bytes: 431 past it.
    #[arg(long, default_value_t = 8 << 10)]
    max_head: usize,
    /// Largest request body, in bytes: 413 past it.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: u64,
    /// Provided receive buffers per core (a power of two).
    #[arg(long, default_value_t = 1024)]
    buffers: u32,
    /// Size of each provided receive buffer, in bytes.
    #[arg(long, default_value_t = 8192)]
    buf_size: u32,
    /// Most sessions per core; more are accepted and closed at once.
    #[arg(long, default_value_t = 65536)]
    max_conns: usize,
    /// Close connections that receive nothing for this long.
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Close connections whose request head or body is not completed within this long.
    #[arg(long)]
    read_timeout_ms: Option<u64>,
    /// On SIGINT/SIGTERM, serve open connections for at most this long before closing them.
    #[arg(long, default_value_t = 10_000)]
    drain_ms: u64,
}

fn serve(args: &Args) -> Result<(), ringwire::ServerError> {
    let codec = Http::with_limits(Limits {
        max_head: args.max_head,
        max_body: args.max_body,
    });
    let ms = Duration::from_millis;
    let mut server = Server::new(codec, Web::default)
        .bind(args.addr)
        // A head may take the whole frame budget; bodies stream and are never buffered whole.
        .max_frame(args.max_head)
        .buffers(args.buffers, args.buf_size)
        .max_sessions(args.max_conns)
        .on_worker_start(|_| http::refresh_date())
        .on_core_tick(ms(500), |_| http::refresh_date());
    if let Some(t) = args.idle_timeout_ms {
        server = server.idle_timeout(ms(t));
    }
    if let Some(t) = args.read_timeout_ms {
        server = server.read_timeout(ms(t));
    }
    server = match &args.cpus {
        Some(cpus) => server.cpus(cpus.iter().copied()),
        None => server.cores(args.cores),
    };
    let handle = server.start()?;
    println!(
        "ringwire http listening on {} on {} core(s)",
        handle.local_addr(),
        handle.core_stats().len()
    );
    let stopper = handle.stopper();
    let drain = ms(args.drain_ms);
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(ringwire::ServerError::Spawn)?;
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        if let Some(sig) = signals.next() {
            eprintln!("ringwire http: signal {sig}: draining for at most {drain:?}");
            stopper.shutdown(drain);
        }
        if signals.next().is_some() {
            eprintln!("ringwire http: second signal: stopping now");
            stopper.stop();
        }
    });
    let counters = handle.core_stats().to_vec();
    let result = handle.join();
    let mut total = ringwire::CoreSnapshot::default();
    for core in &counters {
        total.merge(&core.snapshot());
    }
    eprintln!(
        "ringwire http: stopped after {} sessions, {} responses in {} writes",
        total.accepted, total.frames_out, total.writes
    );
    result
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwire http: {e}");
            ExitCode::FAILURE
        }
    }
}
