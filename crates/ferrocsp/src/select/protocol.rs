//! The selection protocol's steps (the parent module's doc numbers them): begin, try and
//! register under every channel lock, withdraw, unregister, finish.
//!
//! Invariants:
//! - The channel locks are taken together only in `attempt`, in address order (`locks`), and
//!   released before anyone is woken.
//! - Each slot has one party touching it at a time (`channel::Slot`'s protocol): the owner
//!   refills a slot only when nobody else holds it, and empties slots only after every entry
//!   is gone.

use std::time::Instant;

use super::{drop_value, Kind, Op, Pending, Policy, Poll, Select, Selected};
use crate::channel::{wake_all, Entry, Guard, ReadAttempt, Slot, State as ChanState, Woken};
use crate::channel::{Channel, WriteAttempt};
use crate::error::{Error, SelectError};
use crate::signal::{Link, Outcome, Signal, Waker};
use crate::sync::{get_mut_alone, held_alone, Arc};

/// Locks the first `N` channels of `locks` in order (the caller checked there are `N`).
fn lock_all<T, const N: usize>(locks: &[Channel<T>]) -> [Guard<'_, T>; N] {
    // `from_fn` calls in index order, so the global (address) lock order is kept.
    std::array::from_fn(|i| locks[i].inner.state.lock())
}

impl<T> Select<T> {
    pub(super) fn begin(&mut self, policy: Policy, deadline: Option<Instant>) {
        assert!(self.pending.is_none(), "a selection is already in progress on this Select");
        let _ = policy;
        self.deadline = deadline;
        self.op_deadlines.clear();
        // Read the clock only when there is a timeout op (most selections have none).
        let mut now: Option<Instant> = None;
        for (i, op) in self.ops.iter().enumerate() {
            if let Kind::Timeout(d) = op.kind {
                let now = *now.get_or_insert_with(Instant::now);
                // An unrepresentable deadline is "never".
                if let Some(at) = now.checked_add(d) {
                    self.op_deadlines.push((i, at));
                }
            }
        }
        if self.locks_dirty {
            self.rebuild_locks();
        }
    }

    pub(super) fn rebuild_locks(&mut self) {
        if let [op] = self.ops.as_mut_slice() {
            // One operation (every plain read or write): no sorting, no search.
            self.locks.clear();
            if let Some(c) = &op.chan {
                self.locks.reserve_exact(1);
                self.locks.push(c.clone());
                op.lock = 0;
            }
            self.locks_dirty = false;
            return;
        }
        let mut chans = std::mem::take(&mut self.locks);
        chans.clear();
        chans.extend(self.ops.iter().filter_map(|o| o.chan.clone()));
        chans.sort_by_key(|c| c.addr());
        chans.dedup_by_key(|c| c.addr());
        for op in &mut self.ops {
            if let Some(c) = &op.chan {
                op.lock = chans.binary_search_by_key(&c.addr(), |x| x.addr()).unwrap_or(usize::MAX);
            }
        }
        self.locks = chans;
        self.locks_dirty = false;
    }

    pub(super) fn expired_timeout_op(&self, now: Instant) -> Option<usize> {
        self.op_deadlines
            .iter()
            .filter(|&&(_, d)| d <= now)
            .min_by_key(|&&(_, d)| d)
            .map(|&(i, _)| i)
    }

