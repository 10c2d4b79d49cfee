//! The kv example's service: the RESP handler, its commands, and the server built around them
//! for either way of sharing the keys between the cores (`--sharding`). The example's `main`
//! and the integration tests (`tests/resp.rs`, `tests/kv_cores.rs`) both build servers with
//! [`server`], so the tests drive exactly the code the example runs.
//!
//! Commands: PING, ECHO, SET (EX, PX, NX, XX, KEEPTTL), GET, DEL, EXISTS, INCR, DECR, INCRBY,
//! DECRBY, MGET, MSET, TTL, PTTL, DBSIZE, FLUSHDB, FLUSHALL, SELECT 0, QUIT, and what clients
//! send on connect: CONFIG GET (answers `save` and `appendonly` as a server that persists
//! nothing; other parameters, an empty list), COMMAND COUNT, CLIENT SETNAME/SETINFO, INFO.
//! `COMMAND DOCS` gets an error: redis-cli then falls back to its built-in help, as it does
//! with servers older than Redis 7. Anything else gets `-ERR unknown command`, and the
//! connection stays open. A request the codec rejects gets `-ERR Protocol error: ...` and
//! only that connection is closed.
//!
//! A command is parsed and checked on the session's core (`parse`): syntax and arity errors
//! are answered there, whatever the sharding. What remains is a [`Cmd`] on the keys, run on
//! the shared store (`--sharding locks`) or where its keys live (`--sharding cores`, see
//! `kv/cores.rs`), the same code either way (`kv/ops.rs`).
//!
//! Atomicity: each command on one key is atomic. MSET, DEL, EXISTS and MGET take their keys one
//! by one, and FLUSHDB and DBSIZE a core (or a shard) at a time: a client on another connection
//! may see some keys of an MSET before the others (Redis applies an MSET all at once), and a
//! DBSIZE during writes counts each core at a different moment. A connection always sees its
//! own commands in order: every later command of it runs after every part of an earlier one
//! on each core.

#[path = "cores.rs"]
pub mod cores;
#[path = "ops.rs"]
pub mod ops;
#[path = "store.rs"]
pub mod store;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringwire::codec::resp::{self, Args, Command, Reply, Resp};
use ringwire::{Handler, ReplyError, Server, Session, SessionError};

pub use cores::Shard;
pub use ops::{Cmd, KeyOp, Multi, Whole};
pub use store::{Condition, Expiry, Keyspace, Store, Value};

use ops::WRONG_TYPE;

/// How the cores share the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sharding {
    /// Shared nothing: each key is owned by one core, which alone touches it; a command for a
    /// key of another core is sent there.
    Cores,
    /// One store shared by every core, behind sharded locks (for comparison).
    Locks,
}

/// How often expired keys that nobody touches are swept (a shard or a core's map at a time).
pub const SWEEP_PERIOD: Duration = Duration::from_millis(100);

/// A kv server: its handlers, and with `Sharding::Cores` every core's own keys as its
/// per-core state. `shards`: the locked store's shards, or the maps of each core's keys (one
/// is swept at a time). With `Sharding::Cores`, start the sweep once the server has started:
/// [`cores::sweep_every`].
pub fn server(codec: Resp, sharding: Sharding, shards: usize) -> Server<Resp, Kv> {
    match sharding {
        Sharding::Cores => Server::new(codec, Kv::sharded).core_state(move |_| Shard::new(shards)),
        Sharding::Locks => {
            let store = Arc::new(Store::new(shards));
            let sweep = store.clone();
            Server::new(codec, move || Kv::locked(store.clone())).on_core_tick(
                SWEEP_PERIOD,
                move |_| {
                    sweep.sweep_next();
                },
            )
        }
    }
}

/// One session's handler: where it finds the keys.
pub struct Kv {
    keys: Keys,
}

enum Keys {
    /// On their owning cores (the per-core state is a [`Shard`]).
    Cores,
    /// In the store shared by every core.
    Locked(Arc<Store>),
}

impl Kv {
    /// A handler over the store shared by every core.
    pub fn locked(store: Arc<Store>) -> Self {
        Kv {
            keys: Keys::Locked(store),
        }
    }

    /// A handler over keys owned by the cores: the server's per-core state must be a [`Shard`].
    pub fn sharded() -> Self {
        Kv { keys: Keys::Cores }
    }

    /// Answers one request, or fails, having done nothing, for want of a reply slot.
    fn serve(
        &mut self,
        session: &mut Session<'_, Resp>,
        cmd: &Command<'_>,
    ) -> Result<(), ReplyError> {
        match (parse(cmd), &self.keys) {
            (Op::Reply(reply), _) => send(session, &reply),
            (Op::Quit, _) => {
                send(session, &Reply::OK);
                session.close();
            }
            (Op::Keys(cmd), Keys::Locked(store)) => send(session, &cmd.run(&mut &**store)),
            (Op::Keys(cmd), Keys::Cores) => cores::dispatch(session, cmd)?,
        }
        Ok(())
    }
}

