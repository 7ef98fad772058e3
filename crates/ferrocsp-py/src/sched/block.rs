//! Blocking a process greenlet in a channel operation: register the selection, switch away,
//! resume when woken, and record the wait for deadlock detection meanwhile.
//!
//! Invariants:
//! - A task blocks under a fresh wait generation each time, so a timer of an earlier wait
//!   never wakes it.
//! - `CURRENT` holds a strong reference to the running task whenever its greenlet's code
//!   runs, so [`plain_read`]/[`plain_write`] borrow the task from it (no reference count
//!   operation); a wait moves that reference onto its own frame across its switches and
//!   leaves one in `CURRENT` when it ends.
//! - Its recorded wait ends however the wait ends (`EndWait`); an exception thrown in while
//!   it is switched out withdraws the selection, keeping a result that won the race.

use std::sync::Arc;
use std::time::Instant;

use ferrocsp::{Channel, Policy, Poll, Select, SelectError, Selected};
use pyo3::prelude::*;

use super::tasks::{Task, CURRENT};
use crate::deadlock::Desc;
use crate::pythread::Value;

/// Ends a greenlet task's recorded wait, however the wait ends.
struct EndWait<'a>(&'a Task);

impl Drop for EndWait<'_> {
    fn drop(&mut self) {
        self.0.wait.with(|w| w.clear(&self.0.part));
    }
}

/// Runs `sel` to completion in the calling process greenlet: register, switch away, resume.
///
/// An exception thrown into the greenlet while it is switched out (e.g. `GreenletExit`)
/// withdraws the selection; if the operation completed in the race, its result is kept.
pub(crate) fn select_in_greenlet<'a>(
    py: Python<'_>,
    task: &Arc<Task>,
    sel: &mut Select<Value>,
    policy: Policy,
    deadline: Option<Instant>,
    desc: impl FnOnce() -> Desc<'a>,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    match sel.start_with(policy, &task.waker, deadline) {
        Poll::Ready(r) => Ok(r),
        Poll::Pending => wait_in_greenlet(py, task, sel, desc),
    }
}

/// A plain read of `chan` by the calling code: in a process greenlet, tried and, if it must
/// wait, registered in one critical section (`Select::start_read`), then waited for as
/// [`select_in_greenlet`] does, on the task's kept selection; elsewhere `None`, for the
/// caller's thread path.
///
/// What a compat end's call (`Reader::call_read`) and a channel's `read` take: inlined into
/// the caller (one frame less among those a blocked greenlet saves at every switch).
#[inline(always)]
pub(crate) fn plain_read(
    py: Python<'_>,
    chan: &Channel<Value>,
    deadline: Option<Instant>,
    desc: Desc<'_>,
) -> Option<PyResult<Result<Selected<Value>, SelectError>>> {
    let task = running()?;
    Some(plain_op(py, task, chan, None, deadline, desc))
}

/// A plain write of `value` to `chan`, as [`plain_read`] reads; outside a process greenlet
/// `Err(value)`, untouched.
#[inline(always)]
pub(crate) fn plain_write(
    py: Python<'_>,
    chan: &Channel<Value>,
    value: Value,
    deadline: Option<Instant>,
    desc: Desc<'_>,
) -> Result<PyResult<Result<Selected<Value>, SelectError>>, Value> {
    match running() {
        Some(task) => Ok(plain_op(py, task, chan, Some(value), deadline, desc)),
        None => Err(value),
    }
}

/// The running task, if the calling code runs in a process greenlet: borrowed from `CURRENT`
/// rather than cloned, so that an operation that completes at once (half of a rendezvous)
/// touches no reference count.
#[inline(always)]
fn running() -> Option<*const Task> {
    CURRENT.with(|c| c.borrow().as_ref().map(Arc::as_ptr))
}

