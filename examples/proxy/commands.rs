//! Which commands the proxy serves, and how: the command table. Parsing a request gives a
//! [`Route`]: an answer given here (PING, ECHO, SELECT 0, QUIT, and every error found by
//! parsing), a command forwarded whole to the backend of its key, a command over several keys
//! forwarded whole only when they share a backend, or a multi-key command split per backend
//! and merged (DEL, EXISTS, UNLINK, TOUCH, MGET, MSET).
//!
//! Arity follows Redis's command table (a count that includes the name; negative: at least),
//! checked here so that a malformed command costs no backend round trip and gets Redis's own
//! message. Options past the key are not checked: the backend checks them and its error is
//! the client's answer.

use std::borrow::Cow;

use ringwire::codec::resp::{Command, Reply};

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Answered here.
    Local(Reply),
    /// `+OK`, then close.
    Quit,
    /// Forwarded whole to the backend of this key.
    Key(&'a [u8]),
    /// Forwarded whole if all its keys are on one backend, else refused.
    Together(Span),
    /// Split per backend, the parts merged in key order.
    Split(Multi),
}

/// Which arguments are keys, for [`Route::Together`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// The first two (`RENAME src dst`, `SMOVE src dst member`).
    Two,
    /// Every argument (`SINTER k1 k2 ...`).
    All,
}

/// The commands split over the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multi {
    /// `MGET k...`: an array, in key order.
    Mget,
    /// `MSET k v ...`: `+OK` when every part is.
    Mset,
    /// `DEL k...`, `EXISTS k...`, `UNLINK k...`, `TOUCH k...`: the sum of the parts' counts.
    Count(&'static str),
}

impl Multi {
    /// The command name each part is sent with.
    pub fn name(self) -> &'static str {
        match self {
            Multi::Mget => "MGET",
            Multi::Mset => "MSET",
            Multi::Count(name) => name,
        }
    }

    /// Arguments per key: 2 for MSET's key-value pairs.
    pub fn step(self) -> usize {
        match self {
            Multi::Mset => 2,
            _ => 1,
        }
    }
}

/// What the table says of a command name.
enum Kind {
    Key,
    Together(Span),
    Split(Multi),
    Ping,
    Echo,
    Select,
    Quit,
    /// `COPY src dst [DB n] [REPLACE]`: forwarded where both keys share a backend, unless it
    /// names a database (only database 0 is served).
    Copy,
    /// Known, but not something a proxy over independent backends can serve.
    Refused,
}

