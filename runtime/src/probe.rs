//! What the kernel offers, found once per process: can a ring be created, with which setup
//! flags, which operations does it know, and do provided buffer rings, multishot accept and
//! multishot receive work. The server picks its driver from this, and says why.

use std::fmt;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use io_uring::{opcode, Probe as OpProbe};

use crate::buf_ring::BufRing;
use crate::errno;
use crate::op;
use crate::ring::{Completion, Ring};
use crate::user_data::{Op, UserData};

/// Which driver submits and completes a server's I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring where it works, else epoll (the environment variable `RINGWIRE_DRIVER` may
    /// force either).
    #[default]
    Auto,
    /// io_uring; starting fails with the reason where it cannot work.
    IoUring,
    /// epoll.
    Epoll,
}

impl DriverKind {
    /// Parses `auto`, `uring` (or `io_uring`) and `epoll`.
    pub fn parse(s: &str) -> Option<DriverKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(DriverKind::Auto),
            "uring" | "io_uring" | "iouring" => Some(DriverKind::IoUring),
            "epoll" => Some(DriverKind::Epoll),
            _ => None,
        }
    }
}

/// The io_uring features found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringFeatures {
    /// Task running mode the ring got: `defer taskrun`, `coop taskrun` or `default`.
    pub taskrun: &'static str,
    /// Multishot accept works.
    pub multishot_accept: bool,
    /// Multishot receive works.
    pub multishot_recv: bool,
    /// Provided buffer rings can be registered.
    pub buf_ring: bool,
    /// IORING_OP_MSG_RING posts a completion on another ring (Linux 5.18): cores ring each
    /// other's doorbells with it rather than with eventfds.
    pub msg_ring: bool,
    /// IORING_REGISTER_SEND_MSG_RING works (Linux 6.13): threads without a ring send
    /// MSG_RING too.
    pub send_msg_ring: bool,
    /// The RLIMIT_MEMLOCK soft limit that binds this process (`None`: unlimited, or root,
    /// which the limit does not bind). Each core pins its buffer ring's entries (16 bytes per
    /// buffer, rounded up to pages); see [`pinned_bytes`].
    pub memlock_limit: Option<u64>,
}

impl UringFeatures {
    /// Whether ringwire's io_uring driver can run with these features.
    pub fn usable(&self) -> bool {
        self.multishot_accept && self.multishot_recv && self.buf_ring
    }

    /// What is missing, for a message.
    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.buf_ring {
            m.push("provided buffer rings (Linux 5.19)");
        }
        if !self.multishot_accept {
            m.push("multishot accept (Linux 5.19)");
        }
        if !self.multishot_recv {
            m.push("multishot receive (Linux 6.0)");
        }
        m
    }
}

impl fmt::Display for UringFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "multishot accept and recv, buf ring, {}", self.taskrun)?;
        match (self.msg_ring, self.send_msg_ring) {
            (true, true) => write!(f, ", msg ring (also from threads)"),
            (true, false) => write!(f, ", msg ring"),
            _ => Ok(()),
        }
    }
}

/// Why io_uring cannot be used, with what to change.
#[derive(Debug)]
pub struct ProbeError {
    /// The step that failed (`io_uring_setup`, `buffer ring registration`, ...).
    pub step: &'static str,
    /// What the kernel said, if it was an error (not a missing feature).
    pub error: Option<io::Error>,
    /// Features found missing.
    pub missing: Vec<&'static str>,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.error {
            write!(
                f,
                "{} failed with {}",
                self.step,
                errno::describe_uring(self.step, e)
            )
        } else {
            write!(f, "{}: kernel lacks {}", self.step, self.missing.join(", "))
        }
    }
}

impl std::error::Error for ProbeError {}

/// Whether the kernel offers kernel TLS (the `tls` TCP upper layer protocol), once per process:
/// `Err` says why not. Probed by attaching the ULP to a connected loopback socket, which also
/// loads the `tls` module where the kernel has it as one.
///
/// A TLS server's start-up line reports it; where the kernel offers it, accepted sessions' record
/// layer goes to the kernel after their handshake (see `Config::kernel_tls`).
pub fn kernel_tls() -> &'static Result<(), String> {
    static KTLS: OnceLock<Result<(), String>> = OnceLock::new();
    KTLS.get_or_init(|| {
        let attach = || -> io::Result<()> {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            let client = std::net::TcpStream::connect(listener.local_addr()?)?;
            let _server = listener.accept()?;
            crate::sys::set_tcp_ulp(std::os::fd::AsFd::as_fd(&client), "tls")
        };
        attach().map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => "the kernel has no tls ULP (CONFIG_TLS not set, or the tls \
                module cannot be loaded)"
                .to_owned(),
            _ => format!("attaching the tls ULP failed: {e}"),
        })
    })
}

