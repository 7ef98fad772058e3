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
//! Invariants:
//! - `Task::scheduled` is true iff the task is in a run queue (local or remote) (set by `wake` before the
//!   push, cleared by whoever pops it before switching to it). So a wake-up that happens after
//!   a task last started running always leaves it queued: none is lost, none duplicated.
//! - `Queue::idle` is set (under the queue lock) only by the hub, just before it parks with
//!   both queues empty; whoever pushes onto an idle queue clears it and unparks the hub.
//! - Resuming a task is always allowed to be spurious: a blocked task calls `Select::resume`
//!   after every switch back and blocks again while it is `Pending`.
//! - A timer entry fires only if its task is still in the wait that registered it
//!   (`Task::wait_gen`); stale entries are dropped.
//! - Only the scheduler's own thread switches greenlets or touches `CURRENT`.

use std::cell::RefCell;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::Thread;
use std::time::Instant;

use ferrocsp::{Policy, Poll, Select, SelectError, Selected, Wake, Waker};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

use crate::deadlock::{Desc, LocalWait, Participant};
use crate::pythread::Value;

static GREENLET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SWITCH: std::sync::OnceLock<SwitchFn> = std::sync::OnceLock::new();

/// `PyGreenlet_Switch(greenlet, args, kwargs)` from greenlet's C API capsule.
type SwitchFn = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *mut pyo3::ffi::PyObject,
    *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject;

/// Index of `PyGreenlet_Switch` in the `greenlet._C_API` table (greenlet.h,
/// `PyGreenlet_Switch_NUM`; stable since greenlet 0.4).
const SWITCH_NUM: usize = 6;

fn load_switch(py: Python<'_>) -> PyResult<SwitchFn> {
    if let Some(f) = SWITCH.get() {
        return Ok(*f);
    }
    // SAFETY: we hold the GIL; PyCapsule_Import imports greenlet and returns the capsule's
    // pointer: greenlet's table of C API entry points (void*), or NULL with an exception set.
    let table = unsafe { pyo3::ffi::PyCapsule_Import(c"greenlet._C_API".as_ptr(), 0) };
    if table.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: the table has at least SWITCH_NUM + 1 entries (greenlet.h) and entry
    // SWITCH_NUM is `PyObject* PyGreenlet_Switch(PyGreenlet*, PyObject*, PyObject*)`.
    let f: SwitchFn = unsafe {
        let entry = *(table as *const *const std::ffi::c_void).add(SWITCH_NUM);
        if entry.is_null() {
            return Err(PyRuntimeError::new_err("greenlet's C API has no PyGreenlet_Switch"));
        }
        std::mem::transmute::<*const std::ffi::c_void, SwitchFn>(entry)
    };
    Ok(*SWITCH.get_or_init(|| f))
}

/// `g.switch()` through greenlet's C API (no bound method, no argument parsing).
fn switch_to(py: Python<'_>, g: &Py<PyAny>) -> PyResult<()> {
    switch_to_with(py, g, None)
}

/// `g.switch(*args)` through greenlet's C API.
fn switch_to_with(py: Python<'_>, g: &Py<PyAny>, args: Option<&Py<PyTuple>>) -> PyResult<()> {
    let f = load_switch(py)?;
    let args = match args {
        Some(a) => a.bind(py).clone(),
        None => PyTuple::empty(py),
    };
    // SAFETY: `g` is a greenlet object (we made it, or it is the hub from getcurrent()),
    // `args` a tuple, kwargs may be NULL; we hold the GIL. The result is a new reference or
    // NULL with an exception set.
    let r = unsafe { f(g.as_ptr(), args.as_ptr(), std::ptr::null_mut()) };
    // SAFETY: as above, `r` is an owned reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, r) }.map(drop)
}
static GETCURRENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State that only the scheduler's own thread touches, so it needs no lock.
struct SchedCell<T>(std::cell::UnsafeCell<T>);

// SAFETY: every access goes through `with`, called only on the scheduler's thread (from a task
// greenlet in `select_in_greenlet`, or from the hub in `hub_loop`/`run`), never re-entrantly
// (no closure passed to `with` calls Python or another `with` on the same cell).
unsafe impl<T: Send> Sync for SchedCell<T> {}

