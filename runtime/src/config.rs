//! Engine configuration, validated once before any thread starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ServerError;
use crate::probe::DriverKind;
use crate::tls::TlsConnect;
use crate::unix::UnixAddr;

/// The default [`Config::outbound_max_frame`]: 512 MiB, Redis's `proto-max-bulk-len`, the
/// largest value a Redis backend holds.
pub const DEFAULT_OUTBOUND_MAX_FRAME: usize = 512 << 20;

/// Everything the engine needs to know to serve; `ringwire::Server` builds it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address every core's listener binds (port 0: the first core picks, the others follow).
    pub addr: SocketAddr,
    /// Listen on this Unix stream socket instead of `addr` (a server only): one socket that
    /// every core accepts on (see [`UnixAddr`]).
    pub unix: Option<UnixAddr>,
    /// Mode of the Unix socket file (e.g. `0o660`); `None`: as the umask leaves it.
    pub unix_mode: Option<u32>,
    /// Listen on `addr` (a server). A client (`listen: false`) only connects out.
    pub listen: bool,
    /// Outbound connections each core opens when it starts: target and count per core.
    pub connect: Option<(crate::target::Target, usize)>,
    /// One worker per entry, pinned to that CPU (each must be one the process may run on).
    /// Empty: `cores` workers on the first CPUs the process may run on.
    pub cpus: Vec<usize>,
    /// Workers to run when `cpus` is empty.
    pub cores: usize,
    /// Pin workers to their CPU.
    pub pin: bool,
    /// Listen backlog of each core's listener.
    pub backlog: i32,
    /// Join the listeners of another process on `addr` (SO_REUSEPORT) instead of failing with
    /// `ServerError::AddrInUse`: for a zero-downtime restart.
    pub share_port: bool,
    /// Set TCP_NODELAY on accepted connections.
    pub nodelay: bool,
    /// Submission queue entries of each core's ring (a power of two).
    pub ring_entries: u32,
    /// Completion queue entries; 0 picks four times the submission queue, and at least twice
    /// the buffer count.
    pub cq_entries: u32,
    /// Provided buffers per core (a power of two, at most 32768).
    pub buf_count: u32,
    /// Size of each provided buffer.
    pub buf_size: u32,
    /// Largest frame a codec accepts on an accepted session (a client's request).
    pub max_frame: usize,
    /// Largest frame a codec accepts on a session a server's handler opened with a connect
    /// (a backend's reply; default [`DEFAULT_OUTBOUND_MAX_FRAME`], 512 MiB). A client's
    /// sessions, all outbound, are bounded by `max_frame` instead. The bound is memory: a
    /// peer that declares a frame this large gets a receive buffer grown to hold it, so each
    /// such connection may hold up to this much while the frame arrives.
    pub outbound_max_frame: usize,
    /// Most sessions per core; past it a new connection is accepted and closed at once.
    pub max_sessions: usize,
    /// Close a session that received nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// Close a session whose incomplete frame is not completed within this long.
    pub read_timeout: Option<Duration>,
    /// Close a session whose pending output makes no progress for this long.
    pub write_timeout: Option<Duration>,
    /// Fail an outbound connection not established within this long, with
    /// `ConnectError::TimedOut` (`None`: as long as the kernel tries, about two minutes).
    pub connect_timeout: Option<Duration>,
    /// Output bytes above which the session stops being read from.
    pub high_water: usize,
    /// Output bytes at or below which a paused session is read from again.
    pub low_water: usize,
    /// Most output bytes a session may have pending: a handler that produces more (many
    /// replies in one callback, or in on_open or on_tick, which backpressure cannot pause) has
    /// its session closed with `CloseReason::OutputLimit`.
    pub max_output: usize,
    /// Most one-shot timers (`Session::set_timer`) a session may have pending; past it
    /// `set_timer` fails with `TimerError::TooMany`.
    pub max_timers: usize,
    /// Most replies a session may have reserved and not completed (`Session::reserve`);
    /// reading pauses at this bound until one is completed.
    pub max_replies: usize,
    /// Threads of the offload pool (`CoreCtx::spawn_blocking`); at least one.
    pub offload_threads: usize,
    /// Jobs the offload pool queues before `spawn_blocking` fails as busy; at least one.
    pub offload_queue: usize,
    /// CPUs the offload pool's threads run on; empty: the allowed CPUs the workers are not
    /// pinned to (anywhere, if they take them all).
    pub offload_cpus: Vec<usize>,
    /// How long a session closed from our side (handler close, codec error) lingers: its
    /// sending side is shut down and input is read and dropped until the peer's EOF, at most
    /// this long, so that the last reply is not destroyed by a reset. `None`: close at once.
    pub linger: Option<Duration>,
    /// The I/O driver (default: io_uring where it works, else epoll).
    pub driver: DriverKind,
    /// Ring a sleeping core with an IORING_OP_MSG_RING from the sending core's ring (and,
    /// on Linux 6.13 and later, from other threads with IORING_REGISTER_SEND_MSG_RING) where
    /// the io_uring driver runs and the kernel has it; on by default. Off: every wake-up
    /// writes the core's eventfd, as the epoll driver always does.
    pub msg_ring: bool,
    /// Record per-core histograms of handling time (frame decoded to reply encoded) and of
    /// loop-turn time; read them through `ServerHandle::latency`. Off by default: two clock
    /// reads per frame.
    pub record_latency: bool,
    /// Serve TLS with this rustls configuration: every accepted session does a handshake
    /// before `on_open`, and its records are decrypted into the codec's input and its output
    /// encrypted (see [`crate::tls`]). `None`: plain TCP or Unix socket.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Speak TLS on the connections a client opens (`listen: false`): the rustls client
    /// configuration and the name the server's certificate must carry.
    pub tls_connect: Option<TlsConnect>,
    /// Close a TLS session whose handshake is not done this long after its connection was up
    /// (`CloseReason::HandshakeTimeout`, counted in `tls_errors`). Default 10 s. The idle
    /// timeout, if set, also applies while the handshake goes on.
    pub handshake_timeout: Option<Duration>,
    /// Hand accepted TLS sessions' record layer to the kernel (kTLS) after their handshake,
    /// where the kernel offers the `tls` ULP, the driver copies nothing between turns (epoll,
    /// or io_uring with DEFER_TASKRUN), the rustls configuration lets its secrets be extracted
    /// (`enable_secret_extraction`) and the kernel takes the cipher suite; rustls keeps it in
    /// user space otherwise. On by default; the start-up line says which is used.
    pub kernel_tls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            unix: None,
            unix_mode: None,
            listen: true,
            connect: None,
            cpus: Vec::new(),
            cores: 1,
            pin: true,
            backlog: 1024,
            share_port: false,
            nodelay: true,
            ring_entries: 1024,
            cq_entries: 0,
            buf_count: 1024,
            buf_size: 8192,
            max_frame: 1 << 20,
            outbound_max_frame: DEFAULT_OUTBOUND_MAX_FRAME,
            max_sessions: 65536,
            idle_timeout: None,
            read_timeout: None,
            write_timeout: None,
            connect_timeout: Some(Duration::from_secs(5)),
            high_water: 1 << 20,
            low_water: 256 << 10,
            max_output: 64 << 20,
            max_timers: 64,
            max_replies: 1024,
            offload_threads: 2,
            offload_queue: 1024,
            offload_cpus: Vec::new(),
            linger: Some(Duration::from_secs(2)),
            driver: DriverKind::Auto,
            msg_ring: true,
            record_latency: false,
            tls: None,
            tls_connect: None,
            handshake_timeout: Some(Duration::from_secs(10)),
            kernel_tls: true,
        }
    }
}

