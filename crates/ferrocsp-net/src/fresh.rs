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
//! 2. its confirmed ack ("AckAck") was answered by the server, so the ack was applied, and the
//!    answer came back within `bound` of the moment just before the pull request was sent.
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
//! - `acked_in_time` is true only for a first delivery whose confirmed ack was answered
//!   without a status before `bound` passed since `pulled_at`.

use std::time::{Duration, Instant};

use async_nats::Request;
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

/// Sends the confirmed ack of delivered message `m` if it is a first delivery, and says
/// whether the server confirmed it within `bound` of `pulled_at` (see the module doc). False:
/// the value must be claimed (the ack may or may not have been applied).
pub(crate) async fn acked_in_time(
    chan: &Chan,
    m: &async_nats::Message,
    pulled_at: Instant,
    bound: Duration,
) -> bool {
    let Some(reply) = m.reply.clone() else { return false };
    let first = parse_ack_subject(reply.as_str()).is_ok_and(|a| a.delivered == 1);
    if !first || bound.is_zero() {
        return false;
    }
    let conn = &chan.conn;
    let any_time = conn.opts.fresh_any_time;
    // Waits no longer than the bound: an answer after it would send the value to its claim
    // anyway.
    let wait =
        if any_time { conn.opts.ack_timeout } else { bound.saturating_sub(pulled_at.elapsed()) };
    if wait.is_zero() {
        return false;
    }
    let req = Request::new().payload(Bytes::from_static(b"+ACK")).timeout(Some(wait));
    let answered =
        matches!(conn.client.send_request(reply, req).await, Ok(r) if r.status.is_none());
    // Timed after the answer arrived: later than the server applied the ack.
    answered && (any_time || pulled_at.elapsed() < bound)
}
