//! The benchmark's summary: markdown tables of medians over rounds (with each figure's ratio to
//! the baseline server), the spread over rounds, the idle-connection figures, and the targets.
//!
//! Reads `runs.jsonl` (one `loadgen` JSON line per run, with `label`, `case` and `round`) and,
//! if present, `idle.jsonl` (one `loadgen idle` JSON line per server) from a results folder.
//! Case names with targets: `raw64`, `raw4k`, `len32-512`, `low-load`, `half-max`.

use std::fmt::Write;
use std::fs;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use super::SummarizeArgs;

/// Servers in the order the tables list them; others follow in order of appearance.
const ORDER: [&str; 5] = [
    "ringwire",
    "ringwire-epoll",
    "floor",
    "tokio",
    "tokio-uring",
];

fn read_lines(path: &Path) -> Vec<Value> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A field of a run; `server_cpus_ran_busy` is derived: the busy fraction of the server's CPUs
/// over the time they ran (steal time, when the hypervisor ran another guest, left out).
fn value(run: &Value, field: &str) -> Option<f64> {
    if field == "server_cpus_ran_busy" {
        let busy = run.get("server_cpus_busy")?.as_f64()?;
        let steal = run.get("server_cpus_steal")?.as_f64()?;
        return (steal < 1.0).then(|| (busy - steal) / (1.0 - steal));
    }
    run.get(field)?.as_f64()
}

/// One server's runs of one case.
struct Runs<'a> {
    label: String,
    /// The runs the figures come from: the undisturbed ones, if there are any.
    runs: Vec<&'a Value>,
    /// Runs made, disturbed ones included.
    made: usize,
    /// Every run was disturbed; the figures come from all of them.
    disturbed: bool,
}

impl Runs<'_> {
    fn values(&self, field: &str) -> Vec<f64> {
        self.runs.iter().filter_map(|r| value(r, field)).collect()
    }

    fn median(&self, field: &str) -> Option<f64> {
        median(self.values(field))
    }

    fn range(&self, field: &str) -> Option<(f64, f64)> {
        let v = self.values(field);
        let lo = v.iter().copied().reduce(f64::min)?;
        let hi = v.iter().copied().reduce(f64::max)?;
        Some((lo, hi))
    }
}

/// A number with about four significant figures: 512.3k, 40.12, 1.234M.
fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.3}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The columns of a case's table: heading, field, formatter, whether a ratio makes sense.
type Column = (&'static str, &'static str, fn(f64) -> String, bool);

const CLOSED: &[Column] = &[
    ("msgs/s", "msgs_per_sec", num, true),
    ("MB/s", "mb_per_sec", num, true),
    ("p50 µs", "p50_us", num, true),
    ("p99 µs", "p99_us", num, true),
    ("p99.9 µs", "p999_us", num, true),
    ("server ns/msg", "server_ns_per_msg", num, true),
    ("server CPU", "server_cpu", pct, true),
    ("server CPUs busy", "server_cpus_busy", pct, false),
    ("busy of time ran", "server_cpus_ran_busy", pct, false),
    ("busy ns/msg", "server_cpus_busy_ns_per_msg", num, true),
    ("client CPU", "client_cpu", pct, false),
    ("client CPUs busy", "client_cpus_busy", pct, false),
    ("others", "others_cpu", pct, false),
    ("kthreads", "kthreads_cpu", pct, false),
    ("steal", "server_cpus_steal", pct, false),
    ("errors", "errors", num, false),
];

const OPEN_EXTRA: &[Column] = &[
    ("p99 from send µs", "service_p99_us", num, true),
    ("send lag p99 µs", "lag_p99_us", num, false),
];

