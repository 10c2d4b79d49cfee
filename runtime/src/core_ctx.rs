//! What a worker gives the handlers on its core: the worker's index and per-core user state.
//!
//! Each worker thread owns one [`CoreCtx`]; it is never shared or sent, so per-core state is
//! plain data (a map, an `Rc`, a cache) with no lock. The handler factory gets it when it makes
//! a session's handler, and every callback reaches it through `Session::core`.
//!
//! It is also where a callback opens an outbound session of another protocol
//! ([`CoreCtx::connect`]): the context allocates the session's id at once, so the caller gets
//! its handle before the worker has a slot for it; the worker opens the connects listed here
//! right after the callback (or, from elsewhere, before its next wait). Invariant: the connects
//! listed count against the core's session bound, so no more are listed than it can open.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::codec::Codec;
use crate::error::{panic_message, ConnectError};
use crate::handler::Handler;
use crate::offload::{Job, Offload};
use crate::remote::RemoteError;
use crate::reply::SessionHandle;
use crate::route::{self, Msg, Router};
use crate::session::SessionId;
use crate::target::Target;
use crate::unix::UnixAddr;
use crate::worker::{ErasedProto, Typed};
use socket2::SockAddr;

/// The context of one worker (one pinned core's loop): its index, the per-core state the
/// server's `core_state` initialiser made for it on that core's thread (`()` without one), and
/// the ways to reach elsewhere: another core ([`submit_to`](CoreCtx::submit_to),
/// [`run_on`](CoreCtx::run_on)), a session of any core ([`write_to`](CoreCtx::write_to)), and
/// the offload pool ([`spawn_blocking`](CoreCtx::spawn_blocking)).
///
/// Only the engine makes one (so a callback cannot swap its core's context for another); the
/// `core_state` builder method of `ringwire` shows it in use.
///
/// Work sent to other cores from a callback is queued and sent at the end of the loop turn, in
/// one batch per target core; work sent to this core runs right after the current callback.
/// Work sent from one core to another runs there in the order it was sent.
pub struct CoreCtx {
    worker: usize,
    state: Box<dyn Any>,
    server: u32,
    /// The ways into the server's cores (`None` in unit tests and the test kit).
    router: Option<Arc<Router>>,
    offload: Option<Arc<Offload>>,
    /// The sequence number the core's next session takes (its id, and its handle's).
    next_seq: u64,
    /// Outbound sessions asked for and what bounds them.
    pub(crate) outbound: Outbound,
}

/// Outbound sessions asked for with [`CoreCtx::connect`], and what the worker tells the context
/// so that a connect that cannot be opened fails at once.
#[derive(Default)]
pub(crate) struct Outbound {
    /// Asked for and not yet opened by the worker, in order.
    pub(crate) pending: Vec<PendingConnect>,
    /// Sessions the core holds (kept by the worker).
    pub(crate) sessions: usize,
    /// Of those, the accepted ones (not opened by a connect).
    pub(crate) accepted: usize,
    /// The core's bound on sessions (`usize::MAX` until the worker says).
    pub(crate) max_sessions: usize,
    /// The core opens no new sessions: it is draining or stopped.
    pub(crate) closed: bool,
    /// TCP_NODELAY on outbound sockets.
    pub(crate) nodelay: bool,
    /// Make sockets. Off in the test kit, which connects nothing.
    pub(crate) sockets: bool,
}

/// One outbound session to open: its target, its id, its socket and the kernel's form of the
/// target (none in the test kit) and its protocol.
pub(crate) struct PendingConnect {
    pub(crate) target: Target,
    pub(crate) id: SessionId,
    pub(crate) socket: Option<(OwnedFd, SockAddr)>,
    pub(crate) proto: Box<dyn ErasedProto>,
    /// The session speaks TLS (`connect_tls`).
    pub(crate) tls: Option<Box<crate::tls::TlsSession>>,
}

impl CoreCtx {
    /// A context for worker `worker` of server `server` holding `state`.
    pub(crate) fn new(
        worker: usize,
        state: Box<dyn Any>,
        server: u32,
        router: Option<Arc<Router>>,
        offload: Option<Arc<Offload>>,
    ) -> Self {
        CoreCtx {
            worker,
            state,
            server,
            router,
            offload,
            next_seq: 0,
            outbound: Outbound {
                max_sessions: usize::MAX,
                sockets: true,
                ..Outbound::default()
            },
        }
    }

