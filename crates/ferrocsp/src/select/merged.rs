//! One try over this selection's operations and guards that live elsewhere, in one order: the
//! in-process half of an Alt whose other guards are on shared channels (`shm/mixed.rs`) tries
//! its guards in the policy's order whatever their transport.
//!
//! Invariants:
//! - Every channel lock of this selection is held for the whole walk (taken in address order,
//!   after whatever locks the caller holds for the other guards: the caller's lock order is
//!   "shared channels, then in-process ones"), so the walk sees the in-process side as one
//!   snapshot, as the plain try does.
//! - The walk stops at the first operation that fires (or fails) or at the first other guard
//!   whose callback says so; nothing is registered, and nobody is woken before the locks go.

use super::protocol::try_op;
use super::{Policy, Select, Selected};
use crate::channel::{wake_all, Guard, Woken};
use crate::error::SelectError;
use std::time::Instant;

/// One place in the order of a [`Select::try_merged`] walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Turn {
    /// This selection's operation (its index in the `Select`).
    Op(usize),
    /// A guard outside this selection (the caller's index), tried by the walk's callback.
    Other(usize),
}

impl<T> Select<T> {
    /// Tries the operations and outside guards in `order` (each once, in that order), with
    /// every channel of this selection locked throughout; `other(i)` tries outside guard `i`
    /// and returns true to end the walk (it fired, or counts as ready). Registers nothing.
    ///
    /// Returns what an operation that fired (or failed) produced; `Err(WouldBlock)` if the
    /// callback ended the walk, or nothing fired but an operation may fire later;
    /// `Err(Retired)` if nothing fired and no operation of this selection ever can (operations
    /// missing from `order` are not tried, and indices out of range are skipped).
    pub fn try_merged(
        &mut self,
        order: &[Turn],
        other: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Selected<T>, SelectError> {
        self.begin(Policy::Priority, None);
        self.waitable.clear();
        let now = if self.op_deadlines.is_empty() { None } else { Some(Instant::now()) };
        let mut woken = Woken::new();
        let Select { ops, locks, waitable, op_deadlines, .. } = self;
        let mut stopped = false;
        let result = {
            let mut guards: Vec<Guard<'_, T>> =
                locks.iter().map(|c| c.inner.state.lock()).collect();
            let mut timeout_live = false;
            let mut result = None;
            for &turn in order {
                match turn {
                    Turn::Op(i) if i < ops.len() => {
                        result = try_op(
                            ops,
                            i,
                            &mut guards,
                            op_deadlines,
                            now,
                            &mut woken,
                            waitable,
                            &mut timeout_live,
                        );
                        if result.is_some() {
                            break;
                        }
                    }
                    Turn::Op(_) => {}
                    Turn::Other(i) => {
                        if other(i) {
                            stopped = true;
                            break;
                        }
                    }
                }
            }
            for g in guards.iter() {
                g.check();
            }
            match result {
                Some(r) => r,
                None if stopped || !waitable.is_empty() || timeout_live => {
                    Err(SelectError::WouldBlock)
                }
                None => Err(SelectError::Retired),
            }
        };
        wake_all(woken);
        if let Ok(s) = &result {
            self.last = Some(s.index);
        }
        result
    }
}
