//! A CSP channel in one shared-memory segment, usable by any number of OS processes.
//!
//! The segment's layout (a header, the end table, a ring of messages) is in `layout.rs`; the
//! ring's positions and its checked walk in `ring.rs`; the reads and writes that claim and
//! reserve its entries in `transfer.rs`. This file is the segment itself: creating and
//! attaching it (checked: a segment is untrusted), its lock, its poison and its cause, its
//! sleeps and wake-ups.
//!
//! Invariants:
//! - Every field of `State`, the entries' states, the end table and the alt and wait records
//!   are read and written only under the segment's lock (`lock.rs`). `seq`, `sleepers` and `poisoned` are
//!   atomics readable without it.
//! - Whoever changes anything a waiter may wait for increments `seq` under the lock and wakes
//!   every sleeper; a waiter reads `seq` under the lock before it unlocks and sleeps on it, so
//!   no wake-up is lost (the futex returns at once when `seq` moved). The one exception is a
//!   rendezvous writer waiting for its entry to be taken: it sleeps on its entry's own `wake`
//!   word, with the same discipline, so other traffic on the channel never wakes it.
//! - A writer reserves its entry under the lock, copies its bytes with the lock released, and
//!   publishes the entry (`READY`) under the lock; a reader claims a `READY` entry (`READING`),
//!   copies it out with the lock released, and releases it. The ring's head only moves over
//!   entries nobody uses any more (`DONE`, `CANCELLED`, `PAD`).
//! - Rendezvous (capacity 0): a write completes only when a reader has taken its entry
//!   (`TAKEN`, then the writer marks it `DONE`); a write that times out or is interrupted while
//!   its entry is still `READY` withdraws it (`CANCELLED`): nothing was sent.
//! - A thread that dies holding the lock, or a lock word that names no thread (a scribble), is
//!   found by a waiter within about `PEER_CHECK` (`lock.rs`): it takes the lock over and
//!   poisons the channel (`OwnerDied`, `Corrupt`), so its peers wake with `Poisoned` instead of
//!   hanging. A lock wait also ends once the channel is poisoned.
//! - Conditional offers (an `Alt`'s output guard, `select.rs`): an `OFFERED` entry carries a
//!   `CellRef` before its message. A reader takes it only by firing that cell (`cells::fire`,
//!   under this channel's lock); the reader then owns the entry and marks it `DONE` itself (the
//!   offering selection never touches a fired offer again). An offer whose selection is gone
//!   is withdrawn by whoever finds it. A waiting `Alt`'s input guard leaves an `AltRecord` in
//!   the header (counted by `stats()` as a waiting reader; stale records are dropped there).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Instant;

// Re-exported: the other shm modules import the segment and its layout from this one place.
use super::fault::fault_point;
use super::fork::PerProcess;
pub use super::layout::MAX_ENDS;
pub(super) use super::layout::{
    round_up, AltRecord, ALT_RECORDS, CANCELLED, DONE, ENTRY_BYTES, OFFERED, OFFER_PREFIX,
    RDV_OFFER, RDV_PLAIN, READY, TAKEN, WRITING,
};
use super::layout::{Entry, Header, State, ALIGN, DATA_OFF, HEADER_BYTES, MAGIC, READING, VERSION};
use super::lock::{SegLock, Taken};
use super::seq::Seq;
use super::sys::{self, Mapping};
use super::ticket::Ticket;
use super::wait::Wait;
use crate::Error;

/// A channel in a shared-memory segment (see the module docs for the protocol).
#[derive(Debug)]
pub struct ShmChannel {
    map: Mapping,
    /// None only for a heap image of a segment (`fuzz.rs`).
    fd: Option<OwnedFd>,
    /// The ring's length and the capacity, read once (checked against the mapping at attach):
    /// a peer that scribbles over the header later cannot move entries outside the mapping.
    data_len: usize,
    capacity: usize,
    // This process's own bookkeeping of the channel. Each is a `PerProcess` value (`fork.rs`):
    // a child made by `fork` while another thread held one of these locks would wait on it for
    // ever, and the tickets owed are its parent's waiters, not its own.
    /// When this process next looks for dead writers while it waits (`owner.rs`): one time
    /// for all its waits on the channel, whatever their slices.
    pub(super) next_look: PerProcess<std::sync::Mutex<Option<Instant>>>,
    /// When this process next looks for dead waiters counted on the channel (`waiters.rs`).
    pub(super) next_waiters_look: PerProcess<std::sync::Mutex<Option<Instant>>>,
    /// Waiters of this process that left while the lock was not theirs to take (`sleep`):
    /// still in the counts until the next lock holder here takes them off (`owing` says
    /// whether there are any: one load per lock; in a forked child, a stale `true` costs one
    /// look at an empty list).
    owed: PerProcess<std::sync::Mutex<Vec<Ticket>>>,
    owing: std::sync::atomic::AtomicBool,
}

