//! Holding many idle connections: open them a batch at a time, have each echo one message, then
//! hold them all, sending nothing. With `--server-pid` it reports the server's resident memory
//! per connection and the server's CPU use while the connections sit idle.
//!
//! Connections open as a chain: the client opens `batch` at first, and each connection whose
//! echo came back opens the next one on its core, so at most `batch` connects are in flight and
//! the server's accept backlog never overflows.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringwire::codec::{Codec, Len32};
use ringwire::{Client, CloseReason, Handler, Session};
use ringwire_bench::Framing;
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::sysinfo;
use super::wire::{Chunks, Pattern};
use super::IdleArgs;

struct IdleShared {
    pattern: Pattern,
    target: u64,
    addr: std::net::SocketAddr,
    next_conn: AtomicU64,
    /// Connections asked for so far (the client's own and those opened by handlers).
    launched: AtomicU64,
    echoed: AtomicU64,
    errors: AtomicU64,
    stopping: AtomicBool,
}

struct Idle {
    shared: Arc<IdleShared>,
    conn: u64,
}

impl<C> Handler<C> for Idle
where
    C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]>,
{
    fn on_open(&mut self, session: &mut Session<'_, C>) {
        if session
            .send(self.shared.pattern.payload(self.conn, 0))
            .is_err()
        {
            session.close();
        }
    }

    fn on_message(&mut self, session: &mut Session<'_, C>, frame: &[u8]) {
        let shared = &self.shared;
        if frame == shared.pattern.payload(self.conn, 0) {
            shared.echoed.fetch_add(1, Relaxed);
        } else {
            shared.errors.fetch_add(1, Relaxed);
        }
        if shared.launched.fetch_add(1, Relaxed) < shared.target {
            session.connect(shared.addr);
        }
    }

    fn on_close(&mut self, _session: &mut Session<'_, C>, reason: CloseReason) {
        if !self.shared.stopping.load(Relaxed) {
            self.shared.errors.fetch_add(1, Relaxed);
            eprintln!(
                "loadgen idle: connection {} closed early: {reason:?}",
                self.conn
            );
        }
    }
}

fn start<C>(
    codec: C,
    shared: &Arc<IdleShared>,
    args: &IdleArgs,
    per_core: usize,
) -> Result<ringwire::ClientHandle, ringwire::ServerError>
where
    C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]> + Clone + Send,
{
    let factory_shared = shared.clone();
    Client::new(codec, move || Idle {
        conn: factory_shared.next_conn.fetch_add(1, Relaxed),
        shared: factory_shared.clone(),
    })
    .connect(args.addr)
    .connections(per_core)
    .cpus(args.cpus.iter().copied())
    .max_frame(args.size + 64)
    .start()
}

/// Opens the connections, holds them, and prints one JSON line when told to stop.
pub fn idle(args: &IdleArgs) -> ExitCode {
    if args.connections == 0 || args.size == 0 || args.cpus.is_empty() || args.batch == 0 {
        eprintln!("loadgen idle: --connections, --size, --batch and --cpus must be positive");
        return ExitCode::from(2);
    }
    let nofile = sysinfo::raise_nofile();
    if nofile < args.connections as u64 + 64 {
        eprintln!(
            "loadgen idle: the open-file limit is {nofile}, too low for {} connections",
            args.connections
        );
    }
    let cores = args.cpus.len();
    let per_core = args.batch.min(args.connections).div_ceil(cores);
    let shared = Arc::new(IdleShared {
        pattern: Pattern::new(args.size),
        target: args.connections as u64,
        addr: args.addr,
        next_conn: AtomicU64::new(0),
        launched: AtomicU64::new((per_core * cores) as u64),
        echoed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
    });
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadgen idle: signals: {e}");
            return ExitCode::from(2);
        }
    };
    let rss_before = args
        .server_pid
        .and_then(|p| sysinfo::process_rss_kib(p).ok());
    let sockstat_before = sockstat_tcp();
    let began = Instant::now();
    let started = match args.framing {
        Framing::Raw => start(Chunks { size: args.size }, &shared, args, per_core),
        Framing::Len32 => start(Len32, &shared, args, per_core),
    };
    let client = match started {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen idle: cannot start the client: {e}");
            return ExitCode::from(2);
        }
    };
    let target = shared.target;
    let deadline = began + Duration::from_secs_f64(args.setup_timeout);
    while shared.echoed.load(Relaxed) + shared.errors.load(Relaxed) < target
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let setup = began.elapsed().as_secs_f64();
    let (echoed, errors) = (shared.echoed.load(Relaxed), shared.errors.load(Relaxed));
    println!("holding {echoed} connections ({errors} errors) after {setup:.2} s");
    let _ = std::io::stdout().flush();

    let mut line = serde_json::Map::new();
    // Let the last echoes and their acknowledgements settle before measuring.
    std::thread::sleep(Duration::from_secs_f64(args.settle));
    if let Some(pid) = args.server_pid {
        let rss = sysinfo::process_rss_kib(pid).ok();
        line.insert("server_rss_kib".into(), json!(rss));
        if let (Some(before), Some(after)) = (rss_before, rss) {
            let per_conn = (after as f64 - before as f64) * 1024.0 / echoed.max(1) as f64;
            line.insert("server_rss_before_kib".into(), json!(before));
            line.insert("rss_per_conn_bytes".into(), json!(per_conn.round()));
            println!(
                "server RSS {before} KiB before, {after} KiB holding: {per_conn:.0} bytes per connection"
            );
        }
    }
    let sockstat = sockstat_tcp();
    println!("sockstat: {sockstat}");
    line.insert("sockstat_before".into(), json!(sockstat_before));
    line.insert("sockstat".into(), json!(sockstat));
    let server_before = args.server_pid.and_then(|p| sysinfo::process_cpu(p).ok());
    let cpu_before = sysinfo::own_cpu();
    let measured = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.measure));
    let window = measured.elapsed().as_secs_f64();
    let own_cpu = sysinfo::own_cpu().saturating_sub(cpu_before).as_secs_f64() / window;
    let server_after = args.server_pid.and_then(|p| sysinfo::process_cpu(p).ok());
    if let (Some(a), Some(b)) = (server_before, server_after) {
        let idle_cpu = b.saturating_sub(a).as_secs_f64() / window;
        println!(
            "server CPU while idle: {:.3}% of a core over {window:.1} s",
            idle_cpu * 100.0
        );
        line.insert("server_idle_cpu".into(), json!(idle_cpu));
    }
    if let Some(secs) = args.hold {
        std::thread::sleep(Duration::from_secs_f64(secs));
    } else {
        signals.forever().next();
    }
    let errors = shared.errors.load(Relaxed);
    shared.stopping.store(true, Relaxed);
    client.stop();
    if let Err(e) = client.join() {
        eprintln!("loadgen idle: the client stopped with an error: {e}");
    }
    if let Some(label) = &args.label {
        line.insert("label".into(), json!(label));
    }
    line.insert("connections".into(), json!(target));
    line.insert("echoed".into(), json!(echoed));
    line.insert("errors".into(), json!(errors));
    line.insert("setup_s".into(), json!((setup * 1000.0).round() / 1000.0));
    line.insert("measured_s".into(), json!(args.measure));
    line.insert("client_idle_cpu".into(), json!(own_cpu));
    println!("{}", serde_json::Value::Object(line));
    if echoed == target && errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The TCP line of `/proc/net/sockstat` (sockets in use, orphans, TIME_WAIT, memory in pages).
fn sockstat_tcp() -> String {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("TCP:"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}
