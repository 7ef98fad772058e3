//! What an awaiting channel operation hands to its task: a future-compatible `_Waiter`, and
//! the per-loop run queue through which its wake-ups resume tasks.
//!
//! A task suspended on `asyncio.Future` is resumed through `loop.call_soon`: in CPython 3.11
//! that builds a Python `Handle` (a Python `__init__`) and costs a full loop iteration (an
//! `epoll_wait` and `_run_once`'s bookkeeping) per wake-up, about as much as the rest of a
//! communication. A channel wake-up on the loop's own thread does not need either: the
//! `_Waiter` (which the task accepts as any future-compatible object: `_asyncio_future_blocking`,
//! `get_loop`, `add_done_callback`, `result`, `cancel`) queues its task's wake-up callback on
//! the loop's [`RunQueue`], and one `call_soon` of the queue runs every wake-up queued until it
//! is empty, up to [`BATCH`] of them, in order.
//!
//! Invariants:
//! - A waiter completes once (result `None`, or cancelled); its callbacks are queued once, in
//!   the order they were added, each with the context it was added with.
//! - Callbacks run on the waiter's loop thread, one at a time, never nested in each other: the
//!   queue only appends while it runs, and a callback queued from another thread goes through
//!   `loop.call_soon_threadsafe`.
//! - A run of the queue runs at most `BATCH` callbacks and then, if any remain, re-queues itself
//!   with `call_soon`, behind the callbacks and I/O events already due: other work on the loop
//!   waits for at most `BATCH` task steps.
//! - A callback that raises stops the run: the queue re-queues itself first if callbacks
//!   remain, so none is lost, and the exception reaches the loop as a failed callback's would.
//! - Both types are frozen and keep their mutable state behind a `Mutex` (the flag in an
//!   atomic): correct from any thread without the GIL (free-threaded CPython), where two threads
//!   may call into one waiter at once. Nothing runs Python code or drops a Python reference
//!   while holding one of those locks (a finalizer could need the lock, or a stop-the-world
//!   pause of the interpreter could wait for a thread blocked on it): state is taken out under
//!   the lock and acted on after it is released.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::thread::ThreadId;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::py_tls::Kept;
use crate::pythread::current_thread;

/// Wake-ups run per `call_soon` of a loop's run queue before it yields to the loop.
const BATCH: usize = 64;

