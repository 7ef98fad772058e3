//! Who waits on what: the participant registry, and deadlock detection on top of it.
//!
//! Every blocked wait records who waits on what and since when (Go's wait reasons): that one
//! record powers `Deadlock` reports and `_participants()` (dump, graph).
//!
//! **Participants** are every ferrocsp process (a thread process from its start, a greenlet
//! task from its spawn, an asyncio process from its first step) and every other Python thread
//! from its first blocking channel operation on. A thread participant leaves the registry when
//! its thread ends (a thread-local destructor), a greenlet or asyncio one when its process ends.
//!
//! A participant is **stuck** while it waits for its own processes (`join`/`run` without a
//! timeout), or while it is blocked in a channel operation or Alt with no Timeout or deadline
//! pending, outside `io()`, and its selection cell is still `Waiting`. A **deadlock** is the
//! moment every participant is stuck, at least one of them in a channel operation, and nothing
//! else can run: every live Python thread hosts participants (or is an idle `io()` worker), and
//! every asyncio task on a loop hosting participants is a participant. Then nobody can ever
//! complete any of the selections, so each blocked operation raises `Deadlock`.
//!
//! Detection costs the fast path nothing: the non-blocking path never looks at the registry.
//! A blocking operation on a thread or in asyncio updates its own participant's record (an
//! uncontended mutex) and one global counter of participants that are not stuck; a greenlet
//! task only writes a [`LocalWait`] (no lock, no shared atomic), which its hub publishes when
//! the scheduler runs out of work. When the counter drops to zero the watchdog thread
//! (started lazily) waits [`GRACE`], looks without the GIL, and only then checks, with the
//! GIL:
//!
//! 1. snapshot every participant (record generation, stuck, cell still waiting);
//! 2. look at the Python threads and asyncio tasks (no registry lock held: Python code may
//!    release the GIL);
//! 3. snapshot again: if no record changed, every participant was stuck during the whole
//!    interval (a double collect), so nothing that ran in between could complete a wait.
//!
//! Then, for each blocked participant, it stores the report in the record, aborts the cell
//! (`Signal::try_abort`) and wakes the owner with its backend's waker. The owner's
//! `Select::resume` then gives `WouldBlock` while the selection is still registered, which
//! happens only for a cell aborted by someone else: [`Participant::deadlocked`] withdraws the
//! selection and raises `Deadlock`. If the cell was completed first (only a thread that is no
//! participant could have done it), the watchdog's abort fails, the report is dropped and the
//! operation's result stands. Aborting in the watchdog (not in the owner) means a peer that
//! raises first and poisons its channels cannot turn the others' reports into clean
//! `ChannelPoisoned` ends. A check that fails because some thread or task is not a participant
//! is retried with a backoff while the counter stays zero.
//!
//! `FERROCSP_DEADLOCK=off` (read once) disables detection; the registry still records waits.
//!
//! At interpreter exit `_stop_watchdog` (an `atexit` hook) waits until the watchdog is outside
//! Python and keeps it out: a thread that takes the GIL once the interpreter is finalizing is
//! ended by `pthread_exit`, whose forced unwind aborts the process when it meets Rust frames,
//! and a declared deadlock's asyncio wake-ups (`call_soon_threadsafe`, which writes to the
//! loop's socket with the GIL released) used to race the main thread's exit that way.
//!
//! Lock order: `IN_PYTHON` -> GIL (when held) -> `REGISTRY` -> one participant's `inner`. The
//! watchdog takes the GIL before any registry lock; owners never wait for the GIL while holding
//! one; `_stop_watchdog` releases the GIL before taking `IN_PYTHON`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ferrocsp::{Poll, Select, SelectError, Signal, Waker};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::pythread::Value;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a participant runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Thread,
    Greenlet,
    Asyncio,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Thread => "thread",
            Backend::Greenlet => "greenlet",
            Backend::Asyncio => "asyncio",
        }
    }
}

/// One channel operation waited on: the channel's name, and whether it is a write.
pub(crate) type WaitOn = (String, bool);

