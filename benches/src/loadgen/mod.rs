//! The load generator's command line and its subcommands: a load run (the default), holding
//! idle connections, plotting saved histograms, summarising a benchmark's results, and plain
//! socket load over TCP or a Unix socket.

mod handler;
mod histfile;
mod idle;
mod plain;
mod run;
mod summary;
mod sysinfo;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ringwire::report;
use ringwire_bench::Framing;

/// Load generator for echo servers, built on ringwire's own client.
///
/// Without a subcommand it runs load (as `loadgen run`).
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Closed-loop or open-loop load on an echo server (the default).
    Run(RunArgs),
    /// Open many connections, echo once on each, and hold them idle until SIGTERM.
    Idle(IdleArgs),
    /// Plot histogram files (from --hist-out) together as one SVG.
    Plot(PlotArgs),
    /// Markdown tables, ratios and target checks from a benchmark's results folder.
    Summarize(SummarizeArgs),
    /// Wait until the given CPUs are nearly idle (other work would disturb a run).
    Quiet(QuietArgs),
    /// Closed-loop raw echo load from one thread with plain sockets and epoll, over TCP or a
    /// Unix socket: a transport comparison with one loop for both, and a cross-check of `run`.
    Plain(plain::PlainArgs),
}

/// A load run.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The echo server's TCP address (unless `--unix`).
    #[arg(long, conflicts_with = "unix", default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,
    /// The echo server's Unix socket (a path, or `@name`), instead of `--addr`.
    #[arg(long)]
    pub unix: Option<std::path::PathBuf>,
    /// Connections in all, split evenly over the client's CPUs.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Closed loop: messages in flight per connection (pipelining).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window; nothing is recorded or counted in them.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// CPUs of the client: one ringwire client worker pinned to each, e.g. 1 or 8,9,10.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub cpus: Vec<usize>,
    /// raw: a stream cut into --size byte messages; len32: 4-byte length-prefixed frames.
    #[arg(long, value_enum, default_value = "raw")]
    pub framing: Framing,
    /// Open loop: messages per second in all, each connection on a fixed schedule; latency
    /// counts from each message's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: how often each connection sends what has come due, in microseconds. The
    /// engine puts the ticks of one period on one grid, so a core's connections send together:
    /// one wake-up per tick for all of them.
    #[arg(long, default_value_t = 250)]
    pub tick_us: u64,
    /// Open loop: how long to wait for the window's last echoes after it ends, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub drain_ms: u64,
    /// Write the latency histogram as HdrHistogram percentile text (.hgrm).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write the latency histogram in the format `loadgen plot` reads.
    #[arg(long)]
    pub hist_out: Option<PathBuf>,
    /// The server's name, carried into the JSON line.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// The case's name, carried into the JSON line.
    #[arg(long)]
    pub case: Option<String>,
    /// The round's number, carried into the JSON line.
    #[arg(long)]
    pub round: Option<u32>,
    /// The server's process: report its CPU time over the measured window.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's CPUs: report how busy they were over the measured window.
    #[arg(long, value_delimiter = ',')]
    pub server_cpus: Vec<usize>,
    /// Exit non-zero if there were errors.
    #[arg(long)]
    pub strict: bool,
}

impl RunArgs {
    fn check(&self) -> Result<(), String> {
        if self.connections == 0 || self.size == 0 || self.depth == 0 {
            return Err("--connections, --size and --depth must be positive".into());
        }
        if self.cpus.is_empty() {
            return Err("--cpus needs at least one CPU".into());
        }
        if !self.duration.is_finite()
            || self.duration <= 0.0
            || self.warmup.is_nan()
            || self.warmup < 0.0
        {
            return Err("--duration must be positive and --warmup not negative".into());
        }
        if self.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
            return Err("--rate must be positive".into());
        }
        Ok(())
    }
}

