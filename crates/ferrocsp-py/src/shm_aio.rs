//! asyncio on channels shared with OS processes: the awaitable `_ShmOp` that `aread`,
//! `awrite` and `__anext__` of a shared channel (or of its ends) return, and that `aselect`
//! over shared guards awaits (`_shm_await`, from `ferrocsp._shm.aselect`).
//!
//! A shared channel's waits are futex waits in a segment that other processes change, so the
//! event loop cannot be woken by them directly. When awaited, the op first tries without
//! waiting on the task's own stack (the common case between busy peers). If it must wait, it
//! runs the engine's blocking operation on an *operation greenlet* of the loop's thread
//! (idle ones are kept in a per-thread pool: starting a greenlet costs about 15 switches);
//! when the engine must sleep, the cooperative sleeper (`shm_coop.rs`, `sleep_op`) registers
//! the futex words with the process's watcher threads and switches back here with a
//! `_Waiter` that the watcher completes. The op yields that waiter to the task; when the task
//! resumes it, the op switches back into the greenlet and the engine re-checks. No thread per
//! waiting operation, no polling. The greenlet hands the outcome back as an `Outcome`.
//!
//! Invariants:
//! - The event loop's thread never sleeps on a shared channel: an operation greenlet runs only
//!   inside a step of its op (`__next__`/`send`/`throw`/`close`), and every wait in it
//!   switches back to that step.
//! - The op's state is taken out of the object for the length of a step (a re-entrant step
//!   finds it `Done` and fails, never runs the operation twice); a step ends with the state
//!   `Waiting` (a waiter was yielded) or `Done`.
//! - An idle greenlet is pooled only after it handed back an outcome (it then sits in its
//!   body's switch, waiting for the next job); one still inside an operation never is.
//! - Cancelling the awaiting task withdraws the operation: the `CancelledError` is thrown into
//!   the operation greenlet at its sleep, and the engine gives up only where nothing was sent
//!   or taken; a communication already under way completes. Then: withdrawn (or failed) ->
//!   the `CancelledError` propagates; completed -> its result is returned and the cancellation
//!   re-requested for the task's next suspension (`aio_wake::keep_result_on_cancel`), except
//!   for a task whose coroutine is this op itself, which finishes with the result. A second
//!   cancellation while the outcome is pending just resumes the greenlet. So no value is lost
//!   or duplicated by cancellation.
//! - Any other exception thrown in, `close()`, or dropping a waiting op abandons it: the
//!   greenlet gets `GreenletExit` (withdraw, or finish a hand-off under way; the result is
//!   dropped, as a closed generator's), and the wait recorded for `csp.dump()` is cleared.

use std::ptr;
use std::sync::{Arc, Mutex, PoisonError};

use ferrocsp::shm::EndKind;
use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration, PyStopIteration};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use crate::aio_wake::{exception_from_throw_args, is_cancel, keep_result_on_cancel};
use crate::deadlock::Participant;
use crate::errors::{retired_type, would_block_type};
use crate::pythread::Value;
use crate::sched::greenlet::{getcurrent, greenlet_type, switch_returning};
use crate::shm_coop::run_as_op;
use crate::shm_side::ShmSide;

/// Idle operation greenlets kept per thread.
const POOL_MAX: usize = 64;

/// The key of this thread's idle operation greenlets (a list) in its thread-state dict.
const POOL_KEY: &str = "ferrocsp._native.shm_aio.pool";

static SERVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static GREENLET_EXIT: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// What an operation greenlet runs: the engine's waiting operation.
enum Job {
    Read { side: Py<ShmSide>, timeout: Option<f64> },
    Write { side: Py<ShmSide>, parts: Py<PyList>, kinds: Vec<u8>, timeout: Option<f64> },
    Call { f: Py<PyAny>, args: Py<PyTuple> },
}

impl Job {
    fn run(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Job::Read { side, timeout } => side.get().read_recorded(py, *timeout, false, false),
            Job::Write { side, parts, kinds, timeout } => side
                .get()
                .write_recorded(py, parts.bind(py), kinds, *timeout, false, false)
                .map(|()| py.None()),
            Job::Call { f, args } => f.bind(py).call1(args.bind(py)).map(Bound::unbind),
        }
    }
}

/// A job as a greenlet switch carries it (switches carry Python objects only), with the
/// participant it waits for (deadlock detection; None: found by the sleeper). Taken out
/// once: the box outlives the job where nobody can drop it (a greenlet's first switch is its
/// run function's argument, held until the greenlet dies), and an idle pooled greenlet must
/// not keep the job's channels and values alive.
#[pyclass(frozen)]
struct JobBox(Mutex<Option<(Job, Option<Arc<Participant>>)>>);

