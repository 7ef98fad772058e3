//! Who waits on a channel: every waiting count of the segment has an owner.
//!
//! `State::readers_waiting` and `writers_waiting` are what the hot paths read (a rendezvous
//! `write_nowait` reserves only if a reader waits; an `Alt`'s output guard waits for an idle
//! reader). A thread that dies asleep (SIGKILL) never takes itself off them, so each count is
//! also kept per process, in the header's wait records ([`WaitRecord`]: pid, start time, its
//! readers and writers): a survivor that finds the record of a dead process takes its share
//! off the totals.
//!
//! Invariants:
//! - Under the lock, for each side, the total is the sum of the records plus the waiters
//!   counted with no record (`unowned_*`: their process found the table full, with
//!   `WAIT_RECORDS` processes waiting on one channel at once, a documented limit: those are
//!   not taken off when their process dies). A record is free (pid 0) when both its counts
//!   are 0. A total that disagrees (scribbled) is found by the looks below and poisons.
//! - A waiter adds itself to the total and to its process's record in one lock hold, and
//!   takes itself off both in one lock hold ([`Ticket`] says where it was counted).
//! - A record's counts are changed only by its own process, except that a survivor clears the
//!   record of a process proven dead (`sys::alive`: gone, a zombie, or a reused pid).
//! - Whatever a record says is checked before use: a share larger than the total, or a record
//!   that changed under its own waiter, is a corrupt segment (poisoned).
//! - The looks cost nothing on the hot paths: a waiter counts itself only when it is about to
//!   sleep (a futex call follows anyway), and records are read only where a dead waiter would
//!   otherwise be waited for (a `nowait` rendezvous write whose reader has not come, an
//!   `Alt` output waiting for an idle reader: each looks at most once per `PEER_CHECK` per
//!   channel and process) and in `stats()`.

use std::time::Instant;

use super::channel::{Guard, ShmChannel};
use super::layout::{WaitRecord, WAIT_RECORDS};
use super::sys::{self, ProcId};
use super::ticket::{Side, Ticket};
use super::wait::PEER_CHECK;

impl ShmChannel {
    #[allow(clippy::mut_from_ref)] // the lock, held by the guard, makes the access exclusive
    fn records(&self, _g: &Guard<'_>) -> &mut [WaitRecord; WAIT_RECORDS] {
        // SAFETY: the records are only touched under the lock, which `_g` holds.
        unsafe { &mut (*self.hdr()).waits }
    }

    /// Counts the calling thread as a waiting reader or writer (about to sleep). Lock held.
    pub(super) fn wait_begin(&self, g: &Guard<'_>, side: Side) -> Ticket {
        let me = sys::me();
        let recs = self.records(g);
        let record =
            recs.iter().position(|r| r.pid == me.pid && r.start == me.start).or_else(|| {
                let i = recs.iter().position(|r| r.pid == 0)?;
                recs[i] =
                    WaitRecord { pid: me.pid, readers: 0, start: me.start, writers: 0, _pad: 0 };
                Some(i)
            });
        let st = g.st();
        let (total, unowned, mine) = match side {
            Side::Reader => (
                &mut st.readers_waiting,
                &mut st.unowned_readers,
                record.map(|i| &mut recs[i].readers),
            ),
            Side::Writer => (
                &mut st.writers_waiting,
                &mut st.unowned_writers,
                record.map(|i| &mut recs[i].writers),
            ),
        };
        *total = total.saturating_add(1);
        match mine {
            Some(n) => *n = n.saturating_add(1),
            None => *unowned = unowned.saturating_add(1),
        }
        Ticket { side, record }
    }

    /// Takes a waiter counted by `wait_begin` off the counts again. Lock held.
    pub(super) fn wait_end(&self, g: &Guard<'_>, t: Ticket) {
        let st = g.st();
        let (total, unowned) = match t.side {
            Side::Reader => (&mut st.readers_waiting, &mut st.unowned_readers),
            Side::Writer => (&mut st.writers_waiting, &mut st.unowned_writers),
        };
        self.dec(g, total);
        let Some(i) = t.record else {
            self.dec(g, unowned);
            return;
        };
        let me = sys::me();
        let r = &mut self.records(g)[i];
        if r.pid != me.pid || r.start != me.start {
            // Only we clear our own record, and a live process's is never cleared by others.
            let _ = self.corrupt(g);
            return;
        }
        let n = match t.side {
            Side::Reader => &mut r.readers,
            Side::Writer => &mut r.writers,
        };
        self.dec(g, n);
        if r.readers == 0 && r.writers == 0 {
            *r = WaitRecord { pid: 0, readers: 0, start: 0, writers: 0, _pad: 0 };
        }
    }

    /// Takes the waiters of processes that died off the counts (their records freed), and
    /// checks that the totals are what the records say; returns whether any were dead. Lock
    /// held. Reads `/proc` once per other process waiting here.
    pub(super) fn drop_dead_waiters(&self, g: &Guard<'_>) -> bool {
        let me = sys::me();
        let mut any = false;
        let (mut readers, mut writers) = (0u64, 0u64);
        for i in 0..WAIT_RECORDS {
            let r = self.records(g)[i];
            if r.pid == 0 {
                continue;
            }
            if (r.pid == me.pid && r.start == me.start)
                || sys::alive(ProcId { pid: r.pid, start: r.start })
            {
                readers += u64::from(r.readers);
                writers += u64::from(r.writers);
                continue;
            }
            let st = g.st();
            if r.readers > st.readers_waiting || r.writers > st.writers_waiting {
                let _ = self.corrupt(g);
                return any;
            }
            st.readers_waiting -= r.readers;
            st.writers_waiting -= r.writers;
            self.records(g)[i] = WaitRecord { pid: 0, readers: 0, start: 0, writers: 0, _pad: 0 };
            any = true;
        }
        let st = g.st();
        if u64::from(st.readers_waiting) != readers + u64::from(st.unowned_readers)
            || u64::from(st.writers_waiting) != writers + u64::from(st.unowned_writers)
        {
            // A count that nobody waits for would be waited for forever (a `nowait` write
            // counting on a reader that is not there).
            let _ = self.corrupt(g);
            return any;
        }
        if any {
            // A nowait writer or a selection waiting for those readers re-checks.
            self.changed_all(g);
        }
        any
    }

    /// `drop_dead_waiters`, at most once per `PEER_CHECK` per channel in this process (for
    /// waits that count on a waiting reader). Lock held.
    pub(super) fn look_for_dead_waiters(&self, g: &Guard<'_>) {
        let now = Instant::now();
        {
            let mut next = self.next_waiters_look.lock().unwrap_or_else(|e| e.into_inner());
            if next.is_some_and(|t| now < t) {
                return;
            }
            *next = Some(now + PEER_CHECK);
        }
        self.drop_dead_waiters(g);
    }
}
