//! The keys behind the kv example: string values (and integers, kept as integers so that
//! `INCR` and `GET` of a counter allocate nothing) with optional expiry, held one of two ways.
//!
//! - [`Keys`]: one hash map with no lock of its own, the unit both ways are built from.
//! - [`Local`] (`--sharding cores`, the default): a core's own keys, a few `Keys` maps that only
//!   that core touches. Which core owns a key is `kv/cores.rs`'s business.
//! - [`Store`] (`--sharding locks`): one store shared by every core, its keys split over a
//!   power-of-two number of shards, each a `Keys` behind its own `Mutex`, padded to a cache
//!   line. Every operation locks one shard for one map operation and a value clone (a
//!   reference count): no allocation, no free and no I/O happens under a lock (what an
//!   operation removes or replaces comes back as [`Trash`], dropped after the unlock). A write
//!   is visible to every core as soon as its call returns, before its reply is even encoded.
//!
//! Commands reach either through the [`Keyspace`] trait, so both ways run the same command
//! code. Expiry is lazy (an expired key is removed when touched) plus a sweep, one map or shard
//! per call of `sweep_next`, of those that hold keys with a deadline.

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

impl From<&[u8]> for Value {
    fn from(bytes: &[u8]) -> Value {
        Value::from_bytes(bytes)
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
    /// Milliseconds since the map's epoch after which the key is gone.
    expires: Option<u64>,
}

impl Entry {
    fn live(&self, now: &mut Clock) -> bool {
        self.expires.is_none_or(|t| t > now.get())
    }
}

/// Reads the monotonic clock at most once per operation, and only for keys with a deadline.
struct Clock {
    epoch: Instant,
    now: Option<u64>,
}

impl Clock {
    fn get(&mut self) -> u64 {
        *self
            .now
            .get_or_insert_with(|| self.epoch.elapsed().as_millis() as u64)
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

/// What an operation on [`Keys`] removed or replaced, handed to the caller to drop: the locked
/// [`Store`] drops it after the unlock, so that no free happens under a lock.
#[must_use = "dropping it here frees under the caller's lock, if any"]
#[derive(Debug, Default)]
#[allow(dead_code)] // Held only to be dropped.
pub struct Trash {
    entry: Option<Entry>,
    value: Option<Value>,
    map: Option<Map>,
}

/// One map of keys with one user at a time and no lock of its own: a shard of the locked
/// [`Store`] (behind its mutex), or one of the maps of a core's own [`Local`] keys. Deadlines
/// count from the map's own epoch (a key never moves between maps).
#[derive(Debug)]
pub struct Keys {
    map: Map,
    with_deadline: usize,
    epoch: Instant,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            map: Map::default(),
            with_deadline: 0,
            epoch: Instant::now(),
        }
    }
}

impl Keys {
    fn clock(&self) -> Clock {
        Clock {
            epoch: self.epoch,
            now: None,
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let old = self.map.remove(key)?;
        self.with_deadline -= usize::from(old.expires.is_some());
        Some(old)
    }

    /// The entry of `key` if it is live; an expired one is removed into `trash`.
    fn live_mut(&mut self, key: &[u8], clock: &mut Clock, trash: &mut Trash) -> Option<&mut Entry> {
        if self.map.get(key).is_some_and(|e| !e.live(clock)) {
            trash.entry = self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    /// The value of `key`, if any.
    pub fn get(&mut self, key: &[u8]) -> (Option<Value>, Trash) {
        let (mut clock, mut trash) = (self.clock(), Trash::default());
        let value = self
            .live_mut(key, &mut clock, &mut trash)
            .map(|e| e.value.clone());
        (value, trash)
    }

    /// Sets `key` to `value` if `condition` holds; returns whether it did.
    pub fn set(
        &mut self,
        key: &[u8],
        value: Value,
        condition: Condition,
        expiry: Expiry,
    ) -> (bool, Trash) {
        let (mut clock, mut trash) = (self.clock(), Trash::default());
        let expires = match expiry {
            Expiry::After(ms) => Some(clock.get().saturating_add(ms)),
            _ => None,
        };
        // (had a deadline, has one now)
        let mut deadlines = (false, expires.is_some());
        match self.live_mut(key, &mut clock, &mut trash) {
            Some(_) if condition == Condition::Missing => return (false, trash),
            None if condition == Condition::Exists => return (false, trash),
            Some(entry) => {
                let kept = if expiry == Expiry::Keep {
                    entry.expires
                } else {
                    expires
                };
                deadlines = (entry.expires.is_some(), kept.is_some());
                entry.expires = kept;
                trash.value = Some(std::mem::replace(&mut entry.value, value));
            }
            None => {
                self.map.insert(key.into(), Entry { value, expires });
            }
        }
        self.with_deadline =
            self.with_deadline + usize::from(deadlines.1) - usize::from(deadlines.0);
        (true, trash)
    }

    /// Removes `key`; returns whether it was there (and live).
    pub fn del(&mut self, key: &[u8]) -> (bool, Trash) {
        let mut clock = self.clock();
        let entry = self.remove(key);
        let live = entry.as_ref().is_some_and(|e| e.live(&mut clock));
        (
            live,
            Trash {
                entry,
                ..Trash::default()
            },
        )
    }

    /// Whether `key` is there.
    pub fn exists(&mut self, key: &[u8]) -> (bool, Trash) {
        let (mut clock, mut trash) = (self.clock(), Trash::default());
        let found = self.live_mut(key, &mut clock, &mut trash).is_some();
        (found, trash)
    }

    /// Adds `delta` to the integer at `key` (missing counts as 0); returns the new value. The
    /// deadline, if any, is kept.
    pub fn incr_by(&mut self, key: &[u8], delta: i64) -> (Result<i64, IncrError>, Trash) {
        let (mut clock, mut trash) = (self.clock(), Trash::default());
        let result = match self.live_mut(key, &mut clock, &mut trash) {
            Some(Entry {
                value: Value::Int(n),
                ..
            }) => match n.checked_add(delta) {
                Some(sum) => {
                    *n = sum;
                    Ok(sum)
                }
                None => Err(IncrError::Overflow),
            },
            Some(_) => Err(IncrError::NotInteger),
            None => {
                let entry = Entry {
                    value: Value::Int(delta),
                    expires: None,
                };
                self.map.insert(key.into(), entry);
                Ok(delta)
            }
        };
        (result, trash)
    }

    /// Milliseconds until `key` expires: `Err(false)` if it is missing, `Err(true)` if it
    /// has no deadline.
    pub fn pttl(&mut self, key: &[u8]) -> (Result<u64, bool>, Trash) {
        let (mut clock, mut trash) = (self.clock(), Trash::default());
        let result = match self.live_mut(key, &mut clock, &mut trash) {
            None => Err(false),
            Some(Entry { expires: None, .. }) => Err(true),
            Some(Entry {
                expires: Some(t), ..
            }) => Ok(t.saturating_sub(clock.get())),
        };
        (result, trash)
    }

    /// Number of keys (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Removes every key.
    pub fn clear(&mut self) -> Trash {
        self.with_deadline = 0;
        Trash {
            map: Some(std::mem::take(&mut self.map)),
            ..Trash::default()
        }
    }

    /// Removes the expired keys, if any key has a deadline (`None` if none has). Returns how
    /// many were removed.
    pub fn sweep(&mut self) -> Option<usize> {
        if self.with_deadline == 0 {
            return None;
        }
        let mut clock = self.clock();
        let before = self.map.len();
        let mut expired = 0;
        self.map.retain(|_, e| {
            let keep = e.live(&mut clock);
            expired += usize::from(!keep);
            keep
        });
        self.with_deadline -= expired;
        Some(before - self.map.len())
    }
}

/// A power-of-two number of cells, a key's cell chosen by the top bits of its hash, and a
/// cursor for sweeping the cells one at a time.
#[derive(Debug)]
struct Shards<T> {
    cells: Box<[T]>,
    hasher: foldhash::fast::RandomState,
    shift: u32,
    cursor: AtomicUsize,
}

impl<T> Shards<T> {
    /// `n` cells (rounded up to a power of two, at least 1).
    fn new(n: usize, make: impl FnMut(usize) -> T) -> Self {
        let n = n.max(1).next_power_of_two();
        Shards {
            cells: (0..n).map(make).collect(),
            hasher: foldhash::fast::RandomState::default(),
            shift: 64 - n.trailing_zeros(),
            cursor: AtomicUsize::new(0),
        }
    }

    fn index(&self, key: &[u8]) -> usize {
        match self.shift {
            64 => 0,
            shift => (self.hasher.hash_one(key) >> shift) as usize,
        }
    }

    /// Every cell's index once, starting one further than the last call did.
    fn sweep_order(&self) -> impl Iterator<Item = usize> {
        let n = self.cells.len();
        let start = self.cursor.fetch_add(1, Relaxed);
        (0..n).map(move |i| (start + i) % n)
    }
}

/// One shard of the locked store, on a cache line of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<Keys>);

/// The store shared by every core with `--sharding locks`.
#[derive(Debug)]
pub struct Store {
    shards: Shards<Shard>,
}

impl Store {
    /// A store of `shards` shards (rounded up to a power of two, at least 1).
    pub fn new(shards: usize) -> Store {
        Store {
            shards: Shards::new(shards, |_| Shard(Mutex::new(Keys::default()))),
        }
    }

    fn lock(shard: &Shard) -> MutexGuard<'_, Keys> {
        // A panic never happens under the lock (no user code runs there); recover anyway.
        shard
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Keys> {
        Self::lock(&self.shards.cells[self.shards.index(key)])
    }

    // Each operation below binds the trash to a name: the guard, a temporary, is dropped at
    // the end of the statement, and the trash after it, at the end of the function.

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        let (value, _trash) = self.shard(key).get(key);
        value
    }

    /// Sets `key` to `value` if `condition` holds; returns whether it did.
    pub fn set(&self, key: &[u8], value: Value, condition: Condition, expiry: Expiry) -> bool {
        let (done, _trash) = self.shard(key).set(key, value, condition, expiry);
        done
    }

    /// Removes `key`; returns whether it was there.
    pub fn del(&self, key: &[u8]) -> bool {
        let (found, _trash) = self.shard(key).del(key);
        found
    }

    /// Whether `key` is there.
    pub fn exists(&self, key: &[u8]) -> bool {
        let (found, _trash) = self.shard(key).exists(key);
        found
    }

    /// Adds `delta` to the integer at `key` (missing counts as 0); returns the new value. The
    /// deadline, if any, is kept.
    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        let (result, _trash) = self.shard(key).incr_by(key, delta);
        result
    }

    /// Milliseconds until `key` expires: `Err(false)` if it is missing, `Err(true)` if it
    /// has no deadline.
    pub fn pttl(&self, key: &[u8]) -> Result<u64, bool> {
        let (result, _trash) = self.shard(key).pttl(key);
        result
    }

    /// Number of keys (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.shards.cells.iter().map(|s| Self::lock(s).len()).sum()
    }

