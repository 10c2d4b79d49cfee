//! The proxy example in front of real `redis-server` backends: redis-cli and redis-benchmark
//! through it, a pipelined random-command checker against a model of every reply, placement
//! compared with twemproxy (nutcracker) itself, a backend killed in the middle of a pipeline
//! and restarted, and clients that leave with requests in flight. The proxy is the example's
//! own service (`examples/proxy/service.rs`), started in-process; the backends and
//! nutcracker are processes started by each test on loopback ports and killed when it ends.
//!
//! The tools must be installed (scripts/install-test-deps.sh installs redis-tools,
//! redis-server and nutcracker); a missing one fails loudly.

mod protocols;
mod util;

#[path = "protocols/redis.rs"]
mod redis;

#[allow(dead_code)]
#[path = "../examples/proxy/service.rs"]
mod proxy;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use protocols::run;
use proxy::ketama::Continuum;
use proxy::pool::PoolConfig;
use redis::{Client, Nutcracker, RedisServer, Value};
use ringwire::codec::resp::Resp;
use util::Running;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Three backends.
fn backends() -> Vec<RedisServer> {
    (0..3).map(|_| RedisServer::start()).collect()
}

/// The proxy over `backends`, in order, on `cores` cores; a backend that fails is retried
/// after 20 ms, at most 300 ms.
fn start_proxy(backends: &[RedisServer], cores: usize) -> Running {
    let list = backends
        .iter()
        .map(|b| proxy::Backend::at(b.addr()))
        .collect();
    let pool = || PoolConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    let server = proxy::server(Resp::default(), list, pool)
        .bind(util::any_port())
        .cores(cores);
    util::start(server)
}

/// The placement the proxy uses over `backends`.
fn ring(backends: &[RedisServer]) -> Continuum {
    let names: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    Continuum::new(&names)
}

/// `n` keys that `ring` places on `backend`, named `<i>:<tag>` (varying the start of the key
/// spreads keys under twemproxy's FNV-1a, which barely mixes its last bytes).
fn keys_on(ring: &Continuum, backend: usize, tag: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{}:{tag}", i * 7919))
        .filter(|k| ring.server_of(k.as_bytes()) == backend)
        .take(n)
        .collect()
}

