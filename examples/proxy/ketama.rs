//! Key placement exactly as twemproxy (nutcracker) places keys with `hash: fnv1a_64`,
//! `distribution: ketama`, no `hash_tag`, and servers listed as `HOST:PORT:1` with no names:
//! a key set through either proxy lands on the same backend.
//!
//! Ported from twemproxy 0.5.0: `src/hashkit/nc_ketama.c` (`ketama_update`,
//! `ketama_dispatch`), `src/hashkit/nc_fnv.c` (`hash_fnv1a_64`), `src/nc_server.c`
//! (`server_pool_idx`, `server_pool_hash`) and `src/nc_conf.c` (server names). What must stay
//! exactly as there, including twemproxy's own quirks:
//!
//! - A server's name is its `HOST:PORT` as written in the configuration, or `HOST` alone when
//!   the port is 11211 (libmemcached compatibility).
//! - Each server gets `floor(weight/total * 160/4 * servers + 1e-10) * 4` points, computed in
//!   C `float` arithmetic (so 25 servers of weight 1 get 156 points each, not 160); for the
//!   points, `NAME-i` (i from 0) is hashed with MD5 and each of the digest's four little-endian
//!   32-bit words is a point. The points are sorted by value.
//! - A key's hash is twemproxy's `fnv1a_64`: the 64-bit FNV-1a constants truncated to 32 bits
//!   and 32-bit arithmetic, each byte read through a signed `char` (x86: a byte of 0x80 or
//!   above is sign-extended to 0xFFFFFF80 before the XOR). An empty key hashes to 0, and a
//!   single server takes every key.
//! - The key goes to the first point whose value is at least the hash, wrapping around to the
//!   first point.
//!
//! Not ported: weights other than 1 (the proxy lists every backend with weight 1), and
//! auto-ejection of failed hosts (off by default in twemproxy too: a down backend's keys stay
//! its own and get errors). Equal point values from different servers (about one chance in
//! 40,000 with three servers) sort in an order C's `qsort` leaves unspecified; here the lower
//! server index comes first.

use md5::{Digest, Md5};

/// Points per server of weight 1 out of `servers` of weight 1.
const POINTS_PER_SERVER: f32 = 160.0;

/// The ketama continuum: every server's points, sorted by value.
#[derive(Clone, Debug)]
pub struct Continuum {
    /// (point value, server index), sorted.
    points: Vec<(u32, u32)>,
    servers: usize,
}

/// twemproxy's name for a server written `HOST:PORT` in its configuration.
pub fn server_name(host_port: &str) -> &str {
    match host_port.rsplit_once(':') {
        Some((host, "11211")) => host,
        _ => host_port,
    }
}

impl Continuum {
    /// The continuum of `names` (twemproxy's server names, see [`server_name`]), each of
    /// weight 1, in configuration order: a key's backend is its index in `names`.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        assert!(!names.is_empty(), "a continuum needs a server");
        let servers = names.len();
        // In C: (float)weight / (float)total_weight, then `pct * 160 / 4 * (float)nlive`, all
        // float; `+ 0.0000000001` is a double, so the sum is a double, cast back to float.
        let pct = 1.0f32 / servers as f32;
        let quarter = pct * POINTS_PER_SERVER / 4.0 * servers as f32;
        let per_server = (((f64::from(quarter) + 0.000_000_000_1) as f32).floor() as u32) * 4;
        let mut points = Vec::with_capacity(servers * per_server as usize);
        for (index, name) in names.iter().enumerate() {
            for i in 0..per_server / 4 {
                let digest: [u8; 16] =
                    Md5::digest(format!("{}-{i}", name.as_ref()).as_bytes()).into();
                for word in digest.chunks_exact(4) {
                    let value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                    points.push((value, index as u32));
                }
            }
        }
        points.sort_unstable();
        Continuum { points, servers }
    }

    /// How many points it has.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// The point at `i` (value, server), in sorted order.
    #[cfg(test)]
    pub fn point(&self, i: usize) -> (u32, usize) {
        let (value, server) = self.points[i];
        (value, server as usize)
    }

    /// The server (index in the names given to [`Continuum::new`]) that holds `key`.
    pub fn server_of(&self, key: &[u8]) -> usize {
        if self.servers == 1 {
            return 0; // twemproxy skips hashing for a pool of one server.
        }
        self.dispatch(fnv1a_64(key))
    }

    /// The server of the first point at or after `hash`, wrapping around.
    pub fn dispatch(&self, hash: u32) -> usize {
        let at = self.points.partition_point(|&(value, _)| value < hash);
        let (_, server) = self.points.get(at).unwrap_or(&self.points[0]);
        *server as usize
    }
}

/// twemproxy's `fnv1a_64`: FNV-1a with the 64-bit offset basis and prime truncated to 32 bits,
/// in 32-bit arithmetic, each byte sign-extended as a C `char` is on x86. 0 for an empty key
/// (`server_pool_hash`).
pub fn fnv1a_64(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    const INIT: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    key.iter().fold(INIT as u32, |hash, &byte| {
        let val = byte as i8 as i32 as u32;
        (hash ^ val).wrapping_mul(PRIME as u32)
    })
}