    /// Removes every key.
    pub fn clear(&self) {
        for shard in self.shards.cells.iter() {
            let _trash = Self::lock(shard).clear();
        }
    }

    /// Removes the expired keys of the next shard that has keys with a deadline (at most one
    /// shard per call). Returns how many were removed.
    pub fn sweep_next(&self) -> usize {
        self.shards
            .sweep_order()
            .find_map(|i| Self::lock(&self.shards.cells[i]).sweep())
            .unwrap_or(0)
    }
}

/// A core's own keys with `--sharding cores`: the same maps as a [`Store`]'s shards, without
/// locks (only the owning core ever touches them), split so that a sweep scans one map at a
/// time.
#[derive(Debug)]
pub struct Local {
    maps: Shards<Keys>,
}

impl Local {
    /// Keys split over `maps` maps (rounded up to a power of two, at least 1).
    pub fn new(maps: usize) -> Local {
        Local {
            maps: Shards::new(maps, |_| Keys::default()),
        }
    }

    fn keys(&mut self, key: &[u8]) -> &mut Keys {
        let i = self.maps.index(key);
        &mut self.maps.cells[i]
    }

    /// Removes the expired keys of the next map that has keys with a deadline (at most one map
    /// per call). Returns how many were removed.
    pub fn sweep_next(&mut self) -> usize {
        // The order borrows nothing: it is made of the count and the cursor's value.
        let mut order = self.maps.sweep_order();
        let cells = &mut self.maps.cells;
        order.find_map(|i| cells[i].sweep()).unwrap_or(0)
    }
}

/// The operations a command runs on the keys it may reach: the shared [`Store`] (through
/// `&Store`) or a core's own [`Local`] keys.
pub trait Keyspace {
    /// The value of `key`, if any.
    fn get(&mut self, key: &[u8]) -> Option<Value>;
    /// Sets `key` to `value` if `condition` holds; returns whether it did.
    fn set(&mut self, key: &[u8], value: Value, condition: Condition, expiry: Expiry) -> bool;
    /// Removes `key`; returns whether it was there.
    fn del(&mut self, key: &[u8]) -> bool;
    /// Whether `key` is there.
    fn exists(&mut self, key: &[u8]) -> bool;
    /// Adds `delta` to the integer at `key` (missing counts as 0).
    fn incr_by(&mut self, key: &[u8], delta: i64) -> Result<i64, IncrError>;
    /// Milliseconds until `key` expires: `Err(false)` if missing, `Err(true)` if no deadline.
    fn pttl(&mut self, key: &[u8]) -> Result<u64, bool>;
    /// Number of keys (expired ones not yet removed included).
    fn count(&mut self) -> usize;
    /// Removes every key.
    fn clear(&mut self);
}

impl Keyspace for &Store {
    fn get(&mut self, key: &[u8]) -> Option<Value> {
        Store::get(self, key)
    }
    fn set(&mut self, key: &[u8], value: Value, condition: Condition, expiry: Expiry) -> bool {
        Store::set(self, key, value, condition, expiry)
    }
    fn del(&mut self, key: &[u8]) -> bool {
        Store::del(self, key)
    }
    fn exists(&mut self, key: &[u8]) -> bool {
        Store::exists(self, key)
    }
    fn incr_by(&mut self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        Store::incr_by(self, key, delta)
    }
    fn pttl(&mut self, key: &[u8]) -> Result<u64, bool> {
        Store::pttl(self, key)
    }
    fn count(&mut self) -> usize {
        Store::len(self)
    }
    fn clear(&mut self) {
        Store::clear(self)
    }
}

impl Keyspace for Local {
    fn get(&mut self, key: &[u8]) -> Option<Value> {
        self.keys(key).get(key).0
    }
    fn set(&mut self, key: &[u8], value: Value, condition: Condition, expiry: Expiry) -> bool {
        self.keys(key).set(key, value, condition, expiry).0
    }
    fn del(&mut self, key: &[u8]) -> bool {
        self.keys(key).del(key).0
    }
    fn exists(&mut self, key: &[u8]) -> bool {
        self.keys(key).exists(key).0
    }
    fn incr_by(&mut self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        self.keys(key).incr_by(key, delta).0
    }
    fn pttl(&mut self, key: &[u8]) -> Result<u64, bool> {
        self.keys(key).pttl(key).0
    }
    fn count(&mut self) -> usize {
        self.maps.cells.iter().map(Keys::len).sum()
    }
    fn clear(&mut self) {
        for keys in self.maps.cells.iter_mut() {
            let _trash = keys.clear();
        }
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
