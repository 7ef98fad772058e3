//! Who holds an entry of the ring, and what a survivor does when that process died.
//!
//! A writer holds its entry while it copies its value in (`WRITING`), a reader while it copies
//! it out (`READING`); both copies run with the segment's lock released, so a process can die
//! in the middle of one (SIGKILL, the OOM killer) and leave the entry held forever. Each entry
//! records its holder ([`ProcId`]: pid and start time, so a reused pid is not taken for it).
//!
//! Invariants:
//! - The holder is recorded under the lock by the process that will hold the entry, *before*
//!   the entry becomes `WRITING` or `READING`: a process that dies between the two stores
//!   (under the lock: the channel is poisoned `OwnerDied`) never leaves a state that names
//!   another process (the entry's previous holder) as its holder. A `READY` or `OFFERED`
//!   entry names its writer: a reader that claims it keeps that name (`ReadSlot::writer`)
//!   before recording itself, and puts it back with the entry if it does not take the message.
//! - A wait that a dead holder could make endless (a rendezvous writer waiting for its reader
//!   to finish; anyone waiting while an entry is `WRITING`) sleeps at most [`PEER_CHECK`] at a
//!   time and then looks at the holder, so it ends within about that long after the death; a
//!   rendezvous writer whose value is not claimed yet looks every [`PEER_IDLE`]. A cooperative
//!   sleeper (greenlet, asyncio: `Wait::coarse`) looks only once a reader copies its value:
//!   a deadline costs it a wake-up of the process's watcher thread on every sleep, so it
//!   relies otherwise on the parent of a crashed process poisoning its channels
//!   (`backend="os"`), which wakes every waiter.
//! - A dead writer's `WRITING` entry is withdrawn: its value was never published, so nothing
//!   was sent and the channel goes on. A dead reader's `READING` entry may or may not have
//!   reached its process: the value is lost with that process. A plain rendezvous writer
//!   waits for that entry: it poisons the channel (`PoisonCause::PeerDied`), which ends its
//!   wait. Nobody waits for any other entry a reader holds (a buffered message, an Alt's
//!   fired offer: their writers are done), but the ring's head cannot pass it: when it is at
//!   the head, waiters look at its reader as at a writer, and a dead reader's entry is
//!   released (`DONE`) and the channel goes on.

use std::time::Instant;

use super::channel::{Guard, ShmChannel, DONE, RDV_PLAIN, WRITING};
use super::layout::{Entry, READING};
use super::sys::{self, ProcId};
use super::wait::PEER_CHECK;

impl ShmChannel {
    /// Records the calling process as the holder of entry `e`. Lock held.
    pub(super) fn hold(&self, e: *mut Entry, _g: &Guard<'_>) {
        let me = sys::me();
        // SAFETY: an entry of the ring (reserved or claimed by the caller); lock held.
        unsafe {
            (*e).owner_pid = me.pid;
            (*e).owner_start = me.start;
        }
    }

    /// The process recorded as holding entry `e`. Lock held.
    pub(super) fn holder(&self, e: *mut Entry, _g: &Guard<'_>) -> ProcId {
        // SAFETY: as in `hold`.
        unsafe { ProcId { pid: (*e).owner_pid, start: (*e).owner_start } }
    }

    /// Records `p` as the holder of entry `e` again (a message put back: its writer). Lock
    /// held.
    pub(super) fn hold_for(&self, e: *mut Entry, p: ProcId, _g: &Guard<'_>) {
        // SAFETY: as in `hold`.
        unsafe {
            (*e).owner_pid = p.pid;
            (*e).owner_start = p.start;
        }
    }

    /// Whether the process holding entry `e` is alive. Lock held.
    pub(super) fn holder_alive(&self, e: *mut Entry, g: &Guard<'_>) -> bool {
        let p = self.holder(e, g);
        p == sys::me() || sys::alive(p)
    }

    /// Whether the ring's head entry is held by a reader that nobody waits for (a buffered
    /// message or a fired offer being copied out): if that reader died, nothing else would
    /// ever let the head pass it. Lock held.
    fn head_held(&self, g: &Guard<'_>) -> bool {
        let head = self.scan(g, |_, e| Some(e.state == READING && e.rendezvous != RDV_PLAIN));
        matches!(head, Ok(Some(true)))
    }

    /// Withdraws every `WRITING` entry whose writer died (nothing was sent), and releases a
    /// reader-held entry at the head whose reader died (its value is lost with it); returns
    /// whether there was one. Lock held.
    pub(super) fn drop_dead_holders(&self, g: &Guard<'_>) -> bool {
        if g.st().writing == 0 && !self.head_held(g) {
            return false;
        }
        let (mut dead, mut lost) = (Vec::new(), Vec::new());
        let _ = self.walk(g, |pos, e| {
            if e.state == WRITING && !self.holder_alive(e.ptr, g) {
                dead.push(pos);
            }
            if e.state == READING && e.rendezvous != RDV_PLAIN && !self.holder_alive(e.ptr, g) {
                lost.push(e.ptr);
            }
            None::<()>
        });
        for &pos in &dead {
            self.withdraw_entry(g, pos);
        }
        for &e in &lost {
            // SAFETY: an entry `walk` checked, still between head and tail (withdrawing only
            // moves the head over entries nobody holds); lock held.
            unsafe { (*e).state = DONE };
        }
        if !lost.is_empty() {
            self.advance(g);
            self.changed(g); // ring space
        }
        !dead.is_empty() || !lost.is_empty()
    }

    /// When a wait must wake to look at its peers (None: no peer's death could make it
    /// endless): the time this process next looks for dead holders on this channel. Lock held.
    pub(super) fn peer_check(&self, g: &Guard<'_>, coarse: bool) -> Option<Instant> {
        // A cooperative sleeper's deadline wakes the watcher thread on every sleep: it does not
        // look (see the module doc).
        if coarse || (g.st().writing == 0 && !self.head_held(g)) {
            return None;
        }
        let mut next = self.next_look.lock().unwrap_or_else(|e| e.into_inner());
        Some(*next.get_or_insert_with(|| Instant::now() + PEER_CHECK))
    }

    /// After a wait woke: if it is time (`peer_check`), withdraws or releases the entries of
    /// dead holders. Waking for anything else costs nothing more: a look reads `/proc` once
    /// per entry being written or held at the head. Lock held.
    pub(super) fn look_for_dead_holders(&self, g: &Guard<'_>) {
        let now = Instant::now();
        {
            let mut next = self.next_look.lock().unwrap_or_else(|e| e.into_inner());
            match *next {
                Some(t) if now >= t => *next = None,
                _ => return,
            }
        }
        self.drop_dead_holders(g);
    }
}
