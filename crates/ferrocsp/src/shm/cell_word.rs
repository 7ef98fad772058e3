//! The state word of a selection cell (`cells.rs`) and every transition made on it: the one
//! compare-and-swap that decides which guard of a waiting `Alt` fired.
//!
//! The word is `gen << STATUS_BITS | status`, with status `OPEN` (waiting, nothing fired),
//! `FIRED(guard)` (`guard + 1`) or `CLOSED` (the owner withdrew, for a step or for good). The
//! generation is the slot's: a new selection in the same slot opens the next one, so a record
//! left by an earlier selection can never fire a later one.
//!
//! Invariants (asserted by the loom models, `tests/loom_shm.rs`, which run this code on
//! model-checked words):
//! - Exactly one transition leaves `OPEN(gen)`: a counterpart's `fire` (to `FIRED`), or the
//!   owner's `close` (to `CLOSED`). Whoever made it owns the outcome; every other attempt on
//!   the same generation fails and reports what won.
//! - Only the owner writes the word other than by those compare-and-swaps (`open_next`, when
//!   it takes the slot), and only the owner moves it back to `OPEN` (`reopen`, from `CLOSED`
//!   of its own generation). A counterpart never writes a generation other than the one its
//!   record names.
//! - A fire that succeeds is followed by a futex wake of the word (the owner may sleep on it,
//!   comparing with the open value: so a wake-up is never lost); a value read back that no transition here can write (another generation where ours is
//!   expected, `OPEN` where a close failed) is reported as [`TAMPERED`].

use std::sync::atomic::{AtomicU32, Ordering};

use super::word::Word;

/// The status bits of a cell's state word (the rest is the generation).
pub(super) const STATUS_BITS: u32 = 12;
const STATUS_MASK: u32 = (1 << STATUS_BITS) - 1;
const OPEN: u32 = 0;
const CLOSED: u32 = STATUS_MASK;
/// The largest generation (they wrap).
pub(super) const GEN_MAX: u32 = u32::MAX >> STATUS_BITS;
/// The most guards one selection can name (`FIRED(g)` is `g + 1`).
pub const MAX_GUARDS: usize = (STATUS_MASK - 1) as usize;
/// What [`CellWord::fired`] and [`CellWord::close`] report for a word that no counterpart can
/// have written (a scribble): no guard has this number.
pub const TAMPERED: usize = usize::MAX;

/// How a counterpart's [`CellWord::fire`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fired {
    /// It fired the cell: the selection chose its guard.
    Won,
    /// The selection already chose something else, or is closed for a step: leave the record.
    Lost,
    /// The word holds another generation: that selection is over.
    Over,
}

/// One selection cell's state word (in a cells segment, or a model word).
#[derive(Debug)]
pub struct CellWord<'a, W: Word = AtomicU32> {
    word: &'a W,
}

impl<'a, W: Word> CellWord<'a, W> {
    /// The cell whose state word is `word`.
    #[inline]
    pub fn new(word: &'a W) -> Self {
        CellWord { word }
    }

    /// The owner, which has just taken the slot for itself alone: opens it with the next
    /// generation and returns that generation.
    #[inline]
    pub fn open_next(&self) -> u32 {
        let gen = ((self.word.load(Ordering::Acquire) >> STATUS_BITS) + 1) & GEN_MAX;
        self.word.store(Self::open_value(gen), Ordering::Release);
        gen
    }

    /// The word's value while generation `gen` waits with nothing fired.
    #[inline]
    pub fn open_value(gen: u32) -> u32 {
        gen << STATUS_BITS | OPEN
    }

    /// A counterpart: fires guard `guard` of generation `gen` (`OPEN -> FIRED(guard)`). One
    /// that won then calls [`CellWord::wake`] (the owner may sleep on the word); an in-process
    /// link need not (the engine wakes the owner through its own waker). `guard` is below
    /// [`MAX_GUARDS`] (callers check).
    #[inline]
    pub fn fire(&self, gen: u32, guard: u32) -> Fired {
        debug_assert!((guard as usize) < MAX_GUARDS);
        let fired = gen << STATUS_BITS | (guard + 1);
        match self.word.compare_exchange(
            Self::open_value(gen),
            fired,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Fired::Won,
            Err(now) if now >> STATUS_BITS != gen => Fired::Over,
            Err(_) => Fired::Lost,
        }
    }

    /// Wakes an owner sleeping on the word (after a fire it won, or a close for good).
    #[inline]
    pub fn wake(&self) {
        self.word.wake_all();
    }

    /// The owner: closes generation `gen` so no counterpart can fire it; `Err(guard)` if one
    /// already did (`Err(TAMPERED)`: a value nobody could have written).
    #[inline]
    pub fn close(&self, gen: u32) -> Result<(), usize> {
        match self.try_close(gen) {
            Ok(()) => Ok(()),
            // Not our generation, or open when we expected it open: written over.
            Err(now) if now >> STATUS_BITS != gen || now & STATUS_MASK == OPEN => Err(TAMPERED),
            Err(now) if now & STATUS_MASK == CLOSED => Ok(()),
            Err(now) => Err(((now & STATUS_MASK) - 1) as usize),
        }
    }

    /// An in-process link's close (`crate::Link::close`): `Ok` if closed now, or already
    /// closed, or the selection is over (another generation); `Err(guard)` if `guard` fired.
    #[inline]
    pub fn close_linked(&self, gen: u32) -> Result<(), usize> {
        match self.try_close(gen) {
            Ok(()) => Ok(()),
            Err(now) if now >> STATUS_BITS != gen => Ok(()),
            Err(now) if now & STATUS_MASK == CLOSED => Ok(()),
            Err(now) => Err(((now & STATUS_MASK) - 1) as usize),
        }
    }

    fn try_close(&self, gen: u32) -> Result<(), u32> {
        self.word
            .compare_exchange(
                Self::open_value(gen),
                gen << STATUS_BITS | CLOSED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(drop)
    }

    /// The owner: opens generation `gen` again after closing it for a step (`CLOSED -> OPEN`);
    /// nothing if a counterpart fired before the close.
    #[inline]
    pub fn reopen(&self, gen: u32) {
        let _ = self.word.compare_exchange(
            gen << STATUS_BITS | CLOSED,
            Self::open_value(gen),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The owner: the guard a counterpart fired in generation `gen`, if one did
    /// ([`TAMPERED`]: the word holds another generation, which only a scribble writes).
    #[inline]
    pub fn fired(&self, gen: u32) -> Option<usize> {
        let now = self.word.load(Ordering::Acquire);
        if now >> STATUS_BITS != gen {
            return Some(TAMPERED);
        }
        let s = now & STATUS_MASK;
        (s != OPEN && s != CLOSED).then(|| (s - 1) as usize)
    }

    /// A counterpart looking at generation `gen`: `Some(true)` waiting with nothing fired,
    /// `Some(false)` decided (fired or closing), None: over.
    #[inline]
    pub fn status(&self, gen: u32) -> Option<bool> {
        let now = self.word.load(Ordering::Acquire);
        if now >> STATUS_BITS != gen {
            return None;
        }
        Some(now & STATUS_MASK == OPEN)
    }
}