/// What a blocked operation waits on (looked at only when it blocks; copied into the
/// participant's record, reusing the record's buffers, so a steady state allocates nothing).
#[derive(Debug)]
pub(crate) enum Desc<'a> {
    /// One read (false) or write (true) on the channel named here.
    One(&'a str, bool),
    /// An Alt over these channel operations.
    Alt(Vec<(&'a str, bool)>),
}

impl<'a> Desc<'a> {
    /// A read from the channel named `chan`.
    pub(crate) fn read(chan: &'a str) -> Self {
        Desc::One(chan, false)
    }

    /// A write to the channel named `chan`.
    pub(crate) fn write(chan: &'a str) -> Self {
        Desc::One(chan, true)
    }

    /// An Alt over `waits`.
    pub(crate) fn alt(waits: Vec<(&'a str, bool)>) -> Self {
        Desc::Alt(waits)
    }

    /// Copies the description into `buf`, reusing its strings; returns whether it is an Alt.
    fn fill(&self, buf: &mut Vec<WaitOn>) -> bool {
        fn put(buf: &mut Vec<WaitOn>, n: usize, name: &str, write: bool) {
            if let Some(e) = buf.get_mut(n) {
                e.0.clear();
                e.0.push_str(name);
                e.1 = write;
            } else {
                buf.push((name.to_owned(), write));
            }
        }
        match self {
            Desc::One(name, write) => {
                put(buf, 0, name, *write);
                buf.truncate(1);
                false
            }
            Desc::Alt(ops) => {
                for (n, (name, write)) in ops.iter().enumerate() {
                    put(buf, n, name, *write);
                }
                buf.truncate(ops.len());
                true
            }
        }
    }
}

/// The record of one wait, kept in place (its buffers are reused by the next wait).
#[derive(Default)]
struct Blocked {
    /// Whether the owner is blocked now (the other fields describe the wait only then).
    on: bool,
    waits: Vec<WaitOn>,
    alt: bool,
    timeout: bool,
    /// The selection cell and its waker: cleared when the wait ends (they may hold the owner's
    /// task, which holds this record).
    signal: Option<Arc<Signal>>,
    waker: Option<Waker>,
    since: Stamp,
}

/// A coarse monotonic time (a few ms of resolution, a fraction of the cost of `Instant::now`):
/// enough to say how long a wait has lasted.
#[derive(Clone, Copy, Debug, Default)]
struct Stamp(Duration);

impl Stamp {
    fn now() -> Self {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC_COARSE exists on Linux
        // (on failure `ts` stays zero, which only makes a duration read as longer).
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
        Stamp(Duration::new(secs, nanos))
    }

    fn secs_since(self, now: Stamp) -> f64 {
        now.0.saturating_sub(self.0).as_secs_f64()
    }
}

#[derive(Default)]
struct Inner {
    name: Option<String>,
    blocked: Blocked,

    join_depth: u32,
    join_since: Option<Stamp>,
    io_depth: u32,
    /// A wait on channels shared with OS processes or networked (`_shared_wait`; the flag:
    /// networked), and since when: shown by `csp.dump()`, never counted as stuck (detection
    /// cannot see the other processes).
    shared: Option<(Vec<WaitOn>, Stamp, bool)>,
    /// Incremented on every change of the record (the watchdog's double collect compares it).
    gen: u64,
    /// Whether this participant counts as stuck in `NOT_STUCK` (kept in step by `update`).
    stuck: bool,
    /// Set by the watchdog: the report to raise as `Deadlock`.
    deadlock: Option<String>,
    removed: bool,
}

impl Inner {
    fn is_stuck(&self) -> bool {
        self.join_depth > 0 || (self.io_depth == 0 && self.blocked.on && !self.blocked.timeout)
    }
}

/// A wait recorded by its owner without a lock or a shared atomic, published into the
/// participant's record later: greenlet tasks record here, and their scheduler's hub publishes
/// the waits when it runs out of work (only then can they matter: while the hub runs a task,
/// that task is a running participant). Lives on one thread (see `sched::SchedCell`).
#[derive(Default)]
pub(crate) struct LocalWait {
    on: bool,
    published: bool,
    /// Whether the owner is in its scheduler's list of waits to publish.
    pub(crate) listed: bool,
    waits: Vec<WaitOn>,
    alt: bool,
    timeout: bool,
    signal: Option<Arc<Signal>>,
    since: Stamp,
}

impl LocalWait {
    /// Records that the owner blocks in `sel` (registered and pending).
    pub(crate) fn record(&mut self, desc: &Desc<'_>, sel: &Select<Value>) {
        self.alt = desc.fill(&mut self.waits);
        self.timeout = sel.wake_deadline().is_some();
        self.signal = sel.signal();
        self.since = Stamp::now();
        self.on = true;
    }

    /// Ends the wait, withdrawing it from `part` if it was published.
    pub(crate) fn clear(&mut self, part: &Participant) {
        self.on = false;
        self.signal = None;
        if std::mem::take(&mut self.published) {
            part.unblock();
        }
    }

    /// Publishes a wait still in progress into `part`.
    pub(crate) fn publish(&mut self, part: &Participant) {
        if !self.on || self.published {
            return;
        }
        self.published = true;
        part.update(|i| {
            let b = &mut i.blocked;
            b.waits.clone_from(&self.waits);
            b.alt = self.alt;
            b.timeout = self.timeout;
            b.signal = self.signal.clone();
            b.waker = None;
            b.since = self.since;
            b.on = true;
        });
    }
}

/// One participant: a process, or a thread that used a channel.
pub(crate) struct Participant {
    id: u64,
    backend: Backend,
    /// `threading.get_ident()` of the OS thread it runs on.
    thread: u64,
    /// Address (`id()`) of its asyncio task (asyncio participants only).
    task: Option<usize>,
    /// Its event loop (asyncio participants only).
    event_loop: Option<Py<PyAny>>,
    /// The name shown when no process name is set (the thread's name).
    fallback: String,
    inner: Mutex<Inner>,
    /// How to wake it when its waits always use the same waker (thread, greenlet task), so a
    /// wait need not store one.
    fixed_waker: OnceLock<Waker>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant").field("id", &self.id).field("backend", &self.backend).finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static REGISTRY: Mutex<Option<HashMap<u64, Arc<Participant>>>> = Mutex::new(None);
/// Participants that are not stuck. Zero (with participants registered) kicks the watchdog.
static NOT_STUCK: AtomicIsize = AtomicIsize::new(0);
/// Threads that never count against a deadlock (idle `io()` workers).
static IGNORED: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
static WATCH: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
/// Whether the watchdog waits for a kick (cleared by the kick that wakes it).
static ARMED: AtomicBool = AtomicBool::new(false);
static WATCHDOG: OnceLock<()> = OnceLock::new();
static ENABLED: OnceLock<bool> = OnceLock::new();

static DEADLOCK: PyOnceLock<Py<pyo3::types::PyType>> = PyOnceLock::new();
static ASYNC_ME_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CURRENT_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether detection is on (`FERROCSP_DEADLOCK=off` turns it off; read once).
fn enabled() -> bool {
    *ENABLED.get_or_init(|| {
        !matches!(
            std::env::var("FERROCSP_DEADLOCK").map(|v| v.trim().to_ascii_lowercase()),
            Ok(v) if v == "off" || v == "0" || v == "false" || v == "no"
        )
    })
}

/// Wakes the watchdog if it waits (at most once per wait: kicks are on the blocking path).
fn kick() {
    if ARMED.load(Ordering::Relaxed) && ARMED.swap(false, Ordering::SeqCst) {
        let (m, cv) = &WATCH;
        *lock(m) = true;
        cv.notify_one();
    }
}

impl Participant {
    /// Registers a new participant (not stuck).
    fn register(
        backend: Backend,
        thread: u64,
        task: Option<usize>,
        event_loop: Option<Py<PyAny>>,
        fallback: String,
        name: Option<String>,
    ) -> Arc<Participant> {
        let p = Arc::new(Participant {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            backend,
            thread,
            task,
            event_loop,
            fallback,
            inner: Mutex::new(Inner { name, ..Inner::default() }),
            fixed_waker: OnceLock::new(),
        });
        NOT_STUCK.fetch_add(1, Ordering::AcqRel);
        lock(&REGISTRY).get_or_insert_with(HashMap::new).insert(p.id, Arc::clone(&p));
        if enabled() {
            WATCHDOG.get_or_init(|| {
                // A failed spawn only means no detection.
                drop(std::thread::Builder::new().name("ferrocsp-deadlock".into()).spawn(watchdog));
            });
        }
        p
    }

    /// Removes the participant (its thread, task or process ended).
    pub(crate) fn remove(&self) {
        let was_stuck = {
            let mut i = lock(&self.inner);
            if i.removed {
                return;
            }
            i.removed = true;
            i.blocked.on = false;
            i.blocked.signal = None;
            i.blocked.waker = None;
            std::mem::replace(&mut i.stuck, true)
        };
        let left = {
            let mut reg = lock(&REGISTRY);
            if let Some(r) = reg.as_mut() {
                r.remove(&self.id);
            }
            reg.as_ref().map_or(0, HashMap::len)
        };
        if !was_stuck && NOT_STUCK.fetch_sub(1, Ordering::AcqRel) == 1 && left > 0 {
            kick();
        }
    }

    /// Applies `f` to the record, then keeps `NOT_STUCK` in step; returns what `f` returned.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let (r, delta) = {
            let mut i = lock(&self.inner);
            let r = f(&mut i);
            i.gen += 1;
            if i.removed {
                return r;
            }
            let now = i.is_stuck();
            let delta = match (i.stuck, now) {
                (false, true) => -1,
                (true, false) => 1,
                _ => 0,
            };
            i.stuck = now;
            (r, delta)
        };
        if delta > 0 {
            NOT_STUCK.fetch_add(1, Ordering::AcqRel);
        } else if delta < 0 && NOT_STUCK.fetch_sub(1, Ordering::AcqRel) == 1 {
            kick();
        }
        r
    }

    pub(crate) fn set_name(&self, name: Option<String>) {
        lock(&self.inner).name = name;
    }

    /// Sets the waker of every wait of this participant (see `fixed_waker`).
    pub(crate) fn set_waker(&self, waker: Waker) {
        drop(self.fixed_waker.set(waker));
    }

    /// Records that the owner blocks in `sel` (registered and pending), woken by `waker`
    /// (None: its fixed waker).
    pub(crate) fn block(&self, desc: Desc<'_>, sel: &Select<Value>, waker: Option<Waker>) {
        let (timeout, signal, since) = (sel.wake_deadline().is_some(), sel.signal(), Stamp::now());
        self.update(|i| {
            let b = &mut i.blocked;
            b.alt = desc.fill(&mut b.waits);
            b.timeout = timeout;
            b.signal = signal;
            b.waker = waker;
            b.since = since;
            b.on = true;
        });
    }

    /// Records that the owner's wait ended.
    pub(crate) fn unblock(&self) {
        let held = self.update(|i| {
            i.blocked.on = false;
            i.deadlock = None;
            (i.blocked.signal.take(), i.blocked.waker.take())
        });
        // Dropped outside the lock (the waker may hold the owner's task).
        drop(held);
    }

    /// After `sel.resume()` gave `r`: if the watchdog aborted this wait (the only way a
    /// registered selection resumes to `WouldBlock`: its cell is `Aborted` while still
    /// registered), withdraws the selection and returns the `Deadlock` to raise. The watchdog
    /// stores the report before it aborts the cell, so the report is there.
    pub(crate) fn deadlocked(
        &self,
        py: Python<'_>,
        sel: &mut Select<Value>,
        r: &Poll<Value>,
    ) -> Option<PyErr> {
        if !(matches!(r, Poll::Ready(Err(SelectError::WouldBlock))) && sel.is_pending()) {
            return None;
        }
        drop(sel.abort()); // removes its entries; nothing can have fired
        let msg = lock(&self.inner).deadlock.take();
        Some(deadlock_error(py, msg.unwrap_or_else(|| "Deadlock".to_owned())))
    }

    /// Records (Some) or clears (None) what the participant waits on among channels shared
    /// with OS processes, or (`networked`) networked ones (channel name, write?): shown by
    /// `_participants`, never "stuck".
    pub(crate) fn set_shared(&self, waits: Option<Vec<WaitOn>>, networked: bool) {
        self.update(|i| i.shared = waits.map(|w| (w, Stamp::now(), networked)));
    }

    pub(crate) fn joining(&self, on: bool) {
        self.update(|i| {
            if on {
                i.join_depth += 1;
                if i.join_depth == 1 {
                    i.join_since = Some(Stamp::now());
                }
            } else {
                i.join_depth = i.join_depth.saturating_sub(1);
                if i.join_depth == 0 {
                    i.join_since = None;
                }
            }
        });
    }

    pub(crate) fn io(&self, on: bool) {
        self.update(|i| {
            if on {
                i.io_depth += 1;
            } else {
                i.io_depth = i.io_depth.saturating_sub(1);
            }
        });
    }
}

/// Builds the `Deadlock` exception carrying `msg`.
pub(crate) fn deadlock_error(py: Python<'_>, msg: String) -> PyErr {
    match DEADLOCK.import(py, "ferrocsp._errors", "Deadlock") {
        Ok(t) => PyErr::from_type(t.clone(), msg),
        Err(e) => e,
    }
}

// ----- who is the caller -----

/// The calling thread's participant record; dropped (removed) when the thread ends.
struct ThreadSlot(Arc<Participant>);

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        self.0.remove();
    }
}

