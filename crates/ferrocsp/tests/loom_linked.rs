//! loom models of a selection cell *linked* to a shared decision word (`signal.rs`, `Link`):
//! the in-process half of an Alt over a mix of in-process channels and channels in shared
//! memory (`shm::select`). The shared word is modelled by a loom atomic and the shared
//! channels' locks by one loom mutex: a shared counterpart fires the word only under it, and
//! the owner's step (try, register) runs under it too, as in `shm::select`. The lock holds
//! whether the owner published its shared record yet: a shared counterpart can fire the word
//! only after that (it finds the record under the lock).
//!
//! Run with the other models:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ferrocsp --release --test loom_linked`
//!
//! What every model checks: at most one guard fires (the in-process or the shared one), an
//! in-process value is consumed iff its guard fired (never lost, never duplicated), and the
//! channel is left with no entry.
#![cfg(loom)]

use std::sync::Arc as StdArc;

use ferrocsp::{Channel, Link, Policy, Poll, Select, Wake, Waker};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// The shared word: `OPEN`, `CLOSED`, `SHARED` (fired for the shared guard) or `LOCAL + op`.
const OPEN: usize = 0;
const CLOSED: usize = 1;
const SHARED: usize = 2;
const LOCAL: usize = 3;

struct Word {
    word: AtomicUsize,
    nudges: AtomicUsize,
}

impl Word {
    fn new() -> StdArc<Word> {
        StdArc::new(Word { word: AtomicUsize::new(OPEN), nudges: AtomicUsize::new(0) })
    }

