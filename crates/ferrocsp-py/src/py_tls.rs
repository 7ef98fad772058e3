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
//! - The parking lot is per process: a child made by `fork` never waits for a lock that a
//!   thread of its parent held at the fork.

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use ferrocsp::shm::PerProcess;
use pyo3::ffi;
use pyo3::prelude::*;

type Parked = Vec<Box<dyn Send>>;

/// A thread may park its values at any instant (its thread-locals are destroyed without the
/// GIL), so a child made by `fork` starts with a lock of its own (`PerProcess`); the values
/// parked in the parent are leaked there.
static PARKED: PerProcess<Mutex<Parked>> = PerProcess::new(|| Mutex::new(Vec::new()));
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

/// Holds the parking lot's lock for `seconds` on a new thread, as a thread parking its values
/// does (the next `reap` will look), and returns once it is held: only for tests of a process
/// forked while another thread holds it (`test_hooks.rs`).
pub(crate) fn hold_for_test(seconds: f64) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _g = PARKED.lock();
        ANY_PARKED.store(true, Ordering::Release);
        let _ = tx.send(());
        std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
    });
    let _ = rx.recv();
}
