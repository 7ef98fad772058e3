//! Selection (Alt): wait for the first of several reads, writes, timeouts or a skip.
//!
//! Protocol (Go's `selectgo`, with crossbeam's one-CAS cell):
//! 1. **Try.** Lock every channel involved, in address order (invariant 6 of
//!    `channel::state`), and try the operations in the policy's order (`select/order.rs`); the
//!    first that can complete does, and the selection returns without blocking.
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
//! This file holds the operations list and the public API; the steps themselves are in
//! `select/protocol.rs`, and a plain read or write's try-and-register in one critical section
//! in `select/single.rs`.
//!
//! Invariants:
//! - At most one operation of a selection fires; a write's value is consumed iff it fired.
//! - A `Select` has at most one registration outstanding (`pending`); every entry it queued is
//!   removed before `Ready` is returned, so a finished selection leaves no trace in any channel.

use std::fmt;
use std::time::{Duration, Instant};

use crate::channel::{Channel, Slot};
use crate::error::SelectError;
use crate::signal::{Link, Outcome, Signal, State, Waker, MAX_OPS};
use crate::sync::Arc;

mod merged;
mod order;
mod protocol;
mod single;

pub use merged::Turn;

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
    /// The handle of a cleared operation's rendezvous channel, reused by the next operation
    /// on that channel: a process that waits on the same channel again and again (a ring, a
    /// pipeline stage) clones and drops no handle (two locked instructions). Only a
    /// rendezvous channel's: it owns no values, so keeping it alive keeps nothing of the
    /// caller's alive.
    spare_chan: Option<Channel<T>>,
    /// The shared word the next registrations' cells are linked to ([`Select::start_linked`]).
    link: Option<std::sync::Arc<dyn Link>>,
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

