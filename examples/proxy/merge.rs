//! Multi-key commands over keys of several backends: DEL, EXISTS, UNLINK, TOUCH, MGET and
//! MSET are split into one command per backend (its keys in request order), and the parts'
//! replies are merged into the one reply the client reserved: MGET's values in key order, the
//! sum of the counts, `+OK` once every MSET part is OK. Any part that fails (its backend down,
//! its connection closed, an error reply) makes the whole reply an `-ERR` naming that backend:
//! the first failed part in part order, which is the order of each backend's first key.
//!
//! The merge's state is the core's own: the parts' waiters share it through an `Rc`, and the
//! pool completes them on the core that sent them, so no lock is taken. A part's reply is
//! copied only for MGET (its values are needed once all parts are in); counts and OKs are
//! folded in as they come.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use ringwire::codec::resp::Args;
use ringwire::Reply;

use super::commands::Multi;
use super::pool::BackendError;
use ringwire::codec::resp::{parse_reply, ReplyView};

/// A multi-key command cut into one part per backend.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per part: its backend, and the indexes of its keys in the request (in order).
    pub parts: Vec<(usize, Vec<usize>)>,
    /// Per key (request order): its part.
    pub part_of_key: Vec<usize>,
}

/// Groups the keys of `args` (the arguments after the name: keys, or key-value pairs for
/// MSET) by backend, parts in the order of each backend's first key.
pub fn plan(multi: Multi, args: Args<'_>, backend_of: impl Fn(&[u8]) -> usize) -> Plan {
    let mut plan = Plan::default();
    for (i, key) in args.step_by(multi.step()).enumerate() {
        let backend = backend_of(key);
        let part = match plan.parts.iter().position(|(b, _)| *b == backend) {
            Some(part) => part,
            None => {
                plan.parts.push((backend, Vec::new()));
                plan.parts.len() - 1
            }
        };
        plan.parts[part].1.push(i);
        plan.part_of_key.push(part);
    }
    plan
}

/// Encodes the command of part `part` of `plan` into `wire`: the command's name, then the
/// part's keys (and values, for MSET) in request order. `args`: the request's arguments after
/// its name.
pub fn encode_part(multi: Multi, args: &[&[u8]], keys: &[usize], wire: &mut Vec<u8>) {
    let step = multi.step();
    let mut part: Vec<&[u8]> = Vec::with_capacity(1 + keys.len() * step);
    part.push(multi.name().as_bytes());
    for &k in keys {
        part.extend_from_slice(&args[k * step..k * step + step]);
    }
    ringwire::codec::resp::encode_command(&part, wire);
}

/// A split command waiting for its parts; `R` is the client's reply to complete (a
/// [`Reply`]; the tests use `()`).
pub struct Merge<R = Reply> {
    multi: Multi,
    /// The client's reply, taken when the last part is in.
    reply: Option<R>,
    /// Parts not in yet.
    left: usize,
    /// Per part: its backend's address (for errors), and for MGET its reply once in.
    parts: Vec<(SocketAddr, Option<Vec<u8>>)>,
    /// Per key (request order): its part. For MGET.
    part_of_key: Vec<usize>,
    /// The sum of the counts (DEL, EXISTS, UNLINK, TOUCH).
    sum: i64,
    /// The first failed part (in part order) and the error line it gives.
    failed: Option<(usize, String)>,
}

impl<R> Merge<R> {
    /// A merge into `reply` of parts sent to the backends at `addrs` (one per part), with
    /// `part_of_key[i]` the part of the request's key `i` ([`Plan::part_of_key`]).
    pub fn new(multi: Multi, part_of_key: Vec<usize>, addrs: Vec<SocketAddr>, reply: R) -> Self {
        Merge {
            multi,
            reply: Some(reply),
            left: addrs.len(),
            parts: addrs.into_iter().map(|a| (a, None)).collect(),
            part_of_key,
            sum: 0,
            failed: None,
        }
    }

    fn fail(&mut self, part: usize, line: String) {
        if self.failed.as_ref().is_none_or(|(first, _)| part < *first) {
            self.failed = Some((part, line));
        }
    }

