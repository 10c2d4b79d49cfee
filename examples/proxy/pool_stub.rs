//! TEMPORARY stand-in for the library's backend pool (`ringwire::backend`, issue 12, being
//! built on branch `pool`) and for the client-side RESP codec it comes with
//! (`ringwire::codec::resp::{RespReplies, parse_reply, ReplyView, ArrayView}`). It has the
//! library's names and signatures so that the proxy compiles and its tests run meanwhile; at
//! the merge this file goes, and `service.rs` imports the library instead (two `use` lines).
//! Nothing in the proxy depends on how it works inside.
//!
//! What it does, minimally: one connection per backend per core (opened with
//! `CoreCtx::connect` on the core's own ring, lazily or by `connect_all`), requests pipelined
//! on it, a FIFO of waiters answered in order as replies arrive. Requests made while it
//! connects are queued and written once it is open. A failed connect or a closed connection
//! completes every waiter with an error and marks the backend down for a backoff (doubling
//! from `backoff_min` to `backoff_max`); while down, `send` completes the waiter at once with
//! `BackendError::Down`; the first `send` after the backoff reconnects. It does not implement
//! `request_timeout` or `conns_per_backend` above 1, which the library does.

// The whole API is stood in for, whether the proxy uses it or not.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringwire::{CloseReason, CoreCtx, Handler, Session, SessionError, SessionHandle};

use reply::RespReplies;

/// How the pool connects and how long it waits.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Connections per backend per core (the stub opens 1).
    pub conns_per_backend: usize,
    /// How long a request may wait for its reply (not enforced by the stub).
    pub request_timeout: Option<Duration>,
    /// The first wait before reconnecting to a backend that failed.
    pub backoff_min: Duration,
    /// The longest wait before reconnecting.
    pub backoff_max: Duration,
    /// Most requests waiting on one backend; past it `send` answers `Busy`.
    pub max_pending: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            conns_per_backend: 1,
            request_timeout: None,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_pending: 64 * 1024,
        }
    }
}

/// What waits for one backend reply; completed exactly once, on the core that sent.
pub trait Waiter: 'static {
    /// The reply's raw bytes (one whole RESP reply), or why there is none.
    fn done(self, ctx: &mut CoreCtx, reply: Result<&[u8], BackendError>);
}

/// Why a request got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend is down (connect failed, or within its backoff).
    Down {
        /// The backend.
        addr: SocketAddr,
    },
    /// No reply within the request timeout.
    Timeout {
        /// The backend.
        addr: SocketAddr,
    },
    /// The connection closed with the request in flight.
    Closed {
        /// The backend.
        addr: SocketAddr,
    },
    /// Too many requests waiting on the backend.
    Busy {
        /// The backend.
        addr: SocketAddr,
    },
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Down { addr } => write!(f, "backend {addr} is down"),
            BackendError::Timeout { addr } => write!(f, "backend {addr} timed out"),
            BackendError::Closed { addr } => write!(f, "backend {addr} closed the connection"),
            BackendError::Busy { addr } => write!(f, "backend {addr} is busy"),
        }
    }
}

impl std::error::Error for BackendError {}

/// Counters of one backend on one core.
#[derive(Clone, Debug, Default)]
pub struct BackendStats {
    /// Requests sent.
    pub sent: u64,
    /// Replies received.
    pub replies: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

/// One core's connections to the backends, in the order given.
pub struct Backends<W: Waiter> {
    links: Vec<Rc<RefCell<Link<W>>>>,
    cfg: PoolConfig,
}

struct Link<W> {
    addr: SocketAddr,
    state: State,
    /// Waiters of the requests written or queued, oldest first.
    waiting: VecDeque<W>,
    /// Requests made while connecting.
    queued: Vec<u8>,
    backoff: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    /// Which connection is current: callbacks of an older one are ignored.
    generation: u64,
    stats: BackendStats,
}

#[derive(Clone, Copy)]
enum State {
    Idle,
    Connecting,
    Up(SessionHandle),
    Down { retry_at: Instant },
}

impl<W: Waiter> Backends<W> {
    /// Backends at `addrs`, none connected yet.
    pub fn new(addrs: Vec<SocketAddr>, cfg: PoolConfig) -> Self {
        let links = addrs
            .into_iter()
            .map(|addr| {
                Rc::new(RefCell::new(Link {
                    addr,
                    state: State::Idle,
                    waiting: VecDeque::new(),
                    queued: Vec::new(),
                    backoff: cfg.backoff_min,
                    backoff_min: cfg.backoff_min,
                    backoff_max: cfg.backoff_max,
                    generation: 0,
                    stats: BackendStats::default(),
                }))
            })
            .collect();
        Backends { links, cfg }
    }

    /// Opens a connection to every backend not connected, on this core.
    pub fn connect_all(&mut self, ctx: &mut CoreCtx) {
        for link in &self.links {
            if matches!(link.borrow().state, State::Idle) {
                connect(ctx, link);
            }
        }
    }

