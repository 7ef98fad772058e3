//! Running the body of a C slot (a function CPython calls through a type's slot table, not
//! through PyO3's trampolines) with the Python token.
//!
//! Invariant: a slot never asks PyO3 to attach once the interpreter finalizes. CPython calls
//! slots from an attached thread, so `Python::attach` would only record that (references
//! dropped inside are then released at once, not deferred to PyO3's pool); but once
//! `Py_FinalizeEx` has begun, `Py_IsInitialized` is 0 and PyO3 refuses to attach with a panic,
//! which in an `extern "C"` slot aborts the process. Objects are still freed (module dicts are
//! cleared) and may be called (finalizers) then, so the token is assumed instead, as PyO3's
//! own slot trampolines do; a reference dropped inside then waits in PyO3's pool, which is
//! harmless at exit.

use pyo3::Python;

/// Runs a slot's body with the Python token (module docs).
pub(crate) fn in_slot<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    let mut f = Some(f);
    match Python::try_attach(|py| f.take().map(|f| f(py))).flatten() {
        Some(r) => r,
        None => {
            // SAFETY: the caller is a slot CPython called, so the thread is attached.
            let py = unsafe { Python::assume_attached() };
            match f.take() {
                Some(f) => f(py),
                None => unreachable!("try_attach returned without running the slot"),
            }
        }
    }
}