impl JobBox {
    fn new(job: Job, record: Option<Arc<Participant>>) -> Self {
        JobBox(Mutex::new(Some((job, record))))
    }

    fn take(&self) -> Option<(Job, Option<Arc<Participant>>)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// One operation's outcome, handed by its operation greenlet to the awaiting op: a result,
/// or (`ok` false) the exception it raised. The op takes the value out: the greenlet's
/// switch keeps the outcome's tuple on its stack while it idles in the pool, and the value
/// (an exception's traceback holds the awaiting task's frames) must not live on there.
#[pyclass(frozen)]
struct Outcome {
    ok: bool,
    value: Mutex<Option<Py<PyAny>>>,
}

impl Outcome {
    fn new(ok: bool, value: Py<PyAny>) -> Self {
        Outcome { ok, value: Mutex::new(Some(value)) }
    }

    /// The value, once (None afterwards: a second settle cannot happen, see `ShmOp::settle`).
    fn take(&self, py: Python<'_>) -> Py<PyAny> {
        let v = self.value.lock().unwrap_or_else(PoisonError::into_inner).take();
        v.unwrap_or_else(|| py.None())
    }
}

fn greenlet_exit(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    GREENLET_EXIT.import(py, "greenlet", "GreenletExit")
}

/// An operation greenlet's body: runs one job after another, each outcome handed to the op
/// that switched it in (its parent at the time); between jobs it waits in that switch.
fn serve(py: Python<'_>, job: Bound<'_, PyAny>) -> PyResult<()> {
    let mut job = job;
    loop {
        let Some((work, record)) = job.cast::<JobBox>()?.get().take() else {
            return Err(PyRuntimeError::new_err("ferrocsp: an operation greenlet's job ran twice"));
        };
        drop(job);
        let r = run_as_op(record, || work.run(py));
        drop(work);
        let out = match r {
            Ok(value) => Outcome::new(true, value),
            // Killed while it slept (its op was abandoned or collected) and withdrawn: die.
            Err(e) if e.is_instance(py, greenlet_exit(py)?) => return Err(e),
            Err(e) => Outcome::new(false, e.into_value(py).into_any()),
        };
        let out = PyTuple::new(py, [Bound::new(py, out)?])?;
        let parent = getcurrent(py)?.getattr(intern!(py, "parent"))?;
        job = switch_returning(py, &parent, &out)?;
    }
}

/// `serve` as a greenlet's run function. Deliberately not a PyO3 function: PyO3 counts, per
/// thread, the calls into Rust that hold the GIL, and a pooled greenlet waits for its next
/// job inside this frame for as long as its thread lives; a count left raised by it would
/// make PyO3 release references without the GIL once the thread's Python state is gone
/// (its exit). This frame leaves the count alone: it only runs inside a step of an op, a
/// PyO3 method, which holds the GIL (or when greenlet kills it, also with the GIL).
unsafe extern "C" fn serve_c(
    _module: *mut ffi::PyObject,
    job: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython (greenlet, starting the greenlet) calls a METH_O function with the GIL
    // held and a borrowed, non-null argument.
    let py = unsafe { Python::assume_attached() };
    let job = unsafe { Bound::from_borrowed_ptr(py, job) };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(py, job)));
    let e = match r {
        Ok(Ok(())) => return py.None().into_ptr(),
        Ok(Err(e)) => e,
        Err(_) => pyo3::panic::PanicException::new_err("panic in a ferrocsp operation greenlet"),
    };
    e.restore(py);
    std::ptr::null_mut()
}

fn serve_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    SERVE
        .get_or_try_init(py, || {
            let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
                ml_name: c"_shm_serve".as_ptr(),
                ml_meth: ffi::PyMethodDefPointer { PyCFunction: serve_c },
                ml_flags: ffi::METH_O,
                ml_doc: c"An asyncio operation greenlet's body (shm_aio.rs).".as_ptr(),
            }));
            // SAFETY: the definition is leaked, so it outlives the function object; we hold
            // the GIL. The result is a new reference or null with an exception set.
            let f = unsafe { ffi::PyCFunction_NewEx(def, ptr::null_mut(), ptr::null_mut()) };
            // SAFETY: as above.
            unsafe { Bound::from_owned_ptr_or_err(py, f) }.map(Bound::unbind)
        })
        .map(|f| f.bind(py))
}

