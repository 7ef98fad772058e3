//! Deadlock detection across the OS processes of a network (`backend="os"`), on the
//! participant table in shared memory (`ferrocsp::shm::Table`).
//!
//! The top parent creates the table when it first starts OS processes (`_xtable_create`), and
//! reserves each child's slot by pid before the child can run; a child attaches at its start
//! (`_xtable_attach`). In such a process:
//!
//! - A wait on shared channels with no deadline is stuck only once *confirmed* (`xwait.rs`):
//!   a quiet period ended with none of the operation's futex words moved, so it was still
//!   waiting after the epoch read before that period (`XWait::at`). A thread's period is its
//!   own sleep slice; a greenlet's or an asyncio task's, a look of the futex watcher that
//!   would wake it. Networked waits are never stuck: no false report, no report either.
//! - When the watchdog proves locally that every participant is stuck, it does not declare:
//!   it *publishes* this process's slot (what each participant waits on, and the oldest epoch
//!   at which its shared waits were confirmed), then polls the table every [`POLL`].
//! - Any published process may prove a deadlock (`Table::check`): every slot published, every
//!   shared wait confirmed at the current epoch, the epoch unchanged over the whole read. A
//!   participant that completed a shared operation must have been running after the waits were
//!   confirmed, and its process must have published after that, moving the epoch: so no wait
//!   counted was completed, and none can be (every participant everywhere waits forever). It
//!   then announces the verdict with one report naming every process (with its pid).
//! - A verdict covers a process whose latest publication was in place at the proven epoch
//!   ([`Pub`]); the participants that publication counted, records unchanged, are aborted with
//!   the report: in-process operations as the local watchdog does, shared ones by setting
//!   `xabort`, which their next quiet period turns into `Deadlock` (the per-process wake-up is
//!   that period, at most `xwait::XSLICE`; a period also looks for a covering verdict itself).
//!
//! Invariants:
//! - This process's slot is published only while `NOT_STUCK` is zero: every rise of the
//!   counter calls [`running`], which withdraws it (the counter is raised, then the flag read,
//!   both SeqCst; `publish` sets the flag, then its caller re-reads the counter).
//! - A slot's text changes only while it is not published (the table refuses otherwise).
//! - Lock order: `XLOCK` -> `LAST` -> `REGISTRY` -> one participant's `inner` (`STATE` is
//!   lock-free); nothing here waits for the GIL while holding any of them, and
//!   `Participant::update` calls [`running`] only after it released the record.
//! - The OS-process host's collecting thread counts as a running thread except while it waits
//!   for its children (`_xidle`), and it frees a child's slot only after it stored the child's
//!   outcome: a child's end is never missed by a proof.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrocsp::shm::Table;
use ferrocsp::Waker;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::fork::PerProcess;
use super::lock;
use super::participant::{thread_ident, Participant, IGNORED, REGISTRY};
use super::record::Stamp;
use super::slot_text::{line, parse, report, Line};

/// How often a published process looks at the table (proof, verdict, confirmations).
pub(super) const POLL: Duration = Duration::from_millis(50);

pub(super) struct Attached {
    pub(super) table: Table,
    /// The process that attached (a forked child inherits the mapping, not the slot).
    pid: u32,
    pub(super) slot: Option<usize>,
}

/// This process's table (lock-free; an `Attached` names its pid, so a child made by `fork`
/// does not take its parent's for its own). An installed `Attached` is never freed (one per
/// process that attaches).
static STATE: AtomicPtr<Attached> = AtomicPtr::new(std::ptr::null_mut());
/// The pid of this process while it is published (0: not published). A pid, not a flag: a
/// child made by `fork` inherits the value of a published parent, and must not take it for its
/// own (withdrawing would lock `XLOCK`, which a parent thread may have held at the fork).
static PUBLISHER: AtomicU32 = AtomicU32::new(0);
static XLOCK: PerProcess<Mutex<()>> = PerProcess::new(|| Mutex::new(()));
/// The last verdict generation handled here.
static SEEN: AtomicU32 = AtomicU32::new(0);
/// This process's latest publication (see [`Pub`]).
static LAST: PerProcess<Mutex<Option<Pub>>> = PerProcess::new(|| Mutex::new(None));
/// Bumped when the host's collecting thread starts running (`_xidle(False)`): the watchdog's
/// double collect compares it, as it compares the records.
static BUSY_GEN: AtomicU64 = AtomicU64::new(0);
/// Whether this process ever attached to a table (the one check a shared operation makes
/// before it sleeps).
pub(super) static ANY: AtomicBool = AtomicBool::new(false);

