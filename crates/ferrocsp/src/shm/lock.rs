//! The segment's own lock: one 64-bit word in the header whose value names the thread that
//! holds it, so that a waiter can tell a live holder from a dead one or from garbage.
//!
//! Why not a robust process-shared pthread mutex (what the segment had): its bytes are glibc's
//! internals in memory every peer can write. A peer that scribbles a random owner over it
//! makes `pthread_mutex_lock` wait forever (no owner-died bit: the kernel never sets one for a
//! thread that never held it), and scribbled list pointers send glibc's robust-list code (which
//! links a held mutex into the thread's own list) through addresses of the peer's choosing.
//! Here nothing read back from the word is ever followed: it is compared, decoded and checked.
//!
//! The word: 0 when free; else `tag << 32 | WAITERS? | tid`, where `tid` is the holder's
//! kernel thread id and `tag` the low 32 bits of that thread's start time with the lowest bit
//! set (so a tid that a new thread reuses is not taken for the holder, and no holder's value
//! has an upper half of 0). `WAITERS` says a thread may sleep on it.
//!
//! Invariants:
//! - Taking the lock is one compare-and-swap `0 -> me` when it is free (the uncontended cost
//!   of a pthread mutex); releasing it is one swap to 0, and a futex wake only if `WAITERS`.
//! - A waiter sleeps on the word's low half (the futex compares 32 bits) in slices of
//!   [`PEER_CHECK`]; once the same holder value has stood for a whole slice it looks at the
//!   holder: a thread that no longer runs (gone, a zombie, or another thread under the same
//!   tid) is dead, and a value that cannot name any thread (a tid of 0 or beyond the kernel's
//!   limit, stray bits, a tag without its low bit) is garbage. Either way the waiter takes the lock over by a
//!   compare-and-swap from exactly that value (one waiter wins) and the caller poisons the
//!   channel (`OwnerDied`, `Corrupt`). A live holder is never taken over, however long it
//!   holds the lock.
//! - A release that finds another value than its own (the word was scribbled while held)
//!   reports it, and the channel is poisoned as corrupt.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::fork::fork_generation;
use super::sys;
use super::wait::PEER_CHECK;

/// Someone may sleep on the word: a release wakes one.
const WAITERS: u64 = 1 << 31;
/// The kernel's largest thread id is below `PID_MAX_LIMIT` (4 Mi, `linux/threads.h`).
const TID_LIMIT: u64 = 1 << 22;
const TID_MASK: u64 = WAITERS - 1;
/// A new holder spins this many times before it sleeps (critical sections are short).
const SPINS: u32 = 100;

/// How taking the lock went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Taken {
    /// Taken normally.
    Clean,
    /// Taken over from a holder that died holding it: what it protects may be half-updated.
    OwnerDied,
    /// Taken over from a value no thread could have written (a scribble).
    Garbage,
}

thread_local! {
    /// This thread's word value, with the fork generation it was computed in (a child made by
    /// `fork` runs the forking thread under a new tid: `fork.rs`).
    static ME: Cell<(u32, u64)> = const { Cell::new((u32::MAX, 0)) };
}

/// The calling thread's value of the word (never 0, never with `WAITERS`); also what a
/// selection cell's slot records as its owner (`cells.rs`).
pub(super) fn thread_value() -> u64 {
    me()
}

