//! The accounting log: what each process of a trial has done, in anonymous shared memory
//! mapped before the fork, so it survives the death of any of them and is exact.
//!
//! Invariants:
//! - Each process appends only to its own row, and writes an event before it publishes the
//!   row's new length (Release); a reader of the row sees only whole events (Acquire), so a
//!   process killed mid-append leaves its row as it was before that event.
//! - An event is logged right after the operation it reports returned (`WROTE`, `READ`), or
//!   right before it starts (`TRY`): what a dead process did between the two is read from
//!   the ring snapshot taken while it was stopped (`inspect.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Rows (processes and threads taking part in one trial).
pub const ROWS: usize = 8;
const EVENTS: usize = 1 << 12;

/// Event kinds (the high byte of an event; the id in the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ev {
    /// About to write this id.
    Try = 1,
    /// The write of this id returned Ok.
    Wrote = 2,
    /// The write of this id raised (poisoned, retired): it must not be delivered.
    WriteFailed = 3,
    /// The bytes of this id were copied out (the read has not returned yet).
    Copied = 4,
    /// The read of this id returned it.
    Read = 5,
    /// The read that copied this id raised after the copy (its `finish` failed).
    ReadFailed = 6,
    /// The role ended; the id is 0, or the failure bits of `fail`.
    End = 7,
    /// The role's operations returned for the last time at this `CLOCK_MONOTONIC` instant
    /// (nanoseconds; the same clock in every process).
    Done = 8,
}

/// Why a role failed (bits of an `End` event's id).
pub mod fail {
    /// An operation timed out: a survivor hung.
    pub const HANG: u64 = 1;
    /// A message did not hold the bytes its writer wrote.
    pub const GARBLED: u64 = 2;
    /// An error the protocol never gives here.
    pub const UNEXPECTED: u64 = 4;
    /// Descriptors, memfd mappings or threads more than at the start.
    pub const LEAK: u64 = 8;
}

#[repr(C)]
struct Row {
    len: AtomicU64,
    ev: [AtomicU64; EVENTS],
}

/// One trial's log (shared with every process forked after it is made).
#[derive(Debug)]
pub struct Log {
    rows: *mut Row,
}

// SAFETY: plain shared memory accessed through atomics only.
unsafe impl Send for Log {}
// SAFETY: as above.
unsafe impl Sync for Log {}

const BYTES: usize = ROWS * std::mem::size_of::<Row>();

impl Log {
    pub fn new() -> Log {
        // SAFETY: a fresh anonymous shared mapping (zeroed), unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap the log");
        Log { rows: p.cast() }
    }

    fn row(&self, r: usize) -> &Row {
        assert!(r < ROWS);
        // SAFETY: inside the mapping; zeroed atomics are valid.
        unsafe { &*self.rows.add(r) }
    }

    pub fn push(&self, r: usize, kind: Ev, id: u64) {
        let row = self.row(r);
        let n = row.len.load(Ordering::Relaxed) as usize;
        assert!(n < EVENTS, "log row {r} full");
        row.ev[n].store((kind as u64) << 56 | id, Ordering::Relaxed);
        row.len.store(n as u64 + 1, Ordering::Release);
    }

    /// Row `r`'s events, in order.
    pub fn events(&self, r: usize) -> Vec<(Ev, u64)> {
        let row = self.row(r);
        let n = row.len.load(Ordering::Acquire) as usize;
        (0..n.min(EVENTS))
            .map(|i| {
                let v = row.ev[i].load(Ordering::Relaxed);
                let kind = match v >> 56 {
                    1 => Ev::Try,
                    2 => Ev::Wrote,
                    3 => Ev::WriteFailed,
                    4 => Ev::Copied,
                    5 => Ev::Read,
                    6 => Ev::ReadFailed,
                    7 => Ev::End,
                    8 => Ev::Done,
                    k => panic!("row {r}: event kind {k}"),
                };
                (kind, v & ((1 << 56) - 1))
            })
            .collect()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // SAFETY: what mmap returned in `new`.
        unsafe { libc::munmap(self.rows.cast(), BYTES) };
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (comparable across processes).
pub fn now_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a plain clock read into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
