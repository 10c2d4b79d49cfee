//! Starting and stopping a server: one pinned thread per core, each with its own listener,
//! ring, buffer pool and session table. Nothing is shared between the cores but the read-mostly
//! configuration, the stop flag and the stats counters.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::codec::Codec;
use crate::config::Config;
use crate::core_ctx::CoreCtx;
use crate::doorbell::Doorbells;
use crate::driver::epoll::EpollDriver;
use crate::driver::uring::{CoreBell, UringDriver};
use crate::driver::{Command, Core, Driver, SendBuf};
use crate::error::{panic_message, ServerError};
use crate::handler::Handler;
use crate::info::ServerInfo;
use crate::listener;
use crate::mailbox::{self, CoreMail};
use crate::offload::Offload;
use crate::probe::{self, DriverKind};
use crate::remote::RemoteHandle;
use crate::route::{self, Liveness, Msg, Router};
use crate::session::Timeouts;
use crate::stats::{CoreStats, ServerStats};
use crate::sys;
use crate::unix::UnixAddr;
use crate::worker::{Control, CoreLatency, CoreTick, Mail, Worker, WorkerConfig};

/// Code run on each worker thread when it starts, before it serves: set up per-core state
/// (thread locals), counters, profilers. Gets the worker's index.
pub type WorkerHook = Arc<dyn Fn(usize) + Send + Sync>;

/// Makes a worker's per-core state, given the worker's index.
pub type CoreStateInit = Arc<dyn Fn(usize) -> Box<dyn std::any::Any> + Send + Sync>;

/// Optional callbacks around the workers' lives.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Runs on each worker thread before it serves.
    pub on_worker_start: Option<WorkerHook>,
    /// Runs on each worker thread every period, between loop turns: per-core housekeeping
    /// such as refreshing a cached `Date` header. Gets the worker's index.
    pub on_core_tick: Option<(Duration, WorkerHook)>,
    /// Makes each worker's per-core state, on the worker's thread, before it serves (see
    /// [`CoreCtx`]). Gets the worker's index.
    pub core_state: Option<CoreStateInit>,
    /// Tests only: the worker with this index panics in the engine (outside any user callback)
    /// at the end of its first loop turn after the flag is set.
    #[cfg(test)]
    pub(crate) fault: Option<(usize, Arc<std::sync::atomic::AtomicBool>)>,
}

/// Stops a server from any thread. Cheap to clone.
#[derive(Clone)]
pub struct Stopper {
    control: Arc<Control>,
    wakers: Arc<Vec<Arc<OwnedFd>>>,
}

impl Stopper {
    /// Stops at once: every worker stops accepting, closes its sessions (unflushed output is
    /// dropped) and exits. Same as `shutdown(Duration::ZERO)`.
    pub fn stop(&self) {
        self.shutdown(Duration::ZERO);
    }

    /// Drains, then stops: every worker stops accepting at once (new connects are refused once
    /// all listeners are closed), takes the connections already queued in its listener's
    /// backlog, and keeps serving its sessions until their peers close or `timeout` has
    /// passed; sessions still open then are closed. Every session sees `on_close`.
    pub fn shutdown(&self, timeout: Duration) {
        self.control.request_stop(timeout);
        for waker in self.wakers.iter() {
            if let Err(e) = sys::eventfd_signal(waker) {
                log::error!("ringwire: cannot wake a worker: {e}");
            }
        }
    }
}

/// A running server: its address, its counters, and the means to stop and join it. Dropping
/// the handle stops the server and waits for its workers.
pub struct ServerHandle {
    local_addr: SocketAddr,
    stats: Vec<Arc<CoreStats>>,
    stopper: Stopper,
    remote: RemoteHandle,
    threads: Vec<JoinHandle<Result<(), ServerError>>>,
    driver: String,
    latency: Vec<CoreLatency>,
    info: ServerInfo,
    /// A Unix server's socket file: removed (if still ours) when the handle goes, after the
    /// workers have stopped.
    _socket_file: Option<crate::unix::SocketFile>,
}

