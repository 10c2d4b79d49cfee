//! The per-session table both drivers keep: one slot per session key of the core (the core's
//! slab key), with a generation that changes each time the slot is reused, so a completion or
//! readiness token naming a session that has gone is recognised; and the count of slots in use,
//! which says when the driver is quiescent.
//!
//! Invariant: the table never reallocates (its capacity is the core's session limit), so what a
//! slot holds keeps its address while the kernel may read it (a connect's address).

use std::ops::{Index, IndexMut};

use crate::user_data::UserData;

/// What a driver keeps per session.
pub(crate) trait DriverSlot {
    /// A free slot.
    fn new() -> Self;
    /// The completion or token with this generation names the slot's session as it is now.
    fn is_current(&self, generation: u32) -> bool;
}

/// The generation after `generation`, as it fits a `UserData`.
pub(crate) fn next_generation(generation: u32) -> u32 {
    (generation + 1) & UserData::GEN_MASK
}

pub(crate) struct SlotTable<T> {
    slots: Vec<T>,
    live: usize,
}

impl<T: DriverSlot> SlotTable<T> {
    /// A table for at most `max_sessions` sessions; it never grows past that.
    pub(crate) fn with_capacity(max_sessions: usize) -> Self {
        SlotTable {
            slots: Vec::with_capacity(max_sessions),
            live: 0,
        }
    }

    /// The slot for a session being opened in `slot` (created on first use), counted in use
    /// until [`SlotTable::release`].
    pub(crate) fn open(&mut self, slot: u32) -> &mut T {
        let idx = slot as usize;
        if idx == self.slots.len() {
            // Within capacity: pushing never moves the slots.
            assert!(idx < self.slots.capacity(), "more sessions than configured");
            self.slots.push(T::new());
        }
        self.live += 1;
        &mut self.slots[idx]
    }

    /// A slot is free again.
    pub(crate) fn release(&mut self) {
        self.live -= 1;
    }

    /// Slots in use (opened and not yet released).
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The slot, if `generation` names its session as it is now.
    pub(crate) fn current_mut(&mut self, slot: u32, generation: u32) -> Option<&mut T> {
        self.slots
            .get_mut(slot as usize)
            .filter(|s| s.is_current(generation))
    }

    /// Whether `generation` names the session of `slot` as it is now.
    pub(crate) fn is_current(&self, slot: u32, generation: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.is_current(generation))
    }

    /// Every slot ever used, free or not.
    pub(crate) fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.slots.iter_mut()
    }

    /// Slots ever used (the highest key plus one).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

impl<T> Index<usize> for SlotTable<T> {
    type Output = T;
    fn index(&self, idx: usize) -> &T {
        &self.slots[idx]
    }
}

impl<T> IndexMut<usize> for SlotTable<T> {
    fn index_mut(&mut self, idx: usize) -> &mut T {
        &mut self.slots[idx]
    }
}
