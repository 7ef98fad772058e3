//! Selection (Alt): wait for the first of several reads, writes, timeouts or a skip.
//!
//! Protocol (Go's `selectgo`, with crossbeam's one-CAS cell):
//! 1. **Try.** Lock every channel involved, in address order (invariant 6 of `channel`), and
//!    try the operations in the policy's order; the first that can complete does, and the
//!    selection returns without blocking.
//! 2. **Register.** Still holding every lock, queue one entry per channel operation, all sharing
//!    one fresh [`Signal`], then unlock. Because check and register happen under the same locks,
//!    two selections meeting on one channel cannot both register without the second seeing the
//!    first: select-vs-select always rendezvous and never livelocks.
//! 3. **Wait** (the backend's business: park a thread, switch a greenlet, await a future).
//! 4. **Finish.** Whoever completed the signal already did the communication; the owner removes
//!    its other entries (eagerly, one lock at a time) and collects the result. A channel that
//!    retired under a waiting operation only removes that operation: the selection restarts at 1
//!    with the rest. On timeout or cancel the owner CASes its own cell to `Aborted`; if that CAS
//!    loses, the operation completed first and its result stands (nothing is lost).
//!
//! Invariants:
//! - At most one operation of a selection fires; a write's value is consumed iff it fired.
//! - A `Select` has at most one registration outstanding (`pending`); every entry it queued is
//!   removed before `Ready` is returned, so a finished selection leaves no trace in any channel.

use std::fmt;
use std::time::{Duration, Instant};

use crate::channel::WriteAttempt;
use crate::channel::{wake_all, Channel, Entry, ReadAttempt, Slot, State as ChanState, Woken};
use crate::error::{Error, SelectError};
use crate::signal::{Outcome, Signal, State, Waker, MAX_OPS};
use crate::sync::{lock, Arc, MutexGuard};

/// How a selection orders the operations that are ready at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Uniformly random among the ready operations (occam's ALT, Go's select).
    Random,
    /// The first ready operation in the order they were added (occam's PRI ALT).
    Priority,
    /// Round-robin: the operation after the one chosen last time comes first (JCSP's
    /// `fairSelect`), so no ready operation starves.
    Fair,
}

/// What a fired selection produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Selected<T> {
    /// Index of the operation that fired, as returned when it was added.
    pub index: usize,
    /// The value read, for a read operation; `None` otherwise.
    pub value: Option<T>,
}

/// Progress of a selection driven step by step (for backends that do not park OS threads).
#[derive(Debug)]
pub enum Poll<T> {
    /// The selection is over.
    Ready(Result<Selected<T>, SelectError>),
    /// Registered and waiting: sleep until the waker fires or [`Select::wake_deadline`] passes,
    /// then call [`Select::resume`].
    Pending,
}

enum Kind<T> {
    Read,
    Write(Option<T>),
    Skip,
    Timeout(Duration),
}

struct Op<T> {
    chan: Option<Channel<T>>,
    kind: Kind<T>,
    /// The value's slot while registered; kept afterwards, empty, for the next registration.
    slot: Option<Arc<Slot<T>>>,
    /// Whether an entry of this op is queued on its channel (for the pending registration).
    registered: bool,
    /// Index into `Select::locks` of this op's channel.
    lock: usize,
}

struct Pending {
    /// Holds the waker too (a restart after a retirement reuses it).
    signal: Arc<Signal>,
    policy: Policy,
}

/// A selection over reads, writes, timeouts and skip: one Alt.
///
/// ```
/// use ferrocsp::{Channel, Policy, Select};
/// let a = Channel::new(1);
/// let b: Channel<i32> = Channel::new(1);
/// a.write(7).unwrap();
/// let mut sel = Select::new();
/// let ia = sel.read(&a);
/// let _ib = sel.read(&b);
/// let fired = sel.select(Policy::Priority).unwrap();
/// assert_eq!((fired.index, fired.value), (ia, Some(7)));
/// ```
pub struct Select<T> {
    ops: Vec<Op<T>>,
    /// Distinct channels, sorted by address: the lock order.
    locks: Vec<Channel<T>>,
    locks_dirty: bool,
    /// Scratch for the try order.
    order: Vec<usize>,
    /// Ops that may still fire (not retired), scratch for registration.
    waitable: Vec<usize>,
    last: Option<usize>,
    rng: u64,
    /// When the selection (not one of its timeout ops) gives up with `SelectError::Timeout`.
    deadline: Option<Instant>,
    /// Absolute deadlines of timeout ops, fixed when a selection starts.
    op_deadlines: Vec<(usize, Instant)>,
    pending: Option<Pending>,
    /// The cell of the last registration, recycled by the next one if nobody else holds it.
    spare: Option<Arc<Signal>>,
    /// Empty slots of cleared operations, reused by the next ones (see [`Select::clear`]).
    spare_slots: Vec<Arc<Slot<T>>>,
}

