//! Starting a transfer on a shared channel: a writer reserves an entry ([`WriteSlot`]), a
//! reader claims one ([`ReadSlot`]); `slot.rs` finishes both with the lock released.
//!
//! Invariants:
//! - Entries are reserved and claimed only under the segment's lock; a reserved entry is
//!   `WRITING`, a claimed one `READING`, and the counters of `State` move with them.
//! - A reader takes an `OFFERED` entry only by firing its selection's cell (`cells::fire`)
//!   under this channel's lock, and never its own selection's offer.
//! - A wait re-checks poison, retirement and its deadline each time it wakes, so it ends with
//!   the channel's state, never on a stale one.
//! - A waiter is counted (`readers_waiting`, `writers_waiting`) with its process as owner
//!   (`waiters.rs`) from just before it sleeps until it holds the lock again (`sleep`).

use std::time::Instant;

use super::cells::{self, CellRef, Fire};
use super::channel::{Guard, ShmChannel};
use super::fault::fault_point;
use super::layout::{round_up, ENTRY_BYTES, OFFERED, RDV_PLAIN, READING, READY, WRITING};
use super::slot::{ReadSlot, WriteSlot};
use super::ticket::Side;
use super::wait::Wait;
use crate::Error;

impl ShmChannel {
    /// Claims the first message a reader may take (`READING`): a `READY` entry, or an
    /// `OFFERED` one whose selection this reader fires (skipping offers of `own`, the reader's
    /// own selection, and withdrawing offers of selections that are gone). Lock held.
    pub(super) fn claim(
        &self,
        g: &Guard<'_>,
        own: Option<&CellRef>,
    ) -> Result<Option<ReadSlot<'_>>, Error> {
        let st = g.st();
        // After every reader end retired nothing is read any more (as in process, where the
        // buffer is dropped): what is left waits for the segment to go.
        if (st.ready == 0 && st.offered == 0) || Self::readers_gone(st) {
            return Ok(None);
        }
        let found = self.walk(g, |pos, e| {
            let st = g.st();
            // The counts this claim takes from must hold the entry: checked before an offer's
            // cell is fired, so a corrupt count never leaves a selection chosen for nothing.
            let (from, to) = match e.state {
                READY => (st.ready, if e.rendezvous != 0 { st.offers } else { st.buffered }),
                OFFERED => (st.offered, st.offers),
                _ => return None,
            };
            if from == 0 || to == 0 {
                return Some(Err(None));
            }
            let won = match e.state {
                READY => true,
                _ => {
                    let cell = self.offer_cell(pos);
                    if !cell.plausible() {
                        return Some(Err(None));
                    }
                    if own.is_some_and(|o| o.same_cell(&cell)) {
                        false
                    } else {
                        match cells::fire(&cell) {
                            Fire::Won => {
                                self.changed_for_coop(g);
                                true
                            }
                            Fire::Lost => false,
                            Fire::Dead => {
                                self.withdraw_entry(g, pos);
                                false
                            }
                            // Its writer may be alive: leave the offer, fail this read.
                            Fire::Failed(err) => return Some(Err(Some(err))),
                        }
                    }
                }
            };
            won.then_some(Ok((pos, e.state, e.rendezvous, e.len as usize, e.ptr)))
        })?;
        let (pos, state, kind, len, e) = match found {
            None => return Ok(None),
            Some(Err(None)) => return Err(self.corrupt(g)),
            Some(Err(Some(err))) => return Err(err),
            Some(Ok(found)) => found,
        };
        let st = g.st();
        if state == READY {
            st.ready -= 1;
        } else {
            st.offered -= 1;
        }
        // Its writer, recorded when it reserved the entry: the one process whose memory a
        // remote message may be read from (`remote.rs`).
        let writer = self.holder(e, g);
        // Its reader first, then the state that names it (see `owner.rs`).
        self.hold(e, g);
        // SAFETY: a checked entry of the ring (`walk`); lock held.
        unsafe { (*e).state = READING };
        fault_point!("read.claimed");
        if kind != 0 {
            // A plain writer waits for TAKEN, not for this: no wake-up yet.
            st.offers -= 1;
        } else {
            st.buffered -= 1;
            self.changed(g); // room for a writer waiting on the capacity
        }
        Ok(Some(ReadSlot { ch: self, pos, len, kind, writer, finished: false }))
    }

    /// Starts writing a message of `len` bytes: waits for room (buffered) or, with `nowait`
    /// on a rendezvous channel, checks that a reader is waiting. Fill `WriteSlot::buf`, then
    /// `commit`; dropping the slot withdraws the message.
    pub fn begin_write(&self, len: usize, w: &mut Wait<'_>) -> Result<WriteSlot<'_>, Error> {
        self.reserve_message(len, w, false)
    }

    /// `begin_write` for a buffered channel that ignores the capacity (never blocks on it):
    /// for values that were already accepted elsewhere (a channel moving here with its
    /// buffer).
    pub fn begin_write_adopted(&self, len: usize) -> Result<WriteSlot<'_>, Error> {
        self.reserve_message(len, &mut Wait::nowait(), true)
    }

    fn reserve_message(
        &self,
        len: usize,
        w: &mut Wait<'_>,
        adopted: bool,
    ) -> Result<WriteSlot<'_>, Error> {
        let size = round_up(ENTRY_BYTES + len);
        if size > self.data_len() {
            return Err(Error::TooLarge { len, max: self.max_message() });
        }
        let rendezvous = self.capacity() == 0;
        let mut g = self.lock_waiting(w)?;
        let mut first = true;
        loop {
            if self.is_poisoned() {
                return Err(Error::Poisoned);
            }
            let st = g.st();
            // After every writer end retired the stream takes no more values (as in process:
            // looked at when the write starts, so one already waiting still completes).
            let ended = first && !adopted && Self::writers_gone(st);
            if ended || Self::readers_gone(st) {
                return Err(Error::Retired);
            }
            first = false;
            let slot_ok = if adopted {
                !rendezvous
            } else if rendezvous {
                !w.nowait || u64::from(st.readers_waiting) > st.offers
            } else {
                st.buffered < self.capacity() as u64
            };
            if slot_ok {
                if let Some(pos) = self.reserve(&g, size) {
                    let st = g.st();
                    let e = self.entry(pos);
                    self.hold(e, &g);
                    // SAFETY: freshly reserved ring space; lock held.
                    unsafe {
                        (*e).size = size as u64;
                        (*e).len = len as u64;
                        (*e).state = WRITING;
                        (*e).rendezvous = if rendezvous { RDV_PLAIN } else { 0 };
                    }
                    st.writing += 1;
                    if rendezvous {
                        st.offers += 1;
                    } else {
                        st.buffered += 1;
                    }
                    return Ok(WriteSlot { ch: self, pos, len, rendezvous, committed: false });
                }
            }
            if w.nowait {
                return Err(Error::WouldBlock);
            }
            if w.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout);
            }
            let ticket = self.wait_begin(&g, Side::Writer);
            let (g2, interrupted) = self.sleep(g, w, ticket)?;
            g = g2;
            if interrupted {
                return Err(Error::Interrupted);
            }
        }
    }

    /// Waits for a message and claims it. Read `ReadSlot::buf`, then `finish`; dropping the
    /// slot unread puts the message back.
    pub fn begin_read(&self, w: &mut Wait<'_>) -> Result<ReadSlot<'_>, Error> {
        let mut g = self.lock_waiting(w)?;
        let mut waited = false;
        loop {
            if self.is_poisoned() {
                return Err(Error::Poisoned);
            }
            if let Some(slot) = self.claim(&g, None)? {
                return Ok(slot);
            }
            let st = g.st();
            // Retirement is one state of the channel, whichever side's ends all retired (as
            // in process): a read through the channel drains, then fails.
            let gone = Self::writers_gone(st) || Self::readers_gone(st);
            let why = if gone && st.writing == 0 {
                Some(Error::Retired)
            } else if w.nowait {
                Some(Error::WouldBlock)
            } else if w.deadline.is_some_and(|d| Instant::now() >= d) {
                Some(Error::Timeout)
            } else {
                None
            };
            if let Some(e) = why {
                if waited {
                    // Leaving for good: a nowait writer, or a selection whose output guard
                    // counted on us, re-checks.
                    self.wake_offers(&g);
                    self.changed(&g);
                }
                return Err(e);
            }
            let ticket = self.wait_begin(&g, Side::Reader);
            if !waited {
                // A reader arrives: an Alt offering an output here may now fire. Going back to
                // sleep after a wake-up changes nothing others can see (the count went down
                // and up under one lock hold), and announcing it would wake every other
                // sleeper, which would announce in turn: two blocked readers kept each other
                // busy that way.
                self.changed(&g);
            }
            let (g2, interrupted) = self.sleep(g, w, ticket)?;
            g = g2;
            waited = true;
            if interrupted {
                self.wake_offers(&g);
                self.changed(&g);
                return Err(Error::Interrupted);
            }
        }
    }
}
