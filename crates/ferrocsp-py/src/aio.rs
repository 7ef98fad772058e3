//! asyncio: how a coroutine waits for a selection (the asyncio side of the waker seam).
//!
//! `ch.aread()`, `ch.awrite(v)`, `reader.__anext__()` and `Alt.aselect()` return an
//! `_AsyncOp` (the Python type is in `aio_op.rs`): an awaitable that is its own coroutine
//! (`send`/`throw`/`close`), so it can be awaited, passed to `asyncio.create_task`, `wait_for`
//! or `gather`.
//!
//! 1. **Ready at the call.** The call tries the operation without blocking ([`read_op`],
//!    [`write_op`], the Alt's `_aselect`); if it completes, the op is returned done, holding
//!    the result, and the await returns it without an asyncio future, a loop call or an
//!    engine `Select` registration. Otherwise the call returns a pending op holding an
//!    [`AsyncOp`], which does nothing until it is first resumed.
//! 2. **Register.** The first resume makes a [`Waiter`] (a native future-compatible object,
//!    `aio_waiter.rs`) for the running loop, installs it in the [`AsyncWake`] and
//!    `Select::start`s with `Waker::Custom(that waker)`; it yields the waiter to the task. A
//!    selection deadline (timeout) also gets a `loop.call_later` handle.
//! 3. **Wake.** The counterpart that wins the selection cell calls [`AsyncWake::wake`] from any
//!    thread: on the loop's thread it completes the waiter directly, which queues the task's
//!    wake-up on the loop's run queue; from another thread through
//!    `loop.call_soon_threadsafe`. `Task.cancel` cancels the waiter, which withdraws the
//!    registration at once ([`Withdraw`]).
//! 4. **Resume.** The task resumes the op, which calls `Select::resume`. `Pending` (a retired
//!    guard restarted the selection, or an early timer) installs a fresh future and checks the
//!    cell again before yielding it, so a wake-up that came while no future was installed is
//!    never lost.
//!
//! Cancellation rule: a `CancelledError` (or any exception) thrown into a waiting op calls
//! `Select::abort`. If nothing fired, the exception propagates and nothing was sent or taken.
//! If the communication won the race, it happened: the op returns its result normally and
//! re-requests the cancellation (`task.uncancel(); task.cancel()`), which takes effect at the
//! task's next suspension ([`keep_result_on_cancel`]; a done op thrown into before its await
//! follows the same rule). So a value is never lost nor duplicated by cancellation.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use ferrocsp::shm::EndKind;
use ferrocsp::{Error, Policy, Poll, SelectError, Selected, Waker};
use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::aio_waiter::{Waiter, Withdraw};
use crate::aio_wake::{is_cancel, keep_result_on_cancel, wake_future_fn, AsyncWake};
use crate::alt_map::AltMap;
use crate::deadlock::{Desc, Participant};
use crate::errors::{to_pyerr, OpName};
use crate::flavor::Flavors;
use crate::pythread::{current_thread, deadline, Value};
use crate::shm_aio;
use crate::step_lock::{StepGuard, StepLock};
use crate::wait::PooledSelect;

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// What the op is, and so how its result becomes Python's.
#[derive(Debug)]
enum Kind {
    Read,
    /// `__anext__`: end-of-stream raises `StopAsyncIteration`.
    Next,
    Write,
    Alt(AltMap),
}

struct Wait {
    waker: Arc<AsyncWake>,
    event_loop: Py<PyAny>,
    timer: Option<Py<PyAny>>,
    /// The waiting process's deadlock-detection record (None outside `async def` processes).
    part: Option<Arc<Participant>>,
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(p) = &self.part {
            p.unblock();
        }
    }
}