thread_local! {
    static THREAD: RefCell<Option<ThreadSlot>> = const { RefCell::new(None) };
    static IDENT: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// `threading.get_ident()` of the calling thread (cached).
pub(crate) fn thread_ident(py: Python<'_>) -> PyResult<u64> {
    if let Some(i) = IDENT.with(std::cell::Cell::get) {
        return Ok(i);
    }
    let i: u64 = py.import("threading")?.call_method0("get_ident")?.extract()?;
    IDENT.with(|c| c.set(Some(i)));
    Ok(i)
}

/// The participant of the calling OS thread, registered on first use.
pub(crate) fn thread_participant(py: Python<'_>) -> PyResult<Arc<Participant>> {
    if let Some(p) = THREAD.with(|t| t.borrow().as_ref().map(|s| Arc::clone(&s.0))) {
        return Ok(p);
    }
    let ident = thread_ident(py)?;
    let threading = py.import("threading")?;
    let fallback: String = threading.call_method0("current_thread")?.getattr("name")?.extract()?;
    let name = crate::thread_name::get();
    let p = Participant::register(Backend::Thread, ident, None, None, fallback, name);
    p.set_waker(Waker::current_thread());
    THREAD.with(|t| *t.borrow_mut() = Some(ThreadSlot(Arc::clone(&p))));
    Ok(p)
}

/// Removes the calling thread's participant, if any (its process ended).
pub(crate) fn leave_thread() {
    // Dropping the slot removes the record (outside the RefCell borrow).
    let slot = THREAD.with(|t| t.borrow_mut().take());
    drop(slot);
}

/// Registers a greenlet task of the scheduler running on thread `ident`.
pub(crate) fn greenlet_participant(ident: u64) -> Arc<Participant> {
    Participant::register(Backend::Greenlet, ident, None, None, "greenlet".into(), None)
}

fn current_task_id(py: Python<'_>) -> Option<usize> {
    let task = CURRENT_TASK.import(py, "asyncio", "current_task").ok()?.call0().ok()?;
    if task.is_none() {
        return None;
    }
    Some(task.as_ptr() as usize)
}

/// The asyncio participant of the running task (an `async def` process), if any.
///
/// Found through the `ferrocsp._process._async_me` context variable, not by the current task:
/// `asyncio.current_task()` costs a `getpid` system call. A task that a process created
/// inherits the variable and records its waits on its process's record; that never makes a
/// false report, since such a task is no participant, so the check finds its loop not covered.
pub(crate) fn async_participant(py: Python<'_>) -> Option<Arc<Participant>> {
    let get = ASYNC_ME_GET
        .get_or_try_init(py, || {
            let var = py.import("ferrocsp._process")?.getattr("_async_me")?;
            var.getattr("get").map(Bound::unbind)
        })
        .ok()?;
    let value = get.call0(py).ok()?.into_bound(py);
    Some(Arc::clone(&value.cast::<ParticipantRef>().ok()?.get().0))
}

/// A participant as a Python object (what `_participant_enter` returns).
#[pyclass(frozen, module = "ferrocsp._native", name = "_Participant")]
#[derive(Debug)]
pub(crate) struct ParticipantRef(Arc<Participant>);

// ----- Python API -----

/// Registers the running asyncio task as a participant (an `async def` process, or with
/// `joining` a task that waits for its own processes); returns its id for `_participant_exit`.
#[pyfunction]
#[pyo3(signature = (name, joining = false))]
pub(crate) fn _participant_enter(
    py: Python<'_>,
    name: String,
    joining: bool,
) -> PyResult<ParticipantRef> {
    let event_loop = GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?.call0()?;
    let task = current_task_id(py);
    let ident = thread_ident(py)?;
    let p = Participant::register(
        Backend::Asyncio,
        ident,
        task,
        Some(event_loop.unbind()),
        name.clone(),
        Some(name),
    );
    if joining {
        p.joining(true);
    }
    Ok(ParticipantRef(p))
}

/// Removes the participant registered by `_participant_enter`.
#[pyfunction]
pub(crate) fn _participant_exit(p: &Bound<'_, ParticipantRef>) {
    p.get().0.remove();
}

/// Marks the calling thread as an idle-when-blocked helper (an `io()` worker) that never keeps
/// a deadlock from being reported.
#[pyfunction]
pub(crate) fn _ignore_thread(py: Python<'_>) -> PyResult<()> {
    let ident = thread_ident(py)?;
    lock(&IGNORED).get_or_insert_with(HashSet::new).insert(ident);
    Ok(())
}

/// Called at interpreter exit (`atexit`): waits, with the GIL released, until the watchdog is
/// outside Python, and keeps it from running Python code again (see the module doc).
#[pyfunction]
pub(crate) fn _stop_watchdog(py: Python<'_>) {
    py.detach(|| *lock(&IN_PYTHON) = false);
}

/// One dict per live participant: name, backend, state ("running", "blocked", "joining",
/// "blocked (shared)": waiting on channels shared with OS processes, or "blocked
/// (networked)", see `_shared_wait`),
/// waits (list of (channel name, "read" | "write")), alt, timeout, since (seconds blocked).
#[pyfunction]
pub(crate) fn _participants(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let mut parts: Vec<Arc<Participant>> =
        lock(&REGISTRY).as_ref().map(|r| r.values().cloned().collect()).unwrap_or_default();
    parts.sort_by_key(|p| p.id);
    let out = PyList::empty(py);
    let stamp = Stamp::now();
    for p in parts {
        let d = PyDict::new(py);
        let (name, state, waits, alt, timeout, since) = {
            let i = lock(&p.inner);
            if i.removed {
                continue;
            }
            let name = i.name.clone().unwrap_or_else(|| p.fallback.clone());
            if i.join_depth > 0 {
                let since = i.join_since.map_or(0.0, |s| s.secs_since(stamp));
                (name, "joining", Vec::new(), false, false, since)
            } else if let (true, 0) = (i.blocked.on, i.io_depth) {
                let b = &i.blocked;
                let since = b.since.secs_since(stamp);
                (name, "blocked", b.waits.clone(), b.alt, b.timeout, since)
            } else if let Some((waits, since, networked)) = &i.shared {
                let alt = waits.len() > 1;
                let state = if *networked { "blocked (networked)" } else { "blocked (shared)" };
                (name, state, waits.clone(), alt, false, since.secs_since(stamp))
            } else {
                (name, "running", Vec::new(), false, false, 0.0)
            }
        };
        d.set_item("name", name)?;
        d.set_item("backend", p.backend.as_str())?;
        d.set_item("state", state)?;
        let w = PyList::empty(py);
        for (chan, write) in waits {
            w.append(PyTuple::new(py, [chan, (if write { "write" } else { "read" }).into()])?)?;
        }
        d.set_item("waits", w)?;
        d.set_item("alt", alt)?;
        d.set_item("timeout", timeout)?;
        d.set_item("since", since)?;
        out.append(d)?;
    }
    Ok(out)
}

// ----- the watchdog -----

/// How long the watchdog lets a network that just looked stuck move on before it looks closer:
/// in a busy network every participant is often "stuck" for an instant (the one that was just
/// woken has not run yet); a real deadlock stays.
const GRACE: Duration = Duration::from_millis(20);

/// Held by a background thread of ours (the watchdog, a shared-memory watcher waking an
/// asyncio task) for as long as it runs Python code; `false` once `_stop_watchdog` ran, after
/// which none of them attaches again.
static IN_PYTHON: Mutex<bool> = Mutex::new(true);

/// Runs `f` with the GIL from a background thread of ours, unless the interpreter is exiting
/// (then None): taking the GIL once it is finalizing ends the thread by `pthread_exit`, whose
/// forced unwind aborts the process when it meets Rust frames (see the module doc).
pub(crate) fn attach_unless_exiting<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    let allowed = lock(&IN_PYTHON);
    if !*allowed {
        return None;
    }
    let r = Python::try_attach(f);
    drop(allowed);
    r
}

