//! The selection cell: one atomic word per blocked operation (or Alt), plus how to wake its owner.
//!
//! A process that cannot complete any of its operations registers one [`Signal`] on every channel
//! it waits on, then sleeps in whatever way its backend sleeps. Whoever completes it (a
//! counterpart, a poisoner, a retirer, or the owner itself on timeout/cancel) must first win one
//! compare-and-swap on the cell; that CAS is the single point that decides the outcome, so an
//! Alt fires exactly one of its operations however many counterparts race for it.
//!
//! State machine (one `AtomicUsize`):
//!
//! ```text
//!   WAITING ──CAS by counterpart──▶ COMPLETED(op, Done | Poisoned | Retired | Moved)
//!      │
//!      └────CAS by owner──────────▶ ABORTED            (timeout, cancel, Ctrl-C)
//! ```
//!
//! Invariants:
//! - The state leaves `WAITING` at most once; both other states are final.
//! - Whoever wins the CAS owns the wake-up: it, and only it, calls [`Signal::wake`].
//! - A counterpart that hands a value to a waiting *reader* stores the value in the reader's slot
//!   *before* its CAS (released by the CAS); if the CAS fails it takes the value back. The owner
//!   reads its slot only after observing `COMPLETED(op, Done)` with acquire ordering.
//! - A counterpart that takes a value from a waiting *writer* does so only *after* winning the
//!   CAS, so a writer whose operation was aborted or poisoned still owns its value.
//!
//! A *linked* cell ([`Link`]; an Alt that also waits on channels shared with other OS
//! processes, `shm::select`) has a second decision word outside this process's control: the
//! selection's cell in shared memory, which counterparts in other processes fire directly.
//! Then that word decides, and this one only records the outcome:
//! - A counterpart completes a linked cell only after it fired the shared word
//!   ([`Link::fire`], `OPEN -> FIRED(op)`); the state CAS of the word's winner cannot fail,
//!   since nobody else changes the state without winning the word first.
//! - The owner aborts a linked cell only after it closed the shared word ([`Link::close`]). If
//!   the word was fired for one of this cell's operations, the owner waits for its winner's
//!   state CAS (a few instructions under a channel lock) and the completion stands; if it was
//!   fired for a shared guard, the state stays `WAITING` and the owner takes that guard.
//! - A linked cell is never completed `Retired`: a retiring channel drops the entry and
//!   nudges the owner ([`Link::nudge`]), who steps again without that operation (completing
//!   it would decide the shared word for nothing).

use std::fmt;

use crate::sync::{AtomicUsize, Ordering, Thread};

/// How an operation was completed by somebody else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The communication happened.
    Done,
    /// The channel was poisoned while the operation waited.
    Poisoned,
    /// The channel was retired while the operation waited.
    Retired,
    /// The channel moved to another transport while the operation waited (nothing was sent
    /// or taken): the caller retries there.
    Moved,
}

/// A snapshot of a selection cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nobody has completed or aborted the operation yet.
    Waiting,
    /// The owner withdrew (timeout, cancellation, interrupt).
    Aborted,
    /// Operation number `op` of the selection was completed with `outcome`.
    Completed {
        /// Index of the operation within its selection.
        op: usize,
        /// What happened to it.
        outcome: Outcome,
    },
}

const WAITING: usize = 0;
const ABORTED: usize = usize::MAX;

/// The largest number of operations one selection may hold.
pub const MAX_OPS: usize = 1 << 24;

fn encode(op: usize, outcome: Outcome) -> usize {
    let kind = match outcome {
        Outcome::Done => 1,
        Outcome::Poisoned => 2,
        Outcome::Retired => 3,
        Outcome::Moved => 4,
    };
    // `Select` caps the number of operations at MAX_OPS, so the shift never loses bits and
    // never produces ABORTED (all ones) or WAITING (kind is never 0).
    (op << 3) | kind
}

fn decode(word: usize) -> State {
    match word {
        WAITING => State::Waiting,
        ABORTED => State::Aborted,
        w => State::Completed {
            op: w >> 3,
            outcome: match w & 7 {
                1 => Outcome::Done,
                2 => Outcome::Poisoned,
                3 => Outcome::Retired,
                _ => Outcome::Moved,
            },
        },
    }
}

