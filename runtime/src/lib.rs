//! ringwire-runtime: the per-core io_uring engine behind `ringwire`.
//!
//! One pinned thread per core owns its listener (SO_REUSEPORT), its ring, its provided-buffer
//! ring and its session slab; it accepts, receives and sends through io_uring, decodes frames
//! and runs the handler inline. Nothing on the data path is shared between cores.
//!
//! Layout: [`codec`], [`handler`] and [`session`] are what handlers see; [`testing`] runs a
//! handler without sockets, for its unit tests; `worker` is the driver-neutral core (sessions,
//! codec pipeline, write batching, dispatch); `driver` is the boundary to the code that
//! submits and completes I/O, with `driver::uring` the io_uring driver built from `ring`,
//! `buf_ring` and one `op` file per operation; `sys` wraps syscalls; `mailbox` carries messages between cores.
//!
//! Most users want the `ringwire` crate, which re-exports what is public here.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod codec;
pub mod config;
pub mod core_ctx;
pub mod error;
pub mod handler;
pub mod info;
pub mod latency;
pub mod pool;
pub mod probe;
pub mod remote;
pub mod reply;
pub mod session;
pub mod stats;
pub mod target;
pub mod testing;
pub mod tls;
pub mod unix;

#[cfg(feature = "bench-support")]
#[doc(hidden)]
pub mod bench_support;
mod buf_ring;
mod cpus;
mod doorbell;
mod driver;
mod errno;
mod ktls;
mod listener;
// The transport between cores (bounded rings, the sleep announcement, the doorbell rule). The
// worker loop drains its inbox and announces its sleep; so far only off-core threads send
// (`RemoteHandle`): the core-to-core side (`Outbox`) is not used yet.
#[allow(dead_code)]
mod mailbox;
mod offload;
mod op;
mod output;
mod ring;
mod route;
mod server;
mod sys;
mod timer;
mod user_data;
mod worker;

pub use codec::{Codec, CodecError, Decoded, Fed, Flow, FrameReader, FRAME_HEADROOM};
pub use config::{Config, DEFAULT_OUTBOUND_MAX_FRAME};
pub use core_ctx::CoreCtx;
pub use error::{ConnectError, IoOp, ServerError, SessionError};
pub use handler::Handler;
pub use info::ServerInfo;
pub use pool::BufPool;
pub use probe::{probe, DriverKind, ProbeError, UringFeatures};
pub use remote::{RemoteError, RemoteHandle};
pub use reply::{Reply, ReplyError, SessionHandle};
pub use server::{start, CoreStateInit, Hooks, ServerHandle, Stopper, WorkerHook};
pub use session::{CloseReason, Session, SessionId};
pub use stats::{CoreSnapshot, CoreStats, Counter, ServerStats};
pub use target::Target;
pub use timer::{TimerError, TimerId};
pub use unix::UnixAddr;
pub use worker::CoreLatency;
