//! The proxy's service: the client handler, the per-core state (each core's own connections to
//! the backends), and the server built around them. The example's `main` and the integration
//! tests (`tests/proxy_redis.rs`) both build servers with [`server`], so the tests drive the
//! code the example runs.
//!
//! A request is parsed and checked on the client's core (`commands.rs`); local answers and
//! errors are sent inline. A request for the backends reserves the client's next reply
//! (`Session::reserve`) and goes out on the core's own connection to the backend of its key
//! (`ketama.rs` places keys as twemproxy does); the backend's reply completes it. A multi-key
//! command over several backends is split and merged (`merge.rs`). The engine keeps the
//! client's output in request order, inline answers included, so pipelining holds end to end.
//!
//! Invariant: every reserved reply is completed exactly once, with the backend's reply or an
//! `-ERR` naming the backend that failed; the pool completes every waiter (a down backend at
//! once), so no request waits on a backend that has gone.

#[path = "commands.rs"]
pub mod commands;
#[path = "ketama.rs"]
pub mod ketama;
#[path = "merge.rs"]
pub mod merge;
pub use ringwire::backend as pool;

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ringwire::codec::resp::{self, Args, Command, Reply, Resp};

use ringwire::{CoreCtx, Handler, ReplyError, Server, Session, SessionError};

use commands::{route, Multi, Route, Span};
use ketama::Continuum;
use merge::{Merge, Pending, Plan};
use pool::{Backends, PoolConfig};

/// One backend: its name as written (`HOST:PORT`, what twemproxy hashes) and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// `HOST:PORT`, as given.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Backend {
    /// Resolves `HOST:PORT` (its first address).
    pub fn resolve(name: &str) -> io::Result<Backend> {
        let addr = name.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{name}: no address"))
        })?;
        Ok(Backend {
            name: name.to_owned(),
            addr,
        })
    }

    /// A backend named by its address.
    #[allow(dead_code)] // The tests name backends this way; the command line resolves names.
    pub fn at(addr: SocketAddr) -> Backend {
        Backend {
            name: addr.to_string(),
            addr,
        }
    }
}

/// How long a request may wait for its backend's reply unless the command line says
/// otherwise (`--request-timeout-ms`), in milliseconds.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 1_000;

/// The longest wait before reconnecting to a backend that failed, unless the command line
/// says otherwise (`--backoff-max-ms`), in milliseconds.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 2_000;

/// The largest backend reply taken (`--max-reply-bytes`): Redis's largest value, 512 MiB.
/// Each backend connection may hold this much while such a reply arrives.
pub const DEFAULT_MAX_REPLY_BYTES: usize = ringwire::DEFAULT_OUTBOUND_MAX_FRAME;

/// The pool settings of the command line: a request timeout in milliseconds (0: none) and the
/// longest back-off; the rest is the library's default.
pub fn pool_config(request_timeout_ms: u64, backoff_max_ms: u64) -> PoolConfig {
    let ms = Duration::from_millis;
    let default = PoolConfig::default();
    PoolConfig::default()
        .with_request_timeout((request_timeout_ms > 0).then(|| ms(request_timeout_ms)))
        .with_backoff(default.backoff_min, ms(backoff_max_ms))
}

/// One core's state: its connections to the backends and the key placement (the same on
/// every core).
pub struct Core {
    /// A handle to the core's pool: callbacks clone it out (one reference count) before
    /// they send, so no borrow of the core's state is held while a waiter runs.
    backends: Backends<Pending>,
    ring: Arc<Continuum>,
    connected: bool,
}

/// This core's counters of each backend, in backend order (from a task run on the core).
pub fn backend_stats(ctx: &mut CoreCtx) -> Vec<pool::BackendStats> {
    match ctx.try_state::<Core>() {
        Some(core) => core.backends.stats(),
        None => Vec::new(),
    }
}

