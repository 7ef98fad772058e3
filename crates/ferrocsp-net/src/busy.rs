//! What one process contributes to a networked channel's `stats()` survey (`stats.rs`): its
//! reads and writes in progress on the channel, and the survey's question on the control
//! subject. The bottom of the survey: it depends on nothing of the crate, so `chan.rs` (which
//! answers surveys) and `stats.rs` (which asks them) both point down to it.
//!
//! Invariant: an operation is counted from the call that starts it until its task ends
//! (`stats::BusyGuard`, dropped on every path), so a count never stays raised by an operation
//! that is over.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The survey's payload on the control subject (other control messages have no reply inbox).
pub(crate) const STATS_ASK: &[u8] = b"stats?";

/// Reads and writes of this process in progress on one channel (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Busy {
    readers: AtomicUsize,
    writers: AtomicUsize,
}

impl Busy {
    fn counter(&self, reader: bool) -> &AtomicUsize {
        if reader {
            &self.readers
        } else {
            &self.writers
        }
    }

    pub(crate) fn add(&self, reader: bool) {
        self.counter(reader).fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn sub(&self, reader: bool) {
        self.counter(reader).fetch_sub(1, Ordering::AcqRel);
    }

    /// (reads, writes) in progress now.
    pub(crate) fn now(&self) -> (usize, usize) {
        (self.readers.load(Ordering::Acquire), self.writers.load(Ordering::Acquire))
    }
}
