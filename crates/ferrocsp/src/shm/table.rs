//! The participant table: one shared-memory segment per OS-process network in which every
//! process of the network publishes whether all its participants wait forever, and what on,
//! so that any of them can prove a deadlock that spans processes and announce it to all.
//!
//! The top parent creates the table when it first starts OS processes; it reserves a slot for
//! each child (by pid) before the child can run, and each child attaches by reopening the
//! parent's descriptor (as for channels, `sys::open_from`). The engine knows nothing of
//! participants, Python or reports: the bindings write each slot's `text` and interpret it.
//!
//! Invariants:
//! - Every change of a slot's `state` or `pid` bumps the header's `epoch` (after the change).
//!   A reader that reads `epoch`, then every slot, then `epoch` again and finds the same value
//!   saw one consistent state of the table (a double collect): no slot was published,
//!   withdrawn, taken or freed in between.
//! - A slot's `text` is written only while the slot is not published (and always under its
//!   `text_seq` seqlock, odd while writing), so a published slot's text is stable for as long
//!   as the epoch does not move.
//! - Nothing read from the segment is trusted: another process wrote it and may have died at
//!   any instruction. Lengths are clamped to their buffers, text is decoded lossily, and a
//!   slot or claim held by a pid that no longer exists is taken back.
//! - A verdict (`decl`) is claimed by one process (its pid in the high half), written, then
//!   published by storing the claim's generation + 1 with no pid; readers copy the report
//!   between two equal loads of `decl` (a seqlock), so they never see a half-written report.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::sys::{self, Mapping};

const MAGIC: u64 = 0x6665_7272_6f78_7462; // "ferroxtb"
const VERSION: u32 = 1;
/// Processes one table can hold (a network with more children is not fully watched: a child
/// without a slot keeps the others from ever looking deadlocked, never the reverse).
pub const MAX_PROCS: usize = 64;
/// Bytes of text per slot (what its participants wait on) and of the verdict's report.
pub const TEXT_BYTES: usize = 2048;
/// Bytes of a verdict's report.
pub const REPORT_BYTES: usize = 8192;

/// A slot's state: its process has participants that may still run.
const RUNNING: u32 = 0;
/// A slot's state: every participant of its process waits forever (published).
const STUCK: u32 = 1;

#[repr(C)]
struct Slot {
    /// The process holding the slot; 0 when free.
    pid: AtomicU32,
    state: AtomicU32,
    /// The epoch that the publication of `STUCK` produced (meaningful while `STUCK`).
    pub_epoch: AtomicU64,
    /// The oldest epoch at which each of the process's waits on shared channels was last
    /// confirmed still waiting (`u64::MAX`: it has none).
    conf: AtomicU64,
    /// Whether a participant of the process is blocked in a channel operation (not joining).
    blocked: AtomicU32,
    text_seq: AtomicU32,
    text_len: AtomicU32,
    _pad: u32,
    text: [AtomicU8; TEXT_BYTES],
}

#[repr(C)]
struct Header {
    magic: u64,
    version: u32,
    nslots: u32,
    uuid: [u8; 16],
    epoch: AtomicU64,
    /// Verdict generation in the low half, claiming pid in the high half (0: published).
    decl: AtomicU64,
    /// The epoch at which the last verdict was proven.
    decl_epoch: AtomicU64,
    report_len: AtomicU32,
    _pad: u32,
    report: [AtomicU8; REPORT_BYTES],
    slots: [Slot; MAX_PROCS],
}

/// What one slot holds, as read by [`Table::slots`].
#[derive(Debug, Clone)]
pub struct SlotView {
    /// The process holding the slot.
    pub pid: u32,
    /// Whether it is published (every participant waits forever).
    pub stuck: bool,
    /// What its participants do, as the bindings wrote it.
    pub text: String,
}

/// A deadlock proven by [`Table::check`]: the epoch at which it holds, and each process's text.
#[derive(Debug, Clone)]
pub struct Proof {
    /// The epoch at which every slot was seen published.
    pub epoch: u64,
    /// Every taken slot.
    pub slots: Vec<SlotView>,
}

/// A verdict announced by some process (see [`Table::verdict`]).
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Its generation (pass it to the next [`Table::verdict`] call).
    pub generation: u32,
    /// The epoch at which the deadlock was proven.
    pub epoch: u64,
    /// The report every deadlocked operation raises.
    pub report: String,
}

/// A participant table mapped into this process.
#[derive(Debug)]
pub struct Table {
    map: Mapping,
    fd: OwnedFd,
}