struct Inner {
    kind: Kind,
    chan: Option<ferrocsp::Channel<Value>>,
    name: Arc<str>,
    value: Option<Value>,
    sel: Option<PooledSelect>,
    policy: Policy,
    timeout: Option<f64>,
    wait: Option<Wait>,
    /// The wait of an op awaited by a task of the native coroutine backend (`sched/coro.rs`),
    /// which waits without an event loop.
    coro: Option<crate::sched::CoroWait>,
    done: bool,
    /// The op's Python channel, to follow it to shared memory (None for Alts).
    owner: Option<Arc<Flavors>>,
    /// Once the channel moved while this op waited: the shared side's coroutine doing it,
    /// which every later step and throw is passed on to (as `yield from` would).
    delegate: Option<Py<PyAny>>,
    /// An Alt's general path (the Python `Alt`, whose `_arun` is called with the policy, looked
    /// up only then), which a native Alt whose channel moved to shared memory while it waited
    /// goes on with (nothing fired), as `delegate`.
    fallback: Option<(Py<PyAny>, u8)>,
    /// What an early withdrawal (`Withdraw`, from the waiter's `cancel`) found: `Some(fired)`.
    withdrawn: Option<Option<Result<Selected<Value>, SelectError>>>,
    /// This state, for the waiters it hands out (so `cancel` can withdraw the op at once).
    me: Weak<StepLock<Inner>>,
}

/// A channel operation or Alt that waits when awaited: the state behind a pending
/// `_AsyncOp` object (see `aio_op.rs` for the Python type).
pub struct AsyncOp {
    inner: Arc<StepLock<Inner>>,
}

impl std::fmt::Debug for AsyncOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AsyncOp")
    }
}

/// What one step of the op produced: a future to yield, or the end of the await.
pub(crate) type Step = PyResult<Out>;

/// One step's outcome: suspend on a future, or end the await with a value.
pub(crate) enum Out {
    /// The future the task waits on (the coroutine protocol's yielded value).
    Yield(Py<PyAny>),
    /// The await's result.
    Return(Py<PyAny>),
}

impl AsyncOp {
    fn blank(kind: Kind, chan: Option<ferrocsp::Channel<Value>>, name: &Arc<str>) -> Inner {
        Inner {
            kind,
            chan,
            name: Arc::clone(name),
            value: None,
            sel: None,
            policy: Policy::Priority,
            timeout: None,
            wait: None,
            coro: None,
            done: false,
            owner: None,
            delegate: None,
            fallback: None,
            withdrawn: None,
            me: Weak::new(),
        }
    }

    fn wrap(inner: Inner) -> Self {
        let inner = Arc::new_cyclic(|me| StepLock::new(Inner { me: me.clone(), ..inner }));
        AsyncOp { inner }
    }

    pub(crate) fn read(
        chan: &ferrocsp::Channel<Value>,
        name: &Arc<str>,
        timeout: Option<f64>,
        next: bool,
        owner: Arc<Flavors>,
    ) -> Self {
        let mut i =
            Self::blank(if next { Kind::Next } else { Kind::Read }, Some(chan.clone()), name);
        i.timeout = timeout;
        i.owner = Some(owner);
        Self::wrap(i)
    }

    pub(crate) fn write(
        chan: &ferrocsp::Channel<Value>,
        name: &Arc<str>,
        value: Value,
        timeout: Option<f64>,
        owner: Arc<Flavors>,
    ) -> Self {
        let mut i = Self::blank(Kind::Write, Some(chan.clone()), name);
        i.value = Some(value);
        i.timeout = timeout;
        i.owner = Some(owner);
        Self::wrap(i)
    }

    /// An Alt's selection; `fallback` (the Python `Alt` and its policy argument for `_arun`)
    /// takes over if a channel moves to shared memory while it waits.
    pub(crate) fn alt(
        sel: PooledSelect,
        map: AltMap,
        policy: Policy,
        timeout: Option<f64>,
        fallback: Option<(Py<PyAny>, u8)>,
    ) -> Self {
        static NO_NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        let mut i = Self::blank(Kind::Alt(map), None, NO_NAME.get_or_init(|| Arc::from("")));
        i.fallback = fallback;
        i.sel = Some(sel);
        i.policy = policy;
        i.timeout = timeout;
        Self::wrap(i)
    }

    /// Locks the state for one step; a step already in progress (a second awaiter, or
    /// re-entrance) is refused rather than waited for. Every access is such a try (steps, and
    /// a waiter's `withdraw`), so a `StepLock`: with a GIL, a load and a store.
    fn locked(&self) -> PyResult<StepGuard<'_, Inner>> {
        self.inner.lock(crate::aio_op::gil_known()).ok_or_else(|| {
            PyRuntimeError::new_err("this channel operation is already being awaited")
        })
    }
}

