//! CPU time and memory as the kernel accounts them: this process's own CPU (getrusage), another
//! process's CPU (`/proc/PID/stat`), each CPU's busy time (`/proc/stat`), and the open-file
//! limit that thousands of connections need.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::time::Duration;

/// User plus system CPU time of this process, all threads together.
pub fn own_cpu() -> Duration {
    // SAFETY: `getrusage` writes one `rusage`, which lives on this stack frame.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Clock ticks per second of `/proc`'s CPU times (USER_HZ).
fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// User plus system CPU time of process `pid`, all threads together (10 ms resolution).
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `fields[0]` is field 3 (state).
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_nanos(
        total * 1_000_000_000 / ticks_per_sec(),
    ))
}

/// CPU time of every process but `except`, by pid, in clock ticks: what else ran on the
/// machine. Kernel threads come apart (pid marked by `kthread`), as some of them do the network
/// work of the run (ksoftirqd takes over softirq processing when it piles up).
pub fn other_processes(except: &[u32]) -> BTreeMap<(bool, u32), u64> {
    let mut times = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return times;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if except.contains(&pid) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        const PF_KTHREAD: u64 = 0x0020_0000;
        let Some(flags) = num(6) else {
            continue;
        };
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            times.insert((flags & PF_KTHREAD != 0, pid), u + s);
        }
    }
    times
}

/// CPU seconds the user processes (`kthreads` false) or kernel threads (true) of
/// [`other_processes`] used between two readings (a process that started in between counts
/// in full; one that ended is missed).
pub fn others_between(
    before: &BTreeMap<(bool, u32), u64>,
    after: &BTreeMap<(bool, u32), u64>,
    kthreads: bool,
) -> f64 {
    let ticks: u64 = after
        .iter()
        .filter(|((k, _), _)| *k == kthreads)
        .map(|(key, t)| t.saturating_sub(before.get(key).copied().unwrap_or(0)))
        .sum();
    ticks as f64 / ticks_per_sec() as f64
}

/// Resident memory of process `pid`, in KiB (`VmRSS`).
pub fn process_rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/PID/status"))
}

/// Busy and total time of one CPU, in clock ticks since boot, with the parts of busy time
/// that are not charged to any process (softirq) or not this machine's at all (steal).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
    pub user: u64,
    pub system: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// Every CPU's times from `/proc/stat`, by CPU number. Busy is everything but idle and iowait
/// (user, nice, system, irq, softirq, steal); guest time is already inside user.
pub fn cpu_ticks() -> io::Result<BTreeMap<usize, CpuTicks>> {
    let stat = fs::read_to_string("/proc/stat")?;
    let mut cpus = BTreeMap::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(cpu)) = parts.next().map(str::parse::<usize>) else {
            continue; // the "cpu" line of all CPUs together
        };
        let v: Vec<u64> = parts.take(8).filter_map(|f| f.parse().ok()).collect();
        if v.len() < 8 {
            continue;
        }
        let total: u64 = v.iter().sum();
        let idle = v[3] + v[4];
        cpus.insert(
            cpu,
            CpuTicks {
                busy: total - idle,
                total,
                user: v[0] + v[1],
                system: v[2],
                irq: v[5],
                softirq: v[6],
                steal: v[7],
            },
        );
    }
    Ok(cpus)
}

/// The busy fraction of each of `cpus` between two readings of [`cpu_ticks`].
pub fn busy_between(
    before: &BTreeMap<usize, CpuTicks>,
    after: &BTreeMap<usize, CpuTicks>,
    cpus: &[usize],
) -> BTreeMap<usize, f64> {
    cpus.iter()
        .filter_map(|cpu| {
            let (a, b) = (before.get(cpu)?, after.get(cpu)?);
            let total = b.total.saturating_sub(a.total);
            (total > 0).then(|| (*cpu, b.busy.saturating_sub(a.busy) as f64 / total as f64))
        })
        .collect()
}

/// How each of `cpus` spent the time between two readings of [`cpu_ticks`], as fractions:
/// user (nice included), system, irq, softirq, steal (another guest ran: the hypervisor's
/// doing) and idle (iowait included).
pub fn breakdown_between(
    before: &BTreeMap<usize, CpuTicks>,
    after: &BTreeMap<usize, CpuTicks>,
    cpus: &[usize],
) -> BTreeMap<usize, [(&'static str, f64); 6]> {
    cpus.iter()
        .filter_map(|cpu| {
            let (a, b) = (before.get(cpu)?, after.get(cpu)?);
            let total = b.total.saturating_sub(a.total);
            if total == 0 {
                return None;
            }
            let f = |x: u64, y: u64| y.saturating_sub(x) as f64 / total as f64;
            let busy = f(a.busy, b.busy);
            Some((
                *cpu,
                [
                    ("user", f(a.user, b.user)),
                    ("system", f(a.system, b.system)),
                    ("irq", f(a.irq, b.irq)),
                    ("softirq", f(a.softirq, b.softirq)),
                    ("steal", f(a.steal, b.steal)),
                    ("idle", 1.0 - busy),
                ],
            ))
        })
        .collect()
}

/// Raises this process's open-file soft limit to its hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: get/setrlimit read and write one `rlimit` on this stack frame.
    unsafe {
        let mut lim = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(process_cpu(pid).is_ok());
        assert!(process_rss_kib(pid).unwrap() > 0);
        let cpus = cpu_ticks().unwrap();
        assert!(cpus.contains_key(&0));
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        assert!(own_cpu() >= Duration::from_millis(10));
    }
}
