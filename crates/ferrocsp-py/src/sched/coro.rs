//! The native coroutine backend: `async def` processes stepped by the scheduler's hub with
//! `PyIter_Send`, with no event loop and no greenlet switch.
//!
//! A coroutine task is a [`Task`] whose `coro` holds its coroutine. The hub pops it like a
//! greenlet task and, instead of switching to a greenlet, *steps* it: sends `None` into the
//! coroutine, which runs until it returns or suspends. It suspends where an awaited ferrocsp
//! operation (`_AsyncOp`, `aio.rs`) must wait: the operation registers its selection with the
//! task's waker (as a blocking greenlet does, `block.rs`), records the wait for deadlock
//! detection, and yields [`blocked_marker`]. A wake-up queues the task; the next step resumes
//! the operation, which resumes its selection. So a communication between two coroutines of
//! one scheduler is the engine's hand-off, a local queue push and one `send` per suspension.
//!
//! What else a coroutine may yield: `None` (a bare `yield`, e.g. `await asyncio.sleep(0)`)
//! gives the other tasks a turn; anything else (an asyncio future: the coroutine awaited
//! something that needs an event loop) is answered by throwing a `RuntimeError` into it at
//! its next step, naming what it awaited.
//!
//! The coroutine is the process's own (no wrapper coroutine: each would add a frame to every
//! step); the task carries the process name, and `done(value, exception)` receives how it
//! ended, exactly once.
//!
//! Invariants:
//! - `CORO` names the stepped task only during its `send` (or `throw`), while the hub holds
//!   the task's `Arc`; only code running inside that step sees it (`current_coro`).
//! - A coroutine task is stepped only by its scheduler's hub on the scheduler's thread (never
//!   switched to: `Task::switch_out` hands it to the hub), at most once per wake-up, and never
//!   after it finished (its coroutine is dropped by `Task::finish`).
//! - An operation that yields the marker is registered under a fresh wait generation, so only
//!   a wake-up or a timer of that wait steps the task again; a spurious step finds the
//!   selection still pending and yields the marker again.

use std::ptr;
use std::sync::Arc;

use ferrocsp::{Poll, Select, SelectError, Selected};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::tasks::{Task, CORO};
use crate::deadlock::Desc;
use crate::pythread::Value;

/// A coroutine task's coroutine, what to call with its result, and an exception to throw in
/// at its next step.
pub(crate) struct Coro {
    coro: Py<PyAny>,
    done: Option<Py<PyAny>>,
    throw: Option<PyErr>,
}

impl Coro {
    pub(super) fn new(coro: Py<PyAny>, done: Option<Py<PyAny>>) -> Self {
        Coro { coro, done, throw: None }
    }
}

static MARKER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// What an operation of a coroutine task yields when it waits: a private object, so that the
/// hub tells it from anything else a coroutine may yield.
pub(crate) fn blocked_marker(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    MARKER.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        let object = py.import(intern!(py, "builtins"))?.getattr(intern!(py, "object"))?;
        Ok(object.call0()?.unbind())
    })
}

/// How one step ended.
enum Stepped {
    Yielded(Py<PyAny>),
    Returned(Py<PyAny>),
}

/// Steps coroutine task `task` once (the hub, on the scheduler's thread). When the coroutine
/// ends, its `done` gets its result or exception; an error of `done` itself (or an exception
/// of a coroutine without one) ends the scheduler's run.
pub(super) fn step(py: Python<'_>, task: &Arc<Task>) -> PyResult<()> {
    let Some((coro, throw)) =
        task.coro.with(|c| c.as_mut().map(|c| (c.coro.clone_ref(py), c.throw.take())))
    else {
        return Ok(());
    };
    let outer = CORO.with(|c| c.replace(std::ptr::from_ref(task)));
    let r = match throw {
        None => send(py, &coro),
        Some(e) => thrown(py, &coro, e),
    };
    CORO.with(|c| c.set(outer));
    match r {
        Ok(Stepped::Yielded(y)) => {
            if y.is(blocked_marker(py)?) {
                return Ok(()); // registered: a wake-up or timer queues it again
            }
            if !y.is_none(py) {
                let what = y.bind(py).repr().map(|r| r.to_string()).unwrap_or_default();
                let e = PyRuntimeError::new_err(format!(
                    "a process on the 'coroutine' backend awaited {what}, which needs an \
                     asyncio event loop; it may await only ferrocsp operations (aread, awrite, \
                     aselect, async for) and coroutines that do (use backend='asyncio' for \
                     asyncio code)"
                ));
                task.coro.with(|c| {
                    if let Some(c) = c.as_mut() {
                        c.throw = Some(e);
                    }
                });
            }
            wake_self(task);
            Ok(())
        }
        Ok(Stepped::Returned(v)) => {
            let done = task.coro.with(|c| c.as_mut().and_then(|c| c.done.take()));
            task.finish();
            match done {
                Some(f) => f.call1(py, (v, py.None())).map(drop),
                None => Ok(()),
            }
        }
        Err(e) => {
            // The process's own failure, handed to `done` (which applies the shutdown rules);
            // without one, it ends the scheduler's run.
            let done = task.coro.with(|c| c.as_mut().and_then(|c| c.done.take()));
            task.finish();
            match done {
                Some(f) => f.call1(py, (py.None(), e.into_value(py))).map(drop),
                None => Err(e),
            }
        }
    }
}

/// Queues `task` again (a bare `yield`, or an exception to throw in).
fn wake_self(task: &Arc<Task>) {
    if task.scheduled.mark() {
        task.shared.push(Arc::clone(task));
    }
}