/// The calling thread's value of the word (never 0, never with `WAITERS`).
fn me() -> u64 {
    let gen = fork_generation();
    // `try_with`: a guard dropped while this thread's locals are being destroyed still
    // unlocks (its value is then worked out again, uncached).
    let (at, v) = ME.try_with(Cell::get).unwrap_or((u32::MAX, 0));
    if at == gen && v != 0 {
        return v;
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64 & TID_MASK;
    // Never 0 (the low bit set), so that no value with a zero upper half is a holder's: a
    // peer's few stray bytes over a free word are garbage, never a plausible holder.
    let tag = sys::thread_start(tid as u32).map_or(0, |s| s as u32) | 1;
    let v = u64::from(tag) << 32 | tid;
    let _ = ME.try_with(|m| m.set((gen, v)));
    v
}

/// What a waiter concludes about the holder value `v` (not 0).
fn holder_gone(v: u64) -> Option<Taken> {
    let tid = v & TID_MASK;
    let stray = v & !(TID_MASK | WAITERS | (u64::from(u32::MAX) << 32));
    if tid == 0 || tid >= TID_LIMIT || stray != 0 {
        return Some(Taken::Garbage);
    }
    let tag = (v >> 32) as u32;
    if tag & 1 == 0 {
        return Some(Taken::Garbage);
    }
    match sys::thread_running(tid as u32) {
        Some(start) if start as u32 | 1 == tag => None,
        _ => Some(Taken::OwnerDied),
    }
}

/// The lock word in a segment's header.
pub(super) struct SegLock<'a> {
    word: &'a AtomicU64,
}

impl<'a> SegLock<'a> {
    pub(super) fn new(word: &'a AtomicU64) -> Self {
        SegLock { word }
    }

    /// The half of the word a futex compares (the one holding the tid and `WAITERS`).
    fn low(&self) -> *const u32 {
        let p = self.word.as_ptr().cast::<u32>().cast_const();
        // SAFETY: both halves lie inside the word.
        if cfg!(target_endian = "little") {
            p
        } else {
            unsafe { p.add(1) }
        }
    }

    /// Takes the lock; `give_up` is asked after every slice spent waiting and ends the wait
    /// with None when it says so (the channel was poisoned meanwhile, say).
    pub(super) fn lock(&self, give_up: impl FnMut() -> bool) -> Option<Taken> {
        let me = me();
        if self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Some(Taken::Clean);
        }
        self.lock_slow(me, give_up)
    }

    #[cold]
    fn lock_slow(&self, me: u64, mut give_up: impl FnMut() -> bool) -> Option<Taken> {
        for _ in 0..SPINS {
            std::hint::spin_loop();
            if self.word.load(Ordering::Relaxed) == 0
                && self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return Some(Taken::Clean);
            }
        }
        // The holder value being watched, and since when.
        let mut watched: Option<(u64, Instant)> = None;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                // Others may sleep too: keep `WAITERS` so that our release wakes the next.
                match self.word.compare_exchange(
                    0,
                    me | WAITERS,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(Taken::Clean),
                    Err(_) => continue,
                }
            }
            let v = if v & WAITERS == 0 {
                match self.word.compare_exchange(
                    v,
                    v | WAITERS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => v | WAITERS,
                    Err(_) => continue,
                }
            } else {
                v
            };
            let now = Instant::now();
            match watched {
                Some((w, since)) if w == v => {
                    if now.duration_since(since) >= PEER_CHECK {
                        if let Some(why) = holder_gone(v) {
                            // From exactly the value judged: of several waiters, one wins.
                            if self
                                .word
                                .compare_exchange(
                                    v,
                                    me | WAITERS,
                                    Ordering::Acquire,
                                    Ordering::Relaxed,
                                )
                                .is_ok()
                            {
                                return Some(why);
                            }
                            continue;
                        }
                        watched = Some((v, now));
                        if give_up() {
                            return None;
                        }
                    }
                }
                _ => watched = Some((v, now)),
            }
            sys::futex_wait_raw(self.low(), v as u32, Some(PEER_CHECK));
        }
    }

    /// Releases the lock held by this thread. Returns false if the word no longer named this
    /// thread (someone wrote over it while it was held).
    pub(super) fn unlock(&self) -> bool {
        let v = self.word.swap(0, Ordering::Release);
        if v & WAITERS != 0 {
            sys::futex_wake_raw(self.low(), 1);
        }
        v & !WAITERS == me()
    }

    /// Wakes every thread sleeping on the word (after a scribble, so none sleeps on garbage).
    pub(super) fn wake_all(&self) {
        sys::futex_wake_raw(self.low(), i32::MAX);
    }
}