/// redis-cli through the proxy, one command per line as a person types them (redis-cli's raw
/// output: one line per reply, nil an empty line, an error followed by an empty line), over
/// keys on all three backends; then redis-benchmark, pipelined.
#[test]
fn redis_cli_and_redis_benchmark_through_the_proxy() {
    let servers = backends();
    let proxy = start_proxy(&servers, 2);
    let ring = ring(&servers);
    let [a, b, c] = [0, 1, 2].map(|i| keys_on(&ring, i, "cli", 1).remove(0));
    let session: Vec<(String, &str)> = vec![
        ("PING".into(), "PONG"),
        ("PING hello".into(), "hello"),
        ("ECHO hi".into(), "hi"),
        (format!("SET {a} 1"), "OK"),
        (format!("SET {b} 2"), "OK"),
        (format!("SET {c} word EX 100"), "OK"),
        (format!("MGET {a} {b} nothing {c}"), "1\n2\n\nword"),
        (format!("EXISTS {a} {b} {c} {a} nothing"), "4"),
        (format!("INCR {a}"), "2"),
        (format!("INCRBY {b} 40"), "42"),
        (
            format!("INCR {c}"),
            "ERR value is not an integer or out of range\n",
        ),
        // A second may pass between SET and TTL.
        (format!("TTL {c}"), "100|99"),
        (format!("DEL {a} {c} nothing"), "2"),
        (format!("MSET {a} x {b} y {c} z"), "OK"),
        (format!("MGET {c} {b} {a}"), "z\ny\nx"),
        (format!("APPEND {a} yz"), "3"),
        (format!("STRLEN {a}"), "3"),
        (format!("UNLINK {a} {b}"), "2"),
        (format!("TOUCH {c} {a}"), "1"),
        (format!("HSET {a} f v"), "1"),
        (format!("HGET {a} f"), "v"),
        (format!("TYPE {a}"), "hash"),
        (
            format!("RENAME {a} {b}"),
            "ERR the keys of 'rename' are on different backends\n",
        ),
        ("SELECT 0".into(), "OK"),
        (
            "SELECT 1".into(),
            "ERR SELECT is not allowed through this proxy: only database 0\n",
        ),
        (
            "KEYS *".into(),
            "ERR 'keys' is not supported by this proxy\n",
        ),
        (
            "MULTI".into(),
            "ERR 'multi' is not supported by this proxy\n",
        ),
        (
            "GET".into(),
            "ERR wrong number of arguments for 'get' command\n",
        ),
        (
            format!("MSET {a} 1 {b}"),
            "ERR wrong number of arguments for 'mset' command\n",
        ),
        (
            "NOSUCHCOMMAND x".into(),
            "ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'x' \n",
        ),
        (format!("GET {c}"), "z"),
    ];
    let script: String = session.iter().map(|(cmd, _)| format!("{cmd}\n")).collect();
    let port = proxy.addr().port().to_string();
    let out = run(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", &port],
        script.as_bytes(),
        CLI_TIMEOUT,
    )
    .success();
    let mut got = out.stdout.as_str();
    for (cmd, reply) in &session {
        // `a|b`: either.
        let wants: Vec<String> = reply.split('|').map(|r| format!("{r}\n")).collect();
        let Some(want) = wants.iter().find(|want| got.starts_with(want.as_str())) else {
            panic!(
                "`{cmd}`: expected {wants:?}, redis-cli printed {:?}\nwhole output:\n{}",
                got.lines().next().unwrap_or(""),
                out.stdout
            );
        };
        got = &got[want.len()..];
    }
    assert_eq!(got, "", "more output than replies:\n{}", out.stdout);
    // The split MSET put each value on its key's own backend.
    assert_eq!(
        servers[2].client().call(&[b"GET", c.as_bytes()]),
        Value::bulk("z")
    );

    // redis-benchmark: 8 clients, 16 requests in flight each, keys spread over the backends.
    let out = run(
        "redis-benchmark",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            "8",
            "-n",
            "4000",
            "-P",
            "16",
            "-r",
            "100000",
            "-t",
            "set,get,incr,mset",
            "-q",
        ],
        b"",
        BENCH_TIMEOUT,
    )
    .success();
    let all = format!("{}{}", out.stdout, out.stderr);
    for test in ["SET", "GET", "INCR", "MSET"] {
        assert!(
            all.split(['\r', '\n'])
                .any(|l| l.starts_with(test) && l.contains("requests per second")),
            "no result for {test}:\n{all}"
        );
    }
    // CONFIG is not served by a proxy; redis-benchmark says so and goes on.
    assert!(!all.contains("ERR") && !all.contains("Error"), "{all}");
    for server in &servers {
        let Value::Int(keys) = server.client().call(&[b"DBSIZE"]) else {
            panic!("DBSIZE")
        };
        assert!(keys > 100, "{}: only {keys} keys", server.addr());
    }
    let total = proxy.total();
    assert_eq!(total.codec_errors, 0);
    println!(
        "redis-benchmark through the proxy:\n{}",
        out.stdout.replace('\r', "\n")
    );
    proxy.stop_cleanly();
}

