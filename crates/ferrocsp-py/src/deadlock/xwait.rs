//! Waits on shared channels as deadlock detection across OS processes sees them (`cross.rs`):
//! a wait with no deadline, in a process attached to a participant table, counts as stuck
//! only once *confirmed*: a quiet period ended with none of the operation's futex words moved,
//! so it was still waiting after the table stood at the epoch read before that period
//! (`XWait::at`). Each later quiet period re-confirms at a newer epoch.
//!
//! - A thread's wait ([`SharedSleep`]): the period is a sleep slice of the thread itself
//!   (`shm::slice_was_quiet`).
//! - A cooperative wait, a greenlet's or an asyncio task's ([`CoopWait`]): the period is the
//!   futex watcher's quiet look at the registration (`shm::watch_quiet`), made on the watcher
//!   thread without waking the waiter; a verdict that covers the wait makes the look wake it.
//!
//! Invariants:
//! - A confirmation at epoch `e` is made only from a quiet check that came after `e` was read:
//!   the wait was still waiting at some moment after the table stood at `e`. Completing it
//!   needs a participant that runs after that moment; its process then withdrew or had not
//!   published yet, and publishing again moves the epoch past `e`, so a proof at the new epoch
//!   does not count this confirmation until the wait is confirmed again.
//! - A cooperative wait's hook is tied to one watcher registration (`reg`): a look at an
//!   older registration (under way when the waiter re-registered) confirms nothing, and no look
//!   confirms anything once the wait ended (`done`, set before the record is cleared).
//! - A wait that ends clears its record through `Participant::update`: if it was stuck, this
//!   process withdraws its publication, which moves the epoch (as any participant that runs).
//! - Lock order: a cooperative wait's state -> `XLOCK` -> `LAST` -> `REGISTRY` -> one
//!   participant's `inner`; the watcher thread never holds its own lock while it calls the hook.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocsp::shm::Quiet;

use super::cross::{abort_all, covered, current, show, Attached, ANY};
use super::lock;
use super::participant::{enabled, Participant};
use super::record::XWait;

/// The longest sleep slice of a thread's confirmable shared wait, and the period of a
/// cooperative one's quiet looks.
pub(super) const XSLICE: Duration = Duration::from_millis(200);

/// One confirmable wait, once its table and participant are known.
struct Confirm {
    a: &'static Attached,
    part: Arc<Participant>,
    /// The epoch read before the current quiet period began.
    prev: u64,
    /// Whether the participant's record holds this wait (`xwait`).
    recorded: bool,
    /// The verdict generation last looked at.
    seen: u32,
    /// The epoch of the verdict that aborted this wait, found by this wait itself.
    verdict: Option<u64>,
}

impl Confirm {
    fn new(a: &'static Attached, part: Arc<Participant>) -> Self {
        let (seen, prev) = (a.table.generation(), a.table.epoch());
        Confirm { a, part, prev, recorded: false, seen, verdict: None }
    }

    /// At the end of a period (`quiet`: none of the wait's words moved during it): returns the
    /// report to raise when a verdict aborted this wait; else confirms the wait if quiet.
    fn tick(&mut self, quiet: bool) -> Option<String> {
        if let Some(msg) = lock(&self.part.inner).xabort.take() {
            return Some(msg);
        }
        // A verdict this process's watchdog has not acted on yet (it may have withdrawn the
        // publication meanwhile and stopped looking).
        let g = self.a.table.generation();
        if g != self.seen && self.recorded {
            self.seen = g;
            if let Some(v) = self.a.table.latest().filter(|v| covered(v.epoch, Some(&self.part))) {
                self.verdict = Some(v.epoch);
                return Some(v.report);
            }
        }
        if quiet {
            let prev = self.prev;
            if self.recorded {
                if let Some(x) = lock(&self.part.inner).xwait.as_mut() {
                    // Not an update: the local double collect must not see a re-confirmation.
                    x.at = prev;
                }
            } else {
                self.part.update(|i| {
                    i.xwait = Some(XWait { confirmed: true, at: prev });
                    i.xabort = None;
                });
                self.recorded = true;
                show();
            }
        }
        self.prev = self.a.table.epoch();
        None
    }

    /// Ends the wait after the operation gave an error (`failed`) or was abandoned with `dead`
    /// (a verdict's report): returns the report to raise as `Deadlock`.
    ///
    /// A verdict that covers this process turns any failure into `Deadlock`: a peer process
    /// that raised its own `Deadlock` first poisons its channels, which wakes this operation
    /// with `ChannelPoisoned` before it sees the verdict; every deadlocked operation must
    /// report the deadlock, as in process. The other blocked operations here are aborted with
    /// it at once, before this one's failure can poison them.
    fn finish(&self, failed: bool, dead: Option<String>) -> Option<String> {
        if !failed || !self.recorded {
            return None;
        }
        if let Some(msg) = dead {
            if let Some(e) = self.verdict {
                abort_all(e, &msg); // found by this wait: the others are not told yet
            }
            return Some(msg);
        }
        let v = self.a.table.latest()?;
        if !covered(v.epoch, Some(&self.part)) {
            return None;
        }
        abort_all(v.epoch, &v.report);
        Some(v.report)
    }

    /// The wait ended: clears the record (see the module invariants).
    fn end(&mut self) {
        if std::mem::take(&mut self.recorded) {
            self.part.update(|i| {
                i.xwait = None;
                i.xabort = None;
            });
            show();
        }
    }
}

