//! Shared nothing (`--sharding cores`): every key is owned by one core, chosen by a hash of the
//! key that every core computes the same way ([`owner`]), and only that core touches it: each
//! core keeps its keys in its per-core state (a [`Shard`]), with no lock and no sharing.
//!
//! A session's command runs where its keys are:
//!
//! - On the session's own core: inline, answered at once.
//! - One key on another core: the session reserves its next reply, and the command goes to the
//!   owner with `run_on`; the owner runs it, encodes the answer and completes the reply there.
//!   This is cheaper than `submit_to`, which would send the result back as a second closure
//!   to run here, only to complete the reply here: with `run_on` the way back is the reply's
//!   own message, its bytes alone, and the encoding is done by the owner.
//! - Keys on several cores (MGET, MSET, DEL, EXISTS), or every core (DBSIZE, FLUSHDB, INFO):
//!   the session reserves one reply; the part on its own core runs inline, and each other
//!   core gets one message with its keys (`submit_to`), whose result comes back here to be
//!   merged in key order (a [`Gather`] waiting in this core's [`Shard`]). The last part to
//!   arrive completes the reply.
//!
//! Order: a reserved reply holds back the output produced after it, so a client's pipelined
//! replies leave in request order whichever core answers them. Messages from one core to
//! another run in the order sent, so a connection's commands reach each owner in request
//! order: a GET after a SET of the same key sees it, wherever the key lives.
//!
//! Atomicity: a command on one key is atomic (one core runs it whole). A command over keys on
//! several cores is not: its parts run on their cores at different moments, so a client on
//! another connection may see some keys of an MSET before the others, and FLUSHDB empties the
//! cores one by one (the locked store was no more atomic: it takes a key, or a shard, at a
//! time).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::thread::JoinHandle;
use std::time::Duration;

use ringwire::codec::resp::{Reply, Resp};
use ringwire::{CoreCtx, RemoteError, RemoteHandle, ReplyError, Session};

use super::ops::Merge;
use super::ops::{set_pairs, Cmd, Gather, KeyOp, Multi, Pairs, Part, Whole};
use super::send;
use super::store::{Local, Value};

/// The hash that places keys: fixed, so that every core (and test) computes the same owner.
const PLACE: foldhash::fast::FixedState =
    foldhash::fast::FixedState::with_seed(0x6b76_6f77_6e65_7273);

/// The core (worker index) that owns `key` among `workers` cores.
pub fn owner(key: &[u8], workers: usize) -> usize {
    // The hash's top bits scaled to the count: no division.
    ((u128::from(PLACE.hash_one(key)) * workers as u128) >> 64) as usize
}

/// A core's state with `--sharding cores`: its own keys, and the commands of its sessions
/// waiting for parts from other cores.
#[derive(Debug)]
pub struct Shard {
    keys: Local,
    waiting: HashMap<u64, Waiting>,
    /// Names the next command to wait; never reused, so a late part cannot reach another.
    next: u64,
}

/// A command waiting for its parts from other cores.
#[derive(Debug)]
struct Waiting {
    reply: ringwire::Reply,
    gather: Gather,
    parts_left: usize,
    /// A part could not be sent (a core has stopped: the server is stopping).
    lost: bool,
}

impl Shard {
    /// A core's empty keys, split over `maps` maps (one is swept at a time).
    pub fn new(maps: usize) -> Shard {
        Shard {
            keys: Local::new(maps),
            waiting: HashMap::new(),
            next: 0,
        }
    }
}

fn keys(ctx: &mut CoreCtx) -> &mut Local {
    &mut ctx.state::<Shard>().keys
}

/// Runs `cmd` for `session` where its keys are; see the module doc. Fails, having touched no
/// key, if it needs a reply reserved and the session has too many outstanding. Each key is
/// hashed once (to find its owner), and a command whose keys are all this core's allocates
/// nothing here.
pub fn dispatch(session: &mut Session<'_, Resp>, cmd: Cmd<'_>) -> Result<(), ReplyError> {
    let (me, workers) = (session.worker(), session.core().workers());
    if workers == 1 {
        return run_here(session, cmd);
    }
    match cmd {
        Cmd::Key(key, op) => match owner(key, workers) {
            core if core == me => run_here(session, Cmd::Key(key, op)),
            core => forward(session, core, key, op),
        },
        Cmd::Keys(multi, names) => match split(names.clone(), workers, me, <[u8]>::to_vec) {
            None => run_here(session, Cmd::Keys(multi, names)),
            Some(by_core) => many(session, multi, by_core),
        },
        Cmd::Pairs(pairs) => {
            let mut values = Pairs(pairs.clone()).map(|(_, v)| v);
            let names = Pairs(pairs.clone()).map(|(k, _)| k);
            // Each key with its value (`split` takes the keys in order, so `next` pairs them).
            let pair = |key: &[u8]| {
                let value = Value::from_bytes(values.next().unwrap_or_default());
                (key.to_vec(), value)
            };
            match split(names, workers, me, pair) {
                None => run_here(session, Cmd::Pairs(pairs)),
                Some(by_core) => mset(session, by_core),
            }
        }
        Cmd::All(whole) => all(session, whole),
    }
}