impl<T> fmt::Debug for Select<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("ops", &self.ops.len())
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

impl<T> Default for Select<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn seed() -> u64 {
    // Distinct per selection without a global RNG: address entropy plus a counter.
    let c = crate::channel::next_id();
    let local = 0u8;
    let a = &local as *const u8 as u64;
    let mut x = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ a.rotate_left(17);
    if x == 0 {
        x = 0x2545_F491_4F6C_DD1D;
    }
    x
}

impl<T> Select<T> {
    /// An empty selection.
    pub fn new() -> Self {
        Select {
            ops: Vec::new(),
            locks: Vec::new(),
            locks_dirty: false,
            order: Vec::new(),
            waitable: Vec::new(),
            last: None,
            rng: seed(),
            deadline: None,
            op_deadlines: Vec::new(),
            pending: None,
            spare: None,
            spare_slots: Vec::new(),
        }
    }

    /// Removes every operation and resets the selection to its `new()` state, keeping its
    /// allocations (operation list, lock list, selection cell, value slots) for the next use.
    ///
    /// A backend that keeps one `Select` per waiting process and clears it between operations
    /// blocks and wakes without allocating. Values of unsent writes are dropped here.
    ///
    /// # Panics
    /// If a selection is in progress.
    pub fn clear(&mut self) {
        assert!(self.pending.is_none(), "cannot clear a selection in progress");
        for op in self.ops.drain(..) {
            if let Some(slot) = op.slot {
                self.spare_slots.push(slot);
            }
        }
        self.locks.clear();
        self.locks_dirty = false;
        self.last = None;
        self.deadline = None;
        self.op_deadlines.clear();
    }

    fn push(&mut self, chan: Option<&Channel<T>>, kind: Kind<T>) -> usize {
        assert!(self.pending.is_none(), "cannot add operations to a selection in progress");
        assert!(self.ops.len() < MAX_OPS, "too many operations in one selection");
        if chan.is_some() {
            self.locks_dirty = true;
        }
        let slot = self.spare_slots.pop();
        // Most selections hold one operation, and a blocked process keeps its selection:
        // grow one at a time rather than by Vec's default of four.
        self.ops.reserve_exact(1);
        self.ops.push(Op { chan: chan.cloned(), kind, slot, registered: false, lock: usize::MAX });
        self.ops.len() - 1
    }

    /// Adds a read from `chan`; returns its index.
    pub fn read(&mut self, chan: &Channel<T>) -> usize {
        self.push(Some(chan), Kind::Read)
    }

    /// Adds a write of `value` to `chan`; returns its index. The value is sent only if this
    /// operation fires; otherwise it stays here (see [`Select::take_value`]).
    pub fn write(&mut self, chan: &Channel<T>, value: T) -> usize {
        self.push(Some(chan), Kind::Write(Some(value)))
    }

    /// Adds a skip: always ready (a selection with a skip never blocks).
    pub fn skip(&mut self) -> usize {
        self.push(None, Kind::Skip)
    }

