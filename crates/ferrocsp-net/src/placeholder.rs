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
    let expired = published_ns(&reply).is_some_and(|t| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let age = u128::try_from(t).map_or(0, |t| now.saturating_sub(t));
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

/// When the server stored a delivered message (ns since the epoch), from its ack subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`, or the newer form
/// with a domain and an account hash before the stream (and possibly more tokens after).
fn published_ns(reply: &str) -> Option<i128> {
    let tokens: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
    let at = match tokens.len() {
        7 => 5,
        n if n >= 9 => 7,
        _ => return None,
    };
    tokens.get(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::published_ns;

    #[test]
    fn the_store_time_is_read_from_both_ack_subject_forms() {
        assert_eq!(
            published_ns("$JS.ACK.S.C.1.42.7.1700000000000000000.3"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            published_ns("$JS.ACK._.HASH.S.C.2.42.7.1700000000000000001.0.tok"),
            Some(1_700_000_000_000_000_001)
        );
        assert_eq!(published_ns("$JS.ACK.S.C.1.42"), None);
        assert_eq!(published_ns("_INBOX.x"), None);
        assert_eq!(published_ns("$JS.ACK.S.C.1.42.7.notanumber.3"), None);
    }
}