/// Redis's arity (the name included; negative: at least that many) and what the proxy does.
fn lookup(name: &[u8]) -> Option<(i32, Kind)> {
    use Kind::*;
    Some(match name {
        // Strings.
        b"GET" | b"STRLEN" | b"INCR" | b"DECR" | b"GETDEL" | b"TTL" | b"PTTL" | b"PERSIST"
        | b"TYPE" | b"DUMP" | b"EXPIRETIME" | b"PEXPIRETIME" => (2, Key),
        b"SET" => (-3, Key),
        b"SETNX" | b"GETSET" | b"APPEND" | b"INCRBY" | b"DECRBY" | b"INCRBYFLOAT" | b"GETBIT" => {
            (3, Key)
        }
        b"SETEX" | b"PSETEX" | b"GETRANGE" | b"SETRANGE" | b"SETBIT" | b"SUBSTR" => (4, Key),
        b"GETEX" | b"BITCOUNT" | b"BITFIELD" => (-2, Key),
        b"BITPOS" => (-3, Key),
        b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" => (-3, Key),
        b"RESTORE" => (-4, Key),
        // Hashes.
        b"HGET" | b"HEXISTS" | b"HSTRLEN" => (3, Key),
        b"HLEN" | b"HKEYS" | b"HVALS" | b"HGETALL" => (2, Key),
        b"HSETNX" | b"HINCRBY" | b"HINCRBYFLOAT" => (4, Key),
        b"HSET" | b"HMSET" => (-4, Key),
        b"HMGET" | b"HDEL" | b"HSCAN" => (-3, Key),
        b"HRANDFIELD" => (-2, Key),
        // Lists.
        b"LLEN" => (2, Key),
        b"LINDEX" => (3, Key),
        b"LSET" | b"LRANGE" | b"LTRIM" | b"LREM" => (4, Key),
        b"LINSERT" => (5, Key),
        b"LPUSH" | b"RPUSH" | b"LPUSHX" | b"RPUSHX" | b"LPOS" => (-3, Key),
        b"LPOP" | b"RPOP" => (-2, Key),
        // Sets.
        b"SCARD" | b"SMEMBERS" => (2, Key),
        b"SISMEMBER" => (3, Key),
        b"SADD" | b"SREM" | b"SMISMEMBER" | b"SSCAN" => (-3, Key),
        b"SRANDMEMBER" | b"SPOP" => (-2, Key),
        // Sorted sets.
        b"ZCARD" => (2, Key),
        b"ZSCORE" => (3, Key),
        // WITHSCORE since Redis 7.2.
        b"ZRANK" | b"ZREVRANK" => (-3, Key),
        b"ZINCRBY" | b"ZCOUNT" | b"ZLEXCOUNT" | b"ZREMRANGEBYRANK" | b"ZREMRANGEBYSCORE"
        | b"ZREMRANGEBYLEX" => (4, Key),
        b"ZADD" | b"ZRANGE" | b"ZREVRANGE" | b"ZRANGEBYSCORE" | b"ZREVRANGEBYSCORE"
        | b"ZRANGEBYLEX" | b"ZREVRANGEBYLEX" => (-4, Key),
        b"ZREM" | b"ZMSCORE" | b"ZSCAN" => (-3, Key),
        b"ZPOPMIN" | b"ZPOPMAX" | b"ZRANDMEMBER" => (-2, Key),
        // HyperLogLog, geo: the first key.
        b"PFADD" => (-2, Key),
        b"GEOADD" => (-5, Key),
        b"GEODIST" => (-4, Key),
        b"GEOPOS" | b"GEOHASH" => (-2, Key),
        // Several keys, served only where they share a backend.
        b"RENAME" | b"RENAMENX" | b"RPOPLPUSH" => (3, Together(Span::Two)),
        b"SMOVE" => (4, Together(Span::Two)),
        b"LMOVE" => (5, Together(Span::Two)),
        b"COPY" => (-3, Copy),
        b"SINTER" | b"SUNION" | b"SDIFF" | b"PFCOUNT" => (-2, Together(Span::All)),
        b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" | b"PFMERGE" => (-3, Together(Span::All)),
        // Split per backend.
        b"MGET" => (-2, Split(Multi::Mget)),
        b"MSET" => (-3, Split(Multi::Mset)),
        b"DEL" => (-2, Split(Multi::Count("DEL"))),
        b"EXISTS" => (-2, Split(Multi::Count("EXISTS"))),
        b"UNLINK" => (-2, Split(Multi::Count("UNLINK"))),
        b"TOUCH" => (-2, Split(Multi::Count("TOUCH"))),
        // Answered here.
        b"PING" => (-1, Ping),
        b"ECHO" => (2, Echo),
        b"SELECT" => (2, Select),
        b"QUIT" => (-1, Quit),
        // Over every key, or state of one connection to one server, or blocking (which would
        // stall the connection the core shares for the backend).
        b"KEYS" | b"SCAN" | b"RANDOMKEY" | b"DBSIZE" | b"FLUSHDB" | b"FLUSHALL" | b"SWAPDB"
        | b"MOVE" | b"MULTI" | b"EXEC" | b"DISCARD" | b"WATCH" | b"UNWATCH" | b"SUBSCRIBE"
        | b"UNSUBSCRIBE" | b"PSUBSCRIBE" | b"PUNSUBSCRIBE" | b"SSUBSCRIBE" | b"SUNSUBSCRIBE"
        | b"PUBLISH" | b"SPUBLISH" | b"PUBSUB" | b"EVAL" | b"EVALSHA" | b"EVAL_RO"
        | b"EVALSHA_RO" | b"SCRIPT" | b"FUNCTION" | b"FCALL" | b"FCALL_RO" | b"BLPOP"
        | b"BRPOP" | b"BRPOPLPUSH" | b"BLMOVE" | b"BLMPOP" | b"BZPOPMIN" | b"BZPOPMAX"
        | b"BZMPOP" | b"WAIT" | b"MSETNX" | b"AUTH" | b"HELLO" | b"RESET" | b"CLIENT"
        | b"CONFIG" | b"INFO" | b"COMMAND" | b"MONITOR" | b"SAVE" | b"BGSAVE" | b"BGREWRITEAOF"
        | b"SHUTDOWN" | b"DEBUG" | b"SLAVEOF" | b"REPLICAOF" | b"SYNC" | b"PSYNC" | b"CLUSTER"
        | b"READONLY" | b"READWRITE" | b"OBJECT" | b"MIGRATE" | b"SORT" | b"SORT_RO"
        | b"LASTSAVE" | b"TIME" | b"ROLE" | b"LATENCY" | b"MEMORY" | b"SLOWLOG" | b"ACL"
        | b"MODULE" | b"LOLWUT" => (-1, Refused),
        _ => return None,
    })
}

