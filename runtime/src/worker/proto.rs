//! A session's protocol: its codec and its handler. Accepted sessions (and those opened by
//! `Session::connect`) have the server's own types, held inline ([`Proto::Main`]); a session
//! opened by `CoreCtx::connect` speaks another protocol with a handler of another type, behind
//! one object-safe trait ([`Proto::Other`]), so that one worker holds sessions of any types.
//!
//! Both run the same generic code: [`feed`] decodes a session's input into `on_message` calls,
//! and [`deliver`] runs any other callback; [`Typed`] instantiates them for another codec and
//! handler behind [`ErasedProto`]. What a callback needs besides codec and handler is one
//! non-generic [`Parts`].
//!
//! Invariant: the main path stays monomorphic (one branch on the variant per received buffer or
//! event, no virtual call and no allocation per frame); a session of another protocol costs one
//! virtual call per received buffer or per event, not per frame. Callers catch panics: nothing
//! here does.

use std::time::Instant;

use crate::codec::{Codec, CodecError, Fed, Flow, FrameReader};
use crate::error::SessionError;
use crate::handler::Handler;
use crate::latency::Recorder;
use crate::pool::BufPool;
use crate::session::{CloseAsk, CloseReason, Parts, Session};
use crate::timer::TimerId;

/// A callback other than `on_message`, with what it takes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event<'e> {
    Open,
    Close(CloseReason),
    Error(&'e SessionError),
    Timer(TimerId),
    Drain,
    Tick,
}

impl Event<'_> {
    /// The callback's name, for the panic it may raise.
    pub(crate) fn callback(&self) -> &'static str {
        match self {
            Event::Open => "on_open",
            Event::Close(_) => "on_close",
            Event::Error(_) => "on_error",
            Event::Timer(_) => "on_timer",
            Event::Drain => "on_drain",
            Event::Tick => "on_tick",
        }
    }
}

/// The core's bounds that decoding checks after each frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_frame: usize,
    pub(crate) high_water: usize,
    pub(crate) max_output: usize,
}

/// Decodes a session's input and hands each frame to `on_message`: `data` just received, or
/// (`None`) the input held while reading was paused. Decoding pauses as soon as the session's
/// output passes the high-water mark (or its bound of outstanding replies), holding the rest of
/// the input, so one receive cannot queue more than one frame's replies beyond the mark; it
/// stops once the session closes or passes its output limit.
#[inline]
pub(crate) fn feed<C: Codec, H: Handler<C>>(
    codec: &mut C,
    handler: &mut H,
    reader: &mut FrameReader,
    parts: Parts<'_>,
    data: Option<&[u8]>,
    limits: Limits,
    mut handling: Option<&mut Recorder>,
) -> Result<Fed, CodecError> {
    let Parts {
        state,
        pool,
        stats,
        connects,
        core,
        now,
    } = parts;
    let on_frame = |codec: &mut C, pool: &mut BufPool, frame: C::Frame<'_>| {
        let mut session = Session {
            codec,
            state: &mut *state,
            pool,
            stats,
            connects: &mut *connects,
            core: &mut *core,
            now,
        };
        match handling.as_deref_mut() {
            Some(rec) => {
                let start = Instant::now();
                handler.on_message(&mut session, frame);
                rec.record_since(start);
            }
            None => handler.on_message(&mut session, frame),
        }
        let out = &session.state.out;
        if session.state.close == CloseAsk::AfterFlush || out.len() > limits.max_output {
            Flow::Stop
        } else if out.len() > limits.high_water || out.outstanding() >= session.state.max_replies {
            Flow::Pause
        } else {
            Flow::Continue
        }
    };
    match data {
        Some(data) => reader.feed(codec, data, limits.max_frame, pool, on_frame),
        None => reader.resume(codec, limits.max_frame, pool, on_frame),
    }
}

