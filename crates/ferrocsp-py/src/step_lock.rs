//! `StepLock`: a value held by one user at a time, where a second user meanwhile is refused,
//! never made to wait: the state of an awaited operation (one step at a time; another
//! awaiter or a re-entrant step is refused), and a native Alt's kept selection and map (a
//! second concurrent selection builds its own).
//!
//! Why not a `Mutex` with `try_lock`: a step takes the lock once and a coroutine hand-off steps
//! its waiting op twice, and each `Mutex` round costs two atomic read-modify-writes (the
//! compare-exchange, and the swap of the unlock that looks for sleepers to wake), about 4 ns
//! each on the development VM. Nobody ever sleeps on this lock, so the release is a plain
//! release store; and with a GIL, which already serialises the steps, so is the acquire: no
//! locked instruction at all (without one, a compare-exchange).
//!
//! Invariants:
//! - `busy` is true exactly while a [`StepGuard`] exists; only the guard's holder touches
//!   `value` (the acquire of the load or compare-exchange pairs with the release of the
//!   previous holder's store, so each holder sees the last one's writes). Callers pass
//!   `serialised` true only from an attached thread of an interpreter that has a GIL, and
//!   every user of one lock is such a caller.
//! - A panic inside a step releases the lock as the guard unwinds; the state stays as the
//!   step left it (as a poisoned `Mutex` taken with `into_inner` would).

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// A value held by one step at a time (module docs).
pub(crate) struct StepLock<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is reached only through a `StepGuard`, of which at most one exists at a time
// (the compare-exchange in `lock`, or the GIL), so sharing the lock shares no unsynchronised
// access; the value moves between threads with it, hence `T: Send`.
unsafe impl<T: Send> Sync for StepLock<T> {}

impl<T> std::fmt::Debug for StepLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value is the holder's alone: only whether it is held.
        f.debug_struct("StepLock").field("busy", &self.busy.load(Ordering::Relaxed)).finish()
    }
}

impl<T> StepLock<T> {
    pub(crate) fn new(value: T) -> Self {
        Self { busy: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// The state for one step, or None while another step holds it. `serialised`: the caller
    /// holds the GIL, which serialises every step of every op (it is released only where
    /// Python code runs, never between this check and the mark), so a load and a store do
    /// what the compare-exchange does without a GIL.
    pub(crate) fn lock(&self, serialised: bool) -> Option<StepGuard<'_, T>> {
        if serialised {
            if self.busy.load(Ordering::Acquire) {
                return None;
            }
            self.busy.store(true, Ordering::Relaxed);
            return Some(StepGuard { lock: self });
        }
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| StepGuard { lock: self })
    }
}

/// One step's hold of a [`StepLock`].
pub(crate) struct StepGuard<'a, T> {
    lock: &'a StepLock<T>,
}

impl<T> Deref for StepGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (module invariants).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for StepGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the only one, and it is borrowed mutably.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for StepGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.busy.store(false, Ordering::Release);
    }
}
