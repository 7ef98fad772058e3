//! How an awaiting channel operation is woken, and how a cancellation meets an operation that
//! already happened: the two rules every asyncio path shares (`aio.rs`, `aio_op.rs`).
//!
//! Invariants:
//! - `AsyncWake` completes each installed future at most once, from any thread: directly on
//!   the loop's own thread, else through `call_soon_threadsafe`; a closed loop is ignored.
//! - A `CancelledError` thrown into an op whose communication happened never loses it: the op
//!   returns its result and the cancellation is re-requested (`keep_result_on_cancel`).

use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;

use ferrocsp::Wake;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::aio_waiter::Waiter;
use crate::pythread::current_thread;

static CURRENT_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CANCELLED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static WAKE_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Completes `fut` unless it is already done (cancelled, or woken twice): the target of
/// deadline timers and of wake-ups from other threads.
#[pyfunction]
pub(crate) fn _wake_future(fut: &Bound<'_, Waiter>) -> PyResult<()> {
    Waiter::complete(fut)
}

pub(crate) fn wake_future_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    WAKE_FUTURE
        .get_or_try_init(py, || {
            py.import("ferrocsp._native").and_then(|m| m.getattr("_wake_future")).map(Bound::unbind)
        })
        .map(|f| f.bind(py))
}

/// The waker of one awaiting op: completes the future currently installed, on its loop.
///
/// Invariant: `fut` holds the future the task waits on (or will wait on) while the op is
/// registered; `wake` takes it, so each future is completed at most once by a wake-up.
pub(crate) struct AsyncWake {
    pub(crate) event_loop: Py<PyAny>,
    pub(crate) thread: ThreadId,
    pub(crate) fut: Mutex<Option<Py<Waiter>>>,
}

impl AsyncWake {
    /// The future installed and not yet taken by a wake-up, if any.
    pub(crate) fn installed(&self, py: Python<'_>) -> Option<Py<Waiter>> {
        lock(&self.fut).as_ref().map(|f| f.clone_ref(py))
    }

    pub(crate) fn install(&self, fut: Option<Py<Waiter>>) {
        // The previous future (if any) is dropped outside the lock; we hold the GIL here.
        let old = std::mem::replace(&mut *lock(&self.fut), fut);
        drop(old);
    }
}

impl Wake for AsyncWake {
    fn wake(&self) {
        let Some(fut) = lock(&self.fut).take() else { return };
        // Called from any thread, with or without the GIL; never with a channel lock held.
        Python::attach(|py| {
            let r = wake_future_fn(py).and_then(|wake| {
                if current_thread() == self.thread {
                    // On the loop's thread (the same-loop fast path): complete the waiter
                    // directly, which only queues the task on the loop's run queue; no
                    // thread-safe hand-off. A waiter cancelled meanwhile stays cancelled.
                    Waiter::complete(fut.bind(py))
                } else {
                    self.event_loop
                        .call_method1(py, intern!(py, "call_soon_threadsafe"), (wake, fut.bind(py)))
                        .map(drop)
                }
            });
            // A closed loop has no task left to wake; nothing else can fail here.
            drop(r);
        });
    }
}

/// The exception a coroutine's `throw(typ[, val[, tb]])` raises.
pub(crate) fn exception_from_throw_args(
    typ: &Bound<'_, PyAny>,
    val: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyErr> {
    Ok(match val {
        Some(v) if !v.is_none() && v.is_instance_of::<pyo3::exceptions::PyBaseException>() => {
            PyErr::from_value(v.clone())
        }
        Some(v) if !v.is_none() && typ.is_instance_of::<PyType>() => {
            PyErr::from_value(typ.call1((v,))?)
        }
        _ if typ.is_instance_of::<PyType>() => PyErr::from_value(typ.call0()?),
        _ => PyErr::from_value(typ.clone()),
    })
}

/// Whether `exc` is an `asyncio.CancelledError`.
pub(crate) fn is_cancel(py: Python<'_>, exc: &PyErr) -> PyResult<bool> {
    Ok(exc.is_instance(py, CANCELLED.import(py, "asyncio", "CancelledError")?))
}

/// `exc` was thrown into an op whose communication already happened. A cancellation is
/// deferred: the op reports its result and the cancellation is re-requested, to take effect
/// at the task's next suspension. Any other exception is returned, to propagate instead.
pub(crate) fn keep_result_on_cancel(
    py: Python<'_>,
    op: &Bound<'_, PyAny>,
    exc: &PyErr,
) -> PyResult<()> {
    if !is_cancel(py, exc)? {
        return Err(exc.clone_ref(py));
    }
    let task = CURRENT_TASK.import(py, "asyncio", "current_task")?.call0()?;
    if !task.is_none() {
        task.call_method0("uncancel")?;
        // A task that is nothing but this op just finishes with its result (a cancellation
        // pending at its return would drop the result).
        if !task.call_method0("get_coro")?.is(op) {
            task.call_method0("cancel")?;
        }
    }
    Ok(())
}
