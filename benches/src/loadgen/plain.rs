//! `loadgen plain`: closed-loop raw echo load from one thread with plain non-blocking sockets
//! and epoll, over loopback TCP (`--addr`) or a Unix domain socket (`--unix PATH`).
//!
//! It exists to compare transports with one client: the default `run` (ringwire's client)
//! takes a TCP address only, so a TCP-against-Unix comparison runs both legs through this one
//! loop, whose code is the same for both but for the `connect`. Per turn: one `epoll_wait`,
//! then for each ready connection one read of up to 64 KiB and one write of the messages that
//! read completed (level-triggered, like the epoll driver). Every echoed byte is checked
//! against the single byte all payloads are made of; a short or failed write waits for
//! EPOLLOUT. Messages count when their last byte comes back inside the measured window.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use super::sysinfo::{self, CpuTicks};

/// Every payload byte.
const BYTE: u8 = b'x';
const READ_BUF: usize = 64 * 1024;

/// Plain-socket load.
#[derive(Args, Debug, Clone)]
pub struct PlainArgs {
    /// The echo server's TCP address (unless `--unix`).
    #[arg(long, conflicts_with = "unix", default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,
    /// The echo server's Unix socket path (`@name`: abstract).
    #[arg(long)]
    pub unix: Option<PathBuf>,
    /// Connections in all.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// The CPU this thread is pinned to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// The server's process: report its CPU time over the measured window.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's CPUs: report how busy they were (softirq included) over the window.
    #[arg(long, value_delimiter = ',')]
    pub server_cpus: Vec<usize>,
    /// Carried into the JSON line.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Carried into the JSON line.
    #[arg(long)]
    pub round: Option<u32>,
}

