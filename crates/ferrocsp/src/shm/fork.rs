//! What a child made by `fork` inherits of this process's engine state, and how it starts
//! afresh.
//!
//! A child made by `fork` gets a copy of the parent's memory and only the thread that forked:
//! every lock another thread held at that instant stays locked forever, and every record of a
//! thread (a futex watcher, a selecting thread's cells) names one the child does not have. So
//! the engine's process-wide state (the futex watchers' registry, `watch.rs`; the cells
//! registry, `cells.rs`; in the bindings, deadlock detection's registry and watchdog) is a
//! [`PerProcess`] value: a `pthread_atfork` child handler bumps a
//! fork generation inside `fork` itself, and the first use in the child makes a fresh value,
//! leaking the parent's (its locks, its threads' records, its mappings: a few words per fork).
//!
//! Invariants:
//! - `FORK_GEN` changes only in the child handler (an atomic add: async-signal-safe), which is
//!   registered before the first `PerProcess` value is made, so before any can be inherited.
//! - A `PerProcess` value is never freed: references to it live as long as the process.
//! - Generations along a line of forks never repeat (unlike pids, which a grandchild may reuse).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// Bumped in every child made by `fork` (see the module doc).
static FORK_GEN: AtomicU32 = AtomicU32::new(0);

extern "C" fn forked_child() {
    FORK_GEN.fetch_add(1, Ordering::SeqCst);
}

/// Whether the child handler is registered: `DONE`, or 0 (not yet), or the pid of the
/// process whose thread is registering it.
static HANDLER: AtomicU32 = AtomicU32::new(0);
const DONE: u32 = u32::MAX;

/// This process's fork generation (0 in a process not made by `fork` from one that asked);
/// registers the child handler on first use.
///
/// Not a `std::sync::Once`: a child forked while another thread of its parent ran the
/// registration inherits a `Once` that stays "running" for ever (that thread is not in the
/// child), and every later use in the child waited on it (a forked test child hung there).
/// A registration marked with another process's pid is such an orphan: the child registers
/// again itself (a second handler only moves the generation twice per fork).
pub fn fork_generation() -> u32 {
    if HANDLER.load(Ordering::Acquire) != DONE {
        register();
    }
    FORK_GEN.load(Ordering::Acquire)
}

#[cold]
fn register() {
    let me = std::process::id();
    let mut tries = 0u32;
    loop {
        tries += 1;
        match HANDLER.load(Ordering::Acquire) {
            DONE => return,
            // Another thread of this process is registering: a few microseconds. (Past a
            // bound, an ancestor's orphan that happens to carry our pid: take it over.)
            who if who == me && tries < 10_000 => std::thread::yield_now(),
            who => {
                if HANDLER.compare_exchange(who, me, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    // SAFETY: registers a child handler that only does an atomic add (allowed
                    // between `fork` and `exec`). It fails only out of memory: a child would
                    // then use its parent's values, as before this module existed.
                    unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
                    HANDLER.store(DONE, Ordering::Release);
                    return;
                }
            }
        }
    }
}

struct Cell<T> {
    gen: u32,
    value: T,
}

/// A value of this process: a child made by `fork` gets a fresh one (module doc).
pub struct PerProcess<T> {
    ptr: AtomicPtr<Cell<T>>,
    init: fn() -> T,
    /// Shared between threads as a `T` is (`AtomicPtr` alone would be `Sync` for any `T`).
    _t: PhantomData<T>,
}

impl<T> PerProcess<T> {
    /// A value that `init` makes on first use in each process.
    pub const fn new(init: fn() -> T) -> Self {
        PerProcess { ptr: AtomicPtr::new(std::ptr::null_mut()), init, _t: PhantomData }
    }

    #[cold]
    fn fresh(&self, mut seen: *mut Cell<T>, gen: u32) -> &T {
        let new = Box::into_raw(Box::new(Cell { gen, value: (self.init)() }));
        loop {
            match self.ptr.compare_exchange(seen, new, Ordering::AcqRel, Ordering::Acquire) {
                // SAFETY: just installed from `Box::into_raw`, never freed; `seen` (the
                // parent's, if any) is leaked on purpose.
                Ok(_) => return unsafe { &(*new).value },
                Err(cur) => {
                    // SAFETY: installed values are never freed.
                    if let Some(c) = unsafe { cur.as_ref() }.filter(|c| c.gen == gen) {
                        // SAFETY: `new` was never shared.
                        drop(unsafe { Box::from_raw(new) });
                        return &c.value;
                    }
                    seen = cur;
                }
            }
        }
    }
}

impl<T> std::fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerProcess").finish_non_exhaustive()
    }
}

impl<T> std::ops::Deref for PerProcess<T> {
    type Target = T;

    fn deref(&self) -> &T {
        let gen = fork_generation();
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `fresh` and is never freed.
        match unsafe { p.as_ref() } {
            Some(c) if c.gen == gen => &c.value,
            _ => self.fresh(p, gen),
        }
    }
}
