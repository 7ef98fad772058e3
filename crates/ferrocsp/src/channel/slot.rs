//! Where a blocked operation's value travels ([`Slot`]), and the queue entry that points at it
//! ([`Entry`]).
//!
//! Invariant: a slot has one party allowed to touch it at a time, as listed on [`Slot`]; the
//! channel lock or the CAS on the owner's cell ([`crate::signal`]) orders every hand-over.

#[cfg(not(loom))]
use std::cell::UnsafeCell;

#[cfg(loom)]
use loom::cell::UnsafeCell;

use crate::signal::Signal;
use crate::sync::Arc;

/// Where a waiting operation's value travels: written by exactly one party at a time, as the
/// protocol in [`crate::signal`] describes, so it needs no lock of its own. Who may touch it:
/// - its owner, while registering it (under the channel lock, before the entry is visible);
/// - a counterpart that popped its entry, under the channel lock: a writer storing a value
///   before its CAS on the owner's cell (taking it back if the CAS fails), or a reader taking
///   the value after winning the CAS;
/// - its owner after the wait: the slot of the operation a writer completed, once it has seen
///   `Completed(op, Done)` (acquire; the writer stored before its release CAS); any slot once
///   it has removed its entries, which takes every involved channel lock after the
///   counterparts' critical sections.
///
/// The loom models check these accesses with loom's `UnsafeCell`, which flags any two that
/// are not ordered by a lock or the CAS.
pub(crate) struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: the content moves between threads (so `T: Send`), and the protocol above orders
// every access, so sharing a `&Slot` is sound.
unsafe impl<T: Send> Sync for Slot<T> {}
// SAFETY: as above; a `Slot` owns an `Option<T>`.
unsafe impl<T: Send> Send for Slot<T> {}

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot(UnsafeCell::new(None))
    }

    /// Puts `v` in the slot, returning what was there.
    ///
    /// # Safety
    /// The caller is the one party allowed to touch the slot now (see the type's docs).
    pub(crate) unsafe fn replace(&self, v: Option<T>) -> Option<T> {
        #[cfg(loom)]
        // SAFETY: exclusive access by the caller's contract; loom checks it.
        return self.0.with_mut(|p| unsafe { std::mem::replace(&mut *p, v) });
        #[cfg(not(loom))]
        // SAFETY: exclusive access by the caller's contract.
        return unsafe { std::mem::replace(&mut *self.0.get(), v) };
    }

    /// Takes the value out of the slot.
    ///
    /// # Safety
    /// As for [`Slot::replace`].
    pub(crate) unsafe fn take(&self) -> Option<T> {
        // SAFETY: the caller's contract.
        unsafe { self.replace(None) }
    }
}

/// One blocked operation, queued on a channel.
pub(crate) struct Entry<T> {
    pub(crate) signal: Arc<Signal>,
    pub(crate) op: usize,
    pub(crate) slot: Arc<Slot<T>>,
}
