//! Buffered channels (capacity > 0) over a JetStream work-queue stream.
//!
//! Channel `N` with capacity `k` is the stream `FERROCSP_N` on subjects `ferrocsp.N.b.*`:
//! work-queue retention, `max_msgs = k`, discard new (the server refuses a value beyond the
//! capacity, for every writer on every machine), one message per subject (each value has its
//! own subject `ferrocsp.N.b.<id>`, which lets an Output guard reserve a slot: `reserve.rs`),
//! file storage (values survive a server restart), a 2-minute duplicate window. Readers share
//! the durable pull consumer `readers` (explicit acks, `ack_wait = ack_timeout`, redelivery
//! without limit).
//!
//! - A write publishes on a fresh subject with `Nats-Msg-Id` (unique per value, kept across
//!   re-sends) and waits
//!   for the stream's acknowledgement. "Maximum messages exceeded" means full: it waits for a
//!   notice on `ferrocsp.N.ready` (a reader freed a slot; 1 ms to 100 ms backoff as a safety
//!   net) and publishes again. A lost acknowledgement is re-sent with the same id and
//!   de-duplicated by the server, so a value is stored once.
//! - A read pulls one message (a pull request that expires with the read's deadline, at most
//!   1 s per round), claims its id (`claim.rs`) and acknowledges it with a confirmed ack at
//!   the same time, then returns it iff it won the claim, and publishes the notice. A value
//!   delivered again (its ack, or the ack's reply, was lost, or came after `ack_wait`) finds
//!   the claim and is dropped by whoever gets it; the Alt pump commits an Alt (a hold) before
//!   it claims for it. A reader that dies before acknowledging leaves the message
//!   pending; after `ack_wait` the server gives it to another reader. The pull is answered on
//!   an inbox reused from read to read (`Pulls`) and the confirmed ack goes through the
//!   client's shared reply inbox, so a read costs its two round trips and no subscriptions.
//!
//! Invariants:
//! - The stream holds at most `k` values and Output placeholders together (server enforced);
//!   a placeholder is never returned by a read. Each value is delivered to readers
//!   until one acknowledges it, and only the reader that won its claim returns it, so it is
//!   returned by exactly one read among the readers that survive.
//! - A read only pulls while it waits: no value is prefetched into a process that is not
//!   reading (where it would sit while another process waits for it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::Request;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::chan::Chan;
use crate::error::NetError;
use crate::lock::lock;
use crate::op::Cancel;
use crate::placeholder::{is_placeholder, pass_over};
use crate::pulls::{is_value, Pulls, PULL_MARGIN};
use crate::turn::Turn;

const PULL_MAX: Duration = Duration::from_secs(1);
const PULL_MIN: Duration = Duration::from_millis(20);

/// How long after its first unanswered publish a write keeps sending a value again: well
/// inside the stream's 2-minute duplicate window, so that a re-send is never stored as a
/// second copy (batch reads return a first delivery confirmed in time without a claim,
/// `fresh.rs`, and the claims themselves are kept only as long).
pub(crate) const RESEND_FOR: Duration = Duration::from_secs(90);

pub(crate) async fn write(
    chan: Arc<Chan>,
    payload: Bytes,
    deadline: Option<Instant>,
    cancel: Cancel,
) -> Result<(), NetError> {
    let id = chan.conn.new_id();
    let subject = chan.value_subject(&id);
    write_on(chan, payload, deadline, cancel, subject, id, None).await
}