impl<T> SchedCell<T> {
    fn new(v: T) -> Self {
        SchedCell(std::cell::UnsafeCell::new(v))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: see the `Sync` impl: one thread, no re-entrance, so this is the only borrow.
        f(unsafe { &mut *self.0.get() })
    }
}

thread_local! {
    /// The task whose greenlet runs now on this thread (None in the hub or outside schedulers).
    static CURRENT: RefCell<Option<Arc<Task>>> = const { RefCell::new(None) };
    /// The scheduler whose hub loop runs on this thread (null when none): lets a wake-up on
    /// that thread use the lock-free local queue.
    static RUNNING: std::cell::Cell<*const Shared> = const { std::cell::Cell::new(std::ptr::null()) };
}

fn set_current(task: Option<Arc<Task>>) {
    CURRENT.with(|c| *c.borrow_mut() = task);
}

/// The task of the calling greenlet, if the calling code runs in a ferrocsp scheduler.
pub(crate) fn current_task() -> Option<Arc<Task>> {
    CURRENT.with(|c| c.borrow().clone())
}

struct Queue {
    tasks: VecDeque<Arc<Task>>,
    idle: bool,
}

struct Timer {
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
struct Shared {
    /// Tasks woken on the scheduler's own thread (by its tasks, its hub, its timers): no lock,
    /// no atomic. Drained ahead of nothing: remote wake-ups are moved to its back at each pop.
    local: SchedCell<VecDeque<Arc<Task>>>,
    /// Tasks woken from other threads.
    queue: Mutex<Queue>,
    /// Whether `queue.tasks` may be non-empty (set and cleared under its lock).
    remote: AtomicBool,
    /// The scheduler's OS thread, unparked when an idle hub gets work.
    thread: Thread,
    /// Deadlines of blocked tasks; touched only on the scheduler's thread.
    timers: Mutex<BinaryHeap<Timer>>,
    /// Whether `timers` is non-empty (lets switching tasks skip the lock when there are none).
    has_timers: AtomicBool,
    /// Spawned tasks that have not finished.
    live: AtomicUsize,
    /// The hub greenlet (set while `run` runs).
    hub: Mutex<Option<Py<PyAny>>>,
    /// `threading.get_ident()` of the scheduler's thread (for deadlock detection).
    ident: u64,
    /// Tasks whose current wait is not yet published to deadlock detection.
    unpublished: SchedCell<Vec<Arc<Task>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("live", &self.live.load(Ordering::Relaxed)).finish()
    }
}

impl Shared {
    /// Makes `task` runnable: a plain push on the scheduler's running thread, else a push
    /// under the queue lock plus, if the hub is idle, an unpark.
    fn push(&self, task: Arc<Task>) {
        if self.is_running_here() {
            self.local.with(|q| q.push_back(task));
            return;
        }
        let wake_hub = {
            let mut q = lock(&self.queue);
            q.tasks.push_back(task);
            self.remote.store(true, Ordering::Release);
            std::mem::replace(&mut q.idle, false)
        };
        if wake_hub {
            self.thread.unpark();
        }
    }

    /// Whether the calling thread runs this scheduler now (its hub loop is on the stack).
    fn is_running_here(&self) -> bool {
        RUNNING.with(|r| std::ptr::eq(r.get(), self))
    }

    /// The next task to run (its `scheduled` flag cleared), skipping finished ones. Call on
    /// the scheduler's running thread. Remote wake-ups join the back of the local queue first,
    /// so tasks switching among themselves cannot starve them.
    fn pop(&self) -> Option<Arc<Task>> {
        if self.remote.load(Ordering::Acquire) {
            let mut q = lock(&self.queue);
            self.remote.store(false, Ordering::Release);
            self.local.with(|l| l.extend(q.tasks.drain(..)));
        }
        while let Some(t) = self.local.with(VecDeque::pop_front) {
            t.scheduled.store(false, Ordering::Release);
            if !t.done.load(Ordering::Acquire) {
                return Some(t);
            }
        }
        None
    }