/// A publication of this process: the epoch it was made at, the epoch its withdrawal made
/// (None while in place), and the participants it counted with their record generations. A
/// verdict proven at an epoch in `[made, withdrawn)` covers it, even if this process has
/// withdrawn since (its host's collecting thread woke to reap a peer that already raised, say):
/// each counted participant whose record has not changed since still waits in the proven
/// deadlock, and is aborted with it.
struct Pub {
    made: u64,
    withdrawn: Option<u64>,
    parts: Vec<(Arc<Participant>, u64)>,
}

pub(super) fn current() -> Option<&'static Attached> {
    let p = STATE.load(Ordering::Acquire);
    // SAFETY: a non-null pointer here came from `Box::into_raw` in `install` and is never
    // freed, so it stays valid for the life of the process.
    let a = unsafe { p.as_ref() }?;
    (a.pid == std::process::id()).then_some(a)
}

/// Makes `a` this process's table (the first one wins; returns the one in place). A table
/// inherited through `fork` (another pid) is replaced, and left mapped.
fn install(a: Attached) -> &'static Attached {
    // Before the table is visible, so before this process can publish (`participant.rs`).
    super::participant::on_running(running);
    let me = a.pid;
    let new = Box::into_raw(Box::new(a));
    let mut seen = STATE.load(Ordering::Acquire);
    loop {
        // SAFETY: a non-null pointer came from `Box::into_raw` here and is never freed.
        if let Some(cur) = unsafe { seen.as_ref() }.filter(|c| c.pid == me) {
            // SAFETY: `new` was never shared.
            drop(unsafe { Box::from_raw(new) });
            return cur;
        }
        match STATE.compare_exchange(seen, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                ANY.store(true, Ordering::SeqCst);
                // SAFETY: just installed from `Box::into_raw`, never freed.
                return unsafe { &*new };
            }
            Err(cur) => seen = cur,
        }
    }
}

/// Whether this process belongs to an OS-process network with a participant table.
pub(super) fn attached() -> bool {
    current().is_some_and(|a| a.slot.is_some())
}

pub(super) fn busy_gen() -> u64 {
    BUSY_GEN.load(Ordering::SeqCst)
}

/// Whether this process is published (lock-free; the pid check is made only when some
/// process's publication is recorded here, so the common case is one atomic load).
pub(super) fn published() -> bool {
    let p = PUBLISHER.load(Ordering::SeqCst);
    p != 0 && p == std::process::id()
}

/// A participant of this process runs again: withdraw the publication, if any.
pub(super) fn running() {
    if published() {
        withdraw();
    }
}

/// Withdraws this process's publication.
pub(super) fn withdraw() {
    if !published() {
        return; // never lock in a forked child (see `PUBLISHER`)
    }
    let _g = lock(&XLOCK);
    let me = std::process::id();
    if PUBLISHER.compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
        if let Some((a, s)) = current().and_then(|a| a.slot.map(|s| (a, s))) {
            if let (Some(e), Some(p)) = (a.table.withdraw(s), lock(&LAST).as_mut()) {
                p.withdrawn.get_or_insert(e);
            }
        }
    }
}

/// This process's participants as a slot's text; whether one is blocked in a channel
/// operation; the oldest confirmation epoch of its shared waits (None: one is unconfirmed).
fn local_text() -> (String, bool, Option<u64>) {
    let pid = std::process::id();
    let mut parts: Vec<Arc<Participant>> =
        lock(&REGISTRY).as_ref().map(|r| r.values().cloned().collect()).unwrap_or_default();
    parts.sort_by_key(|p| p.id);
    let (mut text, mut blocked, mut conf) = (String::new(), false, Some(u64::MAX));
    for p in parts {
        let i = lock(&p.inner);
        line(&p, &i, pid, &mut text);
        if i.join_depth == 0 && (i.blocked.on || i.xwait.is_some()) {
            blocked = true;
        }
        if let Some(x) = i.xwait {
            conf = match (conf, x.confirmed) {
                (Some(c), true) => Some(c.min(x.at)),
                _ => None,
            };
        }
    }
    (text, blocked, conf)
}

/// Writes this process's participants into its slot for other processes' dumps (only while
/// not published; best effort).
pub(super) fn show() {
    let Some((a, s)) = current().and_then(|a| a.slot.map(|s| (a, s))) else { return };
    let (text, _, _) = local_text();
    let _g = lock(&XLOCK);
    if !published() {
        a.table.set_text(s, &text);
    }
}