    /// Takes in part `part`'s outcome. Returns the client's reply and its bytes once every
    /// part is in.
    pub fn part_done(
        &mut self,
        part: usize,
        outcome: Result<&[u8], BackendError>,
    ) -> Option<(R, Vec<u8>)> {
        let addr = self.parts[part].0;
        let name = self.multi.name();
        match outcome.map(|bytes| (parse_reply(bytes), bytes)) {
            Err(e) => self.fail(part, error_line(&e)),
            Ok((Ok(ReplyView::Error(text)), _)) => self.fail(
                part,
                format!("ERR backend {addr}: {}", String::from_utf8_lossy(text)),
            ),
            Ok((Ok(ReplyView::Integer(n)), _)) if matches!(self.multi, Multi::Count(_)) => {
                self.sum = self.sum.saturating_add(n);
            }
            Ok((Ok(ReplyView::Simple(b"OK")), _)) if self.multi == Multi::Mset => {}
            Ok((Ok(ReplyView::Array(Some(values))), bytes))
                if self.multi == Multi::Mget
                    && values.len() == self.part_of_key.iter().filter(|&&p| p == part).count() =>
            {
                self.parts[part].1 = Some(bytes.to_vec());
            }
            Ok(_) => self.fail(
                part,
                format!("ERR backend {addr} sent an unexpected reply to {name}"),
            ),
        }
        self.left -= 1;
        if self.left > 0 {
            return None;
        }
        let reply = self.reply.take()?;
        Some((reply, self.finish()))
    }

    /// The merged reply, encoded.
    fn finish(&mut self) -> Vec<u8> {
        if let Some((_, line)) = self.failed.take() {
            return error_bytes(&line);
        }
        match self.multi {
            Multi::Count(_) => format!(":{}\r\n", self.sum).into_bytes(),
            Multi::Mset => b"+OK\r\n".to_vec(),
            Multi::Mget => {
                let mut values: Vec<_> = self
                    .parts
                    .iter()
                    .map(|(_, bytes)| match bytes.as_deref().map(parse_reply) {
                        Some(Ok(ReplyView::Array(Some(values)))) => Some(values),
                        _ => None,
                    })
                    .collect();
                let mut out = format!("*{}\r\n", self.part_of_key.len()).into_bytes();
                for &part in &self.part_of_key {
                    // Checked when the part came in: it has a value per key.
                    match values[part].as_mut().and_then(Iterator::next) {
                        Some(value) => out.extend_from_slice(value),
                        None => return error_bytes("ERR internal error merging MGET"),
                    }
                }
                out
            }
        }
    }
}

/// The error line for a request its backend did not answer, e.g.
/// `ERR backend 127.0.0.1:7001 is down`.
pub fn error_line(error: &BackendError) -> String {
    format!("ERR {error}")
}

/// `line` as an encoded RESP error (CR and LF made spaces).
pub fn error_bytes(line: &str) -> Vec<u8> {
    format!("-{}\r\n", line.replace(['\r', '\n'], " ")).into_bytes()
}

/// What waits for one backend reply on behalf of a client.
pub enum Pending {
    /// A command forwarded whole: the backend's reply is the client's.
    Whole(Reply),
    /// One part of a split command.
    Part {
        /// The merge it belongs to.
        merge: Rc<RefCell<Merge>>,
        /// Which part.
        part: usize,
    },
}

