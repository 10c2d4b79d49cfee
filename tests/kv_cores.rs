//! The shared-nothing kv (`--sharding cores`) against a model: 16 connections to a 2-core
//! server, each pipelining batches of random commands (SET with NX/XX, GET, DEL, EXISTS, MGET,
//! MSET, INCR/DECR/INCRBY, and errors: INCR of a non-integer or past i64, wrong arities), and
//! every reply must come back byte for byte as the model says, in request order.
//!
//! Each connection writes only keys of its own prefix, so a model per connection is exact
//! whatever the interleaving with the others; all of them also read a few shared keys, set
//! before they start and never written. Every connection's keys, and the shared ones, lie on
//! both cores (checked by construction), so each batch mixes commands answered inline with
//! commands answered by the other core and commands merged from both. Seeded: the seed is
//! printed, and `RINGWIRE_TEST_SEED` replays it.

mod util;

#[allow(dead_code)]
#[path = "../examples/kv/service.rs"]
mod kv;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;

use kv::cores::owner;
use kv::Sharding;
use ringwire::codec::resp::{encode_command, Resp};
use util::Rng;

const CORES: usize = 2;
const CONNECTIONS: usize = 16;
const BATCHES: usize = 30;
const BATCH: usize = 150;
/// Keys of each connection's own.
const OWN_KEYS: usize = 12;
/// Keys every connection reads and nobody writes.
const SHARED: &[(&str, &str)] = &[
    ("shared:a", "1"),
    ("shared:b", "text"),
    ("shared:c", "-42"),
    ("shared:d", ""),
    ("shared:e", "01"),
];
/// Values the commands set: integers, and strings that look almost like one.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-7",
    "41",
    "9223372036854775806",
    "-9223372036854775808",
    "abc",
    "01",
    "-0",
    "+3",
    "two words",
    "",
];

#[test]
fn pipelined_random_commands_match_the_model_on_two_cores() {
    model_run(1024);
}

/// The same with at most 4 replies outstanding per session: the sessions keep reaching the
/// bound, where reading pauses until a reply is completed (often a later one first, from the
/// other core); no request may be delivered there, or it would be answered `-ERR`.
#[test]
fn the_model_holds_at_a_small_bound_of_outstanding_replies() {
    model_run(4);
}

fn model_run(max_replies: usize) {
    let seed = util::base_seed();
    let server = util::start(
        kv::server(Resp::default(), Sharding::Cores, 16)
            .bind(util::any_port())
            .cores(CORES)
            .max_replies(max_replies),
    );
    let shared_cores: HashSet<usize> = SHARED
        .iter()
        .map(|(k, _)| owner(k.as_bytes(), CORES))
        .collect();
    assert_eq!(
        shared_cores.len(),
        CORES,
        "the shared keys lie on every core"
    );
    let mut setup = util::connect(server.addr());
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    for (key, value) in SHARED {
        mset.extend([key.as_bytes(), value.as_bytes()]);
    }
    let mut wire = Vec::new();
    encode_command(&mset, &mut wire);
    setup.write_all(&wire).unwrap();
    assert_eq!(util::read_n(&mut setup, 5), b"+OK\r\n");

    let addr = server.addr();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let seed = seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            thread::spawn(move || run_connection(addr, c, seed))
        })
        .collect();
    let mut commands = 0;
    for client in clients {
        commands += client
            .join()
            .expect("a connection's replies matched the model");
    }
    let total = server.total();
    assert!(total.mail_out > 0 && total.mail_in > 0, "{total:?}");
    let accepted: Vec<u64> = server.stats().cores.iter().map(|c| c.accepted).collect();
    println!(
        "{commands} commands on {CONNECTIONS} connections (accepted per core: {accepted:?}), \
         {} messages between the cores",
        total.mail_out
    );
    server.stop_cleanly();
}

/// One connection's batches; returns how many commands it sent.
fn run_connection(addr: SocketAddr, c: usize, seed: u64) -> usize {
    let own: Vec<String> = (0..OWN_KEYS).map(|k| format!("c{c}:k{k}")).collect();
    let cores: HashSet<usize> = own.iter().map(|k| owner(k.as_bytes(), CORES)).collect();
    assert_eq!(
        cores.len(),
        CORES,
        "connection {c}'s keys lie on every core"
    );
    let mut model = Model {
        rng: Rng::new(seed),
        own,
        values: SHARED
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
    };
    let mut conn: TcpStream = util::connect(addr);
    for batch in 0..BATCHES {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        // Where each command's reply starts in `expected`, and the command.
        let mut index = Vec::new();
        for _ in 0..BATCH {
            let (args, reply) = model.command();
            index.push((expected.len(), args.clone()));
            encode_command(&args, &mut wire);
            expected.extend_from_slice(&reply);
        }
        conn.write_all(&wire).unwrap();
        let got = util::read_n(&mut conn, expected.len());
        if got != expected {
            let at = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let i = index.iter().rposition(|(start, _)| *start <= at).unwrap();
            let (start, args) = &index[i];
            let end = index.get(i + 1).map_or(expected.len(), |(s, _)| *s);
            let shown: Vec<String> = args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into())
                .collect();
            panic!(
                "seed {seed}, connection {c}, batch {batch}, command {i} {shown:?}: expected \
                 {:?}, got {:?}",
                String::from_utf8_lossy(&expected[*start..end]),
                String::from_utf8_lossy(&got[*start..(end + 16).min(got.len())]),
            );
        }
    }
    BATCHES * BATCH
}

