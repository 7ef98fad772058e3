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
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal").field("state", &self.state()).finish()
    }
}

impl Signal {
    /// A new cell in the `Waiting` state.
    pub fn new(waker: Waker) -> Self {
        Signal { state: AtomicUsize::new(WAITING), waker }
    }

    /// Makes a finished cell `Waiting` again, woken by `waker`, for its owner's next wait.
    ///
    /// Callable only through `Arc::get_mut`, i.e. when nobody else holds the cell: no channel
    /// entry, no counterpart about to wake it, no deadlock record. Nobody can then observe the
    /// reset, so a recycled cell behaves exactly like a fresh one (and costs no allocation).
    pub(crate) fn reset(&mut self, waker: Waker) {
        self.state = AtomicUsize::new(WAITING);
        // The same owner usually waits with the same waker: keep it (no reference count
        // traffic) when it is the same backend object.
        let same = match (&self.waker, &waker) {
            (Waker::Custom(a), Waker::Custom(b)) => {
                std::ptr::addr_eq(std::sync::Arc::as_ptr(a), std::sync::Arc::as_ptr(b))
            }
            _ => false,
        };
        if !same {
            self.waker = waker;
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
        self.state
            .compare_exchange(WAITING, encode(op, outcome), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The owner withdraws; true if it won the cell (nobody completed it).
    pub fn try_abort(&self) -> bool {
        self.state.compare_exchange(WAITING, ABORTED, Ordering::AcqRel, Ordering::Acquire).is_ok()
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
}
