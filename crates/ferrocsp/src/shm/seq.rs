//! The change counter handshake of a shared channel: how a waiter that found nothing to do
//! goes to sleep, and how whoever changes the channel wakes it, without a lost wake-up.
//!
//! The words (the segment header's, or model words): `seq`, the change counter every waiter
//! may sleep on; `sleepers`, how many threads sleep on `seq` now (a change with none skips the
//! `FUTEX_WAKE` system call); `coop`, how many cooperative sleepers (`wait.rs`, `Sleeper`)
//! wait on the channel: they watch `seq` alone, so a private wake-up (an entry's word) must
//! move `seq` too while any does.
//!
//! The steps, with the segment's lock written L:
//! - waiter, L held: [`Seq::enter`] counts itself (`sleepers`, `coop`) and reads the word it
//!   will sleep on; it releases L, sleeps on the word while it holds that value, then
//!   [`Seq::leave`] uncounts itself without L;
//! - changer, L held: changes the state, then [`Seq::changed`]: `seq += 1`, and a wake if
//!   `sleepers > 0`; a private wake-up is its own word's bump and wake plus
//!   [`Seq::changed_for_coop`];
//! - poisoner without L (its lock wait was given up for a holder that does not let go, or
//!   the holder found the lock word scribbled): sets `poisoned`, then
//!   [`Seq::bump_unlocked`], always waking.
//!
//! Invariants (the loom models in `tests/loom_shm.rs` run these functions over model words):
//! - A waiter's count and its sample of the word are made in one hold of L, after it saw the
//!   state it waits on change nothing; a change made under L is ordered before or after that
//!   hold. Before: the waiter saw it. After: the changer sees the count (`sleepers` or `coop`,
//!   read under L) and wakes, and the futex returns at once if the word already moved.
//! - A change made without L always wakes, whatever the counts say. It is not ordered
//!   against the waiter's hold of L, so the waiter may have seen the channel unpoisoned and
//!   then sampled `seq` after the bump: it would sleep on a value that never moves again.
//!   So [`Seq::wait`] looks at `poisoned` after its sample and does not sleep if it is set
//!   (the poisoner sets it before the bump: a sample that saw the bump sees the poison).
//!   Found by the loom model `seq_poison_without_the_lock`; before, such a waiter slept until
//!   its slice or deadline, forever for a thread wait without either.

use std::sync::atomic::{AtomicU32, Ordering};

use super::word::Word;

/// The handshake's words of one channel.
#[derive(Debug)]
pub struct Seq<'a, W: Word = AtomicU32> {
    /// The change counter.
    pub seq: &'a W,
    /// Threads asleep on `seq`.
    pub sleepers: &'a W,
    /// Cooperative sleepers waiting on the channel.
    pub coop: &'a W,
    /// Non-zero once the channel is poisoned.
    pub poisoned: &'a W,
}

impl<W: Word> Seq<'_, W> {
    /// Announces a change to every sleeper. Lock held.
    #[inline]
    pub fn changed(&self) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        if self.sleepers.load(Ordering::Acquire) > 0 {
            self.seq.wake_all();
        }
    }

    /// A private wake-up (an entry's word, a cell fired under the lock) also moves `seq`
    /// while cooperative sleepers wait here: they watch nothing else. Lock held.
    #[inline]
    pub fn changed_for_coop(&self) {
        if self.coop.load(Ordering::Acquire) > 0 {
            self.changed();
        }
    }

    /// A change made without the lock (poison whose lock wait was given up): always wakes.
    #[inline]
    pub fn bump_unlocked(&self) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.seq.wake_all();
    }

    /// The waiter, lock held, having found nothing to do: counts itself, samples the word it
    /// sleeps on (`word`, or `seq` for a cooperative sleeper), calls `unlock`, and
    /// `sleep(word, sample)` unless it sleeps on `seq` and the channel was poisoned meanwhile
    /// (then None: the caller re-checks, as after any wake-up); then uncounts itself. (A
    /// private word is not moved by a poison without the lock: its sleeper, a rendezvous
    /// writer, sleeps with a cap, as before, and may wait on a poisoned channel for a reader
    /// that is copying its value.)
    #[inline]
    pub fn wait<R>(
        &self,
        word: &W,
        coarse: bool,
        unlock: impl FnOnce(),
        sleep: impl FnOnce(&W, u32) -> R,
    ) -> Option<R> {
        let (word, seen) = self.enter(word, coarse);
        unlock();
        let missed = std::ptr::eq(word, self.seq) && self.poisoned.load(Ordering::Acquire) != 0;
        let r = (!missed).then(|| sleep(word, seen));
        self.leave(word, coarse);
        r
    }

    fn enter<'w>(&'w self, word: &'w W, coarse: bool) -> (&'w W, u32) {
        let word = if coarse { self.seq } else { word };
        if std::ptr::eq(word, self.seq) {
            self.sleepers.fetch_add(1, Ordering::AcqRel);
        }
        if coarse {
            self.coop.fetch_add(1, Ordering::AcqRel);
        }
        (word, word.load(Ordering::Acquire))
    }

    fn leave(&self, word: &W, coarse: bool) {
        if coarse {
            self.coop.fetch_sub(1, Ordering::AcqRel);
        }
        if std::ptr::eq(word, self.seq) {
            self.sleepers.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A private wake-up of the word `word` (a rendezvous writer's entry). Lock held.
    #[inline]
    pub fn wake_private(&self, word: &W) {
        word.fetch_add(1, Ordering::AcqRel);
        word.wake_all();
        self.changed_for_coop();
    }
}
