//! Fresh deliveries: when a batch read may return a value without claiming it (issue #17).
//!
//! A claim (`claim.rs`) decides between two copies of one value. Of a buffered value a second
//! copy exists only if (a) the server delivered the message again, which it does only once
//! `ack_wait` passed without an ack applied (or after a NAK, which only a reader that returns
//! nothing sends), or (b) a writer's publish was stored twice (a re-send after the stream's
//! 2-minute duplicate window: `buffered::write_on` stops re-sending before it, `RESEND_FOR`),
//! or (c) a frame of one delivery reached the reader twice (the batch keeps one copy per
//! stream sequence). So a read may skip the claim for a delivery when:
//!
//! 1. its ack subject says it is the message's first delivery (`delivered == 1`), so no copy
//!    went out before it; and
//! 2. the server confirmed that its ack was applied, and the confirmation came back within
//!    `bound` of the moment just before the pull request was sent. For one value the
//!    confirmation is its confirmed ack's answer ("AckAck"); for several values of one pull,
//!    the consumer's ack floor at or above the highest of their consumer sequences, asked
//!    for after the last ack's confirmed answer (`acked_in_time`): one request per pull
//!    instead of one per value.
//!
//! The server timed the message's `ack_wait` from its delivery, which came after it received
//! the pull request, so after that moment; it applied the ack before it answered, so before
//! the answer came back. So ack application minus delivery is under `bound`, and with `bound`
//! at most half of the shortest first redelivery delay the consumer really has (its
//! `ack_wait`, or its first `backoff` step, as the server reports them, and never more than
//! this connection's own `ack_timeout`), the server had not redelivered it when the ack
//! removed it, and never will: no other copy of this value is ever handed to anyone, claimed
//! or not. The other half is the margin for the two clocks' rates (the server times with its
//! wall clock, which NTP may slew by up to ~8%; this reader with its monotonic clock); a
//! server whose clock is stepped forward by more than the margin while a value is out is
//! outside the argument, as is one that loses its acknowledgement state (killed without
//! flushing it to disk, so it delivers an acked value again as new).
//!
//! Everything else claims as before: a redelivery (`delivered >= 2`), an ack not answered
//! (lost on the way there or back), answered late, or answered with a status. A copy that
//! claims wins when no other copy claimed, even if one went by the fast path: that is why the
//! fast path is taken only where no other copy can exist.
//!
//! Invariants:
//! - `fast_bound` is at most half of every first-redelivery delay known for the consumer, and
//!   zero (no fast path) when none is known.
//! - `acked_in_time` is true only for first deliveries whose acks the server confirmed (the
//!   answer to a confirmed ack, without a status, and for several the ack floor at or above
//!   each one's consumer sequence) before `bound` passed since `pulled_at`.

use std::time::{Duration, Instant};

use async_nats::{Request, Subject};
use bytes::Bytes;

use crate::chan::Chan;
use crate::wire::parse_ack_subject;

/// How long after sending the pull a first delivery's ack must be confirmed for the read to
/// skip the claim (zero: never). See the module doc.
pub(crate) fn fast_bound(chan: &Chan) -> Duration {
    let Some(consumer) = chan.consumer.as_ref() else { return Duration::ZERO };
    let cfg = &consumer.cached_info().config;
    let mut first = cfg.ack_wait;
    if let Some(step) = cfg.backoff.iter().min() {
        first = first.min(*step);
    }
    first.min(chan.conn.opts.ack_timeout) / 2
}

/// The stream sequence of delivered message `m` (its ack subject), if it has one.
pub(crate) fn stream_seq(m: &async_nats::Message) -> Option<u64> {
    parse_ack_subject(m.reply.as_ref()?.as_str()).ok().map(|a| a.stream_seq)
}

/// The consumer sequence of delivered message `m` if this is the message's first delivery
/// (condition 1 of the module doc), else None.
pub(crate) fn first_delivery(m: &async_nats::Message) -> Option<u64> {
    let a = parse_ack_subject(m.reply.as_ref()?.as_str()).ok()?;
    (a.delivered == 1).then_some(a.consumer_seq)
}

/// Acknowledges the first deliveries `acks` (each one's ack subject and consumer sequence,
/// from one pull, in delivery order) and says whether the server applied every one of those
/// acks within `bound` of `pulled_at` (see the module doc). False: each of them must be
/// claimed (any of the acks may or may not have been applied).
///
/// One ack is sent confirmed and its answer is the proof. Of several, all but the last go as
/// plain acks and the last confirmed, and then the consumer's ack floor is asked for: every
/// delivery at or below the floor is acknowledged, and none of these was delivered again
/// before the answer (the bound), so each of them at or below the floor had its own ack
/// applied. The confirmed last ack is only there to let the floor be current when asked (the
/// server applies one consumer's acks in order); the floor, not that order, is the proof, so
/// an ack lost on the way (a reconnect, a route between servers) only costs the claims.
pub(crate) async fn acked_in_time(
    chan: &Chan,
    acks: &[(Subject, u64)],
    pulled_at: Instant,
    bound: Duration,
) -> bool {
    let Some(((last, _), rest)) = acks.split_last() else { return true };
    if bound.is_zero() {
        return false;
    }
    let conn = &chan.conn;
    let any_time = conn.opts.fresh_any_time;
    // Waits no longer than the bound: an answer after it would send the values to their
    // claims anyway.
    let left =
        || if any_time { conn.opts.ack_timeout } else { bound.saturating_sub(pulled_at.elapsed()) };
    for (reply, _) in rest {
        if conn.client.publish(reply.clone(), Bytes::from_static(b"+ACK")).await.is_err() {
            return false;
        }
    }
    let wait = left();
    if wait.is_zero() {
        return false;
    }
    let req = Request::new().payload(Bytes::from_static(b"+ACK")).timeout(Some(wait));
    if !matches!(conn.client.send_request(last.clone(), req).await, Ok(r) if r.status.is_none()) {
        return false;
    }
    if !rest.is_empty() && !conn.opts.fresh_no_floor {
        let Some(consumer) = chan.consumer.as_ref() else { return false };
        let highest = acks.iter().map(|(_, seq)| *seq).max().unwrap_or(u64::MAX);
        let wait = left();
        let floor = match tokio::time::timeout(wait, consumer.get_info()).await {
            Ok(Ok(info)) => info.ack_floor.consumer_sequence,
            _ => return false,
        };
        if floor < highest {
            return false;
        }
    }
    // Timed after the last answer arrived: later than the server applied the acks.
    any_time || pulled_at.elapsed() < bound
}