/// Holding idle connections.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// The echo server's address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connects in flight at most while opening.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// CPUs of the client.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub cpus: Vec<usize>,
    /// Framing of the one message each connection echoes.
    #[arg(long, value_enum, default_value = "raw")]
    pub framing: Framing,
    /// Payload bytes of that message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// After measuring, hold for this many seconds (0: exit), instead of until SIGINT or SIGTERM.
    #[arg(long)]
    pub hold: Option<f64>,
    /// The server's process: report its resident memory per connection and its idle CPU.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds to wait after the last echo before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Seconds over which the server's idle CPU is measured.
    #[arg(long, default_value_t = 10.0)]
    pub measure: f64,
    /// The server's name, carried into the JSON line.
    #[arg(long)]
    pub label: Option<String>,
    /// Give up opening connections after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub setup_timeout: f64,
}

/// Plotting histogram files together.
#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// The plot's title.
    #[arg(long)]
    pub title: String,
    /// The SVG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Runs as LABEL=PATH, PATH a file written by --hist-out; several for one label are merged.
    #[arg(required = true)]
    pub runs: Vec<String>,
}

/// Waiting for a quiet machine.
#[derive(Args, Debug, Clone)]
pub struct QuietArgs {
    /// The CPUs that must be quiet.
    #[arg(long, value_delimiter = ',', required = true)]
    pub cpus: Vec<usize>,
    /// Busy fraction each CPU must stay under for one whole second.
    #[arg(long, default_value_t = 0.05)]
    pub max_busy: f64,
    /// Give up after this many seconds (exit 1).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

/// Samples the CPUs second by second until all of them stay under the threshold for one.
fn quiet(args: &QuietArgs) -> ExitCode {
    let began = std::time::Instant::now();
    let mut before = sysinfo::cpu_ticks().unwrap_or_default();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let after = sysinfo::cpu_ticks().unwrap_or_default();
        let busy = sysinfo::busy_between(&before, &after, &args.cpus);
        let worst = busy.values().copied().fold(0.0, f64::max);
        if worst < args.max_busy {
            return ExitCode::SUCCESS;
        }
        if began.elapsed().as_secs_f64() >= args.timeout {
            eprintln!(
                "loadgen quiet: CPUs still busy after {:.0} s: {busy:?}",
                args.timeout
            );
            return ExitCode::FAILURE;
        }
        before = after;
    }
}

/// Summarising a results folder.
#[derive(Args, Debug, Clone)]
pub struct SummarizeArgs {
    /// The folder with runs.jsonl (and idle.jsonl, if the idle test ran).
    pub dir: PathBuf,
    /// The server every ratio is against.
    #[arg(long, default_value = "tokio")]
    pub baseline: String,
    /// Leave out runs during which other processes used more than this many cores (unless
    /// all of a server's runs in a case did).
    #[arg(long, default_value_t = 0.1)]
    pub max_others: f64,
    /// Leave out runs during which the hypervisor stole more than this fraction of the
    /// server's or the client's CPUs (unless all of a server's runs in a case were).
    #[arg(long, default_value_t = 0.05)]
    pub max_steal: f64,
}

/// Plots the runs (histograms of one label merged) on one SVG.
fn plot(args: &PlotArgs) -> ExitCode {
    let mut runs: Vec<(String, report::Histogram<u64>)> = Vec::new();
    for spec in &args.runs {
        let Some((label, path)) = spec.split_once('=') else {
            eprintln!("loadgen plot: {spec:?} is not LABEL=PATH");
            return ExitCode::from(2);
        };
        let hist = match histfile::read(std::path::Path::new(path)) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("loadgen plot: {e}");
                return ExitCode::from(2);
            }
        };
        match runs.iter_mut().find(|(l, _)| l == label) {
            Some((_, total)) => *total = report::merge([&*total, &hist]),
            None => runs.push((label.to_string(), hist)),
        }
    }
    let refs: Vec<(&str, &report::Histogram<u64>)> =
        runs.iter().map(|(l, h)| (l.as_str(), h)).collect();
    match std::fs::write(&args.out, report::svg(&args.title, &refs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen plot: cannot write {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}

/// Runs the command line's subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run::run(&cli.run),
        Some(Command::Run(args)) => run::run(&args),
        Some(Command::Idle(args)) => idle::idle(&args),
        Some(Command::Plot(args)) => plot(&args),
        Some(Command::Summarize(args)) => summary::summarize(&args),
        Some(Command::Quiet(args)) => quiet(&args),
        Some(Command::Plain(args)) => plain::plain(&args),
    }
}
