//! Stock handlers.

use crate::codec::Codec;
use crate::{Handler, Session};

/// Sends every frame back as it came: with [`Raw`](crate::codec::Raw) every byte, with
/// [`Len32`](crate::codec::Len32) every frame, prefix included.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl<C> Handler<C> for Echo
where
    C: for<'a> Codec<Frame<'a> = &'a [u8], Item = [u8]>,
{
    #[inline]
    fn on_message(&mut self, session: &mut Session<'_, C>, frame: &[u8]) {
        if let Err(e) = session.send(frame) {
            log::warn!("ringwire: echo of {} bytes failed: {e}", frame.len());
            session.close();
        }
    }
}
