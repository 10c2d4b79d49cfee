//! `Len32`: a 4-byte big-endian length, then that many bytes of payload.

use super::{Codec, CodecError, Decoded};

/// Length-prefixed frames: a `u32` big-endian payload length, then the payload. Frames decode
/// to their payload (borrowed from the input); `send` writes the prefix and the payload.
///
/// A declared length over the maximum frame size is an error as soon as the prefix is read,
/// before anything is buffered for the frame.
///
/// ```
/// use ringwire::codec::{Codec, Decoded, Len32};
/// let mut codec = Len32;
/// let mut wire = Vec::new();
/// codec.encode(b"hi", &mut wire).unwrap();
/// assert_eq!(wire, [0, 0, 0, 2, b'h', b'i']);
/// assert_eq!(codec.decode(&wire, 1024).unwrap(), Decoded::Frame(&b"hi"[..], 6));
/// assert_eq!(codec.decode(&wire[..3], 1024).unwrap(), Decoded::NeedMore(None));
/// assert_eq!(codec.decode(&wire[..5], 1024).unwrap(), Decoded::NeedMore(Some(6)));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Len32;

/// Bytes of the length prefix.
pub const HEADER: usize = 4;

impl Codec for Len32 {
    type Frame<'a> = &'a [u8];
    type Item = [u8];

    #[inline]
    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<&'a [u8]>, CodecError> {
        let Some(header) = src.first_chunk::<HEADER>() else {
            return Ok(Decoded::NeedMore(None));
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > max_frame {
            return Err(CodecError::FrameTooLarge {
                len,
                max: max_frame,
            });
        }
        let total = HEADER + len;
        if src.len() < total {
            return Ok(Decoded::NeedMore(Some(total)));
        }
        Ok(Decoded::Frame(&src[HEADER..total], total))
    }

    #[inline]
    fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
        let len = u32::try_from(item.len())
            .map_err(|_| CodecError::Encode("payload longer than u32::MAX bytes".into()))?;
        dst.reserve(HEADER + item.len());
        dst.extend_from_slice(&len.to_be_bytes());
        dst.extend_from_slice(item);
        Ok(())
    }
}