impl Inner {
    /// Ends the await with the selection's result.
    fn finish(&mut self, py: Python<'_>, r: Result<Selected<Value>, SelectError>) -> Step {
        self.done = true;
        self.wait = None;
        self.coro = None;
        if let (Kind::Write, Err(SelectError::Moved { .. })) = (&self.kind, &r) {
            // The value was not sent: it goes on to the shared side (`follow_move`).
            self.value = self.sel.as_mut().and_then(|s| s.take_value(0));
        }
        let sel = self.sel.take();
        if let (Kind::Alt(_), Err(SelectError::Moved { .. })) = (&self.kind, &r) {
            if let Some((general, policy)) = self.fallback.take() {
                // Nothing fired: the general path chooses where the channel is now.
                self.done = false;
                let arun = general.bind(py).getattr(intern!(py, "_arun"))?;
                self.delegate = Some(arun.call1((policy,))?.unbind());
                return self.drive(py, None);
            }
        }
        if let Kind::Alt(map) = &mut self.kind {
            let pair = map.map_pair(py, r);
            // The selection and its map go back to their native Alt, to be kept for its next
            // selection (nothing here uses them again).
            if let (Some(sel), Some(alt)) = (sel, map.owner.as_ref().map(|c| c.alt.clone_ref(py))) {
                alt.get().end(sel, std::mem::take(map));
            }
            return Ok(Out::Return(pair?));
        }
        let err = match (&self.kind, r) {
            (Kind::Alt(_), _) => unreachable!("an Alt's result is returned above"),
            (Kind::Read | Kind::Next, Ok(s)) => {
                crate::trace::event(py, "read", "", &self.name); // trace hook
                let v = s.value.ok_or_else(|| to_pyerr(py, Error::WouldBlock, OpName::Read, ""))?;
                return Ok(Out::Return(v));
            }
            (Kind::Write, Ok(_)) => {
                crate::trace::event(py, "write", "", &self.name); // trace hook
                return Ok(Out::Return(py.None()));
            }
            (_, Err(e)) => e.error(),
        };
        self.fail(py, err)
    }

    /// Ends the await with error `e`, unless its channel moved to shared memory meanwhile
    /// (`Moved`; nothing was sent or taken): then the read or write goes on there.
    fn fail(&mut self, py: Python<'_>, e: Error) -> Step {
        if e == Error::Moved {
            if let Some(step) = self.follow_move(py)? {
                return step;
            }
        }
        self.done = true;
        Err(self.error(py, e))
    }

    /// A read or write whose channel moved to shared memory: starts the shared side's
    /// `aread`/`anext`/`awrite` coroutine and passes this step on to it. None: an Alt, or the
    /// channel did not move.
    fn follow_move(&mut self, py: Python<'_>) -> PyResult<Option<Step>> {
        if matches!(self.kind, Kind::Alt(_)) {
            return Ok(None);
        }
        let Some(shared) = self.owner.as_ref().and_then(|o| o.shm.get()) else {
            return Ok(None);
        };
        let coro = match self.kind {
            Kind::Next => shm_aio::aread(py, shared, None, EndKind::Reader, false, None, true)?,
            Kind::Write => {
                let Some(value) = self.value.take() else { return Ok(None) };
                shm_aio::awrite(py, shared, None, EndKind::Writer, false, value, self.timeout)?
            }
            _ => shm_aio::aread(py, shared, None, EndKind::Reader, false, self.timeout, false)?,
        };
        self.wait = None;
        self.sel = None;
        self.done = false;
        self.delegate = Some(coro);
        Ok(Some(self.drive(py, None)))
    }

