//! The http example's service: routes and the per-session handler. The example's `main` and
//! the integration tests (`tests/http.rs`) both build servers from this file.
//!
//! Routes: `GET /` (and `HEAD /`) answer a small fixed body; `POST /` and `PUT /` read their
//! body (Content-Length or chunked), discard it, and answer how many bytes it had; other
//! methods on `/` get 405, other paths 404. A rejected request gets the codec's status (400,
//! 413, 431, 501) with `Connection: close`, and only its connection closes.
//!
//! Every response follows its request's connection semantics (keep-alive by default in
//! HTTP/1.1, only on request in HTTP/1.0, `Connection: close` honoured). While the server
//! drains for shutdown, each response says `Connection: close` and its connection closes.

use bytes::Bytes;
use ringwire::codec::http::{self, Http, Part, ReplyTo, RequestError, Response};
use ringwire::{Handler, Session, SessionError};

/// The body of `GET /`.
pub const HELLO: &[u8] = b"Hello, World!";

/// What a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Hello,
    Discard,
    MethodNotAllowed,
    NotFound,
}

fn route(method: &str, target: &str) -> Route {
    let path = target.split('?').next().unwrap_or(target);
    match (path, method) {
        ("/", "GET" | "HEAD") => Route::Hello,
        ("/", "POST" | "PUT") => Route::Discard,
        ("/", _) => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// A request whose body is being read.
#[derive(Clone, Copy, Debug)]
struct Pending {
    route: Route,
    reply_to: ReplyTo,
    body_bytes: u64,
}

/// One session's handler.
#[derive(Debug, Default)]
pub struct Web {
    pending: Option<Pending>,
}

impl Web {
    fn respond(&mut self, session: &mut Session<'_, Http>, p: Pending) {
        let response = match p.route {
            Route::Hello => {
                Response::new(200, Bytes::from_static(HELLO)).content_type("text/plain")
            }
            Route::Discard => Response::new(200, format!("discarded {} bytes\n", p.body_bytes))
                .content_type("text/plain"),
            Route::MethodNotAllowed => Response::new(405, "Method Not Allowed\n")
                .content_type("text/plain")
                .headers(&[("Allow", "GET, HEAD, POST, PUT")]),
            Route::NotFound => Response::new(404, "Not Found\n").content_type("text/plain"),
        };
        let mut response = response.to(p.reply_to);
        if session.is_draining() {
            response = response.close();
        }
        if let Err(e) = session.send(&response) {
            log::warn!("http: cannot encode a response: {e}");
            session.close();
        }
        if response.close {
            session.close();
        }
    }
}

impl Handler<Http> for Web {
    #[inline]
    fn on_message(&mut self, session: &mut Session<'_, Http>, part: Part<'_>) {
        match part {
            Part::Head(req) => {
                let p = Pending {
                    route: route(req.method(), req.target()),
                    reply_to: req.reply_to(),
                    body_bytes: 0,
                };
                if !req.has_body() {
                    self.respond(session, p);
                    return;
                }
                if req.expects_continue() {
                    session.write(http::CONTINUE);
                }
                self.pending = Some(p);
            }
            Part::Body { data, last } => {
                let Some(p) = self.pending.as_mut() else {
                    debug_assert!(false, "a body without a head");
                    return;
                };
                p.body_bytes += data.len() as u64;
                if last {
                    let p = *p;
                    self.pending = None;
                    self.respond(session, p);
                }
            }
        }
    }

    fn on_error(&mut self, session: &mut Session<'_, Http>, error: &SessionError) {
        if let SessionError::Codec { error, .. } = error {
            let why = error
                .downcast_ref::<http::Rejection>()
                .map_or(RequestError::BadRequest, |r| r.error);
            // The engine writes this, then closes the session.
            let _ = session.send(&http::error_response(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use ringwire::codec::http::{Http, Limits};
    use ringwire::testing::Harness;
    use ringwire::CloseReason;

    use super::Web;

    fn web() -> Harness<Http, Web> {
        Harness::new(Http::default(), Web::default())
    }

    /// The status lines of the responses in `out`, in order (a body may run into the next
    /// status line: the bodies here hold no "HTTP/").
    fn statuses(out: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(out);
        let starts = text.match_indices("HTTP/1.").map(|(i, _)| &text[i..]);
        starts
            .map(|s| s[..s.find("\r\n").unwrap_or(s.len())].to_owned())
            .collect()
    }

    /// Pipelined requests, bodies included, get the same responses however the bytes arrive.
    #[test]
    fn pipelined_requests_answer_the_same_at_every_split() {
        let wire: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
            GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n";
        let whole = web().feed(wire);
        assert_eq!(
            statuses(&whole),
            [
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 404 Not Found"
            ]
        );
        assert!(String::from_utf8_lossy(&whole).contains("discarded 3 bytes"));
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut t = web();
                let mut out = Vec::new();
                for part in [&wire[..a], &wire[a..b], &wire[b..]] {
                    out.extend(t.feed(part));
                }
                assert_eq!(out, whole, "split at {a} and {b}");
            }
        }
    }

    /// The codec's rejection reaches `on_error`, which answers with its status and closes.
    #[test]
    fn a_rejected_request_gets_its_status_and_closes() {
        let mut t = web();
        let out = t.feed(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(statuses(&out), ["HTTP/1.1 400 Bad Request"]);
        assert!(String::from_utf8_lossy(&out).contains("Connection: close\r\n"));
        assert_eq!(t.closed(), Some(CloseReason::CodecError));

        let mut t = Harness::new(
            Http::with_limits(Limits::default().with_max_body(10)),
            Web::default(),
        );
        let out = t.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n");
        assert_eq!(statuses(&out), ["HTTP/1.1 413 Content Too Large"]);
        assert_eq!(t.errors().len(), 1);
        assert!(t.errors()[0].contains("413"), "{:?}", t.errors());
    }

    #[test]
    fn connection_close_is_honoured() {
        let mut t = web();
        let out =
            t.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n");
        assert_eq!(statuses(&out), ["HTTP/1.1 200 OK"]);
        assert_eq!(t.closed(), Some(CloseReason::Local));
    }
}
