//! loom models of a selection withdrawn by someone other than a counterpart, racing a
//! counterpart on another thread: the deadlock watchdog aborting a blocked operation from its
//! own thread (`ferrocsp-py/src/deadlock/watchdog.rs`), and an asyncio task cancelled while a
//! thread completes its operation (`ferrocsp-py/src/aio.rs`, `aio_wake.rs`).
//!
//! The engine code is the real one (`Select`, `Signal::try_abort`, the parks and wakers); the
//! bindings' own steps, which hold Python objects, are restated in a few lines each: the
//! watchdog's record (mark the report, abort the cell, unmark if the abort lost; the owner
//! takes the report when it resumes to an aborted cell: `Participant::deadlocked`), and the
//! asyncio waker's future slot (`AsyncWake::wake` takes the installed future, so it completes
//! it at most once).
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ferrocsp --release --test loom_abort`
#![cfg(loom)]

use std::sync::atomic::Ordering;

use ferrocsp::{Channel, Policy, Poll, Select, SelectError, Signal, Wake, Waker};
use loom::sync::atomic::AtomicUsize;
use loom::sync::{Arc, Mutex};
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

fn lock<T>(m: &Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ----- the deadlock watchdog -----

/// The owner's deadlock-detection record (`Participant`'s `inner`, reduced to the race).
#[derive(Default)]
struct Record {
    /// The blocked selection's cell (`Participant::block`), None once the wait ended.
    signal: Option<Arc<Signal>>,
    /// The report the watchdog stores before it aborts.
    deadlock: Option<&'static str>,
    /// The owner's wait is over (the watchdog has nothing left to look at).
    over: bool,
}

#[derive(Debug, PartialEq)]
enum End {
    Value(Option<u32>),
    Deadlock(&'static str),
}

/// The watchdog's declaration for one blocked participant: mark, abort, wake or unmark.
/// Returns whether its abort won.
fn declare(rec: &Mutex<Record>, owner: &loom::thread::Thread) -> bool {
    let signal = loop {
        let r = lock(rec);
        if r.over {
            return false;
        }
        if let Some(s) = r.signal.clone() {
            break s;
        }
        drop(r);
        thread::yield_now();
    };
    lock(rec).deadlock = Some("Deadlock: 1 process waits forever");
    if signal.try_abort() {
        owner.unpark();
        true
    } else {
        // Completed in a race: no deadlock for this one.
        lock(rec).deadlock = None;
        false
    }
}

#[test]
fn watchdog_abort_vs_completion() {
    // A process blocks reading; a thread tries to hand it a value while the watchdog declares
    // it deadlocked. Exactly one wins: the value arrives (and no report is raised) or the
    // owner raises the report (and the writer's value was not taken).
    model(|| {
        let ch = Channel::new(0);
        let rec = Arc::new(Mutex::new(Record::default()));
        let owner = thread::current();
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.try_write(7u32).is_ok());
        let rec2 = rec.clone();
        let watchdog = thread::spawn(move || declare(&rec2, &owner));

        let mut sel = Select::new();
        sel.read(&ch);
        let mut r = sel.start(Policy::Priority, Waker::current_thread(), None);
        if matches!(r, Poll::Pending) {
            lock(&rec).signal = sel.signal();
        }
        let end = loop {
            match r {
                Poll::Pending => {
                    sel.park(None);
                    r = sel.resume();
                }
                Poll::Ready(Err(SelectError::WouldBlock)) if sel.is_pending() => {
                    assert!(sel.abort().is_none(), "an aborted cell has nothing fired");
                    let report = lock(&rec).deadlock.take();
                    break End::Deadlock(report.expect("the report is stored before the abort"));
                }
                Poll::Ready(Ok(s)) => break End::Value(s.value),
                Poll::Ready(Err(e)) => panic!("unexpected {e:?}"),
            }
        };
        {
            let mut r = lock(&rec);
            r.signal = None;
            r.deadlock = None;
            r.over = true;
        }
        let (sent, aborted) = (writer.join().expect("writer"), watchdog.join().expect("watchdog"));
        match (sent, aborted, &end) {
            (true, false, End::Value(Some(7))) | (false, true, End::Deadlock(_)) => {}
            other => panic!("abort and completion both or neither won: {other:?}"),
        }
        let s = ch.stats();
        assert_eq!((s.readers_waiting, s.writers_waiting, s.buffered), (0, 0, 0), "{s:?}");
    });
}

// ----- asyncio: cancel vs completion -----

/// The asyncio waker (`AsyncWake`): completes the future installed, at most once.
struct FutureSlot {
    fut: Mutex<Option<u32>>,
    completed: AtomicUsize,
}

impl Wake for FutureSlot {
    fn wake(&self) {
        if lock(&self.fut).take().is_some() {
            self.completed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[test]
fn async_cancel_vs_cross_thread_completion() {
    // A task awaits a read with its future installed; a thread completes the read (and wakes
    // the future from its own thread) while the task is cancelled, which withdraws the
    // selection at once (`Withdraw`). The value is either the op's result (kept although
    // cancelled) or still the writer's; the future completes at most once, and only for a
    // communication that happened.
    model(|| {
        let ch = Channel::new(0);
        let slot = std::sync::Arc::new(FutureSlot {
            fut: Mutex::new(Some(1)),
            completed: AtomicUsize::new(0),
        });
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.try_write(7u32).is_ok());
        let mut sel = Select::new();
        sel.read(&ch);
        let fired = match sel.start(Policy::Priority, Waker::Custom(slot.clone()), None) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => sel.abort(),
        };
        assert!(!sel.is_pending());
        let sent = writer.join().expect("writer");
        let completed = slot.completed.load(Ordering::Acquire);
        match fired {
            Some(Ok(s)) => {
                assert!(sent);
                assert_eq!(s.value, Some(7));
                assert!(completed <= 1, "the future completed twice");
            }
            None => {
                assert!(!sent, "the writer's value was lost");
                assert_eq!(completed, 0, "a withdrawn op's future was completed");
            }
            Some(Err(e)) => panic!("unexpected {e:?}"),
        }
    });
}
