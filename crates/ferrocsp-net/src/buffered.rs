//! Buffered channels (capacity > 0) over a JetStream work-queue stream.
//!
//! Channel `N` with capacity `k` is the stream `FERROCSP_N` on subject `ferrocsp.N.b`:
//! work-queue retention, `max_msgs = k`, discard new (the server refuses a value beyond the
//! capacity, for every writer on every machine), file storage (values survive a server
//! restart), a 2-minute duplicate window. Readers share the durable pull consumer `readers`
//! (explicit acks, `ack_wait = ack_timeout`, redelivery without limit).
//!
//! - A write publishes with `Nats-Msg-Id` (unique per value, kept across re-sends) and waits
//!   for the stream's acknowledgement. "Maximum messages exceeded" means full: it waits for a
//!   notice on `ferrocsp.N.ready` (a reader freed a slot; 1 ms to 100 ms backoff as a safety
//!   net) and publishes again. A lost acknowledgement is re-sent with the same id and
//!   de-duplicated by the server, so a value is stored once.
//! - A read pulls one message (a pull request that expires with the read's deadline, at most
//!   1 s per round), acknowledges it with a confirmed ack (the server answered), then returns
//!   it and publishes the notice. A reader that dies before acknowledging leaves the message
//!   pending; after `ack_wait` the server gives it to another reader.
//!
//! Invariants:
//! - The stream holds at most `k` values (server enforced); each value is delivered to readers
//!   until one acknowledges it, and a confirmed ack removes it, so it is returned by exactly
//!   one read among the readers that survive.
//! - A read only pulls while it waits: no value is prefetched into a process that is not
//!   reading (where it would sit while another process waits for it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::chan::Chan;
use crate::error::NetError;
use crate::op::Cancel;

const BACKOFF_MAX: Duration = Duration::from_millis(100);
const PULL_MAX: Duration = Duration::from_secs(1);
const PULL_MIN: Duration = Duration::from_millis(20);

pub(crate) async fn write(
    chan: Arc<Chan>,
    payload: Bytes,
    deadline: Option<Instant>,
    mut cancel: Cancel,
) -> Result<(), NetError> {
    let conn = &chan.conn;
    let id = conn.new_id();
    let mut status = chan.status.subscribe();
    let mut ready = chan.ready.subscribe();
    let mut backoff = Duration::from_millis(1);
    let mut retry = false;
    loop {
        if std::mem::replace(&mut retry, true) {
            // Only after a full buffer (the slow path): read the shared state itself, so a
            // poison or retire is seen even before its broadcast arrives.
            let _ = chan.refresh().await;
        }
        let s = *status.borrow_and_update();
        if s.poisoned {
            return Err(NetError::Poisoned);
        }
        if s.readers_retired {
            return Err(NetError::Retired);
        }
        ready.borrow_and_update();
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(id.as_str());
        let acked = match conn.js.send_publish(chan.subj_b.clone(), publish).await {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(_) => return Ok(()),
            Err(e) => {
                let full = e.to_string().contains("maximum messages");
                if !full {
                    if let Some(err) = conn.gave_up() {
                        return Err(err);
                    }
                    if e.kind() == PublishErrorKind::StreamNotFound
                        && conn.client.connection_state()
                            == async_nats::connection::State::Connected
                    {
                        // Poisoned/retired channels keep their stream, so a missing stream
                        // means someone deleted it by hand.
                        return Err(NetError::Protocol(format!(
                            "the stream of channel '{}' is gone",
                            chan.name
                        )));
                    }
                    if e.kind() == PublishErrorKind::TimedOut {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Err(NetError::Timeout);
                        }
                        if cancel.is_set() {
                            return Err(NetError::Cancelled);
                        }
                        continue;
                    }
                }
            }
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
            () = crate::sleep_until_opt(deadline) => return Err(NetError::Timeout),
            () = cancel.wait() => return Err(NetError::Cancelled),
        }
    }
}