/// Publishes `payload` on `subject` with message id `id` until the stream stored it: a fresh
/// subject (a write), or a reserved one, where it replaces the placeholder (`reserve.rs`).
/// `unsure_since`: no later than a send of this value whose answer never came, if the caller
/// made one (re-sends stop `RESEND_FOR` after it).
pub(crate) async fn write_on(
    chan: Arc<Chan>,
    payload: Bytes,
    deadline: Option<Instant>,
    mut cancel: Cancel,
    subject: String,
    id: String,
    mut unsure_since: Option<Instant>,
) -> Result<(), NetError> {
    let conn = &chan.conn;
    let mut turn = Turn::new(&chan);
    let mut retry = false;
    loop {
        if unsure_since.is_some_and(|t| t.elapsed() >= RESEND_FOR) {
            return Err(NetError::Unreachable(format!(
                "no answer from the server to a write on channel '{}' for {} s: the value may \
                 have been written once, and is not sent again (the server's duplicate window \
                 would soon let a copy through)",
                chan.name,
                RESEND_FOR.as_secs()
            )));
        }
        if std::mem::replace(&mut retry, true) {
            // Only after a full buffer (the slow path): read the shared state itself, so a
            // poison or retire is seen even before its broadcast arrives.
            let _ = chan.refresh().await;
        }
        let s = *turn.status.borrow_and_update();
        if s.poisoned {
            return Err(NetError::Poisoned);
        }
        if s.readers_retired {
            return Err(NetError::Retired);
        }
        turn.ready.borrow_and_update();
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(id.as_str());
        let sent_at = Instant::now();
        let acked = match conn.js.send_publish(subject.clone(), publish).await {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(_) => return Ok(()),
            Err(e) => {
                let full = e.to_string().contains("maximum messages");
                if !full {
                    unsure_since.get_or_insert(sent_at);
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
        turn.wait(deadline, &mut cancel).await?;
    }
}

pub(crate) async fn read(
    chan: Arc<Chan>,
    deadline: Option<Instant>,
    mut cancel: Cancel,
) -> Result<Bytes, NetError> {
    let conn = &chan.conn;
    if chan.consumer.is_none() {
        return Err(NetError::Protocol("buffered read on a rendezvous channel".into()));
    }
    let pulls = pulls(&chan).await?;
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
        let no_wait = left.is_some_and(|l| l.is_zero());
        let mut pull = match pulls.request(conn, no_wait, wait).await {
            Ok(p) => p,
            Err(_) => {
                if let Some(err) = conn.gave_up() {
                    return Err(err);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = cancel.wait() => return Err(NetError::Cancelled),
                }
                continue;
            }
        };
        // The server answers every pull (a message, or a status when it expires), nearly
        // always: past the margin (`PULL_MARGIN`) the read pulls again.
        let answer_by = tokio::time::sleep(wait + PULL_MARGIN);
        let why = tokio::select! {
            m = pull.sub.next() => {
                let v = match m {
                    Some(m) => take(&chan, m, conn.opts.hold_acks).await,
                    None => None,
                };
                pulls.put_back(pull);
                match v {
                    Some(v) => return Ok(v),
                    None => None,
                }
            }
            () = answer_by => {
                pulls.abandon(conn, pull, wait);
                None
            }
            () = cancel.wait() => {
                pulls.abandon(conn, pull, wait);
                Some(NetError::Cancelled)
            }
            e = crate::lost(conn) => Some(e),
            () = Chan::wait_status(&mut status, |s| s.poisoned || (s.writers_retired && !retired_before)) => {
                pulls.abandon(conn, pull, wait);
                None
            }
        };
        if let Some(e) = why {
            return Err(e);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(NetError::Timeout);
        }
    }
}

/// A value delivered by a pull: acknowledged (confirmed by the server) and returned, or
/// `None` if it is a status (expired pull), an Output guard's placeholder (passed over), or
/// the ack was not confirmed (the server may then give the value to another reader: do not
/// return it).
async fn take(chan: &Chan, m: async_nats::Message, hold_acks: bool) -> Option<Bytes> {
    if !is_value(&m) {
        return None;
    }
    let conn = &chan.conn;
    if is_placeholder(&m) {
        pass_over(chan, &m).await;
        return None;
    }
    if hold_acks {
        return Some(m.payload);
    }
    match claim_and_ack(chan, &m, true).await {
        Ok(crate::claim::Claim::Won) => {
            let _ = conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
            Some(m.payload)
        }
        // Another reader took it (this was a redelivery), or no server to ask.
        Ok(crate::claim::Claim::Lost) | Err(_) => None,
    }
}

/// Claims delivered value `m` (`claim.rs`) and acknowledges it at the same time: one round
/// trip for both. The claim decides whether the value is ours: an acknowledgement whose reply
/// was lost, or that came after `ack_wait`, can no longer lose or duplicate it, so the ack's
/// outcome does not matter (a value delivered again finds the claim and is dropped, and
/// acknowledged, by whoever gets it). With `confirmed` the ack is a confirmed one ("AckAck":
/// when it returns, the slot is free unless the ack was lost), else a plain publish (a batch
/// confirms its last ack only: `batch.rs`). `Err` when the outcome is unknown (no server to
/// ask) or the delivery has no id or ack subject (then nothing is sent): hand the value to
/// nobody. Used by single reads, the Alt pump and batch reads alike.
pub(crate) async fn claim_and_ack(
    chan: &Chan,
    m: &async_nats::Message,
    confirmed: bool,
) -> Result<crate::claim::Claim, NetError> {
    let (Some(id), Some(ack)) = (crate::claim::value_id(m), m.reply.clone()) else {
        return Err(NetError::Protocol(format!("a delivery without an id on '{}'", chan.name)));
    };
    let conn = &chan.conn;
    let ack = async {
        if confirmed {
            ack_confirmed(conn, ack).await;
        } else {
            let _ = conn.client.publish(ack, Bytes::from_static(b"+ACK")).await;
        }
    };
    let (claimed, ()) = tokio::join!(crate::claim::claim(chan, &id), ack);
    claimed
}

/// Acknowledges a delivered message with a confirmed ack ("AckAck", a request on the client's
/// shared reply inbox: no subscription of its own per ack), waiting at most `ack_timeout`.
pub(crate) async fn ack_confirmed(conn: &crate::link::Inner, ack: async_nats::Subject) {
    let req =
        Request::new().payload(Bytes::from_static(b"+ACK")).timeout(Some(conn.opts.ack_timeout));
    let _ = conn.client.send_request(ack, req).await;
}

/// The channel's `Pulls`, made on first read.
async fn pulls(chan: &Chan) -> Result<&Arc<Pulls>, NetError> {
    chan.pulls
        .get_or_try_init(|| async {
            let Some(consumer) = chan.consumer.as_ref() else {
                return Err(NetError::Protocol("buffered read on a rendezvous channel".into()));
            };
            // A claims stream that cannot be made fails the first read, not every value.
            crate::claim::ensure_now(&chan.conn).await?;
            let info = consumer.cached_info();
            Ok(Arc::new(Pulls::new(format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                info.stream_name, info.name
            ))))
        })
        .await
}

/// Whether nothing is left for readers (no value waiting, none delivered and unacknowledged).
async fn is_empty(chan: &Chan) -> Result<bool, NetError> {
    let Some(mut consumer) = chan.consumer.clone() else { return Ok(true) };
    let info = consumer.info().await.map_err(|e| chan.conn.transport("consumer info", e))?;
    Ok(info.num_pending == 0 && info.num_ack_pending == 0)
}

/// An Alt of this process starts (`up`) or stops waiting with this channel as a guard.
pub(crate) fn alt_demand(chan: &Arc<Chan>, up: bool) {
    let mut r = lock(&chan.reads);
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
            let mut r = lock(&chan.reads);
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
        if is_placeholder(&msg.message) {
            pass_over(&chan, &msg.message).await;
            continue;
        }
        if chan.conn.opts.hold_acks {
            // Testing hook: handed on without a claim or an ack (a reader that dies first).
            if chan.offer(msg.message.payload.clone()).is_err() {
                let _ = msg.ack_with(async_nats::jetstream::AckKind::Nak(None)).await;
            }
            continue;
        }
        // An Alt is committed first (a hold: its one CAS), then the value claimed for it
        // (`claim.rs`), so a won claim always has a receiver and an unacknowledged value
        // delivered again is never handed on twice.
        let Some(hold) = crate::rendezvous::hold_alt(&chan, true) else {
            let _ = msg.ack_with(async_nats::jetstream::AckKind::Nak(None)).await;
            // Nobody took it: the Alt chose something else or is between selections.
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        let message = msg.message;
        let conn = &chan.conn;
        if claim_and_ack(&chan, &message, true).await == Ok(crate::claim::Claim::Won) {
            if let Some(v) = crate::rendezvous::to_hold(&chan, hold, message.payload) {
                // The Alt's task was torn down meanwhile: the value goes with its process.
                drop(v);
            }
            let _ = conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
        } else {
            crate::rendezvous::give_back(&chan, hold, true);
        }
    }
}
