//! The state behind a channel's lock: its buffer, its two wait queues of [`Entry`]s, its end
//! counts, and the `try_*` functions that are the whole communication policy.
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

use super::slot::Entry;
use crate::error::Error;
use crate::signal::{Outcome, Signal};
use crate::stats::Stats;
use crate::sync::Arc;

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
    pub(super) capacity: usize,
    pub(super) buffer: VecDeque<T>,
    readers: VecDeque<Entry<T>>,
    writers: VecDeque<Entry<T>>,
    pub(super) poisoned: bool,
    /// The channel moved to another transport (`Channel::close_moved`).
    pub(super) moved: bool,
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
    pub(super) fn new(capacity: usize) -> Self {
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
    pub(super) fn take_from_writer(&mut self, woken: &mut Woken) -> Option<T> {
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
            if let Some(old) = old {
                crate::select::drop_value(old); // never: out of line (`drop_value`'s why)
            }
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

    /// Marks the channel moved: hands out the buffer, then fails every waiter with `Moved`
    /// (nothing sent or taken: they retry on the new transport). A blocked writer's value is
    /// not handed out with the buffer: its write completing then would put more than
    /// `capacity` values in the channel with nobody reading (found by the hypothesis models).
    pub(super) fn close_moved(&mut self, woken: &mut Woken) -> Vec<T> {
        let out: Vec<T> = self.buffer.drain(..).collect();
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

    /// Whether a read, and whether a write, might complete now (`ready.rs`: true unless it
    /// surely cannot; a dead entry counts as a counterpart, a closed or retired channel as
    /// ready, since its operations fail at once).
    pub(super) fn might_complete(&self) -> (bool, bool) {
        let over = self.poisoned || self.moved || self.is_retired();
        let read = over || !self.buffer.is_empty() || !self.writers.is_empty();
        let write = over || !self.readers.is_empty() || self.buffer.len() < self.capacity;
        (read, write)
    }

    fn live(queue: &VecDeque<Entry<T>>) -> usize {
        queue.iter().filter(|e| e.signal.is_waiting()).count()
    }

    pub(super) fn stats(&self) -> Stats {
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
