//! Selection cells in shared memory: the one word that decides which guard of a waiting
//! `Alt` over shared channels fired (Go's `select` model, across OS processes).
//!
//! Each process owns lazily created *cells segments* (memfds, mode 0600, attachable through
//! `/proc/<pid>/fd/<fd>` like channel segments). A waiting selection takes one slot: its
//! `owner` word names the selecting thread for as long as the selection runs, and the slot's
//! `state` word says `OPEN` (nothing fired yet), `FIRED(guard)` or `CLOSED`. The records a
//! selection leaves in channel segments (conditional offers, waiting readers) name the slot
//! by a [`CellRef`].
//!
//! Invariants:
//! - A counterpart fires a cell only by a compare-and-swap `OPEN(gen) -> FIRED(guard, gen)`,
//!   made while it holds the lock of the channel whose record it found. The selection withdraws
//!   every record (under each channel's lock) before it releases the slot, so a record a
//!   counterpart finds under the channel lock always names the live selection it was made by.
//! - Liveness: the slot's `owner` word is non-zero while a selection holds the slot, and the
//!   segment's process is alive (a pidfd taken before the segment was verified, polled: one
//!   system call; our own segments need none). A free slot or a dead process means the record
//!   is stale, and the counterpart withdraws it: a dead selector never blocks anyone.
//!   (The slots used to hold robust pthread mutexes: glibc links a held one into its thread's
//!   robust list through pointers stored in the mutex, in memory any peer can write, so a
//!   scribble could send the owner's next unlock through addresses of the peer's choosing.
//!   Nothing read from a slot is followed now, only compared.)
//! - Segments are per process: a child made by `fork` never uses its parent's slots nor its
//!   registry's lock (a fresh registry per fork generation, `fork.rs`), and attached
//!   segments are cached per process by uuid, at most [`MAX_ATTACHED`]; those of dead
//!   processes are dropped at every attach.
//! - Only a proven death makes a record stale: its process's descriptor gone from `/proc`, or
//!   its slot free. A segment that cannot be attached for another reason (out of
//!   descriptors, permissions) leaves the record alone and fails the caller's operation.
//! - An Alt that also waits on in-process channels links its engine cell to this one
//!   ([`CellLink`], `signal.rs`): an in-process counterpart fires this word too (`OPEN ->
//!   FIRED(guard)`, with the lock of its in-process channel), so one word decides for every
//!   guard. Such an owner closes the word (`CLOSED`, same generation) only while it holds all
//!   its shared channels' locks, or for good, and reopens it before it lets go of them: no
//!   counterpart in another process ever finds a live selection's cell closed. Its slot's
//!   `bell` word is bumped when an in-process channel retires under it (a nudge, nothing
//!   decided).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::cell_word::{CellWord, Fired, GEN_MAX};
use super::fault::fault_point;
use super::fork::PerProcess;
use super::sys::{self, Mapping};

const MAGIC: u64 = 0x6665_7272_6f63_6532; // "ferroce2": slots with an owner word
pub(super) const HEADER: usize = 4096;
pub(super) const SLOT_BYTES: usize = 128;
const SLOTS: usize = 512;
const SEG_BYTES: usize = HEADER + SLOTS * SLOT_BYTES;

pub use super::cell_word::MAX_GUARDS;

#[repr(C)]
struct SegHeader {
    magic: u64,
    uuid: [u8; 16],
    slots: u64,
}

#[repr(C)]
struct Slot {
    /// Non-zero (the selecting thread's `lock.rs` value) while a selection holds the slot.
    owner: AtomicU64,
    state: AtomicU32,
    /// Bumped (and woken) to make the owner look again without deciding (`CellLink::nudge`).
    bell: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Slot>() <= SLOT_BYTES);

