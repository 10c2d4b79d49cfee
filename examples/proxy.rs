//! A Redis proxy (RESP2) in front of several redis-server backends, placing keys exactly as
//! twemproxy (nutcracker) does with `hash: fnv1a_64`, `distribution: ketama` and the same
//! servers listed as `HOST:PORT:1` in the same order, without names and without hash tags: a
//! key set through one proxy is found through the other. On SIGINT or SIGTERM it drains and
//! exits 0.
//!
//! ```text
//! cargo run --release --example proxy -- --addr 127.0.0.1:6380 --cores 2 \
//!     --backend 127.0.0.1:7001 --backend 127.0.0.1:7002 --backend 127.0.0.1:7003
//! redis-benchmark -p 6380 -t set,get,mset -P 16 -q
//! ```
//!
//! What it serves:
//!
//! - Commands on one key (GET, SET and its options, INCR/DECR/INCRBY/DECRBY, APPEND, STRLEN,
//!   EXPIRE/PEXPIRE/TTL/PTTL/PERSIST, TYPE, GETSET, SETNX, SETEX, and the hash, list, set and
//!   sorted-set commands on one key) go whole to the key's backend, and its reply is the
//!   client's.
//! - DEL, EXISTS, UNLINK, TOUCH, MGET and MSET over keys of several backends are split, one
//!   command per backend, and merged: MGET's values in key order, the sum of the counts, `+OK`
//!   once every MSET part is (not atomic across backends). twemproxy sends a multi-key EXISTS
//!   whole to the first key's backend; here it counts on every backend.
//! - Commands on two or more keys that cannot be split (RENAME, SMOVE, RPOPLPUSH, LMOVE, COPY,
//!   SINTER/SUNION/SDIFF and their STORE forms, PFCOUNT, PFMERGE) are forwarded when all their
//!   keys are on one backend, and refused with `-ERR` otherwise.
//! - PING, ECHO, QUIT and SELECT 0 are answered here (SELECT of another database is an
//!   error). Commands a proxy over independent backends cannot serve (KEYS, SCAN, DBSIZE,
//!   FLUSHALL, MULTI/EXEC, WATCH, the SUBSCRIBE family, EVAL/EVALSHA, blocking pops, CONFIG,
//!   INFO, ...) get `-ERR ... not supported by this proxy`, unknown commands Redis's
//!   `-ERR unknown command`, a wrong number of arguments Redis's message; the session goes on.
//!   A request the codec cannot frame gets `-ERR Protocol error: ...` and closes that session
//!   only.
//! - A backend that is down, or whose connection closes with requests in flight, costs only
//!   its own keys: each such request gets `-ERR backend HOST:PORT ...` (a split command whose
//!   part failed, the same, naming the first such backend), every other request is answered,
//!   and the core reconnects after a backoff. A backend that does not answer within the
//!   request timeout (`--request-timeout-ms`, 1 s by default, counted from when the request is
//!   written to it) fails the requests pending on that connection the same way, and the
//!   connection is opened again. A reply larger than `--max-reply-bytes` (512 MiB by default;
//!   `--max-frame` bounds requests only) closes its backend connection.
//!
//! Each core keeps its own connections to every backend (opened on its own ring with its first
//! client), pipelines requests on them, and answers its clients in request order, pipelining
//! included. Placement: `proxy/ketama.rs`.
//!
//! `kill -USR1 <pid>` prints each backend's counters summed over the cores (requests, errors,
//! reconnects, in flight, down) and its reply latency percentiles; each core's part is gathered
//! with `RemoteHandle::run_on`, on the core that owns it.

mod common;
#[path = "proxy/service.rs"]
mod service;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;

use clap::Parser;
use common::{serve_until_signalled, ServerArgs};
use ringwire::codec::resp::{Limits, Resp};
use ringwire::RemoteHandle;
use service::pool::{BackendStats, PoolConfig};
use service::Backend;

/// How keys are placed on the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Hash {
    /// twemproxy's `hash: fnv1a_64` with `distribution: ketama`.
    Ketama,
}

/// ringwire Redis proxy.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6380")]
    addr: SocketAddr,
    /// A backend, `HOST:PORT`; repeat for each, in order (twemproxy's `servers:` order).
    #[arg(long = "backend", required = true)]
    backends: Vec<String>,
    /// Key placement.
    #[arg(long, value_enum, default_value = "ketama")]
    hash: Hash,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_frame: usize,
    /// Largest backend reply accepted, in bytes (Redis's largest value by default); a larger
    /// one closes its backend connection, failing the requests pending on it. Each backend
    /// connection may hold this much while a reply arrives.
    #[arg(long, default_value_t = service::DEFAULT_MAX_REPLY_BYTES)]
    max_reply_bytes: usize,
    /// How long a request may wait for its backend's reply, from when it is written to the
    /// backend (0: forever); past it the requests pending on that connection get `-ERR` and
    /// the connection is opened again.
    #[arg(long, default_value_t = service::DEFAULT_REQUEST_TIMEOUT_MS)]
    request_timeout_ms: u64,
    /// Longest wait before reconnecting to a backend that failed.
    #[arg(long, default_value_t = service::DEFAULT_BACKOFF_MAX_MS)]
    backoff_max_ms: u64,
    #[command(flatten)]
    server: ServerArgs,
}