fn run_here(session: &mut Session<'_, Resp>, cmd: Cmd<'_>) -> Result<(), ReplyError> {
    let reply = cmd.run(keys(session.core()));
    send(session, &reply);
    Ok(())
}

/// The bytes of `reply`, to complete a reserved one with.
fn encoded(reply: &Reply) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Err(e) = reply.encode(&mut bytes) {
        log::warn!("kv: cannot encode a reply: {e}");
        bytes.clear();
        bytes.extend_from_slice(b"-ERR cannot encode the reply\r\n");
    }
    bytes
}

/// One key on another core: run there, answered from there.
fn forward(
    session: &mut Session<'_, Resp>,
    owner: usize,
    key: &[u8],
    op: KeyOp,
) -> Result<(), ReplyError> {
    let reply = session.reserve()?;
    let key: Box<[u8]> = key.into();
    let sent = session.core().run_on(owner, move |ctx: &mut CoreCtx| {
        let answer = op.run(keys(ctx), &key);
        reply.complete(encoded(&answer));
    });
    if let Err(e) = sent {
        // The reply went down with the closure: the session closes once the replies before
        // it are written (the server is stopping).
        log::warn!("kv: cannot reach core {owner}: {e}");
    }
    Ok(())
}

/// The keys of a command by owning core: their positions in the command and the keys.
type ByCore<K> = Vec<(Vec<u32>, Vec<K>)>;

/// The keys of `names` by owning core (`own` makes each what is sent, called once per key in
/// order), or `None` if every key is core `me`'s. Each key is hashed once; the keys before
/// the first of another core are all `me`'s, and are filled in when that one is found.
fn split<'a, K>(
    names: impl Iterator<Item = &'a [u8]> + Clone,
    workers: usize,
    me: usize,
    mut own: impl FnMut(&'a [u8]) -> K,
) -> Option<ByCore<K>> {
    let mut by_core: Option<ByCore<K>> = None;
    for (i, key) in names.clone().enumerate() {
        let core = owner(key, workers);
        let by_core = match &mut by_core {
            Some(by_core) => by_core,
            None if core == me => continue,
            None => {
                let mut fresh: ByCore<K> = (0..workers).map(|_| (Vec::new(), Vec::new())).collect();
                let (at, keys) = &mut fresh[me];
                for (j, key) in names.clone().take(i).enumerate() {
                    at.push(j as u32);
                    keys.push(own(key));
                }
                by_core.insert(fresh)
            }
        };
        let (at, keys) = &mut by_core[core];
        at.push(i as u32);
        keys.push(own(key));
    }
    by_core
}

/// MGET, DEL or EXISTS over keys of several cores.
fn many(
    session: &mut Session<'_, Resp>,
    multi: Multi,
    mut by_core: ByCore<Vec<u8>>,
) -> Result<(), ReplyError> {
    let reply = session.reserve()?;
    let me = session.worker();
    let total = by_core.iter().map(|(at, _)| at.len()).sum();
    let (own_at, own_keys) = std::mem::take(&mut by_core[me]);
    let own = multi.run(keys(session.core()), &own_keys);
    let id = wait(
        session.core(),
        reply,
        Gather::new(multi.merge(), total),
        own,
        &own_at,
    );
    fan_out(session.core(), id, by_core, move |local, names| {
        multi.run(local, names)
    });
    Ok(())
}

/// MSET over keys of several cores.
fn mset(
    session: &mut Session<'_, Resp>,
    mut by_core: ByCore<(Vec<u8>, Value)>,
) -> Result<(), ReplyError> {
    let reply = session.reserve()?;
    let (_, own_pairs) = std::mem::take(&mut by_core[session.worker()]);
    let own = set_pairs(keys(session.core()), own_pairs);
    let id = wait(session.core(), reply, Gather::new(Merge::Ok, 0), own, &[]);
    fan_out(session.core(), id, by_core, set_pairs);
    Ok(())
}

/// DBSIZE, FLUSHDB or INFO: every core's part.
fn all(session: &mut Session<'_, Resp>, whole: Whole) -> Result<(), ReplyError> {
    let reply = session.reserve()?;
    let (me, workers) = (session.worker(), session.core().workers());
    let own = whole.run(keys(session.core()));
    let id = wait(
        session.core(),
        reply,
        Gather::new(whole.merge(), 0),
        own,
        &[],
    );
    // One empty part per other core: each runs the whole command on its keys.
    let by_core: ByCore<()> = (0..workers)
        .map(|core| (Vec::new(), if core == me { vec![] } else { vec![()] }))
        .collect();
    fan_out(session.core(), id, by_core, move |local, _| {
        whole.run(local)
    });
    Ok(())
}