    /// Wakes the tasks whose deadline passed; returns the earliest deadline still pending.
    fn fire_timers(&self, now: Instant) -> Option<Instant> {
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
    fn timer_due(&self) -> bool {
        if !self.has_timers.load(Ordering::Relaxed) {
            return false;
        }
        let timers = lock(&self.timers);
        timers.peek().is_some_and(|t| t.at <= Instant::now())
    }

    fn add_timer(&self, at: Instant, gen: u64, task: Arc<Task>) {
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

    fn hub(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        lock(&self.hub)
            .as_ref()
            .map(|h| h.clone_ref(py))
            .ok_or_else(|| PyRuntimeError::new_err("the greenlet scheduler is not running"))
    }
}

/// One process greenlet of a scheduler: the greenlet, and its side of the waker seam.
pub(crate) struct Task {
    me: Weak<Task>,
    shared: Arc<Shared>,
    /// Its greenlet until it ends (scheduler thread only, like everything switching).
    greenlet: SchedCell<Option<Py<PyAny>>>,
    /// In the run queue (see the module invariants).
    scheduled: AtomicBool,
    /// Its greenlet has started running (only the hub switches to a greenlet that has not).
    started: AtomicBool,
    /// The arguments of its first switch (the process function's), until it starts.
    start_args: Mutex<Option<Py<PyTuple>>>,
    done: AtomicBool,
    /// Incremented each time the task blocks; timer entries carry the value they were for.
    wait_gen: AtomicU64,
    /// The process name, for error messages (many processes share the thread).
    name: Mutex<Option<String>>,
    /// Its deadlock-detection record, registered at spawn, removed when the process ends.
    part: Arc<Participant>,
    /// Its current wait, published to `part` when the hub runs out of work.
    wait: SchedCell<LocalWait>,
    /// A cleared selection kept between its blocking operations (`wait::PooledSelect`). Its
    /// recycled cell holds this task as waker: the cycle is broken when the process ends.
    sel: SchedCell<Option<Box<Select<Value>>>>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("name", &*lock(&self.name)).finish()
    }
}

impl Wake for Task {
    fn wake(&self) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            self.shared.push(me);
        }
    }
}

impl Task {
    fn greenlet(&self, py: Python<'_>) -> Option<Py<PyAny>> {
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
    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.part.remove();
        self.shared.live.fetch_sub(1, Ordering::AcqRel);
        drop(self.take_select());
        let g = self.greenlet.with(Option::take);
        drop(g);
    }

