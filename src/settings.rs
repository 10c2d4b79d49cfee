//! Settings a server and a client share: where the workers run and how each core's engine is
//! sized, timed and observed. One definition, expanded into both builders.

/// Expands to the builder methods [`Server`](crate::Server) and [`Client`](crate::Client)
/// share; the builder has `config: Config` and `hooks: Hooks` fields.
macro_rules! engine_settings {
    () => {
        /// Runs `n` workers, pinned to the first `n` CPUs this process may run on (its
        /// affinity mask, as `taskset` or a cgroup cpuset sets it; more workers than allowed
        /// CPUs share them). The start-up line says which were used.
        pub fn cores(mut self, n: usize) -> Self {
            self.config.cpus.clear();
            self.config.cores = n;
            self
        }

        /// Runs one worker per listed CPU, pinned to it. A CPU this process may not run on
        /// makes `start` fail with [`ServerError::Config`](crate::ServerError::Config)
        /// (unless `pin(false)`).
        pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
            self.config.cpus = cpus.into_iter().collect();
            // An empty list is an error, not the default core.
            self.config.cores = 0;
            self
        }

        /// Pin workers to their CPUs (default: yes).
        pub fn pin(mut self, pin: bool) -> Self {
            self.config.pin = pin;
            self
        }

        /// Largest frame the codec accepts (default 1 MiB); a larger one closes its session with
        /// an error. On a server it bounds what clients send; the replies of connections its
        /// handlers open have their own bound, `Server::outbound_max_frame`. On a client it
        /// bounds every session.
        pub fn max_frame(mut self, bytes: usize) -> Self {
            self.config.max_frame = bytes;
            self
        }

        /// Submission queue entries of each core's ring (a power of two; default 1024).
        pub fn ring_entries(mut self, entries: u32) -> Self {
            self.config.ring_entries = entries;
            self
        }

        /// Completion queue entries (a power of two; default: four times the submission queue and
        /// at least twice the buffer count).
        pub fn cq_entries(mut self, entries: u32) -> Self {
            self.config.cq_entries = entries;
            self
        }

        /// Provided receive buffers per core: `count` (a power of two) of `size` bytes each.
        pub fn buffers(mut self, count: u32, size: u32) -> Self {
            self.config.buf_count = count;
            self.config.buf_size = size;
            self
        }

        /// TCP_NODELAY on accepted connections (default: on).
        pub fn nodelay(mut self, on: bool) -> Self {
            self.config.nodelay = on;
            self
        }

        /// Most sessions per core (default 65536); past it a server accepts a new connection and
        /// closes it at once (counted as rejected), and a client's connect fails.
        pub fn max_sessions(mut self, n: usize) -> Self {
            self.config.max_sessions = n;
            self
        }

        /// Closes a session that received nothing for `timeout` (a `Duration`, or `None`:
        /// never, the default). A session can change its own with
        /// [`Session::set_idle_timeout`](crate::Session::set_idle_timeout), which takes the same.
        pub fn idle_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.idle_timeout = timeout.into();
            self
        }

        /// Closes a session whose incomplete frame is not completed within `timeout`: the slow
        /// trickle of a frame that never ends (`None`: never, the default). A session can change
        /// its own with [`Session::set_read_timeout`](crate::Session::set_read_timeout).
        pub fn read_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.read_timeout = timeout.into();
            self
        }

        /// Closes a session whose pending output makes no progress for `timeout`: a peer that
        /// stopped reading (`None`: never, the default). A session can change its own with
        /// [`Session::set_write_timeout`](crate::Session::set_write_timeout).
        pub fn write_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.write_timeout = timeout.into();
            self
        }

        /// Fails an outbound connection (a client's, or one a handler opened with
        /// [`Session::connect`](crate::Session::connect) or
        /// [`CoreCtx::connect`](crate::CoreCtx::connect)) that is not established within
        /// `timeout`: its handler's `on_error` gets a
        /// [`ConnectError::TimedOut`](crate::ConnectError::TimedOut), then `on_close`. Default
        /// 5 s; `None` leaves it to the kernel, which gives up after about two minutes.
        pub fn connect_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.connect_timeout = timeout.into();
            self
        }

        /// Backpressure: above `high` bytes of pending output a session is not read from until its
        /// output drains to `low` bytes (defaults 1 MiB and 256 KiB). Decoding stops at the
        /// frame whose replies pass `high`; input received after it is held undecoded until the
        /// output drains. A peer that sends without reading costs the server at most `high` plus
        /// one frame's replies, plus the input the kernel delivered before reading stopped (at
        /// most the buffer ring's size on io_uring, one 64 KiB read on epoll).
        pub fn water_marks(mut self, high: usize, low: usize) -> Self {
            self.config.high_water = high;
            self.config.low_water = low;
            self
        }

        /// Most output a session may have pending (default 64 MiB, at least the high-water
        /// mark). Backpressure keeps a session near the high-water mark; this catches a
        /// handler that produces more in one callback: nothing more is encoded and the session
        /// is closed with `CloseReason::OutputLimit`, its error going to `on_error`.
        pub fn max_output(mut self, bytes: usize) -> Self {
            self.config.max_output = bytes;
            self
        }

        /// Most one-shot timers a session may have pending (`Session::set_timer`; default 64).
        /// Past it `set_timer` fails with `TimerError::TooMany`: a bound on what one session can
        /// hold on its core. Pending timers live with their session (a short sorted list, no
        /// heap entry each).
        pub fn max_timers(mut self, timers: usize) -> Self {
            self.config.max_timers = timers;
            self
        }

        /// Most replies a session may have reserved and not completed (`Session::reserve`;
        /// default 1024). At the bound the session is not read from until one is completed, as
        /// above the high-water mark, and `reserve` fails past it.
        pub fn max_replies(mut self, replies: usize) -> Self {
            self.config.max_replies = replies;
            self
        }

        /// The offload pool that runs `CoreCtx::spawn_blocking` work: `threads` threads
        /// (default 2) and a queue of `queue` jobs (default 1024), past which `spawn_blocking`
        /// fails with `RemoteError::Busy` so the handler can answer "busy". Its threads run on
        /// the allowed CPUs the workers are not pinned to (see `offload_cpus`).
        pub fn offload_pool(mut self, threads: usize, queue: usize) -> Self {
            self.config.offload_threads = threads;
            self.config.offload_queue = queue;
            self
        }

        /// The CPUs the offload pool's threads run on (default: the allowed CPUs the workers
        /// are not pinned to, or anywhere if the workers take them all).
        pub fn offload_cpus(mut self, cpus: impl Into<Vec<usize>>) -> Self {
            self.config.offload_cpus = cpus.into();
            self
        }

        /// How long a session closed from our side (the handler's `close`, a codec error) lingers
        /// before its descriptor closes: its sending side is shut down (the peer reads the last
        /// reply, then EOF) and input is read and dropped until the peer's EOF, at most this long.
        /// Closing while the peer still sends would reset the connection and could destroy the
        /// last reply. Default 2 s; `None` closes at once.
        pub fn linger(mut self, linger: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.linger = linger.into();
            self
        }

        /// Runs `hook(worker_index)` on each worker thread every `period`, between loop turns:
        /// per-core housekeeping, such as refreshing a cached `Date` header in a thread local.
        pub fn on_core_tick(
            mut self,
            period: std::time::Duration,
            hook: impl Fn(usize) + Send + Sync + 'static,
        ) -> Self {
            self.hooks.on_core_tick = Some((period, std::sync::Arc::new(hook)));
            self
        }

        /// Per-core state: `init(worker_index)` runs once on each worker's thread before it
        /// serves, and what it returns is that core's own, reached from the handler factory
        /// (`|ctx: &mut CoreCtx| ...`) and from every callback (`session.core().state::<S>()`),
        /// with no lock and no `thread_local!`. `S` need not be `Send`: it never leaves its
        /// core. A panic in `init` fails the start.
        ///
        /// ```no_run
        /// use ringwire::{codec::Len32, CoreCtx, Handler, Server, Session};
        ///
        /// /// Numbers each frame of its core, across that core's sessions.
        /// struct Numbered;
        ///
        /// impl Handler<Len32> for Numbered {
        ///     fn on_message(&mut self, s: &mut Session<'_, Len32>, _frame: &[u8]) {
        ///         let seen = s.core().state::<u64>();
        ///         *seen += 1;
        ///         let reply = seen.to_string();
        ///         let _ = s.send(reply.as_bytes());
        ///     }
        /// }
        ///
        /// Server::new(Len32, |_: &mut CoreCtx| Numbered)
        ///     .cores(2)
        ///     .core_state(|_worker| 0u64)
        ///     .run()?;
        /// # Ok::<(), ringwire::ServerError>(())
        /// ```
        pub fn core_state<S: 'static>(
            mut self,
            init: impl Fn(usize) -> S + Send + Sync + 'static,
        ) -> Self {
            self.hooks.core_state = Some(std::sync::Arc::new(move |worker| {
                Box::new(init(worker)) as Box<dyn std::any::Any>
            }));
            self
        }

        /// Runs `hook(worker_index)` on each worker thread before it serves.
        pub fn on_worker_start(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
            self.hooks.on_worker_start = Some(std::sync::Arc::new(hook));
            self
        }

        /// The I/O driver: io_uring where it works, else epoll (`Auto`, the default, which the
        /// environment variable `RINGWIRE_DRIVER=auto|uring|epoll` may override), or one forced.
        /// Forcing io_uring where it cannot work makes `start` fail with the reason.
        pub fn driver(mut self, kind: ringwire_runtime::DriverKind) -> Self {
            self.config.driver = kind;
            self
        }

        /// How a core wakes another core that sleeps: with an IORING_OP_MSG_RING from its own
        /// ring where the io_uring driver runs and the kernel has it (`true`, the default), or
        /// by writing the sleeper's eventfd (`false`, what the epoll driver always does). For
        /// comparisons; the start-up line names the doorbell in use.
        pub fn msg_ring(mut self, on: bool) -> Self {
            self.config.msg_ring = on;
            self
        }

        /// Records per-core histograms of in-server handling time (frame decoded to replies
        /// encoded) and of loop-turn time, read through
        /// [`ServerHandle::latency`](crate::ServerHandle::latency) and printed with
        /// [`report`](crate::report). Off by default (it costs two clock reads per frame).
        pub fn record_latency(mut self, on: bool) -> Self {
            self.config.record_latency = on;
            self
        }
    };
}

pub(crate) use engine_settings;
