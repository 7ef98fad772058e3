//! Channels in shared memory, for OS processes (Linux).
//!
//! A [`ShmChannel`] lives in one anonymous shared-memory segment (a memfd, mode 0600, never
//! visible in `/dev/shm`) that every process using the channel maps, at whatever address.
//! Messages are byte strings (the Python layer pickles values); waiting uses futexes in the
//! segment, and the lock is a robust process-shared mutex, so a process that dies holding it
//! poisons the channel instead of hanging its peers. No broker process, no helper thread.
//!
//! Choice (Alt) over shared channels is not part of the engine's [`crate::Select`] yet.

mod channel;
mod sys;

pub use channel::{EndKind, ReadSlot, ShmChannel, ShmError, ShmStats, Wait, WriteSlot, MAX_ENDS};