/// Puts a command's reply to wait in this core's state, with the part run here.
fn wait(
    ctx: &mut CoreCtx,
    reply: ringwire::Reply,
    mut gather: Gather,
    own: Part,
    at: &[u32],
) -> u64 {
    gather.add(own, at);
    let shard = ctx.state::<Shard>();
    let id = shard.next;
    shard.next += 1;
    let waiting = Waiting {
        reply,
        gather,
        parts_left: 0,
        lost: false,
    };
    shard.waiting.insert(id, waiting);
    id
}

/// Sends each core its keys (cores without any get nothing) with `work` to run on them; each
/// part's result comes back here to [`arrive`].
fn fan_out<K: Send + 'static>(
    ctx: &mut CoreCtx,
    id: u64,
    by_core: ByCore<K>,
    work: impl FnOnce(&mut Local, Vec<K>) -> Part + Send + Clone + 'static,
) {
    let parts: Vec<(usize, Vec<u32>, Vec<K>)> = by_core
        .into_iter()
        .enumerate()
        .filter(|(_, (_, keys))| !keys.is_empty())
        .map(|(core, (at, keys))| (core, at, keys))
        .collect();
    if let Some(waiting) = ctx.state::<Shard>().waiting.get_mut(&id) {
        waiting.parts_left = parts.len();
    }
    for (core, at, names) in parts {
        let work = work.clone();
        let sent = ctx.submit_to(
            core,
            move |ctx: &mut CoreCtx| work(keys(ctx), names),
            move |ctx: &mut CoreCtx, part: Part| arrive(ctx, id, Some((part, &at))),
        );
        if sent.is_err() {
            arrive(ctx, id, None);
        }
    }
    // Every key may have been this core's (an MSET's part here was all of it); then the
    // reply is complete already.
    arrive_none_left(ctx, id);
}

/// A part of command `id` is back (`None`: it could not be sent).
fn arrive(ctx: &mut CoreCtx, id: u64, part: Option<(Part, &[u32])>) {
    let Some(waiting) = ctx.state::<Shard>().waiting.get_mut(&id) else {
        return;
    };
    match part {
        Some((part, at)) => waiting.gather.add(part, at),
        None => waiting.lost = true,
    }
    waiting.parts_left -= 1;
    arrive_none_left(ctx, id);
}

/// Completes command `id` if no part is left to come.
fn arrive_none_left(ctx: &mut CoreCtx, id: u64) {
    let shard = ctx.state::<Shard>();
    if shard.waiting.get(&id).is_none_or(|w| w.parts_left > 0) {
        return;
    }
    let waiting = shard.waiting.remove(&id).expect("found above");
    let answer = if waiting.lost {
        Reply::error("ERR a core of this server has stopped")
    } else {
        waiting.gather.reply()
    };
    waiting.reply.complete(encoded(&answer));
}

/// Sweeps every core's expired keys every `period` (one map per core per sweep), from a thread
/// of its own that sends the sweep to each core, until the server stops. (The server's
/// per-core tick runs without the core's state, so it cannot do this.)
pub fn sweep_every(remote: RemoteHandle, period: Duration) -> JoinHandle<()> {
    std::thread::spawn(move || loop {
        std::thread::sleep(period);
        for core in 0..remote.workers() {
            let swept = remote.run_on(core, |ctx: &mut CoreCtx| {
                keys(ctx).sweep_next();
            });
            // Busy: the core has work enough, and is swept next time.
            if let Err(RemoteError::Stopped) = swept {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{owner, split};

    /// `split` places every key where `owner` says, at its position, making each key's part
    /// in key order; with every key on this core it gives nothing.
    #[test]
    fn split_places_each_key_on_its_owner_in_order() {
        let keys: Vec<String> = (0..40).map(|k| format!("key{k}")).collect();
        let names = || keys.iter().map(|k| k.as_bytes());
        for me in 0..2 {
            let mut made = Vec::new();
            let by_core = split(names(), 2, me, |k| {
                made.push(k);
                k.to_vec()
            })
            .expect("the keys lie on both cores");
            assert_eq!(
                made,
                names().collect::<Vec<_>>(),
                "each key made once, in order"
            );
            for (core, (at, part)) in by_core.iter().enumerate() {
                for (&i, key) in at.iter().zip(part) {
                    assert_eq!(key, keys[i as usize].as_bytes());
                    assert_eq!(owner(key, 2), core);
                }
            }
            assert_eq!(by_core.iter().map(|(at, _)| at.len()).sum::<usize>(), 40);
            let own: Vec<&[u8]> = names().filter(|k| owner(k, 2) == me).collect();
            assert!(split(own.into_iter(), 2, me, <[u8]>::to_vec).is_none());
        }
    }
}
