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
