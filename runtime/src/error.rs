//! Typed errors: why a server could not start, and what went wrong in a session.
//!
//! Each carries its context (the setup step, the core, the session, the operation) and
//! converts into `io::Error` for callers that only want that.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::codec::CodecError;
use crate::errno::{describe as errno_of, describe_uring};
use crate::session::SessionId;

/// Why a server could not start or stopped abnormally.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid; the text says which setting and why.
    Config(String),
    /// A listening socket could not be opened.
    Bind {
        /// The address being bound.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// Another socket already listens on the address, and sharing it was not asked for
    /// (`Server::share_port`).
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// io_uring could not be set up on a core.
    IoUringUnavailable {
        /// The step that failed: ring setup, buffer ring registration, ...
        step: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// The io_uring driver was forced (builder or `RINGWIRE_DRIVER`) where it cannot work.
    DriverUnavailable {
        /// What the probe found.
        reason: String,
    },
    /// A driver could not be set up (other than io_uring being unavailable).
    Setup {
        /// The step that failed.
        step: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// A worker failed while serving.
    Worker {
        /// The worker's index.
        core: usize,
        /// What failed.
        source: io::Error,
    },
    /// A worker thread panicked outside any user callback (an engine bug).
    WorkerPanicked {
        /// The worker's index.
        core: usize,
        /// The panic message.
        message: String,
    },
    /// A worker thread could not be spawned.
    Spawn(io::Error),
    /// A live server already listens on this Unix socket (a path or `@name`); its file is
    /// left alone.
    UnixAddrInUse {
        /// The path, or `@` and the abstract name.
        path: String,
    },
    /// The path asked for holds a file that is not a socket; it is never removed.
    UnixNotSocket {
        /// The path.
        path: String,
    },
    /// A Unix listening socket could not be opened.
    UnixBind {
        /// The path, or `@` and the abstract name.
        path: String,
        /// What the kernel said.
        source: io::Error,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Config(msg) => write!(f, "invalid configuration: {msg}"),
            ServerError::Bind { addr, source } => {
                write!(f, "cannot listen on {addr}: {}", errno_of(source))
            }
            ServerError::UnixAddrInUse { path } => write!(
                f,
                "cannot listen on {path}: a server listens there (its socket accepts connections)"
            ),
            ServerError::UnixNotSocket { path } => write!(
                f,
                "cannot listen on {path}: a file that is not a socket is there (not removed)"
            ),
            ServerError::UnixBind { path, source } => {
                write!(f, "cannot listen on {path}: {}", errno_of(source))
            }
            ServerError::AddrInUse { addr } => write!(
                f,
                "cannot listen on {addr}: address in use (another socket listens there; \
                 Server::share_port(true) joins it, for a zero-downtime restart)"
            ),
            ServerError::IoUringUnavailable { step, source } => write!(
                f,
                "io_uring unavailable: {step} failed with {}",
                describe_uring(step, source)
            ),
            ServerError::DriverUnavailable { reason } => {
                write!(f, "io_uring driver forced but unavailable: {reason}")
            }
            ServerError::Setup { step, source } => {
                write!(f, "driver setup failed: {step}: {}", errno_of(source))
            }
            ServerError::Worker { core, source } => write!(f, "worker {core} failed: {source}"),
            ServerError::WorkerPanicked { core, message } => {
                write!(f, "worker {core} panicked: {message}")
            }
            ServerError::Spawn(e) => write!(f, "cannot spawn a worker thread: {e}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Bind { source, .. }
            | ServerError::UnixBind { source, .. }
            | ServerError::IoUringUnavailable { source, .. }
            | ServerError::Setup { source, .. }
            | ServerError::Worker { source, .. } => Some(source),
            ServerError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ServerError> for io::Error {
    fn from(e: ServerError) -> io::Error {
        let kind = match &e {
            ServerError::Config(_) => io::ErrorKind::InvalidInput,
            ServerError::Bind { source, .. }
            | ServerError::UnixBind { source, .. }
            | ServerError::IoUringUnavailable { source, .. }
            | ServerError::Setup { source, .. }
            | ServerError::Worker { source, .. }
            | ServerError::Spawn(source) => source.kind(),
            ServerError::AddrInUse { .. } | ServerError::UnixAddrInUse { .. } => {
                io::ErrorKind::AddrInUse
            }
            ServerError::UnixNotSocket { .. } => io::ErrorKind::AlreadyExists,
            ServerError::WorkerPanicked { .. } => io::ErrorKind::Other,
            ServerError::DriverUnavailable { .. } => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}

/// The I/O operation a session error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Receiving from the peer.
    Recv,
    /// Sending to the peer.
    Send,
    /// Connecting to the peer (outbound sessions). A failed connect is reported as
    /// [`SessionError::Connect`], which classifies it; this names the operation elsewhere.
    Connect,
}

/// Why an outbound connection failed or could not be opened.
///
/// `CoreCtx::connect` returns the last three synchronously; the others reach the new session's
/// `Handler::on_error` as [`SessionError::Connect`] once the connect fails, and `on_close`
/// follows. Each failure that came from the kernel carries its `io::Error`.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// Nothing listens at the address (ECONNREFUSED; for a Unix socket also ENOENT, no
    /// socket file at the path).
    Refused(io::Error),
    /// No route to the host or its network (EHOSTUNREACH, ENETUNREACH).
    Unreachable(io::Error),
    /// The connection was not established within the connect timeout (the builder's
    /// `connect_timeout`), or the kernel gave up first (ETIMEDOUT).
    TimedOut(io::Error),
    /// The connect would have to wait (EAGAIN): for a Unix socket, its listener's backlog is
    /// full (it is not accepting fast enough). Unix connects do not wait for room, as a TCP
    /// connect's retried SYN would: the caller decides whether to retry later.
    Busy(io::Error),
    /// Another failure of the connect or of making its socket.
    Io(io::Error),
    /// The core holds its maximum of sessions already (`max_sessions`; connects not yet
    /// opened count).
    NoRoom {
        /// The core's bound.
        limit: usize,
    },
    /// The core is draining or stopped: it opens no new sessions.
    Closed,
}

impl ConnectError {
    /// Classifies a failed connect by its errno.
    pub(crate) fn from_io(error: io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::ECONNREFUSED | libc::ENOENT) => ConnectError::Refused(error),
            Some(libc::EAGAIN) => ConnectError::Busy(error),
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => ConnectError::Unreachable(error),
            Some(libc::ETIMEDOUT) => ConnectError::TimedOut(error),
            _ => ConnectError::Io(error),
        }
    }

    /// The `io::ErrorKind` the error converts to.
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            ConnectError::Refused(_) => io::ErrorKind::ConnectionRefused,
            ConnectError::Unreachable(_) => io::ErrorKind::HostUnreachable,
            ConnectError::TimedOut(_) => io::ErrorKind::TimedOut,
            ConnectError::Busy(_) => io::ErrorKind::WouldBlock,
            ConnectError::Io(e) => e.kind(),
            ConnectError::NoRoom { .. } => io::ErrorKind::OutOfMemory,
            ConnectError::Closed => io::ErrorKind::NotConnected,
        }
    }

    /// The kernel's error, where the failure came from the kernel (or the connect timeout).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            ConnectError::Refused(e)
            | ConnectError::Unreachable(e)
            | ConnectError::TimedOut(e)
            | ConnectError::Busy(e)
            | ConnectError::Io(e) => Some(e),
            ConnectError::NoRoom { .. } | ConnectError::Closed => None,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "connection refused: {}", errno_of(e)),
            ConnectError::Unreachable(e) => write!(f, "unreachable: {}", errno_of(e)),
            ConnectError::TimedOut(e) => write!(f, "timed out: {}", errno_of(e)),
            ConnectError::Busy(e) => write!(
                f,
                "busy (a Unix listener's backlog is full): {}",
                errno_of(e)
            ),
            ConnectError::Io(e) => write!(f, "{}", errno_of(e)),
            ConnectError::NoRoom { limit } => {
                write!(f, "no room: the core holds its maximum of {limit} sessions")
            }
            ConnectError::Closed => write!(f, "the core is draining or stopped"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io_error().map(|e| e as _)
    }
}