/// A proxy server over `backends` (in configuration order; a key's backend is its index
/// here): clients speak `codec`, each core connects to every backend with a pool made by
/// `pool`.
pub fn server(
    codec: Resp,
    backends: Vec<Backend>,
    pool: impl Fn() -> PoolConfig + Send + Sync + 'static,
) -> Server<Resp, Proxy> {
    let names: Vec<&str> = backends
        .iter()
        .map(|b| ketama::server_name(&b.name))
        .collect();
    let ring = Arc::new(Continuum::new(&names));
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    Server::new(codec, |ctx: &mut CoreCtx| {
        // The core's connections open on its own ring, with its first client.
        let core = ctx.state::<Core>();
        if !core.connected {
            core.connected = true;
            let mut backends = core.backends.clone();
            backends.connect_all(ctx);
        }
        Proxy::default()
    })
    .core_state(move |_| Core {
        backends: Backends::new(addrs.clone(), pool()),
        ring: ring.clone(),
        connected: false,
    })
}

/// One client session's handler: a scratch buffer for the requests it forwards.
#[derive(Default)]
pub struct Proxy {
    wire: Vec<u8>,
}

impl Proxy {
    /// Answers or forwards one request, or fails, having done nothing, for want of a reply
    /// slot.
    fn serve(&mut self, s: &mut Session<'_, Resp>, cmd: &Command<'_>) -> Result<(), ReplyError> {
        let mut args = cmd.args();
        let name = args.next().unwrap_or_default();
        match route(cmd) {
            Route::Local(reply) => send(s, &reply),
            Route::Quit => {
                send(s, &Reply::OK);
                s.close();
            }
            Route::Key(key) => {
                let reply = s.reserve()?;
                let backend = s.core().state::<Core>().ring.server_of(key);
                self.forward(s.core(), backend, cmd, Pending::Whole(reply));
            }
            Route::Together(span) => {
                let ring = s.core().state::<Core>().ring.clone();
                let keys = args.take(if span == Span::Two { 2 } else { usize::MAX });
                let mut backends = keys.map(|key| ring.server_of(key));
                let first = backends.next().unwrap_or(0);
                if backends.all(|b| b == first) {
                    let reply = s.reserve()?;
                    self.forward(s.core(), first, cmd, Pending::Whole(reply));
                } else {
                    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    let text = format!("ERR the keys of '{name}' are on different backends");
                    send(s, &Reply::Error(text.into()));
                }
            }
            Route::Split(multi) => {
                let ring = s.core().state::<Core>().ring.clone();
                let plan = merge::plan(multi, args.clone(), |key| ring.server_of(key));
                let reply = s.reserve()?;
                match plan.parts[..] {
                    // One backend holds every key: its reply is the client's as it is.
                    [(backend, _)] => self.forward(s.core(), backend, cmd, Pending::Whole(reply)),
                    _ => self.split(s.core(), multi, plan, args, reply),
                }
            }
        }
        Ok(())
    }

    /// Sends each part of `plan` to its backend; the parts' waiters share the merge that
    /// completes `reply`. `args`: the request's arguments after its name.
    fn split(
        &mut self,
        ctx: &mut CoreCtx,
        multi: Multi,
        plan: Plan,
        args: Args<'_>,
        reply: ringwire::Reply,
    ) {
        let mut backends = ctx.state::<Core>().backends.clone();
        let addrs = plan.parts.iter().map(|(b, _)| backends.addr(*b));
        let merge = Merge::new(multi, plan.part_of_key, addrs.collect(), reply);
        let merge = Rc::new(RefCell::new(merge));
        let args: Vec<&[u8]> = args.collect();
        for (part, (backend, keys)) in plan.parts.iter().enumerate() {
            self.wire.clear();
            merge::encode_part(multi, &args, keys, &mut self.wire);
            let waiter = Pending::Part {
                merge: merge.clone(),
                part,
            };
            backends.send(ctx, *backend, &self.wire, waiter);
        }
    }

    /// Sends `cmd`, re-encoded as an array of bulk strings, to backend `backend`.
    fn forward(&mut self, ctx: &mut CoreCtx, backend: usize, cmd: &Command<'_>, waiter: Pending) {
        self.wire.clear();
        encode_args(cmd.args(), cmd.len(), &mut self.wire);
        let mut backends = ctx.state::<Core>().backends.clone();
        backends.send(ctx, backend, &self.wire, waiter);
    }
}