/// [`plain_read`] (`value` None) or [`plain_write`] in the running task `task`.
#[inline(always)]
fn plain_op(
    py: Python<'_>,
    task: *const Task,
    chan: &Channel<Value>,
    value: Option<Value>,
    deadline: Option<Instant>,
    desc: Desc<'_>,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    // SAFETY: `task` came from `CURRENT` (`running`), which holds a strong reference to the
    // running task whenever its greenlet's code runs: whoever switches to the greenlet sets it
    // first, and a switch that returns here by an exception thrown in restores it
    // (`Task::switch_out`). So the task outlives every stretch of this code, including code
    // that runs Python meanwhile (a waker, a finalizer) and switches away and back; and a
    // wait (`wait_owned`) moves `CURRENT`'s reference into its frame before it switches, and
    // leaves one there when it ends.
    let task = unsafe { &*task };
    let mut sel = task.take_select().unwrap_or_default();
    let poll = match value {
        None => sel.start_read(chan, &task.waker, deadline),
        Some(v) => sel.start_write(chan, v, &task.waker, deadline),
    };
    let r = match poll {
        Poll::Ready(r) => Ok(r),
        Poll::Pending => wait_owned(py, task, &mut sel, desc),
    };
    // A selection still pending here (an error withdrew nothing) withdraws when dropped.
    if !sel.is_pending() {
        sel.clear();
        task.put_select(sel);
    }
    r
}

/// [`wait_in_greenlet`] for a borrowed task: holds a strong reference across its switches,
/// the one `CURRENT` held, moved here (no reference count operation). The switch would
/// otherwise drop `CURRENT`'s when it makes the next task current, and whoever resumes this
/// task makes it current again with a reference of its own (the run queue's), so the wait
/// then drops one reference where an upgrade of `me` would add and drop one more.
#[inline(never)]
fn wait_owned(
    py: Python<'_>,
    task: &Task,
    sel: &mut Select<Value>,
    desc: Desc<'_>,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    let held = CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        match c.as_ref() {
            Some(t) if std::ptr::eq(Arc::as_ptr(t), task) => c.take(),
            _ => None,
        }
    });
    let Some(me) = held.or_else(|| task.me.upgrade()) else {
        return Err(gone());
    };
    let r = wait_loop(py, &me, sel, || desc);
    // Resumed by a switch, this task is current again; a wait that ended without one (woken
    // before it switched) gets its reference back into `CURRENT`.
    let spare = CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(me);
            None
        } else {
            Some(me)
        }
    });
    drop(spare); // outside the borrow: never the last reference (`CURRENT` holds one)
    r
}

/// A task whose last strong reference went while its greenlet runs: cannot happen (see
/// `plain_op`); an error rather than a hang if it ever did.
#[cold]
#[inline(never)]
fn gone() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("the greenlet scheduler's task is gone")
}

/// Waits in the calling process greenlet for `sel`, started with the task's waker and
/// pending: records the wait, switches away, resumes when woken. Out of line, with its rare
/// paths out of line too: every byte of the frames between the greenlet's start and the
/// switch is copied out and back at each switch, so the path that blocks keeps them small.
#[inline(never)]
fn wait_in_greenlet<'a>(
    py: Python<'_>,
    task: &Arc<Task>,
    sel: &mut Select<Value>,
    desc: impl FnOnce() -> Desc<'a>,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    wait_loop(py, task, sel, desc)
}

/// The body of [`wait_in_greenlet`] and [`wait_owned`], inlined into each (one frame).
#[inline(always)]
fn wait_loop<'a>(
    py: Python<'_>,
    task: &Arc<Task>,
    sel: &mut Select<Value>,
    desc: impl FnOnce() -> Desc<'a>,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    // Recorded locally (no lock): the hub publishes it if the scheduler runs out of work.
    let desc = desc();
    let list = task.wait.with(|w| {
        w.record(&desc, sel);
        !std::mem::replace(&mut w.listed, true)
    });
    if list {
        task.shared.unpublished.with(|l| l.push(Arc::clone(task)));
    }
    let _unblock = EndWait(task);
    let mut poll = Poll::Pending;
    loop {
        match poll {
            Poll::Ready(r) => return Ok(r),
            Poll::Pending => {}
        }
        let gen = task.next_wait_gen();
        if let Some(at) = sel.wake_deadline() {
            task.shared.add_timer(at, gen, Arc::clone(task));
        }
        if let Err(e) = task.switch_out(py) {
            return thrown_in(task, sel, e);
        }
        poll = sel.resume();
        if let Some(deadlock) = task.part.deadlocked(py, sel, &poll) {
            return Err(deadlock);
        }
    }
}

/// An exception thrown into the waiting task: ends the wait and withdraws the selection,
/// keeping a result that won the race.
#[cold]
#[inline(never)]
fn thrown_in(
    task: &Task,
    sel: &mut Select<Value>,
    e: PyErr,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    task.next_wait_gen();
    match sel.abort() {
        None => Err(e),
        Some(done) => Ok(done),
    }
}
