//! Stock codecs. Each enforces the maximum frame size the server is configured with before
//! it buffers anything for a frame, and decodes frames that borrow from the received bytes.

pub mod http;
mod len32;
mod raw;
pub mod resp;

pub use len32::Len32;
pub use raw::Raw;
pub use ringwire_runtime::codec::{Codec, CodecError, Decoded};