    /// How many backends.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The address of backend `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.links[i].borrow().addr
    }

    /// Sends `request` (one or more whole RESP commands, answered by one reply) to backend
    /// `backend`; `waiter` gets the reply. A backend that is down completes it at once with an
    /// error, before this returns.
    pub fn send(&mut self, ctx: &mut CoreCtx, backend: usize, request: &[u8], waiter: W) {
        let link = self.links[backend].clone();
        let state = link.borrow().state;
        if let State::Down { retry_at } = state {
            if Instant::now() < retry_at {
                let addr = link.borrow().addr;
                link.borrow_mut().stats.errors += 1;
                return waiter.done(ctx, Err(BackendError::Down { addr }));
            }
        }
        if matches!(state, State::Idle | State::Down { .. }) {
            connect(ctx, &link);
        }
        let mut l = link.borrow_mut();
        let addr = l.addr;
        if l.waiting.len() >= self.cfg.max_pending {
            l.stats.errors += 1;
            drop(l);
            return waiter.done(ctx, Err(BackendError::Busy { addr }));
        }
        match l.state {
            State::Connecting => l.queued.extend_from_slice(request),
            State::Up(handle) => {
                if ctx.write_to(handle, request).is_err() {
                    // The connection has gone; its close fails what waits on it.
                    l.stats.errors += 1;
                    drop(l);
                    return waiter.done(ctx, Err(BackendError::Closed { addr }));
                }
            }
            State::Idle | State::Down { .. } => {
                l.stats.errors += 1;
                drop(l);
                return waiter.done(ctx, Err(BackendError::Down { addr }));
            }
        }
        l.stats.sent += 1;
        l.waiting.push_back(waiter);
    }

    /// Counters per backend, in order.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.links
            .iter()
            .map(|l| l.borrow().stats.clone())
            .collect()
    }
}

fn connect<W: Waiter>(ctx: &mut CoreCtx, link: &Rc<RefCell<Link<W>>>) {
    let mut l = link.borrow_mut();
    l.generation += 1;
    let conn = Conn {
        link: link.clone(),
        generation: l.generation,
    };
    let addr = l.addr;
    l.state = State::Connecting;
    drop(l);
    if let Err(e) = ctx.connect(addr, RespReplies, conn) {
        log::warn!("proxy: cannot connect to {addr}: {e}");
        fail_all(ctx, link, false);
    }
}

/// Marks the link down for its backoff and fails every waiter: `Closed` if the connection had
/// been up, else `Down`.
fn fail_all<W: Waiter>(ctx: &mut CoreCtx, link: &Rc<RefCell<Link<W>>>, was_up: bool) {
    let mut l = link.borrow_mut();
    let backoff = l.backoff;
    l.state = State::Down {
        retry_at: Instant::now() + backoff,
    };
    l.backoff = (backoff * 2).min(l.backoff_max);
    l.queued.clear();
    let waiting = std::mem::take(&mut l.waiting);
    l.stats.errors += waiting.len() as u64;
    let addr = l.addr;
    drop(l);
    for waiter in waiting {
        let error = if was_up {
            BackendError::Closed { addr }
        } else {
            BackendError::Down { addr }
        };
        waiter.done(ctx, Err(error));
    }
}

/// The handler of one backend connection.
struct Conn<W> {
    link: Rc<RefCell<Link<W>>>,
    generation: u64,
}

impl<W: Waiter> Conn<W> {
    fn current(&self) -> bool {
        self.link.borrow().generation == self.generation
    }
}

impl<W: Waiter> Handler<RespReplies> for Conn<W> {
    fn on_open(&mut self, session: &mut Session<'_, RespReplies>) {
        if !self.current() {
            return session.close();
        }
        let mut l = self.link.borrow_mut();
        l.state = State::Up(session.handle());
        l.backoff = l.backoff_min;
        let queued = std::mem::take(&mut l.queued);
        drop(l);
        if !queued.is_empty() && session.send(&queued[..]).is_err() {
            session.close();
        }
    }

    fn on_message(&mut self, session: &mut Session<'_, RespReplies>, reply: &[u8]) {
        if !self.current() {
            return;
        }
        let mut l = self.link.borrow_mut();
        let waiter = l.waiting.pop_front();
        l.stats.replies += 1;
        drop(l);
        match waiter {
            Some(waiter) => waiter.done(session.core(), Ok(reply)),
            None => {
                log::warn!("proxy: a reply nobody waits for; closing the backend connection");
                session.close();
            }
        }
    }

    fn on_error(&mut self, _session: &mut Session<'_, RespReplies>, error: &SessionError) {
        let addr = self.link.borrow().addr;
        log::warn!("proxy: backend {addr}: {error}");
    }

    fn on_close(&mut self, session: &mut Session<'_, RespReplies>, _reason: CloseReason) {
        if !self.current() {
            return;
        }
        let was_up = matches!(self.link.borrow().state, State::Up(_));
        fail_all(session.core(), &self.link, was_up);
    }
}

