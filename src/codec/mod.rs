//! Stock codecs. Each enforces the maximum frame size the server is configured with before
//! it buffers anything for a frame, and decodes frames that borrow from the received bytes.
//!
//! A codec of your own implements [`Codec`]: `decode` returns a frame (borrowing from the
//! input) and the bytes it took, `NeedMore` (with the frame's total size once known), or an
//! error for input that can never become valid.
//!
//! ```
//! use ringwire::codec::{Codec, CodecError, Decoded};
//!
//! /// A 1-byte length, then that many bytes.
//! #[derive(Clone, Default)]
//! struct Len8;
//!
//! impl Codec for Len8 {
//!     type Frame<'a> = &'a [u8];
//!     type Item = [u8];
//!
//!     fn decode<'a>(
//!         &mut self,
//!         src: &'a [u8],
//!         max_frame: usize,
//!     ) -> Result<Decoded<&'a [u8]>, CodecError> {
//!         let Some(&len) = src.first() else {
//!             return Ok(Decoded::NeedMore(None));
//!         };
//!         let (len, total) = (len as usize, 1 + len as usize);
//!         if len > max_frame {
//!             return Err(CodecError::FrameTooLarge { len, max: max_frame });
//!         }
//!         if src.len() < total {
//!             return Ok(Decoded::NeedMore(Some(total)));
//!         }
//!         Ok(Decoded::Frame(&src[1..total], total))
//!     }
//!
//!     fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
//!         let len = u8::try_from(item.len())
//!             .map_err(|_| CodecError::Encode("over 255 bytes".into()))?;
//!         dst.push(len);
//!         dst.extend_from_slice(item);
//!         Ok(())
//!     }
//! }
//!
//! let mut wire = Vec::new();
//! Len8.encode(b"hi", &mut wire).unwrap();
//! assert_eq!(Len8.decode(&wire, 64).unwrap(), Decoded::Frame(&b"hi"[..], 3));
//! assert_eq!(Len8.decode(&wire[..2], 64).unwrap(), Decoded::NeedMore(Some(3)));
//! ```

pub mod http;
mod len32;
mod lines;
mod raw;
pub mod resp;

pub use len32::Len32;
pub use lines::Lines;
pub use raw::Raw;
pub use ringwire_runtime::codec::{Codec, CodecError, Decoded};