fn watchdog() {
    // While every participant looks stuck but the check finds no deadlock (a foreign thread is
    // alive, a woken participant has not run yet), look again after `backoff` (growing).
    let mut backoff: Option<Duration> = None;
    let next = |b: Option<Duration>| {
        Some(b.map_or(Duration::from_millis(10), |d| d * 2).min(Duration::from_millis(500)))
    };
    loop {
        {
            let (m, cv) = &WATCH;
            let mut kicked = lock(m);
            ARMED.store(true, Ordering::SeqCst);
            while !*kicked {
                // A kick may have been missed while we were not armed: look at the counter.
                if backoff.is_none() && NOT_STUCK.load(Ordering::SeqCst) == 0 && !registry_empty() {
                    break;
                }
                match backoff {
                    None => kicked = cv.wait(kicked).unwrap_or_else(|e| e.into_inner()),
                    Some(d) => {
                        let (g, t) = cv.wait_timeout(kicked, d).unwrap_or_else(|e| e.into_inner());
                        kicked = g;
                        if t.timed_out() {
                            break;
                        }
                    }
                }
            }
            *kicked = false;
            ARMED.store(false, Ordering::SeqCst);
        }
        std::thread::sleep(GRACE);
        if NOT_STUCK.load(Ordering::Acquire) != 0 {
            backoff = None;
            continue;
        }
        // Cheap look first (no GIL): most of the time a participant was just woken.
        if snapshot().is_none() {
            backoff = next(backoff);
            continue;
        }
        let allowed = lock(&IN_PYTHON);
        if !*allowed {
            return; // the interpreter is exiting
        }
        match Python::try_attach(check) {
            None => return, // the interpreter is gone
            Some(Verdict::Declared) => backoff = None,
            Some(Verdict::NotNow) => backoff = next(backoff),
        }
        drop(allowed);
    }
}

