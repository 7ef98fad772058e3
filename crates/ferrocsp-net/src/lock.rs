//! Locking the crate's mutexes.
//!
//! Invariant: a poisoned mutex is entered anyway, so a panic in one task cannot wedge every
//! other operation on the channel; the guarded state is bookkeeping (queues, counters, flags)
//! that the other tasks re-check under the lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
