//! A scheduler's tasks and what they share with it: the run queues (local and remote), the
//! timers, and the task record of each process greenlet.
//!
//! Invariants (the scheduler's, `sched.rs`, restated where they are kept):
//! - `Task::scheduled` is true iff the task is in a run queue: `wake` sets it before the push,
//!   whoever pops the task clears it before switching to it.
//! - The local queue, `SchedCell`s and `CURRENT` are touched only on the scheduler's own
//!   thread; other threads push onto the locked remote queue, and unpark the hub only if it
//!   set `Queue::idle`.
//! - A timer fires only if its task is still in the wait that registered it (`wait_gen`).

use std::cell::RefCell;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use ferrocsp::runq::{RunQueue, Scheduled};
use ferrocsp::{Select, Wake, Waker};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::greenlet::switch_to;
use crate::deadlock::{LocalWait, Participant};
use crate::pythread::Value;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State that only the scheduler's own thread touches, so it needs no lock.
pub(super) struct SchedCell<T>(std::cell::UnsafeCell<T>);

// SAFETY: every access goes through `with`, called only on the scheduler's thread (from a task
// greenlet in `select_in_greenlet`, or from the hub in `hub_loop`/`run`), never re-entrantly
// (no closure passed to `with` calls Python or another `with` on the same cell).
unsafe impl<T: Send> Sync for SchedCell<T> {}

impl<T> SchedCell<T> {
    pub(super) fn new(v: T) -> Self {
        SchedCell(std::cell::UnsafeCell::new(v))
    }

    pub(super) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: see the `Sync` impl: one thread, no re-entrance, so this is the only borrow.
        f(unsafe { &mut *self.0.get() })
    }
}

thread_local! {
    /// The task whose greenlet runs now on this thread (None in the hub or outside schedulers).
    pub(super) static CURRENT: RefCell<Option<Arc<Task>>> = const { RefCell::new(None) };
    /// The scheduler whose hub loop runs on this thread (null when none): lets a wake-up on
    /// that thread use the lock-free local queue.
    pub(super) static RUNNING: std::cell::Cell<*const Shared> = const { std::cell::Cell::new(std::ptr::null()) };
    /// The coroutine task the hub is stepping now on this thread (null when none): set by
    /// `coro::step` around the coroutine's `send`, while the hub holds the task alive.
    pub(super) static CORO: std::cell::Cell<*const Arc<Task>> = const { std::cell::Cell::new(std::ptr::null()) };
}

pub(super) fn set_current(task: Option<Arc<Task>>) {
    CURRENT.with(|c| *c.borrow_mut() = task);
}

/// The task of the calling greenlet, if the calling code runs in a ferrocsp scheduler.
pub(crate) fn current_task() -> Option<Arc<Task>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The coroutine task whose coroutine runs now (native coroutine backend), if any.
pub(crate) fn current_coro() -> Option<Arc<Task>> {
    with_coro(|t| t.map(Arc::clone))
}

/// Calls `f` with the coroutine task whose coroutine runs now (borrowed: no reference count
/// operation), if any.
pub(crate) fn with_coro<R>(f: impl FnOnce(Option<&Arc<Task>>) -> R) -> R {
    let p = CORO.with(std::cell::Cell::get);
    // SAFETY: `coro::step` points CORO at an `Arc` its caller (the hub) holds on its stack for
    // the whole step, and restores the previous value before that `Arc` can go; a non-null
    // value is read only by code running inside that step, on this thread.
    f(unsafe { p.as_ref() })
}

pub(super) struct Timer {
    at: Instant,
    gen: u64,
    task: Arc<Task>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed: `BinaryHeap` is a max-heap, we want the earliest deadline on top.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.gen).cmp(&(self.at, self.gen))
    }
}

/// What the tasks of one scheduler share with it (and with threads that wake them).
pub(super) struct Shared {
    /// Tasks woken on the scheduler's own thread (by its tasks, its hub, its timers): no lock,
    /// no atomic. Drained ahead of nothing: remote wake-ups are moved to its back at each pop.
    pub(super) local: SchedCell<VecDeque<Arc<Task>>>,
    /// Tasks woken from other threads, and the scheduler's OS thread, unparked when an idle
    /// hub gets work (`ferrocsp::runq`: the cross-thread protocol, loom-checked there).
    pub(super) queue: RunQueue<Arc<Task>>,
    /// Deadlines of blocked tasks; touched only on the scheduler's thread.
    pub(super) timers: Mutex<BinaryHeap<Timer>>,
    /// Whether `timers` is non-empty (lets switching tasks skip the lock when there are none).
    pub(super) has_timers: AtomicBool,
    /// Spawned tasks that have not finished.
    pub(super) live: AtomicUsize,
    /// The hub greenlet (set while `run` runs).
    pub(super) hub: Mutex<Option<Py<PyAny>>>,
    /// `threading.get_ident()` of the scheduler's thread (for deadlock detection).
    pub(super) ident: u64,
    /// Tasks whose current wait is not yet published to deadlock detection.
    pub(super) unpublished: SchedCell<Vec<Arc<Task>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("live", &self.live.load(Ordering::Relaxed)).finish()
    }
}