    /// The id of the core's next session.
    pub(crate) fn next_id(&mut self) -> SessionId {
        let seq = self.next_seq;
        self.next_seq += 1;
        SessionId::new(self.worker, seq)
    }

    /// Opens an outbound session to `addr` on this core, speaking `codec` and served by
    /// `handler`: another protocol than the server's own (a proxy's backend), with a handler of
    /// another type. Returns the new session's handle at once; the worker opens the session
    /// right after the current callback. The handler's `on_open` runs once connected; a connect
    /// that fails or passes the `connect_timeout` reaches its `on_error` as a
    /// [`SessionError::Connect`](crate::SessionError::Connect) (refused, unreachable, timed
    /// out, ...), then `on_close`.
    ///
    /// The handler may carry a [`Reply`](crate::Reply) reserved by the session that asked
    /// (`Session::reserve`) and complete it from its own callbacks (`Session::complete`): the
    /// answer goes out in the asking session's order. It may also carry that session's
    /// [`SessionHandle`].
    ///
    /// The handle names the session for as long as it lives, and compares equal to the handle
    /// the session's own callbacks get from `Session::handle`.
    ///
    /// ```
    /// # extern crate ringwire_runtime as ringwire;
    /// # use ringwire::codec::{Codec, CodecError, Decoded};
    /// use ringwire::{Handler, Reply, Session, SessionError};
    /// # /// Frames ending in the byte `D`.
    /// # #[derive(Clone)]
    /// # struct Delim<const D: u8>;
    /// # impl<const D: u8> Codec for Delim<D> {
    /// #     type Frame<'a> = &'a [u8];
    /// #     type Item = [u8];
    /// #     fn decode<'a>(&mut self, src: &'a [u8], _: usize)
    /// #         -> Result<Decoded<&'a [u8]>, CodecError> {
    /// #         Ok(match src.iter().position(|&b| b == D) {
    /// #             Some(i) => Decoded::Frame(&src[..i], i + 1),
    /// #             None => Decoded::NeedMore(None),
    /// #         })
    /// #     }
    /// #     fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
    /// #         dst.extend_from_slice(item);
    /// #         dst.push(D);
    /// #         Ok(())
    /// #     }
    /// # }
    /// # type Lines = Delim<b'\n'>;
    /// # type Frames = Delim<0>;
    /// /// Clients speak `Lines`; each request goes to a backend speaking `Frames`, on a session
    /// /// of its own whose answer completes the reply reserved for it: answers leave in request
    /// /// order, however the backends race.
    /// struct Front {
    ///     backend: std::net::SocketAddr,
    /// }
    ///
    /// impl Handler<Lines> for Front {
    ///     fn on_message(&mut self, s: &mut Session<'_, Lines>, request: &[u8]) {
    ///         let Ok(reply) = s.reserve() else { return s.close() };
    ///         let upstream = Upstream { request: request.to_vec(), reply: Some(reply) };
    ///         // On an error (no room, draining) the reply went with the handler: the session
    ///         // closes once what was answered before it is written.
    ///         let _ = s.core().connect(self.backend, Frames {}, upstream);
    ///     }
    /// }
    ///
    /// struct Upstream {
    ///     request: Vec<u8>,
    ///     reply: Option<Reply>,
    /// }
    ///
    /// impl Upstream {
    ///     fn answer(&mut self, s: &mut Session<'_, Frames>, line: &[u8]) {
    ///         if let Some(reply) = self.reply.take() {
    ///             // Encoded for the client's codec: a line.
    ///             s.complete(reply, &[line, b"\n"].concat());
    ///         }
    ///     }
    /// }
    ///
    /// impl Handler<Frames> for Upstream {
    ///     fn on_open(&mut self, s: &mut Session<'_, Frames>) {
    ///         let _ = s.send(&self.request);
    ///     }
    ///     fn on_message(&mut self, s: &mut Session<'_, Frames>, answer: &[u8]) {
    ///         self.answer(s, answer);
    ///         s.close();
    ///     }
    ///     fn on_error(&mut self, s: &mut Session<'_, Frames>, error: &SessionError) {
    ///         // Refused, unreachable, timed out: `SessionError::Connect` says which.
    ///         self.answer(s, format!("ERR {error}").as_bytes());
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// At once, and without opening anything, when the core holds its maximum of sessions
    /// ([`ConnectError::NoRoom`]), is draining or stopped ([`ConnectError::Closed`]), or the
    /// socket cannot be made ([`ConnectError::Io`]). `codec` and `handler` are then dropped,
    /// and a `Reply` the handler holds counts as dropped uncompleted, which closes its session
    /// (`CloseReason::ReplyDropped`). A caller that must answer such a failure itself reserves
    /// the reply once `connect` has returned and hands it over through the per-core state
    /// (keyed by the handle), or answers inline.
    pub fn connect<C, H>(
        &mut self,
        addr: SocketAddr,
        codec: C,
        handler: H,
    ) -> Result<SessionHandle, ConnectError>
    where
        C: Codec,
        H: Handler<C>,
    {
        self.list(Target::Tcp(addr), codec, handler)
    }

