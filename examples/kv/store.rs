//! The key-value store behind the kv example: string values (and integers, kept as integers so
//! that `INCR` and `GET` of a counter allocate nothing), optional expiry, shared by every core.
//!
//! Sharing: the keys are split over a power-of-two number of shards, each a hash map behind
//! its own `Mutex`, padded to a cache line. Every operation locks one shard for one map
//! operation and a value clone (a reference count): no allocation, no free and no I/O happens
//! under a lock (a replaced value is dropped after the lock is released). The engine itself
//! stays lock-free; this is the example's choice, and `docs/PROTOCOLS.md` measures its cost.
//! A write is visible to every core as soon as its call returns, that is before its reply is
//! even encoded.
//!
//! Expiry is lazy (an expired key is removed when touched) plus a sweep, one shard per call of
//! [`Store::sweep_next`], of the shards that hold keys with a deadline.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

type Map = HashMap<Box<[u8]>, Entry, foldhash::fast::RandomState>;

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Bytes, shared by reference count with the replies that carry them.
    Str(Bytes),
    /// A canonical decimal integer (what `INCR` works on).
    Int(i64),
}

impl Value {
    /// The value for `bytes` as a client sent them: an integer when they spell one the way
    /// Redis would print it (so `GET` returns exactly the bytes that were set), else a copy.
    pub fn from_bytes(bytes: &[u8]) -> Value {
        match canonical_int(bytes) {
            Some(n) => Value::Int(n),
            None => Value::Str(Bytes::copy_from_slice(bytes)),
        }
    }
}

/// Parses a decimal integer written without sign noise or leading zeros (`0`, `-12`, not `+1`,
/// `01` or `-0`), as Redis's `string2ll` does.
pub fn canonical_int(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ if digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) => return None,
        _ => {}
    }
    let magnitude = digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    /// Milliseconds since the store's epoch after which the key is gone.
    expires: Option<u64>,
}

impl Entry {
    fn live(&self, now: &mut Clock) -> bool {
        self.expires.is_none_or(|t| t > now.get())
    }
}

/// Reads the monotonic clock at most once per operation, and only for keys with a deadline.
struct Clock<'a> {
    epoch: &'a Instant,
    now: Option<u64>,
}

impl Clock<'_> {
    fn get(&mut self) -> u64 {
        *self
            .now
            .get_or_insert_with(|| self.epoch.elapsed().as_millis() as u64)
    }
}

/// One shard: a map and the number of its keys with a deadline, on a cache line of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    map: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: Map,
    with_deadline: usize,
}

impl Inner {
    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let old = self.map.remove(key)?;
        self.with_deadline -= usize::from(old.expires.is_some());
        Some(old)
    }

    /// The entry of `key` if it is live; an expired one is removed (and dropped by the
    /// caller's `_dead`, after the lock).
    fn live_mut(
        &mut self,
        key: &[u8],
        clock: &mut Clock,
        dead: &mut Option<Entry>,
    ) -> Option<&mut Entry> {
        if self.map.get(key).is_some_and(|e| !e.live(clock)) {
            *dead = self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }
}

/// When `SET` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Only if the key is missing (`NX`).
    Missing,
    /// Only if the key exists (`XX`).
    Exists,
}

/// What `SET` does to the key's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No deadline.
    Never,
    /// Keep the current one (`KEEPTTL`).
    Keep,
    /// Expire after this many milliseconds (`EX`, `PX`).
    After(u64),
}

/// Why `INCR` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrError {
    /// The value is not an integer.
    NotInteger,
    /// The result would overflow.
    Overflow,
}

/// The shared store.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
    shift: u32,
    epoch: Instant,
    sweep_cursor: AtomicUsize,
}