/// This thread's pool of idle operation greenlets: a list in its thread-state dict, so it is
/// released with the thread's Python state (greenlet then kills them), never later without
/// the GIL.
fn thread_pool(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    // SAFETY: we hold the GIL; the result is a borrowed reference to this thread's dict, or
    // null (no thread state dict) without an exception.
    let dict = unsafe { ffi::PyThreadState_GetDict() };
    if dict.is_null() {
        return Err(PyRuntimeError::new_err("this thread has no Python thread-state dict"));
    }
    // SAFETY: non-null and borrowed from the thread state, alive while we hold the GIL.
    let dict = unsafe { Bound::from_borrowed_ptr(py, dict) }.cast_into::<PyDict>()?;
    let key = intern!(py, POOL_KEY);
    if let Some(pool) = dict.get_item(key)? {
        return Ok(pool.cast_into::<PyList>()?);
    }
    let pool = PyList::empty(py);
    dict.set_item(key, &pool)?;
    Ok(pool)
}

/// An idle operation greenlet of this thread, from the pool or new.
fn idle_greenlet(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let pool = thread_pool(py)?;
    let n = pool.len();
    if n > 0 {
        let g = pool.get_item(n - 1)?;
        pool.del_item(n - 1)?;
        return Ok(g);
    }
    greenlet_type(py)?.call1((serve_fn(py)?,))
}

fn pool(py: Python<'_>, g: &Py<PyAny>) {
    if let Ok(pool) = thread_pool(py) {
        if pool.len() < POOL_MAX {
            // Failing only without memory; the greenlet is then just not kept.
            drop(pool.append(g));
        }
    }
}

/// What an op does when first awaited.
enum Start {
    Read {
        side: Py<ShmSide>,
        end: Option<u64>,
        kind: EndKind,
        retired_here: bool,
        timeout: Option<f64>,
        anext: bool,
    },
    Write {
        side: Py<ShmSide>,
        end: Option<u64>,
        kind: EndKind,
        retired_here: bool,
        value: Value,
        timeout: Option<f64>,
    },
    Call {
        f: Py<PyAny>,
        args: Py<PyTuple>,
    },
}

/// An op whose operation greenlet sleeps (the task awaits the waiter it yielded).
struct Waiting {
    g: Py<PyAny>,
    /// The cancellation thrown in, once; the outcome is still to be collected.
    cancel: Option<PyErr>,
    /// `__anext__`: `ChannelRetired` ends the iteration.
    anext: bool,
    /// The participant whose wait is recorded for `csp.dump()`; cleared when this ends.
    record: Option<Arc<Participant>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(p) = self.record.take() {
            p.set_shared(None, false);
        }
    }
}

enum State {
    Start(Start),
    Waiting(Waiting),
    Done,
}

enum Out {
    Yield(Py<PyAny>),
    Return(Py<PyAny>),
}

/// An asyncio operation on channels shared with OS processes (returned by ``aread``,
/// ``awrite`` and ``__anext__`` of a shared channel); await it once.
///
/// Frozen, its state behind a `Mutex` held only to take it out or put it back (never while
/// Python code runs or a reference is dropped): steps from two threads at once (free-threaded
/// CPython) are the re-entrant case of the module invariants, not a borrow error.
#[pyclass(frozen, module = "ferrocsp._native", name = "_ShmOp")]
pub(crate) struct ShmOp {
    state: std::sync::Mutex<State>,
}

fn new_op(py: Python<'_>, start: Start) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, ShmOp { state: std::sync::Mutex::new(State::Start(start)) })?.into_any())
}

impl ShmOp {
    /// Takes the state out, leaving `Done` (a concurrent or re-entrant step then fails).
    fn take_state(&self) -> State {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *st, State::Done)
    }

    /// Puts a waiting state back; what it replaces (`Done`) holds no references.
    fn put_state(&self, state: State) {
        let old = {
            let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *st, state)
        };
        drop(old);
    }
}

/// ``aread()`` (``anext``: ``__anext__``) on a shared channel, or through its end `end`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn aread(
    py: Python<'_>,
    side: &Py<ShmSide>,
    end: Option<u64>,
    kind: EndKind,
    retired_here: bool,
    timeout: Option<f64>,
    anext: bool,
) -> PyResult<Py<PyAny>> {
    let side = side.clone_ref(py);
    new_op(py, Start::Read { side, end, kind, retired_here, timeout, anext })
}

/// ``awrite(value)`` on a shared channel, or through its end `end`.
pub(crate) fn awrite(
    py: Python<'_>,
    side: &Py<ShmSide>,
    end: Option<u64>,
    kind: EndKind,
    retired_here: bool,
    value: Value,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    let side = side.clone_ref(py);
    new_op(py, Start::Write { side, end, kind, retired_here, value, timeout })
}

