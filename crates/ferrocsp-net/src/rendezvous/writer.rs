//! The writing side of a rendezvous: plain writes, and the claims, releases and commits of a
//! selecting writer (an Output guard).
//!
//! Invariants:
//! - A write completes only after a reader took the value (the `+` reply follows the
//!   hand-off); one withdrawn by timeout or cancellation has no request in flight.
//! - A value keeps its id across re-sends, and a commit that falls back to an ordinary write
//!   keeps its id too, so a reader that already has it answers `+` without taking it twice.

use std::sync::Arc;
use std::time::Instant;

use async_nats::{HeaderMap, Request};
use bytes::Bytes;

use super::wire::{HDR_CLAIM, HDR_ID, HDR_RELEASE, HDR_RESV};
use crate::chan::Chan;
use crate::error::NetError;
use crate::op::Cancel;
use crate::turn::Turn;
use crate::wire::{parse_claim_reply, parse_write_reply, ClaimReply, WriteReply};

pub(crate) async fn write(
    chan: Arc<Chan>,
    payload: Bytes,
    deadline: Option<Instant>,
    cancel: Cancel,
) -> Result<(), NetError> {
    let id = chan.conn.new_id();
    write_id(&chan, payload, deadline, cancel, id).await
}

/// `write` with the value's id given (a committed Output guard's value keeps its id when it
/// falls back to this loop, so a reader that already has it answers `+` again).
async fn write_id(
    chan: &Arc<Chan>,
    payload: Bytes,
    deadline: Option<Instant>,
    mut cancel: Cancel,
    id: String,
) -> Result<(), NetError> {
    let conn = &chan.conn;
    let mut headers = HeaderMap::new();
    headers.insert(HDR_ID, id.as_str());
    let mut turn = Turn::new(chan);
    loop {
        let s = *turn.status.borrow_and_update();
        if s.poisoned {
            return Err(NetError::Poisoned);
        }
        if s.readers_retired {
            return Err(NetError::Retired);
        }
        turn.ready.borrow_and_update();
        let req = Request::new()
            .payload(payload.clone())
            .headers(headers.clone())
            .timeout(Some(conn.opts.ack_timeout));
        match conn.client.send_request(chan.subj_w.clone(), req).await {
            Ok(msg) => match parse_write_reply(&msg.payload) {
                Ok(WriteReply::Taken) => return Ok(()),
                Ok(WriteReply::Poisoned) => return Err(NetError::Poisoned),
                Ok(WriteReply::Refused) => {}
                Err(e) => return Err(NetError::Protocol(format!("on '{}': {e}", chan.name))),
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
        turn.wait(deadline, &mut cancel).await?;
    }
}

/// What a claim got (see the module doc).
pub(crate) enum Claimed {
    /// A reader held for us: `(its direct subject, hold)`.
    Hold((String, u64)),
    /// No reader to hold now (`-`, no responders, or a reply without a hold): wait.
    Wait,
    /// The claim went unanswered for `ack_timeout`: claim again at once.
    Again,
}

/// Sends a claim (no value) on `ferrocsp.N.w`: the reader process that gets it holds a
/// waiting read or input Alt for us.
pub(crate) async fn claim_reader(chan: &Chan) -> Claimed {
    let conn = &chan.conn;
    let mut headers = HeaderMap::new();
    headers.insert(HDR_CLAIM, "1");
    let req = Request::new().headers(headers).timeout(Some(conn.opts.ack_timeout));
    match conn.client.send_request(chan.subj_w.clone(), req).await {
        Ok(msg) => {
            // Only a subject of this channel's direct form is taken (the value goes there).
            let direct = chan.subj_direct.rsplit_once('.').map_or("", |(p, _)| p);
            match parse_claim_reply(&msg.payload, direct) {
                Ok(ClaimReply::Held { subject, hold }) => Claimed::Hold((subject, hold)),
                _ => Claimed::Wait,
            }
        }
        Err(e) if e.kind() == async_nats::client::RequestErrorKind::TimedOut => Claimed::Again,
        _ => Claimed::Wait,
    }
}

/// Gives an unused hold back (`Csp-Release` to the reader's direct subject).
pub(crate) async fn release_claim(chan: &Chan, (subj, hold): (String, u64)) {
    let mut h = HeaderMap::new();
    h.insert(HDR_RELEASE, hold.to_string().as_str());
    let _ = chan.conn.client.publish_with_headers(subj, h, Bytes::new()).await;
}

/// Sends a chosen Output guard's value to the reader held for it (`won`: direct subject and
/// hold). If that reader is gone (it died, or the hold expired), or there is no hold (cannot
/// happen: the pump queues one before it lets an Alt win), the value, already committed, is
/// written as an ordinary rendezvous write with the same id.
pub(crate) async fn commit(
    chan: Arc<Chan>,
    payload: Bytes,
    won: Option<(String, u64)>,
    cancel: Cancel,
) -> Result<(), NetError> {
    let conn = &chan.conn;
    let id = conn.new_id();
    let Some((subject, hold)) = won else {
        return write_id(&chan, payload, None, cancel, id).await;
    };
    let mut headers = HeaderMap::new();
    headers.insert(HDR_ID, id.as_str());
    headers.insert(HDR_RESV, hold.to_string().as_str());
    loop {
        let req = Request::new()
            .payload(payload.clone())
            .headers(headers.clone())
            .timeout(Some(conn.opts.ack_timeout));
        match conn.client.send_request(subject.clone(), req).await {
            Ok(msg) => match parse_write_reply(&msg.payload) {
                Ok(WriteReply::Taken) => return Ok(()),
                Ok(WriteReply::Poisoned) => return Err(NetError::Poisoned),
                _ => break,
            },
            // No answer: the reader may have it (and died, or the reply was lost); ask again
            // with the same id while its process is there to say so.
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::TimedOut => {
                if let Some(err) = conn.gave_up() {
                    return Err(err);
                }
            }
            Err(_) => break,
        }
    }
    write_id(&chan, payload, None, cancel, id).await
}