/// Runs the handler's callback for `event`.
#[inline]
pub(crate) fn deliver<C: Codec, H: Handler<C>>(
    codec: &mut C,
    handler: &mut H,
    event: Event<'_>,
    mut parts: Parts<'_>,
) {
    let session = &mut parts.session(codec);
    match event {
        Event::Open => handler.on_open(session),
        Event::Close(reason) => handler.on_close(session, reason),
        Event::Error(error) => handler.on_error(session, error),
        Event::Timer(id) => handler.on_timer(session, id),
        Event::Drain => handler.on_drain(session),
        Event::Tick => handler.on_tick(session),
    }
}

/// A codec and handler of any types, as the worker drives them: [`feed`] and [`deliver`]
/// behind one virtual call.
pub(crate) trait ErasedProto {
    /// [`feed`] with this protocol's codec and handler.
    fn feed(
        &mut self,
        reader: &mut FrameReader,
        parts: Parts<'_>,
        data: Option<&[u8]>,
        limits: Limits,
        handling: Option<&mut Recorder>,
    ) -> Result<Fed, CodecError>;

    /// [`deliver`] with this protocol's codec and handler.
    fn event(&mut self, event: Event<'_>, parts: Parts<'_>);

    /// The codec's `at_boundary`.
    fn at_boundary(&self) -> bool;
}

/// A codec and a handler of known types, to be held as an [`ErasedProto`].
pub(crate) struct Typed<C, H> {
    codec: C,
    handler: H,
}

impl<C, H> Typed<C, H> {
    pub(crate) fn new(codec: C, handler: H) -> Self {
        Typed { codec, handler }
    }
}

impl<C: Codec, H: Handler<C>> ErasedProto for Typed<C, H> {
    fn feed(
        &mut self,
        reader: &mut FrameReader,
        parts: Parts<'_>,
        data: Option<&[u8]>,
        limits: Limits,
        handling: Option<&mut Recorder>,
    ) -> Result<Fed, CodecError> {
        feed(
            &mut self.codec,
            &mut self.handler,
            reader,
            parts,
            data,
            limits,
            handling,
        )
    }

    fn event(&mut self, event: Event<'_>, parts: Parts<'_>) {
        deliver(&mut self.codec, &mut self.handler, event, parts)
    }

    fn at_boundary(&self) -> bool {
        self.codec.at_boundary()
    }
}

/// A session's codec and handler: the server's own types inline, or another protocol's behind
/// [`ErasedProto`].
pub(crate) enum Proto<C, H> {
    /// The server's codec and a handler from its factory: the monomorphic main path.
    Main { codec: C, handler: H },
    /// Another protocol (an outbound session opened by `CoreCtx::connect`).
    Other(Box<dyn ErasedProto>),
}

impl<C: Codec, H: Handler<C>> Proto<C, H> {
    /// [`feed`] with this session's codec and handler.
    #[inline]
    pub(crate) fn feed(
        &mut self,
        reader: &mut FrameReader,
        parts: Parts<'_>,
        data: Option<&[u8]>,
        limits: Limits,
        handling: Option<&mut Recorder>,
    ) -> Result<Fed, CodecError> {
        match self {
            Proto::Main { codec, handler } => {
                feed(codec, handler, reader, parts, data, limits, handling)
            }
            Proto::Other(proto) => proto.feed(reader, parts, data, limits, handling),
        }
    }

    /// [`deliver`] with this session's codec and handler.
    pub(crate) fn event(&mut self, event: Event<'_>, parts: Parts<'_>) {
        match self {
            Proto::Main { codec, handler } => deliver(codec, handler, event, parts),
            Proto::Other(proto) => proto.event(event, parts),
        }
    }

    /// Whether the codec is at a message boundary.
    pub(crate) fn at_boundary(&self) -> bool {
        match self {
            Proto::Main { codec, .. } => codec.at_boundary(),
            Proto::Other(proto) => proto.at_boundary(),
        }
    }
}
