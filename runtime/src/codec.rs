//! Codecs turn bytes into frames and frames into bytes, and [`FrameReader`] feeds a codec the
//! bytes of one session as they arrive.
//!
//! Invariant: a frame is decoded straight from the bytes at hand (the provided buffer the
//! kernel filled) whenever they hold it whole; only an incomplete remainder is copied, into a
//! tail buffer that is bounded by the maximum frame size.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::pool::BufPool;

/// The outcome of one [`Codec::decode`] call.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decoded<F> {
    /// A whole frame, and the number of bytes of the input it took (more than zero).
    Frame(F, usize),
    /// The input holds no whole frame yet. Carries the total number of bytes the frame will
    /// take, once its header says so: the engine reserves room once and does not decode again
    /// before that much has arrived. After `NeedMore` the engine presents the same frame again,
    /// from its start, with more bytes (a codec may keep its progress through it).
    NeedMore(Option<usize>),
}

/// Why a codec rejected its input. The session that sent it is closed; no other is affected.
///
/// A codec with errors of its own (a protocol's status codes, say) returns them as
/// [`Custom`](CodecError::Custom), built with [`CodecError::custom`]; the handler's `on_error`
/// gets the same value back and recovers the codec's type with
/// [`downcast_ref`](CodecError::downcast_ref). The engine never looks inside: it counts the
/// error and closes the session, whatever the variant.
///
/// ```
/// # extern crate ringwire_runtime as ringwire;
/// use ringwire::codec::CodecError;
///
/// #[derive(Debug)]
/// struct BadOpcode(u8);
/// impl std::fmt::Display for BadOpcode {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "unknown opcode {}", self.0)
///     }
/// }
/// impl std::error::Error for BadOpcode {}
///
/// let e = CodecError::custom(BadOpcode(7));
/// assert_eq!(e.downcast_ref::<BadOpcode>().map(|b| b.0), Some(7));
/// assert_eq!(e.to_string(), "unknown opcode 7");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame declares or reaches a size over the configured maximum.
    FrameTooLarge {
        /// The size the frame declares or has reached.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes do not follow the protocol.
    Malformed(Cow<'static, str>),
    /// An outgoing item cannot be encoded.
    Encode(Cow<'static, str>),
    /// The codec's own error. Shared (`Arc`) so that the error stays `Clone`; allocated only
    /// when a codec fails, never on the data path.
    Custom(Arc<dyn Error + Send + Sync>),
}

impl CodecError {
    /// Wraps a codec's own error, for the handler to [`downcast_ref`](CodecError::downcast_ref).
    pub fn custom(error: impl Error + Send + Sync + 'static) -> Self {
        CodecError::Custom(Arc::new(error))
    }

    /// The codec's own error, if this is a [`Custom`](CodecError::Custom) one of type `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        match self {
            CodecError::Custom(e) => e.downcast_ref::<E>(),
            _ => None,
        }
    }
}

/// Equal variants with equal fields; two `Custom` errors are equal only when they are the same
/// error (one `Arc`), as a codec's own error type need not be comparable.
impl PartialEq for CodecError {
    fn eq(&self, other: &Self) -> bool {
        use CodecError::*;
        match (self, other) {
            (FrameTooLarge { len: a, max: m }, FrameTooLarge { len: b, max: n }) => {
                a == b && m == n
            }
            (Malformed(a), Malformed(b)) | (Encode(a), Encode(b)) => a == b,
            (Custom(a), Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for CodecError {}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            CodecError::Malformed(why) => write!(f, "malformed input: {why}"),
            CodecError::Encode(why) => write!(f, "cannot encode: {why}"),
            CodecError::Custom(e) => e.fmt(f),
        }
    }
}

/// A `Custom` error is transparent: its message and its source are the codec's error's own.
impl Error for CodecError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CodecError::Custom(e) => e.source(),
            _ => None,
        }
    }
}