    /// Steps 1 and 2. `waker == None` means try only.
    pub(super) fn attempt(&mut self, policy: Policy, waker: Option<&Waker>) -> Poll<T> {
        self.fill_order(policy);
        if self.locks.len() > 1 {
            if let Some(r) = self.try_first_alone() {
                if let Ok(s) = &r {
                    self.last = Some(s.index);
                }
                return Poll::Ready(r);
            }
        }
        self.waitable.clear();
        self.waitable.reserve_exact(self.ops.len());
        // Only timeout ops need the clock; most selections have none.
        let now = if self.op_deadlines.is_empty() { None } else { Some(Instant::now()) };
        let mut woken = Woken::new();
        let Select { ops, locks, order, waitable, op_deadlines, spare, link, .. } = self;
        // The locked section; its guards drop at the end of this block, before any wake-up.
        let result = {
            // Up to four channels (every plain operation, most Alts) need no vector of guards:
            // a heap allocation and free per attempt cost more than the rest of a small Alt's
            // bookkeeping. `lock_all` locks in `locks`' (address) order.
            let mut one: [Guard<'_, T>; 1];
            let mut two: [Guard<'_, T>; 2];
            let mut three: [Guard<'_, T>; 3];
            let mut four: [Guard<'_, T>; 4];
            let mut many: Vec<Guard<'_, T>>;
            let guards: &mut [Guard<'_, T>] = match locks.len() {
                1 => {
                    one = lock_all(locks);
                    &mut one
                }
                2 => {
                    two = lock_all(locks);
                    &mut two
                }
                3 => {
                    three = lock_all(locks);
                    &mut three
                }
                4 => {
                    four = lock_all(locks);
                    &mut four
                }
                _ => {
                    many = locks.iter().map(|c| c.inner.state.lock()).collect();
                    &mut many
                }
            };
            let mut result: Option<Result<Selected<T>, SelectError>> = None;
            let mut timeout_live = false;
            for &i in order.iter() {
                result = try_op(
                    ops,
                    i,
                    guards,
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
            let result = match (result, waker) {
                (Some(r), _) => Some(r),
                // The selection deadline alone can fire nothing, so it does not keep us waiting.
                (None, _) if waitable.is_empty() && !timeout_live => {
                    Some(Err(SelectError::Retired))
                }
                (None, None) => Some(Err(SelectError::WouldBlock)),
                (None, Some(waker)) => {
                    // Recycle the last cell when nobody else holds it (no allocation).
                    let signal = recycle_cell(spare, waker, link);
                    for &i in waitable.iter() {
                        let op = &mut ops[i];
                        let (value, is_read) = match &mut op.kind {
                            Kind::Read => (None, true),
                            Kind::Write(v) => (v.take(), false),
                            _ => continue,
                        };
                        // A kept slot is empty (`unregister_all` empties it) and, when nobody
                        // else holds it, ours to refill: no allocation, nothing dropped here.
                        if op.slot.as_mut().is_none_or(|s| !held_alone(s)) {
                            op.slot = Some(Arc::new(Slot::new()));
                        }
                        let Some(slot) = op.slot.as_ref().map(Arc::clone) else { continue };
                        // SAFETY: nobody else holds the slot (just checked, or new), and the
                        // entry that will share it is not queued yet.
                        let old = unsafe { slot.replace(value) };
                        debug_assert!(old.is_none(), "a kept slot is empty");
                        op.registered = true;
                        let entry = Entry { signal: Arc::clone(&signal), op: i, slot };
                        let g = &mut guards[op.lock];
                        if is_read {
                            g.register_reader(entry);
                        } else {
                            g.register_writer(entry);
                        }
                    }
                    self.pending = Some(Pending { signal, policy });
                    None
                }
            };
            for g in guards.iter() {
                g.check();
            }
            result
        };
        wake_all(woken);
        match result {
            Some(r) => {
                if let Ok(s) = &r {
                    self.last = Some(s.index);
                }
                Poll::Ready(r)
            }
            None => Poll::Pending,
        }
    }

    /// The first operation in the try order, under its own channel's lock alone: its result
    /// if it fired (or failed: poisoned, moved), `None` to go on with every lock.
    ///
    /// Whatever the other channels hold, the full try would pick this operation if it can
    /// complete (it comes first in the order), so deciding it under its one lock is the same
    /// choice, made at that critical section; an Alt whose first guard is ready (the common
    /// case of a busy Alt) then locks one channel instead of all of them. Skipped when the
    /// channel's readiness hint says it cannot (`channel/ready.rs`), so an Alt that must wait
    /// pays one atomic load for it, not a lock.
    fn try_first_alone(&mut self) -> Option<Result<Selected<T>, SelectError>> {
        let i = *self.order.first()?;
        let op = &mut self.ops[i];
        let chan = op.chan.as_ref()?;
        let might = match op.kind {
            Kind::Read => chan.might_read(),
            Kind::Write(_) => chan.might_write(),
            Kind::Skip | Kind::Timeout(_) => false,
        };
        if !might {
            return None;
        }
        let mut woken = Woken::new();
        let tried = {
            let mut st = chan.inner.state.lock();
            let tried = try_chan_op(&mut op.kind, i, &mut st, &mut woken);
            st.check();
            tried
        };
        wake_all(woken);
        match tried {
            Tried::Fired(r) => Some(r),
            // Not ready, or retired (the op is left out): the full try decides.
            Tried::Waits | Tried::Never => None,
        }
    }

    /// CAS the own cell to Aborted; on success, remove all entries and recover write values.
    pub(super) fn withdraw(&mut self) -> bool {
        let Some(p) = &self.pending else { return false };
        if !p.signal.try_abort() {
            return false;
        }
        self.unregister_all();
        true
    }

    /// Removes every entry of the pending signal and takes back unsent write values.
    pub(super) fn unregister_all(&mut self) {
        let Some(p) = self.pending.take() else { return };
        for op in self.ops.iter_mut() {
            if !op.registered {
                continue;
            }
            // Every entry of an operation holds its slot. A slot we hold alone has no entry
            // left to remove (the counterpart that completed the operation, or poisoned,
            // retired or moved its channel, popped it under the lock), and no counterpart
            // still touching it: it dropped its handle after its last access, and `held_alone`
            // (acquire) orders us after that drop (release). So no lock is needed: a plain
            // read or write that was completed finishes without locking its channel again.
            if op.slot.as_mut().is_some_and(held_alone) {
                continue;
            }
            if let Some(c) = &op.chan {
                c.inner.state.lock().unregister(&p.signal);
            }
        }
        // No entry is left, so nobody else touches the slots: empty them (a write gets its
        // unsent value back; a read's value was taken by `finish`, or is dropped with an
        // abandoned selection) and keep them, and the cell, for the next registration.
        for op in self.ops.iter_mut() {
            if !std::mem::take(&mut op.registered) {
                continue;
            }
            let Some(slot) = &op.slot else { continue };
            // SAFETY: every entry is gone, and taking each channel's lock to remove them, or
            // finding the slot ours alone, ordered us after every counterpart that touched a
            // slot (Slot's protocol).
            let back = unsafe { slot.take() };
            match (&mut op.kind, back) {
                (Kind::Write(v @ None), Some(back)) => *v = Some(back),
                (_, Some(back)) => drop_value(back), // a read's value nobody took
                (_, None) => {}
            }
        }
        self.spare = Some(p.signal);
    }

    pub(super) fn finish(&mut self, op: usize, outcome: Outcome) -> Poll<T> {
        let (policy, waker) = match &self.pending {
            Some(p) if outcome == Outcome::Retired => (p.policy, Some(p.signal.waker().clone())),
            Some(p) => (p.policy, None),
            None => return Poll::Ready(Err(SelectError::WouldBlock)),
        };
        // The completed op's value (if read) is in its slot; take it before unregister_all
        // recycles the slots. A completed write's slot is already empty (Done) or still holds
        // the value (Poisoned/Retired), which unregister_all hands back.
        let value = match (&self.ops[op].kind, outcome) {
            // SAFETY: the writer stored the value before its CAS, which we observed (acquire)
            // as `Completed(op, Done)`, and it touches the slot no more.
            (Kind::Read, Outcome::Done) => {
                self.ops[op].slot.as_ref().and_then(|s| unsafe { s.take() })
            }
            _ => None,
        };
        self.unregister_all();
        match outcome {
            Outcome::Done => {
                self.last = Some(op);
                if let Kind::Read = self.ops[op].kind {
                    debug_assert!(value.is_some(), "a completed read always has its value");
                }
                Poll::Ready(Ok(Selected { index: op, value }))
            }
            Outcome::Poisoned => Poll::Ready(Err(SelectError::Poisoned { index: op })),
            Outcome::Moved => Poll::Ready(Err(SelectError::Moved { index: op })),
            Outcome::Retired => {
                // A selection started by `start_read`/`start_write` has no lock list yet.
                if self.locks_dirty {
                    self.rebuild_locks();
                }
                self.attempt(policy, waker.as_ref())
            }
        }
    }
}

/// Tries operation `i` with every channel lock of its selection held (`guards`, indexed by
/// `Op::lock`): `Some` if it fired (or failed: poisoned, moved), `None` if not; one that may
/// fire later goes on `waitable` (a timeout op still to come sets `timeout_live`). Shared by
/// the plain try ([`Select::attempt`]) and the merged one (`merged.rs`); inlined, so the
/// plain path pays no call.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn try_op<T>(
    ops: &mut [Op<T>],
    i: usize,
    guards: &mut [Guard<'_, T>],
    op_deadlines: &[(usize, Instant)],
    now: Option<Instant>,
    woken: &mut Woken,
    waitable: &mut Vec<usize>,
    timeout_live: &mut bool,
) -> Option<Result<Selected<T>, SelectError>> {
    let op = &mut ops[i];
    match &op.kind {
        Kind::Skip => return Some(Ok(Selected { index: i, value: None })),
        Kind::Timeout(_) => {
            return match op_deadlines.iter().find(|&&(j, _)| j == i) {
                Some(&(_, at)) if now.is_some_and(|now| at <= now) => {
                    Some(Ok(Selected { index: i, value: None }))
                }
                Some(_) => {
                    *timeout_live = true;
                    None
                }
                None => None,
            };
        }
        Kind::Read | Kind::Write(_) => {}
    }
    let lock = op.lock;
    match try_chan_op(&mut op.kind, i, &mut guards[lock], woken) {
        Tried::Fired(r) => Some(r),
        Tried::Waits => {
            waitable.push(i);
            None
        }
        Tried::Never => None,
    }
}

/// What trying one channel operation under its channel's lock gave.
pub(super) enum Tried<T> {
    /// It fired, or failed for good (poisoned, moved): the selection's result.
    Fired(Result<Selected<T>, SelectError>),
    /// Not now; it may fire later.
    Waits,
    /// It never can (its channel retired, or a write without its value), or it is no
    /// channel operation.
    Never,
}

/// Tries read or write operation `i` (`kind`) on `st`, its channel's locked state: the one
/// place that maps a channel's attempt to a selection's. A write that did not go keeps its
/// value in `kind`. Shared by the try under every lock ([`try_op`]) and the first operation
/// alone (`Select::try_first_alone`).
#[inline(always)]
pub(super) fn try_chan_op<T>(
    kind: &mut Kind<T>,
    i: usize,
    st: &mut ChanState<T>,
    woken: &mut Woken,
) -> Tried<T> {
    match kind {
        Kind::Read => match st.try_read(woken) {
            ReadAttempt::Value(v) => Tried::Fired(Ok(Selected { index: i, value: Some(v) })),
            ReadAttempt::NotReady => Tried::Waits,
            ReadAttempt::Failed(Error::Poisoned) => {
                Tried::Fired(Err(SelectError::Poisoned { index: i }))
            }
            ReadAttempt::Failed(Error::Moved) => Tried::Fired(Err(SelectError::Moved { index: i })),
            ReadAttempt::Failed(_) => Tried::Never,
        },
        Kind::Write(slot) => {
            let Some(v) = slot.take() else { return Tried::Never };
            match st.try_write(v, woken) {
                WriteAttempt::Sent => Tried::Fired(Ok(Selected { index: i, value: None })),
                WriteAttempt::NotReady(v) => {
                    *slot = Some(v);
                    Tried::Waits
                }
                WriteAttempt::Failed(e, v) => {
                    *slot = Some(v);
                    match e {
                        Error::Poisoned => Tried::Fired(Err(SelectError::Poisoned { index: i })),
                        Error::Moved => Tried::Fired(Err(SelectError::Moved { index: i })),
                        _ => Tried::Never,
                    }
                }
            }
        }
        Kind::Skip | Kind::Timeout(_) => Tried::Never,
    }
}

/// A `Waiting` cell woken by `waker` and linked to `link`: the last one (`spare`) recycled
/// when nobody else holds it, so a process that blocks again and again allocates no cell.
pub(super) fn recycle_cell(
    spare: &mut Option<Arc<Signal>>,
    waker: &Waker,
    link: &Option<std::sync::Arc<dyn Link>>,
) -> Arc<Signal> {
    match spare.take() {
        Some(mut s) => match get_mut_alone(&mut s) {
            Some(cell) => {
                cell.reset(waker, link.clone());
                s
            }
            None => Arc::new(Signal::linked(waker.clone(), link.clone())),
        },
        None => Arc::new(Signal::linked(waker.clone(), link.clone())),
    }
}
