//! The channel: one mutex-protected state shared by every reader and writer.
//!
//! A channel holds a bounded FIFO buffer (empty forever when the capacity is 0, i.e. a
//! rendezvous channel) and two wait queues of [`Entry`]s: blocked readers and blocked writers.
//! An entry points at its owner's selection cell ([`Signal`]) and at a private slot that carries
//! the value. All the policy lives here, in the `State::try_*` functions; `Select` calls them for
//! every operation, so plain reads/writes and Alts run one algorithm.
//!
//! Invariants, checked by `State::check` in debug builds and by the loom models (an entry is
//! *live* while its signal is still waiting; dead entries are removed by their owner right after
//! it is woken, so they are only ever transient):
//! 1. `buffer.len() <= capacity`.
//! 2. `!buffer.is_empty()` implies no live reader entry (a writer hands its value straight to a
//!    waiting reader instead of buffering it).
//! 3. `buffer.len() < capacity` implies no live writer entry (a reader that frees a slot refills
//!    it from the first live waiting writer).
//! 4. A live reader entry and a live writer entry belong to the same selection (an Alt waiting
//!    on both ends of this channel) — otherwise whoever registered second would have completed
//!    the first.
//! 5. `poisoned` or `moved` implies the buffer and both queues are empty.
//! 6. Lock order: several channel locks are only ever taken together by `Select`, sorted by
//!    address (Go's `selectgo` does the same), so no two threads deadlock on channel locks.
//! 7. No user code runs under a channel lock: values are moved, never cloned or dropped, inside
//!    a critical section (dropped buffers are returned to the caller and dropped after unlock).

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering as StdOrdering};
use std::time::{Duration, Instant};

use crate::ends::{Reader, Writer};
use crate::error::{Error, WriteError};
use crate::select::{Policy, Select};
use crate::signal::{Outcome, Signal};
use crate::stats::Stats;
#[cfg(not(loom))]
use std::cell::UnsafeCell;

#[cfg(loom)]
use loom::cell::UnsafeCell;

use crate::sync::{lock, try_lock, Arc, Mutex};

/// Where a waiting operation's value travels: written by exactly one party at a time, as the
/// protocol in [`crate::signal`] describes, so it needs no lock of its own. Who may touch it:
/// - its owner, while registering it (under the channel lock, before the entry is visible);
/// - a counterpart that popped its entry, under the channel lock: a writer storing a value
///   before its CAS on the owner's cell (taking it back if the CAS fails), or a reader taking
///   the value after winning the CAS;
/// - its owner after the wait: the slot of the operation a writer completed, once it has seen
///   `Completed(op, Done)` (acquire; the writer stored before its release CAS); any slot once
///   it has removed its entries, which takes every involved channel lock after the
///   counterparts' critical sections.
///
/// The loom models check these accesses with loom's `UnsafeCell`, which flags any two that
/// are not ordered by a lock or the CAS.
pub(crate) struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: the content moves between threads (so `T: Send`), and the protocol above orders
// every access, so sharing a `&Slot` is sound.
unsafe impl<T: Send> Sync for Slot<T> {}
// SAFETY: as above; a `Slot` owns an `Option<T>`.
unsafe impl<T: Send> Send for Slot<T> {}

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot(UnsafeCell::new(None))
    }

    /// Puts `v` in the slot, returning what was there.
    ///
    /// # Safety
    /// The caller is the one party allowed to touch the slot now (see the type's docs).
    pub(crate) unsafe fn replace(&self, v: Option<T>) -> Option<T> {
        #[cfg(loom)]
        // SAFETY: exclusive access by the caller's contract; loom checks it.
        return self.0.with_mut(|p| unsafe { std::mem::replace(&mut *p, v) });
        #[cfg(not(loom))]
        // SAFETY: exclusive access by the caller's contract.
        return unsafe { std::mem::replace(&mut *self.0.get(), v) };
    }

    /// Takes the value out of the slot.
    ///
    /// # Safety
    /// As for [`Slot::replace`].
    pub(crate) unsafe fn take(&self) -> Option<T> {
        // SAFETY: the caller's contract.
        unsafe { self.replace(None) }
    }
}

