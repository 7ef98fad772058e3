//! How a shared-channel operation waits: a thread sleeps on futex words of the segment
//! itself (after a short spin); a cooperative process hands them to a [`Sleeper`].
//!
//! Invariants:
//! - [`Wait::block`] is the one place a shared-channel operation sleeps, always with no
//!   segment lock held; every caller re-checks what it waits for afterwards (a return may be
//!   spurious).
//! - A cooperative sleeper is only ever handed channels' change counters (`seq`), so a
//!   process needs one futex slot per channel it waits on, not per waiting operation (the
//!   header's `coop` count; `channel.rs`).
//! - A thread never asks one `futex_waitv` for more words than it takes
//!   ([`sys::FUTEX_WAITV_MAX`]: it would fail at once and the wait would spin). A longer list
//!   (a choice over more than 127 channels) is handed to the process's futex watchers, which
//!   split it over as many threads as it needs, and the thread parks until one of them wakes
//!   it: one more hop per wake-up, only for such waits; every shorter wait sleeps on the words
//!   itself as before.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sys;

/// How long a wait that a dead peer could make endless sleeps before it looks again (at an
/// entry's holder, `owner.rs`; at the lock's, `lock.rs`; at the waiting counts' owners,
/// `waiters.rs`).
pub(super) const PEER_CHECK: Duration = Duration::from_millis(100);
/// How long a rendezvous writer whose value nobody has claimed yet sleeps before it looks
/// whether a reader claimed it meanwhile (claiming does not wake it) and died.
pub(super) const PEER_IDLE: Duration = Duration::from_millis(500);
use crate::Waker;

thread_local! {
    /// Whether the last sleep slice of a thread wait on this thread ended with none of its
    /// words moved (see [`slice_was_quiet`]).
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Called from a [`Wait::interrupted`] check: whether the slice that just ended saw none of
/// the operation's futex words move, i.e. the operation was still waiting, not completed, when
/// the slice ended (deadlock detection across processes confirms waits with it).
pub fn slice_was_quiet() -> bool {
    QUIET.with(std::cell::Cell::get)
}

/// How a blocking operation waits: until `deadline` (None: forever), waking every `slice` to
/// ask `interrupted` whether to give up (the Python main thread checks for Ctrl-C there).
pub struct Wait<'a> {
    /// When to give up with `Timeout` (None: never). `Some(now)` or earlier never sleeps.
    pub deadline: Option<Instant>,
    /// Do not block at all: `WouldBlock` instead.
    pub nowait: bool,
    /// The longest single sleep before `interrupted` is asked.
    pub slice: Option<Duration>,
    /// Returns true to abandon the wait with `Interrupted`.
    pub interrupted: &'a mut dyn FnMut() -> bool,
    /// How to sleep. None: this thread sleeps on the futex words itself (after a short spin).
    /// Some: a cooperative scheduler suspends the caller instead (see [`Sleeper`]); `slice`
    /// and `interrupted` are then not used.
    pub sleeper: Option<&'a mut dyn Sleeper>,
}

/// A cooperative way to sleep (a greenlet or an asyncio task that must not block its thread):
/// typically registers the words with [`super::watch`] and switches away until woken.
///
/// The engine hands a cooperative sleeper only channels' change counters (`seq`), never an
/// entry's or a selection cell's private word: while a cooperative sleeper waits on a channel
/// (the header's `coop` count), every private wake-up on it also moves its `seq`. So a process
/// needs one futex slot per channel it waits on, not one per waiting operation.
pub trait Sleeper {
    /// Suspends the caller until any `words[i]` differs from `seen[i]` (or a wake-up on one,
    /// or `until` passes); spurious returns are allowed. Returns true to abandon the wait
    /// (the operation then withdraws, as for `Wait::interrupted`).
    fn sleep(&mut self, words: &[&AtomicU32], seen: &[u32], until: Option<Instant>) -> bool;
}

