//! The name of the process running on this OS thread, for error messages.
//!
//! The Python backends set it when a process starts and clear it when it ends; it is read only
//! when an error message is built, so it costs nothing on the hot path.

use std::cell::RefCell;

use pyo3::prelude::*;

thread_local! {
    static NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Sets (or with `None`, clears) the current thread's process name; returns the previous one.
#[pyfunction]
#[pyo3(signature = (name))]
pub(crate) fn _set_process_name(name: Option<String>) -> Option<String> {
    NAME.with(|n| std::mem::replace(&mut *n.borrow_mut(), name))
}

/// The current thread's process name, if it runs a ferrocsp process.
#[pyfunction]
pub(crate) fn _process_name() -> Option<String> {
    NAME.with(|n| n.borrow().clone())
}

/// `" in process 'name'"`, or an empty string outside processes.
pub(crate) fn current_process_suffix() -> String {
    NAME.with(|n| match &*n.borrow() {
        Some(name) => format!(" in process '{name}'"),
        None => String::new(),
    })
}