/// One blocked operation, queued on a channel.
pub(crate) struct Entry<T> {
    pub(crate) signal: Arc<Signal>,
    pub(crate) op: usize,
    pub(crate) slot: Arc<Slot<T>>,
}

/// The result of trying to read without waiting.
pub(crate) enum ReadAttempt<T> {
    Value(T),
    NotReady,
    Failed(Error),
}

/// The result of trying to write without waiting.
pub(crate) enum WriteAttempt<T> {
    Sent,
    NotReady(T),
    Failed(Error, T),
}

/// The state behind the channel lock.
pub(crate) struct State<T> {
    capacity: usize,
    buffer: VecDeque<T>,
    readers: VecDeque<Entry<T>>,
    writers: VecDeque<Entry<T>>,
    poisoned: bool,
    /// The channel moved to another transport (`Channel::close_moved`).
    moved: bool,
    reader_ends_made: usize,
    reader_ends: usize,
    writer_ends_made: usize,
    writer_ends: usize,
}

/// Signals to wake once the lock is released. A plain operation wakes at most one party, kept
/// inline, so the hot path allocates nothing; poison and retire may wake many.
pub(crate) struct Woken {
    first: Option<Arc<Signal>>,
    rest: Vec<Arc<Signal>>,
}

impl Woken {
    pub(crate) const fn new() -> Self {
        Woken { first: None, rest: Vec::new() }
    }

    pub(crate) fn push(&mut self, s: Arc<Signal>) {
        if self.first.is_none() {
            self.first = Some(s);
        } else {
            self.rest.push(s);
        }
    }
}

pub(crate) fn wake_all(woken: Woken) {
    let Woken { first, rest } = woken;
    if let Some(s) = first {
        s.wake();
    }
    for s in rest {
        s.wake();
    }
}

impl<T> State<T> {
    fn new(capacity: usize) -> Self {
        State {
            capacity,
            buffer: VecDeque::with_capacity(capacity.min(1024)),
            readers: VecDeque::new(),
            writers: VecDeque::new(),
            poisoned: false,
            moved: false,
            reader_ends_made: 0,
            reader_ends: 0,
            writer_ends_made: 0,
            writer_ends: 0,
        }
    }

    /// All counted writer ends have retired: readers drain the buffer, then see end-of-stream.
    fn writers_retired(&self) -> bool {
        self.writer_ends_made > 0 && self.writer_ends == 0
    }

    /// All counted reader ends have retired: nobody will ever read again.
    fn readers_retired(&self) -> bool {
        self.reader_ends_made > 0 && self.reader_ends == 0
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.writers_retired() || self.readers_retired()
    }

