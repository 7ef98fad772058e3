//! What a selection does when its cell or its records were written outside the protocol
//! (issue #16: a segment is untrusted, and so is a cells segment any process can attach).
//!
//! Invariants:
//! - Only a reader that claims our published offer on a rendezvous channel fires our cell for
//!   a shared guard, under that channel's lock and in the same hold as the claim; so at the
//!   next step (all locks held) that offer is no longer `OFFERED` by us. A fire that does not
//!   fit (no such guard, not a rendezvous output, the offer still there) is tampering.
//! - A published offer of ours leaves the ring only by such a claim or by our own withdrawal;
//!   one gone without a fire is tampering too (a counterpart took us for dead, which only a
//!   scribble makes it do).
//! - Tampering poisons the channel concerned (every channel, when no guard is named) as
//!   corrupt, and ends the selection with that guard `Poisoned`: never a guard that was not
//!   taken reported as sent.

use super::{Guard, Sel, Selected};

impl<'a> Sel<'_, 'a> {
    /// Whether guard `i` firing our cell can be a counterpart's doing: only a reader that
    /// claimed our published offer on a rendezvous channel fires it (under that channel's
    /// lock, in the same hold as it claims the entry). Anything else wrote the cell, or the
    /// record that named it, outside the protocol. All locks held.
    pub(super) fn fire_genuine(&self, guards: &[Guard<'a>], i: usize) -> bool {
        let (Some(cell), Some(op)) = (self.cell.as_ref(), self.ops.get(i)) else { return false };
        op.is_rendezvous_write()
            && self.published[i]
            && self.offers[i]
                .is_some_and(|pos| !op.ch.still_offered(&guards[self.at[i]], pos, &cell.cref(i)))
    }

    /// A published offer of ours that is no longer there though our cell did not fire: only a
    /// counterpart that took a live selection for dead, or a scribble, removes one, and
    /// neither may pass unnoticed (the guard would wait forever). All locks held.
    pub(super) fn offer_gone(&self, guards: &[Guard<'a>]) -> Option<usize> {
        let cell = self.cell.as_ref()?;
        (0..self.ops.len()).find(|&i| {
            self.published[i]
                && self.offers[i].is_some_and(|pos| {
                    !self.ops[i].ch.still_offered(&guards[self.at[i]], pos, &cell.cref(i))
                })
        })
    }

    /// Our cell or our records were tampered with (`fire_genuine`, `offer_gone`): the channel
    /// of guard `i` (every channel, if `i` names none) is poisoned as corrupt, and the
    /// selection ends with what is still registered withdrawn. All locks held.
    pub(super) fn tampered(&mut self, guards: &[Guard<'a>], i: usize) -> (usize, Selected<'a>) {
        match self.ops.get(i) {
            Some(op) => drop(op.ch.corrupt(&guards[self.at[i]])),
            None => {
                for (c, g) in self.chans.iter().zip(guards) {
                    let _ = c.corrupt(g);
                }
            }
        }
        // Nothing of ours was taken: withdraw every offer (the cell is closed by `finish`).
        if let Some(done) = self.finish(guards) {
            return done;
        }
        (i.min(self.ops.len().saturating_sub(1)), Selected::Poisoned)
    }
}