fn serve(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let backends = args
        .backends
        .iter()
        .map(|name| Backend::resolve(name).map_err(|e| format!("backend {name}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let Hash::Ketama = args.hash;
    let pool = pool_config(args);
    let server = service::server(
        Resp::with_limits(Limits::default()),
        backends.clone(),
        move || pool,
    )
    .bind(args.addr)
    .max_frame(args.max_frame)
    .outbound_max_frame(args.max_reply_bytes);
    let handle = args.server.apply(server).start()?;
    let (remote, cores) = (handle.remote(), handle.core_stats().len());
    let on_usr1 = move || print_backend_stats(&remote, cores);
    let total = serve_until_signalled(
        handle,
        args.server.drain(),
        |h| {
            println!(
                "ringwire proxy listening on {} on {} core(s), backends {}",
                common::listening_on(h),
                h.core_stats().len(),
                backends
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        },
        on_usr1,
    )?;
    eprintln!(
        "ringwire proxy: stopped after {} sessions, {} requests, {} replies",
        total.accepted, total.frames_in, total.frames_out
    );
    Ok(())
}

/// The backend pool the command line asks for.
fn pool_config(args: &Args) -> PoolConfig {
    service::pool_config(args.request_timeout_ms, args.backoff_max_ms)
}

/// Gathers every core's backend counters (each on its own core) and prints their sums.
fn print_backend_stats(remote: &RemoteHandle, cores: usize) {
    let (tx, rx) = mpsc::channel();
    for worker in 0..cores {
        let tx = tx.clone();
        let _ = remote.run_on(worker, move |ctx| {
            let _ = tx.send(service::backend_stats(ctx));
        });
    }
    drop(tx);
    let mut total: Vec<BackendStats> = Vec::new();
    for core in rx.iter().take(cores) {
        if total.is_empty() {
            total = core;
            continue;
        }
        for (sum, part) in total.iter_mut().zip(core) {
            sum.requests += part.requests;
            sum.errors += part.errors;
            sum.reconnects += part.reconnects;
            sum.in_flight += part.in_flight;
            sum.down |= part.down;
            let _ = sum.latency.add(&part.latency);
        }
    }
    eprintln!(
        "backend               requests     errors reconnects in-flight down  p50 µs   p99 µs"
    );
    for b in &total {
        let us = |q: f64| b.latency.value_at_quantile(q) as f64 / 1000.0;
        eprintln!(
            "{:<21} {:>9} {:>10} {:>10} {:>9} {:>4} {:>7.1} {:>8.1}",
            b.addr.to_string(),
            b.requests,
            b.errors,
            b.reconnects,
            b.in_flight,
            if b.down { "yes" } else { "no" },
            us(0.5),
            us(0.99)
        );
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwire proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::{pool_config, Args, PoolConfig};

    fn parse(flags: &[&str]) -> Args {
        let argv = ["proxy", "--backend", "127.0.0.1:6379"];
        Args::try_parse_from(argv.iter().chain(flags)).unwrap()
    }

    /// Without flags the pool has the library's defaults: a request never waits forever.
    #[test]
    fn the_command_line_defaults_are_the_pools() {
        let args = parse(&[]);
        assert_eq!(pool_config(&args), PoolConfig::default());
        assert_eq!(
            pool_config(&args).request_timeout,
            Some(Duration::from_secs(1))
        );
        assert_eq!(args.max_reply_bytes, 512 << 20);
        assert_eq!(args.max_frame, 1 << 20);
    }

    #[test]
    fn flags_reach_the_pool() {
        let args = parse(&[
            "--request-timeout-ms",
            "250",
            "--backoff-max-ms",
            "700",
            "--max-reply-bytes",
            "4096",
        ]);
        let pool = pool_config(&args);
        assert_eq!(pool.request_timeout, Some(Duration::from_millis(250)));
        assert_eq!(pool.backoff_max, Duration::from_millis(700));
        assert_eq!(pool.backoff_min, PoolConfig::default().backoff_min);
        assert_eq!(args.max_reply_bytes, 4096);
        let none = parse(&["--request-timeout-ms", "0"]);
        assert_eq!(pool_config(&none).request_timeout, None, "0: no timeout");
    }
}