impl Shared {
    /// Makes `task` runnable: a plain push on the scheduler's running thread, else a push
    /// under the queue lock plus, if the hub is idle, an unpark.
    pub(super) fn push(&self, task: Arc<Task>) {
        if self.is_running_here() {
            self.local.with(|q| q.push_back(task));
            return;
        }
        self.queue.push(task);
    }

    /// Whether the calling thread runs this scheduler now (its hub loop is on the stack).
    pub(super) fn is_running_here(&self) -> bool {
        RUNNING.with(|r| std::ptr::eq(r.get(), self))
    }

    /// The next task to run (its `scheduled` flag cleared), skipping finished ones. Call on
    /// the scheduler's running thread. Remote wake-ups join the back of the local queue first,
    /// so tasks switching among themselves cannot starve them.
    pub(super) fn pop(&self) -> Option<Arc<Task>> {
        // One `with` per step: a finished task dropped here is dropped outside them all.
        self.queue.pop(
            |remote| self.local.with(|l| l.append(remote)),
            || self.local.with(VecDeque::pop_front),
            |t| &t.scheduled,
            |t| t.done.load(Ordering::Acquire),
        )
    }

    /// Wakes the tasks whose deadline passed; returns the earliest deadline still pending.
    pub(super) fn fire_timers(&self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        // Tasks that step without timers (the common case) pay neither the clock nor the lock.
        if !self.has_timers.load(Ordering::Relaxed) {
            return None;
        }
        let now = now();
        let mut due = Vec::new();
        let next = {
            let mut timers = lock(&self.timers);
            let next = loop {
                let Some(top) = timers.peek() else { break None };
                if top.task.wait_gen.load(Ordering::Relaxed) != top.gen {
                    timers.pop(); // stale: its wait ended
                    continue;
                }
                if top.at > now {
                    break Some(top.at);
                }
                if let Some(t) = timers.pop() {
                    due.push(t.task);
                }
            };
            self.has_timers.store(!timers.is_empty(), Ordering::Relaxed);
            next
        };
        for t in due {
            t.wake();
        }
        next
    }

    /// Whether a timer may be due (cheap check for tasks switching among themselves).
    pub(super) fn timer_due(&self) -> bool {
        if !self.has_timers.load(Ordering::Relaxed) {
            return false;
        }
        let timers = lock(&self.timers);
        timers.peek().is_some_and(|t| t.at <= Instant::now())
    }

    #[inline(never)] // off the switch path's frames (see `block::wait_in_greenlet`)
    pub(super) fn add_timer(&self, at: Instant, gen: u64, task: Arc<Task>) {
        let mut timers = lock(&self.timers);
        // Stale entries pile up when waits with long timeouts end early: sweep them now and
        // then (amortised O(log n) per entry).
        let live = self.live.load(Ordering::Relaxed);
        if timers.len() > 64 + 2 * live {
            timers.retain(|t| t.task.wait_gen.load(Ordering::Relaxed) == t.gen);
        }
        timers.push(Timer { at, gen, task });
        self.has_timers.store(true, Ordering::Relaxed);
    }

    #[inline(never)] // off the switch path's frames (see `block::wait_in_greenlet`)
    pub(super) fn hub(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        lock(&self.hub)
            .as_ref()
            .map(|h| h.clone_ref(py))
            .ok_or_else(|| PyRuntimeError::new_err("the greenlet scheduler is not running"))
    }
}

/// One process greenlet of a scheduler: the greenlet, and its side of the waker seam.
pub(crate) struct Task {
    pub(super) me: Weak<Task>,
    pub(super) shared: Arc<Shared>,
    /// Its greenlet until it ends (scheduler thread only, like everything switching).
    pub(super) greenlet: SchedCell<Option<Py<PyAny>>>,
    /// A coroutine task's coroutine until it ends, and what to call with its result
    /// (`sched/coro.rs`); None for greenlet tasks.
    pub(super) coro: SchedCell<Option<super::coro::Coro>>,
    /// In the run queue (see the module invariants).
    pub(super) scheduled: Scheduled,
    /// Its greenlet has started running (only the hub switches to a greenlet that has not).
    pub(super) started: AtomicBool,
    /// The arguments of its first switch (the process function's), until it starts.
    pub(super) start_args: Mutex<Option<Py<PyTuple>>>,
    pub(super) done: AtomicBool,
    /// Incremented each time the task blocks; timer entries carry the value they were for.
    pub(super) wait_gen: AtomicU64,
    /// The process name, for error messages (many processes share the thread).
    pub(super) name: Mutex<Option<String>>,
    /// Its deadlock-detection record, registered at spawn, removed when the process ends.
    pub(super) part: Arc<Participant>,
    /// Its current wait, published to `part` when the hub runs out of work.
    pub(super) wait: SchedCell<LocalWait>,
    /// A cleared selection kept between its blocking operations (`wait::PooledSelect`,
    /// `block::plain_read`). Its recycled cell may hold this task as waker: the cycle
    /// is broken when the process ends.
    pub(super) sel: SchedCell<Option<Box<Select<Value>>>>,
    /// What wakes this task (a [`TaskWake`]), made once: a selection's recycled cell keeps
    /// it from one wait to the next, so a blocking operation clones no waker.
    pub(crate) waker: Waker,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("name", &*lock(&self.name)).finish()
    }
}

