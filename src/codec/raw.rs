//! `Raw`: bytes pass through as they arrive, in chunks of at most the maximum frame size.

use super::{Codec, CodecError, Decoded};

/// Passes bytes through unframed: each frame is whatever arrived (never empty, at most the
/// maximum frame size), and `send` writes bytes as they are.
///
/// ```
/// use ringwire::codec::{Codec, Decoded, Raw};
/// let mut raw = Raw;
/// assert_eq!(raw.decode(b"abc", 2).unwrap(), Decoded::Frame(&b"ab"[..], 2));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw;

impl Codec for Raw {
    type Frame<'a> = &'a [u8];
    type Item = [u8];

    #[inline]
    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<&'a [u8]>, CodecError> {
        if src.is_empty() {
            return Ok(Decoded::NeedMore(None));
        }
        let n = src.len().min(max_frame);
        Ok(Decoded::Frame(&src[..n], n))
    }

    #[inline]
    fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
        dst.extend_from_slice(item);
        Ok(())
    }

    /// A byte stream has no message boundaries: a drain waits for the peer.
    fn at_boundary(&self) -> bool {
        false
    }
}
