//! `Resp`: the Redis serialization protocol, version 2 (RESP2), server side: commands in,
//! replies out.
//!
//! A request is a command, in one of the two forms Redis accepts: an array of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every client library sends) or an inline command
//! (`PING\r\n`, what people type into telnet and what `redis-benchmark` sends for
//! `PING_INLINE`). A decoded [`Command`] borrows its arguments from the received bytes: decoding
//! allocates nothing and copies nothing. Replies are [`Reply`] values, encoded by `send`.
//!
//! Invariant: what `decode` returns depends only on the bytes from the start of the frame, so
//! bytes presented again after `NeedMore` decode the same way. Besides its [`Limits`] the codec
//! keeps only its progress through an incomplete array request (where to resume checking its
//! elements), used only when the bytes presented start with that same request's header.
//! Every length is checked against the limits and the maximum frame size as soon as its
//! header is read, before anything is buffered for it.
//!
//! Requests are flat: an element of a request array must be a bulk string, so the nesting
//! depth of a request is one, as in Redis (`*1\r\n*1\r\n...` is a protocol error, "expected
//! '$', got '*'"). Replies may nest ([`Reply::Array`]).
//!
//! The client side (a proxy's backend connections) is [`RespReplies`]: replies in, each frame
//! the raw bytes of one whole reply, read with [`parse_reply`]; requests out, pre-encoded.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use super::{Codec, CodecError, Decoded};

mod replies;

pub use replies::{parse_reply, ArrayView, ReplyLimits, ReplyView, RespReplies, MAX_DEPTH};

/// Limits on what one request may declare. Over a limit, `decode` fails with an error (the
/// session gets a protocol error and is closed); the maximum frame size of the server applies
/// on top of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest bulk string (Redis's `proto-max-bulk-len`; default 512 MiB, so that the
    /// maximum frame size is what binds).
    pub max_bulk: usize,
    /// Most elements in a request array (default 1 Mi, as in Redis).
    pub max_args: usize,
    /// Longest inline command line (default 64 KiB, as in Redis).
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 << 20,
            max_args: 1 << 20,
            max_inline: 64 << 10,
        }
    }
}

impl Limits {
    /// These limits with `max_bulk` changed.
    pub fn with_max_bulk(mut self, bytes: usize) -> Self {
        self.max_bulk = bytes;
        self
    }

    /// These limits with `max_args` changed.
    pub fn with_max_args(mut self, count: usize) -> Self {
        self.max_args = count;
        self
    }

    /// These limits with `max_inline` changed.
    pub fn with_max_inline(mut self, bytes: usize) -> Self {
        self.max_inline = bytes;
        self
    }
}

/// The RESP2 server codec: frames are [`Command`]s, items are [`Reply`]s.
///
/// One codec per session (the engine clones it for each). It keeps its progress through an
/// incomplete array request, so after `NeedMore` it expects the same request again with more
/// bytes, as the engine presents it; a request with another header is decoded from the start.
///
/// ```
/// use ringwire::codec::{resp::{Reply, Resp}, Codec, Decoded};
/// let mut resp = Resp::default();
/// let wire = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n";
/// let Decoded::Frame(cmd, used) = resp.decode(wire, 1024).unwrap() else { panic!() };
/// assert_eq!(cmd.args().collect::<Vec<_>>(), [&b"GET"[..], b"k"]);
/// let Decoded::Frame(ping, _) = resp.decode(&wire[used..], 1024).unwrap() else { panic!() };
/// assert_eq!(ping.name(), Some(&b"PING"[..]));
///
/// let mut out = Vec::new();
/// resp.encode(&Reply::Bulk("v".into()), &mut out).unwrap();
/// assert_eq!(out, b"$1\r\nv\r\n");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Resp {
    limits: Limits,
    /// How far the last decode got into an array request that was still incomplete.
    partial: Option<Partial>,
}

/// Progress through an incomplete array request. After `NeedMore` the engine presents the
/// same request again from its start, with more bytes (the `Codec` contract), so decoding
/// resumes at the first element not yet checked instead of re-checking every element: a large
/// array trickled in would otherwise cost time quadratic in its size.
#[derive(Clone, Copy, Debug)]
struct Partial {
    argc: usize,
    /// Where the first element starts.
    body: usize,
    /// Elements checked.
    done: usize,
    /// Where the next element starts.
    pos: usize,
}

