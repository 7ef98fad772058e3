//! How a cooperative process sleeps on channels shared with OS processes: the greenlet and
//! asyncio side of the engine's `shm::Sleeper` seam.
//!
//! A shared channel's waits are futex waits on words of a segment that other processes
//! change. A thread sleeps on them itself (`shm.rs` `blocking`). A greenlet or an asyncio task
//! must not block the thread it shares with others: it hands the words and its `Waker` to the
//! process's futex watchers (`ferrocsp::shm::watch`, a few threads per process, not one per
//! waiting operation) and switches away; the watcher wakes it when a word moves or its
//! deadline passes, and the engine re-checks what it waits for.
//!
//! - A process greenlet of a ferrocsp scheduler (`sched.rs`) switches to other tasks or the
//!   hub; its `Task` is the waker.
//! - An asyncio task runs each shared operation that may wait on an *operation greenlet*
//!   (`shm_aio.rs`, whose greenlets run their jobs through [`run_as_op`]): the sleeper switches
//!   back to the task's greenlet with a future-compatible `_Waiter` (`aio_waiter.rs`) that
//!   the watcher completes (thread-safely) when the operation should look again; the task
//!   awaits it and switches back in.
//! - In an OS-process network, deadlock detection sees the wait through the watcher's quiet
//!   looks (`Coop::x`, `deadlock/xwait.rs`); a look that finds a verdict wakes the sleeper,
//!   which gives up the operation.
//!
//! Invariants:
//! - The operation runs with the GIL held (a greenlet switch needs it); the segment lock is
//!   never held across a switch (the engine releases it before it sleeps), so another greenlet
//!   of the same thread can use the channel meanwhile.
//! - `IN_OP` is true exactly while code runs on an operation greenlet of this thread: set by
//!   `run_as_op` on entry, cleared by the sleeper before it switches out and set again when
//!   it is switched back in.
//! - An exception thrown into a sleeping greenlet (a task's cancellation, `GreenletExit`)
//!   abandons the wait: the engine withdraws the operation if nothing was sent or taken yet
//!   and the exception propagates; if the hand-off was already under way it completes and the
//!   exception is dropped (the caller sees the result; asyncio re-requests the cancellation).

use std::cell::Cell;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use ferrocsp::shm::{watch_quiet, Quiet, Sleeper};
use ferrocsp::{Wake, Waker};
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

use crate::aio_waiter::{Waiter, Withdraw};
use crate::aio_wake::wake_future_fn;
use crate::deadlock::{CoopWait, Participant};
use crate::sched::greenlet::{getcurrent, switch_returning};
use crate::sched::Task;

thread_local! {
    /// The participant of the asyncio operation running on this thread's operation greenlet
    /// (`run_as_op`; kept aside while that greenlet sleeps), if it said.
    static OP_PART: std::cell::RefCell<Option<Arc<Participant>>> =
        const { std::cell::RefCell::new(None) };
    /// Whether code on this thread runs on an asyncio operation greenlet (module invariants).
    static IN_OP: Cell<bool> = const { Cell::new(false) };
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The cooperative sleeper for the calling code, if it is a greenlet task or an asyncio
/// operation greenlet (None: a plain thread, which sleeps on the futex itself).
pub(crate) fn sleeper(py: Python<'_>) -> Option<Coop<'_>> {
    if let Some(task) = crate::sched::current_task() {
        return Some(Coop { py, how: How::Task(task), err: None, x: CoopWait::default() });
    }
    IN_OP.with(Cell::get).then(|| Coop { py, how: How::Op, err: None, x: CoopWait::default() })
}

enum How {
    Task(Arc<Task>),
    Op,
}

/// A cooperative sleeper; `err` keeps an exception thrown in while it slept; `x`, what
/// deadlock detection across OS processes sees of the operation's wait.
pub(crate) struct Coop<'py> {
    py: Python<'py>,
    how: How,
    pub(crate) err: Option<PyErr>,
    pub(crate) x: CoopWait,
}

/// The participant a cooperative sleeper waits for: its greenlet task's, or the asyncio
/// process's whose task switched to this operation greenlet (the greenlet's parent, suspended
/// in that task's context; the operation greenlet has a context of its own).
fn participant(py: Python<'_>, how: &How) -> Option<Arc<Participant>> {
    match how {
        How::Task(task) => Some(task.participant()),
        How::Op => {
            // The op that runs here said whose it is (a read or a write records its
            // participant before it starts): no lookup through Python.
            if let Some(p) = OP_PART.with(|c| c.borrow().clone()) {
                return Some(p); // `hook` keeps it only if it is of this process
            }
            let me = getcurrent(py).ok()?;
            let ctx = me.getattr("parent").ok()?.getattr("gr_context").ok()?;
            crate::deadlock::async_participant_in(py, &ctx)
        }
    }
}

impl Sleeper for Coop<'_> {
    fn sleep(&mut self, words: &[&AtomicU32], seen: &[u32], until: Option<Instant>) -> bool {
        let (py, how) = (self.py, &self.how);
        let quiet = self.x.hook(until, || participant(py, how));
        let r = match how {
            How::Task(task) => sleep_task(py, task, words, seen, until, quiet),
            How::Op => sleep_op(py, words, seen, until, quiet),
        };
        match r {
            Ok(()) => self.x.aborted(),
            Err(e) => {
                self.err = Some(e);
                true
            }
        }
    }
}

