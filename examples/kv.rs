//! A Redis-protocol (RESP2) key-value server: enough of Redis that `redis-cli` works and
//! `redis-benchmark -t ping,set,get,incr,mset` runs unmodified, pipelining included. The
//! commands are listed in `kv/service.rs`. On SIGINT or SIGTERM it drains (stops accepting,
//! serves its sessions until their peers close, at most `--drain-ms`) and exits 0.
//!
//! Every connection sees every key, whichever core serves it; `--sharding` says how the cores
//! share them:
//!
//! - `cores` (the default): shared nothing. Each key is owned by one core (a hash of the key),
//!   which keeps it in its per-core state with no lock; a command for a key of another core
//!   is sent there, and a command over keys of several cores (MGET, MSET, DEL, EXISTS) or all
//!   of them (DBSIZE, FLUSHDB) goes to each in one message and their results are merged. The
//!   client's pipelined replies keep their order. See `kv/cores.rs`.
//! - `locks`: one store shared by every core, behind sharded locks with short critical
//!   sections (see `kv/store.rs`), for comparison.
//!
//! Either way a value set through any connection is seen by a GET on any other once the SET's
//! reply has been sent, and a command over keys of several cores is not atomic (see
//! `kv/service.rs`). docs/PROTOCOLS.md compares the two.
//!
//! ```text
//! cargo run --release --example kv -- --addr 127.0.0.1:6379 --cores 2
//! redis-benchmark -p 6379 -t ping,set,get,incr,mset -P 16 -q
//! cargo run --release --example kv -- --unix /tmp/kv.sock --cores 2
//! redis-cli -s /tmp/kv.sock ping
//! ```
//!
//! Over TLS (1.3 or 1.2, no ALPN), given a certificate for `localhost` issued by the CA in
//! `ca.pem` and its key, all PEM:
//!
//! ```text
//! cargo run --release --example kv -- --addr 127.0.0.1:6379 \
//!     --tls-cert cert.pem --tls-key key.pem
//! redis-cli -p 6379 --tls --cacert ca.pem --sni localhost ping
//! ```

mod common;
#[path = "kv/service.rs"]
mod service;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use common::{serve_until_signalled, ServerArgs, TlsArgs};
use ringwire::codec::resp::{Limits, Resp};
use ringwire::tls::rustls::ServerConfig;
use service::{cores, Sharding, SWEEP_PERIOD};

/// ringwire RESP key-value server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (unless `--unix`).
    #[arg(long, conflicts_with = "unix", default_value = "127.0.0.1:6379")]
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
    /// How the cores share the keys: each key owned by one core, or one store behind locks.
    #[arg(long, value_enum, default_value = "cores")]
    sharding: Sharding,
    /// Maps per core (`--sharding cores`) or shards of the shared store (`locks`), rounded up
    /// to a power of two; expired keys are swept one map or shard at a time.
    #[arg(long, default_value_t = 256)]
    shards: usize,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

fn serve(args: &Args, tls: Option<Arc<ServerConfig>>) -> Result<(), ringwire::ServerError> {
    let codec = Resp::with_limits(
        Limits::default()
            .with_max_bulk(args.max_bulk)
            .with_max_args(args.max_args),
    );
    let server = service::server(codec, args.sharding, args.shards)
        .bind(args.addr)
        .max_frame(args.max_frame);
    let tls_on = tls.is_some();
    let handle = common::with_tls(args.server.apply(server), tls).start()?;
    if args.sharding == Sharding::Cores {
        // Expired keys that nobody touches are swept on their cores.
        cores::sweep_every(handle.remote(), SWEEP_PERIOD);
    }
    let total = serve_until_signalled(
        handle,
        args.server.drain(),
        |h| {
            println!(
                "ringwire kv listening on {} on {} core(s), sharding by {:?}{}",
                common::listening_on(h),
                h.core_stats().len(),
                args.sharding,
                if tls_on { ", TLS" } else { "" }
            );
        },
        || {},
    )?;
    eprintln!(
        "ringwire kv: stopped after {} sessions, {} commands, {} replies in {} writes, \
         {} messages between cores",
        total.accepted, total.frames_in, total.frames_out, total.writes, total.mail_out
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let tls = match args.tls.server_config(&[]) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("ringwire kv: TLS: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve(&args, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwire kv: {e}");
            ExitCode::FAILURE
        }
    }
}
