//! Who the caller is (its thread's, task's or greenlet's participant), and the Python API of
//! the registry (`_participant_enter`/`_exit`, `_ignore_thread`, `_participants`).
//!
//! Invariants:
//! - A thread participant lives in a thread-local slot and is removed when its thread ends
//!   (the slot's destructor) or its process ends (`leave_thread`).
//! - `_participants` only reads: it never blocks on a channel and never holds a lock while
//!   Python code runs.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use ferrocsp::Waker;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::lock;
use super::participant::{
    thread_ident, Participant, ASYNC_ME_GET, CURRENT_TASK, GET_RUNNING_LOOP, IGNORED, REGISTRY,
};
use super::record::{Backend, Stamp};
use super::watchdog::IN_PYTHON;

// ----- who is the caller -----

/// Registers a participant (`Participant::register`) and makes sure the watchdog runs.
fn register(
    backend: Backend,
    thread: u64,
    task: Option<usize>,
    event_loop: Option<Py<PyAny>>,
    fallback: String,
    name: Option<String>,
) -> Arc<Participant> {
    let p = Participant::register(backend, thread, task, event_loop, fallback, name);
    super::watchdog::start();
    p
}

/// The calling thread's participant record; dropped (removed) when the thread ends.
struct ThreadSlot(Arc<Participant>);

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        self.0.remove();
    }
}

thread_local! {
    static THREAD: RefCell<Option<ThreadSlot>> = const { RefCell::new(None) };
}

/// The participant of the calling OS thread, registered on first use.
pub(crate) fn thread_participant(py: Python<'_>) -> PyResult<Arc<Participant>> {
    if let Some(p) = THREAD.with(|t| t.borrow().as_ref().map(|s| Arc::clone(&s.0))) {
        if p.here() {
            return Ok(p);
        }
        // This thread forked this process (`fork`): the participant is its parent's, and must
        // not be removed from this process's registry (it is not in it) nor locked.
        std::mem::forget(THREAD.with(|t| t.borrow_mut().take()));
    }
    let ident = thread_ident(py)?;
    let threading = py.import("threading")?;
    let fallback: String = threading.call_method0("current_thread")?.getattr("name")?.extract()?;
    let name = crate::thread_name::get();
    let p = register(Backend::Thread, ident, None, None, fallback, name);
    p.set_waker(Waker::current_thread());
    THREAD.with(|t| *t.borrow_mut() = Some(ThreadSlot(Arc::clone(&p))));
    Ok(p)
}

/// Removes the calling thread's participant, if any (its process ended).
pub(crate) fn leave_thread() {
    // Dropping the slot removes the record (outside the RefCell borrow).
    let slot = THREAD.with(|t| t.borrow_mut().take());
    drop(slot);
}

/// Registers a greenlet task of the scheduler running on thread `ident`.
pub(crate) fn greenlet_participant(ident: u64) -> Arc<Participant> {
    register(Backend::Greenlet, ident, None, None, "greenlet".into(), None)
}

/// Registers a coroutine task of the native coroutine scheduler running on thread `ident`.
pub(crate) fn coroutine_participant(ident: u64) -> Arc<Participant> {
    register(Backend::Coroutine, ident, None, None, "coroutine".into(), None)
}

fn current_task_id(py: Python<'_>) -> Option<usize> {
    let task = CURRENT_TASK.import(py, "asyncio", "current_task").ok()?.call0().ok()?;
    if task.is_none() {
        return None;
    }
    Some(task.as_ptr() as usize)
}

/// The asyncio participant of the running task (an `async def` process), if any.
///
/// Found through the `ferrocsp._process._async_me` context variable, not by the current task:
/// `asyncio.current_task()` costs a `getpid` system call. A task that a process created
/// inherits the variable and records its waits on its process's record; that never makes a
/// false report, since such a task is no participant, so the check finds its loop not covered.
pub(crate) fn async_participant(py: Python<'_>) -> Option<Arc<Participant>> {
    let get = ASYNC_ME_GET
        .get_or_try_init(py, || {
            let var = py.import("ferrocsp._process")?.getattr("_async_me")?;
            var.getattr("get").map(Bound::unbind)
        })
        .ok()?;
    let value = get.call0(py).ok()?.into_bound(py);
    let p = &value.cast::<ParticipantRef>().ok()?.get().0;
    p.here().then(|| Arc::clone(p)) // not the parent's, in a child made by `fork`
}

