//! Channels in shared memory, for OS processes (Linux).
//!
//! A [`ShmChannel`] lives in one anonymous shared-memory segment (a memfd, mode 0600, never
//! visible in `/dev/shm`) that every process using the channel maps, at whatever address.
//! Messages are byte strings (the Python layer pickles values); waiting uses futexes in the
//! segment, and the lock is a word that names its holder (`lock.rs`), so a process that dies
//! holding it, or a peer that scribbles over it, poisons the channel instead of hanging its
//! peers. No broker process, no helper thread per
//! channel; cooperative waiters (greenlets, asyncio tasks) share a few futex watcher threads per
//! process ([`watch`]).
//!
//! Choice (`Alt`) over shared channels is [`select`]: conditional offers and selection cells in
//! shared memory ([`cells`]), Go's `select` model across processes (not the engine's in-process
//! [`crate::Select`], whose wakers cannot cross a process boundary). An Alt over a mix of
//! both kinds is [`select_mixed`]: the in-process guards run in an engine `Select` whose
//! cell is linked to the shared cell ([`mixed`]), so one word decides.

mod cell_word;
mod cells;
mod channel;
mod end_table;
#[doc(hidden)]
pub mod fault;
mod fork;
#[doc(hidden)]
pub mod fuzz;
mod layout;
mod loan;
mod lock;
mod mixed;
mod offers;
mod owner;
mod remote;
mod ring;
mod select;
mod seq;
mod slot;
mod sys;
mod table;
mod ticket;
mod transfer;
mod wait;
mod waiters;
mod watch;
mod word;

/// The protocol's pure parts (the selection cell's word, the change counter handshake) over
/// any [`proto::Word`]: what the loom models (`tests/loom_shm.rs`) run on model words.
#[doc(hidden)]
pub mod proto {
    pub use super::cell_word::{CellWord, Fired, MAX_GUARDS, TAMPERED};
    pub use super::seq::Seq;
    #[cfg(loom)]
    pub use super::word::ModelWord;
    pub use super::word::Word;
}

#[doc(hidden)]
pub use cells::hold_registry_for_test as hold_cells_for_test;
pub use cells::{drop_dead_peers, CellLink, MAX_GUARDS};
pub use channel::{PoisonCause, ShmChannel, MAX_ENDS};
pub use end_table::EndKind;
pub use fork::{fork_generation, PerProcess};
#[doc(hidden)]
pub use layout::TestLayout;
pub use loan::LoanMem;
pub use mixed::{Local, LocalPart, LocalStep};
pub use select::{select, select_mixed, Fill, SelOp, Selected};
pub use slot::{ReadSlot, WriteSlot};
pub use table::{Proof, SlotView, Table, Verdict, MAX_PROCS};
pub use wait::{slice_was_quiet, Sleeper, Wait};
pub use watch::{watch, watch_quiet, watcher_threads, Quiet, Watch, PER_WATCHER};
