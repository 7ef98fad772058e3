//! Batches on buffered channels: `write_many` and `read_many` move many values per round trip
//! and keep the rules of single operations (capacity exact, each value read once, in order).
//!
//! Write of values `v0..vm`, in rounds: each round is at most as long as the room the stream
//! reports when it starts (one stream-info request; flow control only, a longer round would
//! run into the full buffer and have its tail refused), with up to `WINDOW` publishes in flight.
//! 1. Publish the round's values on fresh subjects `ferrocsp.N.b.<id>` (one `Nats-Msg-Id` per
//!    value, kept across rounds) one after another, a sliding window of `WINDOW`
//!    acknowledgements outstanding, every value but the round's first with
//!    `Nats-Expected-Last-Msg-Id` naming the value before it. The server stores the publishes
//!    of one connection in order and refuses one whose expected last id is not the stream's
//!    last: so if a value is refused (the buffer is full: discard-new, "maximum messages
//!    exceeded"), every later one of the round is refused too, and no value can land before
//!    one written ahead of it (without the chain, value `i` refused as full and value `i+1`
//!    stored after a reader freed a slot in between would be read out of order). The values
//!    stored are therefore a prefix of the round, up to the last one acknowledged.
//! 2. After the prefix: all stored → the next round at once; full (another writer took the
//!    room, or there was none) → wait as a single write does (`Turn`: a `ready` notice, a
//!    status change or the backoff) until the deadline or a cancellation, then a new round;
//!    refused because another writer's message came in between ("wrong last msg ID") → a new
//!    round at once; no acknowledgement (lost) → that value is sent again with its id by
//!    `buffered::write_on` (stored once) before the next round.
//!
//! Capacity stays exact for every writer on every machine (server enforced, as for `write`).
//! With other writers active at the same time, chains break more often and rounds get
//! shorter; the order and the count stay exact.
//!
//! Read of up to `n` values:
//! 1. One pull of `n` on a fresh inbox with `no_wait` and `expires` (at most 1 s, or what is left
//!    of the deadline): nats-server then waits up to `expires` for a first message only, sends
//!    what is there (up to `n`) and ends the pull with a status. So the read waits for one value
//!    and takes the others that are there, never waiting for a second. (A bare `no_wait` pull
//!    is not enough: the server may count a message that is gone (an Output guard's replaced
//!    placeholder) as pending and keep such a pull open until the next message arrives.)
//! 2. Copies of one delivery (same stream sequence) count once. Placeholders are passed over
//!    (`placeholder.rs`); first deliveries whose acks the server confirmed applied in time are
//!    returned without a claim (`fresh.rs`: no other copy of them can exist; the proof is one
//!    confirmed ack and, for several, the consumer's ack floor); every other value
//!    is claimed (`claim.rs`) and acknowledged with a plain ack (`buffered::claim_and_ack`),
//!    and returned only if this reader won the claim (a lost claim: another delivery of the
//!    value was taken, this one is dropped; no answer: not returned). All of the batch's acks
//!    and claims are in flight together. If any value went by its claim, the last value's ack
//!    again, confirmed (the server applies a consumer's acks in order: the batch's slots are
//!    free); then one `ready` notice.
//! 3. Nothing (expired, or only placeholders): check poison, end-of-stream (writers retired,
//!    nothing pending or unacknowledged), cancellation and the deadline, as a single read
//!    does, and pull again. A poison, a retire or a cancellation that comes while the pull
//!    waits ends the wait; the open pull's inbox is left to a task that NAKs whatever still
//!    comes for it, so no value waits in a process that stopped reading.
//!
//! Invariants:
//! - The stream holds at most `k` messages (values and Output placeholders): server enforced.
//! - A write waits (and so can time out or be cancelled) only between rounds, when every value
//!   sent so far is known stored or known refused: a write that fails with `Timeout` or
//!   `Cancelled` stored exactly the first `written` values and no other.
//! - `written` only grows, and counts a prefix of the values: value `i` is counted once it and
//!   every value before it were stored.
//! - Values of one write are stored in the order given (the expected-last-id chain).
//! - A read returns only values whose claim it won or that `fresh.rs` proves have no other
//!   copy, and every such value is returned (never dropped by a later failure of the same
//!   batch): of every delivery of one value (redelivery, duplicated frame, any reader) at most
//!   one is returned, and each value by exactly one read among the readers that survive, as
//!   for single reads.
//! - A read only pulls while it is reading, and a delivered value it does not return is handed
//!   back (NAK) or, if its ack was not confirmed, left to the server to deliver again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;