impl Handler<Resp> for Kv {
    #[inline]
    fn on_message(&mut self, session: &mut Session<'_, Resp>, cmd: Command<'_>) {
        if cmd.is_empty() {
            return; // Redis answers nothing to an empty request.
        }
        if let Err(e) = self.serve(session, &cmd) {
            // Not expected: the engine pauses reading at `max_replies` outstanding replies and
            // delivers no request there, so a request always finds a reply to reserve. Should
            // one ever fail, it cannot be answered in its turn: say so (this waits behind the
            // replies already reserved) and close, rather than panic or lose it silently.
            log::warn!("kv: {e}: closing the connection");
            send(session, &Reply::error("ERR too many replies outstanding"));
            session.close();
        }
    }

    fn on_error(&mut self, session: &mut Session<'_, Resp>, error: &SessionError) {
        if let SessionError::Codec { error, .. } = error {
            // The engine writes this, then closes the session.
            let _ = session.send(&resp::protocol_error(error));
        }
    }
}

/// Sends `reply` inline (behind any reply still reserved).
pub(crate) fn send(session: &mut Session<'_, Resp>, reply: &Reply) {
    if let Err(e) = session.send(reply) {
        log::warn!("kv: cannot encode a reply: {e}");
        session.close();
    }
}

/// What a request asks for.
pub enum Op<'a> {
    /// An answer that needs no key: PING, ECHO, CONFIG, and every error found by parsing.
    Reply(Reply),
    /// `+OK`, then close.
    Quit,
    /// A command on the keys.
    Keys(Cmd<'a>),
}

const SYNTAX: Reply = Reply::error("ERR syntax error");

fn wrong_arity(name: &str) -> Reply {
    Reply::Error(Cow::Owned(format!(
        "ERR wrong number of arguments for '{name}' command"
    )))
}

/// Redis's message for a command it does not know, CR and LF made spaces.
fn unknown(cmd: &Command<'_>) -> Reply {
    let mut args = cmd.args();
    let name = String::from_utf8_lossy(args.next().unwrap_or_default());
    let mut text = format!("ERR unknown command '{name:.128}', with args beginning with: ");
    for arg in args.take(8) {
        text.push_str(&format!("'{:.64}' ", String::from_utf8_lossy(arg)));
    }
    Reply::Error(Cow::Owned(text.replace(['\r', '\n'], " ")))
}

/// The command name in upper case, if it is short enough to be one we know.
fn upper(name: &[u8]) -> Option<([u8; 16], usize)> {
    let mut buf = [0u8; 16];
    buf.get_mut(..name.len())?.copy_from_slice(name);
    buf.make_ascii_uppercase();
    Some((buf, name.len()))
}

