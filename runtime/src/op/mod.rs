//! One file per io_uring operation the engine submits: how its entry is built and how its
//! completion reads.
//!
//! Building an entry is safe; it only describes the operation. Submitting it is the unsafe
//! step ([`crate::ring::Ring::push`]), whose caller keeps alive what the entry points to.

pub(crate) mod accept;
pub(crate) mod cancel;
pub(crate) mod close;
pub(crate) mod connect;
pub(crate) mod msg_ring;
pub(crate) mod read;
pub(crate) mod recv;
pub(crate) mod send;