    /// One step of the delegate coroutine: `send(None)`, or `throw(exc)`.
    fn drive(&mut self, py: Python<'_>, exc: Option<PyErr>) -> Step {
        let Some(coro) = self.delegate.as_ref().map(|c| c.clone_ref(py)) else {
            return Err(PyRuntimeError::new_err("channel operation has no shared side"));
        };
        let r = match exc {
            None => coro.call_method1(py, intern!(py, "send"), (py.None(),)),
            Some(e) => coro.call_method1(py, intern!(py, "throw"), (e.into_value(py),)),
        };
        match r {
            Ok(yielded) => Ok(Out::Yield(yielded)),
            Err(e) => {
                self.done = true;
                self.delegate = None;
                if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) {
                    let v = e.value(py).getattr(intern!(py, "value"))?;
                    return Ok(Out::Return(v.unbind()));
                }
                Err(e)
            }
        }
    }

    /// Trace hook: the op is about to wait.
    fn trace_block(&self, py: Python<'_>) {
        match &self.kind {
            Kind::Alt(map) => map.trace_block(py),
            Kind::Write => crate::trace::event(py, "block", "write", &self.name),
            _ => crate::trace::event(py, "block", "read", &self.name),
        }
    }

    fn error(&self, py: Python<'_>, e: Error) -> PyErr {
        match (&self.kind, e) {
            (Kind::Next, Error::Retired) => PyStopAsyncIteration::new_err(()),
            (Kind::Write, e) => to_pyerr(py, e, OpName::Write, &self.name),
            (_, e) => to_pyerr(py, e, OpName::Read, &self.name),
        }
    }

    /// The first step: the fast path, else register and yield a future.
    fn start(&mut self, py: Python<'_>) -> Step {
        let timeout = self.timeout;
        // Borrowed, not cloned: a selection that completes at once needs no task reference.
        let in_coro = crate::sched::with_coro(|t| t.is_some());
        if self.sel.is_none() {
            let Some(chan) = self.chan.clone() else {
                return Err(PyRuntimeError::new_err("channel operation without a channel"));
            };
            let mut sel = PooledSelect::from_thread_pool();
            match self.kind {
                Kind::Write => {
                    let value = self.value.take().unwrap_or_else(|| py.None());
                    match chan.try_write(value) {
                        Ok(()) => return self.finish(py, Ok(Selected { index: 0, value: None })),
                        Err(e) if e.error == Error::WouldBlock => {
                            sel.write(&chan, e.value);
                        }
                        Err(e) => {
                            self.done = true;
                            return Err(self.error(py, e.error));
                        }
                    }
                }
                _ => match chan.try_read() {
                    Ok(v) => return self.finish(py, Ok(Selected { index: 0, value: Some(v) })),
                    Err(Error::WouldBlock) => {
                        sel.read(&chan);
                    }
                    Err(e) => return self.fail(py, e),
                },
            }
            self.sel = Some(sel);
        } else if let (Some(sel), true) = (self.sel.as_mut(), !in_coro || crate::trace::on()) {
            // An Alt: try it without registering first, so a ready Alt needs no future (a
            // traced one: nor a "block" event). A coroutine task's registration tries first
            // in the same critical section, so it skips this.
            match sel.try_select(self.policy) {
                Err(SelectError::WouldBlock) => {}
                r => return self.finish(py, r),
            }
        }
        if crate::trace::on() {
            self.trace_block(py);
        }
        if in_coro {
            return crate::sched::with_coro(|task| match task {
                Some(task) => self.start_coro(py, task),
                None => Err(PyRuntimeError::new_err("no coroutine task to wait in")),
            });
        }
        let event_loop =
            GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?.call0().map_err(|_| {
                PyRuntimeError::new_err(
                    "await a ferrocsp operation inside a running asyncio event loop",
                )
            })?;
        let waker = Arc::new(AsyncWake {
            event_loop: event_loop.clone().unbind(),
            thread: current_thread(),
            fut: Mutex::new(None),
        });
        let fut = Waiter::new(py, event_loop.clone().unbind(), self.withdrawer())?.into_bound(py);
        waker.install(Some(fut.clone().unbind()));
        let Some(sel) = self.sel.as_mut() else {
            return Err(PyRuntimeError::new_err("selection missing"));
        };
        let custom = Waker::Custom(waker.clone());
        match sel.start(self.policy, custom.clone(), deadline(timeout)) {
            Poll::Ready(r) => self.finish(py, r),
            Poll::Pending => {
                let part = crate::deadlock::async_participant(py);
                if let Some(p) = &part {
                    let desc = match &self.kind {
                        Kind::Alt(map) => map.desc(),
                        Kind::Write => Desc::write(&self.name),
                        Kind::Read | Kind::Next => Desc::read(&self.name),
                    };
                    p.block(desc, sel, Some(custom));
                }
                self.wait =
                    Some(Wait { waker, event_loop: event_loop.unbind(), timer: None, part });
                self.suspend(py, fut)
            }
        }
    }

    /// The first step's registration in a task of the native coroutine backend: the task's
    /// waker instead of a future, the marker yielded to its hub.
    fn start_coro(&mut self, py: Python<'_>, task: &Arc<crate::sched::Task>) -> Step {
        let Some(sel) = self.sel.as_mut() else {
            return Err(PyRuntimeError::new_err("selection missing"));
        };
        let (kind, name) = (&self.kind, &self.name);
        let desc = || match kind {
            Kind::Alt(map) => map.desc(),
            Kind::Write => Desc::write(name),
            Kind::Read | Kind::Next => Desc::read(name),
        };
        match crate::sched::CoroWait::start(task, sel, self.policy, deadline(self.timeout), desc) {
            Ok(r) => self.finish(py, r),
            Err(wait) => {
                self.coro = Some(wait);
                Ok(Out::Yield(crate::sched::blocked_marker(py)?.clone_ref(py)))
            }
        }
    }

    /// Later steps in a coroutine task: resume the selection; yield the marker while pending.
    fn resume_coro(&mut self, py: Python<'_>) -> Step {
        let (Some(wait), Some(sel)) = (self.coro.as_ref(), self.sel.as_mut()) else {
            return Err(PyRuntimeError::new_err("channel operation is not waiting"));
        };
        wait.check_stepper()?;
        match wait.resume(py, sel) {
            Ok(Poll::Ready(r)) => self.finish(py, r),
            Ok(Poll::Pending) => Ok(Out::Yield(crate::sched::blocked_marker(py)?.clone_ref(py))),
            Err(deadlock) => {
                self.done = true;
                self.coro = None;
                self.sel = None;
                Err(deadlock)
            }
        }
    }

    /// An exception thrown into an op waiting in a coroutine task: withdraw; a communication
    /// that won the race is kept (the op returns it and the exception is not raised: nothing
    /// of the coroutine backend throws in while an op waits, besides `close`).
    fn throw_coro(&mut self, py: Python<'_>, exc: PyErr) -> Step {
        if let Some(wait) = self.coro.as_ref() {
            wait.end();
        }
        let fired = self.sel.as_mut().and_then(|s| s.abort());
        self.coro = None;
        match fired {
            Some(Ok(s)) => self.finish(py, Ok(s)),
            _ => {
                self.done = true;
                self.sel = None;
                Err(exc)
            }
        }
    }

    fn withdrawer(&self) -> Weak<dyn Withdraw> {
        let me: Weak<dyn Withdraw> = self.me.clone();
        me
    }

    /// Later steps: the future completed (wake-up or timer); resume the selection.
    fn resume(&mut self, py: Python<'_>) -> Step {
        let Some(wait) = self.wait.as_mut() else {
            return Err(PyRuntimeError::new_err("channel operation is not waiting"));
        };
        // The task resumes the op only once the future it waits on is done (a wake-up takes
        // the future out of the waker; a timer completes it in place). A resume while it is
        // still pending comes from a second awaiter of the same op: refuse it without
        // disturbing the first.
        if let Some(fut) = wait.waker.installed(py) {
            if !fut.get().is_done() {
                return Err(PyRuntimeError::new_err(
                    "this channel operation is already being awaited",
                ));
            }
        }
        if let Some(t) = wait.timer.take() {
            t.call_method0(py, intern!(py, "cancel"))?;
        }
        let (waker, event_loop) = (Arc::clone(&wait.waker), wait.event_loop.clone_ref(py));
        let part = wait.part.clone();
        let withdrawer = self.withdrawer();
        let Some(sel) = self.sel.as_mut() else {
            return Err(PyRuntimeError::new_err("selection missing"));
        };
        loop {
            let poll = sel.resume();
            if let Some(deadlock) = part.as_ref().and_then(|p| p.deadlocked(py, sel, &poll)) {
                self.done = true;
                self.wait = None;
                self.sel = None;
                return Err(deadlock);
            }
            match poll {
                Poll::Ready(r) => return self.finish(py, r),
                Poll::Pending => {
                    // Still registered (an early timer, or a retired guard restarted the
                    // selection): install the next future, then look at the cell again. A
                    // completion after that look finds the future; one before it may have
                    // found no future, so resume again instead of sleeping.
                    let fut = Waiter::new(py, event_loop.clone_ref(py), withdrawer.clone())?
                        .into_bound(py);
                    waker.install(Some(fut.clone().unbind()));
                    if sel.is_waiting() {
                        return self.suspend(py, fut);
                    }
                }
            }
        }
    }

    /// Arms the deadline timer (if any) and yields `fut` to the task.
    fn suspend(&mut self, py: Python<'_>, fut: Bound<'_, Waiter>) -> Step {
        let at = self.sel.as_ref().and_then(|s| s.wake_deadline());
        if let (Some(at), Some(wait)) = (at, self.wait.as_mut()) {
            let delay = at.saturating_duration_since(Instant::now()).as_secs_f64();
            let timer = wait.event_loop.call_method1(
                py,
                intern!(py, "call_later"),
                (delay, wake_future_fn(py)?, fut.clone()),
            )?;
            wait.timer = Some(timer);
        }
        // What `Future.__await__` does before yielding itself to the task.
        fut.get().set_blocking(true);
        Ok(Out::Yield(fut.into_any().unbind()))
    }

    /// An exception thrown in while waiting: withdraw, keeping a result that won the race.
    fn throw(&mut self, py: Python<'_>, self_obj: &Bound<'_, PyAny>, exc: PyErr) -> Step {
        if self.delegate.is_some() {
            return self.drive(py, Some(exc));
        }
        if self.coro.is_some() {
            return self.throw_coro(py, exc);
        }
        let Some(wait) = self.wait.take() else {
            self.done = true;
            return Err(exc);
        };
        if let Some(t) = &wait.timer {
            t.call_method0(py, intern!(py, "cancel"))?;
        }
        wait.waker.install(None);
        let fired = match self.withdrawn.take() {
            Some(fired) => fired,
            None => self.sel.as_mut().and_then(|s| s.abort()),
        };
        match fired {
            Some(Ok(s)) if is_cancel(py, &exc)? => {
                keep_result_on_cancel(py, self_obj, &exc)?;
                self.finish(py, Ok(s))
            }
            _ => {
                self.done = true;
                self.sel = None;
                Err(exc)
            }
        }
    }
}

