//! Fault injection: named points of the shared-memory protocol where a test build can stop
//! its own process, so that a harness can kill it (SIGKILL) at exactly the instant that
//! matters instead of hoping a sleep lands there (`tests/shm_faults/`).
//!
//! A point is `fault_point!("name")` in the protocol's code. Without the cargo feature
//! `fault-injection` the macro expands to nothing at all: no load, no branch, no symbol. With
//! it, a process *armed* for `(name, nth)` stops itself with `SIGSTOP` at the `nth` time it
//! passes that point (counting from 1, in this process only); a parent sees it stopped
//! (`waitid(WSTOPPED | WNOWAIT)`), which proves the point was reached, then kills it. A process
//! is armed by [`arm`] (a forked test peer), or by the environment variable
//! `FERROCSP_FAULT=name:nth`, read at the first point passed (a child that is not forked by
//! the test, a Python one say).
//!
//! Invariants:
//! - Every name passed to `fault_point!` is in [`POINTS`] (checked in debug builds at the
//!   point; `tests/shm_faults/` checks that each is reached): the list is the contract a
//!   harness relies on, so names are stable.
//! - A point never changes what the protocol does: it only counts, and perhaps stops the
//!   process where it stands (whatever locks and entries it holds stay held, as after a kill).
//! - Stopping uses only async-signal-safe calls (`raise`), so a point is allowed anywhere,
//!   a robust mutex held included.

/// Marks a named point of the protocol (see the module docs). Expands to nothing unless the
/// crate is built with the `fault-injection` feature.
macro_rules! fault_point {
    ($name:literal) => {
        #[cfg(feature = "fault-injection")]
        $crate::shm::fault::hit($name);
    };
}
pub(crate) use fault_point;

/// Every point, with the protocol state a process stopped there is in (the harness kills it
/// there, so each is a state a peer can die in).
#[cfg(feature = "fault-injection")]
pub const POINTS: &[&str] = &[
    // holding a channel's robust mutex, just taken
    "lock.taken",
    // lock held, the tail moved over a new entry whose header is not written
    "ring.reserved",
    // lock held, an empty ring's head rewound to 0 and its tail not yet
    "ring.rewound",
    // lock held, the head moved over dead entries, their memory not given back
    "ring.advanced",
    // lock held, about to give a dead 2 MiB piece of the ring back
    "ring.punch",
    // a writer's entry WRITING, lock released, copying in (its 2nd call: mid-copy)
    "write.buf",
    // lock held in commit, the entry still WRITING
    "write.commit",
    // lock held, the entry just published READY
    "write.ready",
    // lock held, a rendezvous writer saw its entry TAKEN, not yet DONE
    "write.taken",
    // lock held, an entry just claimed READING with its owner
    "read.claimed",
    // a reader's entry READING, lock released, copying out (2nd call: mid-copy)
    "read.buf",
    // lock held in finish, the entry still READING
    "read.finish",
    // lock held, the entry just released TAKEN or DONE
    "read.released",
    // lock released, a waiter counted (waiting counts, sleepers) about to sleep
    "wait.sleep",
    // an Alt's offer reserved WRITING and filled, no lock (others not yet)
    "alt.reserved",
    // lock held, an Alt's input record just written
    "alt.record",
    // all the Alt's locks held, one guard's offer or record registered
    "alt.published",
    // an Alt with every offer and record registered, locks released, asleep
    "alt.waiting",
    // all the Alt's locks held, its cell found fired by a counterpart
    "alt.fired",
    // an Alt's selection cell claimed (its slot mutex held), nothing registered
    "cell.acquired",
    // a counterpart holding a channel lock just fired an Alt's cell, not claimed
    "cell.fired",
];

/// The names of every point (see [`POINTS`]).
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub fn points() -> &'static [&'static str] {
    POINTS
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// The armed point's index in `POINTS` plus one (0: none). `usize::MAX`: the environment
    /// has not been read yet.
    static POINT: AtomicUsize = AtomicUsize::new(usize::MAX);
    /// Hits of the armed point still to pass before the one that stops.
    static LEFT: AtomicU64 = AtomicU64::new(0);

    fn index(name: &str) -> Option<usize> {
        super::POINTS.iter().position(|p| *p == name)
    }

    /// Arms this process to stop at the `nth` (from 1) pass of point `name` from now on;
    /// `Err` for a name that is not a point or an `nth` of 0.
    pub fn arm(name: &str, nth: u64) -> Result<(), String> {
        let i = index(name).ok_or_else(|| format!("no fault point named {name:?}"))?;
        if nth == 0 {
            return Err("the hits are counted from 1".into());
        }
        LEFT.store(nth, Ordering::SeqCst);
        POINT.store(i + 1, Ordering::SeqCst);
        Ok(())
    }

    /// Disarms this process.
    pub fn disarm() {
        POINT.store(0, Ordering::SeqCst);
    }

    /// `FERROCSP_FAULT=name:nth`, read once (at the first point passed, unless `arm` came
    /// first). A malformed value is a panic: a test that meant to arm a point must not run
    /// unarmed and pass.
    fn from_env() {
        let Ok(v) = std::env::var("FERROCSP_FAULT") else {
            let _ = POINT.compare_exchange(usize::MAX, 0, Ordering::SeqCst, Ordering::SeqCst);
            return;
        };
        let parsed = v.rsplit_once(':').and_then(|(n, k)| Some((n, k.parse::<u64>().ok()?)));
        let Some((name, nth)) = parsed else {
            panic!("FERROCSP_FAULT={v:?}: expected name:nth");
        };
        if let Err(e) = arm(name, nth) {
            panic!("FERROCSP_FAULT={v:?}: {e}");
        }
    }

    pub fn hit(name: &'static str) {
        let mut p = POINT.load(Ordering::Acquire);
        if p == usize::MAX {
            from_env();
            p = POINT.load(Ordering::Acquire);
        }
        debug_assert!(index(name).is_some(), "fault point {name:?} missing from POINTS");
        if p == 0 || super::POINTS.get(p - 1).is_none_or(|q| *q != name) {
            return;
        }
        if LEFT.fetch_sub(1, Ordering::AcqRel) == 1 {
            POINT.store(0, Ordering::Release);
            // SAFETY: raise is async-signal-safe; SIGSTOP stops the whole process here, with
            // whatever it holds, until the harness kills (or continues) it.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::{arm, disarm};

#[cfg(feature = "fault-injection")]
pub(crate) use armed::hit;
