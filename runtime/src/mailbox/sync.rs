//! The synchronisation primitives the mailbox is built on: std's, or loom's when the crate's
//! unit tests are built with `--cfg loom` (the model test in `loom_tests.rs`). Everything in
//! the mailbox that two threads touch goes through this module, so the model checks exactly
//! the code that runs.

#[cfg(all(test, loom))]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering},
    sync::Arc,
};

#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicUsize, Ordering},
    Arc,
};

/// `std::cell::UnsafeCell` with loom's access API (`with`, `with_mut`), so one body of code
/// compiles against both.
#[cfg(not(all(test, loom)))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(all(test, loom)))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Keeps a value on cache lines of its own, so that the index one side writes does not share a
/// line with the index the other side writes (false sharing would make every push and pop
/// move a line between cores). 128 bytes: x86 prefetches lines in adjacent pairs, and some
/// ARM parts have 128-byte lines (crossbeam's `CachePadded` uses the same figure).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