    /// [`connect`](CoreCtx::connect) over a Unix domain stream socket: to a socket file's path,
    /// or to an abstract name (`UnixAddr::new("@name")`). The same handlers, codecs, replies
    /// and timeouts apply; `Session::peer_addr` fails on such a session (a Unix peer has no
    /// `SocketAddr`).
    ///
    /// A Unix connect does not wait: a listener with a full backlog fails it at once with
    /// [`ConnectError::Busy`], and a path with no socket file (or no listener) with
    /// [`ConnectError::Refused`], both through `on_error` as for TCP.
    ///
    /// # Errors
    ///
    /// As [`connect`](CoreCtx::connect); also [`ConnectError::Io`] (`InvalidInput`) at once
    /// for a path too long for a socket address (108 bytes on Linux).
    pub fn connect_unix<C, H>(
        &mut self,
        addr: &UnixAddr,
        codec: C,
        handler: H,
    ) -> Result<SessionHandle, ConnectError>
    where
        C: Codec,
        H: Handler<C>,
    {
        self.list(Target::Unix(addr.clone()), codec, handler)
    }

    /// Lists an outbound session to `target`, to be opened by the worker right after the
    /// current callback.
    fn list<C, H>(
        &mut self,
        target: Target,
        codec: C,
        handler: H,
    ) -> Result<SessionHandle, ConnectError>
    where
        C: Codec,
        H: Handler<C>,
    {
        let out = &self.outbound;
        if out.closed {
            return Err(ConnectError::Closed);
        }
        if out.sessions.saturating_add(out.pending.len()) >= out.max_sessions {
            return Err(ConnectError::NoRoom {
                limit: out.max_sessions,
            });
        }
        let socket = if out.sockets {
            Some(target.socket(out.nodelay).map_err(ConnectError::Io)?)
        } else {
            None
        };
        let id = self.next_id();
        self.outbound.pending.push(PendingConnect {
            target,
            id,
            socket,
            proto: Box::new(Typed::new(codec, handler)),
            tls: None,
        });
        Ok(SessionHandle::unplaced(self.server, id))
    }

    /// [`connect`](CoreCtx::connect), speaking TLS: the session's handshake runs once it is
    /// connected, and `on_open` once the handshake is done (its `Session::tls` then says what
    /// was settled). A failed handshake reaches `on_error` as `SessionError::Tls`, then
    /// `on_close` with `CloseReason::TlsError`. Fails at once with `ConnectError::Io`
    /// (`InvalidInput`) if rustls refuses the configuration.
    pub fn connect_tls<C, H>(
        &mut self,
        addr: SocketAddr,
        tls: &crate::tls::TlsConnect,
        codec: C,
        handler: H,
    ) -> Result<SessionHandle, ConnectError>
    where
        C: Codec,
        H: Handler<C>,
    {
        let session = Self::tls_session(tls)?;
        let handle = self.connect(addr, codec, handler)?;
        self.attach_last(session);
        Ok(handle)
    }

    /// [`connect_unix`](CoreCtx::connect_unix), speaking TLS: as
    /// [`connect_tls`](CoreCtx::connect_tls) (a service behind a local proxy or in a sidecar
    /// that insists on TLS).
    pub fn connect_unix_tls<C, H>(
        &mut self,
        addr: &UnixAddr,
        tls: &crate::tls::TlsConnect,
        codec: C,
        handler: H,
    ) -> Result<SessionHandle, ConnectError>
    where
        C: Codec,
        H: Handler<C>,
    {
        let session = Self::tls_session(tls)?;
        let handle = self.connect_unix(addr, codec, handler)?;
        self.attach_last(session);
        Ok(handle)
    }

