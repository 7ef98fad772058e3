//! The name of the process running on this OS thread (a thread process), for error messages,
//! deadlock reports and dumps. A greenlet task keeps its own name (`sched::Task`).
//!
//! Invariant: set by the thread process's start and cleared by its end
//! (`process::_set_process_name`); read only when a message or a participant record is made,
//! so it costs nothing on the hot path.

use std::cell::RefCell;

thread_local! {
    static NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The calling OS thread's process name, if it runs one.
pub(crate) fn get() -> Option<String> {
    NAME.with(|n| n.borrow().clone())
}

/// Sets (or with `None`, clears) the calling OS thread's process name; returns the previous.
pub(crate) fn replace(name: Option<String>) -> Option<String> {
    NAME.with(|n| std::mem::replace(&mut *n.borrow_mut(), name))
}
