//! A plain read or write started in one critical section: try it and, if it cannot complete,
//! register it under the same channel lock ([`Select::start_read`], [`Select::start_write`]).
//!
//! A cooperative backend (one greenlet blocking per communication) would otherwise lock the
//! channel twice for every operation that blocks: once for the non-blocking try, once for the
//! selection's try-and-register. Here the try is the selection's step 1 and the registration
//! its step 2, under one lock; an operation that completes at once adds nothing to the
//! selection (no channel handle is cloned), so it costs what `Channel::try_read` costs.
//!
//! Invariants (those of `protocol.rs`, kept the same way):
//! - Check and register happen under the one channel lock, so a counterpart that comes later
//!   sees the entry, and one that came earlier was seen by the try.
//! - Nobody is woken, and no value is dropped, before the lock is released.
//! - A write that did not fire keeps its value in operation 0 ([`Select::take_value`]).

use std::time::Instant;

use super::protocol::recycle_cell;
use super::{Kind, Op, Pending, Policy, Poll, Select, Selected};
use crate::channel::{wake_all, Channel, Entry, ReadAttempt, Slot, Woken, WriteAttempt};
use crate::error::{Error, SelectError};
use crate::signal::Waker;
use crate::sync::{held_alone, Arc};

impl<T> Select<T> {
    /// Starts a plain read of `chan` on this empty selection: reads at once if a value is
    /// ready, otherwise registers the read (woken by `waker`) and returns [`Poll::Pending`],
    /// to be driven like [`Select::start`]'s. `waker` is cloned only if the selection's
    /// recycled cell does not already hold it. `deadline` bounds the wait
    /// ([`SelectError::Timeout`]).
    ///
    /// # Panics
    /// If the selection holds operations or is in progress.
    pub fn start_read(
        &mut self,
        chan: &Channel<T>,
        waker: &Waker,
        deadline: Option<Instant>,
    ) -> Poll<T> {
        self.start_single(chan, None, waker, deadline)
    }

    /// Starts a plain write of `value` to `chan` on this empty selection, as
    /// [`Select::start_read`] does a read. A write that does not fire keeps its value
    /// (operation 0; [`Select::take_value`]).
    ///
    /// # Panics
    /// If the selection holds operations or is in progress.
    pub fn start_write(
        &mut self,
        chan: &Channel<T>,
        value: T,
        waker: &Waker,
        deadline: Option<Instant>,
    ) -> Poll<T> {
        self.start_single(chan, Some(value), waker, deadline)
    }

    /// `value`: `None` for a read, the value for a write.
    fn start_single(
        &mut self,
        chan: &Channel<T>,
        value: Option<T>,
        waker: &Waker,
        deadline: Option<Instant>,
    ) -> Poll<T> {
        assert!(self.pending.is_none(), "a selection is already in progress on this Select");
        assert!(self.ops.is_empty(), "start_read/start_write need an empty selection");
        let is_read = value.is_none();
        let mut woken = Woken::new();
        let mut st = chan.inner.state.lock();
        // Step 1: the try. `kept` is a write's value that did not go.
        let (result, kept) = match value {
            None => match st.try_read(&mut woken) {
                ReadAttempt::Value(v) => (Some(Ok(Some(v))), None),
                ReadAttempt::NotReady => (None, None),
                ReadAttempt::Failed(e) => (Some(Err(e)), None),
            },
            Some(v) => match st.try_write(v, &mut woken) {
                WriteAttempt::Sent => (Some(Ok(None)), None),
                WriteAttempt::NotReady(v) => (None, Some(v)),
                WriteAttempt::Failed(e, v) => (Some(Err(e)), Some(v)),
            },
        };
        if let Some(result) = result {
            st.check();
            drop(st);
            wake_all(woken);
            let kind = if is_read { Kind::Read } else { Kind::Write(kept) };
            return Poll::Ready(match result {
                Ok(value) => {
                    self.last = Some(0);
                    Ok(Selected { index: 0, value })
                }
                Err(e) => {
                    // Failed: the operation is kept, so a write's value can be taken back.
                    self.push_single(chan, kind);
                    Err(match e {
                        Error::Poisoned => SelectError::Poisoned { index: 0 },
                        Error::Moved => SelectError::Moved { index: 0 },
                        // A retired channel: nothing left to wait for (as `attempt` says).
                        _ => SelectError::Retired,
                    })
                }
            });
        }
        // Step 2: register under the same lock (nothing completed, so nobody is to be woken).
        self.deadline = deadline;
        self.op_deadlines.clear();
        self.push_single(chan, if is_read { Kind::Read } else { Kind::Write(None) });
        let signal = recycle_cell(&mut self.spare, waker, &self.link);
        let op = &mut self.ops[0];
        // A kept slot is empty and, when nobody else holds it, ours to refill (as `attempt`).
        if op.slot.as_mut().is_none_or(|s| !held_alone(s)) {
            op.slot = Some(Arc::new(Slot::new()));
        }
        if let Some(slot) = op.slot.as_ref().map(Arc::clone) {
            // SAFETY: nobody else holds the slot (just checked, or new), and the entry that
            // will share it is not queued yet.
            let old = unsafe { slot.replace(kept) };
            debug_assert!(old.is_none(), "a kept slot is empty");
            op.registered = true;
            let entry = Entry { signal: Arc::clone(&signal), op: 0, slot };
            if is_read {
                st.register_reader(entry);
            } else {
                st.register_writer(entry);
            }
        }
        st.check();
        drop(st);
        self.pending = Some(Pending { signal, policy: Policy::Priority });
        Poll::Pending
    }