    /// A client session of `tls`, or why rustls refuses its configuration.
    fn tls_session(tls: &crate::tls::TlsConnect) -> Result<crate::tls::TlsSession, ConnectError> {
        crate::tls::TlsSession::client(tls)
            .map_err(|e| ConnectError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))
    }

    /// Makes the connect just listed speak TLS with `session`.
    fn attach_last(&mut self, session: crate::tls::TlsSession) {
        if let Some(pending) = self.outbound.pending.last_mut() {
            pending.tls = Some(Box::new(session));
        }
    }

    /// Worker 0 of the unit tests' server 0, with this thread marked as its core (for the
    /// rest of the thread: each test runs on a thread of its own).
    #[cfg(test)]
    pub(crate) fn for_test(state: Box<dyn Any>) -> Self {
        std::mem::forget(route::enter(0, 0));
        CoreCtx::new(0, state, 0, None, None)
    }

    /// Drops the per-core state and the connects not yet opened (the core has stopped; they
    /// may hold replies, whose drops must reach their cores). A panic in a `Drop` is caught.
    pub(crate) fn drop_state(&mut self) {
        let state = std::mem::replace(&mut self.state, Box::new(()));
        let pending = std::mem::take(&mut self.outbound.pending);
        if catch_unwind(AssertUnwindSafe(move || drop((state, pending)))).is_err() {
            log::error!(
                "ringwire: worker {}: per-core state panicked when dropped",
                self.worker
            );
        }
    }

    /// How many accepted sessions (clients, not outbound connections) this core holds now. A
    /// pool of outbound connections uses it while the server drains: its connections are
    /// still needed while a client is served.
    pub fn accepted_sessions(&self) -> usize {
        self.outbound.accepted
    }

    /// The index of the worker (0-based, in start order); not a CPU number.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// How many workers (cores) the server runs; [`submit_to`](CoreCtx::submit_to) takes an
    /// index below it.
    pub fn workers(&self) -> usize {
        self.router.as_ref().map_or(1, |r| r.cores())
    }

    pub(crate) fn server(&self) -> u32 {
        self.server
    }

    pub(crate) fn router(&self) -> Option<Arc<Router>> {
        self.router.clone()
    }

    /// The per-core state, which must be a `T` (the type the server's `core_state`
    /// initialiser returns).
    ///
    /// # Panics
    ///
    /// If the state is of another type: a programming error, named in the message.
    pub fn state<T: 'static>(&mut self) -> &mut T {
        match self.state.downcast_mut::<T>() {
            Some(state) => state,
            None => panic!(
                "ringwire: the per-core state is not a {} (set it with core_state on the \
                 server or client builder)",
                std::any::type_name::<T>()
            ),
        }
    }

    /// The per-core state if it is a `T`.
    pub fn try_state<T: 'static>(&mut self) -> Option<&mut T> {
        self.state.downcast_mut::<T>()
    }

    fn target(&self, worker: usize) -> Result<(), RemoteError> {
        if worker >= self.workers() {
            return Err(RemoteError::NoSuchWorker { worker });
        }
        if self.router.as_ref().is_some_and(|r| r.is_closed(worker)) {
            return Err(RemoteError::Stopped);
        }
        Ok(())
    }

    fn deliver(&self, worker: usize, msg: Msg) -> Result<(), RemoteError> {
        route::deliver(self.router.as_ref(), self.server, worker, msg, false)
    }

    /// Runs `f` on worker `worker` with its context (its per-core state): after the current
    /// callback if `worker` is this one, else at the top of that core's next loop turn (this
    /// core sends it at the end of its turn). Never blocks. Fails at once if there is no such
    /// worker or it has stopped; a worker that stops while `f` travels drops it unrun.
    pub fn run_on(
        &mut self,
        worker: usize,
        f: impl FnOnce(&mut CoreCtx) + Send + 'static,
    ) -> Result<(), RemoteError> {
        self.target(worker)?;
        self.deliver(worker, Msg::Run(Box::new(f)))
    }

    /// Runs `f` on worker `worker` with its context, then `then` with the result back on this
    /// core, with this core's context: a call to the core that owns a shard of the state. To
    /// answer a client with the result, reserve a [`Reply`](crate::Reply) and complete it in
    /// `then` (or in `f`: a `Reply` may be completed on any core).
    ///
    /// Fails at once if there is no such worker or it has stopped. If a core stops while the
    /// call travels, `then` never runs and what it holds is dropped (a reserved reply inside
    /// it then closes its session, as any dropped reply does).
    pub fn submit_to<R, F, T>(&mut self, worker: usize, f: F, then: T) -> Result<(), RemoteError>
    where
        R: Send + 'static,
        F: FnOnce(&mut CoreCtx) -> R + Send + 'static,
        T: FnOnce(&mut CoreCtx, R) + Send + 'static,
    {
        self.target(worker)?;
        let origin = self.worker;
        self.deliver(
            worker,
            Msg::Run(Box::new(move |ctx: &mut CoreCtx| {
                let result = f(ctx);
                let back = Msg::Run(Box::new(move |ctx: &mut CoreCtx| then(ctx, result)));
                // The asking core has stopped: `then` is dropped with what it holds.
                let _ = ctx.deliver(origin, back);
            })),
        )
    }

    /// Appends `bytes` (already encoded for the session's protocol) to the output of the
    /// session `session` names, on whatever core owns it, as if one of its callbacks had
    /// written them: behind its replies still reserved, so a push never overtakes an answer.
    /// Fails at once with [`RemoteError::Gone`] if the session has gone (a handle never reaches
    /// another session, even once its slot is reused); a session that goes while the bytes
    /// travel drops them, and so does one whose handle [`connect`](CoreCtx::connect) gave out
    /// (it had no slot yet, so only its core can tell that it has gone). A session still
    /// connecting keeps the bytes until it is open.
    pub fn write_to(
        &mut self,
        session: SessionHandle,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<(), RemoteError> {
        self.check(&session)?;
        let msg = Msg::Write {
            session,
            bytes: bytes.into(),
        };
        self.deliver(session.worker(), msg)
    }

    /// Closes the session `session` names once its output is written (as its own
    /// `Session::close` would). Fails at once with [`RemoteError::Gone`] if it has gone.
    pub fn close_session(&mut self, session: SessionHandle) -> Result<(), RemoteError> {
        self.check(&session)?;
        self.deliver(session.worker(), Msg::Close { session })
    }

    fn check(&self, session: &SessionHandle) -> Result<(), RemoteError> {
        match &self.router {
            Some(router) => router.check(session),
            None if session.server == self.server && session.worker() == self.worker => Ok(()),
            None => Err(RemoteError::Gone),
        }
    }

    /// Runs `f` on the offload pool (threads off the service cores: for blocking calls and
    /// long computations), then `then` back on this core with its result, or with why there is
    /// none: [`RemoteError::Busy`] if the pool's queue was full (`then` runs right after the
    /// current callback, and this returns the same error), [`RemoteError::Panicked`] if `f`
    /// panicked. So a reply reserved for the request can always be answered, "busy" included.
    pub fn spawn_blocking<R, F, T>(&mut self, f: F, then: T) -> Result<(), RemoteError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
        T: FnOnce(&mut CoreCtx, Result<R, RemoteError>) + Send + 'static,
    {
        let job = Box::new(Blocking {
            f,
            back: Back {
                then,
                origin: self.worker,
                server: self.server,
                router: self.router.clone(),
            },
        });
        match &self.offload {
            Some(pool) => pool.submit(job),
            None => {
                job.refuse(RemoteError::Stopped);
                Err(RemoteError::Stopped)
            }
        }
    }
}