impl From<ConnectError> for io::Error {
    fn from(e: ConnectError) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

/// Something that went wrong in one session. It reaches `Handler::on_error`, and the session
/// is closed; other sessions are not affected.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer sent bytes the codec rejects (malformed, or a frame over the maximum size).
    Codec {
        /// The session.
        session: SessionId,
        /// What the codec said.
        error: CodecError,
    },
    /// An outbound session's connect failed (refused, unreachable, timed out, ...): the
    /// session never opened, and `on_close` follows.
    Connect {
        /// The session.
        session: SessionId,
        /// Why, classified.
        error: ConnectError,
    },
    /// A receive or send failed.
    Io {
        /// The session.
        session: SessionId,
        /// Which operation.
        op: IoOp,
        /// What the kernel said.
        error: io::Error,
    },
    /// A callback of the handler or codec panicked.
    Panic {
        /// The session.
        session: SessionId,
        /// The callback that panicked.
        callback: &'static str,
        /// The panic message.
        message: String,
    },
    /// The handler produced more pending output than the session's limit.
    OutputLimit {
        /// The session.
        session: SessionId,
        /// Bytes pending.
        pending: usize,
        /// The limit (`Config::max_output`).
        limit: usize,
    },
    /// TLS failed: the peer sent something that is not TLS (garbage instead of a
    /// ClientHello), the handshake failed (no shared version or cipher suite, a certificate
    /// not trusted, a client certificate missing under mutual TLS), or a record did not
    /// decrypt. The alert rustls queued is sent, then the session closes
    /// (`CloseReason::TlsError`).
    Tls {
        /// The session.
        session: SessionId,
        /// What rustls said.
        error: rustls::Error,
    },
}

