//! The kv example's service: the RESP handler and its commands over the shared [`Store`].
//! The example's `main` and the integration tests (`tests/resp.rs`) both build servers from
//! this file, so the tests drive exactly the code the example runs.
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
//! MSET sets its keys one by one: each key is set atomically, but a reader on another core
//! may see some keys of an MSET before the others (Redis applies an MSET all at once).

#[path = "store.rs"]
pub mod store;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use ringwire::codec::resp::{self, Args, Command, Reply, Resp};
use ringwire::{Handler, Session, SessionError};

pub use store::{Condition, Expiry, IncrError, Store, Value};

/// One session's handler: the store it serves from.
pub struct Kv {
    store: Arc<Store>,
}

impl Kv {
    /// A handler over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Kv { store }
    }
}

impl Handler<Resp> for Kv {
    #[inline]
    fn on_message(&mut self, session: &mut Session<'_, Resp>, cmd: Command<'_>) {
        if cmd.is_empty() {
            return; // Redis answers nothing to an empty request.
        }
        let (reply, quit) = execute(&self.store, cmd);
        if let Err(e) = session.send(&reply) {
            log::warn!("kv: cannot encode a reply: {e}");
            session.close();
        }
        if quit {
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

const WRONG_TYPE: Reply = Reply::error("ERR value is not an integer or out of range");
const SYNTAX: Reply = Reply::error("ERR syntax error");
/// Largest reply built at once: the engine's default limit on a session's pending output.
const MAX_REPLY: usize = 64 << 20;

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

fn bulk_of(value: Option<Value>) -> Reply {
    match value {
        Some(Value::Str(b)) => Reply::Bulk(b),
        Some(Value::Int(n)) => Reply::BulkInteger(n),
        None => Reply::Null,
    }
}

fn int_arg(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// Runs one command; returns its reply and whether the connection should close after it.
pub fn execute(store: &Store, cmd: Command<'_>) -> (Reply, bool) {
    let argc = cmd.len();
    let mut args = cmd.args();
    let Some((buf, len)) = args.next().and_then(upper) else {
        return (unknown(&cmd), false);
    };
    let arity = |ok: bool, name: &str, run: &mut dyn FnMut(&mut Args<'_>) -> Reply| {
        if ok {
            run(&mut args.clone())
        } else {
            wrong_arity(name)
        }
    };
    let reply = match &buf[..len] {
        b"GET" => arity(argc == 2, "get", &mut |a| bulk_of(store.get(next(a)))),
        b"SET" => arity(argc >= 3, "set", &mut |a| set(store, a)),
        b"PING" => match argc {
            1 => Reply::Simple(Cow::Borrowed("PONG")),
            2 => Reply::Bulk(Bytes::copy_from_slice(next(&mut args))),
            _ => wrong_arity("ping"),
        },
        b"ECHO" => arity(argc == 2, "echo", &mut |a| {
            Reply::Bulk(Bytes::copy_from_slice(next(a)))
        }),
        b"INCR" => arity(argc == 2, "incr", &mut |a| incr(store, next(a), Some(1))),
        b"DECR" => arity(argc == 2, "decr", &mut |a| incr(store, next(a), Some(-1))),
        b"INCRBY" => arity(argc == 3, "incrby", &mut |a| {
            let key = next(a);
            incr(store, key, int_arg(next(a)))
        }),
        b"DECRBY" => arity(argc == 3, "decrby", &mut |a| {
            let key = next(a);
            incr(store, key, int_arg(next(a)).and_then(i64::checked_neg))
        }),
        b"DEL" => arity(argc >= 2, "del", &mut |a| {
            Reply::Integer(a.filter(|k| store.del(k)).count() as i64)
        }),
        b"EXISTS" => arity(argc >= 2, "exists", &mut |a| {
            Reply::Integer(a.filter(|k| store.exists(k)).count() as i64)
        }),
        b"MGET" => arity(argc >= 2, "mget", &mut |a| {
            let values: Vec<Reply> = a.map(|k| bulk_of(store.get(k))).collect();
            // The reply is encoded at once: refuse one larger than the session may hold.
            let size: usize = values
                .iter()
                .map(|v| 16 + if let Reply::Bulk(b) = v { b.len() } else { 0 })
                .sum();
            if size > MAX_REPLY {
                return Reply::error("ERR MGET reply would exceed 64 MiB");
            }
            Reply::Array(values)
        }),
        b"MSET" => arity(argc >= 3 && argc % 2 == 1, "mset", &mut |a| {
            while let (Some(k), Some(v)) = (a.next(), a.next()) {
                store.set(k, Value::from_bytes(v), Condition::Always, Expiry::Never);
            }
            Reply::OK
        }),
        b"TTL" | b"PTTL" => arity(argc == 2, "ttl", &mut |a| match store.pttl(next(a)) {
            Err(false) => Reply::Integer(-2),
            Err(true) => Reply::Integer(-1),
            Ok(ms) if len == 3 => Reply::Integer(ms.div_ceil(1000) as i64),
            Ok(ms) => Reply::Integer(ms as i64),
        }),
        b"DBSIZE" => Reply::Integer(store.len() as i64),
        b"FLUSHDB" | b"FLUSHALL" => {
            store.clear();
            Reply::OK
        }
        b"SELECT" => arity(argc == 2, "select", &mut |a| match next(a) {
            b"0" => Reply::OK,
            _ => Reply::error("ERR DB index is out of range"),
        }),
        b"QUIT" => return (Reply::OK, true),
        b"CONFIG" => config(&mut args),
        b"COMMAND" => command(&mut args, argc),
        b"CLIENT" => client(&mut args),
        b"INFO" => info(store),
        _ => unknown(&cmd),
    };
    (reply, false)
}

/// The next argument; the caller checked the arity.
fn next<'a>(args: &mut Args<'a>) -> &'a [u8] {
    args.next().unwrap_or_default()
}

fn incr(store: &Store, key: &[u8], delta: Option<i64>) -> Reply {
    let Some(delta) = delta else {
        return WRONG_TYPE;
    };
    match store.incr_by(key, delta) {
        Ok(n) => Reply::Integer(n),
        Err(IncrError::NotInteger) => WRONG_TYPE,
        Err(IncrError::Overflow) => Reply::error("ERR increment or decrement would overflow"),
    }
}

/// `SET key value [NX | XX] [EX seconds | PX milliseconds | KEEPTTL]`.
fn set(store: &Store, args: &mut Args<'_>) -> Reply {
    let key = next(args);
    let value = next(args);
    let mut condition = Condition::Always;
    let mut expiry = Expiry::Never;
    while let Some(opt) = args.next() {
        let Some((buf, len)) = upper(opt) else {
            return SYNTAX;
        };
        match (&buf[..len], condition, expiry) {
            (b"NX", Condition::Always, _) => condition = Condition::Missing,
            (b"XX", Condition::Always, _) => condition = Condition::Exists,
            (b"KEEPTTL", _, Expiry::Never) => expiry = Expiry::Keep,
            (unit @ (b"EX" | b"PX"), _, Expiry::Never) => {
                let scale = if unit == b"EX" { 1000 } else { 1 };
                let Some(n) = args.next().map(int_arg) else {
                    return SYNTAX;
                };
                let Some(n) = n else {
                    return WRONG_TYPE;
                };
                match u64::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .and_then(|n| n.checked_mul(scale))
                    // As Redis: the deadline must fit a signed 64-bit millisecond count, so
                    // TTL and PTTL never report a negative time.
                    .filter(|&ms| ms <= i64::MAX as u64 / 2)
                {
                    Some(ms) => expiry = Expiry::After(ms),
                    None => return Reply::error("ERR invalid expire time in 'set' command"),
                }
            }
            _ => return SYNTAX,
        }
    }
    if store.set(key, Value::from_bytes(value), condition, expiry) {
        Reply::OK
    } else {
        Reply::Null
    }
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

fn info(store: &Store) -> Reply {
    let text = format!(
        "# Server\r\nredis_version:7.0.0\r\nringwire_version:{}\r\n\r\n# Keyspace\r\ndb0:keys={}\r\n",
        env!("CARGO_PKG_VERSION"),
        store.len()
    );
    Reply::Bulk(text.into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringwire::codec::resp::Resp;
    use ringwire::testing::Harness;
    use ringwire::CloseReason;

    use super::{glob, Kv, Store};

    fn kv() -> Harness<Resp, Kv> {
        Harness::new(Resp::default(), Kv::new(Arc::new(Store::new(4))))
    }

    /// Pipelined commands give the same replies however the bytes arrive.
    #[test]
    fn pipelined_commands_answer_the_same_at_every_split() {
        let wire: &[u8] = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n41\r\n\
            INCR k\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let expected: &[u8] = b"+PONG\r\n+OK\r\n:42\r\n$2\r\n42\r\n";
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

    #[test]
    fn a_protocol_error_is_answered_then_closes_the_session() {
        let mut t = kv();
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
        let mut t = kv();
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