/// The same keys set through twemproxy and through the proxy land on the same backends (found
/// with KEYS on each backend directly), and both agree with the continuum computed here.
#[test]
fn placement_matches_nutcracker() {
    let servers = backends();
    let addrs: Vec<SocketAddr> = servers.iter().map(RedisServer::addr).collect();
    let nutcracker = Nutcracker::start(&addrs);
    let proxy = start_proxy(&servers, 2);
    let ring = ring(&servers);
    let mut keys: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("{}:user", i * 7919).into_bytes())
        .collect();
    keys.extend((0..100).map(|i| format!("key:{i}").into_bytes()));
    // Bytes over 0x7f: twemproxy's FNV reads them through a signed char.
    keys.extend((0..100).map(|i| format!("\u{e9}t\u{e9}-{i}").into_bytes()));
    keys.extend((0..100u32).map(|i| [&i.to_le_bytes()[..], b"\xff\x80"].concat()));
    let placed = |through: SocketAddr| -> BTreeMap<Vec<u8>, usize> {
        for server in &servers {
            assert_eq!(server.client().call(&[b"FLUSHALL"]), Value::ok());
        }
        let mut client = Client::connect(through);
        let mut wire = Vec::new();
        for key in &keys {
            Client::encode(&[b"SET", key, b"v"], &mut wire);
        }
        client.write(&wire);
        for key in &keys {
            assert_eq!(client.read(), Value::ok(), "SET {}", key.escape_ascii());
        }
        let mut at = BTreeMap::new();
        for (i, server) in servers.iter().enumerate() {
            let Value::Array(Some(found)) = server.client().call(&[b"KEYS", b"*"]) else {
                panic!("KEYS")
            };
            for key in found {
                let Value::Bulk(Some(key)) = key else {
                    panic!("a key")
                };
                assert_eq!(at.insert(key, i), None, "a key on two backends");
            }
        }
        assert_eq!(at.len(), keys.len());
        at
    };
    let by_nutcracker = placed(nutcracker.addr());
    let by_proxy = placed(proxy.addr());
    let differ: Vec<_> = keys
        .iter()
        .filter(|k| by_nutcracker[*k] != by_proxy[*k])
        .map(|k| k.escape_ascii().to_string())
        .collect();
    assert!(
        differ.is_empty(),
        "placed elsewhere than by nutcracker: {differ:?}"
    );
    for key in &keys {
        assert_eq!(by_proxy[key], ring.server_of(key), "{}", key.escape_ascii());
    }
    let mut per_backend = [0usize; 3];
    by_proxy.values().for_each(|&b| per_backend[b] += 1);
    assert!(per_backend.iter().all(|&n| n > 50), "{per_backend:?}");
    println!(
        "{} keys placed as nutcracker places them: {per_backend:?}",
        keys.len()
    );

    // A multi-key EXISTS over the three backends: twemproxy sends it whole to the first key's
    // backend; the proxy counts on each.
    let [a, b, c] = [0, 1, 2].map(|i| keys_on(&ring, i, "user", 1).remove(0));
    let exists: [&[u8]; 4] = [b"EXISTS", a.as_bytes(), b.as_bytes(), c.as_bytes()];
    assert_eq!(Client::connect(proxy.addr()).call(&exists), Value::Int(3));
    let theirs = Client::connect(nutcracker.addr()).call(&exists);
    println!("EXISTS over three backends: proxy 3, nutcracker {theirs:?}");
    proxy.stop_cleanly();
}

/// A client's model of the keys it alone uses: what each command must answer.
#[derive(Default)]
struct Model {
    keys: HashMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    /// Applies `args` and returns the reply Redis (through the proxy) must give.
    fn apply(&mut self, args: &[Vec<u8>]) -> Value {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let keys = &args[1..];
        let arity =
            |n: &str| Value::Error(format!("ERR wrong number of arguments for '{n}' command"));
        match name.as_str() {
            "PING" => Value::Simple("PONG".into()),
            "GET" if keys.len() != 1 => arity("get"),
            "GET" => Value::Bulk(self.keys.get(&keys[0]).cloned()),
            "SET" if keys.len() != 2 => arity("set"),
            "SET" => {
                self.keys.insert(keys[0].clone(), keys[1].clone());
                Value::ok()
            }
            "INCR" => {
                let now = self.keys.get(&keys[0]).map_or(Some(0), |v| {
                    std::str::from_utf8(v).ok()?.parse::<i64>().ok()
                });
                match now {
                    Some(n) => {
                        self.keys
                            .insert(keys[0].clone(), (n + 1).to_string().into_bytes());
                        Value::Int(n + 1)
                    }
                    None => Value::Error("ERR value is not an integer or out of range".into()),
                }
            }
            "DEL" => Value::Int(
                keys.iter()
                    .filter(|k| self.keys.remove(*k).is_some())
                    .count() as i64,
            ),
            "EXISTS" => {
                Value::Int(keys.iter().filter(|k| self.keys.contains_key(*k)).count() as i64)
            }
            "MGET" => Value::Array(Some(
                keys.iter()
                    .map(|k| Value::Bulk(self.keys.get(k).cloned()))
                    .collect(),
            )),
            "MSET" if keys.len() % 2 != 0 => arity("mset"),
            "MSET" => {
                for pair in keys.chunks(2) {
                    self.keys.insert(pair[0].clone(), pair[1].clone());
                }
                Value::ok()
            }
            other => Value::Error(format!(
                "ERR unknown command '{other}', with args beginning with: "
            )),
        }
    }
}

