//! Choice (`Alt`) over shared channels: exactly one guard fires, with conditional offers that
//! a reader in any process (blocked in `read`, or itself selecting) can take.
//!
//! A selection *steps* with the locks of all its channels held (taken in uuid order, so two
//! selections never deadlock): it checks its own cell (fired by a counterpart while it
//! slept?), then scans the guards in the caller's order. An input fires on a `READY` message
//! or on another selection's open offer (by firing that selection's cell); an output on a
//! buffered channel fires when there is room; a poisoned channel fires (and raises). An output
//! on a rendezvous channel fires only when a reader takes its *offer*: an `OFFERED` entry in
//! the ring naming this selection's cell ([`super::cells`]). If nothing fires, the selection
//! publishes its offers and records its input guards (counted as waiting readers), unlocks,
//! and sleeps on every channel's change counter and its own cell at once (`futex_waitv`; on
//! more words than that takes, a choice over 128 channels or more, through the process's
//! futex watchers: `Wait::block`).
//!
//! Invariants:
//! - Nobody can fire our cell while we hold all our channel locks (a counterpart fires it only
//!   with the lock of the channel where it found our record), so a step that finds the cell
//!   open may fire another guard, withdrawing every offer and record before it unlocks: one
//!   guard fires, never two.
//! - Offer bytes are copied with only their channel's lock released (reserved `WRITING`,
//!   invisible to readers), then published under all the locks in the next step.
//! - Because a step scans and registers atomically over all its channels, of two selections
//!   that could meet the second to step finds the first's offer or message: no livelock. An
//!   output guard whose channel has a reader blocked in a plain `read` (and no message for it)
//!   counts as ready: the step stops scanning lower guards and waits for that reader to take
//!   the offer, so a priority order is honoured.
//! - Every way out (fired, timeout, interrupt, poison, error) withdraws what is still
//!   registered, except the offer a reader took (the reader owns that entry).
//! - A selection waits behind a dead peer's entry no longer than a plain operation does: it
//!   wakes when its channels' `peer_check` says so and looks (`owner.rs`) at every step.
//! - With in-process guards too ([`select_mixed`], `mixed.rs`), an in-process counterpart can
//!   fire the cell without any of our locks. So each step first *closes* the cell (under all
//!   the shared locks): a failed close means a guard fired (a shared one: take it; a local
//!   one: collect it), a successful one means nothing can fire any more, and the local guards'
//!   last registration is withdrawn. The step then tries every guard in the caller's one
//!   order, whatever its transport (the engine walks it with the local channels locked and
//!   calls back into the shared scan), and reopens the cell just before the local guards
//!   register again, still under every shared lock: a shared counterpart never finds a live
//!   selection's cell closed, and a local one never finds a registered entry's cell closed.
//!   A step that waits for an idle reader to take an offer (`Deferred`) reopens the cell but
//!   registers no local guard (it counts as ready, so no guard after it may fire). Lock order:
//!   shared channels (uuid order), then in-process ones (address order); nothing else holds
//!   both kinds at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::cells::{CellLink, OwnCell, MAX_GUARDS};
use super::channel::{Guard, ShmChannel};
use super::fault::fault_point;
use super::mixed::{LocalPart, LocalStep};
use super::slot::{ReadSlot, WriteSlot};
use super::wait::Wait;
use crate::Error;
use crate::Turn;

mod register;
mod tamper;

/// Writes an output guard's message into the slot it is given (exactly its length).
pub type Fill<'a> = dyn Fn(&mut [u8]) + Sync + 'a;

/// One guard of a choice over shared channels.
pub struct SelOp<'a> {
    /// The guard's channel.
    pub ch: &'a ShmChannel,
    /// The end it uses, if an end (its slot in the end table): a retired end never fires.
    pub end: Option<u32>,
    /// None: an input guard. Some: an output guard of a message of `len` bytes that `fill`
    /// writes into the slot it is given.
    pub write: Option<(usize, &'a Fill<'a>)>,
}

