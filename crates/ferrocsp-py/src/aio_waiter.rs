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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Weak;
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

/// A future-compatible object a waiting channel operation yields to its task (see the module
/// docs). Only the operation completes it; `cancel` (from `Task.cancel`) cancels it.
#[pyclass(module = "ferrocsp._native", name = "_Waiter")]
pub struct Waiter {
    event_loop: Py<PyAny>,
    thread: ThreadId,
    state: State,
    callbacks: Vec<Callback>,
    op: Weak<dyn Withdraw>,
    /// asyncio's protocol flag: true while a task is yielding this object.
    #[pyo3(get, set, name = "_asyncio_future_blocking")]
    pub(crate) blocking: bool,
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
                state: State::Pending,
                callbacks: Vec::new(),
                op,
                blocking: false,
            },
        )
    }

    /// Completes the waiter with `None` unless it is already done; queues its callbacks.
    pub(crate) fn complete(me: &Bound<'_, Waiter>) -> PyResult<()> {
        let callbacks = {
            let mut w = me.borrow_mut();
            if !matches!(w.state, State::Pending) {
                return Ok(());
            }
            w.state = State::Done;
            std::mem::take(&mut w.callbacks)
        };
        Self::schedule_all(me, callbacks)
    }

    pub(crate) fn is_done(&self) -> bool {
        !matches!(self.state, State::Pending)
    }

    fn schedule_all(me: &Bound<'_, Waiter>, callbacks: Vec<Callback>) -> PyResult<()> {
        if callbacks.is_empty() {
            return Ok(());
        }
        let (event_loop, thread) = {
            let w = me.borrow();
            (w.event_loop.clone_ref(me.py()), w.thread)
        };
        for (func, context) in callbacks {
            schedule(me.py(), event_loop.bind(me.py()), thread, func, me.as_any(), context)?;
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

    fn done(&self) -> bool {
        self.is_done()
    }

    fn cancelled(&self) -> bool {
        matches!(self.state, State::Cancelled(_))
    }

    /// `None` once completed; raises `CancelledError` if cancelled, `InvalidStateError` before.
    fn result(&self, py: Python<'_>) -> PyResult<()> {
        match &self.state {
            State::Done => Ok(()),
            State::Cancelled(msg) => Err(Self::cancelled_error(py, msg)?),
            State::Pending => Err(PyErr::from_value(
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
        if slf.borrow().is_done() {
            return Self::schedule_all(slf, vec![(func, context)]);
        }
        slf.borrow_mut().callbacks.push((func, context));
        Ok(())
    }

    fn remove_done_callback(&mut self, py: Python<'_>, func: &Bound<'_, PyAny>) -> PyResult<usize> {
        let before = self.callbacks.len();
        let mut kept = Vec::with_capacity(before);
        for cb in std::mem::take(&mut self.callbacks) {
            if !cb.0.bind(py).eq(func)? {
                kept.push(cb);
            }
        }
        self.callbacks = kept;
        Ok(before - self.callbacks.len())
    }

    #[pyo3(signature = (msg = None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let (callbacks, op) = {
            let mut w = slf.borrow_mut();
            if w.is_done() {
                return Ok(false);
            }
            w.state = State::Cancelled(msg);
            (std::mem::take(&mut w.callbacks), w.op.upgrade())
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
        if !slf.borrow().is_done() {
            slf.borrow_mut().blocking = true;
            return Ok(Some(slf.clone().unbind()));
        }
        slf.borrow().result(slf.py())?;
        Ok(None)
    }

    fn __repr__(&self) -> &'static str {
        match self.state {
            State::Pending => "<_Waiter pending>",
            State::Done => "<_Waiter finished>",
            State::Cancelled(_) => "<_Waiter cancelled>",
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        for (f, c) in &self.callbacks {
            visit.call(f)?;
            if let Some(c) = c {
                visit.call(c)?;
            }
        }
        if let State::Cancelled(Some(m)) = &self.state {
            visit.call(m)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.callbacks.clear();
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
        let mut q = queue.borrow_mut();
        q.entries.push_back(Entry { func, waiter: waiter.clone().unbind(), context });
        !std::mem::replace(&mut q.scheduled, true)
    };
    if start {
        if let Err(e) = event_loop.call_method1(intern!(py, "call_soon"), (queue.clone(),)) {
            queue.borrow_mut().scheduled = false;
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
#[pyclass(module = "ferrocsp._native", name = "_RunQueue")]
pub struct RunQueue {
    event_loop: Py<PyAny>,
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
                .filter(|q| q.borrow(py).event_loop.bind(py).is(event_loop))
                .map(|q| q.clone_ref(py))
        });
        if let Some(q) = cached {
            return Ok(q.into_bound(py));
        }
        let q = Py::new(
            py,
            RunQueue {
                event_loop: event_loop.clone().unbind(),
                entries: VecDeque::new(),
                scheduled: false,
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
        for _ in 0..BATCH {
            let Some(e) = slf.borrow_mut().entries.pop_front() else {
                slf.borrow_mut().scheduled = false;
                return Ok(());
            };
            let r = match &e.context {
                Some(c) => c.bind(py).call_method1(intern!(py, "run"), (e.func, e.waiter)),
                None => e.func.bind(py).call1(PyTuple::new(py, [e.waiter])?),
            };
            if let Err(err) = r {
                let more = !slf.borrow().entries.is_empty();
                if more {
                    Self::requeue(slf)?;
                } else {
                    slf.borrow_mut().scheduled = false;
                }
                return Err(err);
            }
        }
        if slf.borrow().entries.is_empty() {
            slf.borrow_mut().scheduled = false;
            Ok(())
        } else {
            Self::requeue(slf)
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        for e in &self.entries {
            visit.call(&e.func)?;
            visit.call(&e.waiter)?;
            if let Some(c) = &e.context {
                visit.call(c)?;
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.entries.clear();
    }
}

impl RunQueue {
    fn requeue(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let event_loop = slf.borrow().event_loop.clone_ref(py);
        event_loop
            .bind(py)
            .call_method1(intern!(py, "call_soon"), (slf.clone(),))
            .map(drop)
            .map_err(|e| {
                slf.borrow_mut().scheduled = false;
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
        write!(f, "RunQueue({} queued, scheduled: {})", self.entries.len(), self.scheduled)
    }
}
