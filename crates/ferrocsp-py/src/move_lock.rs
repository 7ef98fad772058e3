//! `MoveLock`: what makes a channel's move to shared memory atomic with respect to its ends.
//!
//! Invariants:
//! - The move (set the shared side, close the in-process side, read its end counts) and every
//!   change of the end set (make an end, retire it, drop it) hold the lock, so each end is
//!   either counted by the move's snapshot or known to the shared side, never both or neither.
//! - Reentrant per thread: a critical section may drop Python objects (retiring the last
//!   reader drops buffered values), whose finalizers may make or retire ends on this thread.
//! - Waiting for it releases the GIL: a holder may need the GIL back to finish (a finalizer
//!   that released it), and a waiter holding it would then deadlock.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};

use pyo3::Python;

#[derive(Debug, Default)]
pub(crate) struct MoveLock {
    /// The holding thread and how many times it holds the lock.
    owner: Mutex<Option<(ThreadId, usize)>>,
    freed: Condvar,
}

/// Holding a `MoveLock` (released on drop).
pub(crate) struct MoveGuard<'a>(&'a MoveLock);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing the lock protects can be left half-updated by a panic (a counter and an id).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MoveLock {
    pub(crate) fn hold(&self, py: Python<'_>) -> MoveGuard<'_> {
        let me = thread::current().id();
        if self.try_take(me) {
            return MoveGuard(self);
        }
        crate::detach::detach(py, || {
            let mut owner = lock(&self.owner);
            loop {
                match *owner {
                    None => {
                        *owner = Some((me, 1));
                        break;
                    }
                    Some((t, ref mut depth)) if t == me => {
                        *depth += 1;
                        break;
                    }
                    Some(_) => {
                        owner = self.freed.wait(owner).unwrap_or_else(PoisonError::into_inner)
                    }
                }
            }
        });
        MoveGuard(self)
    }

    fn try_take(&self, me: ThreadId) -> bool {
        let mut owner = lock(&self.owner);
        match *owner {
            None => {
                *owner = Some((me, 1));
                true
            }
            Some((t, ref mut depth)) if t == me => {
                *depth += 1;
                true
            }
            Some(_) => false,
        }
    }
}

impl Drop for MoveGuard<'_> {
    fn drop(&mut self) {
        let mut owner = lock(&self.0.owner);
        if let Some((_, depth)) = owner.as_mut() {
            *depth -= 1;
            if *depth == 0 {
                *owner = None;
                self.0.freed.notify_one();
            }
        }
    }
}