fn registry_empty() -> bool {
    lock(&REGISTRY).as_ref().is_none_or(HashMap::is_empty)
}

enum Verdict {
    /// A deadlock was reported.
    Declared,
    /// Not a deadlock now (or not provably one): look again later.
    NotNow,
}

/// Every registered participant, with its record generation, if all are stuck (at least one
/// blocked in a channel operation) and every blocked cell still waits.
fn snapshot() -> Option<Vec<(Arc<Participant>, u64)>> {
    let reg = lock(&REGISTRY);
    let mut out = Vec::new();
    let mut blocked = false;
    for p in reg.as_ref()?.values() {
        let i = lock(&p.inner);
        if i.removed || !i.is_stuck() {
            return None;
        }
        if i.join_depth == 0 {
            let b = i.blocked.on.then_some(&i.blocked)?;
            if !b.signal.as_ref().is_some_and(|s| s.is_waiting()) {
                return None;
            }
            blocked = true;
        }
        out.push((Arc::clone(p), i.gen));
    }
    if !blocked {
        return None;
    }
    out.sort_by_key(|(p, _)| p.id);
    Some(out)
}

/// Whether every Python thread and asyncio task that could still run is a participant.
fn covered(py: Python<'_>, parts: &[(Arc<Participant>, u64)]) -> PyResult<bool> {
    let threads: HashSet<u64> = parts.iter().map(|(p, _)| p.thread).collect();
    let ignored = lock(&IGNORED).clone().unwrap_or_default();
    for t in py.import("threading")?.call_method0("enumerate")?.try_iter()? {
        let ident: Option<u64> = t?.getattr("ident")?.extract()?;
        if let Some(i) = ident {
            if !threads.contains(&i) && !ignored.contains(&i) {
                return Ok(false);
            }
        }
    }
    let tasks: HashSet<usize> = parts.iter().filter_map(|(p, _)| p.task).collect();
    let mut loops: Vec<&Py<PyAny>> = Vec::new();
    for (p, _) in parts {
        if let Some(l) = &p.event_loop {
            if !loops.iter().any(|x| x.is(l)) {
                loops.push(l);
            }
        }
    }
    let all_tasks = py.import("asyncio")?.getattr("all_tasks")?;
    for l in loops {
        for t in all_tasks.call1((l.bind(py),))?.try_iter()? {
            if !tasks.contains(&(t?.as_ptr() as usize)) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn describe(p: &Participant, i: &Inner, stamp: Stamp, out: &mut String) {
    let name = i.name.as_deref().unwrap_or(&p.fallback);
    let since = if i.join_depth > 0 {
        let _ = write!(out, "'{name}'");
        i.join_since.map(|s| s.secs_since(stamp))
    } else if i.blocked.on {
        let b = &i.blocked;
        let ops: Vec<String> = b
            .waits
            .iter()
            .map(|(c, w)| format!("{} '{c}'", if *w { "writes" } else { "reads" }))
            .collect();
        if b.alt {
            let _ = write!(out, "'{name}' alts on {}", ops.join(", "));
        } else {
            let _ = write!(out, "'{name}' {}", ops.join(", "));
        }
        Some(b.since.secs_since(stamp))
    } else {
        None
    };
    if let Some(s) = since {
        let _ = write!(out, " (for {s:.1} s)");
    }
}

fn check(py: Python<'_>) -> Verdict {
    let Some(first) = snapshot() else { return Verdict::NotNow };
    match covered(py, &first) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Verdict::NotNow,
    }
    let Some(second) = snapshot() else { return Verdict::NotNow };
    let same = first.len() == second.len()
        && first.iter().zip(&second).all(|((a, ga), (b, gb))| a.id == b.id && ga == gb);
    if !same {
        return Verdict::NotNow;
    }
    // Every participant is stuck and nothing else can run: a deadlock.
    let stamp = Stamp::now();
    let mut wakers = Vec::new();
    let mut msg = String::new();
    {
        let reg = lock(&REGISTRY);
        // The blocked ones first (they are the report's count), then those joining them.
        let (mut blocked, mut joining) = (Vec::new(), Vec::new());
        for (p, _) in &second {
            let mut d = String::new();
            let i = lock(&p.inner);
            describe(p, &i, stamp, &mut d);
            if i.join_depth > 0 {
                joining.push(d);
            } else {
                blocked.push(d);
            }
        }
        let n = blocked.len();
        let _ = write!(
            msg,
            "Deadlock: {n} {} forever: {}",
            if n == 1 { "process waits" } else { "processes wait" },
            blocked.join(", ")
        );
        if !joining.is_empty() {
            let _ = write!(msg, "; waiting for them: {}", joining.join(", "));
        }
        for (p, _) in &second {
            // Mark first, then abort the cell: an owner that wakes in between finds the mark
            // and withdraws itself (its own abort then wins, ours loses harmlessly). Aborting
            // here, not in the owner, means no later poison from a failing peer can turn the
            // report into a clean `ChannelPoisoned` end.
            let target = {
                let mut i = lock(&p.inner);
                if i.blocked.on && i.join_depth == 0 {
                    let waker = i.blocked.waker.clone().or_else(|| p.fixed_waker.get().cloned());
                    let t = (i.blocked.signal.clone(), waker);
                    i.deadlock = Some(msg.clone());
                    Some(t)
                } else {
                    None
                }
            };
            let Some((Some(signal), Some(waker))) = target else { continue };
            if signal.try_abort() {
                wakers.push(waker);
            } else {
                // Completed in a race (by no participant): no deadlock for this one.
                lock(&p.inner).deadlock = None;
            }
        }
        drop(reg);
    }
    for w in wakers {
        match w {
            Waker::Thread(t) => t.unpark(),
            Waker::Custom(w) => w.wake(),
        }
    }
    Verdict::Declared
}
