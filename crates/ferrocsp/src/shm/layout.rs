//! The layout of a shared channel's segment: what every process that maps it agrees on.
//!
//! Layout (offsets from the start of the segment, never pointers, so every process may map it
//! at a different address): a [`Header`] in the first page, the end table in the second page,
//! then a byte ring of messages. Each message is an [`Entry`] header followed by its bytes,
//! 64-byte aligned; a message never wraps (a `PAD` entry fills the tail end instead).
//!
//! Invariants:
//! - Everything is `#[repr(C)]` and addressed by offsets, so processes agree on it whatever
//!   their mapping address; a change of layout changes `VERSION`, and `attach` refuses a
//!   segment of another version.
//! - The header fits its page and an entry header fits its alignment (checked at compile time).

use std::sync::atomic::{AtomicU32, AtomicU64};

use super::cells::CellRef;

pub(super) const MAGIC: u64 = 0x6665_7272_6f63_7370; // "ferrocsp"
pub(super) const VERSION: u32 = 5;
pub(super) const HEADER_BYTES: usize = 4096;
/// The most counted ends one shared channel can have over its life.
pub const MAX_ENDS: usize = 4096;
pub(super) const DATA_OFF: usize = HEADER_BYTES + MAX_ENDS;
pub(super) const ALIGN: usize = 64;
pub(super) const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

// Entry states.
pub(super) const WRITING: u32 = 1;
pub(super) const READY: u32 = 2;
pub(super) const READING: u32 = 3;
pub(super) const TAKEN: u32 = 4;
pub(super) const DONE: u32 = 5;
pub(super) const CANCELLED: u32 = 6;
pub(super) const PAD: u32 = 7;
/// A conditional offer: readable only by firing the selection cell it names.
pub(super) const OFFERED: u32 = 8;

// `Entry::rendezvous` values.
pub(super) const RDV_PLAIN: u32 = 1;
/// An offer of a selection: its message starts after an `OFFER_PREFIX` holding its `CellRef`.
pub(super) const RDV_OFFER: u32 = 2;
pub(super) const OFFER_PREFIX: usize = 64;
/// Input guards of waiting selections one channel counts (more still work, uncounted).
pub(super) const ALT_RECORDS: usize = 64;
const _: () = assert!(std::mem::size_of::<CellRef>() <= OFFER_PREFIX);

#[repr(C)]
pub(super) struct State {
    pub(super) head: u64,
    pub(super) tail: u64,
    /// Buffered messages reserved or ready (counted against the capacity).
    pub(super) buffered: u64,
    /// Entries `READY` (offers or buffered messages nobody has claimed).
    pub(super) ready: u64,
    /// Entries `WRITING`.
    pub(super) writing: u64,
    /// Rendezvous entries `WRITING` or `READY`.
    pub(super) offers: u64,
    pub(super) readers_waiting: u32,
    pub(super) writers_waiting: u32,
    /// `AltRecord`s in use.
    pub(super) alt_readers: u32,
    /// Waiting readers counted with no wait record (the table was full: `waiters.rs`).
    pub(super) unowned_readers: u32,
    /// Entries `OFFERED`.
    pub(super) offered: u64,
    pub(super) reader_ends_made: u32,
    pub(super) writer_ends_made: u32,
    pub(super) reader_ends_live: u32,
    pub(super) writer_ends_live: u32,
    pub(super) ends_next: u32,
    /// Waiting writers counted with no wait record.
    pub(super) unowned_writers: u32,
}

/// Processes with threads waiting on one channel at once that the waiting counts attribute
/// (`waiters.rs`); beyond that, a waiter is counted in the totals only.
pub(super) const WAIT_RECORDS: usize = 32;

/// The waiters of one process on this channel (`waiters.rs`): its share of
/// `State::readers_waiting` and `State::writers_waiting`. Free when `pid` is 0.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct WaitRecord {
    pub(super) pid: u32,
    pub(super) readers: u32,
    /// The process's start time (`owner.rs`), so that a reused pid is not taken for it.
    pub(super) start: u64,
    pub(super) writers: u32,
    pub(super) _pad: u32,
}

/// A waiting selection's input guard on this channel.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct AltRecord {
    pub(super) used: u32,
    pub(super) _pad: u32,
    pub(super) cell: CellRef,
}

#[repr(C)]
pub(super) struct Header {
    pub(super) magic: u64,
    pub(super) version: u32,
    pub(super) _pad0: u32,
    pub(super) uuid: [u8; 16],
    pub(super) total_len: u64,
    pub(super) data_len: u64,
    pub(super) capacity: u64,
    pub(super) seq: AtomicU32,
    pub(super) sleepers: AtomicU32,
    pub(super) poisoned: AtomicU32,
    /// Cooperative sleepers (`Wait::coarse`) waiting on this channel: while non-zero, every
    /// private wake-up (an entry's `wake`, a selection cell fired here) also moves `seq`.
    pub(super) coop: AtomicU32,
    /// The segment's lock (`lock.rs`): 0 when free, else the word that names its holder.
    pub(super) lock: AtomicU64,
    pub(super) st: State,
    pub(super) alt: [AltRecord; ALT_RECORDS],
    pub(super) waits: [WaitRecord; WAIT_RECORDS],
}