    /// Makes the selection's one operation (with a handle of `chan`: `Select::handle`). The lock list is left
    /// to be built if a restart needs it (`locks_dirty`).
    fn push_single(&mut self, chan: &Channel<T>, kind: Kind<T>) {
        let slot = self.spare_slots.pop();
        self.ops.reserve_exact(1);
        let chan = self.handle(chan);
        self.ops.push(Op { chan: Some(chan), kind, slot, registered: false, lock: 0 });
        self.locks.clear();
        self.locks_dirty = true;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn drive<T>(sel: &mut Select<T>, mut poll: Poll<T>) -> Result<Selected<T>, SelectError> {
        loop {
            match poll {
                Poll::Ready(r) => return r,
                Poll::Pending => {
                    sel.park(None);
                    poll = sel.resume();
                }
            }
        }
    }

    /// Ready at once: nothing is added to the selection, nothing registered.
    #[test]
    fn ready_operations_leave_the_selection_empty() {
        let ch = Channel::new(1);
        let waker = Waker::current_thread();
        let mut sel = Select::new();
        assert!(matches!(sel.start_write(&ch, 3u8, &waker, None), Poll::Ready(Ok(_))));
        assert!(sel.is_empty() && !sel.is_pending());
        match sel.start_read(&ch, &waker, None) {
            Poll::Ready(Ok(s)) => assert_eq!((s.index, s.value), (0, Some(3))),
            other => panic!("unexpected {other:?}"),
        }
        assert!(sel.is_empty() && !sel.is_pending());
    }

    /// A failed write keeps its value in operation 0; a read of a retired channel fails.
    #[test]
    fn failures_keep_the_write_value() {
        let ch: Channel<String> = Channel::new(0);
        ch.poison();
        let waker = Waker::current_thread();
        let mut sel = Select::new();
        match sel.start_write(&ch, "v".to_owned(), &waker, None) {
            Poll::Ready(Err(e)) => assert_eq!(e, SelectError::Poisoned { index: 0 }),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(sel.take_value(0).as_deref(), Some("v"));
        let ch: Channel<String> = Channel::new(0);
        drop(ch.writer()); // the only writer end retires: end of stream
        sel.clear();
        assert!(matches!(
            sel.start_read(&ch, &waker, None),
            Poll::Ready(Err(SelectError::Retired))
        ));
    }

    /// Blocking hand-offs both ways on one kept selection, a timed-out write that keeps its
    /// value, and a retirement under a registered read (the restart needs the lock list).
    #[test]
    fn blocking_round_trips_on_a_kept_selection() {
        let (to_peer, from_peer) = (Channel::new(0), Channel::new(0));
        let (rx, tx) = (to_peer.clone(), from_peer.clone());
        let peer = std::thread::spawn(move || {
            for _ in 0..200u32 {
                let v = rx.read().expect("peer read");
                tx.write(v + 1).map_err(|e| e.error).expect("peer write");
            }
        });
        let waker = Waker::current_thread();
        let mut sel = Select::new();
        for i in 0..200u32 {
            sel.clear();
            let poll = sel.start_write(&to_peer, i, &waker, None);
            assert_eq!(drive(&mut sel, poll).map(|s| s.index), Ok(0));
            sel.clear();
            let poll = sel.start_read(&from_peer, &waker, None);
            assert_eq!(drive(&mut sel, poll).map(|s| s.value), Ok(Some(i + 1)));
        }
        peer.join().expect("peer thread");
        sel.clear();
        let idle: Channel<u32> = Channel::new(0);
        let soon = Instant::now().checked_add(std::time::Duration::from_millis(5));
        let poll = sel.start_write(&idle, 9, &waker, soon);
        assert_eq!(drive(&mut sel, poll).map(|s| s.index), Err(SelectError::Timeout));
        assert_eq!(sel.take_value(0), Some(9));
        assert_eq!(idle.stats().writers_waiting, 0);
        // A reader registered on a channel whose last writer end retires: restarted, it
        // finds nothing left to wait for.
        sel.clear();
        let w = idle.writer();
        let poll = sel.start_read(&idle, &waker, None);
        assert!(matches!(poll, Poll::Pending));
        let retire = std::thread::spawn(move || drop(w));
        assert_eq!(drive(&mut sel, Poll::Pending).map(|s| s.index), Err(SelectError::Retired));
        retire.join().expect("retiring thread");
        assert_eq!(idle.stats().readers_waiting, 0);
    }
}