static ASYNC_ME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The asyncio participant recorded in `ctx`, a `contextvars.Context` (an asyncio operation
/// greenlet runs in a context of its own: its task's is the one its parent greenlet holds).
pub(crate) fn async_participant_in(
    py: Python<'_>,
    ctx: &Bound<'_, PyAny>,
) -> Option<Arc<Participant>> {
    let var = ASYNC_ME.import(py, "ferrocsp._process", "_async_me").ok()?;
    let value = ctx.call_method1("get", (var,)).ok()?;
    let p = &value.cast::<ParticipantRef>().ok()?.get().0;
    p.here().then(|| Arc::clone(p))
}

/// A participant as a Python object (what `_participant_enter` returns).
#[pyclass(frozen, module = "ferrocsp._native", name = "_Participant")]
#[derive(Debug)]
pub(crate) struct ParticipantRef(Arc<Participant>);

// ----- Python API -----

/// Registers the running asyncio task as a participant (an `async def` process, or with
/// `joining` a task that waits for its own processes); returns its id for `_participant_exit`.
#[pyfunction]
#[pyo3(signature = (name, joining = false))]
pub(crate) fn _participant_enter(
    py: Python<'_>,
    name: String,
    joining: bool,
) -> PyResult<ParticipantRef> {
    let event_loop = GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?.call0()?;
    let task = current_task_id(py);
    let ident = thread_ident(py)?;
    let p = register(
        Backend::Asyncio,
        ident,
        task,
        Some(event_loop.unbind()),
        name.clone(),
        Some(name),
    );
    if joining {
        p.joining(true);
    }
    Ok(ParticipantRef(p))
}

/// Removes the participant registered by `_participant_enter`.
#[pyfunction]
pub(crate) fn _participant_exit(p: &Bound<'_, ParticipantRef>) {
    p.get().0.remove();
}

/// Marks the calling thread as an idle-when-blocked helper (an `io()` worker) that never keeps
/// a deadlock from being reported.
#[pyfunction]
pub(crate) fn _ignore_thread(py: Python<'_>) -> PyResult<()> {
    let ident = thread_ident(py)?;
    lock(&IGNORED).get_or_insert_with(HashSet::new).insert(ident);
    Ok(())
}

/// Marks thread `ident`, a kept host thread (`_backends/_pool.py`), as idle (`True`: ignored by
/// detection, as `_ignore_thread`'s threads are) or busy again (`False`). The thread marks
/// itself idle after its job has ended; whoever hands it the next job marks it busy before
/// the hand-off, while that caller itself still runs: so a proof, which needs the caller
/// stuck, always finds the worker counted, from before it can run anything until it is idle.
#[pyfunction]
pub(crate) fn _idle_thread(ident: u64, idle: bool) {
    let mut ignored = lock(&IGNORED);
    if idle {
        ignored.get_or_insert_with(HashSet::new).insert(ident);
    } else if let Some(set) = ignored.as_mut() {
        set.remove(&ident);
    }
}

/// Called at interpreter exit (`atexit`): waits, with the GIL released, until the watchdog is
/// outside Python, and keeps it from running Python code again (see the module doc).
#[pyfunction]
pub(crate) fn _stop_watchdog(py: Python<'_>) {
    crate::detach::detach(py, || *lock(&IN_PYTHON) = false);
}

/// One dict per live participant: name, backend, state ("running", "blocked", "joining",
/// "blocked (shared)": waiting on channels shared with OS processes, "blocked (shared,
/// watched)": such a wait that detection across OS processes sees, or "blocked
/// (networked)", see `_shared_wait`),
/// waits (list of (channel name, "read" | "write")), alt, timeout, since (seconds blocked).
#[pyfunction]
pub(crate) fn _participants(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let mut parts: Vec<Arc<Participant>> =
        lock(&REGISTRY).as_ref().map(|r| r.values().cloned().collect()).unwrap_or_default();
    parts.sort_by_key(|p| p.id);
    let out = PyList::empty(py);
    let stamp = Stamp::now();
    for p in parts {
        let d = PyDict::new(py);
        let (name, state, waits, alt, timeout, since) = {
            let i = lock(&p.inner);
            if i.removed {
                continue;
            }
            let name = i.name.clone().unwrap_or_else(|| p.fallback.clone());
            if i.join_depth > 0 {
                let since = i.join_since.map_or(0.0, |s| s.secs_since(stamp));
                (name, "joining", Vec::new(), false, false, since)
            } else if let (true, 0) = (i.blocked.on, i.io_depth) {
                let b = &i.blocked;
                let since = b.since.secs_since(stamp);
                (name, "blocked", b.waits.clone(), b.alt, b.timeout, since)
            } else if let Some((waits, since, networked)) = &i.shared {
                let alt = waits.len() > 1;
                let state = if *networked {
                    "blocked (networked)"
                } else if i.xwait.is_some_and(|x| x.confirmed) {
                    "blocked (shared, watched)" // seen by detection across OS processes
                } else {
                    "blocked (shared)"
                };
                (name, state, waits.clone(), alt, false, since.secs_since(stamp))
            } else {
                (name, "running", Vec::new(), false, false, 0.0)
            }
        };
        d.set_item("name", name)?;
        d.set_item("backend", p.backend.as_str())?;
        d.set_item("state", state)?;
        let w = PyList::empty(py);
        for (chan, write) in waits {
            w.append(PyTuple::new(py, [chan, (if write { "write" } else { "read" }).into()])?)?;
        }
        d.set_item("waits", w)?;
        d.set_item("alt", alt)?;
        d.set_item("timeout", timeout)?;
        d.set_item("since", since)?;
        out.append(d)?;
    }
    Ok(out)
}
