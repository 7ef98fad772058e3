//! How a writer waits for its next try, in both protocols (a rendezvous write that found no
//! reader, a buffered write that found the buffer full, the Output-guard pump).
//!
//! Invariants:
//! - A wait ends when a reader announces itself on `ready` (which also resets the backoff),
//!   the channel's status changes, or a doubling backoff from 1 ms to 100 ms runs out: the
//!   safety net against an announcement published before the writer listened.
//! - The deadline and the cancellation are checked before sleeping and end the sleep, so a
//!   timed-out or withdrawn write never starts another try.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::chan::{Chan, Status};
use crate::error::NetError;
use crate::op::Cancel;
use crate::sleep_until_opt;

const BACKOFF_MIN: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// One writer's view of a channel between tries: its status, the readers' announcements, and
/// the current backoff.
pub(crate) struct Turn {
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) ready: watch::Receiver<u64>,
    backoff: Duration,
}

impl Turn {
    pub(crate) fn new(chan: &Chan) -> Self {
        Turn {
            status: chan.status.subscribe(),
            ready: chan.ready.subscribe(),
            backoff: BACKOFF_MIN,
        }
    }

    /// Back to the shortest backoff (a try just succeeded).
    pub(crate) fn reset(&mut self) {
        self.backoff = BACKOFF_MIN;
    }

    /// Sleeps until the next try is worth making, or fails with `Timeout` / `Cancelled`.
    pub(crate) async fn wait(
        &mut self,
        deadline: Option<Instant>,
        cancel: &mut Cancel,
    ) -> Result<(), NetError> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(NetError::Timeout);
        }
        if cancel.is_set() {
            return Err(NetError::Cancelled);
        }
        tokio::select! {
            () = self.next() => Ok(()),
            () = sleep_until_opt(deadline) => Err(NetError::Timeout),
            () = cancel.wait() => Err(NetError::Cancelled),
        }
    }

    /// Sleeps until an announcement, a status change or the end of the backoff.
    pub(crate) async fn next(&mut self) {
        tokio::select! {
            _ = self.ready.changed() => { self.backoff = BACKOFF_MIN; }
            _ = self.status.changed() => {}
            () = tokio::time::sleep(self.backoff) => {
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
