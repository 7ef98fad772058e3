//! The cross-thread side of a cooperative scheduler's run queue (the greenlet backend's hub,
//! `ferrocsp-py/src/sched`): how a task woken from another thread reaches the hub's thread,
//! and how the hub parks when nothing is runnable without missing such a wake-up.
//!
//! The scheduler's own thread keeps a local queue that only it touches (no lock); other
//! threads push onto the [`RunQueue`] under its lock and unpark the hub only if it said it is
//! idle. Each task has a [`Scheduled`] flag: set by whoever wakes it (only the first wake-up
//! since it last started pushes it), cleared by the hub when it pops it.
//!
//! Invariants (the loom models in `tests/loom_runq.rs` run this code):
//! - A task's flag is set iff it is in a queue (local or remote), or popped and not yet
//!   cleared. So every wake-up made after the hub cleared the flag pushes the task again, and
//!   none made before it is needed: the task, running after the clear, sees what that wake-up
//!   was for. That last step needs the clear to read the flag (a swap, not a store): a
//!   wake-up that found the flag set published its event (its cell fired) before its own
//!   swap, and only a read of the flag that its swap wrote orders that event before the
//!   task's look at it. (Found by the loom model `stale_wake_vs_fire`: with a plain store,
//!   the task could miss the event and block again while nobody would wake it.)
//! - `idle` is set, under the lock, only by the hub with the remote queue empty, just before
//!   it parks; a push onto an idle queue clears it and unparks the hub. A push before the
//!   hub's look is seen by that look (same lock); one after it unparks the hub (a park whose
//!   token was already given returns at once).
//! - `remote` is true whenever the remote queue may be non-empty (set under the lock with each
//!   push, cleared under it when the hub drains it); a hub that reads it stale skips one
//!   drain and then finds the task by its look under the lock before it parks.

use std::collections::VecDeque;

use crate::sync::{lock, AtomicBool, Mutex, Ordering, Thread};

/// A task's "in a run queue" flag (module invariants).
#[derive(Debug, Default)]
pub struct Scheduled(AtomicBool);

impl Scheduled {
    /// A task not in any queue.
    pub fn new() -> Self {
        Scheduled(AtomicBool::new(false))
    }

    /// A wake-up: true if the task was not queued, and the caller must now push it.
    #[inline]
    pub fn mark(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    /// The hub popped the task and is about to run it. A read-modify-write, so that it reads
    /// the latest wake-up's mark (module invariants).
    #[inline]
    pub fn clear(&self) {
        self.0.swap(false, Ordering::AcqRel);
    }
}

struct Remote<T> {
    tasks: VecDeque<T>,
    idle: bool,
}

/// Tasks woken from other threads than the scheduler's, and the hub's idle flag.
pub struct RunQueue<T> {
    queue: Mutex<Remote<T>>,
    /// Whether `queue.tasks` may be non-empty (set and cleared under its lock).
    remote: AtomicBool,
    /// The scheduler's thread, unparked when an idle hub gets work.
    hub: Thread,
}

impl<T> std::fmt::Debug for RunQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunQueue").field("remote", &self.remote).finish_non_exhaustive()
    }
}

impl<T> RunQueue<T> {
    /// An empty queue for the scheduler running on `hub`.
    pub fn new(hub: Thread) -> Self {
        RunQueue {
            queue: Mutex::new(Remote { tasks: VecDeque::new(), idle: false }),
            remote: AtomicBool::new(false),
            hub,
        }
    }

    /// The scheduler's thread.
    pub fn hub(&self) -> &Thread {
        &self.hub
    }

    /// From another thread: queues `task` and unparks the hub if it is idle.
    pub fn push(&self, task: T) {
        let wake_hub = {
            let mut q = lock(&self.queue);
            q.tasks.push_back(task);
            self.remote.store(true, Ordering::Release);
            std::mem::replace(&mut q.idle, false)
        };
        if wake_hub {
            self.hub.unpark();
        }
    }

    /// On the hub's thread: the next task to run, its flag (`flag(task)`) cleared, skipping
    /// those `finished` says are over. The local queue is the caller's: `append` moves the
    /// remote wake-ups to its back first (so tasks switching among themselves cannot starve
    /// them), `pop_front` takes its next task. Each is called on its own, so a task dropped
    /// here is dropped outside both.
    pub fn pop(
        &self,
        append: impl FnOnce(&mut VecDeque<T>),
        mut pop_front: impl FnMut() -> Option<T>,
        flag: impl Fn(&T) -> &Scheduled,
        finished: impl Fn(&T) -> bool,
    ) -> Option<T> {
        if self.remote.load(Ordering::Acquire) {
            let mut q = lock(&self.queue);
            self.remote.store(false, Ordering::Release);
            append(&mut q.tasks);
        }
        while let Some(t) = pop_front() {
            flag(&t).clear();
            if !finished(&t) {
                return Some(t);
            }
        }
        None
    }

    /// On the hub's thread, with its local queue empty: says it is idle and about to park,
    /// unless a remote wake-up came (then false: pop again).
    pub fn go_idle(&self) -> bool {
        let mut q = lock(&self.queue);
        if !q.tasks.is_empty() {
            return false;
        }
        q.idle = true;
        true
    }

    /// On the hub's thread, after its park: no longer idle.
    pub fn busy(&self) {
        lock(&self.queue).idle = false;
    }

    /// Takes every queued task (the scheduler is shutting down).
    pub fn take_all(&self) -> VecDeque<T> {
        let mut q = lock(&self.queue);
        self.remote.store(false, Ordering::Release);
        std::mem::take(&mut q.tasks)
    }
}