fn int_arg(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// Parses and checks one request: what it asks for, or the error it gets.
pub fn parse<'a>(cmd: &Command<'a>) -> Op<'a> {
    let argc = cmd.len();
    let mut args = cmd.args();
    let Some((buf, len)) = args.next().and_then(upper) else {
        return Op::Reply(unknown(cmd));
    };
    let arity = |ok: bool, name: &str| if ok { Ok(()) } else { Err(wrong_arity(name)) };
    let key = |args: &mut Args<'a>, op: KeyOp| Op::Keys(Cmd::Key(next(args), op));
    let parsed: Result<Op<'a>, Reply> = match &buf[..len] {
        b"GET" => arity(argc == 2, "get").map(|()| key(&mut args, KeyOp::Get)),
        b"SET" => arity(argc >= 3, "set").and_then(|()| set(&mut args)),
        b"PING" => match argc {
            1 => Ok(Op::Reply(Reply::Simple(Cow::Borrowed("PONG")))),
            2 => Ok(Op::Reply(Reply::Bulk(Bytes::copy_from_slice(next(
                &mut args,
            ))))),
            _ => Err(wrong_arity("ping")),
        },
        b"ECHO" => arity(argc == 2, "echo")
            .map(|()| Op::Reply(Reply::Bulk(Bytes::copy_from_slice(next(&mut args))))),
        b"INCR" => arity(argc == 2, "incr").map(|()| key(&mut args, KeyOp::IncrBy(1))),
        b"DECR" => arity(argc == 2, "decr").map(|()| key(&mut args, KeyOp::IncrBy(-1))),
        b"INCRBY" | b"DECRBY" => arity(argc == 3, if buf[0] == b'D' { "decrby" } else { "incrby" })
            .and_then(|()| {
                let name = next(&mut args);
                let delta = int_arg(next(&mut args))
                    .and_then(|n| {
                        if buf[0] == b'D' {
                            n.checked_neg()
                        } else {
                            Some(n)
                        }
                    })
                    .ok_or(WRONG_TYPE)?;
                Ok(Op::Keys(Cmd::Key(name, KeyOp::IncrBy(delta))))
            }),
        b"DEL" => arity(argc >= 2, "del").map(|()| Op::Keys(Cmd::Keys(Multi::Del, args.clone()))),
        b"EXISTS" => {
            arity(argc >= 2, "exists").map(|()| Op::Keys(Cmd::Keys(Multi::Exists, args.clone())))
        }
        b"MGET" => arity(argc >= 2, "mget").map(|()| Op::Keys(Cmd::Keys(Multi::Get, args.clone()))),
        b"MSET" => {
            arity(argc >= 3 && argc % 2 == 1, "mset").map(|()| Op::Keys(Cmd::Pairs(args.clone())))
        }
        b"TTL" | b"PTTL" => {
            arity(argc == 2, "ttl").map(|()| key(&mut args, KeyOp::Ttl { seconds: len == 3 }))
        }
        b"DBSIZE" => Ok(Op::Keys(Cmd::All(Whole::Size))),
        b"FLUSHDB" | b"FLUSHALL" => Ok(Op::Keys(Cmd::All(Whole::Flush))),
        b"SELECT" => arity(argc == 2, "select").map(|()| match next(&mut args) {
            b"0" => Op::Reply(Reply::OK),
            _ => Op::Reply(Reply::error("ERR DB index is out of range")),
        }),
        b"QUIT" => Ok(Op::Quit),
        b"CONFIG" => Ok(Op::Reply(config(&mut args))),
        b"COMMAND" => Ok(Op::Reply(command(&mut args, argc))),
        b"CLIENT" => Ok(Op::Reply(client(&mut args))),
        b"INFO" => Ok(Op::Keys(Cmd::All(Whole::Info))),
        _ => Ok(Op::Reply(unknown(cmd))),
    };
    parsed.unwrap_or_else(Op::Reply)
}

/// The next argument; the caller checked the arity.
fn next<'a>(args: &mut Args<'a>) -> &'a [u8] {
    args.next().unwrap_or_default()
}

/// `SET key value [NX | XX] [EX seconds | PX milliseconds | KEEPTTL]`.
fn set<'a>(args: &mut Args<'a>) -> Result<Op<'a>, Reply> {
    let key = next(args);
    let value = next(args);
    let mut condition = Condition::Always;
    let mut expiry = Expiry::Never;
    while let Some(opt) = args.next() {
        let Some((buf, len)) = upper(opt) else {
            return Err(SYNTAX);
        };
        match (&buf[..len], condition, expiry) {
            (b"NX", Condition::Always, _) => condition = Condition::Missing,
            (b"XX", Condition::Always, _) => condition = Condition::Exists,
            (b"KEEPTTL", _, Expiry::Never) => expiry = Expiry::Keep,
            (unit @ (b"EX" | b"PX"), _, Expiry::Never) => {
                let scale = if unit == b"EX" { 1000 } else { 1 };
                let n = args.next().map(int_arg).ok_or(SYNTAX)?.ok_or(WRONG_TYPE)?;
                match u64::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .and_then(|n| n.checked_mul(scale))
                    // As Redis: the deadline must fit a signed 64-bit millisecond count, so
                    // TTL and PTTL never report a negative time.
                    .filter(|&ms| ms <= i64::MAX as u64 / 2)
                {
                    Some(ms) => expiry = Expiry::After(ms),
                    None => return Err(Reply::error("ERR invalid expire time in 'set' command")),
                }
            }
            _ => return Err(SYNTAX),
        }
    }
    let op = KeyOp::Set(Value::from_bytes(value), condition, expiry);
    Ok(Op::Keys(Cmd::Key(key, op)))
}

/// The configuration a client may ask about: a server that persists nothing.
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no"), ("databases", "1")];

/// `CONFIG GET pattern...`: name, value pairs for the parameters matching any pattern.
fn config(args: &mut Args<'_>) -> Reply {
    let sub = args.next().and_then(upper);
    match sub.as_ref().map(|(b, n)| &b[..*n]) {
        Some(b"GET") => {
            let patterns: Vec<&[u8]> = args.collect();
            if patterns.is_empty() {
                return wrong_arity("config|get");
            }
            let mut out = Vec::new();
            for (name, value) in CONFIG {
                if patterns.iter().any(|p| glob(p, name.as_bytes())) {
                    out.push(Reply::Bulk(Bytes::from_static(name.as_bytes())));
                    out.push(Reply::Bulk(Bytes::from_static(value.as_bytes())));
                }
            }
            Reply::Array(out)
        }
        Some(b"RESETSTAT") => Reply::OK,
        _ => Reply::error("ERR CONFIG subcommand not supported by this server"),
    }
}

