//! `RespReplies`: the client side of RESP2, replies in, pre-encoded requests out; and
//! [`parse_reply`], a reader for one reply's bytes.
//!
//! A frame is the raw bytes of one complete reply (status, error, integer, bulk string or null
//! bulk, array or null array, nested to any depth the limits allow), validated and borrowed from
//! the received bytes: a proxy forwards it as it came, and reads what it must (an MGET part, a
//! DEL count) with [`parse_reply`] without allocating.
//!
//! Invariant: a reply is walked once. An incomplete one leaves its progress in the codec (the
//! position and the elements still due at each nesting level), used only when the bytes
//! presented again start the same way, so a large array trickled in costs time linear in its
//! size. Every count and length is checked against the limits and the maximum frame size as soon
//! as its header is read, before anything is buffered for it. Nesting is walked with a fixed
//! stack (no recursion, no allocation), which bounds [`ReplyLimits::max_depth`] by
//! [`MAX_DEPTH`].

use std::borrow::Cow;
use std::fmt;

use super::{Codec, CodecError, Decoded};

/// The deepest nesting of arrays [`RespReplies`] can walk: the bound on
/// [`ReplyLimits::max_depth`].
pub const MAX_DEPTH: usize = 64;

/// Limits on what one reply may declare. Over a limit, decoding fails (the backend session
/// closes); the maximum frame size of the session applies on top of these (for connections a
/// server's handlers open, `Server::outbound_max_frame`, 512 MiB by default: the defaults
/// here match it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplyLimits {
    /// Longest bulk string (default 512 MiB, Redis's `proto-max-bulk-len`, and the default
    /// outbound frame bound, so that the frame bound is what binds).
    pub max_bulk: usize,
    /// Most elements in one array (default 16 Mi).
    pub max_elements: usize,
    /// Deepest nesting of arrays: a flat array is depth 1 (default 32, at most [`MAX_DEPTH`]).
    pub max_depth: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        ReplyLimits {
            max_bulk: ringwire_runtime::DEFAULT_OUTBOUND_MAX_FRAME,
            max_elements: 16 << 20,
            max_depth: 32,
        }
    }
}

impl ReplyLimits {
    /// These limits with `max_bulk` changed.
    pub fn with_max_bulk(mut self, bytes: usize) -> Self {
        self.max_bulk = bytes;
        self
    }

    /// These limits with `max_elements` changed.
    pub fn with_max_elements(mut self, count: usize) -> Self {
        self.max_elements = count;
        self
    }

    /// These limits with `max_depth` changed (capped at [`MAX_DEPTH`]).
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth.min(MAX_DEPTH);
        self
    }
}

/// The RESP2 client codec: frames are the raw bytes of one whole reply (`&[u8]`), items are
/// raw bytes sent as they are (requests encoded beforehand, with
/// [`encode_command`](super::encode_command) or kept from a client).
///
/// One codec per session (the engine clones it for each). It keeps its progress through an
/// incomplete reply, so after `NeedMore` it expects the same reply again with more bytes, as the
/// engine presents it; a reply that starts differently is walked from its start.
///
/// ```
/// use ringwire::codec::{resp::{parse_reply, ReplyView, RespReplies}, Codec, Decoded};
/// let mut codec = RespReplies::default();
/// let wire = b"*2\r\n$1\r\na\r\n$-1\r\n:7\r\n";
/// let Decoded::Frame(reply, used) = codec.decode(wire, 1024).unwrap() else { panic!() };
/// assert_eq!(reply, b"*2\r\n$1\r\na\r\n$-1\r\n");
/// let Ok(ReplyView::Array(Some(items))) = parse_reply(reply) else { panic!() };
/// let items: Vec<_> = items.map(|item| parse_reply(item).unwrap()).collect();
/// assert_eq!(items, [ReplyView::Bulk(Some(b"a")), ReplyView::Bulk(None)]);
/// assert_eq!(codec.decode(&wire[used..], 1024).unwrap(), Decoded::Frame(&b":7\r\n"[..], 4));
/// assert_eq!(codec.decode(b"$5\r\nab", 1024).unwrap(), Decoded::NeedMore(Some(11)));
/// ```
#[derive(Clone, Debug, Default)]
pub struct RespReplies {
    limits: ReplyLimits,
    /// Progress through the reply being decoded.
    walk: Walk,
    /// The last decode stopped in an incomplete reply: `walk` may resume it.
    resumable: bool,
}

