//! The greenlet backend: one scheduler per OS thread, multiplexing process greenlets.
//!
//! A `_Scheduler` runs in the thread that calls `run()`: that thread's current greenlet becomes
//! the *hub*. Each spawned process is a greenlet whose parent is the hub. A process that blocks
//! in a channel operation (`wait::select_blocking` finds [`current_task`] set) registers its
//! selection with `Waker::Custom(its task)` and switches away: straight to the next runnable
//! task when there is one, otherwise to the hub. The hub runs the queue, fires timeouts, and
//! when nothing is runnable parks its OS thread (GIL released) until a wake-up or the earliest
//! deadline.
//!
//! Wake-ups: [`Task::wake`] on the thread running the scheduler (a task of the same scheduler
//! completing another's operation, the hub firing a timer) pushes the task onto a local run
//! queue that only that thread touches: no lock, no atomic, no kernel call. So a communication
//! between two greenlets of one scheduler is a hand-off under the channel lock, a local push
//! and, when the writer blocks next, a switch. A wake-up from another thread (thread or
//! asyncio backend, an `io()` worker, a poisoner, the deadlock watchdog) pushes onto a
//! mutex-protected remote queue and unparks the hub thread only if the hub is idle; each `pop`
//! first moves remote tasks to the back of the local queue, so neither starves the other.
//!
//! This file is the Python-facing `_Scheduler` (spawning tasks, running the hub loop);
//! `sched/tasks.rs` holds the tasks, run queues and timers, `sched/block.rs` how a task blocks
//! in a selection, and `sched/greenlet.rs` the greenlet calls.
//!
//! Invariants:
//! - `Task::scheduled` is true iff the task is in a run queue (local or remote) (set by `wake` before the
//!   push, cleared by whoever pops it before switching to it, by a swap). So a wake-up that
//!   happens after a task last started running always leaves it queued: none is lost, none
//!   duplicated. The cross-thread part (remote queue, idle flag, scheduled flag) is
//!   `ferrocsp::runq`, model-checked there (`tests/loom_runq.rs`).
//! - `RunQueue`'s idle flag is set (under the queue lock) only by the hub, just before it parks with
//!   both queues empty; whoever pushes onto an idle queue clears it and unparks the hub.
//! - Resuming a task is always allowed to be spurious: a blocked task calls `Select::resume`
//!   after every switch back and blocks again while it is `Pending`.
//! - A timer entry fires only if its task is still in the wait that registered it
//!   (`Task::wait_gen`); stale entries are dropped.
//! - Only the scheduler's own thread switches greenlets or touches `CURRENT`.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferrocsp::runq::{RunQueue, Scheduled};
use ferrocsp::{Wake, Waker};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::deadlock::LocalWait;

mod block;
mod coro;
pub(crate) mod greenlet;
mod tasks;

pub(crate) use block::{plain_read, plain_write, select_in_greenlet};
pub(crate) use coro::{blocked_marker, CoroWait};
use greenlet::{getcurrent, greenlet_type, load_switch, switch_to_with};
pub(crate) use tasks::{current_coro, current_task, with_coro, Task};
use tasks::{lock, set_current, SchedCell, Shared, TaskWake, WeakTask, CURRENT, RUNNING};

/// A scheduler of process greenlets for the calling OS thread (the greenlet backend).
///
/// ``spawn(fn)`` adds a process greenlet (its parent is the greenlet calling ``run``);
/// ``run()`` runs them all until every one has finished.
#[pyclass(frozen, module = "ferrocsp._native", name = "_Scheduler")]
pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<Arc<Task>>>,
    running: AtomicBool,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("shared", &self.shared).finish()
    }
}