/// Bytes to frames and back, for one session.
///
/// `decode` sees the bytes at hand, which may be the kernel's provided buffer itself, and
/// returns a frame that may borrow from them. It must not allocate for a frame before checking
/// the frame's size against `max_frame`. It returns `NeedMore` (not an error) when the bytes
/// hold no whole frame yet, and an error only for input that can never become valid.
///
/// A codec lives in its session (cloned from the server's prototype when the session opens),
/// so it may keep per-connection state.
pub trait Codec: 'static {
    /// A decoded frame; may borrow from the input.
    type Frame<'a>;
    /// What [`encode`](Codec::encode) takes.
    type Item: ?Sized;

    /// Decodes at most one frame from the start of `src`.
    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<Self::Frame<'a>>, CodecError>;

    /// Appends the encoding of `item` to `dst`.
    fn encode(&mut self, item: &Self::Item, dst: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Whether what was decoded so far ends at a message boundary: no message is partly
    /// decoded (a request head taken, its body still to come). A draining server closes a
    /// session only at a boundary, with nothing half-received and no output pending (see
    /// `Handler::on_drain`). `true` by default, which is right for a codec whose frames are
    /// whole messages; a codec that streams a message as several frames says `false` between
    /// them, and an unframed byte stream (the stock `Raw` codec) always says `false`: any byte
    /// may be the middle of the peer's message, so a drain serves such a session until its peer
    /// closes or the deadline passes.
    fn at_boundary(&self) -> bool {
        true
    }
}

/// Room the engine allows beyond the maximum frame size for headers, when a codec does not
/// say how long its frame will be: an incomplete frame never holds more than
/// `max_frame + FRAME_HEADROOM` bytes.
pub const FRAME_HEADROOM: usize = 4096;

/// Bytes first copied to complete a frame whose header is incomplete (the amount doubles while
/// the codec still cannot say how long the frame is).
const HEADER_PROBE: usize = 64;

/// What one [`FrameReader::feed`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Frames decoded and handed to the callback.
    pub frames: usize,
    /// Bytes copied into the tail buffer (zero when every frame came straight from the input).
    pub copied: usize,
    /// The callback asked to stop; the rest of the input was dropped.
    pub stopped: bool,
}

/// What the frame callback of [`FrameReader::feed`] wants next. A `bool` converts: `true` is
/// `Continue`, `false` is `Stop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Decode the next frame.
    Continue,
    /// Decode nothing more for now (the session's output is over its high-water mark): hold
    /// the rest of the input until [`FrameReader::resume`].
    Pause,
    /// The session is closing: drop the rest of the input.
    Stop,
}

impl From<bool> for Flow {
    fn from(go_on: bool) -> Flow {
        if go_on {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }
}

/// Reassembles frames for one session: decodes straight from incoming bytes, and keeps only an
/// incomplete remainder in a tail buffer taken from the core's [`BufPool`].
#[derive(Debug, Default)]
pub struct FrameReader {
    tail: Vec<u8>,
    /// Total bytes the frame in `tail` needs, when the codec said.
    need: Option<usize>,
    /// Input not decoded because the callback paused (whole frames, then perhaps the start of
    /// one), plus what arrived while paused; decoded first, in order, by `resume`. Bounded by
    /// what the kernel delivers between a pause and the stop of reading (see `hold`).
    held: Vec<u8>,
}

impl FrameReader {
    /// An empty reader; it holds no buffer until a frame arrives split.
    pub fn new() -> Self {
        FrameReader::default()
    }

    /// Bytes of an incomplete frame held back.
    pub fn buffered(&self) -> usize {
        self.tail.len()
    }

    /// Bytes of input held back by a pause, not yet decoded.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Gives the tail buffer and any held input back to `pool`.
    pub fn release(&mut self, pool: &mut BufPool) {
        pool.give(std::mem::take(&mut self.tail));
        pool.give(std::mem::take(&mut self.held));
        self.need = None;
    }

    /// Keeps `data`, undecoded, behind what is already held: for input that arrives while
    /// reading is paused. The engine stops reading when it pauses, so this holds at most what
    /// the kernel had already delivered by then.
    pub fn hold(&mut self, data: &[u8], pool: &mut BufPool) {
        if self.held.capacity() == 0 {
            self.held = pool.take(data.len());
        }
        self.held.extend_from_slice(data);
    }

