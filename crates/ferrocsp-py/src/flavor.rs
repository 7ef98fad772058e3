//! `Flavors`: what a `Channel`'s operations go to besides its in-process engine channel, in
//! crossbeam's "flavors" style: the shared-memory side once the channel moved there
//! (`shm_side.rs`), or the networked side it was born with (`net_side.rs`).
//!
//! Invariants:
//! - At most one flavor is ever set, and once set it never changes: `net` at birth
//!   (`Channel._networked`), `shm` by the move (`shm_move.rs`, under `move_lock`).
//! - Shared (`Arc`) by the channel and by its asyncio operations in flight, which follow a
//!   move through it without naming the Python `Channel` type.

use std::sync::OnceLock;

use pyo3::prelude::*;

use crate::move_lock::MoveLock;
use crate::net_side::NetSide;
use crate::shm_side::ShmSide;

#[derive(Debug, Default)]
pub(crate) struct Flavors {
    /// Set once the channel has moved to shared memory: every operation then goes there.
    pub(crate) shm: OnceLock<Py<ShmSide>>,
    /// Set at birth for a networked channel: every operation goes there.
    pub(crate) net: OnceLock<NetSide>,
    /// Makes the move atomic with respect to the ends (`move_lock.rs`).
    pub(crate) move_lock: MoveLock,
}

impl Flavors {
    /// Whether operations go to another transport (shared memory or the network).
    pub(crate) fn is_remote(&self) -> bool {
        self.shm.get().is_some() || self.net.get().is_some()
    }
}