    /// Switches away from this (blocked) task until somebody resumes it: to the next runnable
    /// task if there is one and no timer is due, otherwise to the hub.
    pub(crate) fn switch_out(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        let next = if self.shared.timer_due() { None } else { self.shared.pop() };
        let target = match next {
            Some(t) if Arc::ptr_eq(&t, self) => return Ok(()), // woken already
            Some(t) if !t.started.load(Ordering::Relaxed) => {
                // A greenlet starts on top of the stack that switches to it. Started from
                // here, it would nest on this task's stack: every saved stack would grow with
                // the number of processes started this way, and so would Python's recursion
                // depth. The hub, at the bottom of the stack, starts it instead.
                if !t.scheduled.swap(true, Ordering::AcqRel) {
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

/// Ends a greenlet task's recorded wait, however the wait ends.
struct EndWait<'a>(&'a Task);

impl Drop for EndWait<'_> {
    fn drop(&mut self) {
        self.0.wait.with(|w| w.clear(&self.0.part));
    }
}

/// Wakes a task if it still exists (the deadlock watchdog's handle on a greenlet task).
struct WeakTask(Weak<Task>);

impl Wake for WeakTask {
    fn wake(&self) {
        if let Some(t) = self.0.upgrade() {
            t.wake();
        }
    }
}

/// Runs `sel` to completion in the calling process greenlet: register, switch away, resume.
///
/// An exception thrown into the greenlet while it is switched out (e.g. `GreenletExit`)
/// withdraws the selection; if the operation completed in the race, its result is kept.
pub(crate) fn select_in_greenlet<'a>(
    py: Python<'_>,
    task: &Arc<Task>,
    sel: &mut Select<Value>,
    policy: Policy,
    deadline: Option<Instant>,
    desc: impl FnOnce() -> Desc<'a>,
) -> PyResult<Result<Selected<Value>, SelectError>> {
    let waker = Waker::Custom(Arc::clone(task) as Arc<dyn Wake>);
    let mut poll = sel.start(policy, waker, deadline);
    if let Poll::Ready(r) = poll {
        return Ok(r);
    }
    // Recorded locally (no lock): the hub publishes it if the scheduler runs out of work.
    let desc = desc();
    let list = task.wait.with(|w| {
        w.record(&desc, sel);
        !std::mem::replace(&mut w.listed, true)
    });
    if list {
        task.shared.unpublished.with(|l| l.push(Arc::clone(task)));
    }
    let _unblock = EndWait(task);
    loop {
        match poll {
            Poll::Ready(r) => return Ok(r),
            Poll::Pending => {}
        }
        let gen = task.next_wait_gen();
        if let Some(at) = sel.wake_deadline() {
            task.shared.add_timer(at, gen, Arc::clone(task));
        }
        if let Err(e) = task.switch_out(py) {
            task.next_wait_gen();
            return match sel.abort() {
                None => Err(e),
                Some(done) => Ok(done),
            };
        }
        poll = sel.resume();
        if let Some(deadlock) = task.part.deadlocked(py, sel, &poll) {
            return Err(deadlock);
        }
    }
}

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

fn greenlet_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    GREENLET.import(py, "greenlet", "greenlet")
}

fn getcurrent(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    GETCURRENT.import(py, "greenlet", "getcurrent")?.call0()
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
                queue: Mutex::new(Queue { tasks: VecDeque::new(), idle: false }),
                remote: AtomicBool::new(false),
                thread: std::thread::current(),
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
    #[pyo3(signature = (fn_, *args))]
    fn spawn(
        &self,
        py: Python<'_>,
        fn_: Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        if !fn_.is_callable() {
            return Err(PyTypeError::new_err("spawn needs a callable"));
        }
        if std::thread::current().id() != self.shared.thread.id() {
            return Err(PyRuntimeError::new_err(
                "a greenlet scheduler is used from the thread that made it",
            ));
        }
        let task = Arc::new_cyclic(|me| Task {
            me: me.clone(),
            shared: Arc::clone(&self.shared),
            greenlet: SchedCell::new(None),
            scheduled: AtomicBool::new(false),
            started: AtomicBool::new(false),
            start_args: Mutex::new(None),
            done: AtomicBool::new(false),
            wait_gen: AtomicU64::new(0),
            name: Mutex::new(None),
            part: crate::deadlock::greenlet_participant(self.shared.ident),
            wait: SchedCell::new(LocalWait::default()),
            sel: SchedCell::new(None),
        });
        // Weak: the record must not keep its task alive (the task holds the record).
        let weak: Arc<dyn Wake> = Arc::new(WeakTask(Arc::downgrade(&task)));
        task.part.set_waker(Waker::Custom(weak));
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

    /// Runs every spawned process greenlet until all have finished (new ones may be spawned
    /// meanwhile). An idle scheduler parks its thread with the GIL released.
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err("this greenlet scheduler is already running"));
        }
        if std::thread::current().id() != self.shared.thread.id() {
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
            drop(t.take_select());
        }
        lock(&self.shared.timers).clear();
        drop(self.shared.unpublished.with(std::mem::take));
        let q = std::mem::take(&mut lock(&self.shared.queue).tasks);
        drop(q);
        drop(self.shared.local.with(std::mem::take));
        *lock(&self.shared.hub) = None;
        set_current(None);
        self.running.store(false, Ordering::Release);
        r
    }
}

impl Scheduler {
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
        loop {
            let next_deadline = self.shared.fire_timers(Instant::now());
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
                let mut q = lock(&self.shared.queue);
                if !q.tasks.is_empty() {
                    continue;
                }
                q.idle = true;
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
            py.detach(|| match until {
                None => std::thread::park(),
                Some(t) => {
                    let now = Instant::now();
                    if t > now {
                        std::thread::park_timeout(t - now);
                    }
                }
            });
            lock(&self.shared.queue).idle = false;
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