/// Drops a value of the caller's, out of line. A value's drop may be costly to reach even
/// when a loop drops none: the bindings' `T`, a Python object, asks a thread-local whether
/// the thread holds the GIL, and inlined in a loop that lookup is hoisted to the loop's entry
/// (two thread-local lookups per coroutine communication, from `clear` and
/// `unregister_all`, in session 16's count).
#[inline(never)]
pub(crate) fn drop_value<T>(v: T) {
    drop(v);
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
            rng: order::seed(),
            deadline: None,
            op_deadlines: Vec::new(),
            pending: None,
            spare: None,
            spare_slots: Vec::new(),
            spare_chan: None,
            link: None,
        }
    }

    /// Removes every operation and resets the selection to its `new()` state, keeping its
    /// allocations (operation list, lock list, selection cell, value slots) for the next use.
    ///
    /// A backend that keeps one `Select` per waiting process and clears it between operations
    /// blocks and wakes without allocating. Values of unsent writes are dropped here. The
    /// handle of the last rendezvous channel is kept too, for the next operation on it.
    ///
    /// # Panics
    /// If a selection is in progress.
    pub fn clear(&mut self) {
        assert!(self.pending.is_none(), "cannot clear a selection in progress");
        for op in self.ops.drain(..) {
            if let Kind::Write(Some(v)) = op.kind {
                drop_value(v);
            }
            if let Some(slot) = op.slot {
                self.spare_slots.push(slot);
            }
            if let Some(chan) = op.chan.filter(|c| c.capacity() == 0) {
                self.spare_chan = Some(chan);
            }
        }
        self.locks.clear();
        self.locks_dirty = false;
        self.link = None;
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
        let chan = chan.map(|c| self.handle(c));
        self.ops.push(Op { chan, kind, slot, registered: false, lock: usize::MAX });
        self.ops.len() - 1
    }

    /// A handle of `chan` for a new operation: the kept one if it is `chan`'s, else a clone.
    fn handle(&mut self, chan: &Channel<T>) -> Channel<T> {
        match self.spare_chan.take_if(|c| c == chan) {
            Some(c) => c,
            None => chan.clone(),
        }
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

    /// Sets the delay of timeout operation `index`, e.g. to run the selection again with a new
    /// one (the delay counts from the start of each selection).
    pub fn set_timeout(&mut self, index: usize, after: Duration) {
        assert!(self.pending.is_none(), "cannot change a selection in progress");
        match self.ops.get_mut(index).map(|o| &mut o.kind) {
            Some(Kind::Timeout(d)) => *d = after,
            _ => panic!("operation {index} is not a timeout"),
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
        self.start_with(policy, &waker, deadline)
    }

    /// [`Select::start`] with a borrowed waker, cloned only if the selection's recycled cell
    /// does not already hold it (a backend that keeps one waker per process then pays no
    /// reference count per wait).
    pub fn start_with(
        &mut self,
        policy: Policy,
        waker: &Waker,
        deadline: Option<Instant>,
    ) -> Poll<T> {
        self.begin(policy, deadline);
        self.attempt(policy, Some(waker))
    }

    /// [`Select::start`] with the selection cell linked to `link`, a decision word shared with
    /// operations outside this `Select` (an Alt that also waits on channels in shared memory;
    /// see `signal.rs`). The owner must close that word before it looks at the outcome:
    /// [`Select::abort`] does (through the cell), and reports an operation of this `Select`
    /// that won the word. A retired channel does not complete a linked selection: the link is
    /// nudged and the owner calls this again. The link stays set until [`Select::clear`].
    pub fn start_linked(
        &mut self,
        policy: Policy,
        waker: Waker,
        link: std::sync::Arc<dyn Link>,
    ) -> Poll<T> {
        self.link = Some(link);
        self.begin(policy, None);
        self.attempt(policy, Some(&waker))
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

    /// Whether an operation might fire now, by its channel's readiness hint
    /// ([`Channel::might_read`], [`Channel::might_write`]; a skip or timeout operation always
    /// might). False: as of each channel's last operation none could, so a
    /// [`Select::try_select`] would fail; a hint, as the channel's is, which lets a caller that
    /// will wait anyway skip that try (the wait's own try, under the locks, decides).
    pub fn might_fire(&self) -> bool {
        self.ops.iter().any(|op| match (&op.kind, &op.chan) {
            (Kind::Read, Some(c)) => c.might_read(),
            (Kind::Write(_), Some(c)) => c.might_write(),
            _ => true,
        })
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

    /// A cleared selection keeps the handle of its last rendezvous channel and gives it to
    /// the next operation on that channel (no clone); a buffered channel's handle is not
    /// kept, so the values buffered in a channel its owner dropped go with it.
    #[test]
    fn cleared_selection_keeps_only_a_rendezvous_handle() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let waker = Waker::current_thread();
        let handles = |c: &Channel<u32>| Arc::strong_count(&c.inner);
        let ch: Channel<u32> = Channel::new(0);
        let mut sel = Select::new();
        for _ in 0..3 {
            assert!(matches!(sel.start_read(&ch, &waker, None), Poll::Pending));
            assert_eq!(handles(&ch), 2, "ours and the operation's");
            assert_eq!(sel.abort(), None);
            sel.clear();
            assert_eq!(handles(&ch), 2, "the kept one");
        }
        sel.clear();
        let other: Channel<u32> = Channel::new(0);
        sel.read(&other);
        assert_eq!((handles(&ch), handles(&other)), (2, 2), "a clone for another channel");
        sel.clear();
        assert_eq!((handles(&ch), handles(&other)), (1, 2), "the newer one is kept");

        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let gone = Arc::new(AtomicBool::new(false));
        let buffered = Channel::new(1);
        let mut sel = Select::new();
        assert!(matches!(sel.start_read(&buffered, &waker, None), Poll::Pending));
        assert!(sel.abort().is_none());
        sel.clear();
        assert_eq!(Arc::strong_count(&buffered.inner), 1, "no buffered handle is kept");
        buffered.write(Dropped(Arc::clone(&gone))).map_err(|e| e.error).expect("write");
        drop(buffered);
        assert!(gone.load(Ordering::SeqCst), "the buffered value went with its channel");
    }
}