#[pymethods]
impl Scheduler {
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        greenlet_type(py)?; // fail here, clearly, if greenlet is not installed
        load_switch(py)?;
        Ok(Scheduler {
            shared: Arc::new(Shared {
                local: SchedCell::new(VecDeque::new()),
                queue: RunQueue::new(std::thread::current()),
                timers: Mutex::new(BinaryHeap::new()),
                has_timers: AtomicBool::new(false),
                live: AtomicUsize::new(0),
                hub: Mutex::new(None),
                ident: crate::deadlock::thread_ident(py)?,
                unpublished: SchedCell::new(Vec::new()),
            }),
            tasks: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
        })
    }

    /// Adds a process greenlet that will call ``fn(*args)``; call from the scheduler's thread.
    /// ``coroutine``: it runs an operation for a coroutine process (``_io._offload``), and
    /// deadlock reports and ``dump()`` show it as that backend's.
    #[pyo3(signature = (fn_, *args, coroutine = false))]
    fn spawn(
        &self,
        py: Python<'_>,
        fn_: Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        coroutine: bool,
    ) -> PyResult<()> {
        if !fn_.is_callable() {
            return Err(PyTypeError::new_err("spawn needs a callable"));
        }
        if std::thread::current().id() != self.shared.queue.hub().id() {
            return Err(PyRuntimeError::new_err(
                "a greenlet scheduler is used from the thread that made it",
            ));
        }
        let task = self.new_task(coroutine);
        *lock(&task.start_args) = Some(args.clone().unbind());
        let kwargs = PyDict::new(py);
        // The greenlet runs `fn_` itself: no wrapper frame between the greenlet's start and
        // the process body, so a blocked process saves as little C stack as possible. The
        // hub notices the end (see `hub_loop`).
        kwargs.set_item("run", fn_)?;
        // The parent gets control back when the process ends: always the hub (the greenlet
        // calling `run`, which is the current one when spawning before `run`).
        if let Some(hub) = lock(&self.shared.hub).as_ref() {
            kwargs.set_item("parent", hub.bind(py))?;
        }
        let g = greenlet_type(py)?.call((), Some(&kwargs))?;
        let g = g.unbind();
        task.greenlet.with(|slot| *slot = Some(g));
        self.shared.live.fetch_add(1, Ordering::AcqRel);
        lock(&self.tasks).push(Arc::clone(&task));
        task.wake();
        Ok(())
    }

    /// Adds a coroutine task stepping ``coro`` (the native coroutine backend, ``sched/coro.rs``),
    /// named ``name``; ``done(value, None)`` is called when it returns, ``done(None, exc)`` when
    /// it raises. Call from the scheduler's thread.
    #[pyo3(signature = (coro, done = None, name = None))]
    fn spawn_coro(
        &self,
        coro: Bound<'_, PyAny>,
        done: Option<Bound<'_, PyAny>>,
        name: Option<String>,
    ) -> PyResult<()> {
        if !coro.hasattr(pyo3::intern!(coro.py(), "send"))? {
            return Err(PyTypeError::new_err(format!(
                "spawn_coro needs a coroutine, not {}",
                coro.get_type().name()?
            )));
        }
        if std::thread::current().id() != self.shared.queue.hub().id() {
            return Err(PyRuntimeError::new_err(
                "a coroutine scheduler is used from the thread that made it",
            ));
        }
        let task = self.new_task(true);
        if name.is_some() {
            task.set_name(name);
        }
        let c = coro::Coro::new(coro.unbind(), done.map(Bound::unbind));
        task.coro.with(|slot| *slot = Some(c));
        self.shared.live.fetch_add(1, Ordering::AcqRel);
        lock(&self.tasks).push(Arc::clone(&task));
        task.wake();
        Ok(())
    }

    /// Runs every spawned process greenlet until all have finished (new ones may be spawned
    /// meanwhile). An idle scheduler parks its thread with the GIL released.
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err("this greenlet scheduler is already running"));
        }
        if std::thread::current().id() != self.shared.queue.hub().id() {
            self.running.store(false, Ordering::Release);
            return Err(PyRuntimeError::new_err(
                "a greenlet scheduler runs in the thread that made it",
            ));
        }
        let outer = RUNNING.with(|r| r.replace(Arc::as_ptr(&self.shared)));
        let r = self.hub_loop(py);
        RUNNING.with(|r| r.set(outer));
        // Whatever happened, no greenlet of ours may stay reachable from Rust only.
        for t in std::mem::take(&mut *lock(&self.tasks)) {
            t.part.remove();
            let g = t.greenlet.with(Option::take);
            drop(g);
            let c = t.coro.with(Option::take);
            drop(c);
            drop(t.take_select());
        }
        lock(&self.shared.timers).clear();
        drop(self.shared.unpublished.with(std::mem::take));
        let q = self.shared.queue.take_all();
        drop(q);
        drop(self.shared.local.with(std::mem::take));
        *lock(&self.shared.hub) = None;
        set_current(None);
        self.running.store(false, Ordering::Release);
        r
    }
}