/// A random command over `keys`: mostly well-formed, some of the wrong arity or unknown.
fn random_command(rng: &mut util::Rng, keys: &[String]) -> Vec<Vec<u8>> {
    let key = |rng: &mut util::Rng| keys[rng.range(0, keys.len() - 1)].clone().into_bytes();
    let value = |rng: &mut util::Rng| match rng.range(0, 2) {
        0 => rng.range(0, 1000).to_string().into_bytes(),
        1 => format!("v{}", rng.range(0, 1000)).into_bytes(),
        _ => {
            let len = rng.range(0, 40);
            rng.bytes(len)
        }
    };
    let some_keys =
        |rng: &mut util::Rng| -> Vec<Vec<u8>> { (0..rng.range(1, 6)).map(|_| key(rng)).collect() };
    let with = |name: &str, rest: Vec<Vec<u8>>| {
        std::iter::once(name.as_bytes().to_vec())
            .chain(rest)
            .collect()
    };
    match rng.range(0, 12) {
        0 | 1 => with("SET", vec![key(rng), value(rng)]),
        2 | 3 => with("GET", vec![key(rng)]),
        4 => with("DEL", some_keys(rng)),
        5 => with("EXISTS", some_keys(rng)),
        6 => with("MGET", some_keys(rng)),
        7 => {
            let pairs = (0..rng.range(1, 5))
                .flat_map(|_| [key(rng), value(rng)])
                .collect();
            with("MSET", pairs)
        }
        8 => with("INCR", vec![key(rng)]),
        9 => with("PING", vec![]),
        10 => match rng.range(0, 2) {
            0 => with("GET", vec![]),
            1 => with("SET", vec![key(rng)]),
            _ => with("MSET", vec![key(rng), value(rng), key(rng)]),
        },
        _ => with("NOSUCH", vec![]),
    }
}