/// Where a selection's cell is, and which of its guards a record stands for (stored in
/// channel segments, so plain data with a fixed layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CellRef {
    /// The process that owns the cells segment.
    pub pid: u32,
    /// Its descriptor of the segment.
    pub fd: i32,
    /// The segment's identifier.
    pub uuid: [u8; 16],
    /// The slot in the segment.
    pub slot: u32,
    /// The slot's generation when the selection took it.
    pub gen: u32,
    /// The guard this record stands for.
    pub guard: u32,
    _pad: u32,
}

impl CellRef {
    /// Whether `self` and `other` name the same selection.
    pub fn same_cell(&self, other: &CellRef) -> bool {
        self.uuid == other.uuid && self.slot == other.slot && self.gen == other.gen
    }

    /// Whether a record read back from a segment can have been made by [`OwnCell::cref`]: a
    /// slot, generation and guard in range, a process and a descriptor. Anything else is a
    /// scribble, and the segment holding it is corrupt (never fired, never attached).
    pub(super) fn plausible(&self) -> bool {
        (self.slot as usize) < SLOTS
            && self.gen <= GEN_MAX
            && (self.guard as usize) < MAX_GUARDS
            && self.pid != 0
            && self.fd >= 0
            && self._pad == 0
    }
}

/// A mapped cells segment (ours or another process's).
#[derive(Debug)]
struct Seg {
    map: Mapping,
    /// Our own segment: its memfd (others attach through it). Another process's: a pidfd of
    /// that process (the mapping needs no descriptor, so the cache holds one per segment), or
    /// without pidfd support the segment's descriptor (`/proc` then tells liveness).
    fd: OwnedFd,
    is_pidfd: bool,
    uuid: [u8; 16],
    /// The process that owns it.
    pid: u32,
}

impl Seg {
    fn slot(&self, i: u32) -> Option<*mut Slot> {
        if i as usize >= SLOTS {
            return None;
        }
        // SAFETY: slot i lies inside the mapping (SEG_BYTES, checked at attach).
        Some(unsafe { self.map.ptr().add(HEADER + i as usize * SLOT_BYTES).cast() })
    }

    fn state(&self, i: u32) -> Option<&AtomicU32> {
        // SAFETY: an atomic inside the live mapping.
        self.slot(i).map(|s| unsafe { &(*s).state })
    }

    fn bell(&self, i: u32) -> Option<&AtomicU32> {
        // SAFETY: an atomic inside the live mapping.
        self.slot(i).map(|s| unsafe { &(*s).bell })
    }

    fn owner(&self, i: u32) -> Option<&AtomicU64> {
        // SAFETY: an atomic inside the live mapping.
        self.slot(i).map(|s| unsafe { &(*s).owner })
    }

    /// Whether the process that owns the segment is still alive (not exited, not a zombie).
    fn process_alive(&self) -> bool {
        if self.pid == std::process::id() {
            return true;
        }
        if self.is_pidfd {
            !sys::pidfd_exited(&self.fd)
        } else {
            !sys::pid_gone(self.pid)
        }
    }
}

#[derive(Default)]
struct Registry {
    own: Vec<Arc<Seg>>,
    free: Vec<(usize, u32)>,
    attached: HashMap<[u8; 16], Arc<Seg>>,
}

/// This process's cells. A child made by `fork` starts with none (`fork.rs`): the parent's
/// slots are the parent's, and the lock may have been held by one of its other threads. The
/// parent's registry is leaked, never unmapped (another thread of the parent may have been
/// using it).
static REGISTRY: PerProcess<Mutex<Registry>> = PerProcess::new(|| Mutex::new(Registry::default()));

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Holds this process's cells registry's lock for `d` on a new thread, and returns once it
/// is held: only for tests of a process forked while another thread holds it.
#[doc(hidden)]
pub fn hold_registry_for_test(d: std::time::Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _g = REGISTRY.lock();
        let _ = tx.send(());
        std::thread::sleep(d);
    });
    let _ = rx.recv();
}