static CANCELLED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_STATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// What a waiter's `cancel` does to the operation waiting on it: withdraw it at once.
pub(crate) trait Withdraw: Send + Sync {
    fn withdraw(&self, py: Python<'_>);
}

/// A done-callback: the function and the context to run it in (`None`: the current one).
type Callback = (Py<PyAny>, Option<Py<PyAny>>);

enum State {
    Pending,
    Done,
    Cancelled(Option<Py<PyAny>>),
}

/// What a waiter's lock guards: its state and the callbacks added while it is pending.
struct Inner {
    state: State,
    callbacks: Vec<Callback>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent at each step (a push, a take, a
    // replace of the state), so a panic in one leaves nothing half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A future-compatible object a waiting channel operation yields to its task (see the module
/// docs). Only the operation completes it; `cancel` (from `Task.cancel`) cancels it.
#[pyclass(frozen, module = "ferrocsp._native", name = "_Waiter")]
pub struct Waiter {
    event_loop: Py<PyAny>,
    thread: ThreadId,
    inner: Mutex<Inner>,
    op: Weak<dyn Withdraw>,
    /// asyncio's protocol flag (`_asyncio_future_blocking`): true while a task is yielding
    /// this object.
    blocking: AtomicBool,
}

impl Waiter {
    pub(crate) fn new(
        py: Python<'_>,
        event_loop: Py<PyAny>,
        op: Weak<dyn Withdraw>,
    ) -> PyResult<Py<Waiter>> {
        Py::new(
            py,
            Waiter {
                event_loop,
                thread: current_thread(),
                inner: Mutex::new(Inner { state: State::Pending, callbacks: Vec::new() }),
                op,
                blocking: AtomicBool::new(false),
            },
        )
    }

    /// Completes the waiter with `None` unless it is already done; queues its callbacks.
    pub(crate) fn complete(me: &Bound<'_, Waiter>) -> PyResult<()> {
        let callbacks = {
            let mut w = lock(&me.get().inner);
            if !matches!(w.state, State::Pending) {
                return Ok(());
            }
            w.state = State::Done;
            std::mem::take(&mut w.callbacks)
        };
        Self::schedule_all(me, callbacks)
    }

    pub(crate) fn is_done(&self) -> bool {
        !matches!(lock(&self.inner).state, State::Pending)
    }

    /// Sets asyncio's protocol flag (a task is about to yield this waiter).
    pub(crate) fn set_blocking(&self, on: bool) {
        self.blocking.store(on, Ordering::Release);
    }

    fn schedule_all(me: &Bound<'_, Waiter>, callbacks: Vec<Callback>) -> PyResult<()> {
        let w = me.get();
        for (func, context) in callbacks {
            schedule(me.py(), w.event_loop.bind(me.py()), w.thread, func, me.as_any(), context)?;
        }
        Ok(())
    }

    fn cancelled_error(py: Python<'_>, msg: &Option<Py<PyAny>>) -> PyResult<PyErr> {
        let ty = CANCELLED.import(py, "asyncio", "CancelledError")?;
        Ok(match msg {
            Some(m) => PyErr::from_value(ty.call1((m.clone_ref(py),))?),
            None => PyErr::from_value(ty.call0()?),
        })
    }
}

#[pymethods]
impl Waiter {
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    #[getter(_asyncio_future_blocking)]
    fn get_blocking(&self) -> bool {
        self.blocking.load(Ordering::Acquire)
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking_attr(&self, on: bool) {
        self.set_blocking(on);
    }

    fn done(&self) -> bool {
        self.is_done()
    }

    fn cancelled(&self) -> bool {
        matches!(lock(&self.inner).state, State::Cancelled(_))
    }

    /// `None` once completed; raises `CancelledError` if cancelled, `InvalidStateError` before.
    fn result(&self, py: Python<'_>) -> PyResult<()> {
        // The message is copied out: the exception is built (Python code) after the lock.
        let state = match &lock(&self.inner).state {
            State::Done => None,
            State::Cancelled(msg) => Some(Some(msg.as_ref().map(|m| m.clone_ref(py)))),
            State::Pending => Some(None),
        };
        match state {
            None => Ok(()),
            Some(Some(msg)) => Err(Self::cancelled_error(py, &msg)?),
            Some(None) => Err(PyErr::from_value(
                INVALID_STATE
                    .import(py, "asyncio", "InvalidStateError")?
                    .call1(("Result is not set.",))?,
            )),
        }
    }

    /// Always `None` once completed (a channel operation reports its errors itself).
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.result(py).map(|()| None)
    }

    #[pyo3(signature = (func, *, context = None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        func: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        // Checked and pushed in one critical section: a completion from another thread either
        // comes after the push (and queues this callback) or before the check (and this call
        // queues it), never between.
        let late = {
            let mut w = lock(&slf.get().inner);
            if matches!(w.state, State::Pending) {
                w.callbacks.push((func, context));
                None
            } else {
                Some((func, context))
            }
        };
        match late {
            Some(cb) => Self::schedule_all(slf, vec![cb]),
            None => Ok(()),
        }
    }

    fn remove_done_callback(slf: &Bound<'_, Self>, func: &Bound<'_, PyAny>) -> PyResult<usize> {
        // `==` may run Python code, so it runs on a snapshot taken under the lock; then the
        // matching callbacks (by identity, as the snapshot holds them) are removed under the
        // lock again, leaving any added meanwhile. A done waiter has no callbacks left.
        let py = slf.py();
        let snapshot: Vec<Py<PyAny>> =
            lock(&slf.get().inner).callbacks.iter().map(|cb| cb.0.clone_ref(py)).collect();
        let mut drop_ptrs = Vec::new();
        for f in &snapshot {
            if f.bind(py).eq(func)? {
                drop_ptrs.push(f.as_ptr());
            }
        }
        if drop_ptrs.is_empty() {
            return Ok(0);
        }
        let removed: Vec<Callback> = {
            let mut w = lock(&slf.get().inner);
            let all = std::mem::take(&mut w.callbacks);
            let (gone, kept) = all.into_iter().partition(|cb| drop_ptrs.contains(&cb.0.as_ptr()));
            w.callbacks = kept;
            gone
        };
        let n = removed.len();
        drop(removed);
        Ok(n)
    }

    #[pyo3(signature = (msg = None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let (callbacks, op) = {
            let mut w = lock(&slf.get().inner);
            if !matches!(w.state, State::Pending) {
                drop(w);
                return Ok(false);
            }
            w.state = State::Cancelled(msg);
            (std::mem::take(&mut w.callbacks), slf.get().op.upgrade())
        };
        if let Some(op) = op {
            op.withdraw(slf.py());
        }
        Self::schedule_all(slf, callbacks)?;
        Ok(true)
    }

