//! `Http`: HTTP/1.1 requests in, responses out, server side. Request heads are parsed by
//! `httparse`; bodies (`Content-Length` or chunked) are streamed to the handler in pieces and
//! never buffered whole.
//!
//! A request arrives as frames ([`Part`]): first its head ([`Part::Head`]); then, if it has a
//! body, the body's bytes in one or more [`Part::Body`] frames, the last one marked `last`
//! (for a chunked body, an empty frame that stands for the last chunk and its trailers). So
//! the body of one request is consumed before the next request's head is decoded, pipelined
//! requests come out in order, and a body costs no memory beyond the receive buffers.
//!
//! Invariant: the codec's state (where the current body stands) changes only when `decode`
//! returns a frame; `NeedMore` and errors leave it as it was, so bytes presented again after
//! `NeedMore` decode the same way. Errors record why ([`RequestError`]) for the handler's
//! `on_error`, which answers with [`error_response`]; the engine then closes the session.
//!
//! What is rejected, and with which status: malformed syntax, a missing or repeated `Host` in
//! HTTP/1.1, a repeated or invalid `Content-Length`, `Content-Length` together with
//! `Transfer-Encoding`, `Transfer-Encoding` in HTTP/1.0, and a malformed chunk: 400. A head
//! over [`Limits::max_head`] bytes or over [`MAX_HEADERS`] fields, and trailers over the same
//! size: 431. A body over [`Limits::max_body`] bytes: 413 (for `Content-Length` at once, for
//! chunked bodies when the chunk that passes the limit is announced). A transfer coding other
//! than `chunked`: 501.

use std::borrow::Cow;
use std::fmt;
use std::mem::MaybeUninit;

use super::{Codec, CodecError, Decoded};

mod response;

pub use response::{
    date, error_response, imf_fixdate, reason, refresh_date, ReplyTo, Response, CONTINUE,
};

/// Most header fields in a request head (and in a chunked body's trailers).
pub const MAX_HEADERS: usize = 64;

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 1024;

/// Limits on one request. The server's maximum frame size also caps the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and header fields), and largest trailer section:
    /// 431 past it. Default 8 KiB.
    pub max_head: usize,
    /// Largest request body: 413 past it. Default 1 MiB.
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 << 10,
            max_body: 1 << 20,
        }
    }
}

/// Why a request was rejected; [`status`](RequestError::status) is what the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// 400: malformed syntax or framing.
    BadRequest,
    /// 413: the body is over the limit.
    ContentTooLarge,
    /// 431: the head (or the trailers) is over the limit.
    HeaderFieldsTooLarge,
    /// 501: a transfer coding other than `chunked`.
    NotImplemented,
}

impl RequestError {
    /// The response status for this error.
    pub fn status(self) -> u16 {
        match self {
            RequestError::BadRequest => 400,
            RequestError::ContentTooLarge => 413,
            RequestError::HeaderFieldsTooLarge => 431,
            RequestError::NotImplemented => 501,
        }
    }
}

/// How a request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (no `Content-Length`, or `Content-Length: 0`).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Where the codec stands in the request stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Expecting a request head.
    #[default]
    Head,
    /// Inside a `Content-Length` body with this many bytes to go.
    Length { left: u64 },
    /// Expecting a chunk-size line (after the CRLF that ends the previous chunk's data).
    ChunkSize { after_data: bool },
    /// Inside a chunk's data with this many bytes to go.
    ChunkData { left: u64 },
}

