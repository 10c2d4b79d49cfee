//! The load generator for the echo benchmark, built on ringwire's own client: ringwire
//! measures itself (and the baselines) with itself.
//!
//! - Closed loop: `--connections N` split over the client CPUs (`--cpus`), each keeping
//!   `--depth D` messages of `--size` bytes in flight.
//! - Open loop (`--rate R`): every connection sends on a fixed schedule; latency counts from
//!   each message's intended send time, so a server's stalls cannot hide.
//! - Every echoed byte is checked; mismatches, early closes and failed connects are errors.
//! - Output: the percentile table and one JSON line (throughput, percentiles, errors, the
//!   client's own CPU, and with `--server-pid`/`--server-cpus` the server's CPU).
//!
//! Subcommands: `idle` holds many idle connections, `plot` draws saved histograms together,
//! `summarize` turns a results folder into markdown tables (see `scripts/bench-echo.sh`),
//! `plain` runs closed-loop load from plain sockets over TCP or a Unix socket (see
//! `scripts/bench-unix.sh`).
//!
//! ```text
//! cargo run --release -p ringwire-bench --bin loadgen -- --addr 127.0.0.1:7000 --cpus 1 \
//!     --connections 50 --depth 8 --size 64 --duration 10 --warmup 2
//! ```

#[path = "../loadgen/mod.rs"]
mod loadgen;

fn main() -> std::process::ExitCode {
    loadgen::main()
}