/// Something that can wake a parked process: the seam where backends plug in.
///
/// The thread backend unparks an OS thread; a cooperative scheduler would make a greenlet or
/// coroutine runnable. `wake` is called at most once per [`Signal`], from any thread, never with
/// a channel lock held, and must not block.
pub trait Wake: Send + Sync {
    /// Makes the owner of the signal runnable.
    fn wake(&self);
}

/// The shared-memory half of a linked selection cell (see the module doc): implemented by
/// `shm::cells` for a real Alt, and by the loom models with a plain atomic.
pub trait Link: Send + Sync {
    /// Tries to decide the shared word for this cell's operation `op`; true if this call won.
    fn fire(&self, op: usize) -> bool;
    /// The owner closes the shared word so nobody can fire it any more: `Ok` once closed,
    /// `Err(Some(op))` if it was fired for this cell's operation `op`, `Err(None)` if for a
    /// guard outside this cell (a shared channel's).
    fn close(&self) -> Result<(), Option<usize>>;
    /// Wakes the owner to look again, nothing decided (an operation's channel retired).
    fn nudge(&self);
}

/// How the owner of a [`Signal`] is woken.
#[derive(Clone)]
pub enum Waker {
    /// Unpark this OS thread.
    Thread(Thread),
    /// Call a backend's [`Wake`] implementation.
    Custom(std::sync::Arc<dyn Wake>),
}

impl Waker {
    /// A waker for the calling OS thread.
    pub fn current_thread() -> Self {
        Waker::Thread(crate::sync::current_thread())
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waker::Thread(_) => f.write_str("Waker::Thread"),
            Waker::Custom(_) => f.write_str("Waker::Custom"),
        }
    }
}

/// One selection cell: the atomic state of a blocked operation or Alt, and its waker.
pub struct Signal {
    state: AtomicUsize,
    waker: Waker,
    /// The shared word this cell is linked to, if any (None on the in-process hot path).
    link: Option<std::sync::Arc<dyn Link>>,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal").field("state", &self.state()).finish()
    }
}

impl Signal {
    /// A new cell in the `Waiting` state.
    pub fn new(waker: Waker) -> Self {
        Signal { state: AtomicUsize::new(WAITING), waker, link: None }
    }

    /// A new cell in the `Waiting` state, linked to a shared word (see the module doc).
    pub fn linked(waker: Waker, link: Option<std::sync::Arc<dyn Link>>) -> Self {
        Signal { state: AtomicUsize::new(WAITING), waker, link }
    }

    /// Makes a finished cell `Waiting` again, woken by `waker`, for its owner's next wait.
    ///
    /// Callable only through `Arc::get_mut`, i.e. when nobody else holds the cell: no channel
    /// entry, no counterpart about to wake it, no deadlock record. Nobody can then observe the
    /// reset, so a recycled cell behaves exactly like a fresh one (and costs no allocation).
    pub(crate) fn reset(&mut self, waker: &Waker, link: Option<std::sync::Arc<dyn Link>>) {
        self.state = AtomicUsize::new(WAITING);
        self.link = link;
        // The same owner usually waits with the same waker: keep it (no reference count
        // traffic) when it is the same backend object or the same thread.
        let same = match (&self.waker, waker) {
            (Waker::Custom(a), Waker::Custom(b)) => {
                std::ptr::addr_eq(std::sync::Arc::as_ptr(a), std::sync::Arc::as_ptr(b))
            }
            (Waker::Thread(a), Waker::Thread(b)) => a.id() == b.id(),
            _ => false,
        };
        if !same {
            self.waker = waker.clone();
        }
    }

    /// How the owner is woken.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The current state (acquire: a `Completed(_, Done)` read here makes the slot visible).
    pub fn state(&self) -> State {
        decode(self.state.load(Ordering::Acquire))
    }

    /// Whether the cell is still waiting.
    pub fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Tries to complete operation `op` with `outcome`; true if this call won the cell.
    pub(crate) fn try_complete(&self, op: usize, outcome: Outcome) -> bool {
        if let Some(link) = &self.link {
            if outcome == Outcome::Retired {
                // Not a decision (module doc): the caller drops the entry, the owner re-steps.
                link.nudge();
                return false;
            }
            if !link.fire(op) {
                return false;
            }
            // We won the shared word, so nobody else moves the state: this CAS succeeds.
            let won = self.cas(encode(op, outcome));
            debug_assert!(won, "the winner of a linked cell's shared word completes it");
            return won;
        }
        self.cas(encode(op, outcome))
    }