/// The outcome of probing the kernel, once per process.
pub fn probe() -> &'static Result<UringFeatures, ProbeError> {
    static PROBE: OnceLock<Result<UringFeatures, ProbeError>> = OnceLock::new();
    // On a thread of its own. Probing on the caller's thread made that thread's next blocking
    // read fail with EINTR now and then (the client reads of tests/reply_order.rs: 3 to 5 runs
    // in 20 on Linux 6.18, none in 20 since): the probe's rings, torn down with work pending,
    // presumably leave the kernel's task work, with its signal-like notification, to the
    // thread that created them. The caller (often the application's main thread) must not pay.
    PROBE.get_or_init(|| {
        std::thread::Builder::new()
            .name("ringwire-probe".into())
            .spawn(probe_uring)
            .map_err(failed("probe thread"))
            .and_then(|probe| {
                probe.join().unwrap_or_else(|_| {
                    Err(failed("io_uring probe")(io::Error::other(
                        "the probe panicked",
                    )))
                })
            })
    })
}

fn failed(step: &'static str) -> impl FnOnce(io::Error) -> ProbeError {
    move |e| ProbeError {
        step,
        error: Some(e),
        missing: Vec::new(),
    }
}

fn probe_uring() -> Result<UringFeatures, ProbeError> {
    let mut ring = Ring::new(16, 64).map_err(failed("io_uring_setup"))?;
    let mut ops = OpProbe::new();
    ring.submitter()
        .register_probe(&mut ops)
        .map_err(failed("io_uring probe"))?;
    let needed = [
        (opcode::Accept::CODE, "accept"),
        (opcode::Recv::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::SendMsg::CODE, "sendmsg"),
        (opcode::AsyncCancel::CODE, "async cancel"),
        (opcode::Close::CODE, "close"),
        (opcode::Connect::CODE, "connect"),
        (opcode::Read::CODE, "read"),
    ];
    let missing: Vec<_> = needed
        .iter()
        .filter(|(code, _)| !ops.is_supported(*code))
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Err(ProbeError {
            step: "io_uring opcodes",
            error: None,
            missing,
        });
    }
    let bufs = match BufRing::new(&ring, 0, 8, 64) {
        Ok(b) => Some(b),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
        Err(e) => return Err(failed("buffer ring registration")(e)),
    };
    let buf_ring = bufs.is_some();
    let multishot_recv = buf_ring && try_multishot_recv(&mut ring).unwrap_or(false);
    let multishot_accept = try_multishot_accept(&mut ring).unwrap_or(false);
    let (msg_ring, send_msg_ring) = if ops.is_supported(opcode::MsgRingData::CODE) {
        try_msg_ring(&mut ring).unwrap_or((false, false))
    } else {
        (false, false)
    };
    drop(ring);
    drop(bufs);
    let features = UringFeatures {
        taskrun: match Ring::new(2, 4).map(|r| r.taskrun()) {
            Ok(crate::ring::TaskRun::Deferred) => "defer taskrun",
            Ok(crate::ring::TaskRun::Cooperative) => "coop taskrun",
            _ => "default taskrun",
        },
        multishot_accept,
        multishot_recv,
        buf_ring,
        msg_ring,
        send_msg_ring,
        memlock_limit: memlock_limit(),
    };
    if features.usable() {
        Ok(features)
    } else {
        Err(ProbeError {
            step: "io_uring features",
            error: None,
            missing: features.missing(),
        })
    }
}

/// Locked memory one core pins for a buffer ring of `buf_count` buffers.
pub fn pinned_bytes(buf_count: u32) -> usize {
    (buf_count as usize * 16).next_multiple_of(4096)
}

/// RLIMIT_MEMLOCK's soft limit, or `None` when unlimited or when running as root.
fn memlock_limit() -> Option<u64> {
    // SAFETY: geteuid takes no arguments.
    if unsafe { libc::geteuid() } == 0 {
        return None;
    }
    crate::sys::memlock_limit().ok().flatten()
}