impl ServerHandle {
    /// The address the server listens on (with the port picked when port 0 was asked). A
    /// client's workers run under this handle too, with the target here; `ringwire` wraps it
    /// in a `ClientHandle` that calls it `target`.
    ///
    /// A server on a Unix socket has no IP address: this is the unspecified `0.0.0.0:0`, and
    /// [`unix_addr`](ServerHandle::unix_addr) says where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Unix socket the server listens on (`None` for a TCP server).
    pub fn unix_addr(&self) -> Option<&UnixAddr> {
        self.info.unix.as_ref()
    }

    /// The path of the Unix socket file the server listens on (`None` for a TCP server or an
    /// abstract name). The file is removed when the server stops, if it is still the one the
    /// server bound.
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        self.info.unix.as_ref().and_then(UnixAddr::as_path)
    }

    /// A snapshot of every core's counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            cores: self.stats.iter().map(|s| s.snapshot()).collect(),
        }
    }

    /// The live counters of each core, in core order.
    pub fn core_stats(&self) -> &[Arc<CoreStats>] {
        &self.stats
    }

    /// Each core's latency histograms (empty unless the builder's `record_latency` was set;
    /// `Config::record_latency` here). Snapshots lag
    /// by at most 50 ms; a stopped core has published everything.
    pub fn latency(&self) -> &[CoreLatency] {
        &self.latency
    }

    /// What the server runs on, e.g. `io_uring driver (...)`, or `epoll driver (...); io_uring
    /// unavailable: <why>` after a fallback.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// What the server runs on (driver, why io_uring is not used, CPUs, address): what the
    /// start-up line logs, for a service to print its own way.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// A handle that runs closures on the cores from any thread (see [`RemoteHandle`]).
    pub fn remote(&self) -> RemoteHandle {
        self.remote.clone()
    }

    /// A handle that stops the server from any thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Stops the server at once (see [`Stopper::stop`]); [`join`](ServerHandle::join) waits.
    pub fn stop(&self) {
        self.stopper.stop();
    }

    /// Drains for at most `timeout` (see [`Stopper::shutdown`]) and waits for the workers.
    pub fn shutdown(self, timeout: Duration) -> Result<(), ServerError> {
        self.stopper.shutdown(timeout);
        self.join()
    }

    /// Waits for every worker to exit; returns the first failure.
    pub fn join(mut self) -> Result<(), ServerError> {
        join_all(std::mem::take(&mut self.threads))
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
            let _ = join_all(std::mem::take(&mut self.threads));
        }
    }
}

