//! One load run: start the client, wait out the warm-up, measure a window, stop, report.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringwire::codec::{Codec, Len32};
use ringwire::report::{self, Histogram, Summary};
use ringwire::{Client, ClientHandle, ServerError};
use ringwire_bench::Framing;
use serde_json::{json, Value};

use super::handler::{Core, Load, Plan, Schedule, Shared};
use super::sysinfo::{self, CpuTicks};
use super::wire::{Chunks, Pattern};
use super::{histfile, RunArgs};

/// Room past the payload for a frame header.
const HEADER_ROOM: usize = 64;

/// Starts the client on `codec` with one [`Load`] handler per connection.
fn start<C>(codec: C, shared: &Arc<Shared>, args: &RunArgs, per_core: usize) -> StartResult
where
    C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]> + Clone + Send,
{
    let factory_shared = shared.clone();
    let core_shared = shared.clone();
    let client = Client::new(codec, move || Load::new(&factory_shared))
        .core_state(move |_| Core::new(&core_shared));
    let client = match &args.unix {
        Some(path) => client.connect_unix(path),
        None => client.connect(args.addr),
    };
    client
        .connections(per_core)
        .cpus(args.cpus.iter().copied())
        .max_frame(args.size + HEADER_ROOM)
        .start()
}

type StartResult = Result<ClientHandle, ServerError>;

/// What the kernel says at one edge of the measured window.
struct Sample {
    at: Instant,
    own: Duration,
    server: Option<Duration>,
    cpus: BTreeMap<usize, CpuTicks>,
    others: BTreeMap<(bool, u32), u64>,
}

impl Sample {
    fn take(server_pid: Option<u32>) -> Sample {
        let server = server_pid.and_then(|pid| match sysinfo::process_cpu(pid) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("loadgen: cannot read the CPU time of process {pid}: {e}");
                None
            }
        });
        Sample {
            at: Instant::now(),
            own: sysinfo::own_cpu(),
            server,
            cpus: sysinfo::cpu_ticks().unwrap_or_default(),
            others: sysinfo::other_processes(&[std::process::id(), server_pid.unwrap_or(0)]),
        }
    }
}