#[repr(C)]
pub(super) struct Entry {
    /// Bytes this entry occupies in the ring (header, message, alignment).
    pub(super) size: u64,
    /// The message's length.
    pub(super) len: u64,
    pub(super) state: u32,
    pub(super) rendezvous: u32,
    /// A rendezvous writer waiting for its entry to be taken sleeps on this word (and only
    /// it does): bumped when the entry is taken, and for everything that ends such a wait
    /// early (poison, readers retired or leaving).
    pub(super) wake: AtomicU32,
    /// The process that holds the entry while it is `WRITING` (its writer) or `READING` (its
    /// reader), so that a survivor can tell when that process died (`owner.rs`).
    pub(super) owner_pid: u32,
    /// That process's start time (so a reused pid is not taken for it).
    pub(super) owner_start: u64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);
const _: () = assert!(ENTRY_BYTES <= ALIGN);

pub(super) fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Where the fields a hostile peer might scribble over lie in a segment (byte offsets from
/// its start; `entry_*` from an entry's start): only for tests that play that peer.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct TestLayout {
    pub data_len: usize,
    pub capacity: usize,
    pub state: usize,
    pub state_len: usize,
    pub head: usize,
    pub tail: usize,
    pub buffered: usize,
    pub ready: usize,
    pub writing: usize,
    pub offers: usize,
    pub offered: usize,
    pub readers_waiting: usize,
    pub reader_ends_made: usize,
    pub data_off: usize,
    pub entry_size: usize,
    pub entry_len: usize,
    /// The lock word (8 bytes).
    pub lock: usize,
    /// The whole header, the alt records and the wait records (offset, length).
    pub header: (usize, usize),
    pub alt: (usize, usize),
    pub waits: (usize, usize),
    /// The end table (offset, length).
    pub ends: (usize, usize),
    /// The guard number in an offer entry's cell record (from the entry's start).
    pub offer_guard: usize,
    /// The cell record in an offer entry (from the entry's start): its descriptor and slot.
    pub offer_fd: usize,
    pub offer_slot: usize,
    /// A cells segment (`cells.rs`): its header's length and each slot's.
    pub cells_header: usize,
    pub cells_slot: usize,
    /// `writers_waiting` (u32; `readers_waiting` above).
    pub writers_waiting: usize,
    pub entry_state: usize,
    pub entry_owner_pid: usize,
    pub entry_rendezvous: usize,
    pub entry_bytes: usize,
    /// Entry states, as stored in `entry_state`.
    pub entry_ready: u32,
    pub entry_reading: u32,
    pub entry_taken: u32,
    pub entry_offered: u32,
    /// `entry_rendezvous` of an Alt's conditional offer.
    pub rdv_offer: u32,
    /// An offer's message starts this many bytes after its entry header.
    pub offer_prefix: usize,
}

pub(super) const TEST_LAYOUT: TestLayout = {
    use std::mem::{offset_of, size_of};
    let st = offset_of!(Header, st);
    TestLayout {
        data_len: offset_of!(Header, data_len),
        capacity: offset_of!(Header, capacity),
        state: st,
        state_len: size_of::<State>(),
        head: st + offset_of!(State, head),
        tail: st + offset_of!(State, tail),
        buffered: st + offset_of!(State, buffered),
        ready: st + offset_of!(State, ready),
        writing: st + offset_of!(State, writing),
        offers: st + offset_of!(State, offers),
        offered: st + offset_of!(State, offered),
        readers_waiting: st + offset_of!(State, readers_waiting),
        reader_ends_made: st + offset_of!(State, reader_ends_made),
        data_off: DATA_OFF,
        entry_size: offset_of!(Entry, size),
        entry_len: offset_of!(Entry, len),
        lock: offset_of!(Header, lock),
        header: (0, size_of::<Header>()),
        alt: (offset_of!(Header, alt), size_of::<[AltRecord; ALT_RECORDS]>()),
        waits: (offset_of!(Header, waits), size_of::<[WaitRecord; WAIT_RECORDS]>()),
        ends: (HEADER_BYTES, MAX_ENDS),
        offer_guard: ENTRY_BYTES + offset_of!(CellRef, guard),
        offer_fd: ENTRY_BYTES + offset_of!(CellRef, fd),
        offer_slot: ENTRY_BYTES + offset_of!(CellRef, slot),
        cells_header: super::cells::HEADER,
        cells_slot: super::cells::SLOT_BYTES,
        writers_waiting: st + offset_of!(State, writers_waiting),
        entry_state: offset_of!(Entry, state),
        entry_owner_pid: offset_of!(Entry, owner_pid),
        entry_rendezvous: offset_of!(Entry, rendezvous),
        entry_bytes: ENTRY_BYTES,
        entry_ready: READY,
        entry_reading: READING,
        entry_taken: TAKEN,
        entry_offered: OFFERED,
        rdv_offer: RDV_OFFER,
        offer_prefix: OFFER_PREFIX,
    }
};
