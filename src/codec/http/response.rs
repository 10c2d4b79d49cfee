//! HTTP/1.1 responses: what the server writes, and the cached `Date` value it writes with
//! each response.
//!
//! Invariant: the `Date` value is per thread and changes only in [`refresh_date`], which the
//! server's per-core tick calls; encoding a response never reads the clock.

use std::borrow::Cow;
use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::RequestError;
use crate::codec::CodecError;

/// What a response must take into account of its request: whether the connection stays open,
/// whether the client speaks HTTP/1.0 (which needs `Connection: keep-alive` said), and whether
/// it asked with `HEAD` (no body sent). Small and `Copy`, to keep between a request's head
/// and the end of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplyTo {
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// The request was HTTP/1.0.
    pub http10: bool,
    /// The request was `HEAD`.
    pub head: bool,
}

/// A response. The codec writes the status line, `Server`, the cached `Date` (see
/// [`refresh_date`]), `Content-Type`, `Content-Length`, the extra headers, and `Connection`
/// where needed, then the body.
///
/// ```
/// use ringwire::codec::{http::{Http, Response}, Codec};
/// let mut out = Vec::new();
/// Http::default().encode(&Response::new(200, "hi").close(), &mut out).unwrap();
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.starts_with("HTTP/1.1 200 OK\r\nServer: ringwire\r\nDate: "));
/// assert!(text.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\nhi"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Response {
    /// The status code (100 to 999).
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<&'static str>,
    /// More header fields, written as they are.
    pub headers: &'static [(&'static str, &'static str)],
    /// The body (a reference count for shared or static bytes, not a copy).
    pub body: Bytes,
    /// Send `Connection: close`; the handler closes the session after sending it.
    pub close: bool,
    /// Send `Connection: keep-alive` (for HTTP/1.0 clients that asked for it).
    pub keep_alive_header: bool,
    /// Send the headers of the body but not the body (`HEAD`).
    pub omit_body: bool,
}

impl Response {
    /// A response with `status` and `body`, kept alive, no content type.
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Response {
            status,
            content_type: None,
            headers: &[],
            body: body.into(),
            close: false,
            keep_alive_header: false,
            omit_body: false,
        }
    }

    /// Sets `Content-Type`.
    pub fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }

    /// Sets the extra header fields.
    pub fn headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = headers;
        self
    }

    /// Marks the response as the last on its connection (`Connection: close`).
    pub fn close(mut self) -> Self {
        self.close = true;
        self.keep_alive_header = false;
        self
    }

    /// Fits the response to its request: `Connection` as the client needs it, no body for
    /// `HEAD`.
    pub fn to(mut self, request: ReplyTo) -> Self {
        self.close = !request.keep_alive;
        self.keep_alive_header = request.keep_alive && request.http10;
        self.omit_body = request.head;
        self
    }

    /// Appends the encoding to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), CodecError> {
        if !(100..=999).contains(&self.status) {
            return Err(CodecError::Encode(Cow::Borrowed("status out of 100..=999")));
        }
        // 1xx, 204 and 304 responses have neither body nor Content-Length.
        let bodiless = self.status < 200 || self.status == 204 || self.status == 304;
        dst.reserve(160 + self.body.len());
        dst.extend_from_slice(b"HTTP/1.1 ");
        push_u64(dst, u64::from(self.status));
        dst.push(b' ');
        dst.extend_from_slice(reason(self.status).as_bytes());
        dst.extend_from_slice(b"\r\nServer: ringwire\r\nDate: ");
        dst.extend_from_slice(&date());
        if let Some(ct) = self.content_type {
            dst.extend_from_slice(b"\r\nContent-Type: ");
            dst.extend_from_slice(ct.as_bytes());
        }
        if !bodiless {
            dst.extend_from_slice(b"\r\nContent-Length: ");
            push_u64(dst, self.body.len() as u64);
        }
        for (name, value) in self.headers {
            dst.extend_from_slice(b"\r\n");
            dst.extend_from_slice(name.as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value.as_bytes());
        }
        if self.close {
            dst.extend_from_slice(b"\r\nConnection: close");
        } else if self.keep_alive_header {
            dst.extend_from_slice(b"\r\nConnection: keep-alive");
        }
        dst.extend_from_slice(b"\r\n\r\n");
        if !self.omit_body && !bodiless {
            dst.extend_from_slice(&self.body);
        }
        Ok(())
    }
}

fn push_u64(dst: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&buf[i..]);
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The response to a rejected request: the error's status, a one-line text body, and
/// `Connection: close` (the session closes after it).
pub fn error_response(error: RequestError) -> Response {
    let body: &'static str = match error {
        RequestError::BadRequest => "Bad Request\n",
        RequestError::ContentTooLarge => "Content Too Large\n",
        RequestError::HeaderFieldsTooLarge => "Request Header Fields Too Large\n",
        RequestError::NotImplemented => "Not Implemented\n",
    };
    Response::new(error.status(), body)
        .content_type("text/plain")
        .close()
}

/// What a server sends when a client waits for it before sending a body
/// ([`Request::expects_continue`](super::Request::expects_continue)); written raw, it is not
/// a response of its own.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

thread_local! {
    /// This thread's cached `Date` value.
    static DATE: Cell<[u8; 29]> = Cell::new(imf_fixdate(SystemTime::now()));
}

/// Refreshes this thread's cached `Date` value. Call it from the server's per-core tick
/// (e.g. every 500 ms), so that no request pays for reading and formatting the clock.
pub fn refresh_date() {
    DATE.with(|d| d.set(imf_fixdate(SystemTime::now())));
}

/// This thread's cached `Date` value (taken on first use, then at each [`refresh_date`]).
pub fn date() -> [u8; 29] {
    DATE.with(Cell::get)
}

/// Formats `t` as an HTTP date (IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn imf_fixdate(t: SystemTime) -> [u8; 29] {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (hh, mm, ss) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]);
    let two = |out: &mut [u8; 29], at: usize, v: u64| {
        out[at] = b'0' + (v / 10 % 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut out, 5, day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out, 12, year / 100);
    two(&mut out, 14, year % 100);
    two(&mut out, 17, hh);
    two(&mut out, 20, mm);
    two(&mut out, 23, ss);
    out
}