fn new_segment() -> io::Result<Seg> {
    let uuid = sys::random_uuid()?;
    let fd = sys::create(&uuid, SEG_BYTES)?;
    let map = sys::map(&fd, SEG_BYTES)?;
    // Fresh zeroed memory: every slot free (owner 0).
    let seg = Seg { map, fd, is_pidfd: false, uuid, pid: std::process::id() };
    let h = seg.map.ptr().cast::<SegHeader>();
    // SAFETY: the header page of our fresh mapping.
    unsafe {
        (*h).uuid = uuid;
        (*h).slots = SLOTS as u64;
        std::sync::atomic::fence(Ordering::Release);
        (*h).magic = MAGIC;
    }
    Ok(seg)
}

/// Why a record's cells segment could not be used.
enum Unusable {
    /// Its process is gone (or the record names no cells segment): the record is stale.
    Gone,
    /// It could not be attached now (too many open files, permissions, memory): says nothing
    /// about the selection, which may well be alive.
    Failed(io::Error),
}

fn attach(pid: u32, fd: i32, uuid: &[u8; 16]) -> Result<Seg, Unusable> {
    // The pidfd first: if the segment is then found open in process `pid`, the pidfd is that
    // process's, not a later one's under a reused pid.
    let pidfd = match sys::pidfd_open(pid) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(Unusable::Gone),
        Err(e) => return Err(Unusable::Failed(e)),
    };
    // The owner keeps its cells segments open for its whole life: no descriptor there (or
    // another file under that number) means the process is gone.
    let fd = sys::open_from(pid, fd, uuid).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Unusable::Gone,
        _ => Unusable::Failed(e),
    })?;
    if sys::size(&fd).map_err(Unusable::Failed)? != SEG_BYTES {
        return Err(Unusable::Gone);
    }
    let map = sys::map(&fd, SEG_BYTES).map_err(Unusable::Failed)?;
    let h = map.ptr().cast::<SegHeader>();
    // SAFETY: the header lies in the mapping; written once before `magic` at creation.
    let ok = unsafe { (*h).magic == MAGIC && (*h).uuid == *uuid && (*h).slots == SLOTS as u64 };
    if !ok {
        return Err(Unusable::Gone);
    }
    let (fd, is_pidfd) = match pidfd {
        Some(p) => (p, true),
        None => (fd, false),
    };
    Ok(Seg { map, fd, is_pidfd, uuid: *uuid, pid })
}

/// Other processes' segments kept attached, at most (beyond it, those of dead processes are
/// dropped first, then any: a dropped one is attached again when next needed).
const MAX_ATTACHED: usize = 64;

/// The segment a record names: ours, cached, or attached now.
fn lookup(r: &CellRef) -> Result<Arc<Seg>, Unusable> {
    let found = with_registry(|reg| {
        reg.own.iter().find(|s| s.uuid == r.uuid).or_else(|| reg.attached.get(&r.uuid)).cloned()
    });
    if let Some(seg) = found {
        return Ok(seg);
    }
    let seg = Arc::new(attach(r.pid, r.fd, &r.uuid)?);
    Ok(with_registry(|reg| {
        // The registry's reference only: a selection still using one keeps its own.
        reg.attached.retain(|_, s| !sys::pid_gone(s.pid));
        if reg.attached.len() >= MAX_ATTACHED {
            while reg.attached.len() >= MAX_ATTACHED {
                let Some(k) = reg.attached.keys().next().copied() else { break };
                reg.attached.remove(&k);
            }
        }
        reg.attached.entry(r.uuid).or_insert(seg).clone()
    }))
}

/// Drops the cached segments of other processes that are gone (as every attach does first);
/// returns how many stay cached (each one descriptor and one mapping, at most
/// `MAX_ATTACHED`). For leak checks: what a process holds besides these must not grow.
#[doc(hidden)]
pub fn drop_dead_peers() -> usize {
    with_registry(|reg| {
        reg.attached.retain(|_, s| !sys::pid_gone(s.pid));
        reg.attached.len()
    })
}