use crate::chan::Chan;
use crate::error::NetError;
use crate::op::Cancel;
use crate::placeholder::{is_placeholder, pass_over};
use crate::pulls::{is_value, LATE_ANSWER, PULL_MARGIN};
use crate::turn::Turn;

/// The most values one round of a write has in flight.
pub(crate) const WINDOW: usize = 256;

/// The most values one read of a batch returns.
pub(crate) const READ_MAX: usize = 1024;

/// The longest one pull of a read waits for a first message (then it pulls again, having
/// checked for poison and end-of-stream), and the shortest (a read with `timeout=0`).
const PULL_MAX: Duration = Duration::from_secs(1);
const PULL_MIN: Duration = Duration::from_millis(5);

/// Writes `values` in order; `written` counts those stored (a prefix). See the module doc.
pub(crate) async fn write_many(
    chan: Arc<Chan>,
    values: Vec<Bytes>,
    deadline: Option<Instant>,
    mut cancel: Cancel,
    written: Arc<AtomicUsize>,
) -> Result<(), NetError> {
    let conn = &chan.conn;
    // One id per value, kept across rounds: a value whose acknowledgement was lost may have
    // been stored, and is then recognised by the server when sent again.
    let ids: Vec<String> = values.iter().map(|_| conn.new_id()).collect();
    let mut turn = Turn::new(&chan);
    let mut full = false;
    let mut next = 0;
    while next < values.len() {
        // Each round sends no more values than the stream has room for now (one stream-info
        // request): a longer round would run into the full buffer and have every value after
        // the first refused one refused too, each costing the server about as much as a
        // stored one, and the writer a wait. Flow control only: the server enforces the
        // capacity whatever the estimate (another writer may take the room first), and any
        // round keeps the chain's rules. No room: one value, which the server refuses as full
        // (then the wait below) or stores if a reader freed a slot since.
        let room = if full {
            // After a full buffer: read the shared state itself too, so a poison or retire
            // is seen even before its broadcast arrives (as `buffered::write_on`).
            tokio::join!(chan.refresh(), room(&chan)).1
        } else {
            room(&chan).await
        };
        let budget = room.map_or(values.len() - next, |r| r.max(1)).min(values.len() - next);
        let window = WINDOW.min(chan.capacity.max(1)).min(budget);
        let s = *turn.status.borrow_and_update();
        if s.poisoned {
            return Err(NetError::Poisoned);
        }
        if s.readers_retired {
            return Err(NetError::Retired);
        }
        turn.ready.borrow_and_update();
        // Every send of this round is after it (a bound for `write_on`'s re-sends below).
        let round_start = Instant::now();
        let end = next + budget;
        let results = chain(&chan, &values[next..end], &ids[next..end], window, &written).await;
        // A stored value proves the one before it was the stream's last message, so every
        // value up to the last one stored was stored: a prefix, whatever failed after it
        // (`chain` counted them already).
        let stored = results.iter().rposition(Result::is_ok).map_or(0, |i| i + 1);
        if stored > 0 {
            next += stored;
            turn.reset();
        }
        let Some(Err(e)) = results.get(stored) else {
            // The whole round stored: the next one at once, sized to the room then.
            full = false;
            continue;
        };
        full = false;
        if is_full(e) {
            full = true;
        } else if e.kind() == PublishErrorKind::TimedOut {
            // Unknown whether it was stored: send it again with its id until the server
            // answers (stored once; `write_on` stops re-sending before the duplicate window
            // closes). Not cancellable: the batch's count must be exact.
            let subject = chan.value_subject(&ids[next]);
            crate::buffered::write_on(
                Arc::clone(&chan),
                values[next].clone(),
                None,
                Cancel::never(),
                subject,
                ids[next].clone(),
                Some(round_start),
            )
            .await?;
            written.fetch_add(1, Ordering::Release);
            next += 1;
            continue;
        } else if is_wrong_last(e) {
            // Another writer's message came between two of ours: a new chain from here.
            continue;
        } else {
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
        turn.wait(deadline, &mut cancel).await?;
    }
    Ok(())
}

/// Publishes `values` (ids `ids`) in order with up to `window` acknowledgements outstanding,
/// each value but the first with `Nats-Expected-Last-Msg-Id` naming the one before, until all
/// are stored or one is not: the outcome of each value sent (from the first; values after the
/// first failure that were never sent are left out). Counts in `written` the values stored
/// while everything before them was.
async fn chain(
    chan: &Chan,
    values: &[Bytes],
    ids: &[String],
    window: usize,
    written: &AtomicUsize,
) -> Vec<Result<(), PublishError>> {
    let conn = &chan.conn;
    let mut inflight = std::collections::VecDeque::with_capacity(window);
    let mut results = Vec::with_capacity(values.len().min(window));
    let mut sent = 0;
    let mut failed = false;
    loop {
        // Sent one after another from this task: the client writes them to its one
        // connection in this order, and the server stores them in the same order.
        while !failed && inflight.len() < window && sent < values.len() {
            let id = &ids[sent];
            let mut publish =
                PublishMessage::build().payload(values[sent].clone()).message_id(id.as_str());
            if let Some(prev) = sent.checked_sub(1).and_then(|p| ids.get(p)) {
                publish = publish.expected_last_message_id(prev.as_str());
            }
            inflight.push_back(conn.js.send_publish(chan.value_subject(id), publish).await);
            sent += 1;
        }
        let Some(fut) = inflight.pop_front() else { break };
        let r = match fut {
            Ok(f) => f.await.map(|_| ()),
            Err(e) => Err(e),
        };
        if r.is_err() {
            // Every later value of the chain is refused too (or, if this one's answer was
            // lost but it was stored, they may be stored): stop sending, collect the rest.
            failed = true;
        } else if !failed {
            written.fetch_add(1, Ordering::Release);
        }
        results.push(r);
    }
    if failed {
        // Values stored after an unanswered one: stored, and so was it (see the caller).
        if let Some(last) = results.iter().rposition(Result::is_ok) {
            let counted = results.iter().take_while(|r| r.is_ok()).count();
            written.fetch_add(last + 1 - counted, Ordering::Release);
        }
    }
    results
}

/// Free slots of the channel's stream now (capacity minus the messages it holds), if the
/// server answers.
async fn room(chan: &Chan) -> Option<usize> {
    let mut stream = chan.stream.clone()?;
    let info = stream.info().await.ok()?;
    let held = usize::try_from(info.state.messages).unwrap_or(usize::MAX);
    Some(chan.capacity.saturating_sub(held))
}

fn is_full(e: &PublishError) -> bool {
    e.to_string().contains("maximum messages")
}

fn is_wrong_last(e: &PublishError) -> bool {
    e.to_string().to_ascii_lowercase().contains("wrong last msg")
}

/// Reads between 1 and `max` values (at most `READ_MAX`). See the module doc.
pub(crate) async fn read_many(
    chan: Arc<Chan>,
    max: usize,
    deadline: Option<Instant>,
    mut cancel: Cancel,
) -> Result<Vec<Bytes>, NetError> {
    let max = max.clamp(1, READ_MAX);
    let Some(consumer) = chan.consumer.clone() else {
        return Err(NetError::Protocol("buffered read on a rendezvous channel".into()));
    };
    let info = consumer.cached_info();
    let next_subj = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", info.stream_name, info.name);
    // A claims stream that cannot be made fails the read, not every value (as a single read).
    crate::claim::ensure_now(&chan.conn).await?;
    let mut status = chan.status.subscribe();
    loop {
        let s = *status.borrow_and_update();
        if s.poisoned {
            return Err(NetError::Poisoned);
        }
        if s.writers_retired && is_empty(&chan).await? {
            return Err(NetError::Retired);
        }
        if cancel.is_set() {
            return Err(NetError::Cancelled);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let wait = left.map_or(PULL_MAX, |l| l.min(PULL_MAX)).max(PULL_MIN);
        match take(&chan, &next_subj, max, wait, &mut cancel, &mut status, s).await {
            Ok(got) if !got.is_empty() => return Ok(got),
            Ok(_) => {}
            Err(NetError::Cancelled) => return Err(NetError::Cancelled),
            Err(_) => {
                if let Some(err) = chan.conn.gave_up() {
                    return Err(err);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = cancel.wait() => return Err(NetError::Cancelled),
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(NetError::Timeout);
        }
    }
}

/// A delivered value by its claim (`buffered::claim_and_ack`, with a plain ack): returned only
/// if this reader won the claim; one another reader won (a redelivery, a duplicated delivery)
/// is acknowledged and dropped. The flag: a plain ack went out.
async fn claim(chan: &Chan, m: &async_nats::Message) -> (Option<Bytes>, bool) {
    match crate::buffered::claim_and_ack(chan, m, false).await {
        Ok(crate::claim::Claim::Won) => (Some(m.payload.clone()), true),
        Ok(crate::claim::Claim::Lost) | Err(_) => (None, true),
    }
}

/// Whether nothing is left for readers (no value waiting, none delivered and unacknowledged).
async fn is_empty(chan: &Chan) -> Result<bool, NetError> {
    let Some(mut consumer) = chan.consumer.clone() else { return Ok(true) };
    let info = consumer.info().await.map_err(|e| chan.conn.transport("consumer info", e))?;
    Ok(info.num_pending == 0 && info.num_ack_pending == 0)
}

/// One pull of up to `n` that the server answers as soon as it has sent what there is (`no_wait`
/// with `expires = wait`: it waits up to `wait` for the first message only), then confirmed
/// acks. Empty when nothing came, or only placeholders, or a poison / retire / lost answer
/// ended the wait; `Cancelled` only if nothing was delivered (a delivered value is kept).
async fn take(
    chan: &Arc<Chan>,
    next_subj: &str,
    n: usize,
    wait: Duration,
    cancel: &mut Cancel,
    status: &mut tokio::sync::watch::Receiver<crate::chan::Status>,
    seen: crate::chan::Status,
) -> Result<Vec<Bytes>, NetError> {
    let conn = &chan.conn;
    // Before the pull leaves: the server delivers (and starts each value's `ack_wait`) after
    // this moment, which is what lets a value confirmed soon enough skip its claim (`fresh.rs`).
    let pulled_at = Instant::now();
    let inbox = conn.client.new_inbox();
    // Subscribed before the pull is sent (one connection, in order): the server knows the
    // inbox when it answers.
    let mut sub =
        conn.client.subscribe(inbox.clone()).await.map_err(|e| conn.transport("subscribe", e))?;
    let body = format!(r#"{{"batch":{n},"no_wait":true,"expires":{}}}"#, wait.as_nanos());
    conn.client
        .publish_with_reply(next_subj.to_owned(), inbox, body.into())
        .await
        .map_err(|e| conn.transport("pull", e))?;
    let mut msgs = Vec::with_capacity(n.min(WINDOW));
    // The server answers every pull (messages, then a status), nearly always: past the
    // margin (`PULL_MARGIN`) the read gives up on this one and pulls again.
    let answer_by = tokio::time::sleep(wait + PULL_MARGIN);
    tokio::pin!(answer_by);
    let mut over = false;
    let mut cancelled = false;
    while msgs.len() < n {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) if is_value(&m) => msgs.push(m),
                // A status (no more messages, expired): the pull is over.
                _ => { over = true; break; }
            },
            () = &mut answer_by => break,
            () = cancel.wait(), if msgs.is_empty() => { cancelled = true; break; }
            () = Chan::wait_status(status, |s| {
                s.poisoned || (s.writers_retired && !seen.writers_retired)
            }), if msgs.is_empty() => break,
        }
    }
    if !over && msgs.len() < n {
        // The read stops waiting with its pull open: whatever still comes for it is handed
        // back at once, so no value waits in a process that stopped reading.
        let conn = Arc::clone(&chan.conn);
        let until = wait + LATE_ANSWER;
        tokio::spawn(async move {
            while let Ok(Some(m)) = tokio::time::timeout(until, sub.next()).await {
                if !is_value(&m) {
                    break;
                }
                if let Some(r) = m.reply.clone() {
                    let _ = conn.client.publish(r, Bytes::from_static(b"-NAK")).await;
                }
            }
        });
    }
    if cancelled {
        return Err(NetError::Cancelled);
    }
    // Copies of one delivery (a frame the network duplicated) are one value: only the first
    // is looked at (a second one would pass the fast path too).
    let mut seqs = std::collections::HashSet::with_capacity(msgs.len());
    msgs.retain(|m| crate::fresh::stream_seq(m).is_none_or(|s| seqs.insert(s)));
    let hold_acks = conn.opts.hold_acks;
    let bound = crate::fresh::fast_bound(chan);
    let last_ack = msgs.iter().rev().find(|m| !is_placeholder(m)).and_then(|m| m.reply.clone());
    // First deliveries may skip their claims (`fresh.rs`): their acks, all of the batch's at
    // once, and one proof that the server applied them in time.
    let fresh: Vec<Option<(async_nats::Subject, u64)>> = msgs
        .iter()
        .map(|m| {
            if hold_acks || bound.is_zero() || is_placeholder(m) {
                return None;
            }
            Some((m.reply.clone()?, crate::fresh::first_delivery(m)?))
        })
        .collect();
    let fresh_acks: Vec<(async_nats::Subject, u64)> = fresh.iter().flatten().cloned().collect();
    let (fresh_ok, mut taken) = tokio::join!(
        crate::fresh::acked_in_time(chan, &fresh_acks, pulled_at, bound),
        join_all(msgs.iter().zip(&fresh).map(|(m, f)| async move {
            if f.is_some() {
                return (None, false); // decided with the others below
            }
            if is_placeholder(m) {
                pass_over(chan, m).await;
                return (None, false);
            }
            if hold_acks {
                return (Some(m.payload.clone()), false);
            }
            claim(chan, m).await
        }))
    );
    if fresh_ok {
        for ((slot, m), f) in taken.iter_mut().zip(&msgs).zip(&fresh) {
            if f.is_some() {
                *slot = (Some(m.payload.clone()), false);
            }
        }
    } else if !fresh_acks.is_empty() {
        // Not proven in time: these go by their claims too (their acks may have been
        // applied or not; a claim decides either way).
        let late = join_all(
            msgs.iter().zip(&fresh).filter(|(_, f)| f.is_some()).map(|(m, _)| claim(chan, m)),
        )
        .await;
        let slots = taken.iter_mut().zip(&fresh).filter(|(_, f)| f.is_some());
        for ((slot, _), got) in slots.zip(late) {
            *slot = got;
        }
    }
    let plain_acks = taken.iter().any(|(_, claimed)| *claimed);
    if let Some(ack) = last_ack.filter(|_| !hold_acks && plain_acks) {
        // Some values went by their claims, with plain acks: the last value's ack again,
        // confirmed. The server applies one consumer's acks in the order they came, so once
        // it answers every slot of the batch is free (unless an ack was lost: then that value
        // comes again and its claim drops it), and the `ready` notice below finds room for
        // the writers it wakes.
        crate::buffered::ack_confirmed(conn, ack).await;
    }
    let got: Vec<Bytes> = taken.into_iter().filter_map(|(v, _)| v).collect();
    if !got.is_empty() && !hold_acks {
        let _ = conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
    }
    Ok(got)
}