impl Scheduler {
    /// A new task of this scheduler, with its deadlock-detection record (`coroutine`: reported
    /// as the coroutine backend's).
    fn new_task(&self, coroutine: bool) -> Arc<Task> {
        let part = if coroutine {
            crate::deadlock::coroutine_participant(self.shared.ident)
        } else {
            crate::deadlock::greenlet_participant(self.shared.ident)
        };
        let task = Arc::new_cyclic(|me| Task {
            me: me.clone(),
            shared: Arc::clone(&self.shared),
            greenlet: SchedCell::new(None),
            coro: SchedCell::new(None),
            scheduled: Scheduled::new(),
            started: AtomicBool::new(false),
            start_args: Mutex::new(None),
            done: AtomicBool::new(false),
            wait_gen: AtomicU64::new(0),
            name: Mutex::new(None),
            part,
            wait: SchedCell::new(LocalWait::default()),
            sel: SchedCell::new(None),
            waker: Waker::Custom(Arc::new(TaskWake {
                task: me.clone(),
                shared: Arc::clone(&self.shared),
            })),
        });
        // Weak: the record must not keep its task alive (the task holds the record).
        let weak: Arc<dyn Wake> = Arc::new(WeakTask(Arc::downgrade(&task)));
        task.part.set_waker(Waker::Custom(weak));
        task
    }

    /// Publishes the waits of the tasks blocked since the hub last ran out of work.
    fn publish_waits(&self) {
        let tasks = self.shared.unpublished.with(std::mem::take);
        for t in tasks {
            t.wait.with(|w| {
                w.listed = false;
                w.publish(&t.part);
            });
        }
    }

    fn hub_loop(&self, py: Python<'_>) -> PyResult<()> {
        *lock(&self.shared.hub) = Some(getcurrent(py)?.unbind());
        let main = crate::pythread::is_main_thread(py)?;
        set_current(None);
        let running = crate::detach::Hub::enter();
        loop {
            running.stop_if_frozen(py);
            let next_deadline = self.shared.fire_timers(Instant::now);
            if let Some(t) = self.shared.pop() {
                if let Some(g) = t.greenlet(py) {
                    let args = if t.started.swap(true, Ordering::Relaxed) {
                        None
                    } else {
                        lock(&t.start_args).take()
                    };
                    set_current(Some(t));
                    let r = switch_to_with(py, &g, args.as_ref());
                    // A task that switched here cleared the current task first; one that is
                    // still current got here because its greenlet ended (returned or raised
                    // into its parent, the hub).
                    if let Some(ended) = CURRENT.with(|c| c.borrow_mut().take()) {
                        ended.finish();
                    }
                    r?;
                } else {
                    coro::step(py, &t)?;
                }
                continue;
            }
            if self.shared.live.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            // Nothing runnable: park until a wake-up, the next deadline, or (main thread) a
            // signal slice. A push after we set `idle` unparks us; one before it is seen by
            // the check under the same lock.
            {
                // `pop` found the local queue empty, and only this thread pushes onto it.
                if !self.shared.queue.go_idle() {
                    continue;
                }
            }
            // Idle: the blocked tasks' waits now matter to deadlock detection. (A wake-up
            // meanwhile cleared `idle` and unparked us, so the park below returns at once.)
            self.publish_waits();
            let slice =
                if main { Instant::now().checked_add(crate::pythread::SIGNAL_SLICE) } else { None };
            let until = match (next_deadline, slice) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            running.park(py, || match until {
                None => std::thread::park(),
                Some(t) => {
                    let now = Instant::now();
                    if t > now {
                        std::thread::park_timeout(t - now);
                    }
                }
            });
            self.shared.queue.busy();
            if main {
                py.check_signals()?;
            }
        }
    }
}

/// Whether the calling code runs in a process greenlet of a ferrocsp scheduler.
#[pyfunction]
pub(crate) fn _in_scheduler() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}
