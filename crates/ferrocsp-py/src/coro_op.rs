//! A plain read or write awaited by a task of the native coroutine backend: the light twin
//! of `aio.rs`'s `AsyncOp`, behind the same `_AsyncOp` Python type (`aio_op.rs`).
//!
//! `aread()`/`awrite()`/`__anext__()` called in a coroutine task (`sched::with_coro`) whose
//! operation cannot complete at the call return an `_AsyncOp` holding a [`CoroOp`]. Its first
//! step tries again and, if it must wait, registers in the same critical section on the
//! task's kept selection with the task's waker (`Select::start_read`/`start_write`, as a
//! greenlet's blocking read does, `sched/block.rs`), records the wait and yields the
//! scheduler's marker; each later step resumes the selection. No event loop, future, lock or
//! second allocation is involved.
//!
//! Invariants:
//! - Like every `_AsyncOp`, it does nothing until first resumed: creating one and dropping it
//!   unawaited neither sends nor takes anything.
//! - It is stepped only inside a step of the coroutine task that awaits it (`with_coro`);
//!   anywhere else a step is a `RuntimeError` and changes nothing. Once it waits, that is the
//!   task it registered for (`CoroWait::check_stepper`): a second process awaiting the same
//!   op gets "already being awaited", as on asyncio, instead of waiting for a wake-up that
//!   goes to the first.
//! - A selection it registered is the task's kept one; it goes back to the task, cleared,
//!   once the operation completes, and withdraws itself if the op is dropped while waiting.
//! - An exception thrown in while waiting withdraws the registration; a communication that
//!   won the race is kept and returned (never lost, never duplicated).
//! - A channel that moves to shared memory while the op waits ends the selection with
//!   `Moved` (nothing sent or taken); the op then goes on there through `_io._offload_*`
//!   (with its value, for a write), to which every later step and throw is passed.
//! - The engine channel and name it uses are borrowed from the `Channel` its `obj` is or
//!   holds (fields of frozen `#[pyclass]`es), which `obj` keeps alive as long as the op.

use std::ptr::NonNull;
use std::sync::Arc;

use ferrocsp::{Error, Poll, Select, SelectError, Selected};
use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration, PyTypeError};
use pyo3::prelude::*;

use crate::aio::{Out, Step};
use crate::channel::Channel;
use crate::deadlock::Desc;
use crate::ends::{Reader, Writer};
use crate::errors::{to_pyerr, OpName};
use crate::pythread::{deadline, Value};
use crate::sched::{blocked_marker, with_coro, CoroWait};
use crate::step_lock::{StepGuard, StepLock};

/// Which operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CoroKind {
    Read,
    /// `__anext__`: end-of-stream raises `StopAsyncIteration`.
    Next,
    Write,
}

struct State {
    value: Option<Value>,
    /// Once the channel moved to shared memory while the op waited (nothing was sent or
    /// taken): the `_io._offload_*` coroutine doing it there, which every later step goes to.
    delegate: Option<Py<PyAny>>,
    /// The selection while the op waits, with its wait.
    waiting: Option<(Box<Select<Value>>, CoroWait)>,
    done: bool,
}

/// A read or write of a coroutine task that waits when awaited.
pub(crate) struct CoroOp {
    kind: CoroKind,
    /// The Python channel or end, to go on with if the channel moves to shared memory.
    obj: Py<PyAny>,
    /// The engine channel and its name, borrowed, not cloned: both are fields of the frozen
    /// `Channel` that `obj` is or holds (`new` takes them from `obj`; a `Reader`/`Writer`
    /// holds its `Channel` in a frozen field too), written once when it was made and never
    /// moved or replaced, and `obj` keeps that `Channel` alive as long as this op lives. So
    /// the op takes no reference counts of its own: four atomic read-modify-writes fewer per
    /// waiting op, a measurable part of a coroutine hand-off (each costs about 4 ns on the
    /// development VM).
    chan: NonNull<ferrocsp::Channel<Value>>,
    name: NonNull<Arc<str>>,
    timeout: Option<f64>,
    state: StepLock<State>,
}

impl std::fmt::Debug for CoroOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoroOp").field("kind", &self.kind).finish()
    }
}

/// Whether the calling code runs in a coroutine task (so a pending op may be a [`CoroOp`]).
pub(crate) fn in_coro_task() -> bool {
    with_coro(|t| t.is_some())
}

/// Whether the calling code runs in a process of the native coroutine backend.
#[pyfunction]
pub(crate) fn _in_coroutine() -> bool {
    in_coro_task()
}