impl Store {
    /// A store of `shards` shards (rounded up to a power of two, at least 1).
    pub fn new(shards: usize) -> Store {
        let n = shards.max(1).next_power_of_two();
        Store {
            shards: (0..n)
                .map(|_| Shard {
                    map: Mutex::new(Inner {
                        map: Map::default(),
                        with_deadline: 0,
                    }),
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            shift: 64 - n.trailing_zeros(),
            epoch: Instant::now(),
            sweep_cursor: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Inner> {
        let index = match self.shift {
            64 => 0,
            shift => (self.hasher.hash_one(key) >> shift) as usize,
        };
        // A panic never happens under the lock (no user code runs there); recover anyway.
        self.shards[index]
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn clock(&self) -> Clock<'_> {
        Clock {
            epoch: &self.epoch,
            now: None,
        }
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        let mut clock = self.clock();
        let mut dead = None;
        let value = self
            .shard(key)
            .live_mut(key, &mut clock, &mut dead)
            .map(|e| e.value.clone());
        drop(dead);
        value
    }

    /// Sets `key` to `value` if `condition` holds; returns whether it did.
    pub fn set(&self, key: &[u8], value: Value, condition: Condition, expiry: Expiry) -> bool {
        let mut clock = self.clock();
        let expires = match expiry {
            Expiry::After(ms) => Some(clock.get().saturating_add(ms)),
            _ => None,
        };
        let mut dead = None;
        let mut shard = self.shard(key);
        // (had a deadline, has one now)
        let mut deadlines = (false, expires.is_some());
        let old = match shard.live_mut(key, &mut clock, &mut dead) {
            Some(_) if condition == Condition::Missing => return false,
            None if condition == Condition::Exists => return false,
            Some(entry) => {
                let kept = if expiry == Expiry::Keep {
                    entry.expires
                } else {
                    expires
                };
                deadlines = (entry.expires.is_some(), kept.is_some());
                entry.expires = kept;
                Some(std::mem::replace(&mut entry.value, value))
            }
            None => {
                shard.map.insert(key.into(), Entry { value, expires });
                None
            }
        };
        shard.with_deadline =
            shard.with_deadline + usize::from(deadlines.1) - usize::from(deadlines.0);
        drop(shard);
        // Free what was replaced or expired outside the lock.
        drop((old, dead));
        true
    }

    /// Removes `key`; returns whether it was there.
    pub fn del(&self, key: &[u8]) -> bool {
        let mut clock = self.clock();
        let old = self.shard(key).remove(key);
        old.is_some_and(|e| e.live(&mut clock))
    }

    /// Whether `key` is there.
    pub fn exists(&self, key: &[u8]) -> bool {
        let mut clock = self.clock();
        let mut dead = None;
        let found = self
            .shard(key)
            .live_mut(key, &mut clock, &mut dead)
            .is_some();
        drop(dead);
        found
    }

    /// Adds `delta` to the integer at `key` (missing counts as 0); returns the new value. The
    /// deadline, if any, is kept.
    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        let mut clock = self.clock();
        let mut dead = None;
        let mut shard = self.shard(key);
        let result = match shard.live_mut(key, &mut clock, &mut dead) {
            Some(Entry {
                value: Value::Int(n),
                ..
            }) => {
                *n = n.checked_add(delta).ok_or(IncrError::Overflow)?;
                Ok(*n)
            }
            Some(_) => Err(IncrError::NotInteger),
            None => {
                let entry = Entry {
                    value: Value::Int(delta),
                    expires: None,
                };
                shard.map.insert(key.into(), entry);
                Ok(delta)
            }
        };
        drop(shard);
        drop(dead);
        result
    }

    /// Milliseconds until `key` expires: `Err(false)` if it is missing, `Err(true)` if it
    /// has no deadline.
    pub fn pttl(&self, key: &[u8]) -> Result<u64, bool> {
        let mut clock = self.clock();
        let mut dead = None;
        let mut shard = self.shard(key);
        let result = match shard.live_mut(key, &mut clock, &mut dead) {
            None => Err(false),
            Some(Entry { expires: None, .. }) => Err(true),
            Some(Entry {
                expires: Some(t), ..
            }) => Ok(t.saturating_sub(clock.get())),
        };
        drop(shard);
        drop(dead);
        result
    }

    /// Number of keys (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.map.lock().map_or(0, |m| m.map.len()))
            .sum()
    }

    /// Removes every key.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let old = match shard.map.lock() {
                Ok(mut inner) => {
                    inner.with_deadline = 0;
                    std::mem::take(&mut inner.map)
                }
                Err(_) => continue,
            };
            drop(old);
        }
    }

    /// Removes the expired keys of the next shard that has keys with a deadline (at most one
    /// shard per call). Returns how many were removed.
    pub fn sweep_next(&self) -> usize {
        let n = self.shards.len();
        let start = self.sweep_cursor.fetch_add(1, Relaxed);
        for i in 0..n {
            let shard = &self.shards[(start + i) % n];
            let Ok(mut inner) = shard.map.lock() else {
                continue;
            };
            if inner.with_deadline == 0 {
                continue;
            }
            let mut clock = self.clock();
            let before = inner.map.len();
            let mut expired_with_deadline = 0;
            inner.map.retain(|_, e| {
                let keep = e.live(&mut clock);
                expired_with_deadline += usize::from(!keep);
                keep
            });
            inner.with_deadline -= expired_with_deadline;
            return before - inner.map.len();
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_integers() {
        for (s, v) in [
            ("0", Some(0)),
            ("-12", Some(-12)),
            ("9223372036854775807", Some(i64::MAX)),
        ] {
            assert_eq!(canonical_int(s.as_bytes()), v, "{s}");
        }
        assert_eq!(canonical_int(b"-9223372036854775808"), Some(i64::MIN));
        for s in ["", "-", "+1", "01", "-0", "1a", " 1", "9223372036854775808"] {
            assert_eq!(canonical_int(s.as_bytes()), None, "{s}");
        }
    }
}