/// `coro.send(None)` through `PyIter_Send`: no `StopIteration` object, no method call.
fn send(py: Python<'_>, coro: &Py<PyAny>) -> PyResult<Stepped> {
    let mut out: *mut ffi::PyObject = ptr::null_mut();
    // SAFETY: we hold the GIL; `coro` is a live object; PyIter_Send stores a new reference
    // in `out` for PYGEN_NEXT and PYGEN_RETURN, and sets an exception for PYGEN_ERROR.
    let r = unsafe { ffi::PyIter_Send(coro.as_ptr(), ffi::Py_None(), &mut out) };
    match r {
        ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: a new, non-null reference (see above).
            Ok(Stepped::Yielded(unsafe { Bound::from_owned_ptr(py, out) }.unbind()))
        }
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: a new, non-null reference (see above).
            Ok(Stepped::Returned(unsafe { Bound::from_owned_ptr(py, out) }.unbind()))
        }
        ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
    }
}

/// `coro.throw(e)`: its yielded value, its return value (from `StopIteration`), or what it
/// raised.
#[cold]
fn thrown(py: Python<'_>, coro: &Py<PyAny>, e: PyErr) -> PyResult<Stepped> {
    match coro.call_method1(py, intern!(py, "throw"), (e.into_value(py),)) {
        Ok(y) => Ok(Stepped::Yielded(y)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
            Ok(Stepped::Returned(e.value(py).getattr(intern!(py, "value"))?.unbind()))
        }
        Err(e) => Err(e),
    }
}

/// An awaited operation's wait in a coroutine task (held by the operation, `aio.rs`): ends the
/// task's recorded wait however the operation ends.
pub(crate) struct CoroWait {
    task: Arc<Task>,
}

impl std::fmt::Debug for CoroWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoroWait")
    }
}

impl Drop for CoroWait {
    fn drop(&mut self) {
        // The record is the scheduler thread's; an operation dropped elsewhere (its scheduler
        // has ended, and with it the task's registration) leaves it alone.
        if self.task.shared.is_running_here() {
            self.clear_record();
        }
    }
}

impl CoroWait {
    /// Starts `sel` for the calling coroutine task: `Ready`, or registered with the task's
    /// waker, its wait recorded (`desc`) and armed (`arm`); the caller then yields the marker.
    /// `task` is borrowed (a selection that completes at once takes no reference to it).
    pub(crate) fn start<'a>(
        task: &Arc<Task>,
        sel: &mut Select<Value>,
        policy: ferrocsp::Policy,
        deadline: Option<std::time::Instant>,
        desc: impl FnOnce() -> Desc<'a>,
    ) -> Result<Result<Selected<Value>, SelectError>, CoroWait> {
        match sel.start_with(policy, &task.waker, deadline) {
            Poll::Ready(r) => Ok(r),
            Poll::Pending => Err(CoroWait::begin(Arc::clone(task), sel, &desc())),
        }
    }

    /// The wait of `task` on `sel`, started with the task's waker and pending: recorded for
    /// deadlock detection (`desc`) and armed.
    pub(crate) fn begin(task: Arc<Task>, sel: &Select<Value>, desc: &Desc<'_>) -> CoroWait {
        let list = task.wait.with(|w| {
            w.record(desc, sel);
            !std::mem::replace(&mut w.listed, true)
        });
        if list {
            task.shared.unpublished.with(|l| l.push(Arc::clone(&task)));
        }
        let wait = CoroWait { task };
        wait.arm(sel);
        wait
    }

    fn clear_record(&self) {
        let t = &self.task;
        t.wait.with(|w| w.clear(&t.part));
    }

    /// Ends the wait as dropping it does, from a step of the waiting task itself (it passed
    /// [`CoroWait::check_stepper`], so this is its scheduler's thread): without asking which
    /// thread runs (a thread-local lookup, one per coroutine communication).
    #[inline]
    pub(crate) fn end_on_scheduler(self) {
        self.clear_record();
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; its one field is read out once and
        // dropped here, which releases the task reference the skipped `drop` would have.
        drop(unsafe { std::ptr::read(&me.task) });
    }

    /// The task waiting.
    pub(crate) fn task(&self) -> &Arc<Task> {
        &self.task
    }

    /// Refuses a step from anywhere but the waiting task: another process awaiting the same
    /// operation (whose step would yield the marker with no wake-up of its own registered, so
    /// it would never be stepped again), or code outside the coroutine backend.
    pub(crate) fn check_stepper(&self) -> PyResult<()> {
        if super::with_coro(|t| t.is_some_and(|t| Arc::ptr_eq(t, &self.task))) {
            return Ok(());
        }
        Err(PyRuntimeError::new_err("this channel operation is already being awaited"))
    }

    /// A fresh wait generation, and the selection's deadline as a timer of it.
    pub(crate) fn arm(&self, sel: &Select<Value>) {
        let gen = self.task.next_wait_gen();
        if let Some(at) = sel.wake_deadline() {
            self.task.shared.add_timer(at, gen, Arc::clone(&self.task));
        }
    }

    /// Resumes the selection after a step: its result, `Pending` (re-armed: yield the marker
    /// again), or the deadlock this wait is part of.
    pub(crate) fn resume(&self, py: Python<'_>, sel: &mut Select<Value>) -> PyResult<Poll<Value>> {
        let poll = sel.resume();
        if let Some(deadlock) = self.task.part.deadlocked(py, sel, &poll) {
            return Err(deadlock);
        }
        if let Poll::Pending = poll {
            self.arm(sel);
        }
        Ok(poll)
    }

    /// The wait ends without its result (an exception thrown in): no timer of it fires.
    pub(crate) fn end(&self) {
        self.task.next_wait_gen();
    }
}