    /// Completes the waiter unless it is done (a timer's or another thread's wake-up).
    fn _wake(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::complete(slf)
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// `yield self` until done, then return the result (what `Future.__await__` does).
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<Self>>> {
        let w = slf.get();
        if !w.is_done() {
            w.set_blocking(true);
            return Ok(Some(slf.clone().unbind()));
        }
        w.result(slf.py())?;
        Ok(None)
    }

    fn __repr__(&self) -> &'static str {
        match lock(&self.inner).state {
            State::Pending => "<_Waiter pending>",
            State::Done => "<_Waiter finished>",
            State::Cancelled(_) => "<_Waiter cancelled>",
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        // The collector must not block: a waiter whose lock is held right now (by a thread
        // between two of its own steps) is visited without its callbacks this time.
        if let Ok(w) = self.inner.try_lock() {
            for (f, c) in &w.callbacks {
                visit.call(f)?;
                if let Some(c) = c {
                    visit.call(c)?;
                }
            }
            if let State::Cancelled(Some(m)) = &w.state {
                visit.call(m)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let callbacks = std::mem::take(&mut lock(&self.inner).callbacks);
        drop(callbacks);
    }
}

/// Queues `func(waiter)` (in `context`) to run on `event_loop`, whose thread is `thread`.
fn schedule(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    thread: ThreadId,
    func: Py<PyAny>,
    waiter: &Bound<'_, PyAny>,
    context: Option<Py<PyAny>>,
) -> PyResult<()> {
    if current_thread() != thread {
        // Not the loop's thread: asyncio's thread-safe path (which also wakes the loop).
        let kwargs = PyDict::new(py);
        if let Some(c) = context {
            kwargs.set_item(intern!(py, "context"), c)?;
        }
        event_loop.call_method(
            intern!(py, "call_soon_threadsafe"),
            (func, waiter),
            Some(&kwargs),
        )?;
        return Ok(());
    }
    let queue = RunQueue::of(py, event_loop)?;
    let start = {
        let mut q = lock(&queue.get().inner);
        q.entries.push_back(Entry { func, waiter: waiter.clone().unbind(), context });
        !std::mem::replace(&mut q.scheduled, true)
    };
    if start {
        if let Err(e) = event_loop.call_method1(intern!(py, "call_soon"), (queue.clone(),)) {
            lock(&queue.get().inner).scheduled = false;
            return Err(e);
        }
    }
    Ok(())
}

struct Entry {
    func: Py<PyAny>,
    waiter: Py<PyAny>,
    context: Option<Py<PyAny>>,
}

/// The wake-ups queued on one loop (see the module docs). Called by the loop to run them.
#[pyclass(frozen, module = "ferrocsp._native", name = "_RunQueue")]
pub struct RunQueue {
    event_loop: Py<PyAny>,
    inner: Mutex<QueueInner>,
}

struct QueueInner {
    entries: VecDeque<Entry>,
    /// A `call_soon` of this queue is pending (or it is running).
    scheduled: bool,
}

thread_local! {
    /// The run queue of the loop that last queued a wake-up on this thread (a thread runs one
    /// loop at a time; another loop gets a queue of its own and replaces this one). It keeps
    /// that loop object alive, closed or not, until then or until the thread ends (released
    /// then as `py_tls.rs` says).
    static CURRENT: Kept<RefCell<Option<Py<RunQueue>>>> = const { Kept::new(RefCell::new(None)) };
}

impl RunQueue {
    fn of<'py>(py: Python<'py>, event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, RunQueue>> {
        crate::py_tls::reap(py);
        let cached = CURRENT.with(|c| {
            c.borrow()
                .as_ref()
                .filter(|q| q.get().event_loop.bind(py).is(event_loop))
                .map(|q| q.clone_ref(py))
        });
        if let Some(q) = cached {
            return Ok(q.into_bound(py));
        }
        let q = Py::new(
            py,
            RunQueue {
                event_loop: event_loop.clone().unbind(),
                inner: Mutex::new(QueueInner { entries: VecDeque::new(), scheduled: false }),
            },
        )?;
        let old = CURRENT.with(|c| c.borrow_mut().replace(q.clone_ref(py)));
        drop(old);
        Ok(q.into_bound(py))
    }
}

#[pymethods]
impl RunQueue {
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let q = slf.get();
        for _ in 0..BATCH {
            let next = {
                let mut inner = lock(&q.inner);
                let e = inner.entries.pop_front();
                if e.is_none() {
                    inner.scheduled = false;
                }
                e
            };
            let Some(e) = next else { return Ok(()) };
            let r = match &e.context {
                Some(c) => c.bind(py).call_method1(intern!(py, "run"), (e.func, e.waiter)),
                None => e.func.bind(py).call1(PyTuple::new(py, [e.waiter])?),
            };
            if let Err(err) = r {
                let more = {
                    let mut inner = lock(&q.inner);
                    let more = !inner.entries.is_empty();
                    if !more {
                        inner.scheduled = false;
                    }
                    more
                };
                if more {
                    Self::requeue(slf)?;
                }
                return Err(err);
            }
        }
        let more = {
            let mut inner = lock(&q.inner);
            let more = !inner.entries.is_empty();
            if !more {
                inner.scheduled = false;
            }
            more
        };
        if more {
            Self::requeue(slf)
        } else {
            Ok(())
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        // Never block the collector (see `Waiter::__traverse__`).
        if let Ok(inner) = self.inner.try_lock() {
            for e in &inner.entries {
                visit.call(&e.func)?;
                visit.call(&e.waiter)?;
                if let Some(c) = &e.context {
                    visit.call(c)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let entries = std::mem::take(&mut lock(&self.inner).entries);
        drop(entries);
    }
}

impl RunQueue {
    fn requeue(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        slf.get()
            .event_loop
            .bind(py)
            .call_method1(intern!(py, "call_soon"), (slf.clone(),))
            .map(drop)
            .map_err(|e| {
                lock(&slf.get().inner).scheduled = false;
                PyRuntimeError::new_err(format!("could not re-queue channel wake-ups: {e}"))
            })
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.__repr__())
    }
}

impl std::fmt::Debug for RunQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = lock(&self.inner);
        write!(f, "RunQueue({} queued, scheduled: {})", inner.entries.len(), inner.scheduled)
    }
}
