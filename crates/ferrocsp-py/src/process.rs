//! The calling process, as the Python backends tell the bindings about it: its name (for error
//! messages, reports and dumps) and what it is doing besides channel operations (waiting for
//! its own processes, inside `io()`, waiting on channels shared with OS processes).
//!
//! The caller is a greenlet task if one runs, else an asyncio process task, else the thread:
//! each has its participant record (`deadlock.rs`), found here.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::deadlock::Participant;

/// Sets (or with `None`, clears) the current thread's process name; returns the previous one.
///
/// On a thread this also registers the thread as a deadlock-detection participant (a thread
/// process is one from its start, not only from its first blocking operation); clearing the
/// name (the process ended) removes it, until the thread blocks on a channel again.
#[pyfunction]
#[pyo3(signature = (name))]
pub(crate) fn _set_process_name(py: Python<'_>, name: Option<String>) -> PyResult<Option<String>> {
    if let Some(task) = crate::sched::current_task().or_else(crate::sched::current_coro) {
        return Ok(task.set_name(name));
    }
    let previous = crate::thread_name::replace(name.clone());
    match name {
        Some(_) => crate::deadlock::thread_participant(py)?.set_name(name),
        None => crate::deadlock::leave_thread(),
    }
    Ok(previous)
}

/// The current thread's process name, if it runs a ferrocsp process.
#[pyfunction]
pub(crate) fn _process_name() -> Option<String> {
    if let Some(task) = crate::sched::current_task().or_else(crate::sched::current_coro) {
        return task.name();
    }
    crate::thread_name::get()
}

static ASYNC_NAME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The name of the asyncio process running in the current task (a context variable, since
/// many async processes share one thread), if any.
fn async_process_name(py: Python<'_>) -> Option<String> {
    let var = ASYNC_NAME.import(py, "ferrocsp._process", "_async_name").ok()?;
    var.call_method0("get").ok()?.extract::<Option<String>>().ok().flatten()
}

/// `" in process 'name'"`, or an empty string outside processes.
pub(crate) fn current_process_suffix(py: Python<'_>) -> String {
    let name = async_process_name(py).or_else(_process_name);
    match name {
        Some(name) => format!(" in process '{name}'"),
        None => String::new(),
    }
}

/// The participant of the calling code: greenlet task, else asyncio process task (when
/// `asyncio` is true), else the thread.
pub(crate) fn current(py: Python<'_>) -> PyResult<Arc<Participant>> {
    if let Some(task) = crate::sched::current_task().or_else(crate::sched::current_coro) {
        return Ok(task.participant());
    }
    if let Some(p) = crate::deadlock::async_participant(py) {
        return Ok(p);
    }
    crate::deadlock::thread_participant(py)
}

/// Marks the caller as waiting for its own processes (`on`), or no longer.
#[pyfunction]
pub(crate) fn _joining(py: Python<'_>, on: bool) -> PyResult<()> {
    current(py)?.joining(on);
    Ok(())
}

/// Marks the caller as waiting for an `io()` call (not stuck: the call runs), or no longer.
#[pyfunction]
pub(crate) fn _io_wait(py: Python<'_>, on: bool) -> PyResult<()> {
    current(py)?.io(on);
    Ok(())
}

/// Records that the caller (thread, greenlet or async process) waits on channels shared with
/// OS processes, or (`networked`) on networked channels: ``waits`` lists (channel name,
/// ``"read"``/``"write"``); None ends the wait. `csp.dump()` shows it, and deadlock reports
/// name these channels; by itself the record never makes the participant stuck: a thread's
/// wait with no deadline counts only once detection across OS processes confirmed it
/// (`deadlock/cross.rs`), a cooperative or networked one never (docs/design.md).
#[pyfunction]
#[pyo3(signature = (waits, networked = false))]
pub(crate) fn _shared_wait(
    py: Python<'_>,
    waits: Option<Vec<(String, String)>>,
    networked: bool,
) -> PyResult<()> {
    let record = match waits {
        None => None,
        Some(w) => {
            let mut out = Vec::with_capacity(w.len());
            for (chan, op) in w {
                let write = match op.as_str() {
                    "read" => false,
                    "write" => true,
                    _ => {
                        return Err(pyo3::exceptions::PyValueError::new_err(format!(
                            "a shared wait is 'read' or 'write', not {op:?}"
                        )))
                    }
                };
                out.push((chan, write));
            }
            Some(out)
        }
    };
    current(py)?.set_shared(record, networked);
    Ok(())
}
