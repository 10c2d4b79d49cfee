//! The echo server: `raw` echoes every byte in order; `len32` echoes each whole frame, prefix
//! included. On SIGINT or SIGTERM it drains (stops accepting, serves its sessions until their
//! peers close, at most `--drain-ms`) and exits 0.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:7000 --cores 2 --framing len32
//! cargo run --release --example echo -- --unix /tmp/echo.sock --cores 2
//! ```
//!
//! Over TLS (1.3 or 1.2, no ALPN), given a certificate for `localhost` issued by the CA in
//! `ca.pem` and its key, all PEM:
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:7443 \
//!     --tls-cert cert.pem --tls-key key.pem
//! openssl s_client -connect 127.0.0.1:7443 -servername localhost -CAfile ca.pem -quiet
//! ```

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use common::{serve_until_signalled, ServerArgs, TlsArgs};
use ringwire::codec::{Codec, Len32, Raw};
use ringwire::handlers::Echo;
use ringwire::tls::rustls::ServerConfig;
use ringwire::{report, CoreLatency, Handler, Server};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Framing {
    Raw,
    Len32,
}

/// ringwire echo server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (unless `--unix`).
    #[arg(long, conflicts_with = "unix", default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Framing: raw bytes, or 4-byte big-endian length prefixed frames.
    #[arg(long, value_enum, default_value = "raw")]
    framing: Framing,
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_frame: usize,
    /// Pending output (bytes) above which a session is not read from until it drains to a
    /// quarter of this.
    #[arg(long, default_value_t = 1 << 20)]
    high_water: usize,
    /// Record handling-time and loop-turn-time histograms; print them on SIGUSR1 and at exit.
    #[arg(long)]
    latency: bool,
    /// With --latency, also write them (.txt, .hgrm, .svg) into this folder at exit.
    #[arg(long)]
    latency_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    tls: TlsArgs,
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

fn serve<C>(
    codec: C,
    args: &Args,
    tls: Option<Arc<ServerConfig>>,
) -> Result<(), ringwire::ServerError>
where
    C: Codec + Clone + Send,
    Echo: Handler<C>,
{
    let server = Server::new(codec, || Echo)
        .bind(args.addr)
        .max_frame(args.max_frame)
        .water_marks(args.high_water, args.high_water / 4)
        .record_latency(args.latency);
    let tls_on = tls.is_some();
    let handle = common::with_tls(args.server.apply(server), tls).start()?;
    let latency = handle.latency().to_vec();
    let on_usr1 = latency.clone();
    let total = serve_until_signalled(
        handle,
        args.server.drain(),
        |h| {
            println!(
                "ringwire echo ({:?}) listening on {} on {} core(s){}",
                args.framing,
                common::listening_on(h),
                h.core_stats().len(),
                if tls_on { ", TLS" } else { "" }
            );
        },
        move || print_latency(&on_usr1, None),
    )?;
    eprintln!(
        "ringwire echo: stopped after {} sessions, {} bytes in, {} bytes out",
        total.accepted, total.bytes_in, total.bytes_out
    );
    print_latency(&latency, args.latency_dir.as_deref());
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let tls = match args.tls.server_config(&[]) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("ringwire echo: TLS: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.framing {
        Framing::Raw => serve(Raw, &args, tls),
        Framing::Len32 => serve(Len32, &args, tls),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwire echo: {e}");
            ExitCode::FAILURE
        }
    }
}
