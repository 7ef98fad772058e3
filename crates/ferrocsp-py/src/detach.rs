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
//! - The check and the GIL's retaking are two steps, and the retaking waits for the GIL (for a
//!   switch interval or more when threads contend for it): finalization that begins in
//!   between still ends the thread by the abort above. So the last exit handler
//!   (`_freeze_hubs`) also closes that window for good: it marks the exit (`EXITING`), then
//!   waits (GIL released, bounded) until no thread is between a blocking call's end and the
//!   GIL (`RETAKING`). Every thread counts itself in before it checks the mark (both
//!   sequentially consistent: either the handler sees the count, or the thread sees the
//!   mark), and a thread that sees the mark, other than the exiting one, does not take the GIL
//!   back: it waits for finalization and parks for good once it begins. Only if finalization
//!   has not begun within `SIT_OUT` does it go on (an exit handler that ran before ferrocsp
//!   registered its own runs after it, and may join a thread that is doing channel operations:
//!   that join is delayed by `SIT_OUT`, never hung).

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, Ordering::SeqCst};
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

/// At module import: looks the finalizing test up now rather than on a first blocking call,
/// and makes a child made by `fork` start with no thread retaking the GIL (those counted are
/// its parent's threads, which it does not have).
pub(crate) fn init() {
    IS_FINALIZING.get_or_init(lookup);
    static FORK_HANDLER: std::sync::Once = std::sync::Once::new();
    FORK_HANDLER.call_once(|| {
        // SAFETY: registers a child handler that only stores two atomics (allowed between
        // `fork` and `exec`). It fails only out of memory: a child's exit handler would then
        // wait its bound for threads it does not have.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
}

extern "C" fn forked_child() {
    RETAKING.store(0, SeqCst);
    EXITING.store(false, SeqCst);
}

/// Parks the calling thread for good if the interpreter is finalizing: for a Python thread
/// about to take the GIL back from inside a blocking call (see the module doc).
fn park_if_finalizing() {
    if finalizing() {
        loop {
            std::thread::park();
        }
    }
}

/// `py.detach(f)` (whose `Ungil` bound is `Send` outside nightly builds), except that a thread
/// returning from `f` while the interpreter exits does not take the GIL back (see the module
/// doc).
pub(crate) fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    let r = py.detach(|| {
        let r = f();
        retake_begin();
        r
    });
    retake_end();
    r
}

/// `Python::attach(f)` from inside `detach`'s `f` (a periodic check during a long wait), by
/// the same rule as `detach`'s return.
pub(crate) fn attach<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
    retake_begin();
    Python::attach(|py| {
        retake_end();
        f(py)
    })
}

/// Set once, by the last exit handler (`_freeze_hubs`): hubs stop resuming greenlets, and
/// only the exiting thread takes the GIL back from a blocking call (see the module doc).
static EXITING: AtomicBool = AtomicBool::new(false);
/// The thread that set `EXITING` (a `pthread_t`), which runs the rest of the exit.
static EXITER: AtomicUsize = AtomicUsize::new(0);
/// Threads between a blocking call's end and holding the GIL again.
static RETAKING: AtomicUsize = AtomicUsize::new(0);
/// How long a thread that saw `EXITING` waits for finalization before it takes the GIL back
/// after all (an exit handler after ours may be waiting for it).
const SIT_OUT: Duration = Duration::from_secs(1);

fn on_exiting_thread() -> bool {
    // SAFETY: `pthread_self` has no preconditions.
    EXITER.load(Ordering::Relaxed) == unsafe { libc::pthread_self() } as usize
}

/// Before a thread without the GIL takes it back: counts it in `RETAKING` (until
/// `retake_end`, with the GIL held). Once the interpreter exits, a thread other than the
/// exiting one first waits, uncounted, for finalization (then it parks for good), at most
/// `SIT_OUT`.
fn retake_begin() {
    park_if_finalizing();
    RETAKING.fetch_add(1, SeqCst);
    if EXITING.load(SeqCst) && !on_exiting_thread() {
        // Not counted while it waits: the exit handler must not wait for it.
        RETAKING.fetch_sub(1, SeqCst);
        let until = Instant::now() + SIT_OUT;
        while Instant::now() < until {
            park_if_finalizing();
            std::thread::park_timeout(Duration::from_millis(1)); // at exit only
        }
        RETAKING.fetch_add(1, SeqCst);
    }
}

/// After `retake_begin`, once the GIL is held again.
fn retake_end() {
    RETAKING.fetch_sub(1, SeqCst);
}

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
        if EXITING.load(Ordering::Acquire) {
            py.detach(|| retire_frozen_hub());
        }
    }

    /// `detach` for a hub's idle park; woken once frozen, it parks for good instead of
    /// taking the GIL back.
    pub(crate) fn park<F: Send + FnOnce()>(&self, py: Python<'_>, f: F) {
        detach(py, || {
            f();
            if EXITING.load(Ordering::Acquire) {
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
/// resume no greenlet any more (idle ones are woken to see it), and threads other than this
/// one no longer take the GIL back from blocking calls; waits (GIL released) up to
/// ``timeout`` seconds until every hub parked for good or ended and no thread is on its way
/// back to the GIL; returns whether that happened.
#[pyfunction]
pub(crate) fn _freeze_hubs(py: Python<'_>, timeout: f64) -> bool {
    // SAFETY: `pthread_self` has no preconditions.
    EXITER.store(unsafe { libc::pthread_self() } as usize, Ordering::Relaxed);
    EXITING.store(true, SeqCst);
    let hubs_mine = {
        let threads = hub_threads();
        // No hub ever ran in this process if the counts are a parent's.
        let mine = counts_are_mine();
        for t in threads.iter().filter(|_| mine) {
            t.unpark();
        }
        mine
    };
    let limit = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::ZERO);
    let deadline = Instant::now() + limit;
    py.detach(|| loop {
        let hubs_done = !hubs_mine || HUBS_ACTIVE.load(Ordering::Acquire) == 0;
        if hubs_done && RETAKING.load(SeqCst) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1)); // a bounded poll, at exit only
    })
}
