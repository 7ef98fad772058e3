//! Rendezvous (capacity 0) over NATS request/reply.
//!
//! Protocol, channel `N`:
//! - A writer sends its value as a request on `ferrocsp.N.w` with header `Csp-Id` (unique per
//!   value, kept across re-sends) and waits for the reply:
//!   `+` taken (the write completes), `-` the chosen reader has no read waiting any more,
//!   `P` poisoned. "No responders" means no reader is waiting anywhere yet: not a loss.
//!   After `-` or no responders it waits for a notice on `ferrocsp.N.ready` (a reader began
//!   waiting), with a backoff from 1 ms to 100 ms as a safety net, and sends again.
//!   No reply within `ack_timeout` (a reader died after receiving, before replying): it sends
//!   the same value again with the same id.
//! - A process subscribes to `ferrocsp.N.w` in queue group `r` only while it has reads
//!   waiting (plus a short linger), so NATS gives each request to one process that wants a
//!   value; it publishes `ferrocsp.N.ready` when it subscribes, and when a read starts
//!   waiting after it turned a writer away.
//! - A request is handed to the oldest waiting read of the process (waiting up to `GRACE`
//!   for one if none is there: a reader in a loop is about to ask again), else offered to a
//!   waiting Alt of the process (`Offer`), then answered `+`.
//!   An id seen recently is answered `+` again without delivering (its first reply was lost).
//!
//! Invariants:
//! - A value is taken by at most one read: the hand-off pops the read from `reads.pending`
//!   under its lock, and a read that times out or is cancelled removes itself under the same
//!   lock; if it is no longer there, a value is on its way and it takes it (no loss).
//! - A write completes only after a reader took the value (the `+` reply follows the
//!   hand-off). A write withdrawn by timeout or cancellation has no request in flight (it only
//!   stops between attempts), so it was not delivered, except when a reader died without
//!   answering: then the value was taken by a process that no longer exists.
//! - The queue subscription runs while `reads.running`; the task clears it under the lock
//!   only when no read is pending, and drains the subscription so that no request routed to
//!   it before the unsubscribe goes unanswered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, Message, Request};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::chan::{lock, Chan};
use crate::error::NetError;
use crate::op::Cancel;
use crate::sleep_until_opt;

const LINGER: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_millis(100);
pub(crate) const HDR_ID: &str = "Csp-Id";

pub(crate) async fn write(
    chan: Arc<Chan>,
    payload: Bytes,
    deadline: Option<Instant>,
    mut cancel: Cancel,
) -> Result<(), NetError> {
    let conn = &chan.conn;
    let id = conn.new_id();
    let mut headers = HeaderMap::new();
    headers.insert(HDR_ID, id.as_str());
    let mut status = chan.status.subscribe();
    let mut ready = chan.ready.subscribe();
    let mut backoff = Duration::from_millis(1);
    loop {
        let s = *status.borrow_and_update();
        if s.poisoned {
            return Err(NetError::Poisoned);
        }
        if s.readers_retired {
            return Err(NetError::Retired);
        }
        ready.borrow_and_update();
        let req = Request::new()
            .payload(payload.clone())
            .headers(headers.clone())
            .timeout(Some(conn.opts.ack_timeout));
        match conn.client.send_request(chan.subj_w.clone(), req).await {
            Ok(msg) => match msg.payload.first() {
                Some(b'+') => return Ok(()),
                Some(b'P') => return Err(NetError::Poisoned),
                Some(b'-') => {}
                _ => {
                    return Err(NetError::Protocol(format!("unexpected reply on '{}'", chan.name)))
                }
            },
            Err(e) => match e.kind() {
                async_nats::client::RequestErrorKind::NoResponders => {}
                async_nats::client::RequestErrorKind::TimedOut => {
                    // Re-send with the same id, at once: a reader took it and died, or the
                    // server was lost for a moment.
                    if let Some(err) = conn.gave_up() {
                        return Err(err);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(NetError::Timeout);
                    }
                    if cancel.is_set() {
                        return Err(NetError::Cancelled);
                    }
                    continue;
                }
                _ => {
                    if let Some(err) = conn.gave_up() {
                        return Err(err);
                    }
                    // Disconnected: wait below (the client reconnects by itself).
                }
            },
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(NetError::Timeout);
        }
        if cancel.is_set() {
            return Err(NetError::Cancelled);
        }
        tokio::select! {
            _ = ready.changed() => { backoff = Duration::from_millis(1); }
            _ = status.changed() => {}
            () = tokio::time::sleep(backoff) => { backoff = (backoff * 2).min(BACKOFF_MAX); }
            () = sleep_until_opt(deadline) => return Err(NetError::Timeout),
            () = cancel.wait() => return Err(NetError::Cancelled),
        }
    }
}