/// Eight connections, each over keys of its own spread over the three backends, send random
/// commands in pipelined batches (1 to 64 in flight); every reply must be the model's.
#[test]
fn pipelined_random_commands_match_a_model() {
    let servers = backends();
    let proxy = start_proxy(&servers, 2);
    let ring = Arc::new(ring(&servers));
    let seed = util::base_seed();
    let addr = proxy.addr();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut rng = util::Rng::new(seed ^ ((c as u64 + 1) * 0x9E37));
                let keys: Vec<String> = (0..3)
                    .flat_map(|b| keys_on(&ring, b, &format!("model{c}"), 6))
                    .collect();
                let mut model = Model::default();
                let mut client = Client::connect(addr);
                let mut sent = 0;
                while sent < 2000 {
                    let batch: Vec<Vec<Vec<u8>>> = (0..rng.range(1, 64))
                        .map(|_| random_command(&mut rng, &keys))
                        .collect();
                    let mut wire = Vec::new();
                    for cmd in &batch {
                        let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
                        Client::encode(&args, &mut wire);
                    }
                    client.write(&wire);
                    for cmd in &batch {
                        let want = model.apply(cmd);
                        let got = client.read();
                        let shown: Vec<_> =
                            cmd.iter().map(|a| a.escape_ascii().to_string()).collect();
                        match (&want, &got) {
                            // Unknown commands: the message goes on with the arguments.
                            (Value::Error(w), Value::Error(g)) if w.starts_with("ERR unknown") => {
                                assert!(g.starts_with(w.as_str()), "client {c}: {shown:?}: {g}")
                            }
                            _ => assert_eq!(got, want, "client {c}, command {sent}: {shown:?}"),
                        }
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    let total: usize = clients
        .into_iter()
        .map(|c| c.join().expect("a client failed"))
        .sum();
    println!("{total} commands checked against the model");
    proxy.stop_cleanly();
}

/// A backend killed while a long pipeline is in flight: requests for its keys get an error
/// naming it (or their value, if answered before it died), every other request gets its value,
/// and every request is answered. Restarted on the same port, it serves again within seconds.
#[test]
fn a_backend_killed_mid_pipeline_costs_only_its_keys() {
    let mut servers = backends();
    let proxy = start_proxy(&servers, 1);
    let ring = ring(&servers);
    let keys: Vec<(String, usize)> = (0..3)
        .flat_map(|b| {
            keys_on(&ring, b, "kill", 10)
                .into_iter()
                .map(move |k| (k, b))
        })
        .collect();
    let mut client = Client::connect(proxy.addr());
    for (key, _) in &keys {
        assert_eq!(
            client.call(&[b"SET", key.as_bytes(), key.as_bytes()]),
            Value::ok()
        );
    }
    let victim = servers[1].addr().to_string();

    // The writer sends 40 rounds of a GET per key and an MGET of every key, a little at a time.
    let rounds = 40;
    let mut writer = client.try_clone();
    let round_keys = keys.clone();
    let writing = thread::spawn(move || {
        for _ in 0..rounds {
            let mut wire = Vec::new();
            for (key, _) in &round_keys {
                Client::encode(&[b"GET", key.as_bytes()], &mut wire);
            }
            let mut mget: Vec<&[u8]> = vec![b"MGET"];
            mget.extend(round_keys.iter().map(|(k, _)| k.as_bytes()));
            Client::encode(&mget, &mut wire);
            writer.write(&wire);
            thread::sleep(Duration::from_millis(5));
        }
    });
    let started = Instant::now();
    let (mut values, mut errors) = (0, 0);
    for round in 0..rounds {
        if round == 5 {
            servers[1].kill();
        }
        for (key, backend) in &keys {
            match client.read() {
                Value::Bulk(Some(v)) if v == key.as_bytes() => values += 1,
                Value::Error(e)
                    if *backend == 1 && e.starts_with("ERR ") && e.contains(&victim) =>
                {
                    errors += 1
                }
                other => panic!("round {round}: GET {key} (backend {backend}): {other:?}"),
            }
        }
        match client.read() {
            Value::Array(Some(items)) => assert_eq!(items.len(), keys.len()),
            Value::Error(e) => assert!(e.contains(&victim), "round {round}: MGET: {e}"),
            other => panic!("round {round}: MGET: {other:?}"),
        }
    }
    writing.join().unwrap();
    assert!(errors > 0, "no request saw the backend down");
    println!(
        "{values} values and {errors} errors for the killed backend's keys, in {:?}",
        started.elapsed()
    );
    // Its keys fail at once now, the others are served.
    let (on_victim, elsewhere) = (&keys[10].0, &keys[0].0);
    let failed = client.call(&[b"GET", on_victim.as_bytes()]);
    assert!(
        failed.error().is_some_and(|e| e.contains(&victim)),
        "{failed:?}"
    );
    assert_eq!(
        client.call(&[b"GET", elsewhere.as_bytes()]),
        Value::bulk(elsewhere)
    );

    // Restarted (empty): served again within seconds.
    servers[1].restart();
    let restarted = Instant::now();
    loop {
        match client.call(&[b"SET", on_victim.as_bytes(), b"back"]) {
            Value::Simple(ok) if ok == "OK" => break,
            Value::Error(e) => assert!(e.contains(&victim), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "the restarted backend is still not served"
        );
        thread::sleep(Duration::from_millis(20));
    }
    println!("served again {:?} after the restart", restarted.elapsed());
    assert_eq!(
        client.call(&[b"GET", on_victim.as_bytes()]),
        Value::bulk("back")
    );
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(|(k, _)| k.as_bytes()));
    let Value::Array(Some(items)) = client.call(&mget) else {
        panic!("MGET after the restart")
    };
    assert_eq!(items[10], Value::bulk("back"));
    assert_eq!(items[0], Value::bulk(elsewhere));
    proxy.stop_cleanly();
}

/// Clients that close with hundreds of requests in flight (the backends still answer them):
/// every later request on the same core's backend connections gets its own reply.
#[test]
fn clients_leaving_with_requests_in_flight_do_not_shift_replies() {
    let servers = backends();
    let proxy = start_proxy(&servers, 1);
    let ring = ring(&servers);
    let keys: Vec<String> = (0..3).flat_map(|b| keys_on(&ring, b, "gone", 4)).collect();
    let mut client = Client::connect(proxy.addr());
    for key in &keys {
        assert_eq!(
            client.call(&[b"SET", key.as_bytes(), key.as_bytes()]),
            Value::ok()
        );
    }
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(|k| k.as_bytes()));
    let want_mget = Value::Array(Some(keys.iter().map(Value::bulk).collect()));
    for round in 0..20 {
        let mut leaving = Client::connect(proxy.addr());
        let mut wire = Vec::new();
        for i in 0..300 {
            let key = keys[i % keys.len()].as_bytes();
            Client::encode(&[b"GET", key], &mut wire);
            Client::encode(&mget, &mut wire);
            Client::encode(&[b"EXISTS", key, keys[0].as_bytes()], &mut wire);
        }
        leaving.write(&wire);
        if round % 2 == 0 {
            let _ = leaving.read(); // Some replies out before it goes.
        }
        drop(leaving);
        for key in &keys {
            assert_eq!(
                client.call(&[b"GET", key.as_bytes()]),
                Value::bulk(key),
                "round {round}"
            );
        }
        assert_eq!(client.call(&mget), want_mget, "round {round}");
    }
    // The leavers are gone: open are this client and a connection per backend.
    proxy.wait_total("the leaving clients to close", |t| {
        t.accepted + t.connected - t.closed == 1 + 3
    });
    proxy.stop_cleanly();
}

/// With the command line's defaults, a request to a backend that accepts and never answers
/// gets an error naming the backend once the request timeout (1 s) has passed: not never.
#[test]
fn a_backend_that_never_answers_times_out_with_the_command_line_defaults() {
    let silent = util::silent_backend();
    let pool = || {
        proxy::pool_config(
            proxy::DEFAULT_REQUEST_TIMEOUT_MS,
            proxy::DEFAULT_BACKOFF_MAX_MS,
        )
    };
    let server = proxy::server(Resp::default(), vec![proxy::Backend::at(silent)], pool)
        .bind(util::any_port());
    let proxy = util::start(server);
    let mut client = Client::connect(proxy.addr());
    let asked = Instant::now();
    let reply = client.call(&[b"GET", b"k"]);
    let took = asked.elapsed();
    let error = reply.error().unwrap_or_else(|| panic!("{reply:?}"));
    assert!(
        error.starts_with("ERR ")
            && error.contains(&silent.to_string())
            && error.contains("timeout"),
        "{error}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    // The connection was opened again: the next request is not refused at once either.
    assert!(client
        .call(&[b"GET", b"k"])
        .error()
        .is_some_and(|e| e.contains("timeout")));
    proxy.stop_cleanly();
}

/// A reply larger than the proxy's `max_frame` (which bounds requests) is served, and leaves
/// the backend connection to the other clients: a 200 KiB MGET reply under a 64 KiB bound.
#[test]
fn a_reply_larger_than_max_frame_is_served_and_fails_nobody() {
    let server = RedisServer::start();
    let list = vec![proxy::Backend::at(server.addr())];
    let proxy = util::start(
        proxy::server(Resp::default(), list, PoolConfig::default)
            .bind(util::any_port())
            .max_frame(64 << 10),
    );
    let value = vec![b'v'; 1024];
    let mut a = Client::connect(proxy.addr());
    let mut b = Client::connect(proxy.addr());
    assert_eq!(a.call(&[b"SET", b"k", &value]), Value::ok());
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(std::iter::repeat_n(&b"k"[..], 200));
    a.send(&mget);
    b.send(&[b"GET", b"k"]);
    let Value::Array(Some(values)) = a.read() else {
        panic!("MGET")
    };
    assert_eq!(values.len(), 200);
    assert!(values.iter().all(|v| *v == Value::bulk(&value)));
    assert_eq!(b.read(), Value::bulk(&value));
    assert_eq!(b.call(&[b"GET", b"k"]), Value::bulk(&value));
    assert_eq!(proxy.total().codec_errors, 0);
    proxy.stop_cleanly();
}

/// A client in the middle of a request when the drain begins is still served through the
/// backend connection (the drain keeps it while its core serves a client), and the drain ends
/// soon after the last client leaves, long before its deadline.
#[test]
fn a_client_mid_request_when_the_drain_begins_gets_its_value() {
    let servers = vec![RedisServer::start()];
    let proxy = start_proxy(&servers, 1);
    let mut client = Client::connect(proxy.addr());
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), Value::ok());
    let mut wire = Vec::new();
    Client::encode(&[b"GET", b"k"], &mut wire);
    let (head, tail) = wire.split_at(wire.len() / 2);
    let before = proxy.total().bytes_in;
    client.write(head);
    proxy.wait_total("half a request to arrive", |t| {
        t.bytes_in >= before + head.len() as u64
    });
    let drain = Duration::from_secs(10);
    proxy.stopper().shutdown(drain);
    // The drain has begun once the core's listener is closed.
    let began = Instant::now();
    while TcpStream::connect(proxy.addr()).is_ok() {
        assert!(
            began.elapsed() < util::SETTLE_TIMEOUT,
            "the listener stays open"
        );
        thread::sleep(Duration::from_millis(5));
    }
    client.write(tail);
    assert_eq!(client.read(), Value::bulk("v"));
    drop(client);
    let took = proxy.drain_cleanly(drain);
    assert!(took < Duration::from_secs(3), "the drain took {took:?}");
}
