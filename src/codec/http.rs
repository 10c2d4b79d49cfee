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
//! `NeedMore` decode the same way. An error is a [`Rejection`] (what to answer, and why)
//! inside [`CodecError::Custom`]: the handler's `on_error` gets it back and answers with
//! [`error_response`]; the engine then closes the session.
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

use super::{Codec, CodecError, Decoded};

mod parse;
mod request;
mod response;

pub use request::{Headers, Part, Request};
pub use response::{
    date, error_response, imf_fixdate, reason, refresh_date, ReplyTo, Response, CONTINUE,
};

/// Most header fields in a request head (and in a chunked body's trailers).
pub const MAX_HEADERS: usize = 64;

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 1024;

/// Limits on one request. The server's maximum frame size also caps the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

impl Limits {
    /// These limits with `max_head` changed.
    pub fn with_max_head(mut self, bytes: usize) -> Self {
        self.max_head = bytes;
        self
    }

    /// These limits with `max_body` changed.
    pub fn with_max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }
}

/// Why a request was rejected; [`status`](RequestError::status) is what the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

/// The HTTP codec's own error: what to answer ([`RequestError`]) and why. `decode` returns it
/// inside [`CodecError::Custom`], so the handler's `on_error` gets it back with
/// [`CodecError::downcast_ref`] and answers with [`error_response`]:
///
/// ```
/// use ringwire::codec::http::{error_response, Http, Rejection, RequestError};
/// use ringwire::{Handler, Session, SessionError};
///
/// struct Web;
/// impl Handler<Http> for Web {
///     fn on_error(&mut self, session: &mut Session<'_, Http>, error: &SessionError) {
///         if let SessionError::Codec { error, .. } = error {
///             let why = error
///                 .downcast_ref::<Rejection>()
///                 .map_or(RequestError::BadRequest, |r| r.error);
///             let _ = session.send(&error_response(why));
///         }
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// What the server answers.
    pub error: RequestError,
    /// Why, in words, for logs.
    pub detail: Cow<'static, str>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.error.status();
        write!(f, "{status} {}: {}", reason(status), self.detail)
    }
}

impl std::error::Error for Rejection {}

/// The codec's error for `error`, because of `why`. Built only when a request is rejected.
fn fail(error: RequestError, why: &'static str) -> CodecError {
    CodecError::custom(Rejection {
        error,
        detail: Cow::Borrowed(why),
    })
}

/// The codec's error for a head, trailer section or body of `len` bytes over `max`.
fn too_large(error: RequestError, len: u64, max: u64) -> CodecError {
    let what = match error {
        RequestError::ContentTooLarge => "body",
        _ => "header section",
    };
    CodecError::custom(Rejection {
        error,
        detail: Cow::Owned(format!("{what} of {len} bytes over the limit of {max}")),
    })
}

/// How a request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

    /// Whether a request body is being read (its head was delivered, its end not yet).
    pub fn in_body(&self) -> bool {
        self.state != State::Head
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

    /// Between requests only: a request whose head was taken and whose body is still to come
    /// is not at a boundary, so a drain does not close its session.
    fn at_boundary(&self) -> bool {
        matches!(self.state, State::Head)
    }
}

#[cfg(test)]
mod tests;