fn watch_err(e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("cannot start a shared-channel watcher thread: {e}"))
}

fn sleep_task(
    py: Python<'_>,
    task: &Arc<Task>,
    words: &[&AtomicU32],
    seen: &[u32],
    until: Option<Instant>,
    quiet: Option<(Arc<dyn Quiet>, Duration)>,
) -> PyResult<()> {
    let waker = Waker::Custom(Arc::clone(task) as Arc<dyn Wake>);
    let registered = watch_quiet(words, seen, until, waker, quiet).map_err(watch_err)?;
    // Timers of an earlier wait must not resume us: this wait's deadline is the watcher's.
    task.next_wait_gen();
    let r = task.switch_out(py);
    drop(registered);
    r
}

fn sleep_op(
    py: Python<'_>,
    words: &[&AtomicU32],
    seen: &[u32],
    until: Option<Instant>,
    quiet: Option<(Arc<dyn Quiet>, Duration)>,
) -> PyResult<()> {
    let event_loop = GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?.call0()?;
    // A cancellation reaches the operation as an exception thrown into this greenlet (the
    // task's `throw`), so the waiter itself has nothing to withdraw.
    let fut = Waiter::new(py, event_loop.clone().unbind(), Weak::<NoWithdraw>::new())?;
    // What `Future.__await__` does before yielding itself to the task.
    fut.get().set_blocking(true);
    let wake = FutureWake {
        event_loop: event_loop.unbind(),
        thread: crate::pythread::current_thread(),
        fut: Mutex::new(Some(fut.clone_ref(py))),
    };
    let registered =
        watch_quiet(words, seen, until, Waker::Custom(Arc::new(wake)), quiet).map_err(watch_err)?;
    let parent = getcurrent(py)?.getattr(intern!(py, "parent"))?;
    IN_OP.with(|c| c.set(false));
    // Other operation greenlets run meanwhile: this one's participant comes back with it.
    let mine = OP_PART.with(|c| c.borrow_mut().take());
    let r = switch_returning(py, &parent, &PyTuple::new(py, [fut])?);
    OP_PART.with(|c| *c.borrow_mut() = mine);
    IN_OP.with(|c| c.set(true));
    drop(registered);
    r.map(drop)
}

struct NoWithdraw;

impl Withdraw for NoWithdraw {
    fn withdraw(&self, _py: Python<'_>) {}
}

/// Completes an operation greenlet's waiter on its loop (from the watcher thread).
struct FutureWake {
    event_loop: Py<PyAny>,
    thread: ThreadId,
    fut: Mutex<Option<Py<Waiter>>>,
}

impl Wake for FutureWake {
    fn wake(&self) {
        let Some(fut) = self.fut.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        // From a watcher thread: never once the interpreter is exiting (nobody awaits then).
        crate::deadlock::attach_unless_exiting(|py| {
            let r = if crate::pythread::current_thread() == self.thread {
                Waiter::complete(fut.bind(py))
            } else {
                wake_future_fn(py).and_then(|wake| {
                    self.event_loop
                        .call_method1(py, intern!(py, "call_soon_threadsafe"), (wake, fut))
                        .map(drop)
                })
            };
            // A closed loop has no task left to wake; nothing else can fail here.
            drop(r);
        });
    }
}

/// Runs `f` as the body of an asyncio operation greenlet (`shm_aio.rs`), so that the
/// shared-channel waits inside it switch back to the task instead of blocking the event
/// loop's thread (see the module docs).
pub(crate) fn run_as_op<T>(part: Option<Arc<Participant>>, f: impl FnOnce() -> T) -> T {
    let previous = IN_OP.with(|c| c.replace(true));
    let previous_part = OP_PART.with(|c| c.replace(part));
    let r = f();
    OP_PART.with(|c| *c.borrow_mut() = previous_part);
    IN_OP.with(|c| c.set(previous));
    r
}
