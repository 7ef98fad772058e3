//! A consistent snapshot of a channel's state, taken under its lock.

/// Counters describing a channel at one instant (see [`crate::Channel::stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Stats {
    /// 0 for a rendezvous channel.
    pub capacity: usize,
    /// Values in the buffer.
    pub buffered: usize,
    /// Readers (including Alts) blocked on the channel.
    pub readers_waiting: usize,
    /// Writers (including Alts) blocked on the channel.
    pub writers_waiting: usize,
    /// Reader ends made and not yet retired.
    pub reader_ends: usize,
    /// Writer ends made and not yet retired.
    pub writer_ends: usize,
    /// Whether the channel is poisoned.
    pub poisoned: bool,
    /// Whether every counted writer end, or every counted reader end, has retired.
    pub retired: bool,
}