/// The longest command name in the table.
const LONGEST: usize = 20;

/// `name` in upper case, if it is short enough to be in the table.
fn upper(name: &[u8]) -> Option<([u8; LONGEST], usize)> {
    let mut buf = [0u8; LONGEST];
    buf.get_mut(..name.len())?.copy_from_slice(name);
    buf.make_ascii_uppercase();
    Some((buf, name.len()))
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

fn error(text: String) -> Reply {
    // An error is one line: CR and LF from the request become spaces.
    Reply::Error(Cow::Owned(text.replace(['\r', '\n'], " ")))
}

/// Redis's message for a command it does not know.
fn unknown(cmd: &Command<'_>) -> Reply {
    let mut args = cmd.args();
    let name = String::from_utf8_lossy(args.next().unwrap_or_default());
    let mut text = format!("ERR unknown command '{name:.128}', with args beginning with: ");
    for arg in args.take(8) {
        text.push_str(&format!("'{:.64}' ", String::from_utf8_lossy(arg)));
    }
    error(text)
}

/// Parses and checks one (non-empty) request.
pub fn route<'a>(cmd: &Command<'a>) -> Route<'a> {
    let argc = cmd.len();
    let mut args = cmd.args();
    let name = args.next().unwrap_or_default();
    let Some((kind, arity)) = upper(name).and_then(|(buf, len)| {
        let (arity, kind) = lookup(&buf[..len])?;
        Some((kind, arity))
    }) else {
        return Route::Local(unknown(cmd));
    };
    let fits = match arity {
        n if n >= 0 => argc == n as usize,
        n => argc >= n.unsigned_abs() as usize,
    };
    // MSET takes pairs.
    let fits = fits && !(matches!(kind, Kind::Split(Multi::Mset)) && argc % 2 == 0);
    if !fits {
        return Route::Local(error(format!(
            "ERR wrong number of arguments for '{}' command",
            lower(name)
        )));
    }
    match kind {
        Kind::Key => Route::Key(args.next().unwrap_or_default()),
        Kind::Together(span) => Route::Together(span),
        Kind::Copy => {
            // `DB 0` is where the proxy serves anyway; a malformed option is the backend's to
            // refuse.
            let mut options = args.skip(2);
            let db = options
                .by_ref()
                .find(|arg| arg.eq_ignore_ascii_case(b"DB"))
                .map(|_| options.next());
            if db.is_some_and(|n| n.is_some_and(|n| n != b"0")) {
                Route::Local(Reply::error(
                    "ERR COPY to another database is not allowed through this proxy: only \
                     database 0",
                ))
            } else {
                Route::Together(Span::Two)
            }
        }
        Kind::Split(multi) => Route::Split(multi),
        Kind::Ping => match (argc, args.next()) {
            (1, _) => Route::Local(Reply::Simple(Cow::Borrowed("PONG"))),
            (2, Some(msg)) => Route::Local(Reply::Bulk(msg.to_vec().into())),
            _ => Route::Local(error(
                "ERR wrong number of arguments for 'ping' command".into(),
            )),
        },
        Kind::Echo => Route::Local(Reply::Bulk(args.next().unwrap_or_default().to_vec().into())),
        Kind::Select => match args.next() {
            Some(b"0") => Route::Local(Reply::OK),
            _ => Route::Local(Reply::error(
                "ERR SELECT is not allowed through this proxy: only database 0",
            )),
        },
        Kind::Quit => Route::Quit,
        Kind::Refused => Route::Local(error(format!(
            "ERR '{}' is not supported by this proxy",
            lower(name)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use ringwire::codec::resp::{Reply, Resp};
    use ringwire::codec::{Codec, Decoded};

    use super::{route, Multi, Route, Span};

    fn routed(line: &str) -> String {
        let wire = format!("{line}\r\n");
        let Ok(Decoded::Frame(cmd, _)) = Resp::default().decode(wire.as_bytes(), 1 << 20) else {
            panic!("{line} does not decode");
        };
        match route(&cmd) {
            Route::Local(reply) => {
                let mut out = Vec::new();
                reply.encode(&mut out).unwrap();
                String::from_utf8(out).unwrap().trim_end().to_owned()
            }
            Route::Quit => "quit".into(),
            Route::Key(key) => format!("key {}", String::from_utf8_lossy(key)),
            Route::Together(Span::Two) => "together 2".into(),
            Route::Together(Span::All) => "together all".into(),
            Route::Split(multi) => format!("split {}", multi.name()),
        }
    }

    #[test]
    fn commands_route_by_their_keys() {
        for (line, expected) in [
            ("get k", "key k"),
            ("SET k v EX 10 NX", "key k"),
            ("hset h f v", "key h"),
            ("Incrby n 5", "key n"),
            ("expire k 10", "key k"),
            ("mget a b c", "split MGET"),
            ("mset a 1 b 2", "split MSET"),
            ("del a", "split DEL"),
            ("exists a b", "split EXISTS"),
            ("unlink a b", "split UNLINK"),
            ("touch a", "split TOUCH"),
            ("rename a b", "together 2"),
            ("copy a b", "together 2"),
            ("COPY a b REPLACE", "together 2"),
            ("COPY a b DB 0 REPLACE", "together 2"),
            ("bitfield k", "key k"),
            ("BITFIELD k GET u8 0", "key k"),
            ("zrank z m", "key z"),
            ("ZRANK z m WITHSCORE", "key z"),
            ("zrevrank z m withscore", "key z"),
            ("sinter a b c", "together all"),
            ("quit", "quit"),
        ] {
            assert_eq!(routed(line), expected, "{line}");
        }
    }

    #[test]
    fn local_answers_and_errors() {
        for (line, expected) in [
            ("PING", "+PONG"),
            ("ping hi", "$2\r\nhi"),
            (
                "ping a b",
                "-ERR wrong number of arguments for 'ping' command",
            ),
            ("ECHO x", "$1\r\nx"),
            ("SELECT 0", "+OK"),
            (
                "SELECT 1",
                "-ERR SELECT is not allowed through this proxy: only database 0",
            ),
            ("GET", "-ERR wrong number of arguments for 'get' command"),
            (
                "get a b",
                "-ERR wrong number of arguments for 'get' command",
            ),
            ("SET k", "-ERR wrong number of arguments for 'set' command"),
            (
                "MSET a 1 b",
                "-ERR wrong number of arguments for 'mset' command",
            ),
            ("MGET", "-ERR wrong number of arguments for 'mget' command"),
            ("KEYS *", "-ERR 'keys' is not supported by this proxy"),
            (
                "COPY a b DB 1",
                "-ERR COPY to another database is not allowed through this proxy: only database 0",
            ),
            (
                "copy a b replace db 15",
                "-ERR COPY to another database is not allowed through this proxy: only database 0",
            ),
            (
                "BITFIELD",
                "-ERR wrong number of arguments for 'bitfield' command",
            ),
            (
                "ZRANK z",
                "-ERR wrong number of arguments for 'zrank' command",
            ),
            ("multi", "-ERR 'multi' is not supported by this proxy"),
            ("BLPOP l 0", "-ERR 'blpop' is not supported by this proxy"),
            (
                "FLY away",
                "-ERR unknown command 'FLY', with args beginning with: 'away'",
            ),
            (
                "AVERYLONGCOMMANDNAMEINDEED x",
                "-ERR unknown command 'AVERYLONGCOMMANDNAMEINDEED', with args beginning with: 'x'",
            ),
        ] {
            assert_eq!(routed(line), expected, "{line}");
        }
        assert_eq!(Multi::Mset.step(), 2);
        assert_eq!(Reply::OK, Reply::OK);
    }
}
