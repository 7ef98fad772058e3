//! Where a waiting operation was counted (`waiters.rs`), kept by the waiter until it takes
//! itself off the counts, or handed to the next lock holder of its process when it leaves
//! without the lock (`ShmChannel::sleep`).
//!
//! Invariants:
//! - A ticket is made only by `wait_begin` and spent exactly once, by `wait_end`, in the
//!   process that made it (a child made by `fork` never inherits its parent's: `channel.rs`).

/// Which count a waiter is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Reader,
    Writer,
}

/// Where a waiter was counted: its process's record (None: the table was full; in the total
/// only).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket {
    pub(super) side: Side,
    pub(super) record: Option<usize>,
}