impl AsyncOp {
    /// Resumes the operation (`__next__`/`send`/`am_send`; a value sent in is ignored).
    pub(crate) fn step(&self, py: Python<'_>) -> Step {
        let mut inner = self.locked()?;
        if inner.delegate.is_some() {
            return inner.drive(py, None);
        }
        if inner.done {
            return Err(PyRuntimeError::new_err(
                "cannot reuse an already awaited channel operation",
            ));
        }
        if inner.coro.is_some() {
            inner.resume_coro(py)
        } else if inner.wait.is_none() {
            inner.start(py)
        } else {
            inner.resume(py)
        }
    }

    /// Throws `exc` in (cancellation); see the module docs for the rule. `me` is the Python
    /// object of this op (a task whose coroutine is the op itself is not re-cancelled).
    pub(crate) fn throw(&self, py: Python<'_>, me: &Bound<'_, PyAny>, exc: PyErr) -> Step {
        let mut inner = self.locked()?;
        inner.throw(py, me, exc)
    }

    /// Abandons the operation: withdraws a registration (a value that arrived in the race is
    /// dropped, as when a generator is closed; cancel the awaiting task to keep it instead).
    pub(crate) fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut inner = self.locked()?;
        inner.done = true;
        inner.wait = None;
        if let Some(wait) = inner.coro.take() {
            wait.end();
        }
        if let Some(mut sel) = inner.sel.take() {
            drop(sel.abort());
        }
        if let Some(coro) = inner.delegate.take() {
            coro.call_method0(py, intern!(py, "close")).map(drop)?;
        }
        Ok(())
    }
}

impl Withdraw for StepLock<Inner> {
    /// The waiter was cancelled (`Task.cancel`): withdraw the registration now, so no
    /// counterpart can complete with a task that is being cancelled; the `CancelledError`
    /// then thrown in finds what this found (a communication that won the race before the
    /// cancellation is kept, by the rule in the module docs).
    fn withdraw(&self, py: Python<'_>) {
        // Busy only while the op itself runs, when its task has no waiter to cancel.
        let Some(mut inner) = self.lock(crate::aio_op::gil_known()) else { return };
        if inner.withdrawn.is_some() || inner.done {
            return;
        }
        let Some(wait) = inner.wait.as_mut() else { return };
        if let Some(t) = wait.timer.take() {
            drop(t.call_method0(py, intern!(py, "cancel")));
        }
        let fired = inner.sel.as_mut().and_then(|s| s.abort());
        inner.withdrawn = Some(fired);
    }
}