/// ``_shm_await(fn, *args)``: an awaitable running ``fn(*args)`` (an operation on shared
/// channels that may wait, such as ``ferrocsp._shm.select``) on an operation greenlet of the
/// calling thread, withdrawn if the awaiting task is cancelled; see the module docs.
#[pyfunction]
#[pyo3(signature = (f, *args))]
pub(crate) fn _shm_await(py: Python<'_>, f: Py<PyAny>, args: Py<PyTuple>) -> PyResult<Py<PyAny>> {
    new_op(py, Start::Call { f, args })
}

/// `ChannelRetired` ends an `async for` (`__anext__`).
fn end_of_stream(py: Python<'_>, e: PyErr, anext: bool) -> PyErr {
    if anext && retired_type(py).is_ok_and(|t| e.is_instance(py, &t)) {
        return PyStopAsyncIteration::new_err(());
    }
    e
}

fn would_block(py: Python<'_>, e: &PyErr) -> bool {
    would_block_type(py).is_ok_and(|t| e.is_instance(py, &t))
}

/// Records the calling participant as waiting on `side` (``csp.dump()``).
fn record_wait(py: Python<'_>, side: &ShmSide, write: bool) -> PyResult<Arc<Participant>> {
    let me = crate::process::current(py)?;
    me.set_shared(Some(vec![(side.chan_name().to_string(), write)]), false);
    Ok(me)
}

impl ShmOp {
    /// One step: `exc` is what the task throws in (None: resume).
    fn step(me: &Bound<'_, ShmOp>, exc: Option<PyErr>) -> PyResult<Out> {
        let py = me.py();
        let state = me.get().take_state();
        match (state, exc) {
            (State::Start(start), None) => Self::start(me, start),
            // Thrown in before it started (or after it ended): nothing happened.
            (State::Start(_) | State::Done, Some(e)) => Err(e),
            (State::Done, None) => {
                Err(PyRuntimeError::new_err("cannot reuse an already awaited channel operation"))
            }
            (State::Waiting(w), None) => {
                let out = switch_returning(py, w.g.bind(py), &PyTuple::empty(py));
                Self::settle(me, w, out)
            }
            (State::Waiting(mut w), Some(e)) => {
                if !is_cancel(py, &e)? {
                    abandon(py, w);
                    return Err(e);
                }
                let out = if w.cancel.is_none() {
                    let thrown = e.clone_ref(py).into_value(py);
                    w.cancel = Some(e);
                    w.g.bind(py).call_method1(intern!(py, "throw"), (thrown,))
                } else {
                    // Cancelled again: the outcome is still to be collected.
                    switch_returning(py, w.g.bind(py), &PyTuple::empty(py))
                };
                Self::settle(me, w, out)
            }
        }
    }

    /// The first step: the operation without waiting, else on an operation greenlet.
    fn start(me: &Bound<'_, ShmOp>, start: Start) -> PyResult<Out> {
        let py = me.py();
        match start {
            Start::Read { side, end, kind, retired_here, timeout, anext } => {
                let s = side.get();
                let now = (|| {
                    if let Some(id) = end {
                        s.live(py, id, kind, retired_here)?;
                    }
                    match s.read_recorded(py, None, true, false) {
                        Ok(v) => Ok(Some(v)),
                        Err(e) if would_block(py, &e) => Ok(None),
                        Err(e) => Err(e),
                    }
                })();
                if let Some(v) = now.map_err(|e| end_of_stream(py, e, anext))? {
                    return Ok(Out::Return(v));
                }
                let record = record_wait(py, s, false)?;
                Self::launch(me, Job::Read { side, timeout }, anext, Some(record))
            }
            Start::Write { side, end, kind, retired_here, value, timeout } => {
                let s = side.get();
                if let Some(id) = end {
                    s.live(py, id, kind, retired_here)?;
                }
                // Encoded once, before any wait.
                let (parts, kinds) = s.encode(py, value.bind(py))?;
                // At once, unless a rendezvous write would wait for a reader that may be
                // another task of this loop (a cooperative waiter on the channel): that runs on
                // the operation greenlet, which can switch back. A thread reader takes the
                // value within microseconds, and the write waits for it here (`blocking`).
                let e = s.engine();
                if e.capacity() > 0 || !e.coop_waiting() {
                    match s.write_recorded(py, &parts, &kinds, None, true, false) {
                        Ok(()) => return Ok(Out::Return(py.None())),
                        Err(e) if would_block(py, &e) => {}
                        Err(e) => return Err(e),
                    }
                }
                let record = record_wait(py, s, true)?;
                let job = Job::Write { side, parts: parts.unbind(), kinds, timeout };
                Self::launch(me, job, false, Some(record))
            }
            Start::Call { f, args } => Self::launch(me, Job::Call { f, args }, false, None),
        }
    }

