//! The handler: what a user's service does with sessions and frames.

use crate::codec::Codec;
use crate::error::SessionError;
use crate::session::{CloseReason, Session};
use crate::timer::TimerId;

/// Callbacks for one session. Every method has a default body, so a handler overrides only
/// what it needs.
///
/// A handler lives per session: the server's factory makes one when a connection is accepted,
/// on the core that accepted it, and drops it when the session's slot is freed. Per-session
/// state (a parser's progress, authentication) is then plain fields, with no map lookup per
/// message. State shared by the sessions of a core is the core's per-core state (the builder's
/// `core_state`, reached through [`Session::core`] and the factory's [`CoreCtx`]); state
/// shared by all cores belongs behind an `Arc` captured by the factory.
///
/// [`CoreCtx`]: crate::CoreCtx
///
/// Callbacks run inline on the owning core, between the kernel's completions: a slow callback
/// stalls every session of that core. Keep blocking work (disk, locks held by other threads,
/// synchronous calls to other services) out of callbacks. There is not yet a way to hand a
/// result computed on another thread back to a session, so a handler must answer from what it
/// has on its core; a backend service is reached without blocking through an outbound
/// session of the same core: [`CoreCtx::connect`](crate::CoreCtx::connect) opens one with its
/// own codec and handler, which can complete the asking session's reserved reply
/// ([`Session::reserve`], [`Session::complete`]); [`Session::connect`] opens one of the
/// server's own protocol.
///
/// A panic in a callback is caught at the callback boundary; it closes that session only
/// (with [`CloseReason::Panic`]) and the core keeps serving.
pub trait Handler<C: Codec>: 'static {
    /// The session was accepted (a TLS session: and its handshake is done). Replies sent here
    /// are written at the end of the loop turn.
    ///
    /// A session that never opens still gets `on_close` (and `on_error` first if something
    /// failed): an outbound one whose connect failed, a TLS one whose handshake failed or timed
    /// out.
    fn on_open(&mut self, session: &mut Session<'_, C>) {
        let _ = session;
    }

    /// A whole frame arrived. `frame` may borrow from the kernel's receive buffer; it is valid
    /// for this call only.
    fn on_message(&mut self, session: &mut Session<'_, C>, frame: C::Frame<'_>) {
        let _ = (session, frame);
    }

    /// The session's tick fired (see [`Session::set_tick`]): heartbeats, periodic flushes.
    fn on_tick(&mut self, session: &mut Session<'_, C>) {
        let _ = session;
    }

    /// A one-shot timer set with [`Session::set_timer`] fired: delayed replies, retries,
    /// per-request deadlines. `id` is what `set_timer` returned. A timer cancelled first, or
    /// one of a session that closed, never fires.
    fn on_timer(&mut self, session: &mut Session<'_, C>, id: TimerId) {
        let _ = (session, id);
    }

    /// The server began draining for shutdown: it accepts no new connections and closes what
    /// is left at the drain deadline. The default closes this session as soon as it is idle
    /// ([`Session::close_when_idle`]): at once if no frame is half-received and no output is
    /// pending, else once the frame in progress is answered and its replies are written, as
    /// Go's `http.Server.Shutdown` and nginx do with idle keep-alive connections.
    ///
    /// Override it to send a goodbye frame first (then call `close_when_idle`), or to keep the
    /// session until a boundary the protocol knows about (and close it there). A session
    /// accepted from the listener's backlog during the drain hears this after its first input,
    /// so the request it came with is served. A session is idle only at a message
    /// boundary (`Codec::at_boundary`): an HTTP request whose body is still arriving is not,
    /// and a `Raw` stream never is (served until its peer closes or the deadline passes).
    ///
    /// The default leaves outbound sessions (`Session::is_outbound`) alone: a request they sent
    /// may still await its response. A handler that answers later than the callback that got
    /// the request (from `on_tick` or `on_timer`, say) should override this and close when its
    /// answer is out: pending timers do not make a session busy, so the default closes a
    /// session waiting only on its timers as idle, and they never fire
    /// ([`Session::pending_timers`] says whether any are pending). Timers never keep a
    /// session past the drain deadline.
    ///
    /// As with any server that closes idle keep-alive connections, a request the peer sends
    /// just as the session is closed can meet the close: clients of such protocols retry on a
    /// fresh connection.
    fn on_drain(&mut self, session: &mut Session<'_, C>) {
        if !session.is_outbound() {
            session.close_when_idle();
        }
    }

    /// The session closed. Output sent from here is discarded.
    fn on_close(&mut self, session: &mut Session<'_, C>, reason: CloseReason) {
        let _ = (session, reason);
    }

    /// Something went wrong in this session; it is closed right after.
    fn on_error(&mut self, session: &mut Session<'_, C>, error: &SessionError) {
        let _ = (session, error);
    }
}