/// A `spawn_blocking` job: the work, and where its result goes.
struct Blocking<F, T> {
    f: F,
    back: Back<T>,
}

/// Where a `spawn_blocking` result goes: `then`, on the core that asked.
struct Back<T> {
    then: T,
    origin: usize,
    server: u32,
    router: Option<Arc<Router>>,
}

impl<T> Back<T> {
    fn answer<R: Send + 'static>(self, result: Result<R, RemoteError>)
    where
        T: FnOnce(&mut CoreCtx, Result<R, RemoteError>) + Send + 'static,
    {
        let then = self.then;
        let back = Msg::Run(Box::new(move |ctx: &mut CoreCtx| then(ctx, result)));
        // From a pool thread this waits while the core's queue is full; on the core itself
        // it queues the answer behind the current callback. It fails only if the core has
        // stopped: `then` is dropped with what it holds.
        let _ = route::deliver(self.router.as_ref(), self.server, self.origin, back, true);
    }
}

impl<R, F, T> Job for Blocking<F, T>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
    T: FnOnce(&mut CoreCtx, Result<R, RemoteError>) + Send + 'static,
{
    fn run(self: Box<Self>) {
        let Blocking { f, back } = *self;
        let result = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
            log::error!(
                "ringwire: offloaded work panicked: {}",
                panic_message(&*payload)
            );
            RemoteError::Panicked
        });
        back.answer(result);
    }

    fn refuse(self: Box<Self>, why: RemoteError) {
        self.back.answer(Err(why));
    }
}

impl fmt::Debug for CoreCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreCtx")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}
