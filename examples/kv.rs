//! A Redis-protocol (RESP2) key-value server: enough of Redis that `redis-cli` works and
//! `redis-benchmark -t ping,set,get,incr,mset` runs unmodified, pipelining included. The
//! commands are listed in `kv/service.rs`. On SIGINT or SIGTERM it drains (stops accepting,
//! serves its sessions until their peers close, at most `--drain-ms`) and exits 0.
//!
//! Every core serves every key: the store is shared by the cores, behind sharded locks with
//! short critical sections (see `kv/store.rs`), so a value set through any connection is seen
//! by a GET on any other as soon as the SET's reply is sent. `--store per-core` gives each core
//! a store of its own instead: no sharing, so values are NOT visible across cores; it exists
//! only to measure what the sharing costs (see docs/PROTOCOLS.md).
//!
//! ```text
//! cargo run --release --example kv -- --addr 127.0.0.1:6379 --cores 2
//! redis-benchmark -p 6379 -t ping,set,get,incr,mset -P 16 -q
//! ```

mod common;
#[path = "kv/service.rs"]
mod service;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use common::{serve_until_signalled, ServerArgs};
use ringwire::codec::resp::{Limits, Resp};
use ringwire::{CoreCtx, Server};
use service::{Kv, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// One store shared by every core (the correct one).
    Shared,
    /// A store per core: values are not visible across cores. For measuring sharing's cost.
    PerCore,
}

/// ringwire RESP key-value server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6379")]
    addr: SocketAddr,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_frame: usize,
    /// Longest bulk string accepted, in bytes.
    #[arg(long, default_value_t = 512 << 20)]
    max_bulk: usize,
    /// Most arguments in one request.
    #[arg(long, default_value_t = 1 << 20)]
    max_args: usize,
    /// Shards of the shared store (rounded up to a power of two).
    #[arg(long, default_value_t = 256)]
    shards: usize,
    /// Which store: shared by the cores, or one per core (measurement only).
    #[arg(long, value_enum, default_value = "shared")]
    store: StoreKind,
    #[command(flatten)]
    server: ServerArgs,
}

/// A core's own store, with `--store per-core`.
type PerCoreStore = Option<Arc<Store>>;

fn serve(args: &Args) -> Result<(), ringwire::ServerError> {
    let codec = Resp::with_limits(
        Limits::default()
            .with_max_bulk(args.max_bulk)
            .with_max_args(args.max_args),
    );
    let shared = Arc::new(Store::new(args.shards));
    let sweep = shared.clone();
    let (kind, shards) = (args.store, args.shards);
    // With `--store per-core`, each core's own store is its per-core state.
    let factory = move |ctx: &mut CoreCtx| match kind {
        StoreKind::Shared => Kv::new(shared.clone()),
        StoreKind::PerCore => Kv::new(ctx.state::<PerCoreStore>().clone().expect("made")),
    };
    let server = Server::new(codec, factory)
        .core_state(move |_| -> PerCoreStore {
            (kind == StoreKind::PerCore).then(|| Arc::new(Store::new(shards)))
        })
        .bind(args.addr)
        .max_frame(args.max_frame)
        // Expired keys that nobody touches are swept a shard at a time.
        .on_core_tick(Duration::from_millis(100), move |_| {
            sweep.sweep_next();
        });
    let handle = args.server.apply(server).start()?;
    println!(
        "ringwire kv listening on {} on {} core(s), {:?} store",
        handle.local_addr(),
        handle.core_stats().len(),
        args.store
    );
    let total = serve_until_signalled(handle, args.server.drain(), || {})?;
    eprintln!(
        "ringwire kv: stopped after {} sessions, {} commands, {} replies in {} writes",
        total.accepted, total.frames_in, total.frames_out, total.writes
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwire kv: {e}");
            ExitCode::FAILURE
        }
    }
}