/// This thread's cell for one selection: the slot's owner word names this thread until it is
/// dropped (on the thread that took it), which closes the cell and frees the slot.
#[derive(Debug)]
pub struct OwnCell {
    seg: Arc<Seg>,
    index: usize,
    slot: u32,
    gen: u32,
    /// The slot belongs to the thread that took it: the cell never moves thread.
    _thread: std::marker::PhantomData<*const ()>,
}

impl OwnCell {
    /// Takes a free slot (a new segment if all are taken), opens it with a new generation.
    pub fn acquire() -> io::Result<OwnCell> {
        let (seg, index, slot) = with_registry(|reg| -> io::Result<(Arc<Seg>, usize, u32)> {
            if reg.free.is_empty() {
                let index = reg.own.len();
                reg.own.push(Arc::new(new_segment()?));
                reg.free.extend((0..SLOTS as u32).rev().map(|s| (index, s)));
            }
            let (index, slot) = reg.free.pop().ok_or_else(|| io::Error::other("no free cell"))?;
            Ok((reg.own[index].clone(), index, slot))
        })?;
        let owner = seg.owner(slot).ok_or_else(|| io::Error::other("bad cell slot"))?;
        // The registry handed the slot to us alone: a plain store marks it held.
        owner.store(super::lock::thread_value(), Ordering::Release);
        let word = seg.state(slot).ok_or_else(|| io::Error::other("bad cell slot"))?;
        let gen = CellWord::new(word).open_next();
        fault_point!("cell.acquired");
        Ok(OwnCell { seg, index, slot, gen, _thread: std::marker::PhantomData })
    }

    /// A record of this cell for guard `guard`.
    pub fn cref(&self, guard: usize) -> CellRef {
        CellRef {
            pid: std::process::id(),
            fd: self.seg.fd.as_raw_fd(),
            uuid: self.seg.uuid,
            slot: self.slot,
            gen: self.gen,
            guard: u32::try_from(guard).unwrap_or(u32::MAX),
            _pad: 0,
        }
    }

    /// The state word (to sleep on).
    pub fn word(&self) -> &AtomicU32 {
        self.seg.state(self.slot).unwrap_or_else(|| unreachable!("slot checked at acquire"))
    }

    /// The slot's bell (to sleep on, with [`OwnCell::word`], when linked).
    pub fn bell(&self) -> &AtomicU32 {
        self.seg.bell(self.slot).unwrap_or_else(|| unreachable!("slot checked at acquire"))
    }

    /// The state word's value while open (what a sleeper expects it to be).
    pub fn open_value(&self) -> u32 {
        CellWord::<AtomicU32>::open_value(self.gen)
    }

    /// Opens a cell the owner closed for a step (`CLOSED -> OPEN`, same generation).
    pub fn reopen(&self) {
        CellWord::new(self.word()).reopen(self.gen);
    }

    /// The link of an engine selection cell to this one: its operation `op` is guard
    /// `base + op` here. Lives as long as any in-process entry holding it (the segment stays
    /// mapped); the generation keeps a late counterpart from firing a later selection.
    pub fn link(&self, base: usize) -> CellLink {
        CellLink {
            seg: self.seg.clone(),
            slot: self.slot,
            gen: self.gen,
            base: u32::try_from(base).unwrap_or(u32::MAX),
        }
    }

    /// The guard a counterpart fired, if one did (`TAMPERED`, `cell_word.rs`: the word holds another
    /// generation, which only a scribble writes: nobody else writes our generation's word).
    pub fn fired(&self) -> Option<usize> {
        CellWord::new(self.word()).fired(self.gen)
    }

    /// Closes the cell so no counterpart can fire it; `Err(guard)` if one already did.
    pub fn close(&self) -> Result<(), usize> {
        CellWord::new(self.word()).close(self.gen)
    }
}

impl Drop for OwnCell {
    fn drop(&mut self) {
        let _ = self.close();
        if let Some(owner) = self.seg.owner(self.slot) {
            owner.store(0, Ordering::Release);
        }
        let (index, slot) = (self.index, self.slot);
        with_registry(|reg| {
            if reg.own.get(index).is_some_and(|s| Arc::ptr_eq(s, &self.seg)) {
                reg.free.push((index, slot));
            }
        });
    }
}

