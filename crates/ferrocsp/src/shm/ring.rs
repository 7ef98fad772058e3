//! The ring of a shared channel's segment: where its entries are, reserving space at the
//! tail, moving the head, and walking the entries in between.
//!
//! Invariants:
//! - Head and tail are positions that only grow (until an empty ring rewinds to 0); an entry
//!   lies at `pos % data_len`, aligned, and never wraps (a `PAD` entry fills the tail end).
//! - Everything here runs with the segment's lock held.
//! - The segment is untrusted (any process mapping it can write anything): head, tail and the
//!   counts are checked at every lock (`ring_ok`), and a walk reads them once and checks each entry before
//!   it uses it, so a walk ends within one ring's worth of steps and never leaves the mapping.
//!   What does not fit poisons the channel as corrupt (`ShmChannel::corrupt`).

use super::channel::{Guard, ShmChannel, DONE, ENTRY_BYTES, OFFERED, OFFER_PREFIX, RDV_OFFER};
use super::fault::fault_point;
use super::layout::{Entry, ALIGN, ALT_RECORDS, CANCELLED, DATA_OFF, PAD};
use super::sys;
use crate::Error;

/// Dead ring memory is given back in pieces of this size (whole pages; one system call per
/// piece the head moves past, so a few per megabytes of traffic).
const RELEASE_CHUNK: usize = 1 << 21;

/// The furthest a ring position can be: positions only grow by the bytes ever sent through
/// the channel (centuries of traffic to reach this), so one past it is garbage, and every sum
/// of positions and sizes stays far from overflowing.
const POS_MAX: u64 = u64::MAX / 4;

/// The most waiters a count can hold (each is a thread or a task with its stack): a count past
/// it is garbage, and keeps every increment far from overflowing.
const WAITERS_MAX: u32 = u32::MAX / 4;

/// An entry of the ring as read back from the segment: `walk` checked that it fits.
pub(super) struct Seen {
    pub(super) ptr: *mut Entry,
    pub(super) state: u32,
    pub(super) size: u64,
    pub(super) len: u64,
    pub(super) rendezvous: u32,
}

impl ShmChannel {
    pub(super) fn entry(&self, pos: u64) -> *mut Entry {
        let off = DATA_OFF + (pos as usize % self.data_len());
        // SAFETY: off + ENTRY_BYTES lies inside the mapping (entries are aligned and the ring
        // length is a multiple of ALIGN).
        unsafe { self.base().add(off).cast() }
    }