impl std::fmt::Debug for SelOp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelOp")
            .field("ch", &self.ch.uuid())
            .field("end", &self.end)
            .field("write", &self.write.map(|w| w.0))
            .finish()
    }
}

impl<'a> SelOp<'a> {
    /// An input guard on `ch`.
    pub fn read(ch: &'a ShmChannel) -> Self {
        SelOp { ch, end: None, write: None }
    }

    /// An output guard on `ch` of a `len`-byte message written by `fill`.
    pub fn write(ch: &'a ShmChannel, len: usize, fill: &'a Fill<'a>) -> Self {
        SelOp { ch, end: None, write: Some((len, fill)) }
    }

    fn channel(&self) -> &'a ShmChannel {
        self.ch
    }

    fn is_rendezvous_write(&self) -> bool {
        self.write.is_some() && self.ch.capacity() == 0
    }
}

/// What fired.
#[derive(Debug)]
pub enum Selected<'a> {
    /// An input guard: the message, claimed (read it, then `finish`).
    Read(ReadSlot<'a>),
    /// An output guard: the message was taken (rendezvous) or buffered.
    Wrote,
    /// The guard's channel is poisoned.
    Poisoned,
    /// A local guard of [`select_mixed`] fired (or failed): its result is in the local part.
    Local,
}

enum Step<'a> {
    Fired(usize, Selected<'a>),
    Buffered(usize, WriteSlot<'a>),
    /// Nothing fired.
    Wait,
    /// Nothing fired yet, but an output guard has a reader blocked in a plain `read` to take
    /// its offer: wait for that (even a `nowait` selection, as long as that reader waits).
    Deferred,
    /// A local guard fired (or failed); the local part keeps its result.
    Local,
}

struct Sel<'s, 'a> {
    ops: &'s [SelOp<'a>],
    /// The in-process guards of a mixed Alt, and the order of all the guards.
    local: Option<(&'s mut (dyn LocalPart + 's), &'s [Turn])>,
    /// The local guards' link to `cell` (made with it).
    link: Option<Arc<CellLink>>,
    chans: Vec<&'a ShmChannel>,
    /// ops[i]'s channel in `chans`.
    at: Vec<usize>,
    cell: Option<OwnCell>,
    /// Offer entry of a rendezvous output (reserved, then published).
    offers: Vec<Option<u64>>,
    published: Vec<bool>,
    /// Record of an input guard.
    records: Vec<Option<usize>>,
    tried_record: Vec<bool>,
    tried_offer: Vec<bool>,
    dead: Vec<bool>,
}

/// Fires exactly one of `ops`, trying them in the order given (the caller applies the
/// policy), waiting per `w`. `Err(Retired)`: every guard is dead and there is no deadline;
/// `Err(Timeout)`/`Err(WouldBlock)`/`Err(Interrupted)`: nothing fired.
pub fn select<'a>(ops: &[SelOp<'a>], w: &mut Wait<'_>) -> Result<(usize, Selected<'a>), Error> {
    select_mixed(ops, None, w)
}