pub(crate) async fn read(
    chan: Arc<Chan>,
    deadline: Option<Instant>,
    mut cancel: Cancel,
) -> Result<Bytes, NetError> {
    let mut status = chan.status.subscribe();
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
        r.pending.push_back((me, tx));
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
        v = &mut rx => return v.map_err(|_| NetError::Closed),
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
        Err(why)
    } else {
        // Popped by the hand-off: the value is on its way; it is ours.
        rx.await.map_err(|_| NetError::Closed)
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

fn spawn_serve(chan: Arc<Chan>) {
    // Boxed: `serve` spawns itself again, and a recursive future needs a known size.
    let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(serve(chan));
    tokio::spawn(fut);
}

/// The queue subscription of this process on `ferrocsp.N.w`, alive while reads wait.
async fn serve(chan: Arc<Chan>) {
    let conn = &chan.conn;
    let mut sub = match conn.client.queue_subscribe(chan.subj_w.clone(), "r".to_owned()).await {
        Ok(s) => s,
        Err(_) => {
            // Cannot subscribe (connection lost): let the next read try again.
            lock(&chan.reads).running = false;
            return;
        }
    };
    let _ = conn.client.flush().await;
    let _ = conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
    let mut closed = false;
    loop {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) => handle(&chan, m).await,
                None => { closed = true; break; }
            },
            () = tokio::time::sleep(LINGER) => {
                let mut r = lock(&chan.reads);
                if r.pending.is_empty() && r.alt_demand == 0 {
                    r.running = false;
                    break;
                }
            }
        }
    }
    if closed {
        // The subscription ended under us (connection lost and closed): hand the waiting
        // reads to a fresh subscription after a pause, or let the next read start one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut r = lock(&chan.reads);
        r.running = !r.pending.is_empty();
        if r.running {
            spawn_serve(Arc::clone(&chan));
        }
        return;
    }
    // Requests routed here before the server saw the unsubscribe still get an answer (a read
    // that arrived meanwhile found `running` false and started its own subscription).
    if sub.drain().await.is_ok() {
        while let Some(m) = sub.next().await {
            handle(&chan, m).await;
        }
    }
}

/// Hands `value` to the oldest waiting read of this process; gives it back if none waits.
fn to_read(chan: &Chan, mut value: Bytes) -> Option<Bytes> {
    loop {
        let next = lock(&chan.reads).pending.pop_front();
        match next {
            None => return Some(value),
            Some((_, tx)) => match tx.send(value) {
                Ok(()) => return None,
                // That read's task is gone (runtime shutting down): try the next one.
                Err(v) => value = v,
            },
        }
    }
}

async fn handle(chan: &Arc<Chan>, m: Message) {
    let Some(reply) = m.reply.clone() else { return };
    let id = m.headers.as_ref().and_then(|h| h.get(HDR_ID)).map(|v| v.as_str().to_owned());
    let client = &chan.conn.client;
    if chan.status().poisoned {
        let _ = client.publish(reply, Bytes::from_static(b"P")).await;
        return;
    }
    if let Some(id) = &id {
        if lock(&chan.recent).contains(id) {
            let _ = client.publish(reply, Bytes::from_static(b"+")).await;
            return;
        }
    }
    // Some(value) while nobody took it.
    let mut left = to_read(chan, m.payload);
    if let Some(value) = left.take() {
        let alt = lock(&chan.reads).alt_demand > 0;
        left = if alt {
            chan.offer(value).err()
        } else {
            // A reader looping over the channel (`for v in ch`) is about to wait again: give
            // it a moment rather than turning the writer away (which costs the writer a
            // ready notice and a re-send). Bounded, so a value never waits on a process that
            // stopped reading. Registered before looking again, so a read arriving in between
            // is not missed.
            let arrived = chan.read_arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            match to_read(chan, value) {
                None => None,
                Some(v) => {
                    let _ = tokio::time::timeout(GRACE, arrived).await;
                    to_read(chan, v)
                }
            }
        };
    }
    let delivered = left.is_none();
    if !delivered {
        lock(&chan.reads).turned_away = true;
        let _ = client.publish(reply, Bytes::from_static(b"-")).await;
        return;
    }
    if let Some(id) = id {
        lock(&chan.recent).insert(id);
    }
    if chan.conn.opts.hold_acks {
        return;
    }
    let _ = client.publish(reply, Bytes::from_static(b"+")).await;
}