impl Wait<'_> {
    /// Whether the caller sleeps cooperatively (watching change counters only).
    pub(super) fn coarse(&self) -> bool {
        self.sleeper.is_some()
    }

    /// The one place a shared-channel operation sleeps: until any `words[i]` moves from
    /// `seen[i]`, the deadline, `cap` (a wait that must look at its peers then: `owner.rs`),
    /// or (thread sleeps) the slice ends. Called with no lock held. Returns whether to abandon
    /// the wait.
    pub(super) fn block(
        &mut self,
        words: &[&AtomicU32],
        seen: &[u32],
        cap: Option<Instant>,
    ) -> bool {
        let until = match (self.deadline, cap) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, c) => d.or(c),
        };
        if let Some(s) = self.sleeper.as_mut() {
            // No spin: the thread is shared with other runnable processes.
            return s.sleep(words, seen, until);
        }
        let moved = || words.iter().zip(seen).any(|(x, &v)| x.load(Ordering::Acquire) != v);
        // A short bounded spin first, as for in-process waits (`park.rs`): a counterpart in
        // another process that answers within microseconds costs no system call at all.
        if crate::spin_until(moved, crate::spin_budget()) {
            return false;
        }
        if words.len() > sys::FUTEX_WAITV_MAX {
            return self.block_watched(words, seen, until);
        }
        let now = Instant::now();
        let mut timeout = until.map(|d| d.saturating_duration_since(now));
        if let Some(s) = self.slice {
            timeout = Some(timeout.map_or(s, |t| t.min(s)));
        }
        match (words, seen) {
            ([w], [v]) => sys::futex_wait(w, *v, timeout),
            _ => sys::futex_wait_any(words, seen, timeout),
        }
        if self.slice.is_none() {
            return false;
        }
        QUIET.with(|q| q.set(!moved()));
        (self.interrupted)()
    }
}

/// The wake-up of a thread parked in [`Wait::block_watched`].
struct Woken {
    set: AtomicBool,
    thread: std::thread::Thread,
}

impl crate::Wake for Woken {
    fn wake(&self) {
        self.set.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Wait<'_> {
    /// [`Wait::block`] on more words than one `futex_waitv` takes (module invariants): the
    /// futex watchers sleep on them and unpark this thread. The registration stays across
    /// interrupt slices: a slice that ends with nothing moved asks `interrupted` and sleeps
    /// on, rather than making the caller look again at every channel (a choice over 1,000
    /// channels locks and scans them all in each step).
    fn block_watched(
        &mut self,
        words: &[&AtomicU32],
        seen: &[u32],
        until: Option<Instant>,
    ) -> bool {
        let moved = || words.iter().zip(seen).any(|(x, &v)| x.load(Ordering::Acquire) != v);
        let woken = Arc::new(Woken { set: AtomicBool::new(false), thread: std::thread::current() });
        let Ok(_reg) = super::watch::watch(words, seen, until, Waker::Custom(woken.clone())) else {
            // No watcher thread could be started: sleep on as many words as one call takes,
            // a short while at a time, so a change of any other is still seen soon (a
            // degraded wait, never a spin).
            let n = sys::FUTEX_WAITV_MAX.min(words.len()).min(seen.len());
            let mut nap = Duration::from_millis(10);
            for cap in [self.slice, until.map(|u| u.saturating_duration_since(Instant::now()))] {
                nap = cap.map_or(nap, |c| c.min(nap));
            }
            sys::futex_wait_any(&words[..n], &seen[..n], Some(nap));
            if self.slice.is_none() {
                return false;
            }
            QUIET.with(|q| q.set(!moved()));
            return (self.interrupted)();
        };
        loop {
            let end = match (until, self.slice) {
                (Some(u), Some(s)) => Some(u.min(Instant::now() + s)),
                (u, s) => u.or(s.map(|s| Instant::now() + s)),
            };
            park_until(&woken.set, end);
            let done =
                woken.set.load(Ordering::Acquire) || until.is_some_and(|u| Instant::now() >= u);
            if self.slice.is_none() {
                if done {
                    return false;
                }
                continue;
            }
            QUIET.with(|q| q.set(!moved()));
            if (self.interrupted)() {
                return true;
            }
            if done || moved() {
                return false;
            }
        }
    }
}

/// Parks until `set` or `end` (None: no end). A stray unpark only makes it look again.
fn park_until(set: &AtomicBool, end: Option<Instant>) {
    while !set.load(Ordering::Acquire) {
        match end {
            Some(e) => {
                let left = e.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                std::thread::park_timeout(left);
            }
            None => std::thread::park(),
        }
    }
}

impl std::fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("deadline", &self.deadline)
            .field("nowait", &self.nowait)
            .field("slice", &self.slice)
            .field("cooperative", &self.sleeper.is_some())
            .finish_non_exhaustive()
    }
}

// `Box::leak` of a capture-less closure allocates nothing (it is zero-sized): these
// constructors lend a `'static` "never interrupted" check without any cost.
impl Wait<'static> {
    /// Blocks until `deadline` (None: forever), never interrupted.
    pub fn until(deadline: Option<Instant>) -> Self {
        Wait {
            deadline,
            nowait: false,
            slice: None,
            interrupted: Box::leak(Box::new(|| false)),
            sleeper: None,
        }
    }

    /// Does not block: `WouldBlock` when the operation cannot complete at once.
    pub fn nowait() -> Self {
        Wait {
            deadline: None,
            nowait: true,
            slice: None,
            interrupted: Box::leak(Box::new(|| false)),
            sleeper: None,
        }
    }
}
