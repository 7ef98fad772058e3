//! A native Alt's selection awaited by a task of the native coroutine backend that must wait:
//! the Alt's twin of `coro_op.rs`'s `CoroOp`, behind the same `_AsyncOp` Python type
//! (`aio_op.rs`).
//!
//! `NativeAlt::arun` (`aselect`, `apri_select`, `afair_select`) returns a done op when a
//! guard is ready at the call; otherwise, in a coroutine task, one holding a [`CoroAlt`]. Its
//! first step starts the selection with the task's waker (`CoroWait::start`: try and register
//! under the channels' locks), records the wait and yields the scheduler's marker; each later
//! step resumes the selection. It is what the general `_AsyncOp` state (`aio.rs`'s
//! `AsyncOp::alt`) does in a coroutine task, without that state's event-loop machinery (an
//! `Arc` made cyclic for a cancellation callback, a future, a timer): one allocation and a few
//! hundred instructions less per Alt that waits.
//!
//! Invariants:
//! - Like every `_AsyncOp`, it does nothing until first resumed; it is stepped only inside a
//!   step of the coroutine task that awaits it (a step elsewhere is a `RuntimeError` and
//!   changes nothing), and once it waits, only by that task (`CoroWait::check_stepper`).
//! - Exactly one guard fires per selection (the engine's cell); an exception thrown in while
//!   it waits withdraws the registration, and a guard that won the race is returned (never
//!   lost, never fired twice).
//! - The selection and its map go back to their native Alt when the op finishes (to be kept
//!   for its next selection), and are withdrawn and dropped if the op is dropped waiting.
//! - A channel that moves to shared memory while it waits ends the selection with `Moved`
//!   (nothing fired); the Alt's general path (`_arun`) then chooses, as a delegate coroutine
//!   to which every later step and throw is passed.

use ferrocsp::{Policy, Poll, SelectError, Selected};
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;

use crate::aio::{Out, Step};
use crate::alt_map::AltMap;
use crate::coro_op::drive;
use crate::pythread::Value;
use crate::sched::{blocked_marker, with_coro, CoroWait};
use crate::step_lock::{StepGuard, StepLock};
use crate::wait::PooledSelect;

struct State {
    /// The selection until it finishes (then back to its Alt).
    sel: Option<PooledSelect>,
    map: AltMap,
    /// The task's wait while the selection is registered.
    wait: Option<CoroWait>,
    /// The general path's `_arun(policy)` coroutine once a channel moved (see module docs).
    delegate: Option<Py<PyAny>>,
    done: bool,
}

/// A native Alt's selection of a coroutine task, waiting when awaited.
pub(crate) struct CoroAlt {
    policy: Policy,
    /// The Python `Alt` and its policy argument, for `_arun` if a channel moves.
    general: (Py<PyAny>, u8),
    state: StepLock<State>,
}

impl std::fmt::Debug for CoroAlt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoroAlt").field("policy", &self.policy).finish()
    }
}

impl CoroAlt {
    /// The selection `sel` (built, not registered) with its `map` (whose `owner` is the
    /// native Alt), by `policy`; `general` as in [`CoroAlt::general`].
    pub(crate) fn new(
        sel: PooledSelect,
        map: AltMap,
        policy: Policy,
        general: (Py<PyAny>, u8),
    ) -> Self {
        let state = State { sel: Some(sel), map, wait: None, delegate: None, done: false };
        CoroAlt { policy, general, state: StepLock::new(state) }
    }