    /// Adds a timeout that becomes ready `after` the selection starts.
    pub fn timeout(&mut self, after: Duration) -> usize {
        self.push(None, Kind::Timeout(after))
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Puts (back) the value of write operation `index`, e.g. to fire it again.
    pub fn set_value(&mut self, index: usize, value: T) {
        assert!(self.pending.is_none(), "cannot change a selection in progress");
        match self.ops.get_mut(index).map(|o| &mut o.kind) {
            Some(Kind::Write(v)) => *v = Some(value),
            _ => panic!("operation {index} is not a write"),
        }
    }

    /// Takes the value of write operation `index` back (None if it was sent or taken).
    pub fn take_value(&mut self, index: usize) -> Option<T> {
        match self.ops.get_mut(index).map(|o| &mut o.kind) {
            Some(Kind::Write(v)) => v.take(),
            _ => None,
        }
    }

    /// The operation chosen last (the reference point of [`Policy::Fair`]).
    pub fn last_selected(&self) -> Option<usize> {
        self.last
    }

    /// Sets the reference point of [`Policy::Fair`], to carry fairness across `Select`s.
    pub fn set_last_selected(&mut self, last: Option<usize>) {
        self.last = last;
    }

    /// Blocks the calling thread until one operation fires.
    pub fn select(&mut self, policy: Policy) -> Result<Selected<T>, SelectError> {
        self.select_deadline(policy, None)
    }

    /// Like [`Select::select`], failing with [`SelectError::Timeout`] after `timeout`.
    pub fn select_timeout(
        &mut self,
        policy: Policy,
        timeout: Duration,
    ) -> Result<Selected<T>, SelectError> {
        self.select_deadline(policy, Instant::now().checked_add(timeout))
    }

    /// Fires an operation that is ready now, or fails with [`SelectError::WouldBlock`].
    pub fn try_select(&mut self, policy: Policy) -> Result<Selected<T>, SelectError> {
        self.begin(policy, None);
        match self.attempt(policy, None) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(SelectError::WouldBlock),
        }
    }

    /// Blocks the calling thread until one operation fires or `deadline` passes.
    pub fn select_deadline(
        &mut self,
        policy: Policy,
        deadline: Option<Instant>,
    ) -> Result<Selected<T>, SelectError> {
        let mut poll = self.start(policy, Waker::current_thread(), deadline);
        loop {
            match poll {
                Poll::Ready(r) => return r,
                Poll::Pending => {
                    self.park(None);
                    poll = self.resume();
                }
            }
        }
    }

    /// Starts a selection that wakes `waker` when it may have finished (step 1 and 2 of the
    /// protocol). `deadline` bounds the whole selection ([`SelectError::Timeout`]).
    pub fn start(&mut self, policy: Policy, waker: Waker, deadline: Option<Instant>) -> Poll<T> {
        self.begin(policy, deadline);
        self.attempt(policy, Some(waker))
    }

    /// When the selection must be resumed even if nobody wakes it (a timeout op or deadline).
    pub fn wake_deadline(&self) -> Option<Instant> {
        let ops = self.op_deadlines.iter().map(|&(_, d)| d);
        ops.chain(self.deadline).min()
    }