    /// Runs `job` on an idle operation greenlet until it sleeps or ends.
    fn launch(
        me: &Bound<'_, ShmOp>,
        job: Job,
        anext: bool,
        record: Option<Arc<Participant>>,
    ) -> PyResult<Out> {
        let py = me.py();
        crate::py_tls::reap(py);
        let mut w = Waiting { g: py.None(), cancel: None, anext, record };
        let g = idle_greenlet(py)?;
        g.setattr(intern!(py, "parent"), getcurrent(py)?)?;
        w.g = g.clone().unbind();
        let job = Bound::new(py, JobBox::new(job, w.record.clone()))?;
        let out = switch_returning(py, &g, &PyTuple::new(py, [job])?);
        Self::settle(me, w, out)
    }

    /// What the operation greenlet switched back with: a waiter to yield to the task (it
    /// sleeps), or its outcome (it is idle again).
    fn settle(me: &Bound<'_, ShmOp>, w: Waiting, out: PyResult<Bound<'_, PyAny>>) -> PyResult<Out> {
        let py = me.py();
        let out = match out {
            Ok(out) => out,
            // The greenlet died (it cannot run a job): the operation is over.
            Err(e) => return Err(end_of_stream(py, e, w.anext)),
        };
        let Ok(done) = out.cast::<Outcome>() else {
            me.get().put_state(State::Waiting(w));
            return Ok(Out::Yield(out.unbind()));
        };
        let done = done.get();
        let value = done.take(py);
        pool(py, &w.g);
        if !done.ok {
            if let Some(cancel) = &w.cancel {
                // Withdrawn, or it failed (poison, retirement, timeout): nothing sent or taken.
                return Err(cancel.clone_ref(py));
            }
            let e = PyErr::from_value(value.into_bound(py));
            return Err(end_of_stream(py, e, w.anext));
        }
        if let Some(cancel) = &w.cancel {
            // The communication completed although the task was cancelled meanwhile.
            keep_result_on_cancel(py, me.as_any(), cancel)?;
        }
        Ok(Out::Return(value))
    }
}

/// Abandons a sleeping operation: `GreenletExit` thrown in withdraws it (or finishes a
/// hand-off under way, whose result is dropped). A greenlet that handed back an outcome is
/// idle and pooled; one that died, or sleeps again, is released (greenlet kills it again
/// when it is collected).
fn abandon(py: Python<'_>, w: Waiting) {
    if let Ok(out) = w.g.bind(py).call_method0(intern!(py, "throw")) {
        if let Ok(done) = out.cast::<Outcome>() {
            drop(done.get().take(py)); // a result of a hand-off under way: dropped, not kept
            pool(py, &w.g);
        }
    }
}

fn stop_iteration(py: Python<'_>, v: Py<PyAny>) -> PyErr {
    if v.is_none(py) {
        PyStopIteration::new_err(())
    } else {
        PyStopIteration::new_err((v,))
    }
}

#[pymethods]
impl ShmOp {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        match Self::step(slf, None)? {
            Out::Yield(fut) => Ok(Some(fut)),
            Out::Return(v) if v.is_none(slf.py()) => Ok(None),
            Out::Return(v) => Err(stop_iteration(slf.py(), v)),
        }
    }

    /// Resumes the operation (the value is ignored).
    #[pyo3(signature = (value, /))]
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let _ = value;
        match Self::step(slf, None)? {
            Out::Yield(fut) => Ok(fut),
            Out::Return(v) => Err(stop_iteration(slf.py(), v)),
        }
    }

    /// Throws an exception in (cancellation): a communication that already happened is kept.
    #[pyo3(signature = (typ, val = None, tb = None, /))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = tb; // the traceback of the exception thrown in is not kept (as `_AsyncOp`)
        let exc = exception_from_throw_args(typ, val)?;
        match Self::step(slf, Some(exc))? {
            Out::Yield(fut) => Ok(fut),
            Out::Return(v) => Err(stop_iteration(slf.py(), v)),
        }
    }

    /// Abandons the operation (withdrawn unless a hand-off was under way).
    fn close(slf: &Bound<'_, Self>) {
        let state = slf.get().take_state();
        if let State::Waiting(w) = state {
            abandon(slf.py(), w);
        }
    }
}
