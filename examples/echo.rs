//! The echo server: `raw` echoes every byte in order; `len32` echoes each whole frame, prefix
//! included. On SIGINT or SIGTERM it drains (stops accepting, serves its sessions until their
//! peers close, at most `--drain-ms`) and exits 0.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:7000 --cores 2 --framing len32
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ringwire::codec::{Codec, Len32, Raw};
use ringwire::handlers::Echo;
use ringwire::{report, CoreLatency, Handler, Server};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Framing {
    Raw,
    Len32,
}

/// ringwire echo server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Number of cores (workers pinned to CPUs 0..N).
    #[arg(long, default_value_t = 1, conflicts_with = "cpus")]
    cores: usize,
    /// Explicit CPU list, e.g. 0,2,4.
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Framing: raw bytes, or 4-byte big-endian length prefixed frames.
    #[arg(long, value_enum, default_value = "raw")]
    framing: Framing,
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_frame: usize,
    /// Submission queue entries per core.
    #[arg(long, default_value_t = 1024)]
    ring_entries: u32,
    /// Provided receive buffers per core (a power of two).
    #[arg(long, default_value_t = 1024)]
    buffers: u32,
    /// Size of each provided receive buffer, in bytes.
    #[arg(long, default_value_t = 8192)]
    buf_size: u32,
    /// Close sessions that receive nothing for this long.
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Close sessions whose incomplete frame is not completed within this long.
    #[arg(long)]
    read_timeout_ms: Option<u64>,
    /// Close sessions whose pending output makes no progress for this long.
    #[arg(long)]
    write_timeout_ms: Option<u64>,
    /// Most sessions per core; more are accepted and closed at once.
    #[arg(long, default_value_t = 65536)]
    max_conns: usize,
    /// Pending output (bytes) above which a session is not read from until it drains to a
    /// quarter of this.
    #[arg(long, default_value_t = 1 << 20)]
    high_water: usize,
    /// On SIGINT/SIGTERM, serve open sessions for at most this long before closing them.
    #[arg(long, default_value_t = 10_000)]
    drain_ms: u64,
    /// Record handling-time and loop-turn-time histograms; print them on SIGUSR1 and at exit.
    #[arg(long)]
    latency: bool,
    /// With --latency, also write them (.txt, .hgrm, .svg) into this folder at exit.
    #[arg(long)]
    latency_dir: Option<std::path::PathBuf>,
}

/// Prints the merged handling-time and turn-time histograms of every core.
fn print_latency(cores: &[CoreLatency], dir: Option<&std::path::Path>) {
    if cores.is_empty() {
        return;
    }
    let handling: Vec<_> = cores.iter().map(|c| c.handling.snapshot()).collect();
    let turn: Vec<_> = cores.iter().map(|c| c.turn.snapshot()).collect();
    let (handling, turn) = (report::merge(&handling), report::merge(&turn));
    eprintln!(
        "handling time per frame (decoded -> replies encoded):\n{}",
        report::table(&handling)
    );
    eprintln!("loop turn time:\n{}", report::table(&turn));
    if let Some(dir) = dir {
        let saved = std::fs::create_dir_all(dir)
            .and_then(|()| report::save(dir, "handling", &handling))
            .and_then(|()| report::save(dir, "turn", &turn));
        match saved {
            Ok(()) => eprintln!("latency histograms written to {}", dir.display()),
            Err(e) => eprintln!("cannot write latency histograms to {}: {e}", dir.display()),
        }
    }
}

fn serve<C>(codec: C, args: &Args) -> Result<(), ringwire::ServerError>
where
    C: Codec + Clone + Send,
    Echo: Handler<C>,
{
    let mut server = Server::new(codec, || Echo)
        .bind(args.addr)
        .max_frame(args.max_frame)
        .ring_entries(args.ring_entries)
        .buffers(args.buffers, args.buf_size)
        .max_sessions(args.max_conns)
        .water_marks(args.high_water, args.high_water / 4)
        .record_latency(args.latency);
    let ms = Duration::from_millis;
    if let Some(t) = args.idle_timeout_ms {
        server = server.idle_timeout(ms(t));
    }
    if let Some(t) = args.read_timeout_ms {
        server = server.read_timeout(ms(t));
    }
    if let Some(t) = args.write_timeout_ms {
        server = server.write_timeout(ms(t));
    }
    server = match &args.cpus {
        Some(cpus) => server.cpus(cpus.iter().copied()),
        None => server.cores(args.cores),
    };
    let handle = server.start()?;
    println!(
        "ringwire echo ({:?}) listening on {} on {} core(s)",
        args.framing,
        handle.local_addr(),
        handle.core_stats().len()
    );
    let stopper = handle.stopper();
    let drain = ms(args.drain_ms);
    let latency = handle.latency().to_vec();
    let on_signal = latency.clone();
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGUSR1]).map_err(ringwire::ServerError::Spawn)?;
    let signal_thread = std::thread::spawn(move || {
        let mut stops = 0;
        for sig in signals.forever() {
            if sig == SIGUSR1 {
                print_latency(&on_signal, None);
                continue;
            }
            stops += 1;
            if stops == 1 {
                eprintln!("ringwire echo: signal {sig}: draining for at most {drain:?}");
                stopper.shutdown(drain);
            } else {
                eprintln!("ringwire echo: second signal: stopping now");
                stopper.stop();
            }
        }
    });
    let counters = handle.core_stats().to_vec();
    let result = handle.join();
    // The signal thread waits for a second signal that will not come; exiting ends it.
    drop(signal_thread);
    let mut total = ringwire::CoreSnapshot::default();
    for core in &counters {
        total.merge(&core.snapshot());
    }
    eprintln!(
        "ringwire echo: stopped after {} sessions, {} bytes in, {} bytes out",
        total.accepted, total.bytes_in, total.bytes_out
    );
    print_latency(&latency, args.latency_dir.as_deref());
    result
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let result = match args.framing {
        Framing::Raw => serve(Raw, &args),
        Framing::Len32 => serve(Len32, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwire echo: {e}");
            ExitCode::FAILURE
        }
    }
}
