//! A message in flight: the writer's reserved entry ([`WriteSlot`]) and the reader's claimed
//! one ([`ReadSlot`]), each copied with the segment's lock released.
//!
//! Invariants (the entry states of `channel.rs`):
//! - A `WriteSlot` owns a `WRITING` entry until `commit` publishes it (`READY`) or dropping it
//!   withdraws it (`CANCELLED`); a rendezvous commit returns only once a reader `TAKEN` it (then
//!   `DONE`), or withdraws a still `READY` entry on timeout, interrupt, poison or retirement.
//! - A `ReadSlot` owns a `READING` entry until `finish` releases it (`TAKEN` for a rendezvous
//!   writer to see, else `DONE`) or dropping it puts it back (`READY`). Only a plain
//!   rendezvous writer waits for that release: any other message is the reader's once claimed,
//!   whatever `finish` then finds.
//! - Every state change happens under the segment's lock.

use std::time::Instant;

use super::channel::{
    Guard, ShmChannel, CANCELLED, DONE, OFFER_PREFIX, RDV_OFFER, RDV_PLAIN, READY, TAKEN,
};
use super::fault::fault_point;
use super::layout::READING;
use super::sys::ProcId;
use super::wait::Wait;
use super::wait::{PEER_CHECK, PEER_IDLE};
use crate::Error;

/// A message being written (see [`ShmChannel::begin_write`]).
#[derive(Debug)]
pub struct WriteSlot<'a> {
    pub(super) ch: &'a ShmChannel,
    pub(super) pos: u64,
    pub(super) len: usize,
    pub(super) rendezvous: bool,
    pub(super) committed: bool,
}

impl WriteSlot<'_> {
    /// The message's bytes, to fill (the lock is not held: copy freely).
    pub fn buf(&mut self) -> &mut [u8] {
        fault_point!("write.buf");
        // SAFETY: the reserved entry is ours alone until committed or withdrawn.
        unsafe { std::slice::from_raw_parts_mut(self.ch.payload(self.pos), self.len) }
    }

    fn set_state(&self, state: u32) {
        // SAFETY: our entry; callers hold the lock.
        unsafe { (*self.ch.entry(self.pos)).state = state }
    }

    fn state(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.ch.entry(self.pos)).state }
    }

    /// Withdraws a `WRITING` or `READY` entry; lock held.
    fn withdraw(&self, g: &Guard<'_>, was_ready: bool) {
        let (st, ch) = (g.st(), self.ch);
        if was_ready {
            ch.dec(g, &mut st.ready);
        } else {
            ch.dec(g, &mut st.writing);
        }
        if self.rendezvous {
            ch.dec(g, &mut st.offers);
        } else {
            ch.dec(g, &mut st.buffered);
        }
        self.set_state(CANCELLED);
        self.ch.advance(g);
        self.ch.changed(g);
    }

    /// Publishes the message. A buffered write is then done; a rendezvous write waits (per
    /// `w`) until a reader has taken it, and withdraws it on timeout, interrupt, poison or
    /// retirement, in which case nothing was sent.
    pub fn commit(self, w: &mut Wait<'_>) -> Result<(), Error> {
        self.commit_then(w, |_| ())
    }

    /// `commit`, and for a rendezvous write, `taken(message)` once a reader has taken it
    /// (under the lock, before the entry can be reused: a reader may have left a mark in the
    /// message's bytes). A buffered write calls `taken(&[])` once published.
    pub fn commit_then<T>(
        mut self,
        w: &mut Wait<'_>,
        taken: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, Error> {
        self.committed = true;
        let ch = self.ch;
        let mut g = ch.lock()?;
        fault_point!("write.commit");
        if ch.is_poisoned() {
            self.withdraw(&g, false);
            return Err(Error::Poisoned);
        }
        if ShmChannel::readers_gone(g.st()) {
            self.withdraw(&g, false);
            return Err(Error::Retired);
        }
        let st = g.st();
        ch.dec(&g, &mut st.writing);
        st.ready += 1;
        self.set_state(READY);
        ch.changed(&g);
        fault_point!("write.ready");
        if !self.rendezvous {
            return Ok(taken(&[]));
        }
        let mut reading_since: Option<Instant> = None;
        loop {
            match self.state() {
                TAKEN => {
                    fault_point!("write.taken");
                    // SAFETY: our entry, taken and not yet released: nobody else touches it.
                    let msg = unsafe { std::slice::from_raw_parts(ch.payload(self.pos), self.len) };
                    let out = taken(msg);
                    self.set_state(DONE);
                    ch.advance(&g);
                    if g.st().writers_waiting > 0 {
                        ch.changed(&g); // ring space for a writer waiting for it
                    }
                    return Ok(out);
                }
                READY => {
                    if w.nowait {
                        // The reader we count on may have died asleep (`waiters.rs`).
                        ch.look_for_dead_waiters(&g);
                    }
                    let st = g.st();
                    let why = if ch.is_poisoned() {
                        Some(Error::Poisoned)
                    } else if ShmChannel::readers_gone(st) {
                        Some(Error::Retired)
                    } else if w.nowait && st.readers_waiting == 0 {
                        Some(Error::WouldBlock)
                    } else if w.deadline.is_some_and(|d| Instant::now() >= d) {
                        Some(Error::Timeout)
                    } else {
                        None
                    };
                    if let Some(e) = why {
                        self.withdraw(&g, true);
                        return Err(e);
                    }
                }
                // READING: a reader is copying it; it will be TAKEN shortly, unless the reader
                // died doing so (`owner.rs`): then the value is lost with it, and the channel
                // poisoned, the one outcome that tells this writer the truth.
                _ => {
                    // Only a copy that takes long is looked into: a look reads `/proc`, and a
                    // live reader is usually done long before `PEER_CHECK`.
                    let since = *reading_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= PEER_CHECK && !ch.holder_alive(ch.entry(self.pos), &g) {
                        // The entry stays READING: the poisoned channel is never read again.
                        return Err(ch.peer_died(&g));
                    }
                }
            }
            // A reader claims the entry without waking us (that would cost every rendezvous a
            // system call), so even before it is READING this wait looks again now and then;
            // while a reader copies the value, every `PEER_CHECK`.
            // A cooperative sleeper looks only while a reader copies (a deadline costs it a
            // wake-up of the watcher thread on every write); before that, a crashed reader's
            // channel is poisoned by its parent (`backend="os"`), which wakes it.
            let cap = if self.state() == READING || w.nowait {
                Some(Instant::now() + PEER_CHECK)
            } else if w.coarse() {
                None
            } else {
                Some(Instant::now() + PEER_IDLE)
            };
            // SAFETY: our entry stays in the ring until we mark it DONE or CANCELLED.
            let word = unsafe { &(*ch.entry(self.pos)).wake };
            let (g2, interrupted) = ch.sleep_on(g, word, w, cap)?;
            g = g2;
            if interrupted && self.state() == READY {
                self.withdraw(&g, true);
                return Err(Error::Interrupted);
            }
        }
    }
}

