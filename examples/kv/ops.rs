//! The kv example's commands on the keys, parsed and checked (`service.rs` does that on the
//! session's core) and ready to run wherever their keys are: on the shared store, on this
//! core's own keys, or in parts on several cores whose results are merged into one reply.
//!
//! Both `--sharding` ways run this code, so a command means the same whichever way: a part
//! run on one core gives exactly what the whole command would give for that core's keys, and
//! [`Gather`] puts the parts back in key order.

use bytes::Bytes;
use ringwire::codec::resp::{Args, Reply};

use super::store::{Condition, Expiry, IncrError, Keyspace, Value};

pub(crate) const WRONG_TYPE: Reply = Reply::error("ERR value is not an integer or out of range");
/// Largest reply built at once: the engine's default limit on a session's pending output.
const MAX_REPLY: usize = 64 << 20;

/// A command on the keys.
pub enum Cmd<'a> {
    /// A command on one key.
    Key(&'a [u8], KeyOp),
    /// MGET, DEL or EXISTS over its keys (the arguments after the name).
    Keys(Multi, Args<'a>),
    /// MSET over its key-value pairs (the arguments after the name).
    Pairs(Args<'a>),
    /// DBSIZE, FLUSHDB/FLUSHALL or INFO: over every key.
    All(Whole),
}

impl Cmd<'_> {
    /// Runs the whole command on `keys` (which hold every key it names).
    pub fn run(self, keys: &mut impl Keyspace) -> Reply {
        match self {
            Cmd::Key(key, op) => op.run(keys, key),
            Cmd::Keys(multi, names) => Gather::whole(multi.merge(), multi.run(keys, names)),
            Cmd::Pairs(pairs) => Gather::whole(Merge::Ok, set_pairs(keys, Pairs(pairs))),
            Cmd::All(whole) => Gather::whole(whole.merge(), whole.run(keys)),
        }
    }
}

/// What a command does to its one key. Owns what it carries (`Send`), so it can travel to the
/// core that owns the key.
#[derive(Debug)]
pub enum KeyOp {
    /// GET.
    Get,
    /// SET, its options checked.
    Set(Value, Condition, Expiry),
    /// INCR, DECR, INCRBY, DECRBY.
    IncrBy(i64),
    /// TTL (in seconds) or PTTL (in milliseconds).
    Ttl {
        /// TTL rather than PTTL.
        seconds: bool,
    },
}

impl KeyOp {
    /// Runs on `key` in `keys`.
    pub fn run(self, keys: &mut impl Keyspace, key: &[u8]) -> Reply {
        match self {
            KeyOp::Get => bulk_of(keys.get(key)),
            KeyOp::Set(value, condition, expiry) => {
                if keys.set(key, value, condition, expiry) {
                    Reply::OK
                } else {
                    Reply::Null
                }
            }
            KeyOp::IncrBy(delta) => match keys.incr_by(key, delta) {
                Ok(n) => Reply::Integer(n),
                Err(IncrError::NotInteger) => WRONG_TYPE,
                Err(IncrError::Overflow) => {
                    Reply::error("ERR increment or decrement would overflow")
                }
            },
            KeyOp::Ttl { seconds } => match keys.pttl(key) {
                Err(false) => Reply::Integer(-2),
                Err(true) => Reply::Integer(-1),
                Ok(ms) if seconds => Reply::Integer(ms.div_ceil(1000) as i64),
                Ok(ms) => Reply::Integer(ms as i64),
            },
        }
    }
}

/// A command that looks at each of its keys on its own.
#[derive(Clone, Copy, Debug)]
pub enum Multi {
    /// MGET: the values, in key order.
    Get,
    /// DEL: how many were removed.
    Del,
    /// EXISTS: how many are there (a key named twice counts twice).
    Exists,
}

impl Multi {
    /// How its parts merge.
    pub fn merge(self) -> Merge {
        match self {
            Multi::Get => Merge::Values,
            Multi::Del | Multi::Exists => Merge::Sum,
        }
    }

    /// Runs on `names`, all held by `keys`.
    pub fn run<K: AsRef<[u8]>>(
        self,
        keys: &mut impl Keyspace,
        names: impl IntoIterator<Item = K>,
    ) -> Part {
        let names = names.into_iter();
        match self {
            Multi::Get => Part::Values(names.map(|k| keys.get(k.as_ref())).collect()),
            Multi::Del => Part::Count(names.filter(|k| keys.del(k.as_ref())).count()),
            Multi::Exists => Part::Count(names.filter(|k| keys.exists(k.as_ref())).count()),
        }
    }
}

/// MSET's arguments as key-value pairs (the arity was checked: they come in pairs).
#[derive(Clone)]
pub struct Pairs<'a>(pub Args<'a>);

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        Some((self.0.next()?, self.0.next()?))
    }
}