/// Submits `entry`, waits up to 100 ms, and returns the completions seen.
fn run_one(
    ring: &mut Ring,
    entry: &io_uring::squeue::Entry,
    kick: impl FnOnce(),
) -> io::Result<Vec<Completion>> {
    // SAFETY: probe entries point to nothing but the ring's own buffer group.
    unsafe { ring.push(entry)? };
    ring.enter(Some(Duration::ZERO))?;
    kick();
    ring.enter(Some(Duration::from_millis(100)))?;
    let mut out = Vec::new();
    ring.reap(&mut out, 16);
    Ok(out)
}

fn cancel_all(ring: &mut Ring, target: UserData) {
    let entry = op::cancel::by_user_data(target, UserData::engine(Op::AcceptCancel));
    // SAFETY: a cancel points to nothing.
    if unsafe { ring.push(&entry) }.is_ok() {
        for _ in 0..10 {
            let mut out = Vec::new();
            if ring.enter(Some(Duration::from_millis(10))).is_err() {
                return;
            }
            ring.reap(&mut out, 16);
            if out.iter().any(|c| c.user_data == target.raw() && !c.more()) {
                return;
            }
        }
    }
}

fn try_multishot_recv(ring: &mut Ring) -> io::Result<bool> {
    let (a, mut b) = UnixStream::pair()?;
    let ud = UserData::new(Op::Recv, 0, 0);
    let entry = op::recv::multishot(a.as_raw_fd(), 0, ud);
    let seen = run_one(ring, &entry, || {
        let _ = b.write_all(b"x");
    })?;
    let ok = seen
        .iter()
        .any(|c| c.user_data == ud.raw() && c.res == 1 && c.more());
    cancel_all(ring, ud);
    Ok(ok)
}

fn try_multishot_accept(ring: &mut Ring) -> io::Result<bool> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let ud = UserData::engine(Op::Accept);
    let entry = op::accept::multishot(listener.as_raw_fd(), ud);
    let mut conn = None;
    let seen = run_one(ring, &entry, || conn = TcpStream::connect(addr).ok())?;
    let mut ok = false;
    for c in seen.iter().filter(|c| c.user_data == ud.raw()) {
        if c.res >= 0 {
            // SAFETY: the accept just created this descriptor for the probe, which owns it.
            unsafe { crate::sys::close(c.res) };
            ok = c.more();
        }
    }
    cancel_all(ring, ud);
    drop(conn);
    Ok(ok)
}

/// Whether a MSG_RING from `ring` reaches another ring (created like a core's, so with
/// DEFER_TASKRUN where the kernel has it: such a ring may be the target of a MSG_RING), and
/// whether one sent with IORING_REGISTER_SEND_MSG_RING does.
fn try_msg_ring(ring: &mut Ring) -> io::Result<(bool, bool)> {
    let mut target = Ring::new(4, 8)?;
    let (core, blind) = (
        UserData::new(Op::Doorbell, 0, 1),
        UserData::new(Op::Doorbell, 0, 2),
    );
    let sender = UserData::msg_ring(0);
    let target_fd = target.as_fd().as_raw_fd();
    let entry = op::msg_ring::data(target_fd, core, sender, false);
    // The sender's own completion says whether it was posted.
    let sent = run_one(ring, &entry, || {})?
        .iter()
        .any(|c| c.user_data == sender.raw() && c.res >= 0);
    let blind_sent =
        crate::sys::send_msg_ring(&op::msg_ring::data(target_fd, blind, blind, false)).is_ok();
    // The target's completions are posted when its thread (this one) waits for them.
    let arrived = |seen: &[Completion], ud: UserData| seen.iter().any(|c| c.user_data == ud.raw());
    let mut seen = Vec::new();
    for _ in 0..10 {
        if arrived(&seen, core) && (!blind_sent || arrived(&seen, blind)) {
            break;
        }
        target.enter(Some(Duration::from_millis(10)))?;
        target.reap(&mut seen, 8);
    }
    Ok((
        sent && arrived(&seen, core),
        blind_sent && arrived(&seen, blind),
    ))
}

#[cfg(test)]
mod tests {
    /// The kernel TLS probe agrees with the kernel's list of available upper layer protocols
    /// (which lists `tls` once its module is in, as the probe's attach loads it).
    #[test]
    fn kernel_tls_probe_agrees_with_the_kernel() {
        let probed = super::kernel_tls();
        let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
            .map(|ulps| ulps.split_whitespace().any(|u| u == "tls"));
        eprintln!("kernel TLS: {probed:?}; tcp_available_ulp lists tls: {listed:?}");
        if let Ok(listed) = listed {
            assert_eq!(probed.is_ok(), listed);
        }
        if let Err(why) = probed {
            assert!(why.contains("tls"), "{why}");
        }
    }
}