impl Resp {
    /// A codec with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Resp {
            limits,
            partial: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// Most digits we accept in a length after `*` or `$`: 18 never overflow an `i64`.
const MAX_INT_DIGITS: usize = 18;

/// The smallest encoding of one array element, `$0\r\n\r\n`.
const MIN_ELEMENT: usize = 6;

fn malformed(why: &'static str) -> CodecError {
    CodecError::Malformed(Cow::Borrowed(why))
}

/// Parses `<integer>\r\n` starting at `src[at]`. `Ok(None)`: the line is not complete yet.
/// Returns the value and the position after the line.
fn int_line(src: &[u8], at: usize, what: &'static str) -> Result<Option<(i64, usize)>, CodecError> {
    let line = &src[at.min(src.len())..];
    let (negative, digits_at) = match line.first() {
        None => return Ok(None),
        Some(b'-') => (true, 1),
        Some(_) => (false, 0),
    };
    let mut value: i64 = 0;
    let mut i = digits_at;
    loop {
        match line.get(i) {
            None => return Ok(None),
            Some(b'\r') => break,
            Some(&d @ b'0'..=b'9') if i - digits_at < MAX_INT_DIGITS => {
                value = value * 10 + i64::from(d - b'0');
                i += 1;
            }
            Some(_) => return Err(malformed(what)),
        }
    }
    if i == digits_at {
        return Err(malformed(what));
    }
    match line.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((if negative { -value } else { value }, at + i + 2))),
        Some(_) => Err(malformed(what)),
    }
}

impl Resp {
    /// An array of bulk strings.
    fn decode_array<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<Command<'a>>, CodecError> {
        // Resume only on what is recognisably the same request (its header re-read: a few
        // bytes), so a caller that presents another one gets it decoded from the start.
        let same = |p: &Partial| {
            src.len() >= p.pos
                && matches!(int_line(src, 1, ""), Ok(Some((n, at))) if n as usize == p.argc && at == p.body)
        };
        let (argc, body, done, mut pos) = match self.partial.take() {
            Some(p) if same(&p) => (p.argc, p.body, p.done, p.pos),
            _ => {
                let Some((count, pos)) = int_line(src, 1, "invalid multibulk length")? else {
                    return Ok(Decoded::NeedMore(None));
                };
                if count <= 0 {
                    // `*0` and `*-1` are empty requests; Redis skips them without a reply.
                    return Ok(Decoded::Frame(Command::array(&src[pos..pos], 0), pos));
                }
                let argc = count as usize;
                if argc > self.limits.max_args {
                    return Err(malformed("invalid multibulk length"));
                }
                if argc.saturating_mul(MIN_ELEMENT) > max_frame {
                    return Err(CodecError::FrameTooLarge {
                        len: pos + argc * MIN_ELEMENT,
                        max: max_frame,
                    });
                }
                (argc, pos, 0, pos)
            }
        };
        let max_bulk = self.limits.max_bulk;
        for i in done..argc {
            #[cfg(test)]
            tests::ELEMENTS_CHECKED.with(|n| n.set(n.get() + 1));
            let incomplete = |hint| {
                let partial = Partial {
                    argc,
                    body,
                    done: i,
                    pos,
                };
                (Some(partial), Ok(Decoded::NeedMore(hint)))
            };
            let (partial, result) = match src.get(pos) {
                None => incomplete(None),
                Some(b'$') => match int_line(src, pos + 1, "invalid bulk length")? {
                    None => incomplete(None),
                    Some((len, data)) => {
                        if len < 0 {
                            return Err(malformed("invalid bulk length"));
                        }
                        let len = len as usize;
                        if len > max_bulk {
                            return Err(CodecError::Malformed(Cow::Owned(format!(
                                "bulk length {len} exceeds the limit of {max_bulk}"
                            ))));
                        }
                        let end = data + len + 2;
                        if end > max_frame {
                            return Err(CodecError::FrameTooLarge {
                                len: end,
                                max: max_frame,
                            });
                        }
                        if src.len() >= end {
                            if &src[end - 2..end] != b"\r\n" {
                                return Err(malformed("bulk string not followed by CRLF"));
                            }
                            pos = end;
                            continue;
                        }
                        // Past the last element's header the whole frame's size is known.
                        incomplete((i + 1 == argc).then_some(end))
                    }
                },
                Some(&other) => {
                    return Err(CodecError::Malformed(Cow::Owned(format!(
                        "expected '$', got '{}'",
                        other.escape_ascii()
                    ))))
                }
            };
            self.partial = partial;
            return result;
        }
        Ok(Decoded::Frame(Command::array(&src[body..pos], argc), pos))
    }

    /// An inline command: words separated by spaces, up to `\n` (or `\r\n`).
    fn decode_inline<'a>(
        &self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<Command<'a>>, CodecError> {
        let max_line = self.limits.max_inline.min(max_frame);
        let window = &src[..src.len().min(max_line.saturating_add(1))];
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            return if src.len() > max_line {
                Err(malformed("too big inline request"))
            } else {
                Ok(Decoded::NeedMore(None))
            };
        };
        let line = match &src[..nl] {
            [line @ .., b'\r'] => line,
            line => line,
        };
        let argc = Args::inline(line).count();
        Ok(Decoded::Frame(Command::inline(line, argc), nl + 1))
    }
}

