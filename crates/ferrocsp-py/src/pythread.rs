//! What every blocking wait needs to know about the calling Python thread: whether it is the
//! main thread (the one that runs signal handlers), how long it may sleep before running them,
//! how to re-arm an interrupt that lost a race with a completed operation; and the type of the
//! values channels carry. The bottom of the bindings' modules: it depends on none of them.
//!
//! Invariants:
//! - A re-armed interrupt is raised again at the next bytecode boundary, so a value taken by
//!   an operation that Ctrl-C raced is never lost and the Ctrl-C is not lost either.
//! - [`Interrupts`] is the one signal policy of every wait on a Python thread, whatever the
//!   transport: sleep (GIL released) in `SIGNAL_SLICE`s on the main thread, run the signal
//!   handlers between slices, withdraw on an interrupt and keep a result that won the race.
//!   [`wait_thread`] is the one loop in which a thread waits for an in-process or a networked
//!   operation; a shared-memory wait is the engine's loop (`Wait::block`), to which
//!   `shm.rs` `blocking` hands the same `Interrupts` as its check between sleeps.

use std::cell::Cell;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

/// What a channel carries from Python: a reference to the very object written.
pub(crate) type Value = Py<PyAny>;

/// How long the main thread waits before it runs Python's signal handlers (Ctrl-C), in every
/// blocking wait of every transport and in an idle greenlet hub.
pub(crate) const SIGNAL_SLICE: Duration = Duration::from_millis(50);

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

/// The operation completed although a signal handler raised: keep the result, and make the
/// interrupt happen again at the next bytecode boundary.
pub(crate) fn rearm(py: Python<'_>, interrupt: &PyErr) {
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

/// The calling thread's id (cached: `std::thread::current()` clones a handle each time).
pub(crate) fn current_thread() -> std::thread::ThreadId {
    thread_local!(static ID: std::thread::ThreadId = std::thread::current().id());
    // Inside thread-local destruction the cache may be gone: ask the slow way.
    ID.try_with(|id| *id).unwrap_or_else(|_| std::thread::current().id())
}

/// The signal side of one wait on a Python thread, the same for every transport: how long
/// the thread may sleep before Python's signal handlers must run (a `SIGNAL_SLICE` on the main
/// thread, which runs them), running them, and what an exception they raise does to the wait:
/// raised if the operation gave up because of it, else re-armed (`rearm`) so that neither the
/// operation's result nor the interrupt is lost. [`wait_thread`] uses it around a step that
/// sleeps; the shared-memory binding (`shm.rs` `blocking`) between the engine's sleeps, since
/// the engine owns that loop.
pub(crate) struct Interrupts {
    main: bool,
    pending: Option<PyErr>,
}

impl Interrupts {
    pub(crate) fn new(py: Python<'_>) -> PyResult<Self> {
        Ok(Interrupts { main: is_main_thread(py)?, pending: None })
    }

    /// The longest sleep: a signal slice on the main thread, `other` elsewhere.
    pub(crate) fn slice(&self, other: Option<Duration>) -> Option<Duration> {
        if self.main {
            Some(SIGNAL_SLICE)
        } else {
            other
        }
    }

    /// Runs Python's signal handlers (main thread only); true if one raised, which is kept
    /// for [`Interrupts::finish`].
    pub(crate) fn check(&mut self, py: Python<'_>) -> bool {
        if !self.main || self.pending.is_some() {
            return self.pending.is_some();
        }
        match py.check_signals() {
            Ok(()) => false,
            Err(e) => {
                self.pending = Some(e);
                true
            }
        }
    }

    /// Whether a handler raised during this wait.
    pub(crate) fn raised(&self) -> bool {
        self.pending.is_some()
    }

    /// Ends the wait: the handler's exception if the operation `gave_up` because of it; if the
    /// operation completed anyway, the exception is re-armed and the result stands.
    pub(crate) fn finish(&mut self, py: Python<'_>, gave_up: bool) -> PyResult<()> {
        match self.pending.take() {
            None => Ok(()),
            Some(e) if gave_up => Err(e),
            Some(e) => {
                rearm(py, &e);
                Ok(())
            }
        }
    }
}

/// Waits on the calling thread until `step` reports an outcome: `step(slice_end)` sleeps (with
/// the GIL released) at most until `slice_end` (None: until woken) and returns the outcome if
/// there is one. Between slices the signal handlers run ([`Interrupts`]); if one raises,
/// `withdraw` gives up the operation and returns its outcome if it completed anyway (then the
/// interrupt is re-armed and the outcome kept), else the interrupt is raised.
pub(crate) fn wait_thread<T>(
    py: Python<'_>,
    mut step: impl FnMut(Python<'_>, Option<Instant>) -> PyResult<Option<T>>,
    withdraw: impl FnOnce(Python<'_>) -> Option<T>,
) -> PyResult<T> {
    let mut withdraw = Some(withdraw);
    let mut interrupts = Interrupts::new(py)?;
    loop {
        let slice = interrupts.slice(None).and_then(|s| Instant::now().checked_add(s));
        if let Some(out) = step(py, slice)? {
            return Ok(out);
        }
        if interrupts.check(py) {
            let out = withdraw.take().and_then(|w| w(py));
            // Raises the interrupt unless the operation completed anyway.
            interrupts.finish(py, out.is_none())?;
            if let Some(out) = out {
                return Ok(out);
            }
        }
    }
}