fn join_all(threads: Vec<JoinHandle<Result<(), ServerError>>>) -> Result<(), ServerError> {
    let mut first = Ok(());
    for (core, thread) in threads.into_iter().enumerate() {
        let result = match thread.join() {
            Ok(r) => r,
            Err(payload) => Err(ServerError::WorkerPanicked {
                core,
                message: panic_message(&*payload),
            }),
        };
        if let Err(e) = result {
            log::error!("ringwire: {e}");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Everything a worker thread starts with.
struct WorkerSetup<C, F> {
    index: usize,
    cpu: usize,
    config: Arc<Config>,
    listener: Option<OwnedFd>,
    codec: C,
    factory: Arc<F>,
    control: Arc<Control>,
    stats: Arc<CoreStats>,
    wake: Arc<OwnedFd>,
    /// Every core's doorbell; an io_uring core shares its ring here.
    bells: Arc<Doorbells>,
    hooks: Hooks,
    driver: DriverKind,
    latency: Option<CoreLatency>,
    ready: mpsc::Sender<Result<String, ServerError>>,
    /// This core's ends of the mesh, the ways into every core, and its table of live slots.
    mail: CoreMail<Msg>,
    router: Arc<Router>,
    live: Arc<Liveness>,
    server: u32,
    offload: Arc<Offload>,
}

fn worker_main<C, H, F>(mut setup: WorkerSetup<C, F>) -> Result<(), ServerError>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
{
    let (index, cpu) = (setup.index, setup.cpu);
    if setup.config.pin && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        log::warn!("ringwire: cannot pin worker {index} to CPU {cpu}; it runs unpinned");
    }
    if let Some(hook) = &setup.hooks.on_worker_start {
        hook(index);
    }
    let (config, stats, wake) = (
        setup.config.clone(),
        setup.stats.clone(),
        setup.wake.clone(),
    );
    let listener = setup.listener.take();
    match setup.driver {
        DriverKind::Epoll => match EpollDriver::new(&config, listener, wake, stats) {
            Ok(driver) => launch(setup, driver),
            Err(e) => setup.not_ready(e),
        },
        _ => match UringDriver::new(
            &config,
            listener,
            wake,
            stats,
            Some(CoreBell {
                bells: setup.bells.clone(),
                core: index,
            }),
        ) {
            Ok(driver) => launch(setup, driver),
            Err(e) => setup.not_ready(e),
        },
    }
}

fn launch<C, H, F, D>(setup: WorkerSetup<C, F>, driver: D) -> Result<(), ServerError>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
    D: Driver,
{
    #[cfg(test)]
    if let Some((_, trigger)) = setup.hooks.fault.clone().filter(|(i, _)| *i == setup.index) {
        return serve(setup, tests::Faulty::new(driver, trigger));
    }
    serve(setup, driver)
}

/// Runs the core on `driver` until it stops.
fn serve<C, H, F, D>(setup: WorkerSetup<C, F>, mut driver: D) -> Result<(), ServerError>
where
    C: Codec + Clone,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H,
    D: Driver,
{
    let WorkerSetup {
        index,
        config,
        codec,
        factory,
        control,
        stats,
        hooks,
        ready,
        latency,
        mail,
        router,
        live,
        server,
        offload,
        driver: kind,
        ..
    } = setup;
    // The per-core state is made on this thread, before the worker reports ready: a panic in
    // the user's initialiser fails the start.
    let state = match &hooks.core_state {
        None => Box::new(()) as Box<dyn std::any::Any>,
        Some(init) => match catch_unwind(AssertUnwindSafe(|| init(index))) {
            Ok(state) => state,
            Err(payload) => {
                let message = format!("core_state panicked: {}", panic_message(&*payload));
                let _ = ready.send(Err(ServerError::WorkerPanicked {
                    core: index,
                    message,
                }));
                return Ok(());
            }
        },
    };
    let _ = ready.send(Ok(driver.describe()));
    drop(ready);
    let cfg = WorkerConfig {
        core: index,
        max_sessions: config.max_sessions,
        max_frame: config.max_frame,
        // A client's sessions are all outbound: its `max_frame` is theirs.
        outbound_max_frame: if config.listen {
            config.outbound_max_frame
        } else {
            config.max_frame
        },
        timeouts: Timeouts::new(
            config.idle_timeout,
            config.read_timeout,
            config.write_timeout,
        ),
        high_water: config.high_water,
        low_water: config.low_water,
        max_output: config.max_output,
        max_timers: config.max_timers,
        max_replies: config.max_replies,
        nodelay: config.nodelay,
        connect_timeout: config
            .connect_timeout
            .map(|d| (d.as_micros() as u64).max(1)),
        connect: config.connect.clone(),
        tls: config.tls.clone(),
        tls_connect: config.tls_connect.clone(),
        handshake_timeout: config
            .handshake_timeout
            .map(|d| (d.as_micros() as u64).max(1)),
        kernel_tls: kernel_tls(&config, kind).is_ok(),
        latency: latency.clone(),
        linger: config.linger.map(|d| (d.as_micros() as u64).max(1)),
        core_tick: hooks.on_core_tick.as_ref().map(|(period, hook)| CoreTick {
            period: (period.as_micros() as u64).max(1),
            hook: hook.clone(),
        }),
    };
    let deaths = stats.clone();
    let ctx = CoreCtx::new(index, state, server, Some(router.clone()), Some(offload));
    let mut worker = Worker::new(cfg, codec, factory, stats, control, ctx);
    worker.set_mail(Mail {
        inbox: mail.inbox,
        outbox: mail.outbox,
        router,
        live,
        _entered: route::enter(server, index),
    });
    // A panic here is an engine bug (user callbacks are caught one by one).
    let result = catch_unwind(AssertUnwindSafe(|| worker.run(&mut driver)));
    // After an abnormal stop, end what is in flight (closing every session's socket) before
    // the driver goes. The worker owns no memory the kernel may touch: a send in flight owns
    // its bytes and sits in the driver, which leaks rather than frees it if the kernel may
    // still read it.
    if !matches!(result, Ok(Ok(()))) && !abandon(&mut driver) {
        log::error!(
            "ringwire: worker {index}: operations still in flight after it stopped; \
             their buffers are leaked rather than freed"
        );
    }
    // The driver goes first: it closes the listener (the kernel stops routing connections
    // here) and any session still open.
    drop(driver);
    let panics = worker.drop_sessions();
    worker.finish_mail();
    if panics > 0 {
        deaths.panics.add(panics);
        log::error!("ringwire: worker {index}: {panics} handler(s) panicked when dropped");
    }
    match result {
        Ok(result) => result.map_err(|source| ServerError::Worker {
            core: index,
            source,
        }),
        Err(payload) => {
            deaths.worker_deaths.add(1);
            let message = panic_message(&*payload);
            log::error!("ringwire: worker {index} died: {message}; its listener is closed");
            Err(ServerError::WorkerPanicked {
                core: index,
                message,
            })
        }
    }
}

/// Ends a core that stopped abnormally (a panic, a fatal ring error) without its worker, whose
/// state cannot be trusted: the driver stops accepting and closes every session, and turns
/// until nothing is in flight, closing what it still accepts (from its own listener's backlog;
/// a listener the cores share keeps its backlog for the live ones). At most about a second; returns
/// whether the driver became quiescent.
fn abandon<D: Driver>(driver: &mut D) -> bool {
    /// Closes whatever reports in.
    #[derive(Default)]
    struct Abandon {
        cmds: Vec<Command>,
    }

    impl Core for Abandon {
        fn turn_started(&mut self) {}
        fn has_pending_work(&self) -> bool {
            false
        }
        fn connected(&mut self, slot: u32, _: io::Result<()>) {
            self.cmds.push(Command::Close { slot });
        }
        fn accepted(&mut self, fd: OwnedFd) {
            drop(fd);
        }
        fn accept_failed(&mut self, _: &io::Error) {}
        fn received(&mut self, slot: u32, _: &[u8]) {
            self.cmds.push(Command::Close { slot });
        }
        fn read_closed(&mut self, slot: u32, _: Option<io::Error>) {
            self.cmds.push(Command::Close { slot });
        }
        fn sent(&mut self, slot: u32, _: Box<SendBuf>, _: io::Result<usize>) {
            self.cmds.push(Command::Close { slot });
        }
        fn closed(&mut self, _: u32) {}
        fn woken(&mut self) {}
        fn commands(&mut self) -> &mut Vec<Command> {
            &mut self.cmds
        }
        fn wait_bound(&self) -> Option<Duration> {
            None
        }
    }

    driver.abort_all();
    for _ in 0..100 {
        if driver.is_quiescent() {
            return true;
        }
        if driver
            .turn(Some(Duration::from_millis(10)), &mut Abandon::default())
            .is_err()
        {
            return false;
        }
    }
    driver.is_quiescent()
}

impl<C, F> WorkerSetup<C, F> {
    fn not_ready(self, e: ServerError) -> Result<(), ServerError> {
        let _ = self.ready.send(Err(e));
        Ok(())
    }
}

/// Resolves the driver to use: the configuration's choice, else `RINGWIRE_DRIVER`, else
/// io_uring if the probe says it works. Returns the kind and, for a fallback, why.
fn choose_driver(config: &Config) -> Result<(DriverKind, Option<String>), ServerError> {
    let mut kind = config.driver;
    if kind == DriverKind::Auto {
        if let Ok(env) = std::env::var("RINGWIRE_DRIVER") {
            kind = DriverKind::parse(&env).ok_or_else(|| {
                ServerError::Config(format!(
                    "RINGWIRE_DRIVER={env:?}: expected auto, uring or epoll"
                ))
            })?;
        }
    }
    if kind == DriverKind::Epoll {
        // Forced epoll never touches io_uring, not even to probe it: under a seccomp profile
        // that kills on io_uring_setup (rather than refusing it) the probe would kill us.
        return Ok((DriverKind::Epoll, None));
    }
    let pinned = probe::pinned_bytes(config.buf_count) * config.cpus.len();
    let uring = match probe::probe() {
        Ok(f) if f.memlock_limit.is_some_and(|limit| pinned as u64 > limit) => Err(format!(
            "buffer rings need {pinned} bytes of locked memory, over RLIMIT_MEMLOCK ({} bytes): raise `ulimit -l` or use fewer buffers",
            f.memlock_limit.unwrap_or(0)
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    match (kind, uring) {
        (DriverKind::Epoll, _) => Ok((DriverKind::Epoll, None)),
        (DriverKind::IoUring, Ok(())) | (DriverKind::Auto, Ok(())) => {
            Ok((DriverKind::IoUring, None))
        }
        (DriverKind::IoUring, Err(reason)) => Err(ServerError::DriverUnavailable { reason }),
        (DriverKind::Auto, Err(why)) => Ok((DriverKind::Epoll, Some(why))),
    }
}

/// The doorbells of a server's cores (`wakers`: their eventfds): MSG_RING between cores where
/// the io_uring driver runs, the probe found MSG_RING working and the configuration wants it.
fn doorbells(config: &Config, driver: DriverKind, wakers: Arc<Vec<Arc<OwnedFd>>>) -> Doorbells {
    let features = match driver {
        DriverKind::IoUring => probe::probe().as_ref().ok(),
        _ => None,
    };
    let msg_ring = config.msg_ring && features.is_some_and(|f| f.msg_ring);
    let blind = features.is_some_and(|f| f.send_msg_ring);
    Doorbells::new(wakers, msg_ring, blind)
}

/// Starts a server: binds one listener per configured core, starts a pinned worker per core,
/// and returns once every worker serves, or with the first reason one could not.
pub fn start<C, H, F>(
    config: Config,
    codec: C,
    factory: F,
    hooks: Hooks,
) -> Result<ServerHandle, ServerError>
where
    C: Codec + Clone + Send,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H + Send + Sync + 'static,
{
    let mut config = config;
    config.validate()?;
    crate::cpus::resolve(&mut config)?;
    let (driver, fallback) = choose_driver(&config)?;
    let mut socket_file = None;
    let (listeners, local_addr) = if let Some(unix) = &config.unix {
        let (fds, file) =
            crate::unix::bind_all(unix, config.unix_mode, config.backlog, config.cpus.len())?;
        socket_file = file;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        (fds.into_iter().map(Some).collect(), unspecified)
    } else if config.listen {
        let (fds, addr) = listener::bind_all(&config)?;
        (fds.into_iter().map(Some).collect(), addr)
    } else {
        let target = match &config.connect {
            Some((crate::target::Target::Tcp(addr), _)) => *addr,
            Some((crate::target::Target::Unix(_), _)) => SocketAddr::from(([0, 0, 0, 0], 0)),
            None => config.addr,
        };
        (config.cpus.iter().map(|_| None).collect::<Vec<_>>(), target)
    };
    let config = Arc::new(config);
    let control = Arc::new(Control::new());
    let shared = Shared {
        config: config.clone(),
        codec,
        factory: Arc::new(factory),
        control: control.clone(),
        hooks,
        driver,
    };
    let cores = listeners.len();
    // The doorbells first: every core's router names all of them.
    let wakers = (0..cores)
        .map(|_| sys::eventfd().map(Arc::new))
        .collect::<io::Result<Vec<_>>>()
        .map_err(ServerError::Spawn)?;
    let wakers = Arc::new(wakers);
    let bells = Arc::new(doorbells(&config, driver, wakers.clone()));
    let live: Vec<Arc<Liveness>> = (0..cores)
        .map(|_| Arc::new(Liveness::new(config.max_sessions)))
        .collect();
    let offload = Arc::new(
        Offload::start(
            config.offload_threads,
            config.offload_queue,
            &crate::cpus::offload(&config),
        )
        .map_err(ServerError::Spawn)?,
    );
    let mesh = mailbox::mesh::<Msg>(cores, mailbox::Capacity::default());
    let router = Router::new(
        route::new_server_id(),
        mesh.remote,
        bells.clone(),
        Arc::new(live.clone()),
    );
    let mail = Mailing {
        cores: mesh.cores,
        live,
        offload,
        bells,
    };
    let (workers, description, failure) = spawn_workers(&shared, listeners, &wakers, &router, mail);
    let info = ServerInfo {
        driver,
        driver_detail: description.clone(),
        fallback,
        cpus: config.cpus.clone(),
        pinned: config.pin,
        addr: local_addr,
        unix: config.unix.clone(),
        listening: config.listen,
        tls: (config.tls.is_some() || config.tls_connect.is_some()).then(|| {
            match kernel_tls(&config, driver) {
                Ok(()) => "TLS handshakes by rustls (aws-lc-rs), then the record layer by the \
                    kernel (kTLS) where the session's cipher suite allows"
                    .to_owned(),
                Err(why) => {
                    format!("TLS by rustls (aws-lc-rs) in user space; kernel TLS not used: {why}")
                }
            }
        }),
    };
    let mut handle = ServerHandle {
        local_addr,
        stats: workers.stats,
        remote: RemoteHandle::new(Arc::new(router.copy())),
        stopper: Stopper { control, wakers },
        threads: workers.threads,
        driver: description,
        latency: workers.latencies,
        info,
        _socket_file: socket_file,
    };
    if let Some(e) = failure {
        // Dropping the handle stops and joins the workers that did start.
        drop(handle);
        return Err(e);
    }
    if let Some(why) = &handle.info.fallback {
        handle.driver = format!("{}; io_uring unavailable: {why}", handle.driver);
    }
    log::info!("ringwire: {}", handle.info);
    Ok(handle)
}

/// Whether accepted TLS sessions go to the kernel after their handshake (see `crate::ktls`),
/// or why not.
fn kernel_tls(config: &Config, driver: DriverKind) -> Result<(), String> {
    let Some(tls) = &config.tls else {
        return Err("only a server's sessions are handed over".into());
    };
    if config.unix.is_some() {
        return Err("a Unix socket has no TLS ULP".into());
    }
    if !config.kernel_tls {
        return Err("turned off (kernel_tls)".into());
    }
    crate::probe::kernel_tls().clone()?;
    // Probed here, once, rather than by the first handover on a core's loop.
    if !crate::ktls::kernel_takes().contains(&true) {
        return Err("the kernel takes keys for none of the ciphers handed over".into());
    }
    if !tls.enable_secret_extraction {
        return Err("the rustls configuration keeps its secrets (enable_secret_extraction)".into());
    }
    let deferred = probe::probe()
        .as_ref()
        .is_ok_and(|f| f.taskrun == "defer taskrun");
    match driver {
        DriverKind::Epoll => Ok(()),
        DriverKind::IoUring if deferred => Ok(()),
        _ => Err("the io_uring driver runs without DEFER_TASKRUN".into()),
    }
}

/// What every worker of one server is started with.
struct Shared<C, F> {
    config: Arc<Config>,
    codec: C,
    factory: Arc<F>,
    control: Arc<Control>,
    hooks: Hooks,
    driver: DriverKind,
}

/// What each worker gets of the server's mesh.
struct Mailing {
    cores: Vec<CoreMail<Msg>>,
    live: Vec<Arc<Liveness>>,
    offload: Arc<Offload>,
    bells: Arc<Doorbells>,
}

/// The workers started, with what the handle keeps of each.
#[derive(Default)]
struct Workers {
    stats: Vec<Arc<CoreStats>>,
    threads: Vec<JoinHandle<Result<(), ServerError>>>,
    latencies: Vec<CoreLatency>,
}

/// Starts one pinned worker per listener (or per CPU, for a client) and waits until each is
/// ready or has failed. Returns the workers that started, the driver's description, and the
/// first failure (the caller stops the started ones then).
fn spawn_workers<C, H, F>(
    shared: &Shared<C, F>,
    listeners: Vec<Option<OwnedFd>>,
    wakers: &[Arc<OwnedFd>],
    router: &Router,
    mail: Mailing,
) -> (Workers, String, Option<ServerError>)
where
    C: Codec + Clone + Send,
    H: Handler<C>,
    F: Fn(&mut CoreCtx) -> H + Send + Sync + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut workers = Workers::default();
    let mut failure = None;
    let Mailing {
        cores,
        live,
        offload,
        bells,
    } = mail;
    let each = listeners.into_iter().zip(cores).zip(live).enumerate();
    for (index, ((listener, core_mail), live)) in each {
        let wake = wakers[index].clone();
        // The codec's `clone` is user code: a panic fails the start, and the workers already
        // started are stopped by the caller.
        let codec = match catch_unwind(AssertUnwindSafe(|| shared.codec.clone())) {
            Ok(codec) => codec,
            Err(payload) => {
                failure = Some(ServerError::WorkerPanicked {
                    core: index,
                    message: format!("codec clone panicked: {}", panic_message(&*payload)),
                });
                break;
            }
        };
        let core_stats = Arc::new(CoreStats::default());
        let core_latency = shared.config.record_latency.then(CoreLatency::default);
        workers.latencies.extend(core_latency.clone());
        let setup = WorkerSetup {
            index,
            cpu: shared.config.cpus[index],
            config: shared.config.clone(),
            listener,
            codec,
            factory: shared.factory.clone(),
            control: shared.control.clone(),
            stats: core_stats.clone(),
            wake: wake.clone(),
            bells: bells.clone(),
            hooks: shared.hooks.clone(),
            driver: shared.driver,
            latency: core_latency,
            ready: ready_tx.clone(),
            mail: core_mail,
            // A copy of its own: the replies a core reserves count on a line no other writes.
            router: Arc::new(router.copy()),
            live,
            server: router.server,
            offload: offload.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("ringwire-w{index}"))
            .spawn(move || worker_main::<C, H, F>(setup));
        match spawned {
            Ok(thread) => workers.threads.push(thread),
            Err(e) => {
                failure = Some(ServerError::Spawn(e));
                break;
            }
        }
        workers.stats.push(core_stats);
    }
    drop(ready_tx);
    let mut description = String::new();
    for _ in 0..workers.threads.len() {
        match ready_rx.recv() {
            Ok(Ok(desc)) => description = desc,
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(ServerError::Config("a worker exited during setup".into()));
            }
        }
    }
    (workers, description, failure)
}

#[cfg(test)]
mod tests;
