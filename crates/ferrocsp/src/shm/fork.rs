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
//! - A `PerProcess` value lives as long as its owner: a static's forever, a field's until its
//!   struct drops, which frees the value of the process that drops it (a parent's, inherited
//!   by a child that never used it, is the child's own copy to free). A value replaced in a
//!   child is leaked, never freed: a reference from before the fork may still be in use by
//!   the forking thread.
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

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: from `Box::into_raw` in `fresh`; `&mut self` proves no reference to it
            // is left (each borrows `self`).
            drop(unsafe { Box::from_raw(p) });
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

#[cfg(all(test, not(miri)))]
mod tests {
    use super::PerProcess;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    /// A struct's `PerProcess` lock held by another thread at `fork` is free in the child
    /// (as a plain field, the child waited for ever: the holder is not in it).
    #[test]
    fn a_field_locked_by_another_thread_at_fork_is_free_in_the_child() {
        struct Chan {
            local: PerProcess<Mutex<u32>>,
        }
        let ch = Arc::new(Chan { local: PerProcess::new(Default::default) });
        *ch.local.lock().expect("lock") = 7;
        let (held, release) = (mpsc::channel(), mpsc::channel::<()>());
        let holder = {
            let ch = Arc::clone(&ch);
            std::thread::spawn(move || {
                let g = ch.local.lock().expect("lock");
                held.0.send(()).expect("send");
                let _ = release.1.recv();
                drop(g);
            })
        };
        held.1.recv().expect("held");
        // SAFETY: the child only locks a std mutex, reads it and calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // Bounded by the parent's wait below: a child stuck here is killed and fails it.
            let fresh = *ch.local.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: ends the child without running the parent's atexit handlers or tests.
            unsafe { libc::_exit(if fresh == 0 { 0 } else { 2 }) };
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let done = loop {
            // SAFETY: waits for our own child without blocking.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break true;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        release.0.send(()).expect("release");
        holder.join().expect("holder");
        assert!(done, "the child waited for a lock its parent's thread held at the fork");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status}");
        assert_eq!(*ch.local.lock().expect("lock"), 7, "the parent keeps its own value");
    }

    /// A field's value is freed with its struct.
    #[test]
    fn a_fields_value_is_dropped_with_it() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Count;
        impl Drop for Count {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        let unused: PerProcess<Count> = PerProcess::new(|| Count);
        drop(unused);
        assert_eq!(DROPS.load(Ordering::SeqCst), 0, "a value never made is not dropped");
        let used: PerProcess<Count> = PerProcess::new(|| Count);
        let _ = &*used;
        drop(used);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    }
}