/// Publishes that every participant of this process waits forever (the watchdog proved it
/// locally, `parts` with their generations); the caller then re-checks its proof and calls
/// [`withdraw`] if it no longer holds.
pub(super) fn publish(parts: &[(Arc<Participant>, u64)]) -> bool {
    let Some((a, s)) = current().and_then(|a| a.slot.map(|s| (a, s))) else { return false };
    let (text, blocked, conf) = local_text();
    let Some(conf) = conf else { return false };
    let _g = lock(&XLOCK);
    if published() {
        return true;
    }
    a.table.set_conf(s, conf);
    let made = a.table.publish(s, &text, blocked);
    *lock(&LAST) = Some(Pub { made, withdrawn: None, parts: parts.to_vec() });
    PUBLISHER.store(std::process::id(), Ordering::SeqCst);
    true
}

/// One look at the table by a published process: refresh the confirmations, prove and
/// announce a deadlock if there is one, and return the report of a verdict that covers this
/// process, with its epoch (the caller aborts the blocked operations with [`abort_all`]).
pub(super) fn poll() -> Option<(u64, String)> {
    let (a, s) = current().and_then(|a| a.slot.map(|s| (a, s)))?;
    // A verdict announced since the last look comes first: it may cover this process's
    // earlier publication, and a proof made now (after a peer that raised it has gone) would
    // name only what is left of the network.
    if let Some(found) = pending_verdict(a) {
        return Some(found);
    }
    if let (_, _, Some(conf)) = local_text() {
        a.table.set_conf(s, conf);
    }
    if let Some(proof) = a.table.check() {
        a.table.declare(proof.epoch, &report(&proof));
    }
    pending_verdict(a)
}

/// The verdict announced since the last look, if it covers this process (marks it seen).
fn pending_verdict(a: &Attached) -> Option<(u64, String)> {
    let v = a.table.verdict(SEEN.load(Ordering::SeqCst))?;
    SEEN.store(v.generation, Ordering::SeqCst);
    covered(v.epoch, None).then_some((v.epoch, v.report))
}

/// Whether a verdict proven at `epoch` covers this process's latest publication (and, given
/// `part`, that participant as counted then, its record unchanged since).
pub(super) fn covered(epoch: u64, part: Option<&Arc<Participant>>) -> bool {
    let last = lock(&LAST);
    let Some(p) = last.as_ref() else { return false };
    if p.made > epoch || p.withdrawn.is_some_and(|w| w <= epoch) {
        return false;
    }
    part.is_none_or(|me| {
        p.parts.iter().any(|(q, gen)| Arc::ptr_eq(q, me) && lock(&q.inner).gen == *gen)
    })
}

/// Aborts the blocked operations that the verdict proven at `epoch` covers with `msg`: in
/// process ones as the local watchdog does, shared ones at their next slice (`xabort`).
pub(super) fn abort_all(epoch: u64, msg: &str) {
    let mut wakers = Vec::new();
    {
        let _g = lock(&XLOCK);
        if !covered(epoch, None) {
            return;
        }
        let parts = lock(&LAST).as_ref().map(|p| p.parts.clone()).unwrap_or_default();
        for (p, gen) in parts {
            let mut i = lock(&p.inner);
            if i.removed || i.gen != gen || i.join_depth > 0 {
                continue; // changed since: not part of the proven deadlock
            }
            if i.xwait.is_some() {
                i.xabort = Some(msg.to_owned());
                continue;
            }
            if !i.blocked.on {
                continue;
            }
            let waker = i.blocked.waker.clone().or_else(|| p.fixed_waker.get().cloned());
            let signal = i.blocked.signal.clone();
            i.deadlock = Some(msg.to_owned());
            drop(i);
            let (Some(signal), Some(waker)) = (signal, waker) else { continue };
            if signal.try_abort() {
                wakers.push(waker);
            } else {
                lock(&p.inner).deadlock = None;
            }
        }
    }
    for w in wakers {
        match w {
            Waker::Thread(t) => t.unpark(),
            Waker::Custom(w) => w.wake(),
        }
    }
}

// ----- Python API -----

fn info(a: &Attached) -> (u32, i32, Vec<u8>) {
    (std::process::id(), a.table.fd(), a.table.uuid().to_vec())
}

fn os_err(what: &str, e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("{what}: {e}"))
}