impl RespReplies {
    /// A codec with the given limits.
    pub fn with_limits(limits: ReplyLimits) -> Self {
        RespReplies {
            limits,
            ..RespReplies::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ReplyLimits {
        self.limits
    }
}

impl Codec for RespReplies {
    type Frame<'a> = &'a [u8];
    type Item = [u8];

    #[inline]
    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<&'a [u8]>, CodecError> {
        if !(self.resumable && self.walk.continues(src)) {
            self.walk.start(src);
        }
        self.resumable = false;
        match self.walk.run(src, &self.limits, max_frame)? {
            Step::Done(end) => Ok(Decoded::Frame(&src[..end], end)),
            Step::More(hint) => {
                self.resumable = true;
                Ok(Decoded::NeedMore(hint))
            }
        }
    }

    #[inline]
    fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
        dst.extend_from_slice(item);
        Ok(())
    }
}

/// One reply, read from its bytes by [`parse_reply`]: its kind and what it holds, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyView<'a> {
    /// `+OK`: a status line, without its `+` and line end.
    Simple(&'a [u8]),
    /// `-ERR ...`: an error line, without its `-` and line end. It is the backend's answer.
    Error(&'a [u8]),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`: a bulk string, or `None` for the null bulk string `$-1`.
    Bulk(Option<&'a [u8]>),
    /// `*N`: an array of replies, or `None` for the null array `*-1`.
    Array(Option<ArrayView<'a>>),
}

/// The elements of an array reply, each as the raw bytes of one whole reply (read it with
/// [`parse_reply`], or forward it as it is), in order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ArrayView<'a> {
    /// The bytes of the elements not yet taken.
    rest: &'a [u8],
    /// Elements not yet taken.
    left: usize,
}

impl<'a> ArrayView<'a> {
    /// Elements not yet taken (all of them for a fresh view).
    pub fn len(&self) -> usize {
        self.left
    }

    /// Whether no elements are left (`*0` has none).
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The raw bytes of the elements not yet taken, back to back.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for ArrayView<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        // `parse_reply` checked the whole array: each element is whole and within limits.
        let mut walk = Walk::new(self.rest);
        match walk.run(self.rest, &UNBOUNDED, usize::MAX) {
            Ok(Step::Done(end)) => {
                let (item, rest) = self.rest.split_at(end);
                self.rest = rest;
                self.left -= 1;
                Some(item)
            }
            _ => {
                debug_assert!(false, "ArrayView over bytes parse_reply did not accept");
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ArrayView<'_> {}

impl fmt::Debug for ArrayView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.map(|item| item.escape_ascii().to_string()))
            .finish()
    }
}

/// Reads one reply from `bytes`, which must hold exactly one whole reply (a frame of
/// [`RespReplies`], or an element of an [`ArrayView`]). Allocates nothing; an array's elements
/// are walked once here to check them, and again as they are taken.
///
/// ```
/// use ringwire::codec::resp::{parse_reply, ReplyView};
/// assert_eq!(parse_reply(b":3\r\n").unwrap(), ReplyView::Integer(3));
/// assert_eq!(parse_reply(b"-ERR no\r\n").unwrap(), ReplyView::Error(b"ERR no"));
/// assert!(parse_reply(b":3\r\n:4\r\n").is_err(), "two replies");
/// assert!(parse_reply(b"$3\r\nab").is_err(), "incomplete");
/// ```
///
/// # Errors
///
/// [`CodecError::Malformed`] if `bytes` are not one whole RESP2 reply (incomplete, followed by
/// more bytes, or invalid), or nest arrays deeper than [`MAX_DEPTH`].
pub fn parse_reply(bytes: &[u8]) -> Result<ReplyView<'_>, CodecError> {
    let mut walk = Walk::new(bytes);
    match walk.run(bytes, &UNBOUNDED, usize::MAX)? {
        Step::Done(end) if end == bytes.len() => {}
        Step::Done(_) => return Err(malformed("more bytes after the reply")),
        Step::More(_) => return Err(malformed("incomplete reply")),
    }
    let line_end = |from: usize| {
        bytes[from..]
            .iter()
            .position(|&b| b == b'\r')
            .map_or(bytes.len(), |i| from + i)
    };
    let header = || {
        let end = line_end(1);
        (int(&bytes[1..end]), end + 2)
    };
    Ok(match bytes[0] {
        b'+' => ReplyView::Simple(&bytes[1..line_end(1)]),
        b'-' => ReplyView::Error(&bytes[1..line_end(1)]),
        b':' => ReplyView::Integer(header().0),
        b'$' => match header() {
            (n, _) if n < 0 => ReplyView::Bulk(None),
            (n, at) => ReplyView::Bulk(Some(&bytes[at..at + fits(n)?])),
        },
        _ => match header() {
            (n, _) if n < 0 => ReplyView::Array(None),
            (n, at) => ReplyView::Array(Some(ArrayView {
                rest: &bytes[at..],
                left: fits(n)?,
            })),
        },
    })
}

/// A length or count the walk accepted, as a `usize`: on a target where it does not fit, the
/// walk cannot have accepted it (it is over every limit), so this fails only on a bug.
fn fits(n: i64) -> Result<usize, CodecError> {
    usize::try_from(n).map_err(|_| malformed("length or count does not fit in memory"))
}

/// What [`parse_reply`] accepts: anything but nesting deeper than the walk can follow.
const UNBOUNDED: ReplyLimits = ReplyLimits {
    max_bulk: usize::MAX,
    max_elements: usize::MAX,
    max_depth: MAX_DEPTH,
};

/// The value of digits `run` already checked.
fn int(digits: &[u8]) -> i64 {
    match parse_int(digits) {
        Ok(n) => n,
        Err(_) => {
            debug_assert!(false, "an integer the walk did not check");
            0
        }
    }
}

fn malformed(why: &'static str) -> CodecError {
    CodecError::Malformed(Cow::Borrowed(why))
}

/// Parses a signed decimal `i64` (no sign but `-`, no leading `+`, no spaces).
fn parse_int(digits: &[u8]) -> Result<i64, CodecError> {
    let (negative, body) = match digits {
        [b'-', body @ ..] => (true, body),
        body => (false, body),
    };
    if body.is_empty() {
        return Err(malformed("expected an integer"));
    }
    let mut value: i64 = 0;
    for &d in body {
        if !d.is_ascii_digit() {
            return Err(malformed("expected an integer"));
        }
        let digit = i64::from(d - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or_else(|| malformed("integer out of range"))?;
    }
    Ok(value)
}

/// Longest line we look for the end of before calling it malformed, for integers and lengths:
/// `-9223372036854775808` has 20 characters.
const MAX_INT_LINE: usize = 21;

/// The end of the line that starts at `at`: the position of its `\r` (followed by `\n`), or
/// `None` if it has not all arrived. `max` bounds the line's length.
fn line(
    src: &[u8],
    at: usize,
    max: usize,
    what: &'static str,
) -> Result<Option<usize>, CodecError> {
    let rest = &src[at.min(src.len())..];
    let window = &rest[..rest.len().min(max.saturating_add(1))];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        None if rest.len() > max => Err(malformed(what)),
        None => Ok(None),
        Some(i) if window[i] == b'\n' => Err(malformed("line feed without carriage return")),
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(at + i)),
            Some(_) => Err(malformed("carriage return without line feed")),
        },
    }
}