    fn locked(&self) -> PyResult<StepGuard<'_, State>> {
        self.state.lock(crate::aio_op::gil_known()).ok_or_else(|| {
            PyRuntimeError::new_err("this channel operation is already being awaited")
        })
    }

    /// Resumes the selection (`__next__`/`send`/`am_send`).
    pub(crate) fn step(&self, py: Python<'_>) -> Step {
        let mut st = self.locked()?;
        let st = &mut *st;
        if st.delegate.is_some() {
            return drive(py, &mut st.delegate, &mut st.done, None);
        }
        if st.done {
            return Err(PyRuntimeError::new_err(
                "cannot reuse an already awaited channel operation",
            ));
        }
        let Some(sel) = st.sel.as_mut() else {
            return Err(PyRuntimeError::new_err("selection missing"));
        };
        if let Some(wait) = st.wait.as_ref() {
            wait.check_stepper()?;
            return match wait.resume(py, sel) {
                Ok(Poll::Ready(r)) => self.finish(py, st, r, true),
                Ok(Poll::Pending) => Ok(Out::Yield(blocked_marker(py)?.clone_ref(py))),
                Err(deadlock) => {
                    st.done = true;
                    st.wait = None;
                    st.sel = None;
                    Err(deadlock)
                }
            };
        }
        let map = &st.map;
        let started = with_coro(|task| match task {
            Some(task) => Ok(CoroWait::start(task, sel, self.policy, None, || map.desc())),
            None => Err(PyRuntimeError::new_err(
                "a channel operation begun in a process of the 'coroutine' backend is awaited \
                 outside it",
            )),
        })?;
        match started {
            Ok(r) => self.finish(py, st, r, false),
            Err(wait) => {
                st.wait = Some(wait);
                Ok(Out::Yield(blocked_marker(py)?.clone_ref(py)))
            }
        }
    }

    /// Ends the await with the selection's result: the `(guard, value)` pair, the
    /// selection's error, or (a channel moved) the general path's choice. `own_step`: called
    /// from a step that passed `check_stepper` (so on the waiting task's scheduler thread).
    fn finish(
        &self,
        py: Python<'_>,
        st: &mut State,
        r: Result<Selected<Value>, SelectError>,
        own_step: bool,
    ) -> Step {
        st.done = true;
        if let Some(wait) = st.wait.take() {
            if own_step {
                wait.end_on_scheduler();
            }
        }
        let sel = st.sel.take();
        if let Err(SelectError::Moved { .. }) = r {
            // Nothing fired: the general path chooses where the channel is now.
            drop(sel);
            st.done = false;
            let (alt, policy) = &self.general;
            let arun = alt.bind(py).getattr(intern!(py, "_arun"))?;
            st.delegate = Some(arun.call1((*policy,))?.unbind());
            return drive(py, &mut st.delegate, &mut st.done, None);
        }
        let pair = st.map.map_pair(py, r);
        // The selection and its map go back to their native Alt, kept for its next selection.
        if let (Some(sel), Some(alt)) = (sel, st.map.owner.as_ref().map(|c| c.alt.clone_ref(py))) {
            alt.get().end(sel, std::mem::take(&mut st.map));
        }
        Ok(Out::Return(pair?))
    }

    /// An exception thrown in: withdraw; a guard that won the race is returned.
    pub(crate) fn throw(&self, py: Python<'_>, exc: PyErr) -> Step {
        let mut st = self.locked()?;
        let st = &mut *st;
        if st.delegate.is_some() {
            return drive(py, &mut st.delegate, &mut st.done, Some(exc));
        }
        let Some(wait) = st.wait.take() else {
            st.done = true;
            return Err(exc);
        };
        wait.end();
        drop(wait);
        match st.sel.as_mut().and_then(|s| s.abort()) {
            Some(Ok(s)) => self.finish(py, st, Ok(s), false),
            _ => {
                st.done = true;
                st.sel = None;
                Err(exc)
            }
        }
    }

    /// Abandons the selection: withdraws a registration (a guard that fired in the race is
    /// dropped with its value, as when a generator is closed).
    pub(crate) fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut st = self.locked()?;
        st.done = true;
        if let Some(coro) = st.delegate.take() {
            coro.call_method0(py, intern!(py, "close")).map(drop)?;
        }
        if let Some(wait) = st.wait.take() {
            wait.end();
        }
        if let Some(mut sel) = st.sel.take() {
            drop(sel.abort());
        }
        Ok(())
    }
}