impl SessionError {
    /// The session the error belongs to.
    pub fn session(&self) -> SessionId {
        match self {
            SessionError::Codec { session, .. }
            | SessionError::Connect { session, .. }
            | SessionError::Io { session, .. }
            | SessionError::Panic { session, .. }
            | SessionError::OutputLimit { session, .. }
            | SessionError::Tls { session, .. } => *session,
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Codec { session, error } => write!(f, "session {session}: {error}"),
            SessionError::Connect { session, error } => {
                write!(f, "session {session}: connect failed: {error}")
            }
            SessionError::Io { session, op, error } => {
                write!(f, "session {session}: {op:?} failed: {}", errno_of(error))
            }
            SessionError::Panic {
                session,
                callback,
                message,
            } => write!(f, "session {session}: {callback} panicked: {message}"),
            SessionError::OutputLimit {
                session,
                pending,
                limit,
            } => write!(
                f,
                "session {session}: {pending} bytes of output pending, over the limit of {limit}"
            ),
            SessionError::Tls { session, error } => write!(f, "session {session}: TLS: {error}"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Codec { error, .. } => Some(error),
            SessionError::Connect { error, .. } => Some(error),
            SessionError::Io { error, .. } => Some(error),
            SessionError::Tls { error, .. } => Some(error),
            SessionError::Panic { .. } | SessionError::OutputLimit { .. } => None,
        }
    }
}

impl From<SessionError> for io::Error {
    fn from(e: SessionError) -> io::Error {
        let kind = match &e {
            SessionError::Codec { .. } => io::ErrorKind::InvalidData,
            SessionError::Io { error, .. } => error.kind(),
            SessionError::Connect { error, .. } => error.io_kind(),
            SessionError::Panic { .. } => io::ErrorKind::Other,
            SessionError::OutputLimit { .. } => io::ErrorKind::OutOfMemory,
            SessionError::Tls { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// The text of a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_eperm_names_the_cause() {
        let e = ServerError::IoUringUnavailable {
            step: "ring setup",
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("io_uring unavailable: ring setup failed with EPERM"),
            "{text}"
        );
        assert!(text.contains("io_uring_disabled"), "{text}");
        assert!(text.contains("seccomp"), "{text}");
    }

    #[test]
    fn a_refused_connect_names_its_errno() {
        let e = SessionError::Io {
            session: SessionId::new(0, 3),
            op: IoOp::Connect,
            error: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        let text = e.to_string();
        assert!(
            text.contains("Connect failed: ECONNREFUSED (111, nothing listens"),
            "{text}"
        );
    }

    #[test]
    fn memlock_failure_says_what_to_change() {
        let e = ServerError::IoUringUnavailable {
            step: "buffer ring registration",
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        };
        assert!(e.to_string().contains("ulimit -l"), "{e}");
    }
}