/// Why a shared channel is poisoned (the segment's `poisoned` word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoisonCause {
    /// Somebody poisoned it (`poison`), the usual way.
    Poisoned,
    /// A process died holding its lock: its state may be half-updated.
    OwnerDied,
    /// A process died in the middle of a hand-off on it (while copying a value out): the
    /// value is lost with that process, and its writer cannot know whether it arrived.
    PeerDied,
    /// A process found its segment inconsistent (a length, position or count that the
    /// protocol cannot produce): another process wrote garbage over it, or died half-way
    /// through an update the lock does not cover.
    Corrupt,
}

const POISONED: u32 = 1;
const OWNER_DIED: u32 = 2;
const CORRUPT: u32 = 3;
const PEER_DIED: u32 = 4;

/// The segment's lock held; unlocks on drop.
pub(super) struct Guard<'a> {
    ch: &'a ShmChannel,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let l = self.ch.seg_lock();
        if !l.unlock() {
            // Someone wrote over the word while we held it: nobody can trust the lock any
            // more. Poisoned without it (an atomic), and every sleeper is woken to see that.
            let (_, _, poisoned) = self.ch.atomics();
            let _ = poisoned.compare_exchange(0, CORRUPT, Ordering::AcqRel, Ordering::Acquire);
            self.ch.handshake().bump_unlocked();
            l.wake_all();
        }
    }
}

impl Guard<'_> {
    #[allow(clippy::mut_from_ref)] // the lock, held by this guard, makes the access exclusive
    pub(super) fn st(&self) -> &mut State {
        // SAFETY: the state is only touched under the lock, which this guard holds, and no
        // other reference to it outlives a statement in this module.
        unsafe { &mut (*self.ch.hdr()).st }
    }
}

impl ShmChannel {
    /// Creates a channel of `capacity` (0: rendezvous) whose ring holds `ring_bytes` bytes
    /// (allocated lazily by the kernel as it is used).
    pub fn create(capacity: usize, ring_bytes: usize) -> io::Result<Self> {
        let data_len = round_up(ring_bytes.max(4 * ALIGN));
        let total = DATA_OFF + data_len;
        let uuid = sys::random_uuid()?;
        let fd = sys::create(&uuid, total)?;
        sys::seal(&fd)?;
        let map = sys::map(&fd, total)?;
        Self::init(map, Some(fd), uuid, data_len, capacity)
    }

    /// The channel object over a mapping whose ring length and capacity are known good (made
    /// here, or checked by attach): this process's bookkeeping starts empty.
    fn over_mapping(map: Mapping, fd: Option<OwnedFd>, data_len: usize, capacity: usize) -> Self {
        ShmChannel {
            map,
            fd,
            data_len,
            capacity,
            next_look: PerProcess::new(Default::default),
            next_waiters_look: PerProcess::new(Default::default),
            owed: PerProcess::new(Default::default),
            owing: Default::default(),
        }
    }

    /// Makes fresh zeroed memory of `DATA_OFF + data_len` bytes a new channel.
    pub(super) fn init(
        map: Mapping,
        fd: Option<OwnedFd>,
        uuid: [u8; 16],
        data_len: usize,
        capacity: usize,
    ) -> io::Result<Self> {
        let total = DATA_OFF + data_len;
        let ch = Self::over_mapping(map, fd, data_len, capacity);
        let h = ch.hdr();
        // SAFETY: the segment is fresh (zeroed: the lock is free) and mapped; no other process
        // knows it yet.
        unsafe {
            (*h).version = VERSION;
            (*h).uuid = uuid;
            (*h).total_len = total as u64;
            (*h).data_len = data_len as u64;
            (*h).capacity = capacity as u64;
            std::sync::atomic::fence(Ordering::Release);
            (*h).magic = MAGIC;
        }
        Ok(ch)
    }