/// An engine cell's link to an [`OwnCell`] (module doc; `crate::Link`).
#[derive(Debug)]
pub struct CellLink {
    seg: Arc<Seg>,
    slot: u32,
    gen: u32,
    base: u32,
}

impl CellLink {
    fn word(&self) -> Option<&AtomicU32> {
        self.seg.state(self.slot)
    }
}

impl crate::Link for CellLink {
    fn fire(&self, op: usize) -> bool {
        let Some(word) = self.word() else { return false };
        let guard = (self.base as usize).saturating_add(op);
        if guard >= MAX_GUARDS {
            return false; // `select` checks the count; never fire a wrong guard
        }
        // An in-process counterpart: the engine wakes the owner through its own waker.
        CellWord::new(word).fire(self.gen, guard as u32) == Fired::Won
    }

    fn close(&self) -> Result<(), Option<usize>> {
        let Some(word) = self.word() else { return Ok(()) };
        // Another generation is Ok: the selection is over (it closed its cell for good).
        CellWord::new(word)
            .close_linked(self.gen)
            .map_err(|guard| guard.checked_sub(self.base as usize))
    }

    fn nudge(&self) {
        if let Some(bell) = self.seg.bell(self.slot) {
            bell.fetch_add(1, Ordering::AcqRel);
            sys::futex_wake_all(bell);
        }
    }
}

impl crate::Wake for CellLink {
    fn wake(&self) {
        if let Some(word) = self.word() {
            sys::futex_wake_all(word);
        }
    }
}

/// What trying to fire a cell did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fire {
    /// We fired it: its selection chose the record's guard.
    Won,
    /// Its selection already chose something else (or is deciding): leave the record.
    Lost,
    /// Its selection is over or its process died: the record is stale, withdraw it.
    Dead,
    /// Its process's cells could not be attached now (`EMFILE`, `EACCES`, ...): nothing is
    /// known of the selection, so the record stays; the caller fails with this error.
    Failed(crate::Error),
}

/// Whether the selection that owns the record's slot still runs: the slot is held and its
/// process alive.
fn owner_alive(seg: &Seg, r: &CellRef) -> bool {
    seg.owner(r.slot).is_some_and(|o| o.load(Ordering::Acquire) != 0) && seg.process_alive()
}

/// Tries to fire the selection named by `r` for its guard. Call with the lock of the channel
/// holding the record.
pub fn fire(r: &CellRef) -> Fire {
    if !r.plausible() {
        // Callers check first (a corrupt record poisons its channel); never fire a wrong guard.
        return Fire::Lost;
    }
    let seg = match lookup(r) {
        Ok(seg) => seg,
        Err(Unusable::Gone) => return Fire::Dead,
        Err(Unusable::Failed(e)) => return Fire::Failed(e.into()),
    };
    if !owner_alive(&seg, r) {
        return Fire::Dead;
    }
    let Some(word) = seg.state(r.slot) else { return Fire::Dead };
    let cell = CellWord::new(word);
    match cell.fire(r.gen, r.guard) {
        Fired::Won => {
            fault_point!("cell.fired");
            cell.wake();
            Fire::Won
        }
        Fired::Over => Fire::Dead,
        Fired::Lost => Fire::Lost,
    }
}

/// What a record's selection is doing: `Some(true)` waiting with nothing fired, `Some(false)`
/// decided (fired or closing), None: gone (the record is stale). A segment that cannot be
/// attached now counts as waiting: only a proven death withdraws a record.
pub fn status(r: &CellRef) -> Option<bool> {
    let seg = match lookup(r) {
        Ok(seg) => seg,
        Err(Unusable::Gone) => return None,
        Err(Unusable::Failed(_)) => return Some(true),
    };
    if !owner_alive(&seg, r) {
        return None;
    }
    CellWord::new(seg.state(r.slot)?).status(r.gen)
}