#[cfg(test)]
mod tests {
    //! The expected values were computed by twemproxy 0.5.0's own code: its `nc_md5.c` and
    //! `nc_fnv.c` compiled as they are, and its `ketama_update` / `ketama_dispatch` loops
    //! copied verbatim, on x86-64 with gcc. tests/proxy_redis.rs also checks placement against
    //! a running nutcracker.

    use super::{fnv1a_64, server_name, Continuum};

    const THREE: [&str; 3] = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"];

    #[test]
    fn fnv1a_64_is_twemproxys_truncated_form() {
        for (key, expected) in [
            (&b""[..], 0),
            (b"a", 0x8601ec8c),
            (b"foo", 0xfed9d577),
            (b"key:0", 0x962f5916),
            (b"key:__rand_int__", 0xa6b57317),
            // Bytes over 0x7f go through a signed char.
            ("\u{e9}t\u{e9}".as_bytes(), 0xea769c57),
            (b"\x80\xff", 0xb58758e0),
        ] {
            assert_eq!(fnv1a_64(key), expected, "{}", key.escape_ascii());
        }
    }

    /// 160 points per server, except where C's float arithmetic floors a hair below 40.
    #[test]
    fn points_per_server_follow_cs_float_rounding() {
        let from_c: [(usize, usize); 12] = [
            (1, 160),
            (2, 320),
            (3, 480),
            (7, 1120),
            (24, 3840),
            (25, 3900),
            (47, 7332),
            (50, 7800),
            (55, 8580),
            (61, 9516),
            (63, 10080),
            (64, 10240),
        ];
        for (servers, points) in from_c {
            let names: Vec<String> = (0..servers).map(|i| format!("10.0.0.{i}:6379")).collect();
            assert_eq!(Continuum::new(&names).len(), points, "{servers} servers");
        }
    }

    #[test]
    fn the_continuum_of_three_servers_matches_twemproxys() {
        let ring = Continuum::new(&THREE);
        assert_eq!(ring.len(), 480);
        // Every 37th point, and the last, as twemproxy sorts them: (index, server, value).
        let from_c: [(usize, usize, u32); 14] = [
            (0, 2, 0x0015e0de),
            (37, 1, 0x0b72f715),
            (74, 2, 0x1b577a30),
            (111, 2, 0x30e8ebb2),
            (148, 1, 0x489f1e8b),
            (185, 0, 0x60e1b184),
            (222, 0, 0x72fbdd22),
            (259, 0, 0x838de565),
            (296, 1, 0x9bc9738c),
            (333, 2, 0xb4eff9cd),
            (370, 0, 0xc7588d74),
            (407, 2, 0xd7dcc12e),
            (444, 2, 0xec6e2d4b),
            (479, 2, 0xffdfc74e),
        ];
        for (i, server, value) in from_c {
            assert_eq!(ring.point(i), (value, server), "point {i}");
        }
    }

    #[test]
    fn keys_land_where_twemproxy_puts_them() {
        let ring = Continuum::new(&THREE);
        // `format!("{}:user", i * 7919)` for i in 0..40, placed by twemproxy's code.
        let from_c = [
            1, 2, 2, 0, 2, 0, 2, 1, 0, 0, 0, 1, 2, 1, 1, 0, 2, 2, 2, 1, //
            0, 1, 1, 2, 0, 0, 2, 2, 1, 0, 1, 0, 0, 2, 0, 1, 1, 1, 1, 0,
        ];
        for (i, server) in from_c.into_iter().enumerate() {
            let key = format!("{}:user", i * 7919);
            assert_eq!(ring.server_of(key.as_bytes()), server, "{key}");
        }
        // FNV-1a's low-diffusion truncation: keys differing only at the end cluster.
        assert!((0..40).all(|i| ring.server_of(format!("key:{i}").as_bytes()) == 1));
    }

    #[test]
    fn dispatch_wraps_around_and_takes_ties_at_the_point() {
        let ring = Continuum::new(&THREE);
        let (first_value, first) = ring.point(0);
        let (last_value, _) = ring.point(ring.len() - 1);
        assert_eq!(ring.dispatch(0), first);
        assert_eq!(ring.dispatch(first_value), first);
        assert_eq!(
            ring.dispatch(last_value + 1),
            first,
            "past the last point: wrap"
        );
        let (value, server) = ring.point(100);
        assert_eq!(ring.dispatch(value), server);
        assert_eq!(ring.dispatch(ring.point(99).0 + 1), server);
    }

    #[test]
    fn names_drop_port_11211_only() {
        assert_eq!(server_name("127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(server_name("cache-1:11211"), "cache-1");
        assert_eq!(Continuum::new(&["only:1"]).server_of(b"anything"), 0);
    }
}