    /// A shared counterpart (under the shared lock): true if it won the selection.
    fn fire_shared(&self) -> bool {
        self.word.compare_exchange(OPEN, SHARED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

impl Link for Word {
    fn fire(&self, op: usize) -> bool {
        self.word.compare_exchange(OPEN, LOCAL + op, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    fn close(&self) -> Result<(), Option<usize>> {
        match self.word.compare_exchange(OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) | Err(CLOSED) => Ok(()),
            Err(SHARED) => Err(None),
            Err(w) => Err(Some(w - LOCAL)),
        }
    }

    fn nudge(&self) {
        self.nudges.fetch_add(1, Ordering::AcqRel);
    }
}

/// The owner's waker: it never parks in these models (it looks at the word after joining its
/// counterparts, or withdraws at once), as the real owner sleeps on the shared word itself.
struct NoPark;

impl Wake for NoPark {
    fn wake(&self) {}
}

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

/// The owner's step under the shared lock: try the in-process read and register it linked.
/// Returns the value if the read fired at once (the owner then closes the word, as
/// `shm::select` does before it lets go of the shared locks).
fn step(sel: &mut Select<u32>, word: &StdArc<Word>, shared_lock: &Mutex<bool>) -> Option<u32> {
    let mut published = shared_lock.lock().expect("shared lock");
    match sel.start_linked(Policy::Priority, Waker::Custom(StdArc::new(NoPark)), word.clone()) {
        Poll::Ready(r) => {
            assert_eq!(word.close(), Ok(()), "nobody fires the word while the owner steps");
            Some(r.expect("the read fired").value.expect("a read has its value"))
        }
        Poll::Pending => {
            *published = true;
            None
        }
    }
}

/// A shared counterpart: under the shared lock, fires the word if the owner's record is there.
fn shared_writer(word: &Word, shared_lock: &Mutex<bool>) -> bool {
    let published = shared_lock.lock().expect("shared lock");
    *published && word.fire_shared()
}

/// An in-process writer that gives up at once if nobody takes its value: true if sent.
fn try_writer(ch: &Channel<u32>) -> bool {
    let mut s = Select::new();
    s.write(ch, 7);
    let sent = match s.start(Policy::Priority, Waker::current_thread(), None) {
        Poll::Ready(r) => r.is_ok(),
        Poll::Pending => matches!(s.abort(), Some(Ok(_))),
    };
    if !sent {
        assert_eq!(s.take_value(0), Some(7), "an unsent value stays with its writer");
    }
    sent
}

/// The owner collects the outcome after both counterparts (or a timeout): the in-process
/// value if its guard won, `None` otherwise.
fn settle(sel: &mut Select<u32>) -> Option<u32> {
    let r = sel.abort();
    assert!(!sel.is_pending());
    r.map(|r| r.expect("a fired read").value.expect("a read has its value"))
}

fn race(timeout_first: bool) {
    model(move || {
        let ch: Channel<u32> = Channel::new(0);
        let word = Word::new();
        let shared_lock = Arc::new(Mutex::new(false));
        let tx = ch.clone();
        let local = thread::spawn(move || try_writer(&tx));
        let (w2, l2) = (word.clone(), shared_lock.clone());
        let shared = thread::spawn(move || shared_writer(&w2, &l2));
        let mut sel = Select::new();
        sel.read(&ch);
        let mut got = step(&mut sel, &word, &shared_lock);
        if got.is_none() && timeout_first {
            // A timeout at the worst moment: the owner closes the word and withdraws while
            // both counterparts may still be racing for it.
            got = settle(&mut sel);
        }
        let sent = local.join().expect("local writer");
        let shared_won = shared.join().expect("shared writer");
        if got.is_none() && !timeout_first {
            got = settle(&mut sel);
        }
        assert_eq!(got.is_some(), sent, "the value is consumed iff its guard fired");
        if let Some(v) = got {
            assert_eq!(v, 7);
        }
        assert!(!(sent && shared_won), "two guards fired");
        let final_word = word.word.load(Ordering::Acquire);
        assert_eq!(shared_won, final_word == SHARED);
        if sent {
            assert!(final_word == LOCAL || final_word == CLOSED, "{final_word}");
        }
        let s = ch.stats();
        assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0), "{s:?}");
    });
}

#[test]
fn in_process_writer_vs_shared_writer() {
    // Both counterparts race for one waiting mixed Alt; the owner looks after both are done.
    race(false);
}

#[test]
fn owner_timeout_vs_in_process_and_shared_writers() {
    // The owner withdraws (closes the word, aborts) while both counterparts race.
    race(true);
}

#[test]
fn retired_channel_nudges_without_deciding() {
    // The only writer end retires under a linked read: the owner is nudged, nothing is
    // decided, and a shared counterpart can still win the word.
    model(|| {
        let ch: Channel<u32> = Channel::new(0);
        let w = ch.writer();
        let word = Word::new();
        let shared_lock = Arc::new(Mutex::new(false));
        let mut sel = Select::new();
        sel.read(&ch);
        let got = step(&mut sel, &word, &shared_lock);
        assert_eq!(got, None);
        let retirer = thread::spawn(move || w.retire());
        let (w2, l2) = (word.clone(), shared_lock.clone());
        let shared = thread::spawn(move || shared_writer(&w2, &l2));
        retirer.join().expect("retirer");
        assert!(shared.join().expect("shared writer"), "a retirement decides nothing");
        assert_eq!(word.nudges.load(Ordering::Acquire), 1);
        assert_eq!(settle(&mut sel), None);
        assert_eq!(ch.stats().readers_waiting, 0);
    });
}

#[test]
fn writer_in_the_closed_window_is_found_by_the_next_step() {
    // The owner's next step closes the word while its last registration is still queued; a
    // blocking in-process writer that comes then cannot fire it, so it drops that entry and
    // waits itself. The owner withdraws, reopens the word and tries again before registering:
    // it finds the writer (or registers in time for it), and gets the value exactly once.
    model(|| {
        let ch: Channel<u32> = Channel::new(0);
        let word = Word::new();
        let shared_lock = Arc::new(Mutex::new(false));
        let mut sel = Select::new();
        sel.read(&ch);
        assert_eq!(step(&mut sel, &word, &shared_lock), None);
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.write(7).map_err(|e| e.error));
        let mut got = {
            let _g = shared_lock.lock().expect("shared lock");
            match word.close() {
                Err(Some(0)) => settle(&mut sel),
                Ok(()) => {
                    assert_eq!(sel.abort().map(|r| r.map(|s| s.index)), None);
                    word.word.store(OPEN, Ordering::Release); // reopen, still locked
                    match sel.start_linked(
                        Policy::Priority,
                        Waker::Custom(StdArc::new(NoPark)),
                        word.clone(),
                    ) {
                        Poll::Ready(r) => {
                            assert_eq!(word.close(), Ok(()));
                            Some(r.expect("fired").value.expect("a value"))
                        }
                        Poll::Pending => None,
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(writer.join().expect("writer"), Ok(()));
        if got.is_none() {
            // Registered again in time: the writer fired the word for it.
            assert_eq!(word.close(), Err(Some(0)));
            got = settle(&mut sel);
        }
        assert_eq!(got, Some(7));
        let s = ch.stats();
        assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0), "{s:?}");
    });
}
