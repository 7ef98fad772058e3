//! What a waiting selection leaves in a channel's segment: conditional offers (an `OFFERED`
//! ring entry per output guard on a rendezvous channel, naming the selection's cell) and input
//! records (an `AltRecord` per input guard, counted as a waiting reader), with the checks a
//! selection's step makes (`select.rs`).
//!
//! Invariants (see `channel.rs` and `select.rs`):
//! - Every function here runs with the channel's lock held (a `Guard`), except the copy into
//!   a reserved offer (`offer_buf`), which only its selection touches while it is `WRITING`.
//! - An offer or record whose selection is gone (its cell's owner died, or its segment can no
//!   longer be attached) is withdrawn by whoever finds it; nothing is delivered from it.

use super::cells::{self, CellRef};
use super::channel::{
    round_up, AltRecord, Guard, ShmChannel, ALT_RECORDS, CANCELLED, ENTRY_BYTES, OFFERED,
    OFFER_PREFIX, RDV_OFFER, READY, WRITING,
};
use super::fault::fault_point;
use super::slot::WriteSlot;
use crate::Error;

impl ShmChannel {
    /// The cell named by offer entry `pos`.
    pub(super) fn offer_cell(&self, pos: u64) -> CellRef {
        // SAFETY: an offer's payload starts with its CellRef (written before it was OFFERED).
        unsafe { std::ptr::read_unaligned(self.payload(pos).cast::<CellRef>()) }
    }

    /// Withdraws entry `pos` (a message nobody took: `WRITING`, `READY` or `OFFERED`). Lock
    /// held.
    pub(super) fn withdraw_entry(&self, g: &Guard<'_>, pos: u64) {
        let st = g.st();
        let e = self.entry(pos);
        // SAFETY: an entry between head and tail (`entry` keeps any position in the ring);
        // lock held.
        let (state, kind) = unsafe { ((*e).state, (*e).rendezvous) };
        match state {
            WRITING => self.dec(g, &mut st.writing),
            READY => self.dec(g, &mut st.ready),
            OFFERED => self.dec(g, &mut st.offered),
            _ => return,
        }
        if kind != 0 {
            self.dec(g, &mut st.offers);
        } else {
            self.dec(g, &mut st.buffered);
        }
        // SAFETY: as above.
        unsafe { (*e).state = CANCELLED };
        self.advance(g);
        self.changed(g);
    }

    /// Withdraws the offer its selection (`cell`) made at `pos`, if it is still there: a
    /// counterpart may have withdrawn it already (its selection looked dead to it), and the
    /// ring may since have put another writer's entry at `pos`, which must not be touched.
    /// Lock held.
    pub(super) fn withdraw_own_offer(&self, g: &Guard<'_>, pos: u64, cell: &CellRef) {
        let st = g.st();
        if pos < st.head || pos >= st.tail {
            return;
        }
        let e = self.entry(pos);
        // SAFETY: a position between head and tail that this selection reserved (aligned);
        // lock held. Only compared, never trusted beyond that.
        let (state, kind) = unsafe { ((*e).state, (*e).rendezvous) };
        if kind == RDV_OFFER
            && matches!(state, WRITING | OFFERED)
            && self.offer_cell(pos).same_cell(cell)
        {
            self.withdraw_entry(g, pos);
        }
    }

    /// Whether our selection's (`cell`) published offer at `pos` is still `OFFERED` there, as
    /// nobody took it. Lock held.
    pub(super) fn still_offered(&self, g: &Guard<'_>, pos: u64, cell: &CellRef) -> bool {
        let st = g.st();
        if pos < st.head || pos >= st.tail {
            return false;
        }
        let e = self.entry(pos);
        // SAFETY: a position between head and tail that this selection reserved (aligned);
        // lock held. Only compared.
        let (state, kind) = unsafe { ((*e).state, (*e).rendezvous) };
        kind == RDV_OFFER && state == OFFERED && self.offer_cell(pos).same_cell(cell)
    }