/// Groups the runs by (case, server cores) in order of appearance, then by server. A server's
/// disturbed runs (other processes used more than `max_others` cores, or the hypervisor stole
/// more than `max_steal` of the server's or the client's CPUs) are left out of its figures,
/// unless all of its runs were disturbed.
fn group(runs: &[Value], max_others: f64, max_steal: f64) -> Vec<((String, usize), Vec<Runs<'_>>)> {
    let mut cases: Vec<((String, usize), Vec<Runs<'_>>)> = Vec::new();
    for run in runs {
        let case = run["case"].as_str().unwrap_or("-").to_string();
        let cores = run["server_cpus"].as_array().map_or(1, Vec::len);
        let label = run["label"].as_str().unwrap_or("?").to_string();
        let key = (case, cores);
        let idx = match cases.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                cases.push((key, Vec::new()));
                cases.len() - 1
            }
        };
        let servers = &mut cases[idx].1;
        match servers.iter_mut().find(|s| s.label == label) {
            Some(s) => s.runs.push(run),
            None => servers.push(Runs {
                label,
                runs: vec![run],
                made: 0,
                disturbed: false,
            }),
        }
    }
    for (_, servers) in &mut cases {
        for s in servers.iter_mut() {
            s.made = s.runs.len();
            let quiet = |r: &&Value| {
                let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
                f("others_cpu") <= max_others
                    && f("server_cpus_steal") <= max_steal
                    && f("client_cpus_steal") <= max_steal
            };
            if s.runs.iter().any(quiet) {
                s.runs.retain(quiet);
            } else {
                s.disturbed = true;
            }
        }
        servers.sort_by_key(|s| ORDER.iter().position(|o| *o == s.label).unwrap_or(99));
    }
    cases
}

fn describe(run: &Value) -> String {
    let conns = &run["connections"];
    let size = &run["size"];
    let framing = run["framing"].as_str().unwrap_or("?");
    match run.get("rate").and_then(Value::as_f64) {
        Some(rate) => format!(
            "open loop at {} msgs/s, {conns} connections, {size} B {framing}",
            num(rate)
        ),
        None => format!(
            "closed loop, {conns} connections x {} in flight, {size} B {framing}",
            run["depth"]
        ),
    }
}

