//! The channel: one mutex-protected state shared by every reader and writer.
//!
//! A channel holds a bounded FIFO buffer (empty forever when the capacity is 0, i.e. a
//! rendezvous channel) and two wait queues of [`Entry`]s: blocked readers and blocked writers.
//! An entry points at its owner's selection cell ([`Signal`](crate::signal::Signal)) and at a
//! private slot that carries the value (`channel/slot.rs`). All the policy lives in the
//! `State::try_*` functions (`channel/state.rs`, with the invariants they keep); `Select` calls
//! them for every operation, so plain reads/writes and Alts run one algorithm.
//!
//! This file is the `Channel` handle. Invariant: each operation that changes the state is one
//! critical section, and the parties it completed are woken (and values it dropped are dropped)
//! only after the lock is released.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering as StdOrdering};
use std::time::{Duration, Instant};

use crate::ends::{Reader, Writer};
use crate::error::{Error, WriteError};
use crate::select::{Policy, Select};
use crate::stats::Stats;
use crate::sync::Arc;

mod ready;
mod slot;
mod state;

pub(crate) use ready::{Guard, Locked};
pub(crate) use slot::{Entry, Slot};
pub(crate) use state::{wake_all, ReadAttempt, State, Woken, WriteAttempt};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, StdOrdering::Relaxed)
}

pub(crate) struct Inner<T> {
    /// The state behind the channel's lock, and the readiness hint (`channel/ready.rs`).
    pub(crate) state: Locked<T>,
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
                state: Locked::new(State::new(capacity)),
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

    /// Whether a read might complete now: false when, as of the channel's last operation,
    /// nothing could be read (no buffered value, no waiting writer, not closed or retired).
    ///
    /// A hint read without the lock (one atomic load), for skipping a [`Channel::try_read`]
    /// that would fail before an operation that waits anyway: it may be stale as soon as it is
    /// read, so "false" never stands in for a try under the lock (a blocking read still tries
    /// before it registers).
    pub fn might_read(&self) -> bool {
        self.inner.state.may_read()
    }

    /// Whether a write might complete now: false when, as of the channel's last operation,
    /// nothing could be written (no waiting reader, no buffer space, not closed or retired).
    /// A hint, as [`Channel::might_read`] says.
    pub fn might_write(&self) -> bool {
        self.inner.state.may_write()
    }

    /// Reads a value if one can be taken right now (a buffered value or a waiting writer).
    ///
    /// Errors: [`Error::WouldBlock`] when nothing is ready, [`Error::Poisoned`],
    /// [`Error::Retired`] once all writer ends retired and the buffer is drained.
    pub fn try_read(&self) -> Result<T, Error> {
        let mut woken = Woken::new();
        let r = {
            let mut st = self.inner.state.lock();
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
            let mut st = self.inner.state.lock();
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
        // The selection tries again under the lock: the first try only spares a blocked
        // thread's selection when something is there, so skip it when nothing can be.
        if self.might_read() {
            match self.try_read() {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
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
        // As in `read_deadline`: the selection tries again under the lock.
        let value = if self.might_write() {
            match self.try_write(value) {
                Err(WriteError { error: Error::WouldBlock, value }) => value,
                r => return r,
            }
        } else {
            value
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
            let mut st = self.inner.state.lock();
            let d = st.poison(&mut woken);
            st.check();
            d
        };
        wake_all(woken);
        drop(dropped);
    }

    /// Moves the channel out of process memory, atomically under its lock: returns the values
    /// it held (its buffer), in order, for the new transport to take over; every blocked and
    /// every later operation fails with [`Error::Moved`] (nothing sent or taken), so its
    /// caller retries on the new transport (a blocked writer's write does not complete by the
    /// move: the channel would then hold more than its capacity). Idempotent (a second call
    /// returns nothing).
    pub fn close_moved(&self) -> Vec<T> {
        let mut woken = Woken::new();
        let out = {
            let mut st = self.inner.state.lock();
            let out = if st.moved { Vec::new() } else { st.close_moved(&mut woken) };
            st.check();
            out
        };
        wake_all(woken);
        out
    }

    /// Whether the channel is poisoned.
    pub fn is_poisoned(&self) -> bool {
        self.inner.state.lock().poisoned
    }

    /// Whether all counted writer ends or all counted reader ends have retired.
    pub fn is_retired(&self) -> bool {
        self.inner.state.lock().is_retired()
    }

    /// A new counted reader end. When every reader end made has retired, writers fail with
    /// [`Error::Retired`].
    pub fn reader(&self) -> Reader<T> {
        self.inner.state.lock().add_reader_end();
        Reader::new(self.clone())
    }

    /// A new counted writer end. When every writer end made has retired, readers see
    /// end-of-stream ([`Error::Retired`]) once the buffer is drained.
    pub fn writer(&self) -> Writer<T> {
        self.inner.state.lock().add_writer_end();
        Writer::new(self.clone())
    }

    pub(crate) fn retire_reader_end(&self) {
        let mut woken = Woken::new();
        let dropped = {
            let mut st = self.inner.state.lock();
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
            let mut st = self.inner.state.lock();
            st.retire_writer_end(&mut woken);
            st.check();
        }
        wake_all(woken);
    }

    /// A consistent snapshot of the channel's counters.
    pub fn stats(&self) -> Stats {
        self.inner.state.lock().stats()
    }

    /// Calls `f` on every buffered value, unless the channel is locked right now (then returns
    /// false and visits nothing). For garbage collectors that must not block.
    pub fn try_visit_buffered(&self, mut f: impl FnMut(&T)) -> bool {
        match self.inner.state.try_lock() {
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
        let mut st = self.inner.state.lock();
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
