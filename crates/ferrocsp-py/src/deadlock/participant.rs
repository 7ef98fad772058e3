//! One participant and the registry of them: registering, recording waits (`update` keeps
//! the count of participants that are not stuck in step), and withdrawing a wait the
//! watchdog aborted.
//!
//! Invariants:
//! - `NOT_STUCK` is the number of registered participants whose record is not stuck; only
//!   `update`, `register` and `remove` change it. When it drops to zero the watchdog is
//!   kicked; when it rises, this process's publication in the participant table (if any) is
//!   withdrawn at once: the hook `cross.rs` sets when the process attaches to a table
//!   ([`on_running`]; a function pointer, so this module names none of the modules above it,
//!   which all build on it). The watchdog thread is started by whoever registers (`caller.rs`).
//! - Lock order: `REGISTRY` -> one participant's `inner`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use ferrocsp::{Poll, Select, SelectError, Waker};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::fork::{generation, PerProcess};
use super::lock;
use super::record::{Backend, Desc, Inner, LocalWait, Stamp, WaitOn};
use crate::pythread::Value;

/// One participant: a process, or a thread that used a channel.
pub(crate) struct Participant {
    pub(super) id: u64,
    pub(super) backend: Backend,
    /// `threading.get_ident()` of the OS thread it runs on.
    pub(super) thread: u64,
    /// Address (`id()`) of its asyncio task (asyncio participants only).
    pub(super) task: Option<usize>,
    /// Its event loop (asyncio participants only).
    pub(super) event_loop: Option<Py<PyAny>>,
    /// The name shown when no process name is set (the thread's name).
    pub(super) fallback: String,
    pub(super) inner: Mutex<Inner>,
    /// The fork generation it was registered in: a participant of the parent, in a child made
    /// by `fork`, is never touched (its lock may be held) nor counted (`fork.rs`).
    fork_gen: u32,
    /// How to wake it when its waits always use the same waker (thread, greenlet task), so a
    /// wait need not store one.
    pub(super) fixed_waker: OnceLock<Waker>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant").field("id", &self.id).field("backend", &self.backend).finish()
    }
}

pub(super) static NEXT_ID: AtomicU64 = AtomicU64::new(1);
// Per process (`fork.rs`): a child made by `fork` starts with none of its parent's
// participants, counts or locks.
/// Every participant of this process, by id (None until the first registers).
pub(super) type Registry = Mutex<Option<HashMap<u64, Arc<Participant>>>>;
pub(super) static REGISTRY: PerProcess<Registry> = PerProcess::new(|| Mutex::new(None));
/// Participants that are not stuck. Zero (with participants registered) kicks the watchdog.
pub(super) static NOT_STUCK: PerProcess<AtomicIsize> = PerProcess::new(|| AtomicIsize::new(0));
/// Threads that never count against a deadlock (idle `io()` workers).
pub(super) static IGNORED: PerProcess<Mutex<Option<HashSet<u64>>>> =
    PerProcess::new(|| Mutex::new(None));
pub(super) static WATCH: PerProcess<(Mutex<bool>, Condvar)> =
    PerProcess::new(|| (Mutex::new(false), Condvar::new()));
/// Whether the watchdog waits for a kick (cleared by the kick that wakes it).
pub(super) static ARMED: PerProcess<AtomicBool> = PerProcess::new(|| AtomicBool::new(false));
static ENABLED: OnceLock<bool> = OnceLock::new();

static DEADLOCK: PyOnceLock<Py<pyo3::types::PyType>> = PyOnceLock::new();
pub(super) static ASYNC_ME_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
pub(super) static CURRENT_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
pub(super) static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

thread_local! {
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

/// Whether detection is on (`FERROCSP_DEADLOCK=off` turns it off; read once).
pub(super) fn enabled() -> bool {
    *ENABLED.get_or_init(|| {
        !matches!(
            std::env::var("FERROCSP_DEADLOCK").map(|v| v.trim().to_ascii_lowercase()),
            Ok(v) if v == "off" || v == "0" || v == "false" || v == "no"
        )
    })
}

/// What a rise of `NOT_STUCK` does beyond the count (see the module invariants), and whether
/// it is set: `ON_RUNNING` is set before `HOOKED`, both before this process can publish, and a
/// rise reads `HOOKED` SeqCst after raising the counter (SeqCst), so a publication that missed
/// the rise is seen by the rise.
static ON_RUNNING: OnceLock<fn()> = OnceLock::new();
static HOOKED: AtomicBool = AtomicBool::new(false);

/// Sets what a rise of the not-stuck counter calls (`cross.rs`: withdraw the publication).
pub(super) fn on_running(f: fn()) {
    let _ = ON_RUNNING.set(f); // one function, set at every attach: the first one stands
    HOOKED.store(true, Ordering::SeqCst);
}

/// A participant runs again (called after raising `NOT_STUCK`).
fn running() {
    if HOOKED.load(Ordering::SeqCst) {
        if let Some(f) = ON_RUNNING.get() {
            f();
        }
    }
}

/// Wakes the watchdog if it waits (at most once per wait: kicks are on the blocking path).
pub(super) fn kick() {
    if ARMED.load(Ordering::Relaxed) && ARMED.swap(false, Ordering::SeqCst) {
        let (m, cv) = &*WATCH;
        *lock(m) = true;
        cv.notify_one();
    }
}

impl Participant {
    /// Registers a new participant (not stuck).
    pub(super) fn register(
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
            fork_gen: generation(),
        });
        NOT_STUCK.fetch_add(1, Ordering::SeqCst);
        running();
        lock(&REGISTRY).get_or_insert_with(HashMap::new).insert(p.id, Arc::clone(&p));
        p
    }

    /// Whether it belongs to this process (not to the parent of a child made by `fork`).
    pub(super) fn here(&self) -> bool {
        self.fork_gen == generation()
    }

    /// Removes the participant (its thread, task or process ended).
    pub(crate) fn remove(&self) {
        if !self.here() {
            return;
        }
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
    pub(super) fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        if !self.here() {
            // The parent's, in a child made by `fork`: its record is not ours to lock.
            return f(&mut Inner::default());
        }
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
            // SeqCst, then the publication flag: pairs with `cross::publish`, which sets the
            // flag, then looks at the counter (one of the two sees the other).
            NOT_STUCK.fetch_add(1, Ordering::SeqCst);
            running();
        } else if delta < 0 && NOT_STUCK.fetch_sub(1, Ordering::AcqRel) == 1 {
            kick();
        }
        r
    }

    pub(crate) fn set_name(&self, name: Option<String>) {
        if self.here() {
            lock(&self.inner).name = name;
        }
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
        Some(self.deadlock_error(py, sel))
    }

    /// The deadlock error of `deadlocked`; out of line, so that the check inlined into the
    /// greenlet's wait loop adds nothing to its frame.
    #[cold]
    #[inline(never)]
    fn deadlock_error(&self, py: Python<'_>, sel: &mut Select<Value>) -> PyErr {
        drop(sel.abort()); // removes its entries; nothing can have fired
        let msg = lock(&self.inner).deadlock.take();
        deadlock_error(py, msg.unwrap_or_else(|| "Deadlock".to_owned()))
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

/// A greenlet task's lock-free wait record (`record.rs`) meets its participant here.
impl LocalWait {
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

/// Builds the `Deadlock` exception carrying `msg`.
pub(crate) fn deadlock_error(py: Python<'_>, msg: String) -> PyErr {
    match DEADLOCK.import(py, "ferrocsp._errors", "Deadlock") {
        Ok(t) => PyErr::from_type(t.clone(), msg),
        Err(e) => e,
    }
}
