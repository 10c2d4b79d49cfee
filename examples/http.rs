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
//!
//! Over TLS (1.3 or 1.2, ALPN `http/1.1`), given a certificate for `localhost` issued by the
//! CA in `ca.pem` and its key, all PEM:
//!
//! ```text
//! cargo run --release --example http -- --addr 127.0.0.1:8443 \
//!     --tls-cert cert.pem --tls-key key.pem
//! curl --cacert ca.pem --resolve localhost:8443:127.0.0.1 https://localhost:8443/
//! ```

mod common;
#[path = "http/service.rs"]
mod service;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::{serve_until_signalled, ServerArgs, TlsArgs};
use ringwire::codec::http::{self, Http, Limits};
use ringwire::tls::rustls::ServerConfig;
use ringwire::Server;
use service::Web;

/// ringwire HTTP/1.1 server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Largest request head (request line and header fields), in bytes: 431 past it.
    #[arg(long, default_value_t = 8 << 10)]
    max_head: usize,
    /// Largest request body, in bytes: 413 past it.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: u64,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

fn serve(args: &Args, tls: Option<Arc<ServerConfig>>) -> Result<(), ringwire::ServerError> {
    let codec = Http::with_limits(
        Limits::default()
            .with_max_head(args.max_head)
            .with_max_body(args.max_body),
    );
    let server = Server::new(codec, Web::default)
        .bind(args.addr)
        // A head may take the whole frame budget; bodies stream and are never buffered whole.
        .max_frame(args.max_head)
        .on_worker_start(|_| http::refresh_date())
        .on_core_tick(Duration::from_millis(500), |_| http::refresh_date());
    let tls_on = tls.is_some();
    let handle = common::with_tls(args.server.apply(server), tls).start()?;
    let total = serve_until_signalled(
        handle,
        args.server.drain(),
        |h| {
            println!(
                "ringwire http listening on {} on {} core(s){}",
                common::listening_on(h),
                h.core_stats().len(),
                if tls_on { ", TLS" } else { "" }
            );
        },
        || {},
    )?;
    eprintln!(
        "ringwire http: stopped after {} sessions, {} responses in {} writes",
        total.accepted, total.frames_out, total.writes
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let tls = match args.tls.server_config(&["http/1.1"]) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("ringwire http: TLS: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve(&args, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwire http: {e}");
            ExitCode::FAILURE
        }
    }
}