/// The smallest encoding of a reply, `+\r\n`: what each declared array element takes at least.
const MIN_REPLY: usize = 3;

/// The outcome of walking a reply.
enum Step {
    /// It is whole: its length.
    Done(usize),
    /// It is not whole yet; its total length, where known.
    More(Option<usize>),
}

/// One element read by [`Walk::element`].
enum Element {
    /// Not all of it has arrived; the whole reply's length, where known.
    Partial(Option<usize>),
    /// A reply with no elements, ending at the position.
    Leaf(usize),
    /// An array of this many elements, whose header ends at the position.
    Array(usize, usize),
}

/// Progress through one reply: where the next element starts, and how many elements are still
/// due at each level of nesting (level 0 is the reply itself).
#[derive(Clone, Debug)]
struct Walk {
    /// Where the next element starts.
    pos: usize,
    /// The deepest level with elements due.
    depth: usize,
    /// Elements due at each level (above `depth`: stale).
    due: [u32; MAX_DEPTH + 1],
    /// The first bytes of the reply, to recognise it when presented again.
    head: [u8; HEAD],
    head_len: usize,
}

/// How many of a reply's first bytes a walk keeps to recognise it.
const HEAD: usize = 8;

impl Default for Walk {
    fn default() -> Self {
        Walk {
            pos: 0,
            depth: 0,
            due: [0; MAX_DEPTH + 1],
            head: [0; HEAD],
            head_len: 0,
        }
    }
}

impl Walk {
    /// A walk of the reply at the start of `src`.
    fn new(src: &[u8]) -> Self {
        let mut walk = Walk::default();
        walk.start(src);
        walk
    }

    /// Starts again, at the reply at the start of `src`.
    fn start(&mut self, src: &[u8]) {
        self.pos = 0;
        self.depth = 0;
        self.due[0] = 1;
        self.head_len = src.len().min(HEAD);
        self.head[..self.head_len].copy_from_slice(&src[..self.head_len]);
    }