/// Stand-in for the client-side RESP codec of `ringwire::codec::resp`.
pub mod reply {
    use std::borrow::Cow;

    use ringwire::codec::{Codec, CodecError, Decoded};

    /// Client side of RESP2: frames are the raw bytes of one whole reply, items raw requests.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct RespReplies;

    impl Codec for RespReplies {
        type Frame<'a> = &'a [u8];
        type Item = [u8];

        fn decode<'a>(
            &mut self,
            src: &'a [u8],
            max_frame: usize,
        ) -> Result<Decoded<&'a [u8]>, CodecError> {
            Ok(match reply_len(src, max_frame)? {
                Some(len) => Decoded::Frame(&src[..len], len),
                None => Decoded::NeedMore(None),
            })
        }

        fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
            dst.extend_from_slice(item);
            Ok(())
        }
    }

    fn bad(why: &'static str) -> CodecError {
        CodecError::Malformed(Cow::Borrowed(why))
    }

    /// The line at `src[at..]` without its CRLF, and where the next one starts.
    fn line(src: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let rest = src.get(at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..end], at + end + 2))
    }

    fn int(text: &[u8]) -> Result<i64, CodecError> {
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("invalid integer in a reply"))
    }

    /// The length of the first whole reply in `src`, `None` if incomplete.
    pub fn reply_len(src: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
        let mut pos = 0;
        let mut left: u64 = 1; // Replies still to read: an array adds its elements.
        while left > 0 {
            let Some(&kind) = src.get(pos) else {
                return Ok(None);
            };
            let Some((text, next)) = line(src, pos + 1) else {
                return if src.len() > max {
                    Err(CodecError::FrameTooLarge {
                        len: src.len(),
                        max,
                    })
                } else {
                    Ok(None)
                };
            };
            left -= 1;
            pos = next;
            match kind {
                b'+' | b'-' => {}
                b':' => {
                    int(text)?;
                }
                b'$' => match int(text)? {
                    -1 => {}
                    n if n < 0 => return Err(bad("invalid bulk length in a reply")),
                    n => {
                        let end = pos + n as usize + 2;
                        if end > max {
                            return Err(CodecError::FrameTooLarge { len: end, max });
                        }
                        if src.len() < end {
                            return Ok(None);
                        }
                        if &src[end - 2..end] != b"\r\n" {
                            return Err(bad("bulk string not followed by CRLF"));
                        }
                        pos = end;
                    }
                },
                b'*' => match int(text)? {
                    n if n < -1 => return Err(bad("invalid array length in a reply")),
                    n if n > 0 => left += n as u64,
                    _ => {}
                },
                _ => return Err(bad("unknown reply type")),
            }
            if pos > max {
                return Err(CodecError::FrameTooLarge { len: pos, max });
            }
        }
        Ok(Some(pos))
    }

    /// One reply, parsed one level deep.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ReplyView<'a> {
        /// `+text`.
        Simple(&'a [u8]),
        /// `-text`.
        Error(&'a [u8]),
        /// `:n`.
        Integer(i64),
        /// `$n` and its bytes, `None` for `$-1`.
        Bulk(Option<&'a [u8]>),
        /// `*n` and its elements, `None` for `*-1`.
        Array(Option<ArrayView<'a>>),
    }

    /// The elements of an array reply, each as its raw bytes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ArrayView<'a> {
        len: usize,
        body: &'a [u8],
    }

    impl ArrayView<'_> {
        /// How many elements.
        pub fn len(&self) -> usize {
            self.len
        }

        /// Whether it has none.
        pub fn is_empty(&self) -> bool {
            self.len == 0
        }
    }

    impl<'a> Iterator for ArrayView<'a> {
        type Item = &'a [u8];

        fn next(&mut self) -> Option<&'a [u8]> {
            if self.len == 0 {
                return None;
            }
            let n = reply_len(self.body, usize::MAX).ok().flatten()?;
            let (element, rest) = self.body.split_at(n);
            self.body = rest;
            self.len -= 1;
            Some(element)
        }
    }

    /// Parses one whole reply (as `RespReplies` frames it).
    pub fn parse_reply(src: &[u8]) -> Result<ReplyView<'_>, CodecError> {
        let len = reply_len(src, usize::MAX)?.ok_or_else(|| bad("incomplete reply"))?;
        let (text, body) = line(src, 1).ok_or_else(|| bad("incomplete reply"))?;
        Ok(match src[0] {
            b'+' => ReplyView::Simple(text),
            b'-' => ReplyView::Error(text),
            b':' => ReplyView::Integer(int(text)?),
            b'$' => match int(text)? {
                -1 => ReplyView::Bulk(None),
                n => ReplyView::Bulk(Some(&src[body..body + n as usize])),
            },
            _ => match int(text)? {
                -1 => ReplyView::Array(None),
                n => ReplyView::Array(Some(ArrayView {
                    len: n.max(0) as usize,
                    body: &src[body..len],
                })),
            },
        })
    }
}