    /// Decodes the input held by a pause, as [`feed`](FrameReader::feed) would have: the same
    /// callback, and it may pause again.
    pub fn resume<C, F, R>(
        &mut self,
        codec: &mut C,
        max_frame: usize,
        pool: &mut BufPool,
        on_frame: F,
    ) -> Result<Fed, CodecError>
    where
        C: Codec,
        F: FnMut(&mut C, &mut BufPool, C::Frame<'_>) -> R,
        R: Into<Flow>,
    {
        let held = std::mem::take(&mut self.held);
        let fed = self.feed(codec, &held, max_frame, pool, on_frame);
        pool.give(held);
        fed
    }

    /// Moves what is left of the tail (from `pos`) and of `data` into `held`.
    fn pause(&mut self, pos: usize, data: &[u8], pool: &mut BufPool) {
        debug_assert!(self.held.is_empty());
        let rest = &self.tail[pos.min(self.tail.len())..];
        if !rest.is_empty() || !data.is_empty() {
            let mut held = pool.take(rest.len() + data.len());
            held.extend_from_slice(rest);
            held.extend_from_slice(data);
            self.held = held;
        }
        pool.give(std::mem::take(&mut self.tail));
        self.need = None;
    }

    /// Decodes every whole frame in the tail plus `data`, calling `on_frame` for each with the
    /// codec and the pool lent back. `on_frame` returns a [`Flow`] (or a `bool`): to go on, to
    /// pause (the rest of the input is held for [`resume`](FrameReader::resume)), or to stop
    /// (the session is closing; the rest of the input is dropped). While input is held, `data`
    /// joins it undecoded.
    pub fn feed<C, F, R>(
        &mut self,
        codec: &mut C,
        mut data: &[u8],
        max_frame: usize,
        pool: &mut BufPool,
        mut on_frame: F,
    ) -> Result<Fed, CodecError>
    where
        C: Codec,
        F: FnMut(&mut C, &mut BufPool, C::Frame<'_>) -> R,
        R: Into<Flow>,
    {
        let mut fed = Fed::default();
        if !self.held.is_empty() {
            self.hold(data, pool);
            return Ok(fed);
        }
        let limit = max_frame.saturating_add(FRAME_HEADROOM);
        // 1. Complete the frame held in the tail.
        if !self.tail.is_empty() {
            match self.complete_tail(codec, data, max_frame, pool, &mut on_frame, &mut fed)? {
                Some(rest) => data = rest,
                None => return Ok(fed),
            }
        }
        // 2. Decode straight from the input: no copy for whole frames.
        let pos = match decode_run(codec, data, max_frame, pool, &mut on_frame, &mut fed)? {
            Run::Drained { pos, need } => {
                self.need = need;
                pos
            }
            Run::Paused(pos) => {
                self.pause(0, &data[pos..], pool);
                return Ok(fed);
            }
            Run::Stopped => return Ok(fed),
        };
        // 3. Keep the incomplete remainder.
        let rest = &data[pos..];
        if !rest.is_empty() {
            if rest.len() > limit {
                return Err(CodecError::FrameTooLarge {
                    len: rest.len(),
                    max: max_frame,
                });
            }
            let want = self.need.unwrap_or(rest.len()).clamp(rest.len(), limit);
            self.tail = pool.take(want);
            self.tail.extend_from_slice(rest);
            fed.copied += rest.len();
        }
        Ok(fed)
    }

    /// Completes the frame held in the tail from `data`, taking only what it needs when the
    /// codec said how much, and decodes what the tail then holds. Returns the input left to
    /// decode straight from `data` once the tail is empty, or `None` when this feed is done
    /// (the tail still waits for more, or the callback paused or stopped).
    fn complete_tail<'d, C, F, R>(
        &mut self,
        codec: &mut C,
        mut data: &'d [u8],
        max_frame: usize,
        pool: &mut BufPool,
        on_frame: &mut F,
        fed: &mut Fed,
    ) -> Result<Option<&'d [u8]>, CodecError>
    where
        C: Codec,
        F: FnMut(&mut C, &mut BufPool, C::Frame<'_>) -> R,
        R: Into<Flow>,
    {
        let limit = max_frame.saturating_add(FRAME_HEADROOM);
        while !self.tail.is_empty() {
            let take = match self.need {
                Some(total) if total > self.tail.len() => (total - self.tail.len()).min(data.len()),
                Some(_) => data.len(),
                // The header itself is incomplete: copy a little (doubling), not the whole
                // buffer, so that the frames behind it still decode straight from `data`.
                None => data.len().min(self.tail.len().max(HEADER_PROBE)),
            };
            self.tail.extend_from_slice(&data[..take]);
            fed.copied += take;
            data = &data[take..];
            if self.need.is_some_and(|total| self.tail.len() < total) && self.tail.len() <= limit {
                // Short of the total the codec said the frame takes: decoding again now would
                // only say so again (and re-parse what is held).
                debug_assert!(data.is_empty());
                return Ok(None);
            }
            let pos = match decode_run(codec, &self.tail, max_frame, pool, on_frame, fed)? {
                Run::Drained { pos, need } => {
                    self.need = need;
                    pos
                }
                Run::Paused(pos) => {
                    self.pause(pos, data, pool);
                    return Ok(None);
                }
                Run::Stopped => {
                    self.release(pool);
                    return Ok(None);
                }
            };
            self.tail.drain(..pos);
            if self.tail.is_empty() {
                self.release(pool);
                break;
            }
            if self.tail.len() > limit {
                return Err(CodecError::FrameTooLarge {
                    len: self.tail.len(),
                    max: max_frame,
                });
            }
            if data.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(data))
    }
}

/// How decoding one run of bytes ended.
enum Run {
    /// Every whole frame at hand was decoded, taking `pos` bytes; what is left (if anything)
    /// is the start of a frame that takes `need` bytes in all, when the codec said.
    Drained { pos: usize, need: Option<usize> },
    /// The callback paused after the frame that ends at this position.
    Paused(usize),
    /// The callback stopped.
    Stopped,
}

/// Decodes whole frames from the start of `src` and hands each to `on_frame`, until the codec
/// needs more bytes or the callback pauses or stops.
fn decode_run<C, F, R>(
    codec: &mut C,
    src: &[u8],
    max_frame: usize,
    pool: &mut BufPool,
    on_frame: &mut F,
    fed: &mut Fed,
) -> Result<Run, CodecError>
where
    C: Codec,
    F: FnMut(&mut C, &mut BufPool, C::Frame<'_>) -> R,
    R: Into<Flow>,
{
    let mut pos = 0;
    while pos < src.len() {
        match codec.decode(&src[pos..], max_frame)? {
            Decoded::Frame(frame, used) => {
                debug_assert!(used > 0 && used <= src.len() - pos);
                pos += used.max(1);
                fed.frames += 1;
                match on_frame(codec, pool, frame).into() {
                    Flow::Continue => {}
                    Flow::Pause => return Ok(Run::Paused(pos)),
                    Flow::Stop => {
                        fed.stopped = true;
                        return Ok(Run::Stopped);
                    }
                }
            }
            Decoded::NeedMore(need) => return Ok(Run::Drained { pos, need }),
        }
    }
    Ok(Run::Drained { pos, need: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-byte length prefix, then payload.
    #[derive(Clone)]
    struct Len8;

    impl Codec for Len8 {
        type Frame<'a> = &'a [u8];
        type Item = [u8];
        fn decode<'a>(
            &mut self,
            src: &'a [u8],
            max: usize,
        ) -> Result<Decoded<&'a [u8]>, CodecError> {
            let Some(&len) = src.first() else {
                return Ok(Decoded::NeedMore(None));
            };
            let len = len as usize;
            if len > max {
                return Err(CodecError::FrameTooLarge { len, max });
            }
            if src.len() < 1 + len {
                return Ok(Decoded::NeedMore(Some(1 + len)));
            }
            Ok(Decoded::Frame(&src[1..1 + len], 1 + len))
        }
        fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
            dst.push(item.len() as u8);
            dst.extend_from_slice(item);
            Ok(())
        }
    }

    fn stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let frames: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; (i as usize * 7) % 23]).collect();
        let mut bytes = Vec::new();
        for f in &frames {
            Len8.encode(f, &mut bytes).unwrap();
        }
        (bytes, frames)
    }