    /// Reserves a conditional offer of a `len`-byte message for `cell` (`WRITING`: invisible
    /// to readers until `publish_offer`); fill it with `offer_buf`. None: no ring space now.
    pub(super) fn reserve_offer(&self, len: usize, cell: &CellRef) -> Result<Option<u64>, Error> {
        let size = round_up(ENTRY_BYTES + OFFER_PREFIX + len);
        if size > self.data_len() {
            return Err(Error::TooLarge { len, max: self.max_message() - OFFER_PREFIX });
        }
        let g = self.lock()?;
        let Some(pos) = self.reserve(&g, size) else { return Ok(None) };
        let e = self.entry(pos);
        self.hold(e, &g);
        // SAFETY: freshly reserved ring space; lock held.
        unsafe {
            (*e).size = size as u64;
            (*e).len = len as u64;
            (*e).state = WRITING;
            (*e).rendezvous = RDV_OFFER;
            std::ptr::write_unaligned(self.payload(pos).cast::<CellRef>(), *cell);
        }
        let st = g.st();
        st.writing += 1;
        st.offers += 1;
        Ok(Some(pos))
    }

    /// The `len` message bytes of offer `pos`, reserved by this caller (`reserve_offer(len,
    /// ..)`) and still `WRITING`. The length is the caller's, never read back from the segment.
    #[allow(clippy::mut_from_ref)] // the entry is reserved for the caller alone
    pub(super) fn offer_buf(&self, pos: u64, len: usize) -> &mut [u8] {
        // SAFETY: the entry is ours (WRITING), reserved with room for the prefix and `len`
        // bytes, inside the ring.
        unsafe { std::slice::from_raw_parts_mut(self.payload(pos).add(OFFER_PREFIX), len) }
    }

    /// Publishes reserved offer `pos` (`OFFERED`); lock held.
    pub(super) fn publish_offer(&self, g: &Guard<'_>, pos: u64) {
        let st = g.st();
        self.dec(g, &mut st.writing);
        st.offered += 1;
        // SAFETY: our reserved entry; lock held.
        unsafe { (*self.entry(pos)).state = OFFERED };
    }

