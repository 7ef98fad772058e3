//! The name of the process running on this OS thread (or in this greenlet), for error messages.
//!
//! The Python backends set it when a process starts and clear it when it ends; it is read only
//! when an error message is built, so it costs nothing on the hot path.

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

thread_local! {
    static NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Sets (or with `None`, clears) the current thread's process name; returns the previous one.
///
/// On a thread this also registers the thread as a deadlock-detection participant (a thread
/// process is one from its start, not only from its first blocking operation); clearing the
/// name (the process ended) removes it, until the thread blocks on a channel again.
#[pyfunction]
#[pyo3(signature = (name))]
pub(crate) fn _set_process_name(py: Python<'_>, name: Option<String>) -> PyResult<Option<String>> {
    if let Some(task) = crate::sched::current_task() {
        return Ok(task.set_name(name));
    }
    let previous = NAME.with(|n| std::mem::replace(&mut *n.borrow_mut(), name.clone()));
    match name {
        Some(_) => crate::deadlock::thread_participant(py)?.set_name(name),
        None => crate::deadlock::leave_thread(),
    }
    Ok(previous)
}

/// The process name set on the calling OS thread (not a greenlet's), if any.
pub(crate) fn thread_process_name() -> Option<String> {
    NAME.with(|n| n.borrow().clone())
}

/// The current thread's process name, if it runs a ferrocsp process.
#[pyfunction]
pub(crate) fn _process_name() -> Option<String> {
    if let Some(task) = crate::sched::current_task() {
        return task.name();
    }
    NAME.with(|n| n.borrow().clone())
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
