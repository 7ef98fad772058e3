//! A placeholder: a buffered slot reserved for an Output guard without its value
//! (`reserve.rs` has the protocol), and how a reader that finds one treats it.
//!
//! Invariants:
//! - A placeholder is recognised by its header alone and is never returned by a read.
//! - A reader hands a young placeholder back (delayed NAK); it frees the slot of one only
//!   after `ack_timeout` since the server stored it (its writer died before filling it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::chan::Chan;
use crate::wire::parse_ack_subject;

/// Marks a placeholder (a reserved slot without its value).
pub(crate) const HDR_SLOT: &str = "Csp-Slot";

/// How long a read hands a young placeholder back for: its Alt fills or gives it back within
/// a round trip or two, so it is normally gone by then.
const PASS_DELAY: Duration = Duration::from_millis(20);

/// Whether `m` is a placeholder (see the module doc).
pub(crate) fn is_placeholder(m: &async_nats::Message) -> bool {
    m.headers.as_ref().is_some_and(|h| h.get(HDR_SLOT).is_some())
}

/// A read found a placeholder: hands it back for `PASS_DELAY`, or frees its slot if its
/// writer had `ack_timeout` to fill it and did not (it died).
pub(crate) async fn pass_over(chan: &Chan, m: &async_nats::Message) {
    let Some(reply) = m.reply.clone() else { return };
    let expired = parse_ack_subject(&reply).is_ok_and(|a| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let age = now.saturating_sub(u128::from(a.stored_ns));
        age > chan.conn.opts.ack_timeout.as_nanos()
    });
    let client = &chan.conn.client;
    if expired {
        let _ = client.publish(reply, Bytes::from_static(b"+ACK")).await;
        // A slot is free: a writer waiting on a full buffer need not wait for its backoff.
        let _ = client.publish(chan.subj_ready.clone(), Bytes::new()).await;
    } else {
        let nak = format!("-NAK {{\"delay\":{}}}", PASS_DELAY.as_nanos());
        let _ = client.publish(reply, Bytes::from(nak)).await;
    }
}