/// [`select`] over `ops` and in-process guards too (`local`): exactly one of all of them
/// fires. Every step tries them in the order given with them, which lists each guard once:
/// [`Turn::Other`]`(i)` is `ops[i]`, [`Turn::Op`]`(j)` the local part's guard `j` (else
/// `Error::Io` with kind `InvalidInput`). A local guard that fired is reported as
/// `(ops.len(), Selected::Local)`, its result kept by `local`.
pub fn select_mixed<'s, 'a>(
    ops: &'s [SelOp<'a>],
    local: Option<(&'s mut (dyn LocalPart + 's), &'s [Turn])>,
    w: &mut Wait<'_>,
) -> Result<(usize, Selected<'a>), Error> {
    let n_local = local.as_ref().map_or(0, |(l, _)| l.len());
    if ops.len() + n_local > MAX_GUARDS {
        return Err(Error::TooMany { what: "guards", max: MAX_GUARDS });
    }
    if let Some((_, order)) = &local {
        if !lists_each_once(order, ops.len(), n_local) {
            return Err(Error::Io { kind: std::io::ErrorKind::InvalidInput, code: None });
        }
    }
    for op in ops {
        if let (Some((len, _)), c) = (op.write, op.ch) {
            if c.capacity() == 0 && len + 64 > c.max_message() {
                return Err(Error::TooLarge { len, max: c.max_message() - 64 });
            }
        }
    }
    let mut chans: Vec<&'a ShmChannel> = ops.iter().map(SelOp::channel).collect();
    chans.sort_by_key(|c| c.uuid());
    chans.dedup_by_key(|c| c.uuid());
    let at = ops
        .iter()
        .map(|o| chans.binary_search_by_key(&o.channel().uuid(), |c| c.uuid()).unwrap_or(0))
        .collect();
    let n = ops.len();
    let mut s = Sel {
        ops,
        local,
        link: None,
        chans,
        at,
        cell: None,
        offers: vec![None; n],
        published: vec![false; n],
        records: vec![None; n],
        tried_record: vec![false; n],
        tried_offer: vec![false; n],
        dead: vec![false; n],
    };
    let r = s.run(w);
    if r.is_err() {
        s.abandon();
    }
    r
}

/// Whether `order` names each of `shared` shared guards and `local` local ones exactly once.
fn lists_each_once(order: &[Turn], shared: usize, local: usize) -> bool {
    let mut seen = vec![false; shared + local];
    order.len() == shared + local
        && order.iter().all(|t| {
            let k = match *t {
                Turn::Other(i) if i < shared => i,
                Turn::Op(j) if j < local => shared + j,
                _ => return false,
            };
            !std::mem::replace(&mut seen[k], true)
        })
}

