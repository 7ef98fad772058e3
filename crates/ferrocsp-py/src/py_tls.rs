//! Python references kept in Rust thread-locals (a thread's run queue, its cleared
//! selections), and how they are released when the thread ends.
//!
//! A thread-local's destructor runs after the thread's Python state is gone, and for the main
//! thread after the interpreter finalized. PyO3 releases a reference at once when its
//! per-thread count of calls into Rust is raised, and a greenlet suspended inside such a call
//! and never resumed (an asyncio operation on a shared channel abandoned with its loop,
//! `shm_aio.rs`) leaves that count raised for good: a release in the destructor would then
//! run without the GIL, or after finalization (a crash at exit).
//!
//! Invariants:
//! - The value in a [`Kept`] is never released by the thread-local's destructor: it is parked
//!   and released by the next [`reap`] (a caller holding the GIL), or leaked once the
//!   interpreter is finalized (nobody can use it then).

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::ffi;
use pyo3::prelude::*;

type Parked = Vec<Box<dyn Send>>;

static PARKED: Mutex<Parked> = Mutex::new(Vec::new());
static ANY_PARKED: AtomicBool = AtomicBool::new(false);

/// A thread-local's value that holds Python references (see the module docs).
pub(crate) struct Kept<T: Send + 'static>(ManuallyDrop<T>);

impl<T: Send + 'static> Kept<T> {
    pub(crate) const fn new(value: T) -> Self {
        Kept(ManuallyDrop::new(value))
    }
}

impl<T: Send + 'static> Deref for Kept<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send + 'static> Drop for Kept<T> {
    fn drop(&mut self) {
        // SAFETY: the value is taken once, here, and `self` is not used afterwards.
        let value = unsafe { ManuallyDrop::take(&mut self.0) };
        // SAFETY: Py_IsInitialized may be called at any time, without the GIL.
        if unsafe { ffi::Py_IsInitialized() } == 0 {
            std::mem::forget(value);
            return;
        }
        PARKED.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(value));
        ANY_PARKED.store(true, Ordering::Release);
    }
}

/// Releases what the destructors of ended threads parked (with the GIL: `_py`).
pub(crate) fn reap(_py: Python<'_>) {
    if !ANY_PARKED.load(Ordering::Acquire) {
        return;
    }
    let parked = {
        let mut p = PARKED.lock().unwrap_or_else(|e| e.into_inner());
        ANY_PARKED.store(false, Ordering::Release);
        std::mem::take(&mut *p)
    };
    drop(parked);
}
