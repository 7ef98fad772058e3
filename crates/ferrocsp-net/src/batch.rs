//! Batches on buffered channels: `write_many` and `read_many` move many values per round trip
//! and keep the rules of single operations (capacity exact, each value read once, in order).
//!
//! Write of values `v0..vm` (in rounds of at most `WINDOW`, and at most the capacity):
//! 1. **Reserve**: publish `r` placeholders (`reserve.rs`: header `Csp-Slot`, a fresh subject
//!    and message id each) without waiting between them, then await their acknowledgements
//!    together. Each one the server stored holds one slot of the capacity (discard-new refuses
//!    the rest: "maximum messages exceeded"), so however many writers race, the stream never
//!    holds more than `k` messages. The order in which placeholders land does not matter:
//!    they carry no value.
//! 2. **Fill**: publish `v_i` on the subject of the `i`-th slot won, one after another on the
//!    connection without waiting, then await the acknowledgements together. A fill replaces
//!    its placeholder in place (one message per subject), so it never needs a free slot, and
//!    the server gives the values stream sequences in the order they were published: readers
//!    get them in order. A fill whose acknowledgement did not come is sent again with the same
//!    message id (stored once) by `buffered::write_on`, which also covers a placeholder that a
//!    reader expired meanwhile (it then waits for a free slot, as an Output guard's commit
//!    does; only in that case, a placeholder left unfilled for `ack_timeout`, can a later
//!    value of the batch land before it).
//! 3. No slot won: wait as a single write does (`Turn`: a `ready` notice, a status change, or
//!    the backoff), until the deadline or a cancellation.
//!
//! Read of up to `n` values:
//! 1. One pull of `n` with `no_wait` on a fresh inbox: the server sends what is there now (up
//!    to `n`) and ends the pull with a status when it runs out before `n`.
//! 2. Placeholders are passed over (`placeholder.rs`); every value gets a confirmed ack
//!    (AckAck), all of them in flight together; only values whose ack the server confirmed are
//!    returned (an unconfirmed one may go to another reader), then one `ready` notice.
//! 3. Nothing there: a single read (`buffered::read`: it waits, with the deadline, poison,
//!    end-of-stream and cancellation of a read), then step 1 again for up to `n - 1` more
//!    without waiting.
//!
//! Invariants:
//! - The stream holds at most `k` messages (values and placeholders): server enforced.
//! - A batch never waits after its first slot was won: once reserved, a round is filled
//!   whatever the deadline or a cancellation says, so a write that fails with `Timeout` or
//!   `Cancelled` stored exactly the first `written` values and no other.
//! - `written` only grows, and counts a prefix of the values: value `i` is counted once it and
//!   every value before it were stored.
//! - A read returns only values whose ack was confirmed, and every such value is returned
//!   (never dropped by a later failure of the same batch): each is returned by exactly one
//!   read among the readers that survive, as for single reads.
//! - A read only pulls while it is reading: a pull is `no_wait`, or the single read's pull.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, Request};
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;

use crate::chan::Chan;
use crate::error::NetError;
use crate::op::Cancel;
use crate::placeholder::{is_placeholder, pass_over, HDR_SLOT};
use crate::pulls::{is_value, PULL_MARGIN};
use crate::turn::Turn;

/// The most values one round of a write reserves and fills.
pub(crate) const WINDOW: usize = 256;

/// The most values one read of a batch returns.
pub(crate) const READ_MAX: usize = 1024;

/// How long the server may keep a read's `no_wait` pull open (see `take_now`).
const TAKE_EXPIRES: Duration = Duration::from_millis(5);

/// Tries of publishing a placeholder whose acknowledgement did not come (same id: stored once).
const RESERVE_TRIES: usize = 3;

