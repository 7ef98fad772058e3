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

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Instant;

use ferrocsp::{Policy, Poll, Select, SelectError, Selected, Waker};
use pyo3::prelude::*;

use crate::deadlock::Desc;
use crate::py_tls::Kept;
use crate::pythread::{wait_thread, Value};

thread_local! {
    /// Cleared selections kept for this thread's next blocking operations (threads and
    /// asyncio operations; a greenlet task keeps its own, see `sched::Task`). A kept cell may
    /// still name its last waker (an asyncio one holds its loop): at most `POOL_MAX` such
    /// references stay alive until reused (or the thread ends: released then as `py_tls.rs`
    /// says).
    // Boxed: a selection moves between the pool and a `PooledSelect` as one pointer.
    #[allow(clippy::vec_box)]
    static POOL: Kept<RefCell<Vec<Box<Select<Value>>>>> =
        const { Kept::new(RefCell::new(Vec::new())) };
}

/// How many cleared selections a thread keeps (one per operation in progress is enough; more
/// are only needed when a trace sink blocks inside an operation).
const POOL_MAX: usize = 4;

/// A cleared `Select` for one blocking operation, cleared and kept for the next one when
/// dropped: with the engine recycling its cell and slots, a blocking operation that waits
/// allocates nothing once warm. Drop it with the GIL held (it may hold an unsent value).
pub(crate) struct PooledSelect {
    sel: Option<Box<Select<Value>>>,
    task: Option<Arc<crate::sched::Task>>,
}

/// A selection for one blocking operation of the calling thread or greenlet task.
pub(crate) fn pooled_select() -> PooledSelect {
    if let Some(task) = crate::sched::current_task() {
        let sel = task.take_select().unwrap_or_default();
        return PooledSelect { sel: Some(sel), task: Some(task) };
    }
    let sel = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten().unwrap_or_default();
    PooledSelect { sel: Some(sel), task: None }
}

impl PooledSelect {
    /// A selection from this thread's pool, whoever runs (an asyncio operation keeps it while
    /// it waits; a task switch cannot move it to another greenlet's cache).
    pub(crate) fn from_thread_pool() -> Self {
        let sel = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten().unwrap_or_default();
        PooledSelect { sel: Some(sel), task: None }
    }

    /// Wraps a selection built elsewhere (an Alt), to be kept by the thread pool afterwards.
    pub(crate) fn adopt(sel: Select<Value>) -> Self {
        PooledSelect { sel: Some(Box::new(sel)), task: None }
    }

    /// Wraps a prepared selection kept by its owner (a native Alt), for the calling thread or
    /// greenlet task as [`pooled_select`] (`in_task`) or [`PooledSelect::from_thread_pool`]
    /// would give one. Taken back with [`PooledSelect::into_kept`]; dropped instead, it goes
    /// to a pool, cleared.
    pub(crate) fn kept(sel: Box<Select<Value>>, in_task: bool) -> Self {
        let task = if in_task { crate::sched::current_task() } else { None };
        PooledSelect { sel: Some(sel), task }
    }

    /// The selection itself, uncleared, for its owner to keep (None while it is in progress:
    /// dropping it then withdraws the registration).
    pub(crate) fn into_kept(mut self) -> Option<Box<Select<Value>>> {
        match self.sel.take() {
            Some(sel) if !sel.is_pending() => Some(sel),
            other => {
                self.sel = other;
                None
            }
        }
    }
}

/// Like [`select_blocking`] for a pooled selection, which already knows whether the caller is
/// a greenlet task (one thread-local look-up per operation instead of two).
pub(crate) fn select_pooled<'a>(
    py: Python<'_>,
    sel: &mut PooledSelect,
    policy: Policy,
    deadline: Option<Instant>,
    desc: impl FnOnce() -> Desc<'a>,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    match sel.task.clone() {
        Some(task) => crate::sched::select_in_greenlet(py, &task, sel, policy, deadline, desc),
        None => select_blocking(py, sel, policy, deadline, desc),
    }
}

impl Deref for PooledSelect {
    type Target = Select<Value>;
    fn deref(&self) -> &Select<Value> {
        // Some until dropped.
        self.sel.as_ref().unwrap_or_else(|| unreachable!("a PooledSelect holds its selection"))
    }
}

impl DerefMut for PooledSelect {
    fn deref_mut(&mut self) -> &mut Select<Value> {
        self.sel.as_mut().unwrap_or_else(|| unreachable!("a PooledSelect holds its selection"))
    }
}

impl Drop for PooledSelect {
    fn drop(&mut self) {
        let Some(mut sel) = self.sel.take() else { return };
        if sel.is_pending() {
            return; // dropping it withdraws the registration; not worth keeping
        }
        sel.clear();
        match &self.task {
            Some(task) => task.put_select(sel),
            None => {
                // Fails only while the thread is ending: then the selection is just dropped.
                let _ = POOL.try_with(|p| {
                    let mut p = p.borrow_mut();
                    if p.len() < POOL_MAX {
                        p.push(sel);
                    }
                });
            }
        }
    }
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
    let poll = sel.start(policy, Waker::current_thread(), deadline);
    if let Poll::Ready(r) = poll {
        return Ok(r);
    }
    let me = crate::deadlock::thread_participant(py)?;
    me.block(desc(), sel, None);
    let _unblock = Unblock(&me);
    let sel = std::cell::RefCell::new(sel);
    wait_thread(
        py,
        |py, slice| {
            let mut sel = sel.borrow_mut();
            {
                let sel_ref = &mut **sel;
                crate::detach::detach(py, move || sel_ref.park(slice));
            }
            let poll = sel.resume();
            if let Some(deadlock) = me.deadlocked(py, &mut sel, &poll) {
                return Err(deadlock);
            }
            Ok(match poll {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            })
        },
        |_| sel.borrow_mut().abort(),
    )
}

/// Clears a participant's blocked record when the wait ends, however it ends.
pub(crate) struct Unblock<'a>(pub(crate) &'a crate::deadlock::Participant);

impl Drop for Unblock<'_> {
    fn drop(&mut self) {
        self.0.unblock();
    }
}
