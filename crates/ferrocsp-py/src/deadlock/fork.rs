//! Forking while detection runs: a child made by `fork` inherits every lock in whatever state
//! another thread held it, and has none of those threads to release it.
//!
//! Invariant: a look at this process's participants from another thread than the caller's
//! (the watchdog's `poll`/`publish`, `show`) holds `FORK_GATE` throughout and never waits for
//! the GIL while holding it; a thread that forks holds the gate across the fork
//! (`os.register_at_fork` hooks, registered by `ferrocsp._backends._os`). So no child
//! inherits a registry or participant lock held by such a look.

use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;

use super::lock;

/// Held for the whole of each look at this process's participants from a thread other than
/// the caller's (`poll`, `publish`, `show`: none of them waits for the GIL while holding it),
/// and by a thread that forks (`_fork_prepare` .. `_fork_parent`/`_fork_child`): so a child
/// made by `fork` never inherits a registry or participant lock that such a look held.
static FORK_GATE: Mutex<()> = Mutex::new(());

thread_local! {
    /// The gate held by this thread across a `fork` (see [`FORK_GATE`]).
    static FORKING: std::cell::RefCell<Option<MutexGuard<'static, ()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Holds the gate for one look at the participants.
pub(super) fn gate() -> MutexGuard<'static, ()> {
    lock(&FORK_GATE)
}

/// ``os.register_at_fork(before=...)``: waits until no look at the participants is under way
/// and keeps new ones out until the fork is done (see [`FORK_GATE`]).
#[pyfunction]
pub(crate) fn _fork_prepare() {
    // The gate's holders never wait for the GIL, so waiting for it with the GIL held ends.
    let g = lock(&FORK_GATE);
    FORKING.with(|f| *f.borrow_mut() = Some(g));
}

/// ``os.register_at_fork(after_in_parent=..., after_in_child=...)``: releases the gate.
#[pyfunction]
pub(crate) fn _fork_done() {
    FORKING.with(|f| drop(f.borrow_mut().take()));
}