    #[test]
    fn whole_frames_are_not_copied() {
        let (bytes, frames) = stream();
        let mut reader = FrameReader::new();
        let mut pool = BufPool::default();
        let mut got = Vec::new();
        let fed = reader
            .feed(&mut Len8, &bytes, 255, &mut pool, |_, _, f| {
                got.push(f.to_vec());
                true
            })
            .unwrap();
        assert_eq!(got, frames);
        assert_eq!(fed.copied, 0);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn every_split_point_yields_the_same_frames() {
        let (bytes, frames) = stream();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut reader = FrameReader::new();
                let mut pool = BufPool::default();
                let mut got = Vec::new();
                for part in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    reader
                        .feed(&mut Len8, part, 255, &mut pool, |_, _, f| {
                            got.push(f.to_vec());
                            true
                        })
                        .unwrap();
                }
                assert_eq!(got, frames, "split at {a} and {b}");
                assert_eq!(reader.buffered(), 0);
            }
        }
    }

    #[test]
    fn oversized_frame_is_rejected_before_buffering() {
        let mut reader = FrameReader::new();
        let mut pool = BufPool::default();
        let err = reader
            .feed(&mut Len8, &[200, 1, 2], 100, &mut pool, |_, _, _| true)
            .unwrap_err();
        assert_eq!(err, CodecError::FrameTooLarge { len: 200, max: 100 });
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn stop_drops_the_rest() {
        let (bytes, _) = stream();
        let mut reader = FrameReader::new();
        let mut pool = BufPool::default();
        let mut n = 0;
        let fed = reader
            .feed(&mut Len8, &bytes, 255, &mut pool, |_, _, _| {
                n += 1;
                n < 3
            })
            .unwrap();
        assert!(fed.stopped);
        assert_eq!(fed.frames, 3);
    }

    /// A codec that never says how long its frame is (newline-terminated lines).
    struct Lines;
    impl Codec for Lines {
        type Frame<'a> = &'a [u8];
        type Item = [u8];
        fn decode<'a>(&mut self, src: &'a [u8], _: usize) -> Result<Decoded<&'a [u8]>, CodecError> {
            Ok(match src.iter().position(|&b| b == b'\n') {
                Some(i) => Decoded::Frame(&src[..i], i + 1),
                None => Decoded::NeedMore(None),
            })
        }
        fn encode(&mut self, _: &[u8], _: &mut Vec<u8>) -> Result<(), CodecError> {
            Ok(())
        }
    }

    #[test]
    fn an_incomplete_header_copies_only_what_completes_the_frame() {
        let mut reader = FrameReader::new();
        let mut pool = BufPool::default();
        let mut lines = Vec::new();
        let mut on_line = |_: &mut Lines, _: &mut BufPool, f: &[u8]| {
            lines.push(f.len());
            true
        };
        let first = reader
            .feed(&mut Lines, b"abc", 1 << 20, &mut pool, &mut on_line)
            .unwrap();
        assert_eq!(first.copied, 3);
        let mut rest = b"def\n".to_vec();
        rest.extend(std::iter::repeat_n(*b"x\n", 5000).flatten());
        let second = reader
            .feed(&mut Lines, &rest, 1 << 20, &mut pool, &mut on_line)
            .unwrap();
        assert_eq!(second.frames, 5001);
        assert!(
            second.copied <= 64,
            "copied {} of {} bytes",
            second.copied,
            rest.len()
        );
        assert_eq!(lines[0], 6);
    }

    /// A codec's own error.
    #[derive(Debug, PartialEq)]
    struct Opcode(u8);

    impl fmt::Display for Opcode {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "unknown opcode {}", self.0)
        }
    }

    impl Error for Opcode {}

    /// Frames are single bytes; any byte over 9 is an unknown opcode.
    struct Opcodes;
    impl Codec for Opcodes {
        type Frame<'a> = u8;
        type Item = u8;
        fn decode(&mut self, src: &[u8], _: usize) -> Result<Decoded<u8>, CodecError> {
            match src.first() {
                None => Ok(Decoded::NeedMore(None)),
                Some(&op) if op > 9 => Err(CodecError::custom(Opcode(op))),
                Some(&op) => Ok(Decoded::Frame(op, 1)),
            }
        }
        fn encode(&mut self, _: &u8, _: &mut Vec<u8>) -> Result<(), CodecError> {
            Ok(())
        }
    }

    #[test]
    fn a_codec_hands_its_own_error_through_the_reader() {
        let mut reader = FrameReader::new();
        let mut pool = BufPool::default();
        let mut ops = Vec::new();
        let err = reader
            .feed(&mut Opcodes, &[1, 2, 42, 3], 16, &mut pool, |_, _, op| {
                ops.push(op);
                true
            })
            .unwrap_err();
        assert_eq!(ops, [1, 2], "frames before the error are delivered");
        assert_eq!(err.downcast_ref::<Opcode>(), Some(&Opcode(42)));
        assert_eq!(err.to_string(), "unknown opcode 42");
        assert!(CodecError::Malformed("x".into())
            .downcast_ref::<Opcode>()
            .is_none());
        assert_eq!(err.clone(), err, "a clone shares the codec's error");
        assert_ne!(
            err,
            CodecError::custom(Opcode(42)),
            "another error is another error"
        );
    }

    #[test]
    fn tail_without_length_hint_is_bounded() {
        let mut reader = FrameReader::new();
        let mut pool = BufPool::default();
        let chunk = vec![b'x'; 1000];
        let mut result = Ok(Fed::default());
        for _ in 0..10 {
            result = reader.feed(&mut Lines, &chunk, 10, &mut pool, |_, _, _| true);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(CodecError::FrameTooLarge { .. })),
            "{result:?}"
        );
    }
}