    pub(super) fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: the message follows its entry header inside the ring (it never wraps).
        unsafe { self.entry(pos).cast::<u8>().add(ENTRY_BYTES) }
    }

    /// Moves the head over entries nobody uses any more; rewinds an empty ring.
    pub(super) fn advance(&self, g: &Guard<'_>) {
        let skip =
            self.walk(g, |pos, e| (!matches!(e.state, DONE | CANCELLED | PAD)).then_some(pos));
        let st = g.st();
        let (from, to) = match skip {
            Ok(Some(pos)) => (std::mem::replace(&mut st.head, pos), pos),
            Ok(None) => {
                let dead = (st.head, st.tail);
                st.head = 0;
                fault_point!("ring.rewound");
                st.tail = 0;
                dead
            }
            Err(_) => return, // poisoned: the ring stays as it was found
        };
        fault_point!("ring.advanced");
        self.release(g, from, to);
    }

    /// Gives back to the system the memory of the [`RELEASE_CHUNK`]s of the ring that the
    /// head just left (positions `from..to` died) and that hold no live entry: a channel with a
    /// standing backlog never rewinds, so without this it would touch, and keep, its whole ring
    /// whatever it buffers. A chunk is given back once per lap (while the head is inside it, it
    /// still holds live entries); its pages come back, zeroed, when a writer reaches them again.
    /// Lock held (nobody uses a position outside head..tail).
    fn release(&self, g: &Guard<'_>, from: u64, to: u64) {
        let len = self.data_len() as u64;
        let chunk = RELEASE_CHUNK as u64;
        let (head, tail) = (g.st().head, g.st().tail);
        // The piece the head is in now is kept (after a rewind, the one at offset 0): the next
        // entries go there, and giving it back would cost every message a page fault.
        let keep = (head % len) / chunk;
        let mut p = from;
        let end = to.min(from.saturating_add(len));
        while p < end {
            let off = p % len;
            let start = off / chunk * chunk;
            let stop = (start + chunk).min(len);
            if start / chunk != keep && !Self::live_within(head, tail, len, start, stop) {
                fault_point!("ring.punch");
                // A failure (no hole punching for this memory) only keeps the pages.
                let _ = sys::punch_hole(self.fd(), (DATA_OFF as u64) + start, stop - start);
            }
            p += stop - off;
        }
    }

    /// Whether ring offsets `start..stop` hold any position of `head..tail`.
    fn live_within(head: u64, tail: u64, len: u64, start: u64, stop: u64) -> bool {
        if tail == head {
            return false;
        }
        if tail - head >= len {
            return true;
        }
        let (a, b) = (head % len, tail % len);
        let overlaps = |lo: u64, hi: u64| lo < stop && start < hi;
        if a < b {
            overlaps(a, b)
        } else {
            overlaps(a, len) || overlaps(0, b)
        }
    }

    /// Whether the ring's head and tail and the state's counts are ones the protocol can
    /// produce: head and tail aligned, in order, at most a ring apart and far from overflowing;
    /// no more entries of any kind counted than the ring can hold; waiters and records within
    /// their bounds. A lock hold adds at most a ring's worth to any of them, so no count can
    /// overflow under a lock taken after this check. Lock held.
    pub(super) fn ring_ok(&self, g: &Guard<'_>) -> bool {
        let st = g.st();
        let a = ALIGN as u64;
        let entries = self.data_len() as u64 / a;
        st.head <= st.tail
            && st.tail <= POS_MAX
            && st.tail - st.head <= self.data_len() as u64
            && st.head.is_multiple_of(a)
            && st.tail.is_multiple_of(a)
            && [st.buffered, st.ready, st.writing, st.offers, st.offered]
                .iter()
                .all(|&n| n <= entries)
            && st.readers_waiting <= WAITERS_MAX
            && st.writers_waiting <= WAITERS_MAX
            && st.alt_readers as usize <= ALT_RECORDS
    }

    /// Calls `f` on every entry from the head to the tail until it returns `Some`. Head and
    /// tail are read once, and each entry is checked before it is used ([`Seen`]): a ring a
    /// peer wrote garbage over poisons the channel (`Err(Poisoned)`) instead of sending the
    /// walk outside the mapping or round in circles under the lock. Lock held.
    pub(super) fn walk<T>(
        &self,
        g: &Guard<'_>,
        f: impl FnMut(u64, &Seen) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        self.scan(g, f).map_err(|()| self.corrupt(g))
    }

    /// `walk` without poisoning: `Err(())` at the first thing that does not fit.
    pub(super) fn scan<T>(
        &self,
        g: &Guard<'_>,
        mut f: impl FnMut(u64, &Seen) -> Option<T>,
    ) -> Result<Option<T>, ()> {
        if !self.ring_ok(g) {
            return Err(());
        }
        let (mut pos, tail) = (g.st().head, g.st().tail);
        while pos < tail {
            let e = self.entry(pos);
            // SAFETY: `pos` is aligned and reduced into the ring (`entry`), so the entry
            // header lies in the mapping; the lock is held. Its fields are checked below
            // before anything relies on them.
            let seen = unsafe {
                Seen {
                    ptr: e,
                    state: (*e).state,
                    size: (*e).size,
                    len: (*e).len,
                    rendezvous: (*e).rendezvous,
                }
            };
            if !self.entry_ok(pos, tail, &seen) {
                return Err(());
            }
            if let Some(t) = f(pos, &seen) {
                return Ok(Some(t));
            }
            pos += seen.size;
        }
        Ok(None)
    }

    /// Whether entry `e` at `pos` fits the ring: a whole number of alignment units, inside
    /// the ring without wrapping, before `tail`, and its message inside the entry (after the
    /// cell reference of an offer: an `OFFERED` entry must be one, since whoever finds it
    /// reads that reference).
    fn entry_ok(&self, pos: u64, tail: u64, e: &Seen) -> bool {
        let a = ALIGN as u64;
        let at = pos % self.data_len() as u64;
        let prefix = match e.rendezvous {
            RDV_OFFER => (ENTRY_BYTES + OFFER_PREFIX) as u64,
            _ => ENTRY_BYTES as u64,
        };
        e.size >= a
            && e.size.is_multiple_of(a)
            && e.size <= self.data_len() as u64 - at
            && e.size <= tail - pos
            && (e.state == PAD || e.size.checked_sub(prefix).is_some_and(|room| e.len <= room))
            && (e.state != OFFERED || e.rendezvous == RDV_OFFER)
    }

    /// Takes one from a counter of the segment's state. A counter that is already zero
    /// cannot be (its entry or waiter exists): the segment is corrupt, and is poisoned (the
    /// counter stays zero; the caller goes on, and the next look at the channel fails).
    pub(super) fn dec<N>(&self, g: &Guard<'_>, n: &mut N)
    where
        N: Copy + PartialEq + From<u8> + std::ops::SubAssign,
    {
        if *n == N::from(0) {
            let _ = self.corrupt(g);
        } else {
            *n -= N::from(1);
        }
    }

    /// Reserves `size` bytes at the tail (padding to the ring's start if needed), if they fit.
    pub(super) fn reserve(&self, g: &Guard<'_>, size: usize) -> Option<u64> {
        let st = g.st();
        let len = self.data_len() as u64;
        let used = st.tail - st.head;
        let at = st.tail % len;
        let room_to_end = len - at;
        let pad = if room_to_end < size as u64 { room_to_end } else { 0 };
        if used + pad + size as u64 > len {
            return None;
        }
        if pad > 0 {
            let e = self.entry(st.tail);
            // SAFETY: the pad region is free ring space (checked above); lock held.
            unsafe {
                (*e).size = pad;
                (*e).len = 0;
                (*e).state = PAD;
            }
            st.tail += pad;
        }
        let pos = st.tail;
        st.tail += size as u64;
        fault_point!("ring.reserved");
        Some(pos)
    }
}