/// An operation on a channel shared with OS processes or networked, awaited in a coroutine
/// task: those transports wait through an event loop (`shm_aio.rs`, `net_side.rs`), which a
/// coroutine task has not, so the blocking operation runs on an `io()` worker thread and the
/// task awaits its outcome on a private in-process channel (`ferrocsp._io._offload_*`).
pub(crate) fn offload<'py>(
    py: Python<'py>,
    helper: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Py<PyAny>> {
    let f = py.import(pyo3::intern!(py, "ferrocsp._io"))?.getattr(helper)?;
    Ok(f.call1(args)?.unbind())
}

impl CoroOp {
    /// An op of `obj`, a `Channel` or one of its ends (else `TypeError`).
    pub(crate) fn new(
        kind: CoroKind,
        obj: &Bound<'_, PyAny>,
        value: Option<Value>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let chan: &Channel = if let Ok(c) = obj.cast::<Channel>() {
            c.get()
        } else if let Ok(r) = obj.cast::<Reader>() {
            r.get().chan()
        } else if let Ok(w) = obj.cast::<Writer>() {
            w.get().chan()
        } else {
            return Err(PyTypeError::new_err("a channel operation needs a channel or an end"));
        };
        Ok(CoroOp {
            kind,
            obj: obj.clone().unbind(),
            chan: NonNull::from(&chan.inner),
            name: NonNull::from(&chan.name),
            timeout,
            state: StepLock::new(State { value, delegate: None, waiting: None, done: false }),
        })
    }

    fn chan(&self) -> &ferrocsp::Channel<Value> {
        // SAFETY: the field's comment: the pointee is a field of a frozen `Channel` kept
        // alive by `self.obj`.
        unsafe { self.chan.as_ref() }
    }

    fn name(&self) -> &str {
        // SAFETY: as for `chan`.
        unsafe { self.name.as_ref() }
    }