impl Wake for Task {
    fn wake(&self) {
        if !self.scheduled.mark() {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            self.shared.push(me);
        }
    }
}

impl Task {
    pub(super) fn greenlet(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.greenlet.with(|g| g.as_ref().map(|g| g.clone_ref(py)))
    }

    /// Sets the process name of this task; returns the previous one.
    pub(crate) fn set_name(&self, name: Option<String>) -> Option<String> {
        self.part.set_name(name.clone());
        std::mem::replace(&mut *lock(&self.name), name)
    }

    /// Starts a new wait generation. Only the scheduler's thread writes `wait_gen`, so a load
    /// and a store do (no read-modify-write, which costs a locked instruction per wait).
    pub(crate) fn next_wait_gen(&self) -> u64 {
        let gen = self.wait_gen.load(Ordering::Relaxed).wrapping_add(1);
        self.wait_gen.store(gen, Ordering::Relaxed);
        gen
    }

    /// Its deadlock-detection record.
    pub(crate) fn participant(&self) -> Arc<Participant> {
        Arc::clone(&self.part)
    }

    /// The task's kept selection, if any (scheduler thread only).
    pub(crate) fn take_select(&self) -> Option<Box<Select<Value>>> {
        self.sel.with(Option::take)
    }

    /// Keeps a cleared selection for the task's next blocking operation.
    pub(crate) fn put_select(&self, sel: Box<Select<Value>>) {
        let old = self.sel.with(|s| s.replace(sel));
        drop(old);
    }

    pub(crate) fn name(&self) -> Option<String> {
        lock(&self.name).clone()
    }

    /// Its process greenlet has ended: leave the scheduler and the deadlock registry, and drop
    /// the greenlet (breaking the cycle task -> greenlet -> frames -> task).
    pub(super) fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.part.remove();
        self.shared.live.fetch_sub(1, Ordering::AcqRel);
        drop(self.take_select());
        let g = self.greenlet.with(Option::take);
        drop(g);
        let c = self.coro.with(Option::take);
        drop(c);
    }

    /// Whether this is a coroutine task (stepped by the hub, never switched to).
    pub(super) fn is_coro(&self) -> bool {
        self.coro.with(|c| c.is_some())
    }

    /// Switches away from this (blocked) task until somebody resumes it: to the next runnable
    /// task if there is one and no timer is due, otherwise to the hub. Inlined: its frame and
    /// its caller's are among those a blocked greenlet saves at every switch, one is less.
    #[inline(always)]
    pub(crate) fn switch_out(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        let next = if self.shared.timer_due() { None } else { self.shared.pop() };
        let target = match next {
            Some(t) if Arc::ptr_eq(&t, self) => return Ok(()), // woken already
            Some(t) if !t.started.load(Ordering::Relaxed) || t.is_coro() => {
                // A greenlet starts on top of the stack that switches to it. Started from
                // here, it would nest on this task's stack: every saved stack would grow with
                // the number of processes started this way, and so would Python's recursion
                // depth. The hub, at the bottom of the stack, starts it instead; and only the
                // hub steps coroutine tasks.
                if t.scheduled.mark() {
                    self.shared.local.with(|q| q.push_front(t));
                }
                set_current(None);
                self.shared.hub(py)?
            }
            Some(t) => match t.greenlet(py) {
                Some(g) => {
                    set_current(Some(t));
                    g
                }
                None => {
                    set_current(None);
                    self.shared.hub(py)?
                }
            },
            None => {
                set_current(None);
                self.shared.hub(py)?
            }
        };
        let r = switch_to(py, &target);
        // Whoever resumed us (the hub, or a task switching out) made us current already;
        // only an exception thrown in may arrive without that.
        let current = CURRENT.with(|c| c.borrow().as_ref().is_some_and(|t| Arc::ptr_eq(t, self)));
        if !current {
            set_current(Some(Arc::clone(self)));
        }
        r
    }
}

/// A task's own waker ([`Task::waker`]): weak, so the task's record of it makes no cycle, and
/// holding the scheduler, so a wake-up pushes the upgraded task itself (one reference count
/// operation, as [`Task::wake`]'s).
pub(super) struct TaskWake {
    pub(super) task: Weak<Task>,
    pub(super) shared: Arc<Shared>,
}

impl Wake for TaskWake {
    fn wake(&self) {
        if let Some(t) = self.task.upgrade() {
            if t.scheduled.mark() {
                self.shared.push(t);
            }
        }
    }
}

/// Wakes a task if it still exists (the deadlock watchdog's handle on a greenlet task).
pub(super) struct WeakTask(pub(super) Weak<Task>);

impl Wake for WeakTask {
    fn wake(&self) {
        if let Some(t) = self.0.upgrade() {
            t.wake();
        }
    }
}