    fn cas(&self, to: usize) -> bool {
        self.state.compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The owner withdraws; true if it won the cell (nobody completed it). A linked cell is
    /// closed in shared memory first; if one of its operations won that word, this waits for
    /// the winner to complete the state (and returns false).
    pub fn try_abort(&self) -> bool {
        if let Some(link) = &self.link {
            match link.close() {
                Ok(()) => {}
                Err(None) => return false,
                Err(Some(_)) => {
                    self.wait_completed();
                    return false;
                }
            }
        }
        self.cas(ABORTED)
    }

    /// Waits until the state left `WAITING`: a linked cell's word was won by a counterpart
    /// that is completing the state right now, under a channel lock, without blocking.
    pub fn wait_completed(&self) {
        while self.is_waiting() {
            crate::sync::yield_now();
        }
    }

    /// Wakes the owner. Called by whoever won the cell, after releasing channel locks.
    pub(crate) fn wake(&self) {
        match &self.waker {
            Waker::Thread(t) => t.unpark(),
            Waker::Custom(w) => w.wake(),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        for op in [0usize, 1, 7, 1 << 20] {
            for outcome in [Outcome::Done, Outcome::Poisoned, Outcome::Retired, Outcome::Moved] {
                assert_eq!(decode(encode(op, outcome)), State::Completed { op, outcome });
            }
        }
        assert_eq!(decode(WAITING), State::Waiting);
        assert_eq!(decode(ABORTED), State::Aborted);
    }

    #[test]
    fn state_leaves_waiting_once() {
        let s = Signal::new(Waker::current_thread());
        assert!(s.try_complete(3, Outcome::Done));
        assert!(!s.try_abort());
        assert!(!s.try_complete(1, Outcome::Poisoned));
        assert_eq!(s.state(), State::Completed { op: 3, outcome: Outcome::Done });
    }

    /// A word standing for a shared cell: 0 open, 1 closed, 2 + op fired for `op`.
    struct Word(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize);

    impl Link for Word {
        fn fire(&self, op: usize) -> bool {
            use std::sync::atomic::Ordering::AcqRel;
            self.0.compare_exchange(0, 2 + op, AcqRel, Ordering::Acquire).is_ok()
        }
        fn close(&self) -> Result<(), Option<usize>> {
            use std::sync::atomic::Ordering::AcqRel;
            match self.0.compare_exchange(0, 1, AcqRel, Ordering::Acquire) {
                Ok(_) | Err(1) => Ok(()),
                Err(w) if w >= 100 => Err(None),
                Err(w) => Err(Some(w - 2)),
            }
        }
        fn nudge(&self) {
            self.1.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn word() -> std::sync::Arc<Word> {
        std::sync::Arc::new(Word(Default::default(), Default::default()))
    }

    #[test]
    fn linked_cell_is_decided_by_its_word() {
        // A shared guard fired the word: no local completion, and the owner's abort fails
        // with the state still waiting (the owner takes the shared guard).
        let w = word();
        let s = Signal::linked(Waker::current_thread(), Some(w.clone()));
        w.0.store(100, Ordering::Release);
        assert!(!s.try_complete(0, Outcome::Done));
        assert!(!s.try_abort());
        assert_eq!(s.state(), State::Waiting);
        // A local counterpart won: the abort sees its completion.
        let w = word();
        let s = Signal::linked(Waker::current_thread(), Some(w.clone()));
        assert!(s.try_complete(2, Outcome::Done));
        assert!(!s.try_abort());
        assert_eq!(s.state(), State::Completed { op: 2, outcome: Outcome::Done });
        // Closed first: nobody completes it, the abort wins; a retirement only nudges.
        let w = word();
        let s = Signal::linked(Waker::current_thread(), Some(w.clone()));
        assert!(!s.try_complete(1, Outcome::Retired));
        assert_eq!(w.1.load(Ordering::Acquire), 1);
        assert!(s.try_abort());
        assert!(!s.try_complete(1, Outcome::Done));
        assert_eq!(s.state(), State::Aborted);
    }
}
