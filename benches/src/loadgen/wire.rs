//! What goes over the wire: the deterministic payload of each message, and the codec that cuts
//! a raw echo stream back into messages.
//!
//! Invariant: the payload of a message depends only on its connection and sequence number, so
//! the receiving side checks every echoed byte without keeping a copy of what it sent.

use ringwire::codec::{Codec, CodecError, Decoded};

/// Distinct payload start offsets into the pattern (a power of two).
const SPAN: usize = 1 << 16;

/// Pseudo-random bytes that payloads are slices of: message `(conn, seq)` is the `size` bytes
/// at an offset hashed from both, so a reordered, lost or misdelivered message shows as a
/// mismatch (except for a 1 in 65,536 chance that two messages start at the same offset).
pub struct Pattern {
    bytes: Vec<u8>,
    size: usize,
}

impl Pattern {
    /// The pattern for messages of `size` bytes.
    pub fn new(size: usize) -> Pattern {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let bytes = (0..SPAN + size)
            .map(|_| {
                state = splitmix64(state);
                state as u8
            })
            .collect();
        Pattern { bytes, size }
    }

    /// The payload of message `seq` of connection `conn`.
    #[inline]
    pub fn payload(&self, conn: u64, seq: u64) -> &[u8] {
        let offset = splitmix64(conn.rotate_left(40) ^ seq) as usize & (SPAN - 1);
        &self.bytes[offset..offset + self.size]
    }
}

/// Sebastiano Vigna's splitmix64 finaliser: a cheap, well-mixed hash of a u64.
#[inline]
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Raw framing as the load generator sees it: the echo stream cut into messages of exactly
/// `size` bytes. The server sees plain bytes (its own `Raw` codec); only the client needs to
/// know where one message ends.
#[derive(Clone, Copy, Debug)]
pub struct Chunks {
    /// Bytes per message.
    pub size: usize,
}

impl Codec for Chunks {
    type Frame<'a> = &'a [u8];
    type Item = [u8];

    #[inline]
    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<&'a [u8]>, CodecError> {
        if self.size > max_frame {
            return Err(CodecError::FrameTooLarge {
                len: self.size,
                max: max_frame,
            });
        }
        if src.len() < self.size {
            return Ok(Decoded::NeedMore(Some(self.size)));
        }
        Ok(Decoded::Frame(&src[..self.size], self.size))
    }

    #[inline]
    fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
        dst.extend_from_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringwire::engine::{BufPool, FrameReader};

    #[test]
    fn payloads_are_deterministic_and_differ() {
        let a = Pattern::new(64);
        let b = Pattern::new(64);
        assert_eq!(a.payload(3, 7), b.payload(3, 7));
        assert_eq!(a.payload(3, 7).len(), 64);
        assert_ne!(a.payload(3, 7), a.payload(3, 8));
        assert_ne!(a.payload(3, 7), a.payload(4, 7));
    }

    #[test]
    fn chunks_reassemble_a_stream_split_anywhere() {
        let pattern = Pattern::new(10);
        let mut stream = Vec::new();
        for seq in 0..5 {
            stream.extend_from_slice(pattern.payload(1, seq));
        }
        for split in 0..=stream.len() {
            let mut reader = FrameReader::new();
            let mut pool = BufPool::default();
            let mut codec = Chunks { size: 10 };
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                reader
                    .feed(&mut codec, part, 10, &mut pool, |_, _, f| {
                        got.push(f.to_vec());
                        true
                    })
                    .unwrap();
            }
            let want: Vec<Vec<u8>> = (0..5).map(|s| pattern.payload(1, s).to_vec()).collect();
            assert_eq!(got, want, "split at {split}");
        }
    }
}