/// Sleeps until `deadline`, waking every 50 ms to check that some connection is still open;
/// returns `false` if every one has closed.
fn wait_until(deadline: Instant, shared: &Shared, sessions: u64) -> bool {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        if shared.totals.closed.load(Relaxed) >= sessions {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// The latency fields of a histogram, in microseconds, named `prefix` + p50_us and so on.
fn latency_fields(prefix: &str, hist: &Histogram<u64>, into: &mut serde_json::Map<String, Value>) {
    let s = Summary::of(hist);
    for (name, v) in [
        ("p50_us", s.p50),
        ("p90_us", s.p90),
        ("p99_us", s.p99),
        ("p999_us", s.p999),
        ("p9999_us", s.p9999),
        ("max_us", s.max),
        ("mean_us", s.mean),
    ] {
        into.insert(format!("{prefix}{name}"), json!(round(v, 2)));
    }
}

/// Runs the load and prints the report; the exit code says whether it went well.
pub fn run(args: &RunArgs) -> ExitCode {
    if let Err(why) = args.check() {
        eprintln!("loadgen: {why}");
        return ExitCode::from(2);
    }
    sysinfo::raise_nofile();
    let cores = args.cpus.len();
    let per_core = args.connections.div_ceil(cores);
    let connections = per_core * cores;
    if connections != args.connections {
        eprintln!(
            "loadgen: {} connections do not split evenly over {cores} CPUs: opening {connections}",
            args.connections
        );
    }
    let schedule = match args.rate {
        Some(rate) => {
            let interval_ns = 1e9 * connections as f64 / rate;
            let tick = Duration::from_micros(args.tick_us.max(1));
            Schedule::Open { interval_ns, tick }
        }
        None => Schedule::Closed { depth: args.depth },
    };
    let warm_end = Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let base = Instant::now();
    let shared = Arc::new(Shared::new(Plan {
        base,
        warm_end: warm_end.as_nanos() as u64,
        end: end.as_nanos() as u64,
        schedule,
        connections: connections as u64,
        pattern: Pattern::new(args.size),
    }));
    let started = match args.framing {
        Framing::Raw => start(Chunks { size: args.size }, &shared, args, per_core),
        Framing::Len32 => start(Len32, &shared, args, per_core),
    };
    let client = match started {
        Ok(client) => client,
        Err(e) => {
            eprintln!("loadgen: cannot start the client: {e}");
            return ExitCode::from(2);
        }
    };

    let sessions = connections as u64;
    let mut complete = wait_until(base + warm_end, &shared, sessions);
    let before = Sample::take(args.server_pid);
    complete = complete && wait_until(base + end, &shared, sessions);
    let after = Sample::take(args.server_pid);
    if complete && args.rate.is_some() {
        // Give the messages of the window time to come back; what has not by then is recorded
        // as late by at least this long.
        wait_until(
            Instant::now() + Duration::from_millis(args.drain_ms),
            &shared,
            sessions,
        );
    }
    shared.stopping.store(true, Relaxed);
    client.stop();
    if let Err(e) = client.join() {
        eprintln!("loadgen: the client stopped with an error: {e}");
    }
    if !complete {
        eprintln!("loadgen: every connection closed before the end of the run");
    }
    report_run(args, &shared, connections, &before, &after)
}

/// What the client counted in the measured window, and the rates that follow.
struct Tally {
    msgs: u64,
    mismatches: u64,
    unexpected: u64,
    early_closes: u64,
    connect_errors: u64,
    unanswered: u64,
    /// Every kind of error above, together.
    errors: u64,
    /// The measured window, in seconds.
    window: f64,
    msgs_per_sec: f64,
    /// The client's own CPU use, in cores.
    client_cpu: f64,
}

impl Tally {
    fn new(args: &RunArgs, shared: &Shared, before: &Sample, after: &Sample) -> Tally {
        let t = &shared.totals;
        let msgs = t.msgs.load(Relaxed);
        let (mismatches, unexpected) = (t.mismatches.load(Relaxed), t.unexpected.load(Relaxed));
        let (early, connect) = (t.early_closes.load(Relaxed), t.connect_errors.load(Relaxed));
        let window = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        Tally {
            msgs,
            mismatches,
            unexpected,
            early_closes: early,
            connect_errors: connect,
            unanswered: t.unanswered.load(Relaxed),
            errors: mismatches + unexpected + early + connect,
            window,
            msgs_per_sec: msgs as f64 / args.duration,
            client_cpu: (after.own.saturating_sub(before.own)).as_secs_f64() / window,
        }
    }
}

/// Prints the tables and the JSON line, writes the histogram files; returns the exit code.
fn report_run(
    args: &RunArgs,
    shared: &Shared,
    connections: usize,
    before: &Sample,
    after: &Sample,
) -> ExitCode {
    let tally = Tally::new(args, shared, before, after);
    let latency = shared.latency.snapshot();
    let mut line = serde_json::Map::new();
    print_latency(args, shared, connections, &latency, &mut line);
    print_throughput(args, &tally);
    run_fields(args, connections, &tally, &latency, &mut line);
    server_cpu(before, after, &tally, &mut line);
    cpu_busy(args, before, after, &tally, &mut line);
    write_histograms(args, &latency);
    println!("{}", Value::Object(line));
    if args.strict && tally.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The run's description and its latency tables (for an open loop, also the latency from the
/// actual send and the send lag, whose percentiles go into `line`).
fn print_latency(
    args: &RunArgs,
    shared: &Shared,
    connections: usize,
    latency: &Histogram<u64>,
    line: &mut serde_json::Map<String, Value>,
) {
    let open = args.rate.is_some();
    println!(
        "loadgen {}{}: {} loop, {connections} connections{}, {} B {:?}, {} s after {} s of warm-up",
        args.label,
        args.case
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default(),
        if open { "open" } else { "closed" },
        match args.rate {
            Some(rate) => format!(" at {rate} msgs/s in all"),
            None => format!(" x {} in flight", args.depth),
        },
        args.size,
        args.framing,
        args.duration,
        args.warmup
    );
    println!(
        "latency{}:\n{}",
        if open {
            " from each message's intended send time"
        } else {
            ""
        },
        report::table(latency)
    );
    if open {
        let service = shared.service.snapshot();
        let lag = shared.lag.snapshot();
        println!("latency from the actual send:\n{}", report::table(&service));
        println!(
            "send lag (actual - intended send time):\n{}",
            report::table(&lag)
        );
        latency_fields("service_", &service, line);
        latency_fields("lag_", &lag, line);
    }
}

/// Messages, throughput, client CPU and errors.
fn print_throughput(args: &RunArgs, tally: &Tally) {
    let Tally {
        msgs,
        mismatches,
        unexpected,
        early_closes: early,
        connect_errors: connect,
        errors,
        msgs_per_sec,
        client_cpu,
        ..
    } = *tally;
    println!(
        "{msgs} messages: {:.0} msgs/s, {:.2} MB/s; client CPU {client_cpu:.2} cores; errors {errors} \
         ({mismatches} mismatched, {unexpected} unexpected, {early} closed early, {connect} connect failures)",
        msgs_per_sec,
        msgs_per_sec * args.size as f64 / 1e6
    );
    if args.rate.is_some() {
        println!(
            "unanswered at the end (recorded as late): {}",
            tally.unanswered
        );
    }
}

/// The JSON fields that describe the run and what the client counted.
fn run_fields(
    args: &RunArgs,
    connections: usize,
    tally: &Tally,
    latency: &Histogram<u64>,
    line: &mut serde_json::Map<String, Value>,
) {
    let open = args.rate.is_some();
    line.insert("label".into(), json!(args.label));
    if let Some(case) = &args.case {
        line.insert("case".into(), json!(case));
    }
    if let Some(r) = args.round {
        line.insert("round".into(), json!(r));
    }
    line.insert("mode".into(), json!(if open { "open" } else { "closed" }));
    line.insert(
        "framing".into(),
        json!(format!("{:?}", args.framing).to_lowercase()),
    );
    line.insert("connections".into(), json!(connections));
    line.insert("depth".into(), json!(args.depth));
    line.insert("size".into(), json!(args.size));
    if let Some(rate) = args.rate {
        line.insert("rate".into(), json!(rate));
    }
    line.insert("duration_s".into(), json!(args.duration));
    line.insert("warmup_s".into(), json!(args.warmup));
    line.insert("client_cpus".into(), json!(args.cpus));
    line.insert("msgs".into(), json!(tally.msgs));
    line.insert("msgs_per_sec".into(), json!(round(tally.msgs_per_sec, 1)));
    line.insert(
        "mb_per_sec".into(),
        json!(round(tally.msgs_per_sec * args.size as f64 / 1e6, 3)),
    );
    latency_fields("", latency, line);
    line.insert("errors".into(), json!(tally.errors));
    line.insert("mismatches".into(), json!(tally.mismatches));
    line.insert("unexpected".into(), json!(tally.unexpected));
    line.insert("early_closes".into(), json!(tally.early_closes));
    line.insert("connect_errors".into(), json!(tally.connect_errors));
    if open {
        line.insert("unanswered".into(), json!(tally.unanswered));
    }
    line.insert("client_cpu".into(), json!(round(tally.client_cpu, 3)));
}

/// The server process's CPU use (when its pid was given) and everything else's on the machine.
fn server_cpu(
    before: &Sample,
    after: &Sample,
    tally: &Tally,
    line: &mut serde_json::Map<String, Value>,
) {
    let (msgs, window) = (tally.msgs, tally.window);
    if let (Some(a), Some(b)) = (before.server, after.server) {
        let cpu = b.saturating_sub(a).as_secs_f64();
        line.insert("server_cpu".into(), json!(round(cpu / window, 3)));
        if msgs > 0 {
            line.insert(
                "server_ns_per_msg".into(),
                json!(round(cpu * 1e9 / msgs as f64, 1)),
            );
        }
        println!(
            "server CPU {:.2} cores, {:.0} ns per message",
            cpu / window,
            cpu * 1e9 / msgs.max(1) as f64
        );
    }
    let others = sysinfo::others_between(&before.others, &after.others, false) / window;
    line.insert("others_cpu".into(), json!(round(others, 3)));
    let kthreads = sysinfo::others_between(&before.others, &after.others, true) / window;
    line.insert("kthreads_cpu".into(), json!(round(kthreads, 3)));
    println!("kernel threads (ksoftirqd, kworkers, ...) used {kthreads:.2} cores");
    if others > 0.05 {
        println!(
            "other processes used {others:.2} cores during the window: figures may be disturbed"
        );
    }
}

/// How busy the client's and the server's CPUs were, and on what (softirq, steal, ...).
fn cpu_busy(
    args: &RunArgs,
    before: &Sample,
    after: &Sample,
    tally: &Tally,
    line: &mut serde_json::Map<String, Value>,
) {
    let mut watched: Vec<usize> = args.cpus.clone();
    watched.extend(&args.server_cpus);
    watched.sort_unstable();
    watched.dedup();
    let busy = sysinfo::busy_between(&before.cpus, &after.cpus, &watched);
    let mean_busy = |cpus: &[usize]| {
        let v: Vec<f64> = cpus.iter().filter_map(|c| busy.get(c)).copied().collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    line.insert(
        "cpu_busy".into(),
        Value::Object(
            busy.iter()
                .map(|(cpu, b)| (cpu.to_string(), json!(round(*b, 4))))
                .collect(),
        ),
    );
    let detail = sysinfo::breakdown_between(&before.cpus, &after.cpus, &watched);
    line.insert(
        "cpu_detail".into(),
        Value::Object(
            detail
                .iter()
                .map(|(cpu, parts)| {
                    let parts = parts
                        .iter()
                        .map(|(name, v)| (name.to_string(), json!(round(*v, 4))))
                        .collect();
                    (cpu.to_string(), Value::Object(parts))
                })
                .collect(),
        ),
    );
    let mean_part = |cpus: &[usize], part: usize| {
        let v: Vec<f64> = cpus
            .iter()
            .filter_map(|c| detail.get(c))
            .map(|p| p[part].1)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    // Indexes into a breakdown: softirq 3, steal 4.
    for (name, cpus) in [("server", &args.server_cpus), ("client", &args.cpus)] {
        for (part, index) in [("softirq", 3), ("steal", 4)] {
            if let Some(v) = mean_part(cpus, index) {
                line.insert(format!("{name}_cpus_{part}"), json!(round(v, 4)));
            }
        }
    }
    if let Some(b) = mean_busy(&args.cpus) {
        line.insert("client_cpus_busy".into(), json!(round(b, 4)));
    }
    if !args.server_cpus.is_empty() {
        line.insert("server_cpus".into(), json!(args.server_cpus));
        if let Some(b) = mean_busy(&args.server_cpus) {
            line.insert("server_cpus_busy".into(), json!(round(b, 4)));
            if tally.msgs > 0 {
                // Everything the server's CPUs did (softirq work included) per message.
                let busy_ns = b * args.server_cpus.len() as f64 * tally.window * 1e9;
                line.insert(
                    "server_cpus_busy_ns_per_msg".into(),
                    json!(round(busy_ns / tally.msgs as f64, 1)),
                );
            }
        }
    }
    for (cpu, parts) in &detail {
        let parts: Vec<String> = parts
            .iter()
            .map(|(name, v)| format!("{name} {:.1}%", v * 100.0))
            .collect();
        println!(
            "cpu{cpu}: busy {:.1}% ({})",
            busy.get(cpu).copied().unwrap_or(0.0) * 100.0,
            parts.join(", ")
        );
    }
}

/// The `.hgrm` and histogram-log files, where asked for.
fn write_histograms(args: &RunArgs, latency: &Histogram<u64>) {
    if let Some(path) = &args.hgrm {
        if let Err(e) = write_hgrm(path, latency) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
        }
    }
    if let Some(path) = &args.hist_out {
        if let Err(e) = histfile::write(path, latency) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
        }
    }
}

fn write_hgrm(path: &Path, hist: &Histogram<u64>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    report::write_hgrm(hist, &mut out)?;
    out.flush()
}