impl<'a> Sel<'_, 'a> {
    /// Every channel's lock, in order. The first step's honour the wait (deadline, interrupt,
    /// `nowait`) as a plain operation's do (`lock_waiting`): nothing is registered yet. Later
    /// steps have offers and records to withdraw, which takes the locks, and an offer that
    /// may have been taken, so they wait for a holder that does not let go (a live process
    /// stopped holding it), poisoned or not (`lock_patient`); a holder that dies is taken over
    /// within `PEER_CHECK` (`lock.rs`).
    fn lock_all(&self, first: Option<&mut Wait<'_>>) -> Result<Vec<Guard<'a>>, Error> {
        match first {
            Some(w) => self.chans.iter().map(|c| c.lock_waiting(w)).collect(),
            None => self.chans.iter().map(|c| c.lock_patient()).collect(),
        }
    }

    /// A step could not take every lock (a channel found corrupt, or the one a dead process
    /// held when it died mid-update): if a reader took one of this selection's offers, that
    /// is its outcome, or the value it delivered would be reported as not sent. The offers
    /// left elsewhere are withdrawn where their channel can still be locked (`abandon`), and
    /// stay conditional on the fired cell elsewhere: counterparts find them stale once the
    /// cell is dropped (its slot free) and withdraw them. Without the locks the offer's
    /// claim cannot be checked (`fire_genuine`): the cell's word is trusted, as one of this
    /// process's own slots.
    fn failed(&mut self, e: Error) -> Result<(usize, Selected<'a>), Error> {
        let i = match (&self.local, self.cell.as_ref().and_then(OwnCell::fired)) {
            (None, Some(i)) if i < self.ops.len() && self.ops[i].write.is_some() => i,
            _ => return Err(e),
        };
        // What can still be withdrawn is (channel by channel); the taken offer is the reader's.
        self.abandon();
        Ok((i, Selected::Wrote))
    }

    fn run(&mut self, w: &mut Wait<'_>) -> Result<(usize, Selected<'a>), Error> {
        let mut first = true;
        loop {
            let guards = match self.lock_all(first.then_some(&mut *w)) {
                Ok(guards) => guards,
                Err(e) => return self.failed(e),
            };
            first = false;
            // A dead peer's entry that this selection waited behind (`owner.rs`): withdrawn
            // or released before the step, which then sees the channel as it really is.
            for (c, g) in self.chans.iter().zip(&guards) {
                c.look_for_dead_holders(g);
            }
            // Before anything can fire the cell again (a nudge after this is not missed).
            let bell = self.cell.as_ref().map(|c| c.bell().load(Ordering::Acquire));
            if let Some(done) = self.decided(&guards) {
                return Ok(done);
            }
            if let Some(i) = self.offer_gone(&guards) {
                return Ok(self.tampered(&guards, i));
            }
            let (step, local_live) = self.walk(&guards);
            let deferred = matches!(step, Step::Deferred);
            match step {
                Step::Local => return Ok(self.local_fired(&guards)),
                Step::Fired(i, what) => {
                    self.finish(&guards);
                    return Ok((i, what));
                }
                Step::Buffered(i, mut slot) => {
                    self.finish(&guards);
                    drop(guards);
                    if let Some((_, fill)) = self.ops[i].write {
                        fill(slot.buf());
                    }
                    return match slot.commit(w) {
                        Ok(()) => Ok((i, Selected::Wrote)),
                        Err(Error::Poisoned) => Ok((i, Selected::Poisoned)),
                        Err(e) => Err(e),
                    };
                }
                Step::Wait | Step::Deferred => {}
            }
            let past = w.deadline.is_some_and(|d| Instant::now() >= d);
            let shared_live = self.dead.iter().any(|d| !d);
            let why = if w.nowait && !deferred {
                Some(Error::WouldBlock)
            } else if !local_live && !shared_live && w.deadline.is_none() {
                Some(Error::Retired)
            } else if past {
                Some(Error::Timeout)
            } else {
                None
            };
            if let Some(e) = why {
                if let Some(done) = self.finish(&guards) {
                    return Ok(done);
                }
                return Err(e);
            }
            if self.prepare_needed() {
                drop(guards);
                if let Err(e) = self.prepare() {
                    return self.failed(e);
                }
                continue; // step again with every offer reserved
            }
            match self.register_local(deferred) {
                Some(LocalStep::Fired) => return Ok(self.local_fired(&guards)),
                // Every local channel retired since the walk: step again, which finds that.
                Some(LocalStep::Dead) if !shared_live => {
                    drop(guards);
                    continue;
                }
                _ => {}
            }
            self.publish(&guards);
            // Waiting for an idle reader: it may have died asleep, which only a look finds
            // (`waiters.rs`, through `idle_reader` at the next step).
            let cap = deferred.then(|| Instant::now() + super::wait::PEER_CHECK);
            let interrupted = self.sleep(guards, w, bell, cap);
            if interrupted {
                let guards = self.lock_all(None)?;
                if let Some(done) = self.decided(&guards) {
                    return Ok(done);
                }
                if let Some(done) = self.finish(&guards) {
                    return Ok(done);
                }
                return Err(Error::Interrupted);
            }
        }
    }

    /// Start of a step (all shared locks held): whether a counterpart fired the cell while we
    /// did not hold them. With local guards, closes the cell (module invariants) and withdraws
    /// their registration, or collects the local guard that won.
    fn decided(&mut self, guards: &[Guard<'a>]) -> Option<(usize, Selected<'a>)> {
        let cell = self.cell.as_ref()?;
        let Some((local, _)) = self.local.as_mut() else {
            let i = cell.fired()?;
            if !self.fire_genuine(guards, i) {
                return Some(self.tampered(guards, i));
            }
            fault_point!("alt.fired");
            self.withdraw(guards, Some(i));
            return Some((i, Selected::Wrote));
        };
        match cell.close() {
            Ok(()) => {
                local.withdraw();
                None
            }
            Err(i) if i >= self.ops.len() + local.len() => {
                // No guard has that number: the cell was written over.
                local.withdraw();
                Some(self.tampered(guards, i))
            }
            Err(i) if i < self.ops.len() => {
                local.withdraw();
                if !self.fire_genuine(guards, i) {
                    return Some(self.tampered(guards, i));
                }
                self.withdraw(guards, Some(i));
                Some((i, Selected::Wrote))
            }
            Err(_) => {
                local.collect();
                self.withdraw(guards, None);
                Some((self.ops.len(), Selected::Local))
            }
        }
    }

    /// Tries every guard in the caller's order (all shared locks held, the cell closed),
    /// local ones through the engine's walk, which calls back into the shared scan. Returns
    /// what the step found and whether a local guard may still fire.
    fn walk(&mut self, guards: &[Guard<'a>]) -> (Step<'a>, bool) {
        let Some((local, order)) = self.local.take() else { return (self.scan(guards), false) };
        let mut found = None;
        let r = local.walk(order, &mut |i| {
            found = self.scan_one(i, guards);
            found.is_some()
        });
        self.local = Some((local, order));
        match (r, found) {
            (LocalStep::Fired, _) => (Step::Local, true),
            (_, Some(step)) => (step, true),
            (r, None) => (Step::Wait, r == LocalStep::Waiting),
        }
    }

    /// Reopens the cell and registers the local guards linked to it (module invariants),
    /// all shared locks held; none are registered while an offer waits for an idle reader
    /// (`deferred`). None without local guards.
    fn register_local(&mut self, deferred: bool) -> Option<LocalStep> {
        let (local, _) = self.local.as_mut()?;
        let (cell, link) = (self.cell.as_ref()?, self.link.as_ref()?);
        cell.reopen();
        if deferred {
            return None;
        }
        Some(local.register(link))
    }

    /// A local guard fired in our own step: nothing registered is left to fire it, so the
    /// cell closes without fail; withdraw the shared side.
    fn local_fired(&mut self, guards: &[Guard<'a>]) -> (usize, Selected<'a>) {
        self.withdraw(guards, None);
        if let Some(c) = &self.cell {
            let _ = c.close();
        }
        (self.ops.len(), Selected::Local)
    }

    /// The scan of one step without local guards (all locks held).
    fn scan(&mut self, guards: &[Guard<'a>]) -> Step<'a> {
        (0..self.ops.len()).find_map(|i| self.scan_one(i, guards)).unwrap_or(Step::Wait)
    }

    /// Tries guard `i` (all locks held): what ends the step (it fired, or `Deferred`), or
    /// None to try the next guard.
    fn scan_one(&mut self, i: usize, guards: &[Guard<'a>]) -> Option<Step<'a>> {
        let op = &self.ops[i];
        let g = &guards[self.at[i]];
        let ch = op.channel();
        if op.end.is_some_and(|e| ch.end_retired(e)) {
            self.dead[i] = true;
            return None;
        }
        if ch.is_poisoned() {
            return Some(Step::Fired(i, Selected::Poisoned));
        }
        match op.write {
            None => {
                let own = self.cell.as_ref().map(|c| c.cref(0));
                match ch.claim(g, own.as_ref()) {
                    Ok(Some(slot)) => return Some(Step::Fired(i, Selected::Read(slot))),
                    Ok(None) => {}
                    // A corrupt segment: poisoned now.
                    Err(_) => return Some(Step::Fired(i, Selected::Poisoned)),
                }
                self.dead[i] = ch.input_dead(g);
            }
            Some((len, _)) => {
                self.dead[i] = ch.output_dead(g);
                if self.dead[i] {
                    return None;
                }
                if ch.capacity() > 0 {
                    if let Some(slot) = ch.reserve_buffered(g, len) {
                        return Some(Step::Buffered(i, slot));
                    }
                } else {
                    // Our own offers there (reserved or published) are not for that reader.
                    let own_here = (0..self.ops.len())
                        .filter(|&j| self.at[j] == self.at[i] && self.offers[j].is_some())
                        .count() as u64;
                    if ch.idle_reader(g, own_here) {
                        return Some(Step::Deferred);
                    }
                }
            }
        }
        None
    }

    /// Sleeps until a channel changes or the cell fires (or the slice/deadline ends); releases
    /// the locks. Returns whether the caller's interrupt check fired. A cooperative sleeper
    /// watches the channels' change counters only (a fired cell moves its channel's `seq`
    /// while `coop` counts us there), except with local guards: their counterparts fire the
    /// cell without any channel's `seq`, so every sleeper watches the cell word and bell.
    fn sleep(
        &self,
        guards: Vec<Guard<'a>>,
        w: &mut Wait<'_>,
        bell: Option<u32>,
        cap: Option<Instant>,
    ) -> bool {
        let coarse = w.coarse();
        let mut words: Vec<&AtomicU32> = Vec::with_capacity(self.chans.len() + 2);
        for c in &self.chans {
            let (seq, sleepers, _) = c.atomics();
            sleepers.fetch_add(1, Ordering::AcqRel);
            if coarse {
                c.coop().fetch_add(1, Ordering::AcqRel);
            }
            words.push(seq);
        }
        if let (false, Some(c), None) = (coarse, &self.cell, &self.local) {
            words.push(c.word());
        }
        let mut seen: Vec<u32> = words.iter().map(|x| x.load(Ordering::Acquire)).collect();
        // As a plain wait does (`owner.rs`): wake to look when a dead peer could hold an entry
        // this selection waits behind.
        let looks =
            self.chans.iter().zip(&guards).filter_map(|(c, g)| c.peer_check(g, coarse)).min();
        let cap = match (cap, looks) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let (Some(c), Some(_)) = (&self.cell, &self.local) {
            // An in-process counterpart fires the cell without our locks, so a cooperative
            // sleeper watches it too, and expects it open: fired already, it does not sleep.
            // The bell as it was when this step began: a nudge since then wakes us at once.
            words.push(c.word());
            seen.push(c.open_value());
            if let Some(b) = bell {
                words.push(c.bell());
                seen.push(b);
            }
        }
        drop(guards);
        fault_point!("alt.waiting");
        // As `Seq::wait` (`seq.rs`): a poison made without a channel's lock may have moved
        // its `seq` before our sample, and would never move it again. A poisoned channel's
        // guard fires, so the next step ends the selection.
        let poisoned = self.chans.iter().any(|c| c.is_poisoned());
        let interrupted = !poisoned && w.block(&words, &seen, cap);
        for c in &self.chans {
            if coarse {
                c.coop().fetch_sub(1, Ordering::AcqRel);
            }
            c.atomics().1.fetch_sub(1, Ordering::AcqRel);
        }
        interrupted
    }

    /// Something other than a fired offer was chosen: withdraw everything, close the cell.
    /// Returns the local guard that won the cell first, if one did (only an in-process
    /// counterpart can fire it while we hold every shared lock).
    fn finish(&mut self, guards: &[Guard<'a>]) -> Option<(usize, Selected<'a>)> {
        self.withdraw(guards, None);
        let closed = self.cell.as_ref().map_or(Ok(()), OwnCell::close);
        let (local, _) = self.local.as_mut()?;
        let n_local = local.len();
        match closed {
            Err(i) if i >= self.ops.len() && i < self.ops.len() + n_local => {
                local.collect();
                Some((self.ops.len(), Selected::Local))
            }
            // A shared guard cannot have fired (we hold every shared lock, and nothing since
            // the step began found the cell open but a local counterpart).
            _ => {
                local.withdraw();
                None
            }
        }
    }
}