/// The HTTP/1.1 server codec: frames are [`Part`]s, items are [`Response`]s.
///
/// ```
/// use ringwire::codec::{http::{Http, Part}, Codec, Decoded};
/// let mut http = Http::default();
/// let wire = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\nHost: a\r\n\r\n";
/// let Decoded::Frame(Part::Head(req), n) = http.decode(wire, 4096).unwrap() else { panic!() };
/// assert_eq!((req.method(), req.target(), req.has_body()), ("POST", "/x", true));
/// let Decoded::Frame(body, m) = http.decode(&wire[n..], 4096).unwrap() else { panic!() };
/// assert_eq!(body, Part::Body { data: b"hi", last: true });
/// let Decoded::Frame(Part::Head(next), _) = http.decode(&wire[n + m..], 4096).unwrap() else {
///     panic!()
/// };
/// assert!(next.keep_alive() && !next.has_body());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Http {
    limits: Limits,
    state: State,
    /// Body bytes announced so far by the chunks of the current request.
    chunked_total: u64,
    /// Bytes of chunk extensions so far in the current request's body (bounded by
    /// `Limits::max_head`: they are not data, yet cost parsing).
    chunk_extensions: usize,
    error: Option<RequestError>,
}

impl Http {
    /// A codec with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Http {
            limits,
            ..Http::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Why the last `decode` failed, if it did: what `on_error` should answer.
    pub fn error(&self) -> Option<RequestError> {
        self.error
    }

    /// Whether a request body is being read (its head was delivered, its end not yet).
    pub fn in_body(&self) -> bool {
        self.state != State::Head
    }

    fn fail(&mut self, error: RequestError, why: &'static str) -> CodecError {
        self.error = Some(error);
        CodecError::Malformed(Cow::Borrowed(why))
    }

    fn too_large(&mut self, error: RequestError, len: u64, max: u64) -> CodecError {
        self.error = Some(error);
        CodecError::FrameTooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        }
    }
}

/// One frame of the request stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part<'a> {
    /// A request head. If the request has a body ([`Request::has_body`]), `Body` frames
    /// follow, the last marked `last`; otherwise the request is complete.
    Head(Request<'a>),
    /// Bytes of the current request's body, de-chunked, in order. `last`: the body ends here
    /// (for a chunked body, an empty frame for the last chunk and the trailers).
    Body {
        /// The bytes.
        data: &'a [u8],
        /// Whether the body is complete with this frame.
        last: bool,
    },
}

/// A request head, borrowed from the received bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    version: u8,
    /// The header lines, from the first field to the empty line that ends the head.
    fields: &'a [u8],
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

impl<'a> Request<'a> {
    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target, e.g. `/index.html?x=1`.
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The header fields in order: names as sent, values without surrounding whitespace.
    pub fn headers(&self) -> Headers<'a> {
        Headers { rest: self.fields }
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// How the body is delimited.
    pub fn body(&self) -> BodyKind {
        self.body
    }

    /// Whether `Body` frames follow.
    pub fn has_body(&self) -> bool {
        self.body != BodyKind::None
    }

    /// Whether the connection stays open after the response: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the client waits for `100 Continue` before sending the body.
    pub fn expects_continue(&self) -> bool {
        self.expect_continue && self.has_body()
    }

    /// What a response to this request must take into account (see [`Response::to`]).
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            keep_alive: self.keep_alive,
            http10: self.version == 0,
            head: self.method == "HEAD",
        }
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("version", &self.version)
            .field("body", &self.body)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// The header fields of a [`Request`].
#[derive(Clone, Debug)]
pub struct Headers<'a> {
    rest: &'a [u8],
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // httparse accepted these lines: `name:value`, each ending in CRLF or LF.
        let nl = self.rest.iter().position(|&b| b == b'\n')?;
        let line = &self.rest[..nl];
        self.rest = &self.rest[nl + 1..];
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        Some((name, trim(&line[colon + 1..])))
    }
}