/// Case-insensitive glob with `*` and `?`, as CONFIG GET patterns are. Iterative, with one
/// backtrack point (the last `*`): time O(pattern x name), no recursion, whatever the pattern.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it currently stands for up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more byte, and retry after it.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Commands this server knows, for COMMAND COUNT.
const COMMANDS: usize = 23;

fn command(args: &mut Args<'_>, argc: usize) -> Reply {
    let sub = args.next().and_then(upper);
    match sub.as_ref().map(|(b, n)| &b[..*n]) {
        Some(b"COUNT") if argc == 2 => Reply::Integer(COMMANDS as i64),
        // redis-cli asks for DOCS on connect; on an error it uses its built-in help.
        _ => Reply::error("ERR COMMAND subcommand not supported by this server"),
    }
}

fn client(args: &mut Args<'_>) -> Reply {
    let sub = args.next().and_then(upper);
    match sub.as_ref().map(|(b, n)| &b[..*n]) {
        Some(b"SETNAME" | b"SETINFO") => Reply::OK,
        Some(b"GETNAME") => Reply::Null,
        _ => Reply::error("ERR CLIENT subcommand not supported by this server"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringwire::codec::resp::Resp;
    use ringwire::testing::Harness;
    use ringwire::CloseReason;

    use super::{glob, Kv, Shard, Store};

    fn locked() -> Harness<Resp, Kv> {
        Harness::new(Resp::default(), Kv::locked(Arc::new(Store::new(4))))
    }

    /// The test kit runs one core: every key is this core's own.
    fn sharded() -> Harness<Resp, Kv> {
        Harness::new(Resp::default(), Kv::sharded()).core_state(Shard::new(4))
    }

    /// A session of each sharding.
    const BOTH: [fn() -> Harness<Resp, Kv>; 2] = [locked, sharded];

    /// Pipelined commands give the same replies however the bytes arrive.
    #[test]
    fn pipelined_commands_answer_the_same_at_every_split() {
        let wire: &[u8] = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n41\r\n\
            INCR k\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let expected: &[u8] = b"+PONG\r\n+OK\r\n:42\r\n$2\r\n42\r\n";
        for kv in BOTH {
            assert_eq!(kv().feed(wire), expected);
            for a in 0..=wire.len() {
                for b in a..=wire.len() {
                    let mut t = kv();
                    let mut out = Vec::new();
                    for part in [&wire[..a], &wire[a..b], &wire[b..]] {
                        out.extend(t.feed(part));
                    }
                    assert_eq!(out, expected, "split at {a} and {b}");
                    assert_eq!(t.closed(), None);
                }
            }
        }
    }

    #[test]
    fn a_protocol_error_is_answered_then_closes_the_session() {
        let mut t = locked();
        let out = t.feed(b"*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            out,
            b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(t.closed(), Some(CloseReason::CodecError));
        assert_eq!(t.errors().len(), 1);
    }

    #[test]
    fn quit_answers_then_closes() {
        let mut t = sharded();
        assert_eq!(t.feed(b"QUIT\r\nPING\r\n"), b"+OK\r\n");
        assert_eq!(t.closed(), Some(CloseReason::Local));
    }

    #[test]
    fn glob_matches_as_config_get_patterns_do() {
        for (pattern, name, expected) in [
            ("*", "save", true),
            ("sa*", "save", true),
            ("SA?E", "save", true),
            ("*only", "appendonly", true),
            ("a*n*y", "appendonly", true),
            ("*x*", "appendonly", false),
            ("save?", "save", false),
            ("", "", true),
            ("", "save", false),
            ("**", "", true),
        ] {
            assert_eq!(
                glob(pattern.as_bytes(), name.as_bytes()),
                expected,
                "{pattern} {name}"
            );
        }
    }

    /// Patterns that make a backtracking matcher exponential (or overflow its stack) answer
    /// at once.
    #[test]
    fn glob_is_bounded_on_hostile_patterns() {
        let stars = vec![b'*'; 100_000];
        let mut no_match = stars.clone();
        no_match.push(b'x');
        assert!(!glob(&no_match, b"appendonly"));
        assert!(glob(&stars, b"appendonly"));
        let alternating: Vec<u8> = b"*a".repeat(50).into_iter().chain(*b"b").collect();
        assert!(!glob(&alternating, &[b'a'; 200]));
    }
}
