//! The reading side of a rendezvous: plain reads, input Alts' demand, and the value of a
//! held input Alt.
//!
//! Invariant: a value is taken by at most one read: a read that times out or is cancelled
//! removes itself from `reads.pending` under the lock; if it is no longer there, a value (or
//! its hold's outcome) is on its way to it and it takes it, so nothing is lost.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::serve::spawn_serve;
use crate::chan::{Chan, Hand, Hold, Holder};
use crate::error::NetError;
use crate::lock::lock;
use crate::op::Cancel;
use crate::sleep_until_opt;

pub(crate) async fn read(
    chan: Arc<Chan>,
    deadline: Option<Instant>,
    mut cancel: Cancel,
) -> Result<Bytes, NetError> {
    // A claims stream that cannot be made fails the read, not every value it would get.
    crate::claim::ensure_now(&chan.conn).await?;
    let mut status = chan.status.subscribe();
    // A read handed back by a writer that held it and did not commit keeps its place.
    let mut front = false;
    loop {
        {
            let s = *status.borrow_and_update();
            if s.poisoned {
                return Err(NetError::Poisoned);
            }
            if s.writers_retired {
                return Err(NetError::Retired);
            }
        }
        let (tx, mut rx) = oneshot::channel();
        let me = {
            let mut r = lock(&chan.reads);
            let me = r.next;
            r.next += 1;
            if std::mem::take(&mut front) {
                r.pending.push_front((me, tx));
            } else {
                r.pending.push_back((me, tx));
            }
            chan.read_arrived.notify_waiters();
            if !r.running {
                r.running = true;
                spawn_serve(Arc::clone(&chan));
            } else if r.pending.len() == 1 && std::mem::take(&mut r.turned_away) {
                let c = chan.conn.client.clone();
                let subj = chan.subj_ready.clone();
                tokio::spawn(async move { c.publish(subj, Bytes::new()).await });
            }
            me
        };
        let why = tokio::select! {
            v = &mut rx => match v {
                Ok(Hand::Value(b)) => return Ok(b),
                Ok(Hand::Back) => { front = true; continue; }
                Err(_) => return Err(NetError::Closed),
            },
            () = sleep_until_opt(deadline) => NetError::Timeout,
            () = cancel.wait() => NetError::Cancelled,
            e = crate::lost(&chan.conn) => e,
            () = Chan::wait_status(&mut status, |s| s.poisoned || s.writers_retired) => {
                if status.borrow().poisoned { NetError::Poisoned } else { NetError::Retired }
            }
        };
        let removed = {
            let mut r = lock(&chan.reads);
            let before = r.pending.len();
            r.pending.retain(|(id, _)| *id != me);
            r.pending.len() != before
        };
        if removed {
            return Err(why);
        }
        // Popped by a hand-off (the value is on its way: it is ours) or held for a selecting
        // writer (its commit or release comes within a round trip, or the hold expires).
        return match rx.await {
            Ok(Hand::Value(b)) => Ok(b),
            Ok(Hand::Back) => Err(why),
            Err(_) => Err(NetError::Closed),
        };
    }
}

/// An Alt of this process starts (`up`) or stops waiting with this channel as a guard.
pub(crate) fn alt_demand(chan: &Arc<Chan>, up: bool) {
    let mut r = lock(&chan.reads);
    if !up {
        r.alt_demand = r.alt_demand.saturating_sub(1);
        return;
    }
    r.alt_demand += 1;
    if !r.running {
        r.running = true;
        spawn_serve(Arc::clone(chan));
    } else if r.alt_demand == 1 && r.pending.is_empty() && std::mem::take(&mut r.turned_away) {
        let c = chan.conn.client.clone();
        let subj = chan.subj_ready.clone();
        tokio::spawn(async move { c.publish(subj, Bytes::new()).await });
    }
}

/// A held input Alt of this process takes its value: `Some` once the writer commits, `None`
/// if it released the hold (or it expired): the Alt then selects again.
pub(crate) async fn alt_take(
    chan: Arc<Chan>,
    hold: u64,
    mut cancel: Cancel,
) -> Result<Option<Bytes>, NetError> {
    let rx = {
        let mut r = lock(&chan.reads);
        let (rx, sent) = match r.holds.get_mut(&hold) {
            Some(Hold { holder: Holder::Alt(tx, rx), .. }) => (rx.take(), tx.is_none()),
            _ => (None, false),
        };
        if sent {
            // The value is already in the receiver: the entry has done its work.
            r.holds.remove(&hold);
        }
        rx
    };
    let Some(mut rx) = rx else { return Ok(None) };
    tokio::select! {
        v = &mut rx => Ok(v.ok()),
        () = cancel.wait() => {
            // A value sent before the close is ours; after it the writer's commit fails over
            // to an ordinary write (nothing is lost).
            rx.close();
            match rx.try_recv() {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(NetError::Cancelled),
            }
        }
    }
}