fn alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else { return false };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists (EPERM: it does, not ours).
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn put_bytes(dst: &[AtomicU8], len: &AtomicU32, src: &[u8]) {
    let n = src.len().min(dst.len());
    for (d, s) in dst.iter().zip(&src[..n]) {
        d.store(*s, Ordering::Relaxed);
    }
    len.store(u32::try_from(n).unwrap_or(0), Ordering::Release);
}

fn get_bytes(src: &[AtomicU8], len: &AtomicU32) -> String {
    let n = usize::try_from(len.load(Ordering::Acquire)).unwrap_or(0).min(src.len());
    let bytes: Vec<u8> = src[..n].iter().map(|b| b.load(Ordering::Relaxed)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Table {
    /// Creates a fresh table (no slot taken).
    pub fn create() -> io::Result<Self> {
        let uuid = sys::random_uuid()?;
        let len = std::mem::size_of::<Header>();
        let fd = sys::create(&uuid, len)?;
        let map = sys::map(&fd, len)?;
        let t = Table { map, fd };
        let h = t.hdr_mut();
        // SAFETY: the segment is fresh (zeroed: every atomic starts at 0) and nobody else knows
        // it yet; `magic` is written last.
        unsafe {
            (*h).version = VERSION;
            (*h).nslots = MAX_PROCS as u32;
            (*h).uuid = uuid;
            std::sync::atomic::fence(Ordering::Release);
            (*h).magic = MAGIC;
        }
        Ok(t)
    }

    /// Attaches to the table `uuid` that process `pid` holds as descriptor `fd`.
    pub fn attach(pid: u32, fd: i32, uuid: &[u8; 16]) -> io::Result<Self> {
        let fd = sys::open_from(pid, fd, uuid)?;
        let len = std::mem::size_of::<Header>();
        if sys::size(&fd)? != len {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a participant table"));
        }
        let map = sys::map(&fd, len)?;
        let t = Table { map, fd };
        let h = t.hdr_mut();
        // SAFETY: the header lies in the mapping (size checked); these fields are written once
        // before `magic` at creation and never change.
        let ok = unsafe {
            (*h).magic == MAGIC
                && (*h).version == VERSION
                && (*h).nslots as usize == MAX_PROCS
                && (*h).uuid == *uuid
        };
        if !ok {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a participant table"));
        }
        Ok(t)
    }

    fn hdr_mut(&self) -> *mut Header {
        self.map.ptr().cast()
    }

    fn hdr(&self) -> &Header {
        // SAFETY: the mapping is exactly one `Header` (checked at attach) and lives as long as
        // `self`; after creation every field other processes write is an atomic.
        unsafe { &*self.hdr_mut() }
    }

    /// The table's identifier.
    pub fn uuid(&self) -> [u8; 16] {
        self.hdr().uuid
    }

    /// This process's descriptor of the table (what a child attaches through).
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.hdr().epoch.load(Ordering::SeqCst)
    }

    fn bump(&self) -> u64 {
        self.hdr().epoch.fetch_add(1, Ordering::SeqCst).wrapping_add(1)
    }

    /// The slot held by `pid`, if any.
    pub fn slot_of(&self, pid: u32) -> Option<usize> {
        self.hdr().slots.iter().position(|s| s.pid.load(Ordering::SeqCst) == pid)
    }

    /// Takes a slot for `pid` (running); returns it, or None when the table is full. A slot
    /// whose process no longer exists is taken back first.
    pub fn reserve(&self, pid: u32) -> Option<usize> {
        if pid == 0 {
            return None;
        }
        if let Some(i) = self.slot_of(pid) {
            return Some(i);
        }
        for (i, s) in self.hdr().slots.iter().enumerate() {
            let cur = s.pid.load(Ordering::SeqCst);
            if cur != 0 && alive(cur) {
                continue;
            }
            // The old owner's fields are reset after the pid changes; the epoch bump that
            // follows makes any reader that saw them in between discard what it read.
            if s.pid.compare_exchange(cur, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                s.state.store(RUNNING, Ordering::SeqCst);
                s.conf.store(u64::MAX, Ordering::SeqCst);
                s.blocked.store(0, Ordering::SeqCst);
                s.text_len.store(0, Ordering::SeqCst);
                self.bump();
                return Some(i);
            }
        }
        None
    }

    /// Frees the slot of `pid` (its process ended or was reaped).
    pub fn release(&self, pid: u32) {
        if let Some(i) = self.slot_of(pid) {
            let s = &self.hdr().slots[i];
            if s.pid.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                s.state.store(RUNNING, Ordering::SeqCst);
                self.bump();
            }
        }
    }

    fn slot(&self, i: usize) -> Option<&Slot> {
        self.hdr().slots.get(i)
    }

    /// Writes slot `i`'s text (what its participants do); only while it is not published.
    pub fn set_text(&self, i: usize, text: &str) {
        let Some(s) = self.slot(i) else { return };
        if s.state.load(Ordering::SeqCst) == STUCK {
            return; // a published slot's text must not move (module invariants)
        }
        s.text_seq.fetch_add(1, Ordering::SeqCst);
        put_bytes(&s.text, &s.text_len, text.as_bytes());
        s.text_seq.fetch_add(1, Ordering::SeqCst);
    }

    /// Publishes that every participant of slot `i`'s process waits forever, described by
    /// `text`; `blocked`: one of them is blocked in a channel operation. Returns the epoch.
    pub fn publish(&self, i: usize, text: &str, blocked: bool) -> u64 {
        let Some(s) = self.slot(i) else { return 0 };
        let _ = self.withdraw(i);
        self.set_text(i, text);
        s.blocked.store(u32::from(blocked), Ordering::SeqCst);
        let e = self.bump();
        s.pub_epoch.store(e, Ordering::SeqCst);
        s.state.store(STUCK, Ordering::SeqCst);
        e
    }

    /// Withdraws slot `i`'s publication (one of its participants runs again); returns the
    /// epoch the withdrawal made, if it was published.
    pub fn withdraw(&self, i: usize) -> Option<u64> {
        let s = self.slot(i)?;
        (s.state.swap(RUNNING, Ordering::SeqCst) == STUCK).then(|| self.bump())
    }

    /// Sets the oldest epoch at which slot `i`'s shared waits were confirmed.
    pub fn set_conf(&self, i: usize, conf: u64) {
        if let Some(s) = self.slot(i) {
            s.conf.store(conf, Ordering::SeqCst);
        }
    }

    /// The epoch slot `i` was published at, while it is published.
    pub fn published(&self, i: usize) -> Option<u64> {
        let s = self.slot(i)?;
        (s.state.load(Ordering::SeqCst) == STUCK).then(|| s.pub_epoch.load(Ordering::SeqCst))
    }

    fn text_of(s: &Slot) -> Option<String> {
        for _ in 0..8 {
            let a = s.text_seq.load(Ordering::SeqCst);
            if a % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let t = get_bytes(&s.text, &s.text_len);
            if s.text_seq.load(Ordering::SeqCst) == a {
                return Some(t);
            }
        }
        None
    }

    /// Every taken slot (for dumps): best effort, not a consistent snapshot.
    pub fn slots(&self) -> Vec<SlotView> {
        let mut out = Vec::new();
        for s in &self.hdr().slots {
            let pid = s.pid.load(Ordering::SeqCst);
            if pid == 0 {
                continue;
            }
            let stuck = s.state.load(Ordering::SeqCst) == STUCK;
            let text = Self::text_of(s).unwrap_or_default();
            out.push(SlotView { pid, stuck, text });
        }
        out
    }

    /// Proves a deadlock of the whole network, if there is one now: every taken slot is
    /// published, every shared wait was confirmed at the current epoch, at least one process
    /// is blocked in a channel operation, and the epoch did not move while all that was read.
    /// A slot held by a process that no longer exists is freed (and nothing is proven now).
    pub fn check(&self) -> Option<Proof> {
        let h = self.hdr();
        let e1 = self.epoch();
        let mut slots = Vec::new();
        let mut blocked = false;
        for s in &h.slots {
            let pid = s.pid.load(Ordering::SeqCst);
            if pid == 0 {
                continue;
            }
            if !alive(pid) {
                // Died without releasing its slot (killed): it can never run again, but its
                // peers learn of it through the poison its parent spreads, not through us.
                if s.pid.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    self.bump();
                }
                return None;
            }
            if s.state.load(Ordering::SeqCst) != STUCK || s.conf.load(Ordering::SeqCst) < e1 {
                return None;
            }
            blocked |= s.blocked.load(Ordering::SeqCst) != 0;
            let text = Self::text_of(s)?;
            slots.push(SlotView { pid, stuck: true, text });
        }
        if slots.is_empty() || !blocked || self.epoch() != e1 {
            return None;
        }
        Some(Proof { epoch: e1, slots })
    }

    /// Announces the deadlock proven at `epoch` with `report`, unless the epoch moved or
    /// another process is announcing one; returns whether it did.
    pub fn declare(&self, epoch: u64, report: &str) -> bool {
        let h = self.hdr();
        let me = u64::from(std::process::id());
        let d = h.decl.load(Ordering::SeqCst);
        let claimer = u32::try_from(d >> 32).unwrap_or(0);
        if claimer != 0 {
            if !alive(claimer) {
                // Died while announcing: give the claim back (same generation).
                let _ =
                    h.decl.compare_exchange(d, d & 0xffff_ffff, Ordering::SeqCst, Ordering::SeqCst);
            }
            return false;
        }
        let gen = d & 0xffff_ffff;
        if h.decl.compare_exchange(d, (me << 32) | gen, Ordering::SeqCst, Ordering::SeqCst).is_err()
        {
            return false;
        }
        put_bytes(&h.report, &h.report_len, report.as_bytes());
        h.decl_epoch.store(epoch, Ordering::SeqCst);
        let ok = self.epoch() == epoch;
        let next = if ok { (gen + 1) & 0xffff_ffff } else { gen };
        h.decl.store(next, Ordering::SeqCst);
        ok
    }

    /// The latest verdict, if its generation differs from `seen` (and no announcement is being
    /// written now).
    pub fn verdict(&self, seen: u32) -> Option<Verdict> {
        let h = self.hdr();
        let d = h.decl.load(Ordering::SeqCst);
        let gen = u32::try_from(d & 0xffff_ffff).unwrap_or(0);
        if d >> 32 != 0 || gen == seen {
            return None;
        }
        let epoch = h.decl_epoch.load(Ordering::SeqCst);
        let report = get_bytes(&h.report, &h.report_len);
        (h.decl.load(Ordering::SeqCst) == d).then_some(Verdict { generation: gen, epoch, report })
    }

    /// The latest verdict, if any was announced (and none is being written now).
    pub fn latest(&self) -> Option<Verdict> {
        let v = self.verdict(0)?;
        Some(v)
    }

    /// The current verdict generation (what [`Table::verdict`] compares with).
    pub fn generation(&self) -> u32 {
        u32::try_from(self.hdr().decl.load(Ordering::SeqCst) & 0xffff_ffff).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_check_declare() {
        let t = Table::create().expect("table");
        let me = std::process::id();
        let i = t.reserve(me).expect("slot");
        assert!(t.check().is_none(), "a running slot proves nothing");
        t.set_conf(i, 0);
        let e = t.publish(i, "x", true);
        assert!(t.check().is_none(), "a shared wait not confirmed proves nothing");
        t.set_conf(i, e);
        let p = t.check().expect("proof");
        assert_eq!(p.slots.len(), 1);
        assert_eq!(p.slots[0].text, "x");
        let g = t.generation();
        assert!(t.declare(p.epoch, "report"));
        let v = t.verdict(g).expect("verdict");
        assert_eq!(v.report, "report");
        assert_eq!(v.epoch, p.epoch);
        assert!(t.verdict(v.generation).is_none());
        t.withdraw(i);
        assert!(t.published(i).is_none());
        assert!(t.check().is_none());
    }

    #[test]
    fn stale_proof_is_not_declared() {
        let t = Table::create().expect("table");
        let i = t.reserve(std::process::id()).expect("slot");
        let e = t.publish(i, "x", true);
        t.set_conf(i, u64::MAX);
        let p = t.check().expect("proof");
        assert_eq!(p.epoch, e);
        t.withdraw(i);
        assert!(!t.declare(p.epoch, "late"), "the epoch moved since the proof");
    }

    #[test]
    fn a_dead_slot_is_taken_back() {
        let t = Table::create().expect("table");
        // pid 0x7fff_fff0 exists on no Linux system (pid_max is at most 2^22).
        let dead = 0x7fff_fff0;
        let i = t.reserve(dead).expect("slot");
        t.publish(i, "dead", true);
        assert!(t.check().is_none());
        assert!(t.slot_of(dead).is_none());
    }

    #[test]
    fn attach_sees_the_same_table() {
        let t = Table::create().expect("table");
        let u = Table::attach(std::process::id(), t.fd(), &t.uuid()).expect("attach");
        let i = t.reserve(std::process::id()).expect("slot");
        u.set_text(i, "hello");
        assert_eq!(t.slots()[0].text, "hello");
    }
}