/// Sets each key to its value, one by one (MSET, or one core's part of it).
pub fn set_pairs<K: AsRef<[u8]>, V: Into<Value>>(
    keys: &mut impl Keyspace,
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Part {
    for (key, value) in pairs {
        keys.set(key.as_ref(), value.into(), Condition::Always, Expiry::Never);
    }
    Part::Done
}

/// A command over every key.
#[derive(Clone, Copy, Debug)]
pub enum Whole {
    /// DBSIZE.
    Size,
    /// FLUSHDB, FLUSHALL.
    Flush,
    /// INFO (its keyspace line counts the keys).
    Info,
}

impl Whole {
    /// How its parts merge.
    pub fn merge(self) -> Merge {
        match self {
            Whole::Size => Merge::Sum,
            Whole::Flush => Merge::Ok,
            Whole::Info => Merge::Info,
        }
    }

    /// Runs on `keys`.
    pub fn run(self, keys: &mut impl Keyspace) -> Part {
        match self {
            Whole::Size | Whole::Info => Part::Count(keys.count()),
            Whole::Flush => {
                keys.clear();
                Part::Done
            }
        }
    }
}

/// What one part of a command (its keys on one core) gives back.
#[derive(Debug)]
pub enum Part {
    /// MGET's values, in the order of the part's keys.
    Values(Vec<Option<Value>>),
    /// A count: keys removed, found, or held.
    Count(usize),
    /// Nothing to say (MSET, FLUSHDB).
    Done,
}

/// How parts make one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// An array of the values, in key order (MGET).
    Values,
    /// The sum of the counts (DEL, EXISTS, DBSIZE).
    Sum,
    /// `+OK` once every part is done (MSET, FLUSHDB).
    Ok,
    /// INFO with the sum of the counts.
    Info,
}

/// A reply being put together from parts, in any order.
#[derive(Debug)]
pub struct Gather {
    merge: Merge,
    values: Vec<Option<Value>>,
    count: usize,
}

impl Gather {
    /// Waits for the parts of a command over `keys` keys.
    pub fn new(merge: Merge, keys: usize) -> Self {
        let values = match merge {
            Merge::Values => vec![None; keys],
            _ => Vec::new(),
        };
        Gather {
            merge,
            values,
            count: 0,
        }
    }

    /// The reply of a command run whole, as one part.
    pub fn whole(merge: Merge, part: Part) -> Reply {
        let mut gather = Gather::new(merge, 0);
        match part {
            Part::Values(values) => gather.values = values,
            part => gather.add(part, &[]),
        }
        gather.reply()
    }

    /// Adds a part; `at[i]` is the position, in the command, of the part's `i`th key.
    pub fn add(&mut self, part: Part, at: &[u32]) {
        match part {
            Part::Values(values) => {
                debug_assert_eq!(values.len(), at.len());
                for (value, &i) in values.into_iter().zip(at) {
                    self.values[i as usize] = value;
                }
            }
            Part::Count(n) => self.count += n,
            Part::Done => {}
        }
    }

    /// The reply, once every part is in.
    pub fn reply(self) -> Reply {
        match self.merge {
            Merge::Values => {
                // The reply is encoded at once: refuse one larger than the session may hold.
                let size: usize = self
                    .values
                    .iter()
                    .map(|v| {
                        16 + if let Some(Value::Str(b)) = v {
                            b.len()
                        } else {
                            0
                        }
                    })
                    .sum();
                if size > MAX_REPLY {
                    return Reply::error("ERR MGET reply would exceed 64 MiB");
                }
                Reply::Array(self.values.into_iter().map(bulk_of).collect())
            }
            Merge::Sum => Reply::Integer(self.count as i64),
            Merge::Ok => Reply::OK,
            Merge::Info => info(self.count),
        }
    }
}

fn bulk_of(value: Option<Value>) -> Reply {
    match value {
        Some(Value::Str(b)) => Reply::Bulk(b),
        Some(Value::Int(n)) => Reply::BulkInteger(n),
        None => Reply::Null,
    }
}

fn info(keys: usize) -> Reply {
    let text = format!(
        "# Server\r\nredis_version:7.0.0\r\nringwire_version:{}\r\n\r\n# Keyspace\r\ndb0:keys={}\r\n",
        env!("CARGO_PKG_VERSION"),
        keys
    );
    Reply::Bulk(Bytes::from(text))
}
