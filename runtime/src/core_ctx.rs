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

use crate::codec::Codec;
use crate::error::ConnectError;
use crate::handler::Handler;
use crate::reply::SessionHandle;
use crate::session::SessionId;
use crate::sys;
use crate::worker::{ErasedProto, Typed};

/// The context of one worker (one pinned core's loop): its index, and the per-core state the
/// server's `core_state` initialiser made for it on that core's thread (`()` without one).
///
/// Only the engine makes one (so a callback cannot swap its core's context for another); the
/// `core_state` builder method of `ringwire` shows it in use.
pub struct CoreCtx {
    worker: usize,
    state: Box<dyn Any>,
    /// Replies completed during a callback for other sessions of this core, applied by the
    /// core right after it: (session, reply id, bytes).
    pub(crate) completions: Vec<(SessionHandle, u64, Vec<u8>)>,
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
    /// The core's bound on sessions (`usize::MAX` until the worker says).
    pub(crate) max_sessions: usize,
    /// The core opens no new sessions: it is draining or stopped.
    pub(crate) closed: bool,
    /// TCP_NODELAY on outbound sockets.
    pub(crate) nodelay: bool,
    /// Make sockets. Off in the test kit, which connects nothing.
    pub(crate) sockets: bool,
}

/// One outbound session to open: its address, its id, its socket (none in the test kit) and
/// its protocol.
pub(crate) struct PendingConnect {
    pub(crate) addr: SocketAddr,
    pub(crate) id: SessionId,
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) proto: Box<dyn ErasedProto>,
}

impl CoreCtx {
    /// A context for worker `worker` holding `state`.
    pub(crate) fn new(worker: usize, state: Box<dyn Any>) -> Self {
        CoreCtx {
            worker,
            state,
            completions: Vec::new(),
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
    ///             let _ = s.complete(reply, &[line, b"\n"].concat());
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
        let out = &self.outbound;
        if out.closed {
            return Err(ConnectError::Closed);
        }
        if out.sessions.saturating_add(out.pending.len()) >= out.max_sessions {
            return Err(ConnectError::NoRoom {
                limit: out.max_sessions,
            });
        }
        let fd = if out.sockets {
            Some(sys::tcp_socket(addr, out.nodelay).map_err(ConnectError::Io)?)
        } else {
            None
        };
        let id = self.next_id();
        self.outbound.pending.push(PendingConnect {
            addr,
            id,
            fd,
            proto: Box::new(Typed::new(codec, handler)),
        });
        Ok(SessionHandle::unplaced(id))
    }

    /// The index of the worker (0-based, in start order); not a CPU number.
    pub fn worker(&self) -> usize {
        self.worker
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
}

impl fmt::Debug for CoreCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreCtx")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}