fn case_table(
    out: &mut String,
    (case, cores): &(String, usize),
    servers: &[Runs<'_>],
    baseline: &str,
) {
    let first = servers[0].runs[0];
    let open = first.get("rate").is_some();
    let columns: Vec<&Column> = CLOSED
        .iter()
        .chain(if open { OPEN_EXTRA } else { &[] })
        .collect();
    let base = servers.iter().find(|s| s.label == baseline);
    let _ = writeln!(
        out,
        "\n### {case}, {cores} server core{}: {}\n",
        if *cores == 1 { "" } else { "s" },
        describe(first)
    );
    let _ = write!(out, "| server | rounds |");
    for (head, ..) in &columns {
        let _ = write!(out, " {head} |");
    }
    let _ = write!(out, "\n|---|---|");
    for _ in &columns {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for s in servers {
        let rounds = if s.disturbed {
            format!("0/{} (all disturbed)", s.made)
        } else {
            format!("{}/{}", s.runs.len(), s.made)
        };
        let _ = write!(out, "| {} | {rounds} |", s.label);
        for (_, field, fmt, ratio) in &columns {
            let cell = match s.median(field) {
                None => "-".to_string(),
                Some(v) => {
                    let against = base.and_then(|b| b.median(field)).filter(|b| *b != 0.0);
                    match against {
                        Some(b) if *ratio && s.label != baseline => {
                            format!("{} (×{:.2})", fmt(v), v / b)
                        }
                        _ => fmt(v),
                    }
                }
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nSpread over rounds (min–max):\n\n| server | msgs/s | p50 µs | p99 µs | p99.9 µs | server ns/msg | server CPUs busy |\n|---|---|---|---|---|---|---|"
    );
    for s in servers {
        let _ = write!(out, "| {} |", s.label);
        for (field, fmt) in [
            ("msgs_per_sec", num as fn(f64) -> String),
            ("p50_us", num),
            ("p99_us", num),
            ("p999_us", num),
            ("server_ns_per_msg", num),
            ("server_cpus_busy", pct),
        ] {
            let cell = s
                .range(field)
                .map_or("-".into(), |(lo, hi)| format!("{}–{}", fmt(lo), fmt(hi)));
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
}

/// A target line: the figure, the bound and whether it was met.
fn target(out: &mut String, what: &str, value: Option<f64>, bound: f64, at_most: bool) {
    let (verdict, shown) = match value {
        None => ("not measured", "-".to_string()),
        Some(v) => {
            let met = if at_most { v <= bound } else { v >= bound };
            (if met { "met" } else { "MISSED" }, format!("{v:.3}"))
        }
    };
    let op = if at_most { "≤" } else { "≥" };
    let _ = writeln!(out, "| {what} | {shown} | {op} {bound} | {verdict} |");
}

/// The echo benchmark's targets, checked for each core count whose case ran: what, case,
/// field, the server ringwire is compared with, the bound, and whether it is an upper bound.
const TARGETS: &[(&str, &str, &str, &str, f64, bool)] = &[
    (
        "raw64 msgs/s vs tokio",
        "raw64",
        "msgs_per_sec",
        "tokio",
        1.05,
        false,
    ),
    (
        "len32-512 msgs/s vs tokio",
        "len32-512",
        "msgs_per_sec",
        "tokio",
        1.05,
        false,
    ),
    (
        "raw4k msgs/s vs tokio",
        "raw4k",
        "msgs_per_sec",
        "tokio",
        1.0,
        false,
    ),
    (
        "raw64 server CPU/msg vs tokio",
        "raw64",
        "server_ns_per_msg",
        "tokio",
        0.9,
        true,
    ),
    (
        "raw64 server CPU/msg vs floor",
        "raw64",
        "server_ns_per_msg",
        "floor",
        1.05,
        true,
    ),
    (
        "low-load p99 vs tokio",
        "low-load",
        "p99_us",
        "tokio",
        1.1,
        true,
    ),
    (
        "low-load p99 from actual send vs tokio",
        "low-load",
        "service_p99_us",
        "tokio",
        1.1,
        true,
    ),
    (
        "low-load server CPU vs tokio",
        "low-load",
        "server_cpu",
        "tokio",
        1.0,
        true,
    ),
];

fn targets(out: &mut String, cases: &[((String, usize), Vec<Runs<'_>>)], idle: &[Value]) {
    let find = |case: &str, cores: usize, label: &str, field: &str| -> Option<f64> {
        let (_, servers) = cases.iter().find(|((c, n), _)| c == case && *n == cores)?;
        servers.iter().find(|s| s.label == label)?.median(field)
    };
    let ratio = |case: &str, cores, field: &str, against: &str| {
        Some(find(case, cores, "ringwire", field)? / find(case, cores, against, field)?)
    };
    let mut core_counts: Vec<usize> = cases.iter().map(|((_, n), _)| *n).collect();
    core_counts.sort_unstable();
    core_counts.dedup();
    let _ = writeln!(
        out,
        "\n## Targets (medians; ratios are ringwire over the named server)\n\n| target | measured | bound | verdict |\n|---|---|---|---|"
    );
    for &n in &core_counts {
        for &(what, case, field, against, bound, at_most) in TARGETS {
            if find(case, n, "ringwire", "msgs_per_sec").is_some() {
                let what = format!("{what}, {n} core{}", if n == 1 { "" } else { "s" });
                target(out, &what, ratio(case, n, field, against), bound, at_most);
            }
        }
    }
    for line in idle {
        let label = line["label"].as_str().unwrap_or("?");
        if label != "ringwire" {
            continue;
        }
        let conns = &line["connections"];
        let per_conn = line["rss_per_conn_bytes"].as_f64();
        let what = format!("{label}: RSS bytes per idle connection ({conns})");
        target(out, &what, per_conn, 2048.0, true);
        let idle_cpu = line["server_idle_cpu"].as_f64().map(|c| c * 100.0);
        let what = format!("{label}: % of a core while {conns} connections idle");
        target(out, &what, idle_cpu, 1.0, true);
    }
    let _ = writeln!(
        out,
        "\nServer CPUs busy in the closed-loop cases (median of the busy fraction over the time the CPUs ran, steal left out; the load generator should keep every server's core at least 95% busy):\n"
    );
    for ((case, n), servers) in cases {
        let closed = servers
            .first()
            .is_some_and(|s| s.runs[0].get("rate").is_none());
        if !closed {
            continue;
        }
        let cells: Vec<String> = servers
            .iter()
            .map(|s| {
                let busy = s
                    .median("server_cpus_ran_busy")
                    .or_else(|| s.median("server_cpus_busy"));
                let mark = if busy.is_some_and(|b| b >= 0.95) {
                    ""
                } else {
                    " (under 95%)"
                };
                format!("{} {}{mark}", s.label, busy.map_or("-".into(), pct))
            })
            .collect();
        let _ = writeln!(out, "- {case}, {n} core(s): {}", cells.join(", "));
    }
}

fn idle_table(out: &mut String, idle: &[Value]) {
    if idle.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Idle connections\n\n| server | connections | RSS before KiB | RSS holding KiB | RSS bytes/conn | idle CPU (% of a core) | sockstat while holding |\n|---|---|---|---|---|---|---|"
    );
    for line in idle {
        let f = |k: &str| line.get(k).and_then(Value::as_f64);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            line["label"].as_str().unwrap_or("?"),
            line["echoed"],
            f("server_rss_before_kib").map_or("-".into(), |v| format!("{v:.0}")),
            f("server_rss_kib").map_or("-".into(), |v| format!("{v:.0}")),
            f("rss_per_conn_bytes").map_or("-".into(), |v| format!("{v:.0}")),
            f("server_idle_cpu").map_or("-".into(), |v| format!("{:.3}", v * 100.0)),
            line["sockstat"].as_str().unwrap_or("")
        );
    }
}

/// Prints the summary of a results folder as markdown.
pub fn summarize(args: &SummarizeArgs) -> ExitCode {
    let runs = read_lines(&args.dir.join("runs.jsonl"));
    let idle = read_lines(&args.dir.join("idle.jsonl"));
    if runs.is_empty() && idle.is_empty() {
        eprintln!(
            "loadgen summarize: no runs.jsonl or idle.jsonl lines in {}",
            args.dir.display()
        );
        return ExitCode::FAILURE;
    }
    let cases = group(&runs, args.max_others, args.max_steal);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Echo throughput and latency\n\nMedians over rounds; (×r) is the ratio to {} (for latency and CPU, lower is better). \
         Rounds: undisturbed runs / runs made; a run is disturbed when other processes used more than {} of a core \
         during its window (column \"others\") or the hypervisor stole more than {} of the server's or the client's CPUs \
         (column \"steal\"), and is left out of the figures unless all of a server's runs were. \
         Server ns/msg: the server process's CPU (utime+stime) per message; busy ns/msg: all the busy time of the server's CPUs \
         (softirq included) per message.",
        args.baseline, args.max_others, args.max_steal
    );
    for (key, servers) in &cases {
        case_table(&mut out, key, servers, &args.baseline);
    }
    idle_table(&mut out, &idle);
    targets(&mut out, &cases, &idle);
    print!("{out}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn tables_and_targets_from_lines() {
        let lines: Vec<Value> = [
            r#"{"label":"ringwire","case":"raw64","round":1,"connections":50,"depth":8,"size":64,"framing":"raw","msgs_per_sec":110.0,"server_ns_per_msg":80.0,"server_cpus":[0]}"#,
            r#"{"label":"tokio","case":"raw64","round":1,"connections":50,"depth":8,"size":64,"framing":"raw","msgs_per_sec":100.0,"server_ns_per_msg":100.0,"server_cpus":[0]}"#,
            r#"{"label":"floor","case":"raw64","round":1,"connections":50,"depth":8,"size":64,"framing":"raw","msgs_per_sec":120.0,"server_ns_per_msg":78.0,"server_cpus":[0]}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let cases = group(&lines, 0.1, 0.05);
        assert_eq!(cases.len(), 1);
        let mut out = String::new();
        case_table(&mut out, &cases[0].0, &cases[0].1, "tokio");
        assert!(out.contains("| ringwire | 1/1 | 110 (×1.10) |"), "{out}");
        targets(&mut out, &cases, &[]);
        assert!(
            out.contains("raw64 msgs/s vs tokio, 1 core | 1.100 | ≥ 1.05 | met"),
            "{out}"
        );
        assert!(out.contains("raw64 server CPU/msg vs floor, 1 core | 1.026 | ≤ 1.05 | met"));
    }
}
