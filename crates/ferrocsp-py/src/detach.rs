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
//! - Greenlet schedulers (`sched.rs`) are frozen at the very end of exit (`_freeze_hubs`, the
//!   last `atexit` handler, after the networks were wound down): a hub then never resumes a
//!   greenlet again and parks for good, idle hubs being woken to see it. A process greenlet's plain Python code could
//!   otherwise take the GIL back during finalization outside any blocking call, and the
//!   unwind through greenlet's own frames aborts just the same. `_freeze_hubs` waits, boundedly,
//!   until every hub parked for good or ended; a greenlet that never yields (pure Python forever)
//!   is beyond it.
//! - The check and the GIL's retaking are two steps: finalization that starts between them
//!   still ends the thread as before. The window is the few instructions between the two,
//!   against the whole blocking call before.

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

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

/// Set once, at the end of exit: hubs stop resuming greenlets (see the module doc).
static FROZEN: AtomicBool = AtomicBool::new(false);
/// Hubs alive and not parked for good.
static HUBS_ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// The threads of the live hubs, so that freezing can wake the idle ones.
static HUB_THREADS: Mutex<Vec<std::thread::Thread>> = Mutex::new(Vec::new());
/// The process whose hubs `HUBS_ACTIVE` and `HUB_THREADS` count: a child made by `fork`
/// inherits its parent's counts, of threads it does not have, and starts afresh.
static HUBS_PID: AtomicU32 = AtomicU32::new(0);

/// Whether the hub counts are this process's (not inherited through `fork`).
fn counts_are_mine() -> bool {
    HUBS_PID.load(Ordering::Acquire) == std::process::id()
}

fn hub_threads() -> std::sync::MutexGuard<'static, Vec<std::thread::Thread>> {
    HUB_THREADS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Parks the calling hub for good (it never runs Python code again), off the active count.
fn retire_frozen_hub() -> ! {
    HUBS_ACTIVE.fetch_sub(1, Ordering::AcqRel);
    loop {
        std::thread::park();
    }
}

/// A live greenlet hub (`sched.rs`), counted until it ends or parks for good once frozen.
pub(crate) struct Hub(());

impl Hub {
    pub(crate) fn enter() -> Self {
        let mut threads = hub_threads();
        if !counts_are_mine() {
            // The first hub of this process (or of a child made by `fork`): the counts
            // inherited are of another process's threads.
            threads.clear();
            HUBS_ACTIVE.store(0, Ordering::Release);
            HUBS_PID.store(std::process::id(), Ordering::Release);
        }
        HUBS_ACTIVE.fetch_add(1, Ordering::AcqRel);
        threads.push(std::thread::current());
        Hub(())
    }

    /// At the top of a hub's loop: once frozen, the hub parks for good (GIL released).
    pub(crate) fn stop_if_frozen(&self, py: Python<'_>) {
        if FROZEN.load(Ordering::Acquire) {
            py.detach(|| retire_frozen_hub());
        }
    }

    /// `detach` for a hub's idle park; woken once frozen, it parks for good instead of
    /// taking the GIL back.
    pub(crate) fn park<F: Send + FnOnce()>(&self, py: Python<'_>, f: F) {
        detach(py, || {
            f();
            if FROZEN.load(Ordering::Acquire) {
                retire_frozen_hub();
            }
        });
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let me = std::thread::current().id();
        hub_threads().retain(|t| t.id() != me);
        HUBS_ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// ``_freeze_hubs(timeout)``: the last exit handler (``_backends/_pool.py``). Greenlet hubs
/// resume no greenlet any more (idle ones are woken to see it); waits (GIL released) up to
/// ``timeout`` seconds until every hub parked for good or ended; returns whether all did.
#[pyfunction]
pub(crate) fn _freeze_hubs(py: Python<'_>, timeout: f64) -> bool {
    FROZEN.store(true, Ordering::Release);
    {
        let threads = hub_threads();
        if !counts_are_mine() {
            return true; // no hub ever ran in this process: the counts are a parent's
        }
        for t in threads.iter() {
            t.unpark();
        }
    }
    let limit = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::ZERO);
    let deadline = Instant::now() + limit;
    py.detach(|| loop {
        if HUBS_ACTIVE.load(Ordering::Acquire) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1)); // a bounded poll, at exit only
    })
}