impl Config {
    /// Checks every setting; the error names the setting.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |msg: String| Err(ServerError::Config(msg));
        let cores = if self.cpus.is_empty() {
            self.cores
        } else {
            self.cpus.len()
        };
        if cores == 0 {
            return bad("at least one core is needed".into());
        }
        if cores > 4096 {
            return bad(format!("{cores} cores is more than 4096"));
        }
        if !self.ring_entries.is_power_of_two() || self.ring_entries > 32768 {
            return bad(format!(
                "ring_entries {} must be a power of two up to 32768",
                self.ring_entries
            ));
        }
        if !self.buf_count.is_power_of_two() || self.buf_count > 32768 {
            return bad(format!(
                "buf_count {} must be a power of two up to 32768",
                self.buf_count
            ));
        }
        if self.buf_size == 0 || self.buf_size > 1 << 24 {
            return bad(format!("buf_size {} must be 1..=16 MiB", self.buf_size));
        }
        if self.cq_entries != 0 && !self.cq_entries.is_power_of_two() {
            return bad(format!(
                "cq_entries {} must be a power of two",
                self.cq_entries
            ));
        }
        if self.max_frame == 0 || self.outbound_max_frame == 0 {
            return bad("max_frame and outbound_max_frame must be positive".into());
        }
        if self.max_replies == 0 {
            return bad("max_replies must be positive".into());
        }
        if self.offload_threads == 0 || self.offload_queue == 0 {
            return bad("offload_threads and offload_queue must be positive".into());
        }
        if self.max_sessions == 0 || self.max_sessions > (1 << 24) {
            return bad(format!(
                "max_sessions {} must be 1..=16M",
                self.max_sessions
            ));
        }
        if self.high_water == 0 || self.low_water > self.high_water {
            return bad(format!(
                "low_water {} must not exceed high_water {}, which must be positive",
                self.low_water, self.high_water
            ));
        }
        if self.max_output < self.high_water {
            return bad(format!(
                "max_output {} must not be below high_water {}",
                self.max_output, self.high_water
            ));
        }
        if self.unix.is_some() && !self.listen {
            return bad("a Unix socket is for a server; a client cannot listen on one".into());
        }
        if self.tls.is_some() && !self.listen {
            return bad("tls is a server's configuration; a client uses tls_connect".into());
        }
        if self.unix_mode.is_some_and(|m| m > 0o7777) {
            return bad("unix_mode must be a file mode, at most 0o7777".into());
        }
        for (name, t) in [
            ("idle_timeout", self.idle_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if t.is_some_and(|t| t.is_zero()) {
                return bad(format!("{name} must be positive when set"));
            }
        }
        Ok(())
    }

    /// Completion queue size: as configured, else generous.
    pub(crate) fn cq_size(&self) -> u32 {
        if self.cq_entries != 0 {
            return self.cq_entries;
        }
        (self.ring_entries * 4)
            .max(self.buf_count * 2)
            .next_power_of_two()
    }
}
