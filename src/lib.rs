//! ringwire: a thread-per-core io_uring runtime for framed TCP protocols on Linux.
//!
//! One pinned thread per core owns its listener (SO_REUSEPORT), its io_uring, its provided
//! buffers and its sessions. It accepts, receives and writes through its own ring, decodes
//! frames with a [`Codec`], and runs the [`Handler`] inline. Nothing on the data path crosses
//! cores: no locks, no queues between threads, no allocation per message.
//!
//! ```no_run
//! use ringwire::{codec::Len32, Handler, Server, Session};
//!
//! /// Replies to every frame with its length, as text.
//! struct Count;
//!
//! impl Handler<Len32> for Count {
//!     fn on_message(&mut self, session: &mut Session<'_, Len32>, frame: &[u8]) {
//!         let reply = frame.len().to_string();
//!         if session.send(reply.as_bytes()).is_err() {
//!             session.close();
//!         }
//!     }
//! }
//!
//! Server::new(Len32, || Count).bind("127.0.0.1:7000".parse().unwrap()).cores(2).run()?;
//! # Ok::<(), ringwire::ServerError>(())
//! ```
//!
//! Handlers run inline on their core: a slow callback stalls every session of that core.
//!
//! A handler is unit-tested without sockets with [`testing::Harness`]: it feeds bytes through
//! the codec into the handler on a test clock and records what the handler did.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
mod client;
pub mod codec;
mod factory;
pub mod handlers;
pub mod report;
mod server;
mod settings;
pub mod signal;
pub mod tls;

pub use client::{Client, ClientHandle};
pub use codec::Codec;
pub use factory::MakeHandler;
pub use ringwire_runtime::probe::probe;
pub use ringwire_runtime::{
    CloseReason, ConnectError, CoreCtx, CoreLatency, CoreSnapshot, CoreStats, Counter, DriverKind,
    Handler, IoOp, ProbeError, RemoteError, RemoteHandle, Reply, ReplyError, ServerError,
    ServerHandle, ServerInfo, ServerStats, Session, SessionError, SessionHandle, SessionId,
    Stopper, Target, TimerError, TimerId, UnixAddr, UringFeatures, DEFAULT_OUTBOUND_MAX_FRAME,
};
pub use server::Server;

/// Unit tests for handlers, without sockets: feed bytes through a codec into a handler on a
/// test clock and check what it wrote, its ticks, errors and closes.
pub use ringwire_runtime::testing;

/// Not public API: the engine's frame reassembly and buffer pool, which the fuzz targets and
/// the benchmarks drive directly to mirror what a core does. Hidden from the docs and exempt
/// from semver; handlers never need it.
#[doc(hidden)]
pub mod engine {
    pub use ringwire_runtime::codec::{Fed, Flow, FrameReader, FRAME_HEADROOM};
    pub use ringwire_runtime::BufPool;
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
