//! The watchdog thread: when every participant of this process looks stuck it proves it (a
//! double collect of the records around a look at Python's threads and tasks) and declares
//! the deadlock, or, in a process of an OS-process network, publishes it in the participant
//! table and lets the network decide (`cross.rs`).
//!
//! Invariants:
//! - The watchdog holds the GIL only inside `check`/`cross` work, never while waiting, and
//!   never takes a registry lock while Python code runs.
//! - Lock order: `IN_PYTHON` -> GIL -> `REGISTRY` -> one participant's `inner`.
//! - A declared deadlock aborts each blocked cell after storing the report in its record, so
//!   the owner always finds the report it raises.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrocsp::Waker;
use pyo3::prelude::*;

use super::fork::PerProcess;
use super::lock;
use super::participant::{Participant, ARMED, IGNORED, NOT_STUCK, REGISTRY, WATCH};
use super::record::{Inner, Stamp};

// ----- the watchdog -----

/// How long the watchdog lets a network that just looked stuck move on before it looks closer:
/// in a busy network every participant is often "stuck" for an instant (the one that was just
/// woken has not run yet); a real deadlock stays.
const GRACE: Duration = Duration::from_millis(20);

/// Held by a background thread of ours (the watchdog, a shared-memory watcher waking an
/// asyncio task) for as long as it runs Python code; `false` once `_stop_watchdog` ran, after
/// which none of them attaches again.
pub(super) static IN_PYTHON: PerProcess<Mutex<bool>> = PerProcess::new(|| Mutex::new(true));

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

/// Starts the watchdog thread unless it runs (or detection is off): called by whoever
/// registers a participant (`caller.rs`). A failed spawn only means no detection.
pub(super) fn start() {
    // Per process: a child made by `fork` has no watchdog thread (`fork.rs`).
    static STARTED: PerProcess<std::sync::OnceLock<()>> = PerProcess::new(std::sync::OnceLock::new);
    if super::participant::enabled() {
        STARTED.get_or_init(|| {
            drop(std::thread::Builder::new().name("ferrocsp-deadlock".into()).spawn(watchdog));
        });
    }
}

fn watchdog() {
    // While every participant looks stuck but the check finds no deadlock (a foreign thread is
    // alive, a woken participant has not run yet), look again after `backoff` (growing).
    let mut backoff: Option<Duration> = None;
    let next = |b: Option<Duration>| {
        Some(b.map_or(Duration::from_millis(10), |d| d * 2).min(Duration::from_millis(500)))
    };
    loop {
        if super::cross::published() {
            // This process waits on the rest of its OS-process network (`cross.rs`).
            std::thread::sleep(super::cross::POLL);
            // Even if this process withdrew meanwhile (its host thread woke to reap a peer
            // that raised): a verdict on its earlier publication still covers it (`poll`).
            if let Some((epoch, msg)) = super::cross::poll() {
                let allowed = lock(&IN_PYTHON);
                if !*allowed {
                    return;
                }
                // With the GIL, as `check` wakes owners (an asyncio waker calls into Python).
                if Python::try_attach(|_| super::cross::abort_all(epoch, &msg)).is_none() {
                    return;
                }
            }
            backoff = None;
            continue;
        }
        {
            let (m, cv) = &*WATCH;
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
            Some(Verdict::Declared | Verdict::Published) => backoff = None,
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
    /// Every participant here waits forever; published for the OS-process network to decide.
    Published,
    /// Not a deadlock now (or not provably one): look again later.
    NotNow,
}

/// Every registered participant, with its record generation, if all are stuck (at least one
/// blocked in a channel operation, unless the process is part of an OS-process network) and
/// every blocked cell still waits.
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
            if i.blocked.on {
                if !i.blocked.signal.as_ref().is_some_and(|s| s.is_waiting()) {
                    return None;
                }
            } else if !i.xwait.is_some_and(|x| x.confirmed) {
                return None;
            }
            blocked = true;
        }
        out.push((Arc::clone(p), i.gen));
    }
    // Only joining: no deadlock here, unless this process is part of an OS-process network,
    // whose other processes may be the blocked ones (`cross.rs` needs one blocked anywhere).
    if !blocked && !super::cross::attached() {
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
        if has_pending_timer(l.bind(py))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether an event loop holds a timer that has not been cancelled: it may wake a blocked task
/// (`asyncio.timeout`, and `asyncio.wait_for` since Python 3.12, cancel the very task that
/// waits, so no other task shows that the network can still move). Read from the pure-Python
/// loop's `_scheduled` heap; a loop without it (uvloop) keeps the task rule alone.
fn has_pending_timer(event_loop: &Bound<'_, PyAny>) -> PyResult<bool> {
    let Ok(scheduled) = event_loop.getattr("_scheduled") else {
        return Ok(false);
    };
    // A copy: the loop's thread may push or pop while we look.
    let handles = event_loop.py().import("builtins")?.getattr("list")?.call1((scheduled,))?;
    for h in handles.try_iter()? {
        if !h?.call_method0("cancelled")?.is_truthy()? {
            return Ok(true);
        }
    }
    Ok(false)
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
    let busy = super::cross::busy_gen();
    let Some(first) = snapshot() else { return Verdict::NotNow };
    match covered(py, &first) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Verdict::NotNow,
    }
    let Some(second) = snapshot() else { return Verdict::NotNow };
    let same = first.len() == second.len()
        && first.iter().zip(&second).all(|((a, ga), (b, gb))| a.id == b.id && ga == gb);
    if !same || super::cross::busy_gen() != busy {
        return Verdict::NotNow;
    }
    if super::cross::attached() {
        // Part of an OS-process network: a peer process may still run. Publish, then check
        // again now that the flag is visible (a participant that ran in between either saw
        // the flag and withdrew it, or moved its record or the counter).
        if !super::cross::publish(&second) {
            return Verdict::NotNow;
        }
        let third = snapshot();
        let still = third.is_some_and(|t| {
            t.len() == second.len()
                && t.iter().zip(&second).all(|((a, ga), (b, gb))| a.id == b.id && ga == gb)
        }) && NOT_STUCK.load(Ordering::SeqCst) == 0
            && super::cross::busy_gen() == busy;
        if !still {
            super::cross::withdraw();
            return Verdict::NotNow;
        }
        return Verdict::Published;
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