pub(crate) async fn read(
    chan: Arc<Chan>,
    deadline: Option<Instant>,
    mut cancel: Cancel,
) -> Result<Bytes, NetError> {
    let conn = &chan.conn;
    let Some(consumer) = chan.consumer.clone() else {
        return Err(NetError::Protocol("buffered read on a rendezvous channel".into()));
    };
    let mut status = chan.status.subscribe();
    loop {
        let s = *status.borrow_and_update();
        if s.poisoned {
            return Err(NetError::Poisoned);
        }
        let retired_before = s.writers_retired;
        if s.writers_retired && is_empty(&chan).await? {
            return Err(NetError::Retired);
        }
        if cancel.is_set() {
            return Err(NetError::Cancelled);
        }
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        let wait = left.map_or(PULL_MAX, |l| l.min(PULL_MAX)).max(PULL_MIN);
        let batch = if left.is_some_and(|l| l.is_zero()) {
            consumer.fetch().max_messages(1).messages().await
        } else {
            consumer.batch().max_messages(1).expires(wait).messages().await
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                if let Some(err) = conn.gave_up() {
                    return Err(err);
                }
                let _ = e;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = cancel.wait() => return Err(NetError::Cancelled),
                }
                continue;
            }
        };
        let got = tokio::select! {
            m = batch.next() => m,
            () = cancel.wait() => return Err(NetError::Cancelled),
            e = crate::lost(conn) => return Err(e),
            () = Chan::wait_status(&mut status, |s| s.poisoned || (s.writers_retired && !retired_before)) => continue,
        };
        match got {
            Some(Ok(msg)) => {
                if conn.opts.hold_acks {
                    return Ok(msg.message.payload.clone());
                }
                match msg.double_ack().await {
                    Ok(()) => {
                        let _ = conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
                        return Ok(msg.message.payload.clone());
                    }
                    // Not confirmed: the server may give it to another reader; do not return it.
                    Err(_) => continue,
                }
            }
            Some(Err(_)) | None => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(NetError::Timeout);
                }
            }
        }
    }
}

/// Whether nothing is left for readers (no value waiting, none delivered and unacknowledged).
async fn is_empty(chan: &Chan) -> Result<bool, NetError> {
    let Some(mut consumer) = chan.consumer.clone() else { return Ok(true) };
    let info = consumer.info().await.map_err(|e| chan.conn.transport("consumer info", e))?;
    Ok(info.num_pending == 0 && info.num_ack_pending == 0)
}

/// An Alt of this process starts (`up`) or stops waiting with this channel as a guard.
pub(crate) fn alt_demand(chan: &Arc<Chan>, up: bool) {
    let mut r = crate::chan::lock(&chan.reads);
    if !up {
        r.alt_demand = r.alt_demand.saturating_sub(1);
        return;
    }
    r.alt_demand += 1;
    if !r.pump_running {
        r.pump_running = true;
        tokio::spawn(pump(Arc::clone(chan)));
    }
}

/// Pulls values for waiting Alts of this process, one at a time, while any waits: a value is
/// acknowledged only once an Alt took it (`Offer`), and handed back (NAK, at once available
/// to every reader) when none did.
async fn pump(chan: Arc<Chan>) {
    let Some(consumer) = chan.consumer.clone() else { return };
    loop {
        {
            let mut r = crate::chan::lock(&chan.reads);
            if r.alt_demand == 0 {
                r.pump_running = false;
                return;
            }
        }
        if chan.status().poisoned {
            // The Alt sees the poison through its local guard's owner (see the bindings).
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if chan.status().writers_retired && is_empty(&chan).await.unwrap_or(false) {
            // End-of-stream (final: no writer is left to refill it): the Alt's guard retires.
            chan.offer_drained();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let batch =
            consumer.batch().max_messages(1).expires(Duration::from_millis(200)).messages().await;
        let Ok(mut batch) = batch else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(Ok(msg)) = batch.next().await else { continue };
        match chan.offer(msg.message.payload.clone()) {
            Ok(()) => {
                if !chan.conn.opts.hold_acks {
                    let _ = msg.double_ack().await;
                    let _ = chan.conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
                }
            }
            Err(_) => {
                let _ = msg.ack_with(async_nats::jetstream::AckKind::Nak(None)).await;
                // Nobody took it: the Alt chose something else or is between selections.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}