impl Drop for WriteSlot<'_> {
    fn drop(&mut self) {
        if !self.committed {
            if let Ok(g) = self.ch.lock() {
                self.withdraw(&g, false);
            }
        }
    }
}

/// A message being read (see [`ShmChannel::begin_read`]).
#[derive(Debug)]
pub struct ReadSlot<'a> {
    pub(super) ch: &'a ShmChannel,
    pub(super) pos: u64,
    pub(super) len: usize,
    /// The entry's `rendezvous` value (0, `RDV_PLAIN`, `RDV_OFFER`).
    pub(super) kind: u32,
    /// The entry's holder when it was claimed: its writer (`owner.rs`).
    pub(super) writer: ProcId,
    pub(super) finished: bool,
}

impl ReadSlot<'_> {
    /// The message's bytes (the lock is not held: copy freely).
    pub fn buf(&self) -> &[u8] {
        fault_point!("read.buf");
        // SAFETY: the claimed entry is ours alone until finished or put back.
        unsafe { std::slice::from_raw_parts(self.msg(), self.len) }
    }

    fn msg(&self) -> *mut u8 {
        let skip = if self.kind == RDV_OFFER { OFFER_PREFIX } else { 0 };
        // SAFETY: an offer's message follows its prefix inside the entry.
        unsafe { self.ch.payload(self.pos).add(skip) }
    }

    /// The message's bytes, writable: a reader may leave a mark for a rendezvous writer,
    /// which sees it in `WriteSlot::commit_then`.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: the claimed entry is ours alone until finished or put back.
        unsafe { std::slice::from_raw_parts_mut(self.msg(), self.len) }
    }

    /// Releases the message: taken (a rendezvous writer completes). A message nobody waits
    /// for (buffered, or an Alt's fired offer: its writer was told it was sent) is the
    /// reader's once claimed: a channel that can no longer be locked (found inconsistent,
    /// hence poisoned) does not take it back.
    pub fn finish(mut self) -> Result<(), Error> {
        self.finished = true;
        let g = match self.ch.lock() {
            Ok(g) => g,
            Err(_) if self.kind != RDV_PLAIN => return Ok(()),
            Err(e) => return Err(e),
        };
        fault_point!("read.finish");
        let e = self.ch.entry(self.pos);
        if self.kind == RDV_PLAIN {
            // SAFETY: our claimed entry; lock held.
            unsafe { (*e).state = TAKEN };
            fault_point!("read.released");
            self.ch.wake_entry(e, &g); // its writer, and only it
        } else {
            // SAFETY: as above.
            unsafe { (*e).state = DONE };
            fault_point!("read.released");
            self.ch.advance(&g);
            if g.st().writers_waiting > 0 {
                self.ch.changed(&g); // ring space
            }
        }
        Ok(())
    }
}

impl ReadSlot<'_> {
    /// Puts the unread message back (`READY`, held by its writer again). Lock held.
    fn put_back(&self, g: &Guard<'_>) {
        let st = g.st();
        st.ready += 1;
        // A fired offer put back is a plain message now: its selection chose it.
        if self.kind != 0 {
            st.offers += 1;
        } else {
            st.buffered += 1;
        }
        let e = self.ch.entry(self.pos);
        // SAFETY: our claimed entry; lock held.
        unsafe { (*e).state = READY };
        self.ch.hold_for(e, self.writer, g);
        self.ch.changed(g);
    }

    /// The message breaks the channel's rules (a length, count or origin its writer cannot
    /// have produced): puts it back unread and poisons the channel as corrupt
    /// ([`super::PoisonCause::Corrupt`]), so a rendezvous writer waiting for it withdraws it
    /// and nobody reads it again. Returns the error for the caller.
    pub fn corrupt(mut self) -> Error {
        self.finished = true;
        match self.ch.lock() {
            Ok(g) => {
                self.put_back(&g);
                self.ch.corrupt(&g)
            }
            Err(e) => e,
        }
    }
}

impl Drop for ReadSlot<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Not read after all (e.g. the reader could not allocate): put it back.
        if let Ok(g) = self.ch.lock() {
            self.put_back(&g);
        }
    }
}