/// One connection's view: the values of its own keys and of the shared ones.
struct Model {
    rng: Rng,
    own: Vec<String>,
    values: HashMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn own_key(&mut self) -> Vec<u8> {
        let k = self.rng.range(0, self.own.len() - 1);
        self.own[k].as_bytes().to_vec()
    }

    /// An own key mostly, sometimes a shared one (to read only).
    fn any_key(&mut self) -> Vec<u8> {
        if self.rng.one_in(4) {
            let k = self.rng.range(0, SHARED.len() - 1);
            SHARED[k].0.as_bytes().to_vec()
        } else {
            self.own_key()
        }
    }

    fn value(&mut self) -> Vec<u8> {
        if self.rng.one_in(3) {
            format!("v{}", self.rng.next_u64() % 1000).into_bytes()
        } else {
            VALUES[self.rng.range(0, VALUES.len() - 1)]
                .as_bytes()
                .to_vec()
        }
    }

    /// A random command and the reply the model expects.
    fn command(&mut self) -> (Vec<Vec<u8>>, Vec<u8>) {
        let word = |s: &str| s.as_bytes().to_vec();
        match self.rng.range(0, 11) {
            0 | 1 => {
                let (key, value) = (self.own_key(), self.value());
                let mut args = vec![word("SET"), key.clone(), value.clone()];
                let exists = self.values.contains_key(&key);
                let write = match self.rng.range(0, 3) {
                    0 => {
                        args.push(word("NX"));
                        !exists
                    }
                    1 => {
                        args.push(word("XX"));
                        exists
                    }
                    _ => true,
                };
                if write {
                    self.values.insert(key, value);
                    (args, b"+OK\r\n".to_vec())
                } else {
                    (args, b"$-1\r\n".to_vec())
                }
            }
            2 => {
                let key = self.any_key();
                let reply = bulk(self.values.get(&key));
                (vec![word("GET"), key], reply)
            }
            3 => {
                let keys: Vec<Vec<u8>> =
                    (0..self.rng.range(1, 4)).map(|_| self.own_key()).collect();
                let removed = keys
                    .iter()
                    .filter(|k| self.values.remove(*k).is_some())
                    .count();
                (prefixed("DEL", keys), integer(removed as i64))
            }
            4 => {
                let keys: Vec<Vec<u8>> =
                    (0..self.rng.range(1, 5)).map(|_| self.any_key()).collect();
                let found = keys.iter().filter(|k| self.values.contains_key(*k)).count();
                (prefixed("EXISTS", keys), integer(found as i64))
            }
            5 | 6 => {
                let keys: Vec<Vec<u8>> =
                    (0..self.rng.range(1, 8)).map(|_| self.any_key()).collect();
                let mut reply = format!("*{}\r\n", keys.len()).into_bytes();
                for key in &keys {
                    reply.extend(bulk(self.values.get(key)));
                }
                (prefixed("MGET", keys), reply)
            }
            7 => {
                let mut args = vec![word("MSET")];
                for _ in 0..self.rng.range(1, 5) {
                    let (key, value) = (self.own_key(), self.value());
                    args.extend([key.clone(), value.clone()]);
                    self.values.insert(key, value);
                }
                (args, b"+OK\r\n".to_vec())
            }
            8 | 9 => {
                let key = self.own_key();
                let (args, delta) = match self.rng.range(0, 2) {
                    0 => (vec![word("INCR"), key.clone()], 1),
                    1 => (vec![word("DECR"), key.clone()], -1),
                    _ => {
                        let delta = self.rng.range(0, 200) as i64 - 100;
                        let by = delta.to_string().into_bytes();
                        (vec![word("INCRBY"), key.clone(), by], delta)
                    }
                };
                let reply = self.incr(key, delta);
                (args, reply)
            }
            10 => {
                let key = self.own_key();
                let (args, name) = match self.rng.range(0, 4) {
                    0 => (vec![word("GET")], "get"),
                    1 => (vec![word("INCR"), key.clone(), key], "incr"),
                    2 => (vec![word("MSET"), key], "mset"),
                    3 => (vec![word("DEL")], "del"),
                    _ => (vec![word("EXISTS")], "exists"),
                };
                let error = format!("-ERR wrong number of arguments for '{name}' command\r\n");
                (args, error.into_bytes())
            }
            _ => {
                // INCRBY with an increment that is no integer.
                let args = vec![word("INCRBY"), self.own_key(), word("1.5")];
                (args, NOT_INTEGER.to_vec())
            }
        }
    }

    fn incr(&mut self, key: Vec<u8>, delta: i64) -> Vec<u8> {
        let Some(old) = self.values.get(&key) else {
            self.values.insert(key, delta.to_string().into_bytes());
            return integer(delta);
        };
        let Some(n) = canonical(old) else {
            return NOT_INTEGER.to_vec();
        };
        match n.checked_add(delta) {
            Some(sum) => {
                self.values.insert(key, sum.to_string().into_bytes());
                integer(sum)
            }
            None => b"-ERR increment or decrement would overflow\r\n".to_vec(),
        }
    }
}

const NOT_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";

/// The integer `bytes` spell exactly as it prints (what INCR accepts).
fn canonical(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.parse::<i64>().ok().filter(|n| n.to_string() == text)
}

fn prefixed(name: &str, keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    std::iter::once(name.as_bytes().to_vec())
        .chain(keys)
        .collect()
}

fn bulk(value: Option<&Vec<u8>>) -> Vec<u8> {
    match value {
        Some(v) => {
            let mut out = format!("${}\r\n", v.len()).into_bytes();
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
            out
        }
        None => b"$-1\r\n".to_vec(),
    }
}

fn integer(n: i64) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}
