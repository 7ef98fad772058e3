//! loom models of the shared-memory protocol: the selection cell's word (`shm/cell_word.rs`)
//! and the change counter handshake (`shm/seq.rs`), run as they are in production but over
//! model words (`shm::proto::ModelWord`: a loom atomic with a modelled futex) shared by threads
//! that stand for the processes mapping one segment. The segment's lock is a loom mutex here
//! (the handshake's argument needs only that it is a lock).
//!
//! A lost wake-up is a thread asleep on a model futex that nobody wakes: loom reports it as a
//! deadlock (model futexes never time out, so a wake-up that production would deliver only at
//! a `PEER_CHECK` slice fails the model too).
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ferrocsp --release --test loom_shm`
#![cfg(all(loom, target_os = "linux"))]

use std::sync::atomic::Ordering;

use ferrocsp::shm::proto::{CellWord, Fired, ModelWord, Seq, Word};
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

// ----- selection cells -----

/// A counterpart in another process: fires its record's guard, and wakes the owner if it won.
fn counterpart(word: &ModelWord, gen: u32, guard: u32) -> Fired {
    let cell = CellWord::new(word);
    let r = cell.fire(gen, guard);
    if r == Fired::Won {
        cell.wake();
    }
    r
}

/// Two counterparts (in two channels, so under two different locks) fire two guards of one
/// selection while its owner closes it (a timeout): exactly one of the three wins, and what
/// the owner's close reports is the winner's guard.
fn two_fires_vs_close(linked: bool) {
    model(move || {
        let word = Arc::new(ModelWord::new(0));
        let gen = CellWord::new(&*word).open_next();
        let spawn = |guard| {
            let w = word.clone();
            thread::spawn(move || counterpart(&w, gen, guard))
        };
        let (a, b) = (spawn(0), spawn(1));
        let cell = CellWord::new(&*word);
        let closed = if linked { cell.close_linked(gen) } else { cell.close(gen) };
        let (a, b) = (a.join().expect("counterpart 0"), b.join().expect("counterpart 1"));
        let winners: Vec<usize> = [(0, a), (1, b)]
            .into_iter()
            .filter(|(_, r)| *r == Fired::Won)
            .map(|(g, _)| g)
            .collect();
        match closed {
            Ok(()) => assert!(winners.is_empty(), "closed, yet {winners:?} fired"),
            Err(g) => assert_eq!(winners, [g], "the close reports the one winner"),
        }
        for r in [a, b] {
            assert_ne!(r, Fired::Over, "a live generation is never over");
        }
        assert_eq!(cell.fired(gen), closed.err());
    });
}

#[test]
fn cell_two_fires_vs_close() {
    two_fires_vs_close(false);
}

#[test]
fn cell_two_fires_vs_linked_close() {
    // The same race with the close of an in-process engine cell linked to the word (its
    // timeout or abort: `Link::close`).
    two_fires_vs_close(true);
}

#[test]
fn cell_fire_wakes_sleeping_owner() {
    // The owner sleeps on its word for as long as it holds the open value; a counterpart
    // fires and wakes it: it always wakes, with the guard that fired.
    model(|| {
        let word = Arc::new(ModelWord::new(0));
        let gen = CellWord::new(&*word).open_next();
        let w = word.clone();
        let c = thread::spawn(move || counterpart(&w, gen, 3));
        let cell = CellWord::new(&*word);
        let got = loop {
            match cell.fired(gen) {
                Some(g) => break g,
                None => word.wait(CellWord::<ModelWord>::open_value(gen)),
            }
        };
        assert_eq!(got, 3);
        assert_eq!(c.join().expect("counterpart"), Fired::Won);
    });
}

#[test]
fn cell_stale_record_never_fires_the_next_selection() {
    // A counterpart holds a record of generation 1 while the owner times out, frees the slot
    // and takes it again for its next selection (generation 2): the record fires generation 1
    // or nothing, never generation 2 (no value delivered to a selection that did not ask).
    model(|| {
        let word = Arc::new(ModelWord::new(0));
        let gen1 = CellWord::new(&*word).open_next();
        let w = word.clone();
        let c = thread::spawn(move || counterpart(&w, gen1, 0));
        let cell = CellWord::new(&*word);
        let first = cell.close(gen1);
        let gen2 = cell.open_next();
        assert_ne!(gen1, gen2);
        let late = c.join().expect("counterpart");
        assert_eq!(cell.fired(gen2), None, "the next selection was fired by a stale record");
        match first {
            Ok(()) => assert_ne!(late, Fired::Won),
            Err(g) => assert_eq!((g, late), (0, Fired::Won)),
        }
        // Now closed for good by its owner, the old generation is over for every record.
        assert_eq!(cell.fire(gen1, 0), Fired::Over);
        assert_eq!(cell.status(gen1), None);
    });
}

// ----- the change counter handshake -----

/// The words of one segment's handshake.
struct Words {
    seq: ModelWord,
    sleepers: ModelWord,
    coop: ModelWord,
    /// A rendezvous writer's entry word (a private wake-up).
    entry: ModelWord,
    poisoned: ModelWord,
}

impl Words {
    fn new() -> Self {
        Words {
            seq: ModelWord::new(0),
            sleepers: ModelWord::new(0),
            coop: ModelWord::new(0),
            entry: ModelWord::new(0),
            poisoned: ModelWord::new(0),
        }
    }

    fn hs(&self) -> Seq<'_, ModelWord> {
        Seq { seq: &self.seq, sleepers: &self.sleepers, coop: &self.coop, poisoned: &self.poisoned }
    }
}

/// A waiter of a shared channel: under the segment lock `l`, until `done` says so, counts
/// itself, samples the word, unlocks and sleeps (as `ShmChannel::sleep_unlocked` does).
fn waiter(w: &Words, l: &Mutex<u32>, private: bool, coarse: bool, done: impl Fn(u32) -> bool) {
    loop {
        let g = lock(l);
        if done(*g) || w.poisoned.load(Ordering::Acquire) != 0 {
            return;
        }
        let mine = if private { &w.entry } else { &w.seq };
        w.hs().wait(mine, coarse, || drop(g), |word, seen| word.wait(seen));
    }
}

#[test]
fn seq_two_thread_waiters_vs_change() {
    // Two threads wait for a state change that one changer makes under the lock: both wake.
    model(|| {
        let w = Arc::new(Words::new());
        let l = Arc::new(Mutex::new(0u32));
        let (w2, l2) = (w.clone(), l.clone());
        let other = thread::spawn(move || waiter(&w2, &l2, false, false, |s| s > 0));
        let (w3, l3) = (w.clone(), l.clone());
        let changer = thread::spawn(move || {
            let mut g = lock(&l3);
            *g += 1;
            w3.hs().changed();
        });
        waiter(&w, &l, false, false, |s| s > 0);
        other.join().expect("waiter");
        changer.join().expect("changer");
        assert_eq!(w.sleepers.load(Ordering::SeqCst), 0, "every sleeper uncounted itself");
    });
}

#[test]
fn seq_cooperative_waiter_vs_private_wake() {
    // A rendezvous writer is woken on its entry's private word; a cooperative sleeper (a
    // greenlet or an asyncio task) watches `seq` only, so the private wake-up must move `seq`
    // too. A thread sleeper on the entry word and a cooperative one on `seq` both wake.
    model(|| {
        let w = Arc::new(Words::new());
        let l = Arc::new(Mutex::new(0u32));
        let (w2, l2) = (w.clone(), l.clone());
        let thread_sleeper = thread::spawn(move || waiter(&w2, &l2, true, false, |s| s > 0));
        let (w3, l3) = (w.clone(), l.clone());
        let taker = thread::spawn(move || {
            let mut g = lock(&l3);
            *g += 1;
            w3.hs().wake_private(&w3.entry);
        });
        waiter(&w, &l, true, true, |s| s > 0);
        thread_sleeper.join().expect("thread sleeper");
        taker.join().expect("taker");
        assert_eq!(w.coop.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn seq_poison_without_the_lock() {
    // Poison whose lock wait was given up changes nothing under the lock: the poison word is
    // set first, then `seq` moves and every sleeper is woken regardless of the counts.
    model(|| {
        let w = Arc::new(Words::new());
        let l = Arc::new(Mutex::new(0u32));
        let w2 = w.clone();
        let poisoner = thread::spawn(move || {
            let _ = w2.poisoned.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
            w2.hs().bump_unlocked();
        });
        waiter(&w, &l, false, false, |_| false);
        poisoner.join().expect("poisoner");
    });
}
