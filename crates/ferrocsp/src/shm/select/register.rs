//! What a selection registers on its channels, and how it takes it back: a cell, conditional
//! offers for its rendezvous outputs (reserved and filled with no lock held, published under
//! every lock), records for its inputs (counted as waiting readers).
//!
//! Invariants:
//! - An offer or record is registered and withdrawn only under its channel's lock, and only
//!   this selection's own (same cell and generation) is ever withdrawn: a position reused by
//!   another writer is never touched.
//! - The offer of the guard that fired stays: its reader owns that entry.

use std::sync::Arc;

use super::super::cells::OwnCell;
use super::super::fault::fault_point;
use super::{Guard, Sel};
use crate::Error;

impl<'a> Sel<'_, 'a> {
    /// Whether offers must be reserved (or a cell taken) before this selection can wait.
    pub(super) fn prepare_needed(&self) -> bool {
        if self.cell.is_none() {
            return true;
        }
        self.ops.iter().enumerate().any(|(i, op)| {
            op.is_rendezvous_write()
                && !self.dead[i]
                && self.offers[i].is_none()
                && !self.tried_offer[i]
        })
    }

    /// Takes a cell and reserves and fills the offers (no locks held).
    pub(super) fn prepare(&mut self) -> Result<(), Error> {
        if self.cell.is_none() {
            let cell = OwnCell::acquire()?;
            if self.local.is_some() {
                self.link = Some(Arc::new(cell.link(self.ops.len())));
            }
            self.cell = Some(cell);
        }
        let Some(cell) = self.cell.as_ref() else { return Ok(()) };
        for (i, op) in self.ops.iter().enumerate() {
            let (c, Some((len, fill))) = (op.ch, op.write) else { continue };
            if c.capacity() > 0 || self.dead[i] || self.offers[i].is_some() || self.tried_offer[i] {
                continue;
            }
            self.tried_offer[i] = true;
            // No ring space now: the guard waits, uncounted, until the next change.
            if let Some(pos) = c.reserve_offer(len, &cell.cref(i))? {
                self.offers[i] = Some(pos);
                fill(c.offer_buf(pos, len));
                fault_point!("alt.reserved");
            }
        }
        Ok(())
    }

    /// Publishes reserved offers and records input guards; drops those of dead guards. All
    /// locks held.
    pub(super) fn publish(&mut self, guards: &[Guard<'a>]) {
        let Some(cell) = self.cell.as_ref() else { return };
        for (i, op) in self.ops.iter().enumerate() {
            let g = &guards[self.at[i]];
            let ch = op.channel();
            if self.dead[i] {
                let me = cell.cref(i);
                if let Some(pos) = self.offers[i].take() {
                    ch.withdraw_own_offer(g, pos, &me);
                }
                if let Some(r) = self.records[i].take() {
                    ch.remove_own_record(g, r, &me);
                }
                continue;
            }
            match op.write {
                Some(_) => {
                    if let (Some(pos), false) = (self.offers[i], self.published[i]) {
                        ch.publish_offer(g, pos);
                        self.published[i] = true;
                        ch.changed(g); // readers of this channel may take it
                        fault_point!("alt.published");
                    }
                }
                None => {
                    // One record per channel: the selection is one waiting reader there.
                    let first =
                        (0..i).all(|j| self.at[j] != self.at[i] || self.ops[j].write.is_some());
                    if first && !self.tried_record[i] {
                        self.tried_record[i] = true;
                        self.records[i] = ch.add_record(g, &cell.cref(i));
                        fault_point!("alt.published");
                    }
                }
            }
        }
    }

    /// Withdraws every offer and record except the offer of guard `fired` (taken by its
    /// reader, who owns it now). All locks held.
    pub(super) fn withdraw(&mut self, guards: &[Guard<'a>], fired: Option<usize>) {
        for (i, op) in self.ops.iter().enumerate() {
            let g = &guards[self.at[i]];
            let Some(me) = self.cell.as_ref().map(|c| c.cref(i)) else { continue };
            if let Some(pos) = self.offers[i].take() {
                if Some(i) != fired {
                    op.channel().withdraw_own_offer(g, pos, &me);
                }
            }
            if let Some(r) = self.records[i].take() {
                op.channel().remove_own_record(g, r, &me);
            }
        }
    }

    /// Error path: withdraw what is still registered, locking channel by channel.
    pub(super) fn abandon(&mut self) {
        let fired = self.cell.as_ref().and_then(|c| c.close().err());
        if let Some((local, _)) = self.local.as_mut() {
            // An error ends the selection: a local guard that won the cell in the race is
            // finished (its result kept by the local part), the rest withdrawn.
            // (A number past every guard was written over the cell: no local guard won.)
            if fired.is_some_and(|i| i >= self.ops.len() && i < self.ops.len() + local.len()) {
                local.collect();
            } else {
                local.withdraw();
            }
        }
        for (i, op) in self.ops.iter().enumerate() {
            let ch = op.channel();
            let pos = self.offers[i].take().filter(|_| Some(i) != fired);
            let rec = self.records[i].take();
            if pos.is_none() && rec.is_none() {
                continue;
            }
            let Some(me) = self.cell.as_ref().map(|c| c.cref(i)) else { continue };
            if let Ok(g) = ch.lock() {
                if let Some(pos) = pos {
                    ch.withdraw_own_offer(&g, pos, &me);
                }
                if let Some(r) = rec {
                    ch.remove_own_record(&g, r, &me);
                }
            }
        }
    }
}