/// Splits a comma-separated header value into trimmed, non-empty tokens.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

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
                    return Err(self.fail(RequestError::BadRequest, "repeated Content-Length"));
                }
                let v = h.value;
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                    return Err(self.fail(RequestError::BadRequest, "invalid Content-Length"));
                }
                // More than 18 digits is more than any limit: saturate, 413 follows.
                let n = v.iter().try_fold(0u64, |n, d| {
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                });
                f.content_length = Some(n.unwrap_or(u64::MAX));
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if f.transfer_encoding {
                    return Err(self.fail(RequestError::BadRequest, "repeated Transfer-Encoding"));
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

    fn decode_head<'a>(
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
                return Err(self.too_large(
                    RequestError::HeaderFieldsTooLarge,
                    len,
                    max_head as u64,
                ));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(self.fail(RequestError::HeaderFieldsTooLarge, "too many header fields"));
            }
            Err(e) => return Err(self.fail(RequestError::BadRequest, httparse_error(e))),
        };
        if has_bare_lf(&src[..len]) {
            return Err(self.fail(RequestError::BadRequest, "bare LF as a line ending"));
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Err(self.fail(RequestError::BadRequest, "incomplete request line"));
        };
        let f = self.framing(req.headers)?;
        if version == 1 && f.hosts != 1 || f.hosts > 1 {
            return Err(self.fail(RequestError::BadRequest, "missing or repeated Host"));
        }
        let body = if f.transfer_encoding {
            if f.content_length.is_some() {
                return Err(self.fail(
                    RequestError::BadRequest,
                    "Content-Length together with Transfer-Encoding",
                ));
            }
            if version == 0 {
                return Err(self.fail(RequestError::BadRequest, "Transfer-Encoding in HTTP/1.0"));
            }
            if !f.chunked {
                return Err(self.fail(
                    RequestError::NotImplemented,
                    "transfer coding other than chunked",
                ));
            }
            BodyKind::Chunked
        } else {
            match f.content_length {
                Some(n) if n > self.limits.max_body => {
                    return Err(self.too_large(
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
    fn decode_data<'a>(&mut self, src: &'a [u8], left: u64, chunked: bool) -> Decoded<Part<'a>> {
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
    fn decode_chunk<'a>(
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
                    return Err(
                        self.fail(RequestError::BadRequest, "chunk data not followed by CRLF")
                    )
                }
            }
        }
        let window = &src[pos..src.len().min(pos + MAX_CHUNK_LINE)];
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            return if window.len() == MAX_CHUNK_LINE {
                Err(self.fail(RequestError::BadRequest, "chunk-size line too long"))
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
            return Err(self.too_large(RequestError::ContentTooLarge, total, self.limits.max_body));
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
            return Err(self.fail(
                RequestError::BadRequest,
                "chunk-size line not ended by CRLF",
            ));
        };
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 15 {
            return Err(self.fail(RequestError::BadRequest, "invalid chunk size"));
        }
        let rest = trim(&line[digits..]);
        if !rest.is_empty() && rest[0] != b';' {
            return Err(self.fail(RequestError::BadRequest, "invalid chunk size"));
        }
        // Counted when the chunk is taken (a line may be parsed again while its data is
        // incomplete), checked now.
        let extensions = line.len() - digits;
        if self.chunk_extensions + extensions > self.limits.max_head {
            return Err(self.fail(RequestError::BadRequest, "chunk extensions over the limit"));
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
                Err(self.fail(RequestError::BadRequest, "bare LF as a line ending"))
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
                Err(self.too_large(RequestError::HeaderFieldsTooLarge, len, max as u64))
            }
            Err(e) => Err(self.fail(RequestError::BadRequest, httparse_error(e))),
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

impl Codec for Http {
    type Frame<'a> = Part<'a>;
    type Item = Response;

    #[inline]
    fn decode<'a>(
        &mut self,
        src: &'a [u8],
        max_frame: usize,
    ) -> Result<Decoded<Part<'a>>, CodecError> {
        match self.state {
            State::Head => self.decode_head(src, max_frame),
            State::Length { left } => Ok(self.decode_data(src, left, false)),
            State::ChunkData { left } => Ok(self.decode_data(src, left, true)),
            State::ChunkSize { after_data } => self.decode_chunk(src, after_data),
        }
    }

    fn encode(&mut self, item: &Response, dst: &mut Vec<u8>) -> Result<(), CodecError> {
        item.encode(dst)
    }
}

#[cfg(test)]
mod tests;