    /// Attaches to the channel `uuid` that process `pid` holds as descriptor `fd`.
    pub fn attach(pid: u32, fd: i32, uuid: &[u8; 16]) -> io::Result<Self> {
        let fd = sys::open_from(pid, fd, uuid)?;
        let total = sys::size(&fd)?;
        if total < DATA_OFF + 4 * ALIGN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "segment too small"));
        }
        // A segment that could still change size could SIGBUS us on any access.
        sys::check_sealed(&fd)?;
        let map = sys::map(&fd, total)?;
        Self::over(map, Some(fd), total, uuid)
    }

    /// The checks of `attach` on a mapped segment of `total` bytes (at least a header, the end
    /// table and a minimal ring) that should be channel `uuid`: what every later access
    /// relies on is read once here and checked against the mapping.
    pub(super) fn over(
        map: Mapping,
        fd: Option<OwnedFd>,
        total: usize,
        uuid: &[u8; 16],
    ) -> io::Result<Self> {
        if total < DATA_OFF + 4 * ALIGN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "segment too small"));
        }
        let h: *mut Header = map.ptr().cast();
        // SAFETY: the header lies in the mapping (checked size); these fields are written once
        // before `magic` at creation and never change, unless a hostile process rewrites them:
        // so they are read once here and checked against the mapping.
        let (ok, data_len, capacity) = unsafe {
            (
                (*h).magic == MAGIC
                    && (*h).version == VERSION
                    && (*h).uuid == *uuid
                    && (*h).total_len == total as u64,
                (*h).data_len,
                (*h).capacity,
            )
        };
        if !ok {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a ferrocsp channel"));
        }
        let data_len = usize::try_from(data_len).unwrap_or(usize::MAX);
        if data_len != total - DATA_OFF || !data_len.is_multiple_of(ALIGN) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "corrupt channel segment: a ring of {data_len} bytes in a segment of {total}"
                ),
            ));
        }
        let capacity = usize::try_from(capacity).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "corrupt channel segment: capacity")
        })?;
        Ok(Self::over_mapping(map, fd, data_len, capacity))
    }

    /// The start of the mapping.
    pub(super) fn base(&self) -> *mut u8 {
        self.map.ptr()
    }

    pub(super) fn hdr(&self) -> *mut Header {
        self.map.ptr().cast()
    }

    fn seg_lock(&self) -> SegLock<'_> {
        // SAFETY: an atomic in the mapped header, valid as long as `self`.
        SegLock::new(unsafe { &(*self.hdr()).lock })
    }

    pub(super) fn atomics(&self) -> (&AtomicU32, &AtomicU32, &AtomicU32) {
        // SAFETY: atomics in the mapped header, valid as long as `self`.
        unsafe {
            let h = self.hdr();
            (&(*h).seq, &(*h).sleepers, &(*h).poisoned)
        }
    }

    pub(super) fn data_len(&self) -> usize {
        self.data_len
    }

    /// The segment's identifier.
    pub fn uuid(&self) -> [u8; 16] {
        // SAFETY: immutable after creation.
        unsafe { (*self.hdr()).uuid }
    }

    /// This process's descriptor for the segment (another process attaches through it).
    pub fn fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// The buffer size; 0 for rendezvous.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest message this channel can carry.
    pub fn max_message(&self) -> usize {
        self.data_len() - ENTRY_BYTES
    }

    /// Whether the channel is poisoned.
    pub fn is_poisoned(&self) -> bool {
        self.atomics().2.load(Ordering::Acquire) != 0
    }

    /// Why the channel is poisoned (None: it is not).
    pub fn poison_cause(&self) -> Option<PoisonCause> {
        match self.atomics().2.load(Ordering::Acquire) {
            0 => None,
            OWNER_DIED => Some(PoisonCause::OwnerDied),
            CORRUPT => Some(PoisonCause::Corrupt),
            PEER_DIED => Some(PoisonCause::PeerDied),
            // `POISONED`, or a word another process scribbled: poisoned either way.
            _ => Some(PoisonCause::Poisoned),
        }
    }

    /// Poisons the channel with `cause` (the first cause stays) and wakes everyone. Lock held.
    fn poison_with(&self, g: &Guard<'_>, cause: u32) {
        let _ = self.atomics().2.compare_exchange(0, cause, Ordering::AcqRel, Ordering::Acquire);
        self.changed_all(g);
    }

    /// The segment is inconsistent (see [`PoisonCause::Corrupt`]): poison it and fail. Lock
    /// held. Every walk of the ring stops at the first entry it cannot trust, so the wake-ups
    /// this sends never walk into the garbage.
    pub(super) fn corrupt(&self, g: &Guard<'_>) -> Error {
        let _ = self.atomics().2.compare_exchange(0, CORRUPT, Ordering::AcqRel, Ordering::Acquire);
        self.changed_all(g);
        Error::Poisoned
    }

    /// A process died holding an entry as its reader (`owner.rs`): poison. Lock held.
    pub(super) fn peer_died(&self, g: &Guard<'_>) -> Error {
        self.poison_with(g, PEER_DIED);
        Error::Poisoned
    }

    /// The layout of a segment, for tests that play a hostile peer.
    #[doc(hidden)]
    pub fn layout_for_tests() -> super::layout::TestLayout {
        super::layout::TEST_LAYOUT
    }

    /// Takes the segment's lock. `Err(Poisoned)` also when the channel was poisoned while
    /// this waited for a holder that does not let go (`lock.rs`).
    pub(super) fn lock(&self) -> Result<Guard<'_>, Error> {
        self.lock_or(|| None)
    }

    /// Takes the segment's lock, whatever happens meanwhile but a holder's death (taken over
    /// within `PEER_CHECK`): for a caller that has something under way which only the lock
    /// can settle (a rendezvous writer whose value a reader may have taken; an Alt whose
    /// offer may have been taken, with offers to withdraw). Giving up when the channel is
    /// poisoned would report a value that was delivered as not sent (found by
    /// `tests/shm_faults`: an Alt writer got `Poisoned` for a value its reader had, when a
    /// survivor poisoned the channel whose lock a dead peer held). A holder that is alive and
    /// never lets go (a stopped process) holds such a caller as long.
    pub(super) fn lock_patient(&self) -> Result<Guard<'_>, Error> {
        let how = self.seg_lock().lock(|| false).ok_or(Error::Poisoned)?;
        self.locked(how)
    }

    /// `lock` at the start of an operation that waits per `w`: a wait for a holder that does
    /// not let go (a live process stopped while it holds the lock, say) also ends at the
    /// deadline, when interrupted, or at once for `nowait`. Nothing is registered yet, so the
    /// operation fails cleanly.
    pub(super) fn lock_waiting(&self, w: &mut Wait<'_>) -> Result<Guard<'_>, Error> {
        self.lock_or(|| {
            if w.nowait {
                Some(Error::WouldBlock)
            } else if w.deadline.is_some_and(|d| Instant::now() >= d) {
                Some(Error::Timeout)
            } else if w.slice.is_some() && w.sleeper.is_none() && (w.interrupted)() {
                Some(Error::Interrupted)
            } else {
                None
            }
        })
    }

    /// Takes the lock; a wait for a holder that does not let go ends with `Poisoned` once
    /// the channel is poisoned, or with what `why` says (asked once per `PEER_CHECK`).
    fn lock_or(&self, mut why: impl FnMut() -> Option<Error>) -> Result<Guard<'_>, Error> {
        let mut gave_up = None;
        let how = self.seg_lock().lock(|| {
            gave_up = if self.is_poisoned() { Some(Error::Poisoned) } else { why() };
            gave_up.is_some()
        });
        let how = how.ok_or_else(|| gave_up.unwrap_or(Error::Poisoned))?;
        self.locked(how)
    }

    /// The lock just taken (`how`): poisons for a dead holder or a scribbled word, settles
    /// what this process owes, and checks the ring.
    fn locked(&self, how: Taken) -> Result<Guard<'_>, Error> {
        let g = Guard { ch: self };
        match how {
            Taken::Clean => {}
            // A thread died inside a critical section: the state may be half-updated, so the
            // channel is dead for everyone (its peers see poison instead of hanging).
            Taken::OwnerDied => self.poison_with(&g, OWNER_DIED),
            Taken::Garbage => {
                let _ = self.corrupt(&g);
            }
        }
        if self.owing.load(Ordering::Acquire) {
            self.settle(&g);
        }
        if !self.ring_ok(&g) {
            return Err(self.corrupt(&g));
        }
        fault_point!("lock.taken");
        Ok(g)
    }

    /// Takes the waiters that left without the lock off the counts (`sleep`). Lock held.
    #[cold]
    fn settle(&self, g: &Guard<'_>) {
        let owed = {
            let mut o = self.owed.lock().unwrap_or_else(|e| e.into_inner());
            self.owing.store(false, Ordering::Release);
            std::mem::take(&mut *o)
        };
        for t in owed {
            self.wait_end(g, t);
        }
    }

    /// Announces a change to every sleeper; called with the lock held.
    pub(super) fn changed(&self, _g: &Guard<'_>) {
        self.handshake().changed();
    }

    /// The change counter handshake's words (`seq.rs`).
    fn handshake(&self) -> Seq<'_> {
        let (seq, sleepers, poisoned) = self.atomics();
        Seq { seq, sleepers, coop: self.coop(), poisoned }
    }

    /// Whether a cooperative process (a greenlet, an asyncio task: [`Sleeper`]) waits on this
    /// channel now, in any process. When none does, every waiting counterpart is a thread,
    /// which completes a hand-off without the caller's thread: a `nowait` rendezvous write may
    /// then wait for its take by sleeping that thread (the fast way).
    pub fn coop_waiting(&self) -> bool {
        self.coop().load(Ordering::Acquire) > 0
    }

    /// Cooperative sleepers waiting on this channel (see [`Sleeper`]).
    pub(super) fn coop(&self) -> &AtomicU32 {
        // SAFETY: an atomic in the mapped header, valid as long as `self`.
        unsafe { &(*self.hdr()).coop }
    }

    /// Releases the lock, sleeps as the waiter counted by `ticket` until something changes
    /// (or the slice/deadline ends, or it is time to look for a dead writer: `owner.rs`),
    /// takes the lock again and takes the waiter off the counts. Returns the new guard and
    /// whether the wait was interrupted.
    ///
    /// Taking the lock again honours the deadline and interrupts (a holder that does not let
    /// go): the waiter is then taken off the counts by whoever in this process next holds the
    /// lock (`owed`), since that needs the lock.
    pub(super) fn sleep<'a>(
        &'a self,
        g: Guard<'a>,
        w: &mut Wait<'_>,
        ticket: Ticket,
    ) -> Result<(Guard<'a>, bool), Error> {
        let cap = self.peer_check(&g, w.coarse());
        let interrupted = self.sleep_unlocked(g, self.atomics().0, w, cap);
        let g = match self.lock_waiting(w) {
            Ok(g) => g,
            Err(e) => {
                self.owed.lock().unwrap_or_else(|e| e.into_inner()).push(ticket);
                self.owing.store(true, Ordering::Release);
                return Err(e);
            }
        };
        self.wait_end(&g, ticket);
        self.look_for_dead_holders(&g);
        Ok((g, interrupted))
    }

    /// `sleep` on another futex word of the segment (an entry's `wake`). A cooperative sleeper
    /// watches `seq` instead, counted in `coop` so that the word's wake-ups move `seq` too.
    pub(super) fn sleep_on<'a>(
        &'a self,
        g: Guard<'a>,
        word: &AtomicU32,
        w: &mut Wait<'_>,
        cap: Option<Instant>,
    ) -> Result<(Guard<'a>, bool), Error> {
        let interrupted = self.sleep_unlocked(g, word, w, cap);
        // Its callers have a hand-off under way (a rendezvous writer waiting for its take).
        Ok((self.lock_patient()?, interrupted))
    }

    /// The sleep of `sleep_on`, which returns with the lock released (whether interrupted).
    fn sleep_unlocked(
        &self,
        g: Guard<'_>,
        word: &AtomicU32,
        w: &mut Wait<'_>,
        cap: Option<Instant>,
    ) -> bool {
        let coarse = w.coarse();
        let sleep = |word: &AtomicU32, seen| {
            fault_point!("wait.sleep");
            w.block(&[word], &[seen], cap)
        };
        // Not slept (None): poisoned meanwhile; the caller re-checks.
        self.handshake().wait(word, coarse, || drop(g), sleep).unwrap_or(false)
    }

    /// Wakes the writer waiting on entry `e` (lock held).
    pub(super) fn wake_entry(&self, e: *mut Entry, _g: &Guard<'_>) {
        // SAFETY: a live entry in the ring; `wake` is an atomic.
        let word = unsafe { &(*e).wake };
        self.handshake().wake_private(word);
    }

    /// A private wake-up (an entry's word, a cell fired under this lock) also moves `seq`
    /// while cooperative sleepers wait here: they watch nothing else. Lock held.
    pub(super) fn changed_for_coop(&self, _g: &Guard<'_>) {
        self.handshake().changed_for_coop();
    }

    /// Wakes every rendezvous writer waiting for its entry (poison, retirement, a reader
    /// leaving): they re-check why they wait. Lock held.
    pub(super) fn wake_offers(&self, g: &Guard<'_>) {
        // On a corrupt ring, the writers of the entries before the damage are woken; `corrupt`
        // (which calls this) has moved `seq`, and a thread's sleep ends within its slice.
        let _ = self.scan(g, |_, e| {
            if e.rendezvous == RDV_PLAIN && matches!(e.state, READY | READING) {
                self.wake_entry(e.ptr, g);
            }
            None::<()>
        });
    }

    /// A change that may end any wait: `changed` plus every offer's writer.
    pub(super) fn changed_all(&self, g: &Guard<'_>) {
        self.changed(g);
        self.wake_offers(g);
    }

    pub(super) fn ends(&self) -> &[AtomicU8] {
        // SAFETY: the end table is MAX_ENDS bytes right after the header page.
        unsafe {
            std::slice::from_raw_parts(
                self.map.ptr().add(HEADER_BYTES).cast::<AtomicU8>(),
                MAX_ENDS,
            )
        }
    }

    pub(super) fn writers_gone(st: &State) -> bool {
        st.writer_ends_made > 0 && st.writer_ends_live == 0
    }

    pub(super) fn readers_gone(st: &State) -> bool {
        st.reader_ends_made > 0 && st.reader_ends_live == 0
    }

    /// Poisons the channel: every blocked and later operation fails with `Poisoned`.
    ///
    /// The poison word is set first, without the lock: a lock whose holder does not let go
    /// (`lock.rs`) must not keep poison from ending its waiters' waits. The wake-ups then
    /// happen under the lock (a waiter samples `seq` under it, so none is missed), or without
    /// it if the lock wait was given up for the poison.
    pub fn poison(&self) -> Result<(), Error> {
        let (_, _, poisoned) = self.atomics();
        let _ = poisoned.compare_exchange(0, POISONED, Ordering::AcqRel, Ordering::Acquire);
        match self.lock() {
            Ok(g) => self.changed_all(&g),
            Err(Error::Poisoned) => self.handshake().bump_unlocked(),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The change counter: it moves whenever anything a waiter may wait for changes.
    pub fn seq(&self) -> u32 {
        self.atomics().0.load(Ordering::SeqCst)
    }

    /// Takes the lock and never releases it: only for tests of a process that dies holding it.
    #[doc(hidden)]
    pub fn hold_lock_for_test(&self) -> Result<(), Error> {
        std::mem::forget(self.lock()?);
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Result<crate::Stats, Error> {
        let g = self.lock()?;
        // A process that died waiting is not waiting any more.
        self.drop_dead_waiters(&g);
        let (alt_readers, alt_writers) = self.alt_waiting(&g);
        // Before `st`: it takes its own reference to the state (one at a time, for Miri).
        let offers = self.ready_offers(&g) as usize;
        let st = g.st();
        let poisoned = self.is_poisoned();
        Ok(crate::Stats {
            capacity: self.capacity(),
            buffered: if poisoned { 0 } else { st.buffered as usize },
            readers_waiting: st.readers_waiting as usize + alt_readers,
            writers_waiting: st.writers_waiting as usize + offers + alt_writers,
            reader_ends: st.reader_ends_live as usize,
            writer_ends: st.writer_ends_live as usize,
            poisoned,
            retired: Self::writers_gone(st) || Self::readers_gone(st),
        })
    }
}
