//! How a Python thread waits for a selection: the thread backend's side of the waker seam.
//!
//! The engine registers the operation while we hold the GIL (a few hundred nanoseconds under
//! the channel locks, never blocking on anything that needs the GIL), then we release the GIL
//! and park the OS thread. The main thread parks in short slices and runs Python's signal
//! handlers between them, so Ctrl-C interrupts a blocked `read()` within `SIGNAL_SLICE`. Other
//! threads never receive signals and park until woken.
//!
//! In a process greenlet of a ferrocsp scheduler (`sched.rs`) the wait is the greenlet
//! backend's instead: register with the task's waker and switch to other greenlets.
//!
//! Invariant: an interrupted wait withdraws its registration with `Select::abort`; if the
//! operation completed in the race, its result is kept and the interrupt is re-armed, so a value
//! is never lost to Ctrl-C.

use std::cell::Cell;
use std::time::{Duration, Instant};

use ferrocsp::{Policy, Poll, Select, SelectError, Selected, Waker};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::deadlock::Desc;

pub(crate) type Value = Py<PyAny>;

const SIGNAL_SLICE: Duration = Duration::from_millis(50);

thread_local! {
    static IS_MAIN: Cell<Option<bool>> = const { Cell::new(None) };
}

pub(crate) fn is_main_thread(py: Python<'_>) -> PyResult<bool> {
    if let Some(m) = IS_MAIN.with(Cell::get) {
        return Ok(m);
    }
    let threading = py.import("threading")?;
    let main = threading.call_method0("main_thread")?;
    let current = threading.call_method0("current_thread")?;
    let m = main.is(&current);
    IS_MAIN.with(|c| c.set(Some(m)));
    Ok(m)
}

/// Converts a timeout in seconds to a deadline (an unrepresentable one means "never").
pub(crate) fn deadline(timeout: Option<f64>) -> Option<Instant> {
    let secs = timeout?;
    let d = Duration::try_from_secs_f64(secs).ok()?;
    Instant::now().checked_add(d)
}

/// Runs `sel` to completion on this thread, releasing the GIL while it waits.
///
/// The outer `PyResult` carries interrupts (KeyboardInterrupt from a signal handler); the inner
/// `Result` is the selection's own outcome.
///
/// `desc` says what the operation waits on, recorded (only if it blocks) for deadlock
/// detection; a declared deadlock ends the wait with `Deadlock` in the outer `PyResult`.
pub(crate) fn select_blocking<'a>(
    py: Python<'_>,
    sel: &mut Select<Value>,
    policy: Policy,
    deadline: Option<Instant>,
    desc: impl FnOnce() -> Desc<'a>,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    if let Some(task) = crate::sched::current_task() {
        // A process greenlet: switch to other greenlets instead of parking the thread.
        return crate::sched::select_in_greenlet(py, &task, sel, policy, deadline, desc);
    }
    let mut poll = sel.start(policy, Waker::current_thread(), deadline);
    if let Poll::Ready(r) = poll {
        return Ok(r);
    }
    let main = is_main_thread(py)?;
    let me = crate::deadlock::thread_participant(py)?;
    me.block(desc(), sel, None);
    let _unblock = Unblock(&me);
    loop {
        match poll {
            Poll::Ready(r) => return Ok(r),
            Poll::Pending => {}
        }
        let slice = if main { Instant::now().checked_add(SIGNAL_SLICE) } else { None };
        {
            let sel_ref = &mut *sel;
            py.detach(move || sel_ref.park(slice));
        }
        poll = sel.resume();
        if let Some(deadlock) = me.deadlocked(py, sel, &poll) {
            return Err(deadlock);
        }
        if main && matches!(poll, Poll::Pending) {
            if let Err(interrupt) = py.check_signals() {
                return match sel.abort() {
                    None => Err(interrupt),
                    Some(done) => {
                        rearm(py, &interrupt);
                        Ok(done)
                    }
                };
            }
        }
    }
}

/// Clears a participant's blocked record when the wait ends, however it ends.
pub(crate) struct Unblock<'a>(pub(crate) &'a crate::deadlock::Participant);

impl Drop for Unblock<'_> {
    fn drop(&mut self) {
        self.0.unblock();
    }
}

/// The operation completed although a signal handler raised: keep the result, and make the
/// interrupt happen again at the next bytecode boundary.
fn rearm(py: Python<'_>, interrupt: &PyErr) {
    if interrupt.is_instance_of::<PyKeyboardInterrupt>(py) {
        // SAFETY: PyErr_SetInterruptEx only sets a flag; it is async-signal-safe and may be
        // called with or without the GIL. SIGINT is a valid signal number.
        unsafe {
            pyo3::ffi::PyErr_SetInterruptEx(2);
        }
    } else {
        // Another handler's exception cannot be re-armed; report it after the fact.
        interrupt.clone_ref(py).restore(py);
        // SAFETY: we hold the GIL (py); this writes the pending exception as "unraisable".
        unsafe { pyo3::ffi::PyErr_WriteUnraisable(std::ptr::null_mut()) };
    }
}