    /// Whether a registration is outstanding.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether a registration is outstanding and nobody has completed or aborted it yet.
    pub fn is_waiting(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.signal.is_waiting())
    }

    /// The selection cell of the pending registration, if any: lets another thread see whether
    /// this selection still waits (deadlock detection) without touching the `Select`.
    pub fn signal(&self) -> Option<Arc<Signal>> {
        self.pending.as_ref().map(|p| Arc::clone(&p.signal))
    }

    /// Parks the calling thread until the pending selection is completed, its wake deadline
    /// passes, or `until` passes. Spurious returns are allowed; follow with [`Select::resume`].
    pub fn park(&self, until: Option<Instant>) {
        let Some(p) = &self.pending else { return };
        let limit = match (until, self.wake_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        crate::park::park_until(&p.signal, limit);
    }

    /// Step 4: if the selection was completed, finish it; if its deadline passed, withdraw.
    pub fn resume(&mut self) -> Poll<T> {
        let state = match &self.pending {
            Some(p) => p.signal.state(),
            None => return Poll::Ready(Err(SelectError::WouldBlock)),
        };
        match state {
            State::Waiting => {
                let now = Instant::now();
                let fired = self.expired_timeout_op(now);
                let past = self.deadline.is_some_and(|d| now >= d);
                if fired.is_none() && !past {
                    return Poll::Pending;
                }
                if self.withdraw() {
                    self.last = fired.or(self.last);
                    return Poll::Ready(match fired {
                        Some(index) => Ok(Selected { index, value: None }),
                        None => Err(SelectError::Timeout),
                    });
                }
                self.resume()
            }
            State::Aborted => Poll::Ready(Err(SelectError::WouldBlock)),
            State::Completed { op, outcome } => self.finish(op, outcome),
        }
    }

    /// Withdraws a pending selection (cancellation). Returns the result if an operation fired
    /// before the withdrawal won, `None` if nothing fired (and nothing was consumed).
    pub fn abort(&mut self) -> Option<Result<Selected<T>, SelectError>> {
        let signal = Arc::clone(&self.pending.as_ref()?.signal);
        if self.withdraw() {
            return None;
        }
        match signal.state() {
            State::Completed { op, outcome: Outcome::Done } => match self.finish(op, Outcome::Done)
            {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            },
            State::Completed { op, outcome: Outcome::Poisoned } => {
                self.unregister_all();
                Some(Err(SelectError::Poisoned { index: op }))
            }
            State::Completed { op, outcome: Outcome::Moved } => {
                self.unregister_all();
                Some(Err(SelectError::Moved { index: op }))
            }
            // A retirement is not a result: the caller is leaving anyway.
            _ => {
                self.unregister_all();
                None
            }
        }
    }

    // ----- internals -----

    fn begin(&mut self, policy: Policy, deadline: Option<Instant>) {
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

    fn rebuild_locks(&mut self) {
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

    fn next_random(&mut self) -> u64 {
        // xorshift64*: plenty for choosing among ready guards.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill_order(&mut self, policy: Policy) {
        let n = self.ops.len();
        self.order.clear();
        self.order.reserve_exact(n);
        match policy {
            Policy::Priority => self.order.extend(0..n),
            Policy::Fair => {
                let start = self.last.map_or(0, |l| (l + 1) % n.max(1));
                self.order.extend((start..n).chain(0..start));
            }
            Policy::Random => {
                self.order.extend(0..n);
                for i in (1..n).rev() {
                    let j = (self.next_random() % (i as u64 + 1)) as usize;
                    self.order.swap(i, j);
                }
            }
        }
    }

    fn expired_timeout_op(&self, now: Instant) -> Option<usize> {
        self.op_deadlines
            .iter()
            .filter(|&&(_, d)| d <= now)
            .min_by_key(|&&(_, d)| d)
            .map(|&(i, _)| i)
    }

    /// Steps 1 and 2. `waker == None` means try only.
    fn attempt(&mut self, policy: Policy, waker: Option<Waker>) -> Poll<T> {
        self.fill_order(policy);
        self.waitable.clear();
        self.waitable.reserve_exact(self.ops.len());
        // Only timeout ops need the clock; most selections have none.
        let now = if self.op_deadlines.is_empty() { None } else { Some(Instant::now()) };
        let mut woken = Woken::new();
        let Select { ops, locks, order, waitable, op_deadlines, spare, .. } = self;
        // The locked section; its guards drop at the end of this block, before any wake-up.
        let result = {
            // One channel (every plain operation) needs no vector of guards.
            let mut one: [MutexGuard<'_, ChanState<T>>; 1];
            let mut many: Vec<MutexGuard<'_, ChanState<T>>>;
            let guards: &mut [MutexGuard<'_, ChanState<T>>] = match locks.as_slice() {
                [c] => {
                    one = [lock(&c.inner.state)];
                    &mut one
                }
                _ => {
                    many = locks.iter().map(|c| lock(&c.inner.state)).collect();
                    &mut many
                }
            };
            let mut result: Option<Result<Selected<T>, SelectError>> = None;
            let mut timeout_live = false;
            for &i in order.iter() {
                let op = &mut ops[i];
                match &mut op.kind {
                    Kind::Skip => {
                        result = Some(Ok(Selected { index: i, value: None }));
                    }
                    Kind::Timeout(_) => match op_deadlines.iter().find(|&&(j, _)| j == i) {
                        Some(&(_, at)) if now.is_some_and(|now| at <= now) => {
                            result = Some(Ok(Selected { index: i, value: None }));
                        }
                        Some(_) => timeout_live = true,
                        None => {}
                    },
                    Kind::Read => match guards[op.lock].try_read(&mut woken) {
                        ReadAttempt::Value(v) => {
                            result = Some(Ok(Selected { index: i, value: Some(v) }))
                        }
                        ReadAttempt::NotReady => waitable.push(i),
                        ReadAttempt::Failed(Error::Poisoned) => {
                            result = Some(Err(SelectError::Poisoned { index: i }))
                        }
                        ReadAttempt::Failed(Error::Moved) => {
                            result = Some(Err(SelectError::Moved { index: i }))
                        }
                        ReadAttempt::Failed(_) => {}
                    },
                    Kind::Write(slot) => {
                        let Some(v) = slot.take() else { continue };
                        match guards[op.lock].try_write(v, &mut woken) {
                            WriteAttempt::Sent => {
                                result = Some(Ok(Selected { index: i, value: None }))
                            }
                            WriteAttempt::NotReady(v) => {
                                *slot = Some(v);
                                waitable.push(i);
                            }
                            WriteAttempt::Failed(e, v) => {
                                *slot = Some(v);
                                if e == Error::Poisoned {
                                    result = Some(Err(SelectError::Poisoned { index: i }));
                                } else if e == Error::Moved {
                                    result = Some(Err(SelectError::Moved { index: i }));
                                }
                            }
                        }
                    }
                }
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
                    let signal = match spare.take() {
                        Some(mut s) => match Arc::get_mut(&mut s) {
                            Some(cell) => {
                                cell.reset(waker);
                                s
                            }
                            None => Arc::new(Signal::new(waker)),
                        },
                        None => Arc::new(Signal::new(waker)),
                    };
                    for &i in waitable.iter() {
                        let op = &mut ops[i];
                        let (value, is_read) = match &mut op.kind {
                            Kind::Read => (None, true),
                            Kind::Write(v) => (v.take(), false),
                            _ => continue,
                        };
                        // A kept slot is empty (`unregister_all` empties it) and, when nobody
                        // else holds it, ours to refill: no allocation, nothing dropped here.
                        if op.slot.as_mut().is_none_or(|s| Arc::get_mut(s).is_none()) {
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

    /// CAS the own cell to Aborted; on success, remove all entries and recover write values.
    fn withdraw(&mut self) -> bool {
        let Some(p) = &self.pending else { return false };
        if !p.signal.try_abort() {
            return false;
        }
        self.unregister_all();
        true
    }

    /// Removes every entry of the pending signal and takes back unsent write values.
    fn unregister_all(&mut self) {
        let Some(p) = self.pending.take() else { return };
        for op in self.ops.iter() {
            if op.registered {
                if let Some(c) = &op.chan {
                    lock(&c.inner.state).unregister(&p.signal);
                }
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
            // SAFETY: every entry is gone, and taking each channel's lock to remove them
            // ordered us after every counterpart that touched a slot (Slot's protocol).
            let back = unsafe { slot.take() };
            if let (Kind::Write(v), Some(back)) = (&mut op.kind, back) {
                *v = Some(back);
            }
        }
        self.spare = Some(p.signal);
    }

    fn finish(&mut self, op: usize, outcome: Outcome) -> Poll<T> {
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
            Outcome::Retired => self.attempt(policy, waker),
        }
    }
}

impl<T> Drop for Select<T> {
    fn drop(&mut self) {
        // A Select dropped mid-wait (a cancelled task, an unwinding thread) must not leave
        // entries behind. A value that arrived in the race is dropped with it: callers that
        // cancel and care about it call `abort` first, which returns it.
        if self.pending.is_some() && !self.withdraw() {
            self.unregister_all();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A cleared selection reused for many blocking operations (its cell and slots recycled)
    /// hands every value over once, in order, in both directions, and after timeouts.
    #[test]
    fn cleared_selection_is_reusable() {
        let (to_peer, from_peer) = (Channel::new(0), Channel::new(0));
        let (rx, tx) = (to_peer.clone(), from_peer.clone());
        let peer = std::thread::spawn(move || {
            for i in 0..500u32 {
                let v = rx.read().expect("peer read");
                assert_eq!(v, i);
                tx.write(v + 1).map_err(|e| e.error).expect("peer write");
            }
        });
        let mut sel = Select::new();
        for i in 0..500u32 {
            sel.clear();
            sel.write(&to_peer, i);
            assert_eq!(sel.select(Policy::Priority).map(|s| s.index), Ok(0));
            sel.clear();
            sel.read(&from_peer);
            assert_eq!(sel.select(Policy::Priority).map(|s| s.value), Ok(Some(i + 1)));
            if i % 100 == 0 {
                // A timed-out write keeps its value; the next use starts clean.
                sel.clear();
                let idle: Channel<u32> = Channel::new(0);
                sel.write(&idle, 99);
                let r = sel.select_timeout(Policy::Priority, Duration::from_millis(1));
                assert_eq!(r.map(|s| s.index), Err(SelectError::Timeout));
                assert_eq!(sel.take_value(0), Some(99));
                assert_eq!(idle.stats().writers_waiting, 0);
            }
        }
        peer.join().expect("peer thread");
        assert!(sel.spare.is_some(), "the cell is kept for reuse");
    }
}