impl Codec for Resp {
    type Frame<'a> = Command<'a>;
    type Item = Reply;

    #[inline]
    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<Command<'a>>, CodecError> {
        match src.first() {
            None => Ok(Decoded::NeedMore(None)),
            Some(b'*') => self.decode_array(src, max_frame),
            Some(_) => {
                self.partial = None;
                self.decode_inline(src, max_frame)
            }
        }
    }

    #[inline]
    fn encode(&mut self, item: &Reply, dst: &mut Vec<u8>) -> Result<(), CodecError> {
        item.encode(dst)
    }
}

/// One request: its arguments, the first of which names the command. Borrows the received
/// bytes; valid for the `on_message` call that gets it.
///
/// An empty command (`*0\r\n`, or a blank inline line) has no arguments; Redis answers nothing
/// to it, and handlers should do the same.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// The elements after `*N\r\n`, or the inline line without its line end.
    body: &'a [u8],
    argc: usize,
    inline: bool,
}

impl<'a> Command<'a> {
    fn array(body: &'a [u8], argc: usize) -> Self {
        Command {
            body,
            argc,
            inline: false,
        }
    }

    fn inline(line: &'a [u8], argc: usize) -> Self {
        Command {
            body: line,
            argc,
            inline: true,
        }
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.argc
    }

    /// Whether the command has no arguments at all.
    pub fn is_empty(&self) -> bool {
        self.argc == 0
    }

    /// Whether it came as an inline command rather than an array.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// The arguments in order, the command name first.
    pub fn args(&self) -> Args<'a> {
        if self.inline {
            Args::inline(self.body)
        } else {
            Args {
                rest: self.body,
                left: self.argc,
                inline: false,
            }
        }
    }

    /// The command name (the first argument), as sent.
    pub fn name(&self) -> Option<&'a [u8]> {
        self.args().next()
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.args().map(|a| a.escape_ascii().to_string()))
            .finish()
    }
}

/// The arguments of a [`Command`], borrowed from the received bytes.
#[derive(Clone, Debug)]
pub struct Args<'a> {
    rest: &'a [u8],
    left: usize,
    inline: bool,
}

fn is_space(b: u8) -> bool {
    // As Redis's sdssplitargs (isspace).
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

impl<'a> Args<'a> {
    fn inline(line: &'a [u8]) -> Self {
        Args {
            rest: line,
            left: usize::MAX,
            inline: true,
        }
    }

    fn next_inline(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| !is_space(b))?;
        let word = &self.rest[start..];
        let end = word.iter().position(|&b| is_space(b)).unwrap_or(word.len());
        self.rest = &word[end..];
        Some(&word[..end])
    }

    fn next_bulk(&mut self) -> Option<&'a [u8]> {
        // The decoder checked the layout; a mismatch here is a bug, and ends the iteration.
        let (len, data) = match int_line(self.rest, 1, "") {
            Ok(Some((len, data))) if len >= 0 => (len as usize, data),
            _ => {
                debug_assert!(false, "Args over bytes the decoder did not accept");
                return None;
            }
        };
        let arg = self.rest.get(data..data + len)?;
        self.rest = self.rest.get(data + len + 2..)?;
        Some(arg)
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let arg = if self.inline {
            self.next_inline()
        } else {
            self.next_bulk()
        };
        match arg {
            Some(_) => self.left = self.left.saturating_sub(1),
            None => self.left = 0,
        }
        arg
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.inline {
            (0, None)
        } else {
            (self.left, Some(self.left))
        }
    }
}

