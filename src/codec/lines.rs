//! `Lines`: frames that end with a delimiter byte (a newline, by default).
//!
//! Invariant: every byte of a line is scanned once, however the line arrives. The engine
//! presents an incomplete line again from its start with more bytes (the `NeedMore` contract),
//! so the codec remembers how far it has looked and resumes there; a naive scan from the start
//! on every receive costs O(n²) for a line that trickles in.

use super::{Codec, CodecError, Decoded};

/// Delimited frames: each frame is the bytes before the delimiter (borrowed from the input,
/// the delimiter not included); `encode` writes the bytes and the delimiter.
///
/// [`Lines::new`] splits on `\n` and drops a `\r` before it, so `a\r\n` and `a\n` both decode
/// to `a`; [`Lines::with_delimiter`] splits on any byte and keeps everything before it. A line
/// longer than the maximum (the server's `max_frame`, or [`Lines::max_line`] when smaller) is
/// an error as soon as that many bytes arrived without a delimiter: nothing past the limit is
/// buffered.
///
/// ```
/// use ringwire::codec::{Codec, Decoded, Lines};
/// let mut codec = Lines::new();
/// assert_eq!(codec.decode(b"GET a\r\nrest", 1024).unwrap(), Decoded::Frame(&b"GET a"[..], 7));
/// assert_eq!(codec.decode(b"no end yet", 1024).unwrap(), Decoded::NeedMore(None));
/// let mut wire = Vec::new();
/// codec.encode(b"OK", &mut wire).unwrap();
/// assert_eq!(wire, b"OK\n");
/// ```
#[derive(Debug)]
pub struct Lines {
    delimiter: u8,
    strip_cr: bool,
    max_line: usize,
    /// Bytes of the current (incomplete) line already scanned without finding the delimiter.
    scanned: usize,
    /// Bytes looked at in total: what the scan costs, for the tests.
    #[cfg(test)]
    looked_at: usize,
}

/// A clone is a fresh codec with the same settings: the engine clones the prototype into each
/// session, which must not inherit the prototype's scan progress.
impl Clone for Lines {
    fn clone(&self) -> Self {
        Lines {
            scanned: 0,
            #[cfg(test)]
            looked_at: 0,
            ..*self
        }
    }
}

impl Default for Lines {
    fn default() -> Self {
        Lines::new()
    }
}

impl Lines {
    /// Lines ending in `\n` (a `\r` before it is dropped from the frame); `encode` ends each
    /// item with `\n`.
    pub fn new() -> Self {
        Lines {
            delimiter: b'\n',
            strip_cr: true,
            max_line: usize::MAX,
            scanned: 0,
            #[cfg(test)]
            looked_at: 0,
        }
    }

    /// Frames ending in `delimiter`, which is dropped from the frame and nothing else is;
    /// `encode` ends each item with it.
    pub fn with_delimiter(delimiter: u8) -> Self {
        Lines {
            delimiter,
            strip_cr: false,
            ..Lines::new()
        }
    }

    /// Longest line accepted, without its delimiter (default: the server's `max_frame`; the
    /// smaller of the two applies).
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }
}

impl Codec for Lines {
    type Frame<'a> = &'a [u8];
    type Item = [u8];

    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<&'a [u8]>, CodecError> {
        let max = self.max_line.min(max_frame);
        // Bytes a line of `max` may occupy before its delimiter (its `\r` included).
        let room = max.saturating_add(usize::from(self.strip_cr));
        // Resume where the last call stopped; the engine presents the same line again, from
        // its start, with more bytes. (Fewer would break that promise: scan again.)
        let from = if self.scanned <= src.len() {
            self.scanned
        } else {
            0
        };
        // Never look further than a line of the maximum size can reach.
        let window = &src[from..src.len().min(room.saturating_add(1))];
        #[cfg(test)]
        {
            self.looked_at += window.len();
        }
        let Some(at) = window.iter().position(|&b| b == self.delimiter) else {
            if src.len() > room {
                self.scanned = 0;
                return Err(CodecError::FrameTooLarge {
                    len: src.len(),
                    max,
                });
            }
            self.scanned = src.len();
            return Ok(Decoded::NeedMore(None));
        };
        self.scanned = 0;
        let end = from + at;
        let mut line = &src[..end];
        if self.strip_cr {
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
        }
        if line.len() > max {
            return Err(CodecError::FrameTooLarge {
                len: line.len(),
                max,
            });
        }
        Ok(Decoded::Frame(line, end + 1))
    }

    /// Fails for an item that holds the delimiter: it would reach the peer as two lines.
    fn encode(&mut self, item: &[u8], dst: &mut Vec<u8>) -> Result<(), CodecError> {
        if item.contains(&self.delimiter) {
            return Err(CodecError::Encode("the item holds the delimiter".into()));
        }
        dst.reserve(item.len() + 1);
        dst.extend_from_slice(item);
        dst.push(self.delimiter);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
