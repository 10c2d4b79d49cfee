//! The typed `user_data` carried by every submission and its completion.
//!
//! Layout of the 64 bits: `op` (8) | `generation` (24) | `slot` (32). A completion whose
//! generation differs from its slot's current one belongs to a session that has gone; it only
//! releases what it carries. Operations of the engine itself (accept, wake-up) use the
//! reserved slot [`UserData::ENGINE_SLOT`], which no session can have; the one exception is
//! [`Op::MsgRing`], whose slot field names the core it rings (see [`UserData::msg_ring`]).

/// What an operation is, in the top byte of its `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    /// Multishot accept on the core's listener (engine).
    Accept = 1,
    /// Multishot receive of a session.
    Recv = 2,
    /// A send or sendmsg of a session.
    Send = 3,
    /// Cancellation of a session's operations.
    Cancel = 4,
    /// Close of a session's descriptor.
    Close = 5,
    /// Read of the core's wake-up eventfd (engine).
    Wake = 6,
    /// Cancellation of the accept, on shutdown (engine).
    AcceptCancel = 7,
    /// Cancellation of the wake-up read, on exit (engine).
    WakeCancel = 8,
    /// Connect of an outbound session.
    Connect = 9,
    /// This core's IORING_OP_MSG_RING to a sleeping core, whose index is in the slot field.
    /// Submitted with `IOSQE_CQE_SKIP_SUCCESS`: only a failure completes here (engine).
    MsgRing = 10,
    /// The completion another core's MSG_RING posts on this ring: a pure wake-up, carrying
    /// nothing (engine).
    Doorbell = 11,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Cancel,
            5 => Op::Close,
            6 => Op::Wake,
            7 => Op::AcceptCancel,
            8 => Op::WakeCancel,
            9 => Op::Connect,
            10 => Op::MsgRing,
            11 => Op::Doorbell,
            _ => return None,
        })
    }
}

/// `op | generation | slot`, packed into the 64 bits the kernel hands back untouched.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserData(u64);

impl UserData {
    const SLOT_BITS: u32 = 32;
    const GEN_BITS: u32 = 24;
    /// Generations wrap at this mask.
    pub(crate) const GEN_MASK: u32 = (1 << Self::GEN_BITS) - 1;
    /// The slot of the engine's own operations; never a session's.
    pub(crate) const ENGINE_SLOT: u32 = u32::MAX;

    pub(crate) const fn new(op: Op, slot: u32, generation: u32) -> Self {
        let generation = (generation & Self::GEN_MASK) as u64;
        UserData(
            (op as u64) << (Self::SLOT_BITS + Self::GEN_BITS)
                | generation << Self::SLOT_BITS
                | slot as u64,
        )
    }

    /// An operation of the engine itself, not of a session.
    pub(crate) const fn engine(op: Op) -> Self {
        Self::new(op, Self::ENGINE_SLOT, 0)
    }

    /// This core's MSG_RING to core `target`: the target rides in the slot field, so that a
    /// failed doorbell names the core to ring another way.
    pub(crate) const fn msg_ring(target: usize) -> Self {
        Self::new(Op::MsgRing, target as u32, 0)
    }

    pub(crate) const fn from_raw(raw: u64) -> Self {
        UserData(raw)
    }

    pub(crate) const fn raw(self) -> u64 {
        self.0
    }

    /// The operation, or `None` for a value the engine never submitted.
    pub(crate) fn op(self) -> Option<Op> {
        Op::from_u8((self.0 >> (Self::SLOT_BITS + Self::GEN_BITS)) as u8)
    }

    pub(crate) const fn slot(self) -> u32 {
        self.0 as u32
    }

    pub(crate) const fn generation(self) -> u32 {
        ((self.0 >> Self::SLOT_BITS) as u32) & Self::GEN_MASK
    }
}

impl std::fmt::Debug for UserData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserData")
            .field("op", &self.op())
            .field("slot", &self.slot())
            .field("generation", &self.generation())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let ops: Vec<Op> = (0..=u8::MAX).filter_map(Op::from_u8).collect();
        assert_eq!(ops.len(), 11, "every op, engine ones included: {ops:?}");
        for op in ops {
            for slot in [0, 1, 4095, 1 << 20, u32::MAX - 1, u32::MAX] {
                for generation in [0, 1, 77, UserData::GEN_MASK] {
                    let ud = UserData::from_raw(UserData::new(op, slot, generation).raw());
                    assert_eq!(ud.op(), Some(op));
                    assert_eq!(ud.slot(), slot);
                    assert_eq!(ud.generation(), generation);
                }
            }
        }
    }

    #[test]
    fn generation_wraps_without_touching_other_fields() {
        let ud = UserData::new(Op::Send, 9, UserData::GEN_MASK + 3);
        assert_eq!(ud.generation(), 2);
        assert_eq!(ud.slot(), 9);
        assert_eq!(ud.op(), Some(Op::Send));
    }

    #[test]
    fn unknown_values_decode_to_no_op() {
        assert_eq!(UserData::from_raw(0).op(), None);
        assert_eq!(UserData::from_raw(u64::MAX).op(), None);
    }

    #[test]
    fn engine_ops_use_the_reserved_slot() {
        let ud = UserData::engine(Op::Accept);
        assert_eq!(ud.slot(), UserData::ENGINE_SLOT);
        assert_eq!(ud.op(), Some(Op::Accept));
    }
}