/// A RESP2 reply. Cheap to build for the common cases: static status strings, integers, and
/// bulk strings held as [`Bytes`] (a reference count, not a copy, for values kept elsewhere).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// `+OK`: a status line (no CR or LF inside).
    Simple(Cow<'static, str>),
    /// `-ERR ...`: an error line, its first word the error kind (no CR or LF inside).
    Error(Cow<'static, str>),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`: a binary-safe string.
    Bulk(Bytes),
    /// An integer sent as a bulk string (`$2\r\n42`), as `GET` of a counter is; no allocation.
    BulkInteger(i64),
    /// `$-1`: no value (`GET` of a missing key).
    Null,
    /// `*-1`: no array.
    NullArray,
    /// `*N`, then each element.
    Array(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple(Cow::Borrowed("OK"));

    /// An error reply from a static message such as `"ERR syntax error"`.
    pub const fn error(message: &'static str) -> Reply {
        Reply::Error(Cow::Borrowed(message))
    }

    /// Appends the encoding to `dst`. Fails only for a status or error line holding CR or LF.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), CodecError> {
        match self {
            Reply::Simple(s) => line(dst, b'+', s),
            Reply::Error(s) => line(dst, b'-', s),
            Reply::Integer(n) => {
                dst.push(b':');
                push_int(dst, *n);
                dst.extend_from_slice(b"\r\n");
                Ok(())
            }
            Reply::Bulk(b) => {
                push_bulk(dst, b);
                Ok(())
            }
            Reply::BulkInteger(n) => {
                let mut digits = [0u8; 20];
                let text = format_int(&mut digits, *n);
                push_bulk(dst, text);
                Ok(())
            }
            Reply::Null => {
                dst.extend_from_slice(b"$-1\r\n");
                Ok(())
            }
            Reply::NullArray => {
                dst.extend_from_slice(b"*-1\r\n");
                Ok(())
            }
            Reply::Array(items) => {
                push_header(dst, b'*', items.len());
                items.iter().try_for_each(|item| item.encode(dst))
            }
        }
    }
}

fn line(dst: &mut Vec<u8>, kind: u8, text: &str) -> Result<(), CodecError> {
    if text.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(CodecError::Encode(Cow::Borrowed(
            "status or error line contains CR or LF",
        )));
    }
    dst.reserve(text.len() + 3);
    dst.push(kind);
    dst.extend_from_slice(text.as_bytes());
    dst.extend_from_slice(b"\r\n");
    Ok(())
}

/// Writes `n` in decimal at the end of `buf`; returns the digits.
fn format_int(buf: &mut [u8; 20], n: i64) -> &[u8] {
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

fn push_int(dst: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    dst.extend_from_slice(format_int(&mut digits, n));
}

fn push_header(dst: &mut Vec<u8>, kind: u8, len: usize) {
    dst.push(kind);
    push_int(dst, len as i64);
    dst.extend_from_slice(b"\r\n");
}

fn push_bulk(dst: &mut Vec<u8>, data: &[u8]) {
    dst.reserve(data.len() + 16);
    push_header(dst, b'$', data.len());
    dst.extend_from_slice(data);
    dst.extend_from_slice(b"\r\n");
}

/// Appends a command in the array form clients send: `*N`, then each argument as a bulk
/// string. For clients and tests.
///
/// ```
/// let mut wire = Vec::new();
/// ringwire::codec::resp::encode_command(&[&b"GET"[..], b"k"], &mut wire);
/// assert_eq!(wire, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
/// ```
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], dst: &mut Vec<u8>) {
    push_header(dst, b'*', args.len());
    for arg in args {
        push_bulk(dst, arg.as_ref());
    }
}

/// The reply Redis gives to a request it cannot parse, e.g.
/// `-ERR Protocol error: invalid bulk length`, before closing the connection.
pub fn protocol_error(error: &CodecError) -> Reply {
    let why = match error {
        CodecError::Malformed(why) => why.to_string(),
        other => other.to_string(),
    };
    // Keep the line a line, whatever the message says.
    let why = why.replace(['\r', '\n'], " ");
    Reply::Error(Cow::Owned(format!("ERR Protocol error: {why}")))
}

#[cfg(test)]
mod tests;
