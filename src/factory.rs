//! How a server or client makes a session's handler: from a closure taking nothing, or one
//! taking the core's context ([`CoreCtx`]), so that handlers can share per-core state.

use ringwire_runtime::CoreCtx;

/// Makes one handler per session, on the core that owns the session. Implemented for
/// closures and functions of either shape:
///
/// - `|| Handler` (or `Handler::default`): handlers that need nothing from their core;
/// - `|ctx: &mut CoreCtx| Handler`: the core's index and the per-core state the builder's
///   `core_state` made, for handlers that keep a handle on it (the state itself is also
///   reachable from every callback through `Session::core`).
///
/// The `Args` parameter only tells the two shapes apart; it is inferred.
pub trait MakeHandler<H, Args>: Send + Sync + 'static {
    /// A handler for a new session on the core `ctx` describes.
    fn make(&self, ctx: &mut CoreCtx) -> H;
}

impl<F, H> MakeHandler<H, ()> for F
where
    F: Fn() -> H + Send + Sync + 'static,
{
    fn make(&self, _: &mut CoreCtx) -> H {
        self()
    }
}

impl<F, H> MakeHandler<H, &mut CoreCtx> for F
where
    F: Fn(&mut CoreCtx) -> H + Send + Sync + 'static,
{
    fn make(&self, ctx: &mut CoreCtx) -> H {
        self(ctx)
    }
}

/// A factory as the engine takes it.
pub(crate) type Factory<H> = Box<dyn Fn(&mut CoreCtx) -> H + Send + Sync>;

pub(crate) fn boxed<H: 'static, A>(f: impl MakeHandler<H, A>) -> Factory<H> {
    Box::new(move |ctx: &mut CoreCtx| f.make(ctx))
}