// ----- a thread's wait -----

/// A thread's blocking operation on shared channels; a no-op outside an OS-process network,
/// with a deadline, or for a cooperative wait. Nothing is recorded until the operation has
/// slept a whole slice: an operation that completes sooner (most, in a busy network) costs one
/// atomic load.
pub(crate) struct SharedSleep {
    on: bool,
    /// Resolved at the first slice.
    c: Option<Confirm>,
}

impl SharedSleep {
    /// Enters a thread's shared wait (`forever`: no deadline and not `nowait`).
    pub(crate) fn enter(forever: bool) -> Self {
        SharedSleep { on: forever && ANY.load(Ordering::Relaxed) && enabled(), c: None }
    }

    /// Ends the wait (see `Confirm::finish`): the report to raise as `Deadlock`, if any.
    pub(crate) fn finish(self, failed: bool, dead: Option<String>) -> Option<String> {
        self.c.as_ref()?.finish(failed, dead)
    }

    /// The sleep slice to use instead of `default`.
    pub(crate) fn slice(&self, default: Duration) -> Duration {
        if self.on {
            default.min(XSLICE)
        } else {
            default
        }
    }

    /// At the end of each sleep slice (no GIL held): the report to raise when a verdict
    /// aborted this wait; else confirms the wait if the slice was quiet.
    pub(crate) fn tick(&mut self) -> Option<String> {
        if !self.on {
            return None;
        }
        let quiet = ferrocsp::shm::slice_was_quiet();
        let Some(c) = self.c.as_mut() else {
            // The first slice: find the table and the caller (a thread, or an async process
            // blocking its loop's thread).
            let a = current().filter(|a| a.slot.is_some());
            let part =
                crate::detach::attach(|py| crate::process::current(py).ok()).filter(|p| p.here()); // not a parent's, in a child made by `fork`
            match (a, part) {
                (Some(a), Some(part)) => self.c = Some(Confirm::new(a, part)),
                _ => self.on = false,
            }
            return None;
        };
        c.tick(quiet)
    }
}

impl Drop for SharedSleep {
    fn drop(&mut self) {
        if let Some(c) = self.c.as_mut() {
            c.end();
        }
    }
}

// ----- a cooperative wait -----

struct CoopInner {
    c: Confirm,
    /// The watcher registration whose looks count (see the module invariants).
    reg: u64,
    done: bool,
    /// The report of a verdict found by a look, for the waiter (woken by that look).
    dead: Option<String>,
}

/// One registration's quiet hook.
struct Look {
    state: Arc<Mutex<CoopInner>>,
    reg: u64,
}

impl Quiet for Look {
    fn quiet(&self) -> bool {
        let mut i = lock(&self.state);
        if i.done || i.reg != self.reg || i.dead.is_some() {
            return false;
        }
        match i.c.tick(true) {
            Some(msg) => {
                i.dead = Some(msg);
                true // wake the waiter: it raises `Deadlock`
            }
            None => false,
        }
    }
}

/// A cooperative operation's wait on shared channels (all its sleeps), seen by detection
/// across OS processes; does nothing outside an OS-process network or with a deadline.
#[derive(Default)]
pub(crate) struct CoopWait {
    state: Option<Arc<Mutex<CoopInner>>>,
    /// Not watched (no table, detection off, a deadline, or no participant to record in).
    off: bool,
    /// The report the latest sleep woke up with.
    dead: Option<String>,
}

impl CoopWait {
    /// The quiet hook and its period for the operation's next watcher registration (None: not
    /// watched). `until`: the sleep's deadline; `part`: the caller's participant (asked once).
    pub(crate) fn hook(
        &mut self,
        until: Option<Instant>,
        part: impl FnOnce() -> Option<Arc<Participant>>,
    ) -> Option<(Arc<dyn Quiet>, Duration)> {
        if self.off || until.is_some() || !ANY.load(Ordering::Relaxed) || !enabled() {
            return None;
        }
        let state = match &self.state {
            Some(s) => {
                let mut i = lock(s);
                // A new registration: its words were read just now, before this epoch read.
                i.reg += 1;
                i.c.prev = i.c.a.table.epoch();
                Arc::clone(s)
            }
            None => {
                let found = current()
                    .filter(|a| a.slot.is_some())
                    .and_then(|a| Some((a, part().filter(|p| p.here())?)));
                let Some((a, part)) = found else {
                    self.off = true;
                    return None;
                };
                let c = Confirm::new(a, part);
                let s = Arc::new(Mutex::new(CoopInner { c, reg: 0, done: false, dead: None }));
                self.state = Some(Arc::clone(&s));
                s
            }
        };
        let reg = lock(&state).reg;
        Some((Arc::new(Look { state, reg }), XSLICE))
    }

    /// After a sleep: whether a verdict's look woke it (the operation then gives up).
    pub(crate) fn aborted(&mut self) -> bool {
        let Some(s) = &self.state else { return false };
        self.dead = lock(s).dead.take();
        self.dead.is_some()
    }

    /// Ends the wait (see `Confirm::finish`): the report to raise as `Deadlock`, if any.
    pub(crate) fn finish(&mut self, failed: bool) -> Option<String> {
        let s = self.state.as_ref()?;
        let dead = self.dead.take();
        let i = lock(s);
        i.c.finish(failed, dead)
    }
}

impl Drop for CoopWait {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            let mut i = lock(&s);
            i.done = true;
            i.c.end();
        }
    }
}