    /// Pops waiting writers until one is won; returns its value. Dead entries are dropped.
    fn take_from_writer(&mut self, woken: &mut Woken) -> Option<T> {
        while let Some(e) = self.writers.pop_front() {
            if e.signal.try_complete(e.op, Outcome::Done) {
                // We won the writer's cell, so its slot is ours to empty (signal.rs protocol).
                // SAFETY: we popped the entry and won its cell, under the channel lock.
                let v = unsafe { e.slot.take() };
                debug_assert!(v.is_some(), "a live writer entry always carries its value");
                woken.push(e.signal);
                if let Some(v) = v {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Why nothing can happen here any more, if so: poisoned, or moved to another transport.
    fn closed(&self) -> Option<Error> {
        if self.poisoned {
            Some(Error::Poisoned)
        } else if self.moved {
            Some(Error::Moved)
        } else {
            None
        }
    }

    pub(crate) fn try_read(&mut self, woken: &mut Woken) -> ReadAttempt<T> {
        if let Some(e) = self.closed() {
            return ReadAttempt::Failed(e);
        }
        if self.readers_retired() {
            return ReadAttempt::Failed(Error::Retired);
        }
        if let Some(v) = self.buffer.pop_front() {
            // Keep invariant 3: the freed place goes to the first live waiting writer.
            if let Some(w) = self.take_from_writer(woken) {
                self.buffer.push_back(w);
            }
            return ReadAttempt::Value(v);
        }
        if let Some(v) = self.take_from_writer(woken) {
            return ReadAttempt::Value(v);
        }
        if self.writers_retired() {
            return ReadAttempt::Failed(Error::Retired);
        }
        ReadAttempt::NotReady
    }

    pub(crate) fn try_write(&mut self, value: T, woken: &mut Woken) -> WriteAttempt<T> {
        if let Some(e) = self.closed() {
            return WriteAttempt::Failed(e, value);
        }
        if self.is_retired() {
            return WriteAttempt::Failed(Error::Retired, value);
        }
        let mut value = value;
        while let Some(e) = self.readers.pop_front() {
            if !e.signal.is_waiting() {
                continue;
            }
            // Store first, then CAS (signal.rs protocol): the reader sees the value as soon as
            // it sees itself completed.
            // SAFETY: we popped the entry of a waiting reader, under the channel lock.
            let old = unsafe { e.slot.replace(Some(value)) };
            debug_assert!(old.is_none(), "a waiting reader's slot is empty");
            if e.signal.try_complete(e.op, Outcome::Done) {
                woken.push(e.signal);
                return WriteAttempt::Sent;
            }
            // SAFETY: we lost the CAS, so the owner will not read the slot before it takes
            // this channel's lock to unregister; we still hold it.
            match unsafe { e.slot.take() } {
                Some(v) => value = v,
                None => unreachable!("only this writer touches a slot it lost"),
            }
        }
        if self.buffer.len() < self.capacity {
            self.buffer.push_back(value);
            return WriteAttempt::Sent;
        }
        WriteAttempt::NotReady(value)
    }

    pub(crate) fn register_reader(&mut self, entry: Entry<T>) {
        self.readers.push_back(entry);
    }

    pub(crate) fn register_writer(&mut self, entry: Entry<T>) {
        self.writers.push_back(entry);
    }

    /// Removes every entry of `signal` (its owner was woken or withdrew).
    pub(crate) fn unregister(&mut self, signal: &Arc<Signal>) {
        self.readers.retain(|e| !Arc::ptr_eq(&e.signal, signal));
        self.writers.retain(|e| !Arc::ptr_eq(&e.signal, signal));
    }

    /// Completes every waiting entry with `outcome`, draining `queue`.
    fn fail_waiters(queue: &mut VecDeque<Entry<T>>, outcome: Outcome, woken: &mut Woken) {
        for e in queue.drain(..) {
            if e.signal.try_complete(e.op, outcome) {
                woken.push(e.signal);
            }
        }
    }

    /// Marks the channel moved: hands out the buffer and, up to the capacity, the values of
    /// blocked writers (whose writes thereby complete), then fails every other waiter with
    /// `Moved` (nothing sent or taken: they retry on the new transport).
    fn close_moved(&mut self, woken: &mut Woken) -> Vec<T> {
        let mut out: Vec<T> = self.buffer.drain(..).collect();
        for _ in 0..self.capacity {
            match self.take_from_writer(woken) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        self.moved = true;
        Self::fail_waiters(&mut self.readers, Outcome::Moved, woken);
        Self::fail_waiters(&mut self.writers, Outcome::Moved, woken);
        out
    }

    /// Poisons the channel; returns the dropped buffer, to be dropped after unlocking.
    pub(crate) fn poison(&mut self, woken: &mut Woken) -> VecDeque<T> {
        self.poisoned = true;
        Self::fail_waiters(&mut self.readers, Outcome::Poisoned, woken);
        Self::fail_waiters(&mut self.writers, Outcome::Poisoned, woken);
        std::mem::take(&mut self.buffer)
    }

    pub(crate) fn add_reader_end(&mut self) {
        self.reader_ends_made += 1;
        self.reader_ends += 1;
    }

    pub(crate) fn add_writer_end(&mut self) {
        self.writer_ends_made += 1;
        self.writer_ends += 1;
    }

    /// One writer end retires. The last one ends the stream: blocked readers (whose existence
    /// implies an empty buffer, invariant 2) learn it now; later readers drain the buffer first.
    pub(crate) fn retire_writer_end(&mut self, woken: &mut Woken) {
        self.writer_ends = self.writer_ends.saturating_sub(1);
        if self.writers_retired() && self.closed().is_none() {
            Self::fail_waiters(&mut self.readers, Outcome::Retired, woken);
        }
    }

    /// One reader end retires. After the last one nobody can ever read: blocked parties fail
    /// and the buffer is returned to be dropped after unlocking.
    pub(crate) fn retire_reader_end(&mut self, woken: &mut Woken) -> VecDeque<T> {
        self.reader_ends = self.reader_ends.saturating_sub(1);
        if self.readers_retired() && self.closed().is_none() {
            Self::fail_waiters(&mut self.writers, Outcome::Retired, woken);
            Self::fail_waiters(&mut self.readers, Outcome::Retired, woken);
            return std::mem::take(&mut self.buffer);
        }
        VecDeque::new()
    }

    fn live(queue: &VecDeque<Entry<T>>) -> usize {
        queue.iter().filter(|e| e.signal.is_waiting()).count()
    }

    fn stats(&self) -> Stats {
        Stats {
            capacity: self.capacity,
            buffered: self.buffer.len(),
            readers_waiting: Self::live(&self.readers),
            writers_waiting: Self::live(&self.writers),
            reader_ends: self.reader_ends,
            writer_ends: self.writer_ends,
            poisoned: self.poisoned,
            retired: self.is_retired(),
        }
    }

    /// Asserts the module invariants (debug builds and loom models only).
    pub(crate) fn check(&self) {
        if cfg!(debug_assertions) {
            let live_r: Vec<_> = self.readers.iter().filter(|e| e.signal.is_waiting()).collect();
            let live_w: Vec<_> = self.writers.iter().filter(|e| e.signal.is_waiting()).collect();
            assert!(self.buffer.len() <= self.capacity, "invariant 1");
            assert!(self.buffer.is_empty() || live_r.is_empty(), "invariant 2");
            assert!(self.buffer.len() >= self.capacity || live_w.is_empty(), "invariant 3");
            for r in &live_r {
                for w in &live_w {
                    assert!(Arc::ptr_eq(&r.signal, &w.signal), "invariant 4");
                }
            }
            if self.closed().is_some() {
                assert!(self.buffer.is_empty(), "invariant 5");
                assert!(self.readers.is_empty() && self.writers.is_empty(), "invariant 5");
            }
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, StdOrdering::Relaxed)
}

pub(crate) struct Inner<T> {
    pub(crate) state: Mutex<State<T>>,
    id: u64,
    /// Immutable copy of `State::capacity`, readable without the lock.
    capacity: usize,
}

/// A CSP channel: rendezvous when `capacity == 0`, else a bounded FIFO buffer.
///
/// `Channel` is a cheap handle (`Clone` makes another handle to the same channel) and is
/// `Send + Sync` when `T: Send`. Any number of threads may read and write concurrently
/// (any-to-any); each value is delivered to exactly one reader. Waiting parties are served
/// first-come first-served.
///
/// ```
/// use ferrocsp::Channel;
/// let ch = Channel::new(0); // rendezvous
/// let w = ch.clone();
/// let t = std::thread::spawn(move || w.write("hello").map_err(|e| e.error));
/// assert_eq!(ch.read(), Ok("hello"));
/// t.join().unwrap().unwrap();
/// ```
pub struct Channel<T> {
    pub(crate) inner: Arc<Inner<T>>,
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Channel { inner: Arc::clone(&self.inner) }
    }
}

impl<T> PartialEq for Channel<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<T> Eq for Channel<T> {}

impl<T> Hash for Channel<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.id.hash(state);
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("id", &self.inner.id).field("stats", &self.stats()).finish()
    }
}

impl<T> Channel<T> {
    /// A new channel; `capacity == 0` makes a rendezvous channel.
    pub fn new(capacity: usize) -> Self {
        Channel {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(capacity)),
                id: next_id(),
                capacity,
            }),
        }
    }

