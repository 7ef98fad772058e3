//! Forking while detection runs: a child made by `fork` inherits every lock in whatever state
//! another thread held it, and has none of those threads to release it; it also inherits the
//! parent's participants (threads and tasks it does not have) and the watchdog's state without
//! the watchdog.
//!
//! So every lock and count of the registry, the watchdog and the publication is a
//! [`PerProcess`] value: the first use in a child made by `fork` finds that the fork
//! generation moved (a `pthread_atfork` child handler bumps it, inside `fork` itself) and
//! makes a fresh one, leaking the parent's (with whatever lock it held). A participant
//! remembers the generation it was registered in (`Participant::here`); one of the parent's
//! is never touched in the child (its lock may be held), nor counted.
//!
//! Invariants:
//! - `FORK_GEN` changes only in the child handler (an atomic add: async-signal-safe), which is
//!   registered before the first `PerProcess` value is made, so before any of them can be
//!   inherited.
//! - A `PerProcess` value is never freed: references to it live as long as the process.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Once;

/// Bumped in every child made by `fork` (see the module doc).
static FORK_GEN: AtomicU32 = AtomicU32::new(0);

extern "C" fn forked_child() {
    FORK_GEN.fetch_add(1, Ordering::SeqCst);
}

/// The fork generation of this process (0 in a process not made by `fork` from one using
/// detection); registers the child handler on first use, so before anything that a child
/// could inherit reads the generation.
pub(super) fn generation() -> u32 {
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| {
        // SAFETY: registers a child handler that only does an atomic add (allowed between
        // `fork` and `exec`); a failure (ENOMEM) leaves forked children without detection
        // state of their own, as before this module existed.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    FORK_GEN.load(Ordering::Acquire)
}

struct Cell<T> {
    gen: u32,
    value: T,
}

/// A value of this process: a child made by `fork` gets a fresh one (module doc).
pub(super) struct PerProcess<T> {
    ptr: AtomicPtr<Cell<T>>,
    init: fn() -> T,
    /// Shared between threads as a `T` is (`AtomicPtr` alone would be `Sync` for any `T`).
    _t: PhantomData<T>,
}

impl<T> PerProcess<T> {
    pub(super) const fn new(init: fn() -> T) -> Self {
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

impl<T> std::ops::Deref for PerProcess<T> {
    type Target = T;

    fn deref(&self) -> &T {
        let gen = generation();
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `fresh` and is never freed.
        match unsafe { p.as_ref() } {
            Some(c) if c.gen == gen => &c.value,
            _ => self.fresh(p, gen),
        }
    }
}
