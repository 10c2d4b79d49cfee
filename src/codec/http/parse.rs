//! Parsing: request heads (through `httparse`), `Content-Length` bodies, chunked bodies and
//! their trailers. Each function changes the codec's state only when it returns a frame.

use std::mem::MaybeUninit;

use super::request::{tokens, trim};
use super::{
    fail, too_large, BodyKind, Http, Part, Request, RequestError, State, MAX_CHUNK_LINE,
    MAX_HEADERS,
};
use crate::codec::{CodecError, Decoded};

/// What the head's fields say about framing and the connection.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    hosts: usize,
    expect_continue: bool,
}

impl Http {
    fn framing(&mut self, headers: &[httparse::Header<'_>]) -> Result<Framing, CodecError> {
        let mut f = Framing::default();
        for h in headers {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                if f.content_length.is_some() {
                    return Err(fail(RequestError::BadRequest, "repeated Content-Length"));
                }
                let v = h.value;
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                    return Err(fail(RequestError::BadRequest, "invalid Content-Length"));
                }
                // More than 18 digits is more than any limit: saturate, 413 follows.
                let n = v.iter().try_fold(0u64, |n, d| {
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                });
                f.content_length = Some(n.unwrap_or(u64::MAX));
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if f.transfer_encoding {
                    return Err(fail(RequestError::BadRequest, "repeated Transfer-Encoding"));
                }
                f.transfer_encoding = true;
                let mut codings = tokens(h.value);
                f.chunked = matches!(
                    (codings.next(), codings.next()),
                    (Some(c), None) if c.eq_ignore_ascii_case(b"chunked")
                );
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in tokens(h.value) {
                    f.close |= token.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"host") {
                f.hosts += 1;
            } else if name.eq_ignore_ascii_case(b"expect") {
                f.expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(f)
    }

    pub(super) fn decode_head<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<Part<'a>>, CodecError> {
        let max_head = self.limits.max_head.min(max_frame);
        let mut fields = [MaybeUninit::<httparse::Header<'a>>::uninit(); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(src, &mut fields) {
            Ok(httparse::Status::Complete(len)) if len <= max_head => len,
            Ok(httparse::Status::Partial) if src.len() <= max_head => {
                return Ok(Decoded::NeedMore(None));
            }
            Ok(_) => {
                let len = src.len().min(max_head + 1) as u64;
                return Err(too_large(
                    RequestError::HeaderFieldsTooLarge,
                    len,
                    max_head as u64,
                ));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(fail(
                    RequestError::HeaderFieldsTooLarge,
                    "too many header fields",
                ));
            }
            Err(e) => return Err(fail(RequestError::BadRequest, httparse_error(e))),
        };
        if has_bare_lf(&src[..len]) {
            return Err(fail(RequestError::BadRequest, "bare LF as a line ending"));
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Err(fail(RequestError::BadRequest, "incomplete request line"));
        };
        let f = self.framing(req.headers)?;
        if version == 1 && f.hosts != 1 || f.hosts > 1 {
            return Err(fail(RequestError::BadRequest, "missing or repeated Host"));
        }
        let body = if f.transfer_encoding {
            if f.content_length.is_some() {
                return Err(fail(
                    RequestError::BadRequest,
                    "Content-Length together with Transfer-Encoding",
                ));
            }
            if version == 0 {
                return Err(fail(
                    RequestError::BadRequest,
                    "Transfer-Encoding in HTTP/1.0",
                ));
            }
            if !f.chunked {
                return Err(fail(
                    RequestError::NotImplemented,
                    "transfer coding other than chunked",
                ));
            }
            BodyKind::Chunked
        } else {
            match f.content_length {
                Some(n) if n > self.limits.max_body => {
                    return Err(too_large(
                        RequestError::ContentTooLarge,
                        n,
                        self.limits.max_body,
                    ));
                }
                Some(n) if n > 0 => BodyKind::Length(n),
                _ => BodyKind::None,
            }
        };
        // The fields start after the request line: the first LF past the target.
        let target_end = target.as_ptr() as usize + target.len() - src.as_ptr() as usize;
        let fields_at = src[target_end..len]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(len, |i| target_end + i + 1);
        let request = Request {
            method,
            target,
            version,
            fields: &src[fields_at..len],
            body,
            keep_alive: if version == 1 {
                !f.close
            } else {
                f.keep_alive && !f.close
            },
            expect_continue: f.expect_continue,
        };
        self.state = match body {
            BodyKind::None => State::Head,
            BodyKind::Length(left) => State::Length { left },
            BodyKind::Chunked => State::ChunkSize { after_data: false },
        };
        self.chunked_total = 0;
        self.chunk_extensions = 0;
        Ok(Decoded::Frame(Part::Head(request), len))
    }

    /// Body bytes of a `Content-Length` body or of a chunk: as many as are at hand.
    pub(super) fn decode_data<'a>(
        &mut self,
        src: &'a [u8],
        left: u64,
        chunked: bool,
    ) -> Decoded<Part<'a>> {
        if src.is_empty() {
            return Decoded::NeedMore(None);
        }
        let n = left.min(src.len() as u64) as usize;
        let left = left - n as u64;
        self.state = match (left, chunked) {
            (0, false) => State::Head,
            (left, false) => State::Length { left },
            (0, true) => State::ChunkSize { after_data: true },
            (left, true) => State::ChunkData { left },
        };
        let last = !chunked && left == 0;
        Decoded::Frame(
            Part::Body {
                data: &src[..n],
                last,
            },
            n,
        )
    }

    /// A chunk-size line (after the CRLF ending the previous chunk), and the data of the chunk
    /// at hand; or the last chunk and the trailers.
    pub(super) fn decode_chunk<'a>(
        &mut self,
        src: &'a [u8],
        after_data: bool,
    ) -> Result<Decoded<Part<'a>>, CodecError> {
        let mut pos = 0;
        if after_data {
            match src {
                [b'\r', b'\n', ..] => pos = 2,
                [] | [b'\r'] => return Ok(Decoded::NeedMore(None)),
                _ => {
                    return Err(fail(
                        RequestError::BadRequest,
                        "chunk data not followed by CRLF",
                    ))
                }
            }
        }
        let window = &src[pos..src.len().min(pos + MAX_CHUNK_LINE)];
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            return if window.len() == MAX_CHUNK_LINE {
                Err(fail(RequestError::BadRequest, "chunk-size line too long"))
            } else {
                Ok(Decoded::NeedMore(None))
            };
        };
        let (size, extensions) = self.chunk_size(&window[..nl])?;
        pos += nl + 1;
        if size == 0 {
            return self.decode_trailers(src, pos);
        }
        let total = self.chunked_total.saturating_add(size);
        if total > self.limits.max_body {
            return Err(too_large(
                RequestError::ContentTooLarge,
                total,
                self.limits.max_body,
            ));
        }
        if src.len() == pos {
            return Ok(Decoded::NeedMore(None));
        }
        self.chunked_total = total;
        self.chunk_extensions += extensions;
        match self.decode_data(&src[pos..], size, true) {
            Decoded::Frame(part, n) => Ok(Decoded::Frame(part, pos + n)),
            more => Ok(more),
        }
    }

    /// Parses `hex-size [BWS ; extensions] CR` (the LF already cut off): the size, and the
    /// bytes after it (extensions), which the caller counts when it takes the chunk.
    fn chunk_size(&mut self, line: &[u8]) -> Result<(u64, usize), CodecError> {
        let Some(line) = line.strip_suffix(b"\r") else {
            return Err(fail(
                RequestError::BadRequest,
                "chunk-size line not ended by CRLF",
            ));
        };
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 15 {
            return Err(fail(RequestError::BadRequest, "invalid chunk size"));
        }
        let rest = trim(&line[digits..]);
        if !rest.is_empty() && rest[0] != b';' {
            return Err(fail(RequestError::BadRequest, "invalid chunk size"));
        }
        // Counted when the chunk is taken (a line may be parsed again while its data is
        // incomplete), checked now.
        let extensions = line.len() - digits;
        if self.chunk_extensions + extensions > self.limits.max_head {
            return Err(fail(
                RequestError::BadRequest,
                "chunk extensions over the limit",
            ));
        }
        let hex = std::str::from_utf8(&line[..digits]).unwrap_or("0");
        Ok((u64::from_str_radix(hex, 16).unwrap_or(0), extensions))
    }

    /// The trailer section after the last chunk, up to its empty line.
    fn decode_trailers<'a>(
        &mut self,
        src: &'a [u8],
        pos: usize,
    ) -> Result<Decoded<Part<'a>>, CodecError> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let max = self.limits.max_head;
        match httparse::parse_headers(&src[pos..], &mut fields) {
            Ok(httparse::Status::Complete((len, _))) if has_bare_lf(&src[pos..pos + len]) => {
                Err(fail(RequestError::BadRequest, "bare LF as a line ending"))
            }
            Ok(httparse::Status::Complete((len, _))) if len <= max => {
                self.state = State::Head;
                self.chunked_total = 0;
                Ok(Decoded::Frame(
                    Part::Body {
                        data: &[],
                        last: true,
                    },
                    pos + len,
                ))
            }
            Ok(httparse::Status::Partial) if src.len() - pos <= max => Ok(Decoded::NeedMore(None)),
            Ok(_) | Err(httparse::Error::TooManyHeaders) => {
                let len = (src.len() - pos) as u64;
                Err(too_large(
                    RequestError::HeaderFieldsTooLarge,
                    len,
                    max as u64,
                ))
            }
            Err(e) => Err(fail(RequestError::BadRequest, httparse_error(e))),
        }
    }
}

/// A line feed not preceded by a carriage return. httparse takes it as a line ending; a proxy
/// in front may take it as part of a field value, and the two would then frame the request
/// differently (request smuggling). RFC 9112 allows a server to accept it; we refuse it.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

fn httparse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in the request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "invalid HTTP version",
    }
}