    fn locked(&self) -> PyResult<StepGuard<'_, State>> {
        self.state.lock(crate::aio_op::gil_known()).ok_or_else(|| {
            PyRuntimeError::new_err("this channel operation is already being awaited")
        })
    }

    fn desc(&self) -> Desc<'_> {
        match self.kind {
            CoroKind::Write => Desc::write(self.name()),
            CoroKind::Read | CoroKind::Next => Desc::read(self.name()),
        }
    }

    /// Drops the op on an attached thread (see `aio_op`'s `Pending::release`): its selection
    /// first, then its reference to the channel or end.
    pub(crate) fn release(self, py: Python<'_>) {
        let CoroOp { obj, state, .. } = self;
        drop(state);
        drop(obj.into_bound(py));
    }

    /// Resumes the operation (`__next__`/`send`/`am_send`).
    pub(crate) fn step(&self, py: Python<'_>) -> Step {
        let mut st = self.locked()?;
        if st.delegate.is_some() {
            let st = &mut *st;
            return drive(py, &mut st.delegate, &mut st.done, None);
        }
        if st.done {
            return Err(PyRuntimeError::new_err(
                "cannot reuse an already awaited channel operation",
            ));
        }
        if let Some((sel, wait)) = st.waiting.as_mut() {
            wait.check_stepper()?;
            return match wait.resume(py, sel)? {
                Poll::Ready(r) => self.finish(py, &mut st, r, true),
                Poll::Pending => Ok(Out::Yield(blocked_marker(py)?.clone_ref(py))),
            };
        }
        with_coro(|task| {
            let Some(task) = task else {
                return Err(PyRuntimeError::new_err(
                    "a channel operation begun in a process of the 'coroutine' backend is \
                     awaited outside it",
                ));
            };
            let mut sel = task.take_select().unwrap_or_default();
            let at = deadline(self.timeout);
            let poll = match self.kind {
                CoroKind::Write => {
                    let v = st.value.take().unwrap_or_else(|| py.None());
                    sel.start_write(self.chan(), v, &task.waker, at)
                }
                CoroKind::Read | CoroKind::Next => sel.start_read(self.chan(), &task.waker, at),
            };
            match poll {
                Poll::Ready(r) => {
                    sel.clear();
                    task.put_select(sel);
                    self.finish(py, &mut st, r, false)
                }
                Poll::Pending => {
                    let wait = CoroWait::begin(Arc::clone(task), &sel, &self.desc());
                    st.waiting = Some((sel, wait));
                    Ok(Out::Yield(blocked_marker(py)?.clone_ref(py)))
                }
            }
        })
    }

    /// Ends the await with the selection's result; a completed selection goes back to the
    /// waiting task. `own_step`: called from a step that passed `check_stepper` (so on the
    /// waiting task's scheduler thread).
    fn finish(
        &self,
        py: Python<'_>,
        st: &mut State,
        r: Result<Selected<Value>, SelectError>,
        own_step: bool,
    ) -> Step {
        st.done = true;
        if let Some((mut sel, wait)) = st.waiting.take() {
            if let (CoroKind::Write, Err(SelectError::Moved { .. })) = (self.kind, &r) {
                st.value = sel.take_value(0); // not sent: it goes on to the shared side
            }
            if !sel.is_pending() {
                sel.clear();
                wait.task().put_select(sel);
            }
            if own_step {
                wait.end_on_scheduler();
            }
        }
        if let Err(SelectError::Moved { .. }) = r {
            return self.follow_move(py, st);
        }
        match (self.kind, r) {
            (CoroKind::Write, Ok(_)) => Ok(Out::Return(py.None())),
            (_, Ok(s)) => s
                .value
                .map(Out::Return)
                .ok_or_else(|| to_pyerr(py, Error::WouldBlock, OpName::Read, "")),
            (_, Err(e)) => Err(self.error(py, e.error())),
        }
    }

    /// The channel moved to shared memory while the op waited (nothing was sent or taken):
    /// the operation goes on there, on a worker (`_io._offload_*`, as a coroutine task's
    /// operations on shared channels always do), and this step is passed on to it.
    fn follow_move(&self, py: Python<'_>, st: &mut State) -> Step {
        let obj = self.obj.bind(py);
        let coro = match self.kind {
            CoroKind::Read => offload(py, "_offload_read", (obj, self.timeout))?,
            CoroKind::Next => offload(py, "_offload_next", (obj,))?,
            CoroKind::Write => {
                let v = st.value.take().unwrap_or_else(|| py.None());
                offload(py, "_offload_write", (obj, v, self.timeout))?
            }
        };
        st.done = false;
        st.delegate = Some(coro);
        drive(py, &mut st.delegate, &mut st.done, None)
    }

    fn error(&self, py: Python<'_>, e: Error) -> PyErr {
        match (self.kind, e) {
            (CoroKind::Next, Error::Retired) => PyStopAsyncIteration::new_err(()),
            (CoroKind::Write, e) => to_pyerr(py, e, OpName::Write, self.name()),
            (_, e) => to_pyerr(py, e, OpName::Read, self.name()),
        }
    }

    /// An exception thrown in: withdraw; a communication that won the race is returned.
    pub(crate) fn throw(&self, py: Python<'_>, exc: PyErr) -> Step {
        let mut st = self.locked()?;
        if st.delegate.is_some() {
            let st = &mut *st;
            return drive(py, &mut st.delegate, &mut st.done, Some(exc));
        }
        let Some((mut sel, wait)) = st.waiting.take() else {
            st.done = true;
            return Err(exc);
        };
        wait.end();
        match sel.abort() {
            Some(Ok(s)) => {
                st.waiting = Some((sel, wait));
                self.finish(py, &mut st, Ok(s), false)
            }
            _ => {
                st.done = true;
                Err(exc)
            }
        }
    }

    /// Abandons the operation: withdraws a registration (a value that arrived in the race is
    /// dropped, as when a generator is closed).
    pub(crate) fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut st = self.locked()?;
        st.done = true;
        if let Some(coro) = st.delegate.take() {
            coro.call_method0(py, pyo3::intern!(py, "close")).map(drop)?;
        }
        if let Some((mut sel, wait)) = st.waiting.take() {
            wait.end();
            drop(sel.abort());
        }
        Ok(())
    }
}

/// One step of a moved op's delegate coroutine: `send(None)`, or `throw(exc)`.
/// (Shared with `coro_alt.rs`: `delegate` and `done` are the op's.)
pub(crate) fn drive(
    py: Python<'_>,
    delegate: &mut Option<Py<PyAny>>,
    done: &mut bool,
    exc: Option<PyErr>,
) -> Step {
    let Some(coro) = delegate.as_ref().map(|c| c.clone_ref(py)) else {
        return Err(PyRuntimeError::new_err("channel operation has no shared side"));
    };
    let r = match exc {
        None => coro.call_method1(py, pyo3::intern!(py, "send"), (py.None(),)),
        Some(e) => coro.call_method1(py, pyo3::intern!(py, "throw"), (e.into_value(py),)),
    };
    match r {
        Ok(yielded) => Ok(Out::Yield(yielded)),
        Err(e) => {
            *done = true;
            *delegate = None;
            if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) {
                let v = e.value(py).getattr(pyo3::intern!(py, "value"))?;
                return Ok(Out::Return(v.unbind()));
            }
            Err(e)
        }
    }
}