    /// Whether `src` is the reply this walk stopped in, presented again with more bytes: it
    /// reaches as far and starts with the same bytes.
    fn continues(&self, src: &[u8]) -> bool {
        src.len() >= self.pos
            && src.len() >= self.head_len
            && src[..self.head_len] == self.head[..self.head_len]
    }

    /// Walks on from where it stopped.
    fn run(
        &mut self,
        src: &[u8],
        limits: &ReplyLimits,
        max_frame: usize,
    ) -> Result<Step, CodecError> {
        let max_depth = limits.max_depth.min(MAX_DEPTH);
        loop {
            while self.due[self.depth] == 0 {
                if self.depth == 0 {
                    return Ok(Step::Done(self.pos));
                }
                self.depth -= 1;
            }
            match self.element(src, limits, max_frame)? {
                Element::Partial(hint) => return Ok(Step::More(hint)),
                Element::Leaf(end) => {
                    self.due[self.depth] -= 1;
                    self.pos = end;
                }
                Element::Array(count, end) => {
                    if count > 0 && self.depth + 1 > max_depth {
                        return Err(malformed("arrays nested too deep"));
                    }
                    self.due[self.depth] -= 1;
                    self.pos = end;
                    if count > 0 {
                        self.depth += 1;
                        self.due[self.depth] = count as u32;
                    }
                }
            }
        }
    }

    /// Whether the element at `pos` is the last one due: then, once its length is known, so is
    /// the reply's.
    fn is_last(&self) -> bool {
        self.due[self.depth] == 1 && self.due[..self.depth].iter().all(|&n| n == 0)
    }

    /// Reads the element that starts at `pos`: its header, and for a bulk string its data.
    fn element(
        &self,
        src: &[u8],
        limits: &ReplyLimits,
        max_frame: usize,
    ) -> Result<Element, CodecError> {
        let at = self.pos;
        let Some(&kind) = src.get(at) else {
            return Ok(Element::Partial(None));
        };
        let too_large = |len: usize| {
            if len > max_frame {
                Err(CodecError::FrameTooLarge {
                    len,
                    max: max_frame,
                })
            } else {
                Ok(())
            }
        };
        match kind {
            b'+' | b'-' => {
                let max = max_frame.saturating_sub(at + 3);
                match line(src, at + 1, max, "status or error line too long")? {
                    None => Ok(Element::Partial(None)),
                    Some(cr) => Ok(Element::Leaf(cr + 2)),
                }
            }
            b':' | b'$' | b'*' => {
                let what = match kind {
                    b':' => "invalid integer",
                    b'$' => "invalid bulk length",
                    _ => "invalid multibulk length",
                };
                let Some(cr) = line(src, at + 1, MAX_INT_LINE, what)? else {
                    return Ok(Element::Partial(None));
                };
                let n = parse_int(&src[at + 1..cr]).map_err(|_| malformed(what))?;
                let end = cr + 2;
                too_large(end)?;
                match kind {
                    b':' => Ok(Element::Leaf(end)),
                    b'$' if n == -1 => Ok(Element::Leaf(end)),
                    b'*' if n == -1 => Ok(Element::Array(0, end)),
                    _ if n < 0 => Err(malformed(what)),
                    b'$' => {
                        // A length that does not fit a `usize` (a 32-bit target) is over any
                        // limit.
                        let len = usize::try_from(n).unwrap_or(usize::MAX);
                        if len > limits.max_bulk {
                            return Err(CodecError::Malformed(Cow::Owned(format!(
                                "bulk length {n} exceeds the limit of {}",
                                limits.max_bulk
                            ))));
                        }
                        let data_end = end.saturating_add(len).saturating_add(2);
                        too_large(data_end)?;
                        if src.len() < data_end {
                            return Ok(Element::Partial(self.is_last().then_some(data_end)));
                        }
                        if &src[data_end - 2..data_end] != b"\r\n" {
                            return Err(malformed("bulk string not followed by CRLF"));
                        }
                        Ok(Element::Leaf(data_end))
                    }
                    _ => {
                        let count = usize::try_from(n).unwrap_or(usize::MAX);
                        if count > limits.max_elements || u32::try_from(count).is_err() {
                            return Err(CodecError::Malformed(Cow::Owned(format!(
                                "array of {n} elements exceeds the limit of {}",
                                limits.max_elements
                            ))));
                        }
                        too_large(end.saturating_add(count.saturating_mul(MIN_REPLY)))?;
                        Ok(Element::Array(count, end))
                    }
                }
            }
            other => Err(CodecError::Malformed(Cow::Owned(format!(
                "expected a RESP2 reply type ('+', '-', ':', '$' or '*'), got '{}'",
                other.escape_ascii()
            )))),
        }
    }
}

#[cfg(test)]
mod tests;