    /// A process-unique identifier of this channel.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The buffer size (0 for rendezvous).
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The address that orders lock acquisition across channels (`Select` sorts by it).
    pub(crate) fn addr(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }

    /// Reads a value if one can be taken right now (a buffered value or a waiting writer).
    ///
    /// Errors: [`Error::WouldBlock`] when nothing is ready, [`Error::Poisoned`],
    /// [`Error::Retired`] once all writer ends retired and the buffer is drained.
    pub fn try_read(&self) -> Result<T, Error> {
        let mut woken = Woken::new();
        let r = {
            let mut st = lock(&self.inner.state);
            let r = st.try_read(&mut woken);
            st.check();
            r
        };
        wake_all(woken);
        match r {
            ReadAttempt::Value(v) => Ok(v),
            ReadAttempt::NotReady => Err(Error::WouldBlock),
            ReadAttempt::Failed(e) => Err(e),
        }
    }

    /// Writes a value if it can be delivered right now (a waiting reader or buffer space).
    pub fn try_write(&self, value: T) -> Result<(), WriteError<T>> {
        let mut woken = Woken::new();
        let r = {
            let mut st = lock(&self.inner.state);
            let r = st.try_write(value, &mut woken);
            st.check();
            r
        };
        wake_all(woken);
        match r {
            WriteAttempt::Sent => Ok(()),
            WriteAttempt::NotReady(value) => Err(WriteError { error: Error::WouldBlock, value }),
            WriteAttempt::Failed(error, value) => Err(WriteError { error, value }),
        }
    }