/// The participant table of this process's OS-process network, created (with a slot for this
/// process) if there is none: returns (pid, fd, uuid) for children to attach through.
#[pyfunction]
pub(crate) fn _xtable_create() -> PyResult<(u32, i32, Vec<u8>)> {
    if let Some(a) = current() {
        return Ok(info(a));
    }
    let table = Table::create().map_err(|e| os_err("cannot create the participant table", e))?;
    let me = std::process::id();
    let slot = table.reserve(me);
    SEEN.store(table.generation(), Ordering::SeqCst);
    PUBLISHER.store(0, Ordering::SeqCst);
    Ok(info(install(Attached { table, pid: me, slot })))
}

/// Attaches this process (an OS child) to its network's table, held by `pid` as `fd`.
#[pyfunction]
pub(crate) fn _xtable_attach(pid: u32, fd: i32, uuid: Vec<u8>) -> PyResult<()> {
    let uuid: [u8; 16] =
        uuid.try_into().map_err(|_| PyValueError::new_err("uuid must be 16 bytes"))?;
    let table = Table::attach(pid, fd, &uuid)
        .map_err(|e| os_err("cannot attach to the participant table", e))?;
    let me = std::process::id();
    let slot = table.reserve(me);
    SEEN.store(table.generation(), Ordering::SeqCst);
    PUBLISHER.store(0, Ordering::SeqCst);
    install(Attached { table, pid: me, slot });
    Ok(())
}

/// Reserves a slot for child `pid` (before it can run); returns whether there was room.
#[pyfunction]
pub(crate) fn _xtable_reserve(pid: u32) -> bool {
    current().is_some_and(|a| a.table.reserve(pid).is_some())
}

/// Frees child `pid`'s slot (its outcome is known).
#[pyfunction]
pub(crate) fn _xtable_release(pid: u32) {
    if let Some(a) = current() {
        a.table.release(pid);
    }
}

/// The calling thread (the OS-process host's collecting thread) is idle (`True`: it waits
/// for its children, so it cannot wake anyone) or running again (`False`).
#[pyfunction]
pub(crate) fn _xidle(py: Python<'_>, idle: bool) -> PyResult<()> {
    if current().is_none() {
        return Ok(()); // no table (or a forked child): this thread keeps counting as running
    }
    let ident = thread_ident(py)?;
    let mut ignored = lock(&IGNORED);
    let set = ignored.get_or_insert_with(Default::default);
    if idle {
        set.insert(ident);
    } else {
        set.remove(&ident);
        drop(ignored);
        BUSY_GEN.fetch_add(1, Ordering::SeqCst);
        running();
    }
    Ok(())
}

/// The other processes of this network as its table shows them: one dict per process (pid,
/// published: whether all its participants wait forever, participants: dicts as
/// `_participants` gives them, with `pid`). Best effort; empty outside a network.
#[pyfunction]
pub(crate) fn _xtable_slots(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    let Some(a) = current() else { return Ok(out) };
    let me = std::process::id();
    let now = Stamp::now().0.as_millis();
    let mut by_pid: HashMap<u32, Vec<Line>> = HashMap::new();
    let mut order = Vec::new();
    for s in a.table.slots() {
        if s.pid == me {
            continue;
        }
        order.push((s.pid, s.stuck));
        by_pid.insert(s.pid, parse(&s.text));
    }
    for (pid, stuck) in order {
        let d = PyDict::new(py);
        d.set_item("pid", pid)?;
        d.set_item("published", stuck)?;
        let parts = PyList::empty(py);
        for l in by_pid.remove(&pid).unwrap_or_default() {
            let p = PyDict::new(py);
            let state = match l.kind {
                'B' => "blocked",
                'T' => "blocked",
                'X' => "blocked (shared, watched)",
                'S' => "blocked (shared)",
                'J' => "joining",
                _ => "running",
            };
            p.set_item("name", l.name)?;
            p.set_item("pid", l.pid)?;
            p.set_item("state", state)?;
            let w = PyList::empty(py);
            for (chan, write) in l.waits {
                let op = if write { "write" } else { "read" };
                w.append(PyTuple::new(py, [chan, op.to_owned()])?)?;
            }
            p.set_item("waits", w)?;
            p.set_item("alt", l.alt)?;
            p.set_item("timeout", l.kind == 'T')?;
            let since =
                if l.since_ms > 0 { now.saturating_sub(l.since_ms) as f64 / 1e3 } else { 0.0 };
            p.set_item("since", since)?;
            parts.append(p)?;
        }
        d.set_item("participants", parts)?;
        out.append(d)?;
    }
    Ok(out)
}
