//! The in-process half of an Alt over a mix of in-process channels and shared ones: an engine
//! [`crate::Select`] whose cell is linked to the selection's cell in shared memory
//! (`signal.rs`, [`super::cells::CellLink`]), driven by [`super::select`]'s steps.
//!
//! Invariants (the driver's, `select.rs`, relied on here):
//! - Every step runs with all the shared channels' locks held and the shared cell closed, so
//!   neither a shared counterpart nor an in-process one can fire anything while the local
//!   guards are withdrawn and tried; the cell is reopened just before they register again.
//! - A step tries every guard, shared or local, in the policy's one order ([`LocalPart::walk`]:
//!   the engine's [`Select::try_merged`] calls back into the shared scan for each shared
//!   guard, with the local channels locked after the shared ones).
//! - The local guards are numbered after the shared ones in the shared cell (`base`), so the
//!   cell's one word says which side fired.
//! - At most one registration is outstanding; every way out withdraws it ([`LocalPart`]).

use std::sync::Arc;

use super::cells::CellLink;
use crate::{Policy, Poll, Select, SelectError, Selected, Turn, Waker};

/// What a step of the local guards did.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalStep {
    /// A local guard fired (or failed: poisoned, moved); its result is kept.
    Fired,
    /// Nothing fired; the guards are registered (when asked to wait) or may fire later.
    Waiting,
    /// No local guard can ever fire (every channel retired, or none).
    Dead,
}

/// The local guards of a mixed Alt, as the shared selection drives them.
pub trait LocalPart {
    /// How many local guards there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Withdraws the last registration; the shared cell is closed, so nothing local fires.
    fn withdraw(&mut self);
    /// Tries every guard in `order`: [`Turn::Op`] a local one (its index here),
    /// [`Turn::Other`] a shared one, through `shared` (true: it fired or counts as ready, stop).
    /// `Waiting` also when `shared` stopped the walk.
    fn walk(&mut self, order: &[Turn], shared: &mut dyn FnMut(usize) -> bool) -> LocalStep;
    /// Tries the local guards again (one that became ready since the walk fires; the shared
    /// side has not changed, its locks are held) and, if none fires, registers them linked to
    /// `link`.
    fn register(&mut self, link: &Arc<CellLink>) -> LocalStep;
    /// A local guard won the shared cell: waits for its counterpart to complete it and keeps
    /// the result.
    fn collect(&mut self);
}

/// [`LocalPart`] over an engine selection holding only reads and writes.
#[derive(Debug)]
pub struct Local<'s, T> {
    sel: &'s mut Select<T>,
    policy: Policy,
    /// The result of the local guard that fired, once one did.
    pub result: Option<Result<Selected<T>, SelectError>>,
}

impl<'s, T> Local<'s, T> {
    /// The local half over `sel`. A step tries them in the order it is given; `policy` orders
    /// only the try just before they register (among local guards that became ready since).
    pub fn new(sel: &'s mut Select<T>, policy: Policy) -> Self {
        Local { sel, policy, result: None }
    }
}

impl<T> Local<'_, T> {
    fn outcome(&mut self, r: Result<Selected<T>, SelectError>) -> LocalStep {
        match r {
            Err(SelectError::Retired) => LocalStep::Dead,
            Err(SelectError::WouldBlock) => LocalStep::Waiting,
            r => {
                self.result = Some(r);
                LocalStep::Fired
            }
        }
    }
}

impl<T> LocalPart for Local<'_, T> {
    fn len(&self) -> usize {
        self.sel.len()
    }

    fn withdraw(&mut self) {
        if let Some(r) = self.sel.abort() {
            // Only if a local guard won the cell before it was closed; the driver collects
            // that case itself, so this keeps the result rather than dropping a value.
            self.result = Some(r);
        }
    }

    fn walk(&mut self, order: &[Turn], shared: &mut dyn FnMut(usize) -> bool) -> LocalStep {
        let r = self.sel.try_merged(order, shared);
        self.outcome(r)
    }

    fn register(&mut self, link: &Arc<CellLink>) -> LocalStep {
        let waker = Waker::Custom(link.clone());
        match self.sel.start_linked(self.policy, waker, link.clone()) {
            Poll::Ready(r) => self.outcome(r),
            Poll::Pending => LocalStep::Waiting,
        }
    }

    fn collect(&mut self) {
        // `abort` closes the cell (a no-op now), sees that a local guard won it, waits for
        // that counterpart's completion and finishes the selection with its result.
        if let Some(r) = self.sel.abort() {
            self.result = Some(r);
        }
    }
}
