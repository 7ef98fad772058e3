//! Synchronisation primitives, swapped for loom's model-checked versions under `cfg(loom)`.
//!
//! Invariant: every lock, atomic and thread operation in the engine goes through this module,
//! so that the loom models (`tests/loom.rs`) explore all of the engine's interleavings.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::{current as current_thread, yield_now, Thread};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::{current as current_thread, yield_now, Thread};

/// Locks `m`, ignoring poisoning.
///
/// The engine never panics while holding a channel lock (no user code runs under it: values
/// are moved, never dropped or cloned, inside a critical section), so a poisoned mutex can only
/// come from a bug elsewhere in the process; the protected state is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Like [`lock`], but returns `None` instead of blocking when the mutex is held.
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}
