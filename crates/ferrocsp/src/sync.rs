//! Synchronisation primitives, swapped for loom's model-checked versions under `cfg(loom)`.
//!
//! Invariant: every lock, atomic and thread operation in the engine goes through this module,
//! so that the loom models (`tests/loom.rs`) explore all of the engine's interleavings; the
//! one exception, a channel's readiness hint, says why in `channel/ready.rs`.

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

/// Whether `a` is the only reference to its value, ordered after every other reference's
/// drop (acquire), as `Arc::get_mut(a).is_some()` says, for a value of which no `Weak` is
/// ever made (a slot: the engine makes none, and never hands one out).
///
/// `get_mut` locks the weak count with a compare-and-swap (a locked instruction) to rule out
/// a concurrent `Weak::upgrade`; with no `Weak`, the strong count alone decides: nobody can
/// make a new reference from ours while we hold it, and the acquire fence after reading 1
/// orders us after the release decrement of the last other holder. Under loom it is
/// `get_mut` itself, which the models check; so it is in the sanitizer builds
/// (`--cfg ferrocsp_sanitize`, `scripts/sanitizers.sh`), since ThreadSanitizer does not model
/// a standalone fence and reports the accesses it orders as races (std's `Arc` swaps its own
/// acquire fences for acquire loads under TSan for the same reason).
#[cfg(not(any(loom, ferrocsp_sanitize)))]
pub(crate) fn held_alone<T>(a: &mut Arc<T>) -> bool {
    debug_assert_eq!(Arc::weak_count(a), 0, "held_alone needs a value without Weak references");
    if Arc::strong_count(a) != 1 {
        return false;
    }
    std::sync::atomic::fence(Ordering::Acquire);
    true
}

/// See the other version.
#[cfg(any(loom, ferrocsp_sanitize))]
pub(crate) fn held_alone<T>(a: &mut Arc<T>) -> bool {
    Arc::get_mut(a).is_some()
}

/// `Arc::get_mut(a)` without its locked instruction, for a value of which a `Weak` is
/// seldom made (a selection cell: the engine makes none, but hands out strong references
/// that a caller could downgrade). With no `Weak` (`weak_count` 0) and a strong count of 1,
/// [`held_alone`]'s reasoning holds; a `Weak` cannot appear meanwhile, since only a strong
/// reference makes one and ours is the only one. With a `Weak`, it is `get_mut`.
#[cfg(not(any(loom, ferrocsp_sanitize)))]
pub(crate) fn get_mut_alone<T>(a: &mut Arc<T>) -> Option<&mut T> {
    if Arc::weak_count(a) != 0 {
        return Arc::get_mut(a);
    }
    if Arc::strong_count(a) != 1 {
        return None;
    }
    std::sync::atomic::fence(Ordering::Acquire);
    // SAFETY: `a` is the only reference to the value and no `Weak` exists to make another
    // (see above); the fence orders us after every other holder's release decrement.
    // `as_ptr` keeps the `Arc`'s write permission (it is derived from its mutable pointer,
    // as `get_mut`'s reference is).
    Some(unsafe { &mut *Arc::as_ptr(a).cast_mut() })
}

/// See the other version.
#[cfg(any(loom, ferrocsp_sanitize))]
pub(crate) fn get_mut_alone<T>(a: &mut Arc<T>) -> Option<&mut T> {
    Arc::get_mut(a)
}

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