/// One connection's state.
struct Conn {
    fd: OwnedFd,
    /// Bytes of the last, incomplete message received.
    partial: usize,
    /// Bytes owed to the server (messages whose echo completed, to send again), not yet
    /// written because a write fell short.
    owed: usize,
    /// Registered for EPOLLOUT (waiting to write `owed`).
    waiting: bool,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` lives across the call; the kernel copies it.
    cvt(unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) }).map(drop)
}

/// Writes up to `n` payload bytes; returns how many went.
fn write_some(fd: RawFd, src: &[u8], n: usize) -> io::Result<usize> {
    let n = n.min(src.len());
    // SAFETY: `src` holds at least `n` bytes for the call.
    let r = unsafe { libc::send(fd, src.as_ptr().cast(), n, libc::MSG_NOSIGNAL) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn connect(args: &PlainArgs) -> io::Result<OwnedFd> {
    let fd: OwnedFd = match &args.unix {
        Some(path) => {
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
            match bytes.strip_prefix(b"@") {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    UnixStream::connect_addr(&addr)?.into()
                }
                None => UnixStream::connect(path)?.into(),
            }
        }
        None => {
            let s = TcpStream::connect(args.addr)?;
            s.set_nodelay(true)?;
            s.into()
        }
    };
    socket2::SockRef::from(&fd).set_nonblocking(true)?;
    Ok(fd)
}

struct Sample {
    at: Instant,
    own: Duration,
    server: Option<Duration>,
    cpus: BTreeMap<usize, CpuTicks>,
    others: BTreeMap<(bool, u32), u64>,
}

impl Sample {
    fn take(server_pid: Option<u32>) -> Sample {
        Sample {
            at: Instant::now(),
            own: sysinfo::own_cpu(),
            server: server_pid.and_then(|pid| sysinfo::process_cpu(pid).ok()),
            cpus: sysinfo::cpu_ticks().unwrap_or_default(),
            others: sysinfo::other_processes(&[std::process::id(), server_pid.unwrap_or(0)]),
        }
    }
}

/// Counts kept by the loop.
#[derive(Default)]
struct Counts {
    msgs: u64,
    mismatches: u64,
    closed: u64,
}

/// Runs the load and prints a summary line and a JSON line.
pub fn plain(args: &PlainArgs) -> ExitCode {
    if args.connections == 0 || args.depth == 0 || args.size == 0 || args.duration <= 0.0 {
        eprintln!("loadgen plain: --connections, --depth, --size and --duration must be positive");
        return ExitCode::from(2);
    }
    if let Some(cpu) = args.cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            eprintln!("loadgen plain: cannot pin to CPU {cpu}");
        }
    }
    sysinfo::raise_nofile();
    match drive(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen plain: {e}");
            ExitCode::FAILURE
        }
    }
}

fn drive(args: &PlainArgs) -> io::Result<ExitCode> {
    // SAFETY: epoll_create1 takes no pointers.
    let epoll = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: just created, owned by nobody else.
    let epoll: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(epoll) };
    let payload = vec![BYTE; (args.depth * args.size).max(READ_BUF)];
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let fd = connect(args)?;
        epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            libc::EPOLLIN as u32,
            i as u64,
        )?;
        conns.push(Conn {
            fd,
            partial: 0,
            owed: args.depth * args.size,
            waiting: false,
        });
    }
    let mut counts = Counts::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    // The first messages, then the loop.
    for (i, c) in conns.iter_mut().enumerate() {
        send_owed(epoll.as_raw_fd(), i, c, &payload)?;
    }
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let mut before = None;
    let mut now = start;
    while now < end {
        if before.is_none() && now >= warm_end {
            before = Some(Sample::take(args.server_pid));
            counts.msgs = 0;
        }
        // SAFETY: `events` has room for the count passed.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                100,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            if ev.events & libc::EPOLLOUT as u32 != 0 {
                send_owed(epoll.as_raw_fd(), i, c, &payload)?;
            }
            if ev.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                // SAFETY: `buf` has room for the length passed.
                let r =
                    unsafe { libc::recv(c.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if r <= 0 {
                    let e = io::Error::last_os_error();
                    if r < 0 && e.kind() == io::ErrorKind::WouldBlock {
                        continue;
                    }
                    counts.closed += 1;
                    let _ = epoll_ctl(
                        epoll.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        c.fd.as_raw_fd(),
                        0,
                        0,
                    );
                    continue;
                }
                let got = r as usize;
                if buf[..got].iter().any(|&b| b != BYTE) {
                    counts.mismatches += 1;
                }
                let done = (c.partial + got) / args.size;
                c.partial = (c.partial + got) % args.size;
                counts.msgs += done as u64;
                c.owed += done * args.size;
                if !c.waiting {
                    send_owed(epoll.as_raw_fd(), i, c, &payload)?;
                }
            }
        }
        now = Instant::now();
        if counts.closed == conns.len() as u64 {
            break;
        }
    }
    let after = Sample::take(args.server_pid);
    let before = before.unwrap_or_else(|| Sample::take(args.server_pid));
    Ok(report(args, &counts, &before, &after))
}

/// Writes what `c` owes; registers for EPOLLOUT if a write falls short, and leaves it once
/// everything went.
fn send_owed(epoll: RawFd, i: usize, c: &mut Conn, payload: &[u8]) -> io::Result<()> {
    while c.owed > 0 {
        match write_some(c.fd.as_raw_fd(), payload, c.owed) {
            Ok(n) => c.owed -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let want = c.owed > 0;
    if want != c.waiting {
        let events = if want {
            (libc::EPOLLIN | libc::EPOLLOUT) as u32
        } else {
            libc::EPOLLIN as u32
        };
        epoll_ctl(
            epoll,
            libc::EPOLL_CTL_MOD,
            c.fd.as_raw_fd(),
            events,
            i as u64,
        )?;
        c.waiting = want;
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn report(args: &PlainArgs, counts: &Counts, before: &Sample, after: &Sample) -> ExitCode {
    let window = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let msgs_per_sec = counts.msgs as f64 / window;
    let client_cpu = after.own.saturating_sub(before.own).as_secs_f64() / window;
    let transport = if args.unix.is_some() { "unix" } else { "tcp" };
    let mut line = serde_json::Map::new();
    line.insert("label".into(), json!(args.label));
    line.insert("client".into(), json!("plain"));
    line.insert("transport".into(), json!(transport));
    if let Some(r) = args.round {
        line.insert("round".into(), json!(r));
    }
    line.insert("connections".into(), json!(args.connections));
    line.insert("depth".into(), json!(args.depth));
    line.insert("size".into(), json!(args.size));
    line.insert("window_s".into(), json!(round3(window)));
    line.insert("msgs".into(), json!(counts.msgs));
    line.insert("msgs_per_sec".into(), json!(msgs_per_sec.round()));
    line.insert("client_cpu".into(), json!(round3(client_cpu)));
    let mut text = format!(
        "loadgen plain {} over {transport}: {} connections x {} in flight, {} B: {:.0} msgs/s, client CPU {client_cpu:.2}",
        args.label, args.connections, args.depth, args.size, msgs_per_sec
    );
    if let (Some(a), Some(b)) = (before.server, after.server) {
        let cpu = b.saturating_sub(a).as_secs_f64();
        let ns = cpu * 1e9 / counts.msgs.max(1) as f64;
        line.insert("server_cpu".into(), json!(round3(cpu / window)));
        line.insert("server_ns_per_msg".into(), json!(ns.round()));
        text += &format!(", server CPU {:.2} ({ns:.0} ns/msg)", cpu / window);
    }
    if !args.server_cpus.is_empty() {
        let busy = sysinfo::busy_between(&before.cpus, &after.cpus, &args.server_cpus);
        let mean = busy.values().sum::<f64>() / busy.len().max(1) as f64;
        let ns = mean * args.server_cpus.len() as f64 * window * 1e9 / counts.msgs.max(1) as f64;
        line.insert("server_cpus_busy".into(), json!(round3(mean)));
        line.insert("server_cpus_ns_per_msg".into(), json!(ns.round()));
        text += &format!(", server CPUs {:.0}% busy ({ns:.0} ns/msg)", mean * 100.0);
    }
    let others = sysinfo::others_between(&before.others, &after.others, false) / window;
    line.insert("others_cpu".into(), json!(round3(others)));
    line.insert("mismatches".into(), json!(counts.mismatches));
    line.insert("closed".into(), json!(counts.closed));
    text += &format!(
        "; others {others:.2} cores; errors: {} mismatched reads, {} closed",
        counts.mismatches, counts.closed
    );
    println!("{text}");
    println!("{}", Value::Object(line));
    if counts.mismatches + counts.closed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
