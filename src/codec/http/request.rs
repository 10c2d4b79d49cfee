//! The frames the HTTP codec produces: a request's head, borrowed from the received bytes,
//! and pieces of its body.

use std::fmt;

use super::{BodyKind, ReplyTo};

/// One frame of the request stream.
///
/// Deliberately not `#[non_exhaustive]`: a handler must deal with every part of a request,
/// and a new kind of part would change what every handler has to do, so adding one is a
/// breaking change that should fail to compile.
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
    pub(super) method: &'a str,
    pub(super) target: &'a str,
    pub(super) version: u8,
    /// The header lines, from the first field to the empty line that ends the head.
    pub(super) fields: &'a [u8],
    pub(super) body: BodyKind,
    pub(super) keep_alive: bool,
    pub(super) expect_continue: bool,
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

    /// What a response to this request must take into account (see [`Response::to`](super::Response::to)).
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

pub(super) fn trim(mut s: &[u8]) -> &[u8] {
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
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}