    /// Reads a value, blocking the calling thread until one arrives.
    pub fn read(&self) -> Result<T, Error> {
        self.read_deadline(None)
    }

    /// Reads a value, giving up with [`Error::Timeout`] after `timeout`; nothing is taken then.
    pub fn read_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.read_deadline(Instant::now().checked_add(timeout))
    }

    /// Reads a value, giving up at `deadline` (`None`: wait forever).
    pub fn read_deadline(&self, deadline: Option<Instant>) -> Result<T, Error> {
        match self.try_read() {
            Err(Error::WouldBlock) => {}
            r => return r,
        }
        let mut sel = Select::new();
        sel.read(self);
        match sel.select_deadline(Policy::Priority, deadline) {
            Ok(s) => s.value.ok_or(Error::WouldBlock),
            Err(e) => Err(e.error()),
        }
    }

    /// Writes a value, blocking the calling thread until a reader takes it (rendezvous) or
    /// it is buffered.
    pub fn write(&self, value: T) -> Result<(), WriteError<T>> {
        self.write_deadline(value, None)
    }

    /// Writes a value, giving up with [`Error::Timeout`] after `timeout`; nothing is sent then.
    pub fn write_timeout(&self, value: T, timeout: Duration) -> Result<(), WriteError<T>> {
        self.write_deadline(value, Instant::now().checked_add(timeout))
    }

    /// Writes a value, giving up at `deadline` (`None`: wait forever).
    pub fn write_deadline(&self, value: T, deadline: Option<Instant>) -> Result<(), WriteError<T>> {
        let value = match self.try_write(value) {
            Err(WriteError { error: Error::WouldBlock, value }) => value,
            r => return r,
        };
        let mut sel = Select::new();
        sel.write(self, value);
        match sel.select_deadline(Policy::Priority, deadline) {
            Ok(_) => Ok(()),
            Err(e) => match sel.take_value(0) {
                Some(value) => Err(WriteError { error: e.error(), value }),
                None => unreachable!("a write that did not fire keeps its value"),
            },
        }
    }

    /// Poisons the channel: every blocked and every later operation fails with
    /// [`Error::Poisoned`]; buffered values are dropped. Idempotent.
    pub fn poison(&self) {
        let mut woken = Woken::new();
        let dropped = {
            let mut st = lock(&self.inner.state);
            let d = st.poison(&mut woken);
            st.check();
            d
        };
        wake_all(woken);
        drop(dropped);
    }

    /// Moves the channel out of process memory, atomically under its lock: returns the values
    /// it held (its buffer, then up to `capacity` values of writers blocked on it, whose writes
    /// thereby complete), in order, for the new transport to take over; every other blocked
    /// and every later operation fails with [`Error::Moved`] (nothing sent or taken), so its
    /// caller retries on the new transport. Idempotent (a second call returns nothing).
    pub fn close_moved(&self) -> Vec<T> {
        let mut woken = Woken::new();
        let out = {
            let mut st = lock(&self.inner.state);
            let out = if st.moved { Vec::new() } else { st.close_moved(&mut woken) };
            st.check();
            out
        };
        wake_all(woken);
        out
    }

    /// Whether the channel is poisoned.
    pub fn is_poisoned(&self) -> bool {
        lock(&self.inner.state).poisoned
    }

    /// Whether all counted writer ends or all counted reader ends have retired.
    pub fn is_retired(&self) -> bool {
        lock(&self.inner.state).is_retired()
    }

    /// A new counted reader end. When every reader end made has retired, writers fail with
    /// [`Error::Retired`].
    pub fn reader(&self) -> Reader<T> {
        lock(&self.inner.state).add_reader_end();
        Reader::new(self.clone())
    }

    /// A new counted writer end. When every writer end made has retired, readers see
    /// end-of-stream ([`Error::Retired`]) once the buffer is drained.
    pub fn writer(&self) -> Writer<T> {
        lock(&self.inner.state).add_writer_end();
        Writer::new(self.clone())
    }

    pub(crate) fn retire_reader_end(&self) {
        let mut woken = Woken::new();
        let dropped = {
            let mut st = lock(&self.inner.state);
            let d = st.retire_reader_end(&mut woken);
            st.check();
            d
        };
        wake_all(woken);
        drop(dropped);
    }

    pub(crate) fn retire_writer_end(&self) {
        let mut woken = Woken::new();
        {
            let mut st = lock(&self.inner.state);
            st.retire_writer_end(&mut woken);
            st.check();
        }
        wake_all(woken);
    }

    /// A consistent snapshot of the channel's counters.
    pub fn stats(&self) -> Stats {
        lock(&self.inner.state).stats()
    }

    /// Calls `f` on every buffered value, unless the channel is locked right now (then returns
    /// false and visits nothing). For garbage collectors that must not block.
    pub fn try_visit_buffered(&self, mut f: impl FnMut(&T)) -> bool {
        match try_lock(&self.inner.state) {
            Some(st) => {
                st.buffer.iter().for_each(&mut f);
                true
            }
            None => false,
        }
    }

    /// Removes and returns all buffered values (for garbage collectors breaking cycles).
    pub fn drain_buffered(&self) -> Vec<T> {
        let mut woken = Woken::new();
        let mut st = lock(&self.inner.state);
        let mut out: Vec<T> = st.buffer.drain(..).collect();
        // Freed space may unblock writers; keep invariant 3.
        while st.buffer.len() < st.capacity {
            match st.take_from_writer(&mut woken) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        drop(st);
        wake_all(woken);
        out
    }
}
