//! Output guards on buffered channels: a slot reserved with a placeholder, then filled with
//! the value or given back.
//!
//! Every value of buffered channel `N` has a subject of its own, `ferrocsp.N.b.<id>`, and the
//! stream keeps at most one message per subject (`max_msgs_per_subject = 1`). With
//! discard-new, the server then stores a message on a subject that already holds one even when
//! the stream is full: it replaces that message, and the count stays the same. A slot can
//! therefore be held without its value:
//!
//! 1. While an Alt of this process waits with an Output guard on `N`, the *output pump*
//!    (`out_pump.rs`) publishes a **placeholder** (header `Csp-Slot`, no payload) on a fresh
//!    subject. The server stores it only if there is room; "maximum messages exceeded" means
//!    full, and the pump waits for a `ready` notice (or its backoff) as a writer does.
//! 2. The pump queues the reservation `(subject, sequence)` in `reads.won`, then tries to win
//!    a waiting Output Alt (the Alt's one CAS).
//! 3. Won: the Alt publishes its value on the reservation's subject (**commit**), which
//!    replaces the placeholder in its slot. Lost: the pump deletes the placeholder by its
//!    sequence (**give back**) and publishes a `ready` notice for the slot it frees.
//! 4. A read never returns a placeholder: it hands it back with a delay (NAK), so that by the
//!    time it would come again it is gone (filled: the value is a new message; given back:
//!    deleted). A placeholder older than `ack_timeout` (its writer died between 1 and 3) is
//!    acknowledged by the reader that finds it, which frees its slot.
//!
//! Invariants:
//! - A value leaves the process only after its Alt won; a placeholder carries none.
//! - A placeholder holds one slot of the capacity while it exists and is never returned by a
//!   read (readers skip it) nor counted as a value.
//! - A committed value is stored exactly once (a re-sent commit keeps its `Nats-Msg-Id`): in
//!   its reserved slot, replacing the placeholder, or, if a reader expired the placeholder
//!   meanwhile, in any free slot; with none free, the commit waits for one like a write (the
//!   Alt has already chosen: it cannot undo).
//! - `reads.won` holds a reservation for every Output Alt that won and has not committed yet
//!   (queued before the win is tried), so a winner never lacks one.

use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::chan::Chan;
use crate::error::NetError;
use crate::op::Cancel;
use crate::placeholder::HDR_SLOT;

/// Tries of publishing a placeholder whose acknowledgement did not come (same id: stored once).
const RESERVE_TRIES: usize = 3;

/// Publishes a placeholder on a fresh subject: `(subject, stream sequence)`, or `None` if the
/// buffer is full or the server did not answer.
pub(crate) async fn reserve(chan: &Chan) -> Option<(String, u64)> {
    let conn = &chan.conn;
    let id = conn.new_id();
    let subject = chan.value_subject(&id);
    for _ in 0..RESERVE_TRIES {
        let mut headers = HeaderMap::new();
        headers.insert(HDR_SLOT, "1");
        let publish = PublishMessage::build().headers(headers).message_id(id.as_str());
        let acked = match conn.js.send_publish(subject.clone(), publish).await {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => return Some((subject, ack.sequence)),
            Err(e) if e.kind() == async_nats::jetstream::context::PublishErrorKind::TimedOut => {}
            // Full, or no server: wait for the next notice or backoff.
            Err(_) => return None,
        }
    }
    // Unanswered three times: if it was stored after all, readers expire it (`pass_over`).
    None
}

/// Deletes an unused placeholder and tells waiting writers a slot is free. A placeholder a
/// reader already expired is simply not there any more.
pub(crate) async fn give_back(chan: &Chan, (_, seq): (String, u64)) {
    if let Some(stream) = &chan.stream {
        let _ = stream.delete_message(seq).await;
    }
    let _ = chan.conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
}

/// Sends a chosen Output guard's value into its reserved slot (`won`: the reservation's
/// subject and sequence): a write on the reservation's subject, which replaces the
/// placeholder (or, if it expired, takes a free slot, waiting for one if need be). Without a
/// reservation (cannot happen: the pump queues one before it lets an Alt win) it is an
/// ordinary write.
pub(crate) async fn commit(
    chan: Arc<Chan>,
    payload: Bytes,
    won: Option<(String, u64)>,
    cancel: Cancel,
) -> Result<(), NetError> {
    let id = chan.conn.new_id();
    let subject = match won {
        Some((subject, _)) => subject,
        None => chan.value_subject(&id),
    };
    crate::buffered::write_on(chan, payload, None, cancel, subject, id, None).await
}
