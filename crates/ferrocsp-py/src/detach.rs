//! Releasing the GIL around blocking work without aborting the process at interpreter exit.
//!
//! Once the interpreter is finalizing, CPython ends any thread that tries to take the GIL
//! back (`PyThread_exit_thread`: a forced unwind of the thread's stack). Through the Rust
//! frames of a binding that unwind aborts the whole process ("FATAL: exception not
//! rethrown", SIGABRT), after the program itself had ended: a daemon thread still doing
//! channel operations at exit (a process that ignores a Ctrl-C's poison and loops on timed
//! reads, a greenlet scheduler between two parks) turned a clean exit into a crash. So a
//! thread whose blocking call returns while the interpreter is finalizing never takes the
//! GIL back: it parks until the process is gone, which is what happened to it anyway, minus
//! the abort.
//!
//! Invariants:
//! - While the interpreter runs, `detach(py, f)` is `py.detach(f)`.
//! - A thread that finds the interpreter finalizing after `f` returned never returns from
//!   `detach` (the result is dropped with the process; nothing of it can reach Python code,
//!   which no longer runs on that thread anyway).
//! - The finalizing test needs no GIL: CPython's `Py_IsFinalizing` (3.13+) or
//!   `_Py_IsFinalizing` (3.11, 3.12) read one atomic of the runtime; neither is in the stable
//!   ABI, so they are looked up by name once, and an interpreter with neither keeps PyO3's
//!   behaviour.
//! - Only threads that run Python code (whose blocking call this is) park here. A thread of
//!   Rust's own (the network runtime's) that takes the GIL for a callback is not covered:
//!   parking it could hang a teardown that waits for it.
//! - The check and the GIL's retaking are two steps: finalization that starts between them
//!   still ends the thread as before. The window is the few instructions between the two,
//!   against the whole blocking call before.

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

use pyo3::Python;

type IsFinalizing = unsafe extern "C" fn() -> c_int;

static IS_FINALIZING: OnceLock<Option<IsFinalizing>> = OnceLock::new();

fn lookup() -> Option<IsFinalizing> {
    const NAMES: [&CStr; 2] = [c"Py_IsFinalizing", c"_Py_IsFinalizing"];
    NAMES.iter().find_map(|name| {
        // SAFETY: dlsym with RTLD_DEFAULT searches the symbols loaded into the process (the
        // interpreter's, which loaded this module); the name is a valid C string.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        // SAFETY: both names are CPython functions `int (void)` (Include/pylifecycle.h,
        // Include/cpython/pylifecycle.h); a non-null result is that function.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, IsFinalizing>(p) })
    })
}

/// Whether the interpreter is finalizing (callable without the GIL).
pub(crate) fn finalizing() -> bool {
    // SAFETY: the function takes no arguments and only reads the runtime's state.
    IS_FINALIZING.get_or_init(lookup).is_some_and(|f| unsafe { f() } != 0)
}

/// Looks the finalizing test up now, at module import, rather than on a first blocking call.
pub(crate) fn init() {
    IS_FINALIZING.get_or_init(lookup);
}

/// Parks the calling thread for good if the interpreter is finalizing: for a Python thread
/// about to take the GIL back from inside a blocking call (see the module doc).
pub(crate) fn park_if_finalizing() {
    if finalizing() {
        loop {
            std::thread::park();
        }
    }
}

/// `py.detach(f)` (whose `Ungil` bound is `Send` outside nightly builds), except that a thread returning from `f` while the interpreter is
/// finalizing parks for good instead of taking the GIL back (see the module doc).
pub(crate) fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    py.detach(|| {
        let r = f();
        park_if_finalizing();
        r
    })
}
