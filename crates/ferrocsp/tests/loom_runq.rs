//! loom models of a cooperative scheduler's cross-thread wake-ups (`ferrocsp::runq`, the
//! run queue of the greenlet backend's hub): wake-ups from other threads against the hub
//! popping, running and parking.
//!
//! A task here is its [`Scheduled`] flag plus the event it waits for (a selection cell that
//! a counterpart fires before waking it, as `Signal` does). The hub runs the loop of
//! `ferrocsp-py/src/sched.rs` (`hub_loop`): pop and run; when nothing is runnable, `go_idle`,
//! park, `busy`. Running a task is looking at its event: a task that does not see it blocks
//! again (nothing queued). A lost wake-up leaves the hub parked for ever: loom reports a
//! deadlock.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ferrocsp --release --test loom_runq`
#![cfg(loom)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use ferrocsp::runq::{RunQueue, Scheduled};
use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;

/// Runs `f` under loom with a default preemption bound.
fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

struct Task {
    scheduled: Scheduled,
    /// What the task waits for (its selection fired).
    fired: AtomicBool,
}

type Queue = RunQueue<Arc<Task>>;

fn task() -> Arc<Task> {
    Arc::new(Task { scheduled: Scheduled::new(), fired: AtomicBool::new(false) })
}

/// `Task::wake` from a thread other than the scheduler's.
fn wake(q: &Queue, t: &Arc<Task>) {
    if t.scheduled.mark() {
        q.push(t.clone());
    }
}

/// A counterpart: completes the task's wait, then wakes it (as a fired `Signal` does).
fn fire(q: &Queue, t: &Arc<Task>) {
    t.fired.store(true, Ordering::Release);
    wake(q, t);
}

/// The hub: runs tasks until each of `tasks` has seen its event, parking when idle.
fn hub(q: &Queue, tasks: &[Arc<Task>]) {
    let local = RefCell::new(VecDeque::new());
    let mut seen = vec![false; tasks.len()];
    while seen.contains(&false) {
        let append = |remote: &mut VecDeque<_>| local.borrow_mut().append(remote);
        let pop_front = || local.borrow_mut().pop_front();
        if let Some(t) = q.pop(append, pop_front, |t| &t.scheduled, |_| false) {
            // Running the task: it looks at its event, and blocks again if it is not there.
            if t.fired.load(Ordering::Acquire) {
                let i = tasks.iter().position(|x| Arc::ptr_eq(x, &t)).expect("a known task");
                seen[i] = true;
            }
            continue;
        }
        if q.go_idle() {
            thread::park();
            q.busy();
        }
    }
}

#[test]
fn remote_wake_vs_hub_going_idle() {
    // One remote wake-up against the hub's look-then-park: the hub always runs the task.
    model(|| {
        let q = Arc::new(RunQueue::new(thread::current()));
        let t = task();
        let (q2, t2) = (q.clone(), t.clone());
        let waker = thread::spawn(move || fire(&q2, &t2));
        hub(&q, &[t]);
        waker.join().expect("waker");
    });
}

#[test]
fn two_remote_wakers_two_tasks() {
    // Two threads wake two tasks while the hub drains, runs and parks.
    model(|| {
        let q = Arc::new(RunQueue::new(thread::current()));
        let (a, b) = (task(), task());
        let spawn = |t: &Arc<Task>| {
            let (q2, t2) = (q.clone(), t.clone());
            thread::spawn(move || fire(&q2, &t2))
        };
        let (wa, wb) = (spawn(&a), spawn(&b));
        hub(&q, &[a, b]);
        wa.join().expect("waker a");
        wb.join().expect("waker b");
    });
}

#[test]
fn stale_wake_vs_fire() {
    // A task is queued by a wake-up that completes nothing (a stale timer, a retire nudge, the
    // watchdog's wake of a participant), and its real wake-up comes from another thread while
    // it is still queued, so that one only finds the flag set. The hub must still run the
    // task after it can see the event.
    model(|| {
        let q = Arc::new(RunQueue::new(thread::current()));
        let t = task();
        let (q1, t1) = (q.clone(), t.clone());
        let stale = thread::spawn(move || wake(&q1, &t1));
        let (q2, t2) = (q.clone(), t.clone());
        let real = thread::spawn(move || fire(&q2, &t2));
        hub(&q, &[t]);
        stale.join().expect("stale waker");
        real.join().expect("real waker");
    });
}