impl super::pool::Waiter for Pending {
    fn done(self, _ctx: &mut ringwire::CoreCtx, outcome: Result<&[u8], BackendError>) {
        match self {
            Pending::Whole(reply) => match outcome {
                Ok(bytes) => reply.complete(bytes),
                Err(e) => reply.complete(error_bytes(&error_line(&e))),
            },
            Pending::Part { merge, part } => {
                let merged = merge.borrow_mut().part_done(part, outcome);
                if let Some((reply, bytes)) = merged {
                    reply.complete(bytes);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ringwire::codec::resp::Resp;
    use ringwire::codec::{Codec, Decoded};

    use super::{encode_part, plan, BackendError, Merge, Multi, Plan};

    fn addrs() -> Vec<std::net::SocketAddr> {
        ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
            .map(|a| a.parse().unwrap())
            .to_vec()
    }

    /// Feeds the parts' replies (in the given order) to a merge of `line`'s keys.
    fn merged(
        line: &str,
        multi: Multi,
        replies: Vec<(usize, Result<&[u8], BackendError>)>,
    ) -> String {
        let mut plan_made = None;
        args_of(line, |args| plan_made = Some(plan(multi, args, by_letter)));
        let p = plan_made.unwrap();
        let part_addrs = p.parts.iter().map(|(b, _)| addrs()[*b]).collect();
        let mut merge = Merge::new(multi, p.part_of_key, part_addrs, ());
        let mut out = None;
        let n = replies.len();
        for (i, (part, outcome)) in replies.into_iter().enumerate() {
            let done = merge.part_done(part, outcome);
            assert_eq!(done.is_some(), i + 1 == n, "done only at the last part");
            out = done.map(|((), bytes)| String::from_utf8(bytes).unwrap());
        }
        out.unwrap()
    }

    #[test]
    fn parts_merge_in_key_order_whatever_order_they_come_in() {
        let got = merged(
            "MGET b1 a1 b2 c1 a2",
            Multi::Mget,
            vec![
                (2, Ok(b"*1\r\n$2\r\nC1\r\n")),
                (0, Ok(b"*2\r\n$2\r\nB1\r\n$-1\r\n")),
                (1, Ok(b"*2\r\n$2\r\nA1\r\n$2\r\nA2\r\n")),
            ],
        );
        assert_eq!(
            got,
            "*5\r\n$2\r\nB1\r\n$2\r\nA1\r\n$-1\r\n$2\r\nC1\r\n$2\r\nA2\r\n"
        );
        let sum = merged(
            "DEL a b c a",
            Multi::Count("DEL"),
            vec![(1, Ok(b":1\r\n")), (0, Ok(b":1\r\n")), (2, Ok(b":0\r\n"))],
        );
        assert_eq!(sum, ":2\r\n");
        let ok = merged(
            "MSET a 1 b 2",
            Multi::Mset,
            vec![(1, Ok(b"+OK\r\n")), (0, Ok(b"+OK\r\n"))],
        );
        assert_eq!(ok, "+OK\r\n");
    }

    #[test]
    fn a_failed_part_fails_the_whole_naming_its_backend() {
        let a = "127.0.0.1:7001".parse().unwrap();
        let c = "127.0.0.1:7003".parse().unwrap();
        let got = merged(
            "MGET a b c",
            Multi::Mget,
            vec![
                (2, Err(BackendError::Closed { addr: c })),
                (1, Ok(b"*1\r\n$1\r\nB\r\n")),
                (0, Err(BackendError::Down { addr: a })),
            ],
        );
        assert!(
            got.starts_with("-ERR ") && got.contains("127.0.0.1:7001"),
            "first part in part order: {got}"
        );
        let got = merged(
            "MSET b 1 c 2",
            Multi::Mset,
            vec![(0, Ok(b"-OOM no memory\r\n")), (1, Ok(b"+OK\r\n"))],
        );
        assert_eq!(got, "-ERR backend 127.0.0.1:7002: OOM no memory\r\n");
        let got = merged(
            "EXISTS a b",
            Multi::Count("EXISTS"),
            vec![(0, Ok(b"+OK\r\n")), (1, Ok(b":1\r\n"))],
        );
        assert_eq!(
            got,
            "-ERR backend 127.0.0.1:7001 sent an unexpected reply to EXISTS\r\n"
        );
        // An MGET part with the wrong number of values.
        let got = merged(
            "MGET a b",
            Multi::Mget,
            vec![(0, Ok(b"*0\r\n")), (1, Ok(b"*1\r\n$1\r\nB\r\n"))],
        );
        assert_eq!(
            got,
            "-ERR backend 127.0.0.1:7001 sent an unexpected reply to MGET\r\n"
        );
    }

    fn args_of(line: &str, f: impl FnOnce(ringwire::codec::resp::Args<'_>)) {
        let wire = format!("{line}\r\n");
        let Ok(Decoded::Frame(cmd, _)) = Resp::default().decode(wire.as_bytes(), 1024) else {
            panic!()
        };
        let mut args = cmd.args();
        args.next();
        f(args)
    }

    /// Backend by the key's first letter: a→0, b→1, c→2.
    fn by_letter(key: &[u8]) -> usize {
        usize::from(key[0] - b'a')
    }

    #[test]
    fn keys_group_by_backend_in_first_key_order() {
        args_of("MGET b1 a1 b2 c1 a2 b1", |args| {
            let p = plan(Multi::Mget, args, by_letter);
            assert_eq!(
                p,
                Plan {
                    parts: vec![(1, vec![0, 2, 5]), (0, vec![1, 4]), (2, vec![3])],
                    part_of_key: vec![0, 1, 0, 2, 1, 0],
                }
            );
        });
        args_of("MSET b1 x a1 y b2 z", |args| {
            let all: Vec<&[u8]> = args.clone().collect();
            let p = plan(Multi::Mset, args, by_letter);
            assert_eq!(p.part_of_key, vec![0, 1, 0]);
            let mut wire = Vec::new();
            encode_part(Multi::Mset, &all, &p.parts[0].1, &mut wire);
            assert_eq!(
                wire,
                b"*5\r\n$4\r\nMSET\r\n$2\r\nb1\r\n$1\r\nx\r\n$2\r\nb2\r\n$1\r\nz\r\n"
            );
        });
    }
}