impl Handler<Resp> for Proxy {
    fn on_message(&mut self, s: &mut Session<'_, Resp>, cmd: Command<'_>) {
        if cmd.is_empty() {
            return; // Redis answers nothing to an empty request.
        }
        if let Err(e) = self.serve(s, &cmd) {
            // Cannot happen: reading pauses at `max_replies`, and no request is delivered
            // while the session stays at that bound. Answer and close rather than panic.
            log::warn!("proxy: {e}");
            send(s, &Reply::Error("ERR too many replies outstanding".into()));
            s.close();
        }
    }

    fn on_error(&mut self, s: &mut Session<'_, Resp>, error: &SessionError) {
        if let SessionError::Codec { error, .. } = error {
            // The engine writes this, then closes the session.
            let _ = s.send(&resp::protocol_error(error));
        }
    }
}

/// Sends `reply` inline (behind any reply still reserved).
fn send(s: &mut Session<'_, Resp>, reply: &Reply) {
    if let Err(e) = s.send(reply) {
        log::warn!("proxy: cannot encode a reply: {e}");
        s.close();
    }
}

/// Appends `args` (`argc` of them) as a RESP array of bulk strings, as clients send commands
/// (an inline command is forwarded in this form too).
fn encode_args(args: Args<'_>, argc: usize, dst: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = write!(dst, "*{argc}\r\n");
    for arg in args {
        let _ = write!(dst, "${}\r\n", arg.len());
        dst.extend_from_slice(arg);
        dst.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use ringwire::codec::resp::Resp;
    use ringwire::testing::Harness;
    use ringwire::CloseReason;

    use super::{Backend, Proxy};

    /// A session whose core has a pool over backends it never reaches (the test kit opens no
    /// sockets): only what is answered locally comes back.
    fn local() -> Harness<Resp, Proxy> {
        let addrs = vec!["127.0.0.1:1".parse().unwrap()];
        let ring = std::sync::Arc::new(super::Continuum::new(&["127.0.0.1:1"]));
        let core = super::Core {
            backends: super::Backends::new(addrs, super::PoolConfig::default()),
            ring,
            connected: true,
        };
        Harness::new(Resp::default(), Proxy::default()).core_state(core)
    }

    #[test]
    fn local_answers_pipelined_at_every_split() {
        let wire: &[u8] =
            b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n\
            KEYS *\r\nGET\r\n*0\r\nSELECT 2\r\n";
        let expected: &[u8] = b"+PONG\r\n$2\r\nhi\r\n+OK\r\n\
            -ERR 'keys' is not supported by this proxy\r\n\
            -ERR wrong number of arguments for 'get' command\r\n\
            -ERR SELECT is not allowed through this proxy: only database 0\r\n";
        assert_eq!(local().feed(wire), expected);
        for at in 0..=wire.len() {
            let mut t = local();
            let mut out = t.feed(&wire[..at]);
            out.extend(t.feed(&wire[at..]));
            assert_eq!(out, expected, "split at {at}");
            assert_eq!(t.closed(), None);
        }
    }

    #[test]
    fn a_protocol_error_is_answered_then_closes_the_session() {
        let mut t = local();
        let out = t.feed(b"PING\r\n*1\r\n$x\r\nPING\r\n");
        assert_eq!(
            out,
            b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(t.closed(), Some(CloseReason::CodecError));
    }

    #[test]
    fn quit_answers_then_closes() {
        let mut t = local();
        assert_eq!(t.feed(b"QUIT\r\nPING\r\n"), b"+OK\r\n");
        assert_eq!(t.closed(), Some(CloseReason::Local));
    }

    /// Inline commands go to the backends as arrays of bulk strings.
    #[test]
    fn requests_are_forwarded_as_arrays() {
        use ringwire::codec::{Codec, Decoded};
        let Ok(Decoded::Frame(cmd, _)) = Resp::default().decode(b"SET  k \t v\r\n", 64) else {
            panic!()
        };
        let mut wire = Vec::new();
        super::encode_args(cmd.args(), cmd.len(), &mut wire);
        assert_eq!(wire, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
    }

    #[test]
    fn backends_resolve_and_keep_their_names() {
        let b = Backend::resolve("127.0.0.1:6379").unwrap();
        assert_eq!(b.name, "127.0.0.1:6379");
        assert_eq!(b.addr, "127.0.0.1:6379".parse().unwrap());
        assert_eq!(Backend::at(b.addr), b);
    }
}
