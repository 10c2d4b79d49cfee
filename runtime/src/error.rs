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
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Config(msg) => write!(f, "invalid configuration: {msg}"),
            ServerError::Bind { addr, source } => {
                write!(f, "cannot listen on {addr}: {}", errno_of(source))
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
            | ServerError::IoUringUnavailable { source, .. }
            | ServerError::Setup { source, .. }
            | ServerError::Worker { source, .. }
            | ServerError::Spawn(source) => source.kind(),
            ServerError::AddrInUse { .. } => io::ErrorKind::AddrInUse,
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
    /// Connecting to the peer (outbound sessions).
    Connect,
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
}

impl SessionError {
    /// The session the error belongs to.
    pub fn session(&self) -> SessionId {
        match self {
            SessionError::Codec { session, .. }
            | SessionError::Io { session, .. }
            | SessionError::Panic { session, .. }
            | SessionError::OutputLimit { session, .. } => *session,
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Codec { session, error } => write!(f, "session {session}: {error}"),
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
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Codec { error, .. } => Some(error),
            SessionError::Io { error, .. } => Some(error),
            SessionError::Panic { .. } | SessionError::OutputLimit { .. } => None,
        }
    }
}

impl From<SessionError> for io::Error {
    fn from(e: SessionError) -> io::Error {
        let kind = match &e {
            SessionError::Codec { .. } => io::ErrorKind::InvalidData,
            SessionError::Io { error, .. } => error.kind(),
            SessionError::Panic { .. } => io::ErrorKind::Other,
            SessionError::OutputLimit { .. } => io::ErrorKind::OutOfMemory,
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