    /// Reserves a buffered message of `len` bytes if the capacity and ring allow it now (a
    /// fired output guard: fill it, then commit); lock held.
    pub(super) fn reserve_buffered(&self, g: &Guard<'_>, len: usize) -> Option<WriteSlot<'_>> {
        let size = round_up(ENTRY_BYTES + len);
        if self.capacity() == 0 || g.st().buffered >= self.capacity() as u64 {
            return None;
        }
        let pos = self.reserve(g, size)?;
        let e = self.entry(pos);
        self.hold(e, g);
        // SAFETY: freshly reserved ring space; lock held.
        unsafe {
            (*e).size = size as u64;
            (*e).len = len as u64;
            (*e).state = WRITING;
            (*e).rendezvous = 0;
        }
        let st = g.st();
        st.writing += 1;
        st.buffered += 1;
        Some(WriteSlot { ch: self, pos, len, rendezvous: false, committed: false })
    }

    /// Whether nothing can ever be read here any more: no message and every writer retired,
    /// or every reader retired (`claim` takes nothing then).
    pub(super) fn input_dead(&self, g: &Guard<'_>) -> bool {
        let st = g.st();
        Self::readers_gone(st)
            || Self::writers_gone(st) && st.writing == 0 && st.ready == 0 && st.offered == 0
    }

    /// Whether nothing can ever be written here any more: every reader retired, or every
    /// writer (a retired stream takes no more values, as in process).
    pub(super) fn output_dead(&self, g: &Guard<'_>) -> bool {
        let st = g.st();
        Self::readers_gone(st) || Self::writers_gone(st)
    }

    /// Whether a reader blocked in a plain read waits with no message to take but one of
    /// `own` offers: an output guard here is as good as ready. Lock held.
    /// A reader that died asleep is not one: the counts are checked against their owners
    /// (`waiters.rs`) when they would make the output wait, at most once per `PEER_CHECK`.
    pub(super) fn idle_reader(&self, g: &Guard<'_>, own: u64) -> bool {
        let idle = |st: &super::layout::State| u64::from(st.readers_waiting) + own > st.offers;
        if !idle(g.st()) {
            return false;
        }
        self.look_for_dead_waiters(g);
        idle(g.st())
    }

    /// Records a waiting selection's input guard (counted as a waiting reader). None: the
    /// record table is full (the selection still works, uncounted). Lock held.
    pub(super) fn add_record(&self, g: &Guard<'_>, cell: &CellRef) -> Option<usize> {
        // SAFETY: the record table is only touched under the lock, which `g` holds.
        let recs = unsafe { &mut (*self.hdr()).alt };
        let i = recs.iter().position(|r| r.used == 0)?;
        recs[i] = AltRecord { used: 1, _pad: 0, cell: *cell };
        g.st().alt_readers += 1;
        fault_point!("alt.record");
        self.changed(g); // an Alt offering an output here may now see a reader
        Some(i)
    }

    /// Removes record `i`; lock held.
    pub(super) fn remove_record(&self, g: &Guard<'_>, i: usize) {
        // SAFETY: as in `add_record`.
        let recs = unsafe { &mut (*self.hdr()).alt };
        if let Some(r) = recs.get_mut(i) {
            if r.used != 0 {
                r.used = 0;
                self.dec(g, &mut g.st().alt_readers);
            }
        }
    }

    /// Removes record `i` that selection `cell` made, if it is still that selection's: a
    /// counterpart may have removed it (the selection looked dead to it) and another
    /// selection taken the slot since. Lock held.
    pub(super) fn remove_own_record(&self, g: &Guard<'_>, i: usize, cell: &CellRef) {
        // SAFETY: as in `add_record`.
        let recs = unsafe { &(*self.hdr()).alt };
        if recs.get(i).is_some_and(|r| r.used != 0 && r.cell.same_cell(cell)) {
            self.remove_record(g, i);
        }
    }

    /// (live records, live open offers), dropping records and offers of selections that are
    /// gone; lock held.
    pub(super) fn alt_waiting(&self, g: &Guard<'_>) -> (usize, usize) {
        let mut readers = 0;
        if g.st().alt_readers > 0 {
            for i in 0..ALT_RECORDS {
                // SAFETY: as in `add_record`.
                let r = unsafe { (*self.hdr()).alt[i] };
                if r.used == 0 {
                    continue;
                }
                if r.used != 1 || !r.cell.plausible() {
                    // Not a record `add_record` made: the header is corrupt.
                    let _ = self.corrupt(g);
                    return (readers, 0);
                }
                match cells::status(&r.cell) {
                    Some(true) => readers += 1,
                    Some(false) => {}
                    None => self.remove_record(g, i),
                }
            }
        }
        let mut writers = 0;
        if g.st().offered > 0 {
            // A corrupt ring poisons the channel; what was counted so far stands.
            let _ = self.walk(g, |pos, e| {
                if e.state == OFFERED {
                    let cell = self.offer_cell(pos);
                    if !cell.plausible() {
                        let _ = self.corrupt(g);
                        return Some(());
                    }
                    match cells::status(&cell) {
                        Some(true) => writers += 1,
                        Some(false) => {}
                        None => self.withdraw_entry(g, pos),
                    }
                }
                None::<()>
            });
        }
        (readers, writers)
    }

    /// Rendezvous offers a reader could take now (`READY`). An offer still being copied in
    /// (`WRITING`) is not one yet, and one being read has met its reader: `stats()` counts
    /// neither as a waiting writer, as an in-process channel would not.
    pub(super) fn ready_offers(&self, g: &Guard<'_>) -> u64 {
        let st = g.st();
        if st.ready == 0 || st.offers == 0 {
            return 0;
        }
        let mut n = 0;
        let _ = self.walk(g, |_, e| {
            if e.state == READY && e.rendezvous != 0 {
                n += 1;
            }
            None::<()>
        });
        n
    }
}