/// Writes `values` in order; `written` counts those stored (a prefix). See the module doc.
pub(crate) async fn write_many(
    chan: Arc<Chan>,
    values: Vec<Bytes>,
    deadline: Option<Instant>,
    mut cancel: Cancel,
    written: Arc<AtomicUsize>,
) -> Result<(), NetError> {
    let mut turn = Turn::new(&chan);
    let mut full = false;
    let mut next = 0;
    while next < values.len() {
        if full {
            // Only after a full buffer: read the shared state itself, so a poison or retire
            // is seen even before its broadcast arrives (as `buffered::write_on`).
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
        let want = (values.len() - next).min(WINDOW).min(chan.capacity.max(1));
        let slots = reserve_many(&chan, want).await?;
        if slots.is_empty() {
            full = true;
            turn.wait(deadline, &mut cancel).await?;
            continue;
        }
        full = false;
        turn.reset();
        let round = slots.len();
        fill(&chan, &values[next..next + round], slots, &written).await?;
        next += round;
    }
    Ok(())
}

/// Publishes up to `want` placeholders at once: the slots the server stored, as
/// `(subject, sequence)`. Empty when the buffer is full; an error only when the connection
/// gave up or the stream is gone.
async fn reserve_many(chan: &Chan, want: usize) -> Result<Vec<(String, u64)>, NetError> {
    let conn = &chan.conn;
    let mut sent = Vec::with_capacity(want);
    for _ in 0..want {
        let id = conn.new_id();
        let subject = chan.value_subject(&id);
        let fut = conn.js.send_publish(subject.clone(), placeholder(&id)).await;
        sent.push((subject, id, fut));
    }
    let acked = join_all(sent.into_iter().map(|(subject, id, fut)| async move {
        let r = match fut {
            Ok(f) => f.await,
            Err(e) => Err(e),
        };
        (subject, id, r)
    }))
    .await;
    let mut slots = Vec::with_capacity(want);
    let mut other = None;
    for (subject, id, r) in acked {
        let r = match r {
            Err(e) if e.kind() == PublishErrorKind::TimedOut => retry_placeholder(chan, &subject, &id).await,
            r => r,
        };
        match r {
            Ok(ack) => slots.push((subject, ack.sequence)),
            Err(e) if is_full(&e) => {}
            Err(e) => other = Some(e),
        }
    }
    if slots.is_empty() {
        if let Some(e) = other {
            if let Some(err) = conn.gave_up() {
                return Err(err);
            }
            if e.kind() == PublishErrorKind::StreamNotFound
                && conn.client.connection_state() == async_nats::connection::State::Connected
            {
                return Err(NetError::Protocol(format!(
                    "the stream of channel '{}' is gone",
                    chan.name
                )));
            }
        }
    }
    Ok(slots)
}

fn placeholder(id: &str) -> PublishMessage {
    let mut headers = HeaderMap::new();
    headers.insert(HDR_SLOT, "1");
    PublishMessage::build().headers(headers).message_id(id)
}

fn is_full(e: &PublishError) -> bool {
    e.to_string().contains("maximum messages")
}

/// A placeholder whose acknowledgement was lost: sent again with its id (stored at most once).
/// Still unanswered: not a slot of this batch (if it was stored, readers expire it).
async fn retry_placeholder(
    chan: &Chan,
    subject: &str,
    id: &str,
) -> Result<PublishAck, PublishError> {
    let mut last = PublishError::new(PublishErrorKind::TimedOut);
    for _ in 1..RESERVE_TRIES {
        let r = match chan.conn.js.send_publish(subject.to_owned(), placeholder(id)).await {
            Ok(f) => f.await,
            Err(e) => Err(e),
        };
        match r {
            Err(e) if e.kind() == PublishErrorKind::TimedOut => last = e,
            r => return r,
        }
    }
    Err(last)
}

/// Publishes `values[i]` on the subject of `slots[i]`, all in flight together; counts each
/// in `written` once it and those before it are stored.
async fn fill(
    chan: &Arc<Chan>,
    values: &[Bytes],
    slots: Vec<(String, u64)>,
    written: &AtomicUsize,
) -> Result<(), NetError> {
    let conn = &chan.conn;
    let mut sent: Vec<(String, String, Result<PublishAckFuture, PublishError>)> =
        Vec::with_capacity(values.len());
    // Sent one after another from this task: the client writes them to its one connection in
    // this order, and the server gives them stream sequences in the same order.
    for (v, (subject, _)) in values.iter().zip(slots) {
        let id = conn.new_id();
        let publish = PublishMessage::build().payload(v.clone()).message_id(id.as_str());
        let fut = conn.js.send_publish(subject.clone(), publish).await;
        sent.push((subject, id, fut));
    }
    let acked = join_all(sent.into_iter().map(|(subject, id, fut)| async move {
        let ok = match fut {
            Ok(f) => f.await.is_ok(),
            Err(_) => false,
        };
        (subject, id, ok)
    }))
    .await;
    for ((subject, id, ok), v) in acked.into_iter().zip(values) {
        if !ok {
            // Unconfirmed: again with the same id (stored once), on its slot or, if a reader
            // expired the placeholder, in a free one. Not cancellable: the slot was won.
            crate::buffered::write_on(Arc::clone(chan), v.clone(), None, Cancel::never(), subject, id)
                .await?;
        }
        written.fetch_add(1, Ordering::Release);
    }
    Ok(())
}

/// Reads between 1 and `max` values (at most `READ_MAX`). See the module doc.
pub(crate) async fn read_many(
    chan: Arc<Chan>,
    max: usize,
    deadline: Option<Instant>,
    cancel: Cancel,
) -> Result<Vec<Bytes>, NetError> {
    let max = max.clamp(1, READ_MAX);
    if chan.status().poisoned {
        return Err(NetError::Poisoned);
    }
    let mut got = take_now(&chan, max).await.unwrap_or_default();
    if got.is_empty() {
        got.push(crate::buffered::read(Arc::clone(&chan), deadline, cancel).await?);
        if max > 1 {
            // The value in hand is never dropped: a failure here only ends the batch.
            got.extend(take_now(&chan, max - 1).await.unwrap_or_default());
        }
    }
    Ok(got)
}

/// Takes what is there now, up to `n` values, with confirmed acks (no waiting for more).
async fn take_now(chan: &Arc<Chan>, n: usize) -> Result<Vec<Bytes>, NetError> {
    let conn = &chan.conn;
    let Some(consumer) = chan.consumer.as_ref() else {
        return Err(NetError::Protocol("buffered read on a rendezvous channel".into()));
    };
    let info = consumer.cached_info();
    let next_subj = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", info.stream_name, info.name);
    let inbox = conn.client.new_inbox();
    // Subscribed before the pull is sent (one connection, in order): the server knows the
    // inbox when it answers.
    let mut sub =
        conn.client.subscribe(inbox.clone()).await.map_err(|e| conn.transport("subscribe", e))?;
    // `expires` as well as `no_wait`: the server may count as pending a message that is no
    // longer deliverable (a placeholder replaced by its value), and would then keep a bare
    // `no_wait` pull open until the next message arrives; with `expires` it ends the pull by
    // then at the latest (nats-server 2.9).
    let body =
        format!(r#"{{"batch":{n},"no_wait":true,"expires":{}}}"#, TAKE_EXPIRES.as_nanos());
    conn.client
        .publish_with_reply(next_subj, inbox, body.into())
        .await
        .map_err(|e| conn.transport("pull", e))?;
    let mut msgs = Vec::with_capacity(n);
    let answer_by = tokio::time::sleep(PULL_MARGIN);
    tokio::pin!(answer_by);
    let mut over = false;
    while msgs.len() < n {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) if is_value(&m) => msgs.push(m),
                // A status (no more messages, request timeout): the pull is over.
                _ => { over = true; break; }
            },
            () = &mut answer_by => break,
        }
    }
    if !over && msgs.len() < n {
        // Unanswered (a request lost with the connection): whatever still comes is handed
        // back at once, so no value waits in a process that stopped reading.
        let conn = Arc::clone(&chan.conn);
        tokio::spawn(async move {
            while let Ok(Some(m)) = tokio::time::timeout(PULL_MARGIN, sub.next()).await {
                if !is_value(&m) {
                    break;
                }
                if let Some(r) = m.reply.clone() {
                    let _ = conn.client.publish(r, Bytes::from_static(b"-NAK")).await;
                }
            }
        });
    }
    let hold_acks = conn.opts.hold_acks;
    let taken = join_all(msgs.into_iter().map(|m| async move {
        if is_placeholder(&m) {
            pass_over(chan, &m).await;
            return None;
        }
        if hold_acks {
            return Some(m.payload);
        }
        let ack = m.reply.clone()?;
        let req = Request::new()
            .payload(Bytes::from_static(b"+ACK"))
            .timeout(Some(chan.conn.opts.ack_timeout));
        // Confirmed ("AckAck"): only a value the server let go of is returned.
        match chan.conn.client.send_request(ack, req).await {
            Ok(_) => Some(m.payload),
            Err(_) => None,
        }
    }))
    .await;
    let got: Vec<Bytes> = taken.into_iter().flatten().collect();
    if !got.is_empty() && !hold_acks {
        let _ = conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
    }
    Ok(got)
}
