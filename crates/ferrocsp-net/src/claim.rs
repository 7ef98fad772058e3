//! Claims: the server decides which reader takes a value, so that a value that reaches two
//! readers (a rendezvous value re-sent after its reply was lost, which the queue group may
//! route to another process; a buffered value delivered again after its acknowledgement was
//! lost or came after `ack_wait`) is handed to a read or an Alt once.
//!
//! Every value has an id (rendezvous: its `Csp-Id`, kept across re-sends; buffered: its
//! `Nats-Msg-Id`). Before a reader hands a value to a read or an Alt of its process, it
//! *claims* the id: it publishes an empty message on `<root>.<N>.c.<id>` into the claims
//! stream of the namespace (`CLAIMS_<bucket>`: one message per subject, messages kept
//! `KEEP`) with `Nats-Expected-Last-Subject-Sequence: 0` (the server stores it only if nobody
//! claimed that id) and a `Nats-Msg-Id` of its own (`token`, unique to this claim). Outcomes:
//!
//! - stored, or answered "duplicate" (this claim was re-sent after its acknowledgement was
//!   lost; the server de-duplicates by `Nats-Msg-Id` before it checks the sequence): **won**,
//!   the value is this reader's;
//! - "wrong last sequence": **lost**, another reader took the value (the reader hands the
//!   reserved read back and answers the writer `+` / acknowledges the message);
//! - no answer: the same claim is sent again (same token) until the server answers or the
//!   connection gives up on it (`gave_up`): then the outcome is unknown and the value is not
//!   handed to anyone here (if the claim was stored, the value is lost: the one case, after
//!   `reconnect_timeout` without a server, where a successful write may go unread).
//!
//! Invariants:
//! - A value is handed to a read or an Alt only after its reader won the claim of its id, so of
//!   every delivery of one id (re-sends, redeliveries, duplicated frames, any process) at most
//!   one is handed on; a claim lost means someone else won it, so the value is not lost.
//! - A claim is kept `KEEP` (2 minutes, JetStream's own default de-duplication window, which
//!   the buffered writes' de-duplication also relies on): a copy of a value delayed in the
//!   network for longer than that is outside the guarantee, and so is a redelivery after an
//!   `ack_timeout` (JetStream's `ack_wait`) of that order: keep `ack_timeout` well under it.
//! - Claims are only made where a value is about to be handed on: a read or an Alt is reserved
//!   first (a hold), so a won claim always has a receiver (unless its process is being torn
//!   down: then the value goes with it, as with a crash after a read returned).

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;

use crate::chan::Chan;
use crate::error::NetError;
use crate::link::Inner;

/// How long a claim is kept (and its token de-duplicated).
const KEEP: Duration = Duration::from_secs(120);

/// A claim's outcome (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The value is ours to hand on.
    Won,
    /// Another reader took it: hand nothing on, answer as delivered.
    Lost,
}

/// Whether `id` can be a claim's subject token (ids come from the wire): 1-64 of
/// `0-9 A-Z a-z _ -`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The claims stream's name for this connection's namespace (`CLAIMS_FERROCSP`,
/// `CLAIMS_FERROCSP-<ns>`: no channel's stream starts that way).
fn stream_name(conn: &Inner) -> String {
    format!("CLAIMS_{}", conn.names.bucket)
}

/// Creates the namespace's claims stream once per connection (every participant asks for the
/// same configuration, so concurrent creations agree).
async fn ensure_stream(conn: &Inner) -> Result<(), NetError> {
    conn.claims
        .get_or_try_init(|| async {
            let cfg = async_nats::jetstream::stream::Config {
                name: stream_name(conn),
                subjects: vec![format!("{}.*.c.*", conn.names.root)],
                max_messages_per_subject: 1,
                max_age: KEEP,
                duplicate_window: KEEP,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            };
            conn.js
                .get_or_create_stream(cfg)
                .await
                .map(|_| ())
                .map_err(|e| conn.transport("create the claims stream", e))
        })
        .await
        .copied()
}

/// `ensure_stream` at the start of a read, failing it only when the server answered (a
/// permanent refusal, e.g. permissions): while the server is away, the read waits for it as
/// usual and the claims stream is made on the first claim.
pub(crate) async fn ensure_now(conn: &Inner) -> Result<(), NetError> {
    match ensure_stream(conn).await {
        Err(e) if conn.client.connection_state() == async_nats::connection::State::Connected => {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// Claims value `id` of `chan` for this reader (see the module doc). `Err` only when the
/// connection gave up on its server (the outcome is then unknown).
pub(crate) async fn claim(chan: &Chan, id: &str) -> Result<Claim, NetError> {
    let conn = &chan.conn;
    if !valid_id(id) {
        return Err(NetError::Protocol(format!("invalid value id on '{}'", chan.name)));
    }
    let subject = format!("{}.{}.c.{id}", conn.names.root, chan.name);
    let token = conn.new_id();
    loop {
        if let Err(e) = ensure_stream(conn).await {
            if let Some(err) = conn.gave_up() {
                return Err(err);
            }
            if conn.client.connection_state() == async_nats::connection::State::Connected {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let publish =
            PublishMessage::build().message_id(token.as_str()).expected_last_subject_sequence(0);
        let acked = match conn.js.send_publish(subject.clone(), publish).await {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(_) => return Ok(Claim::Won),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Ok(Claim::Lost),
            Err(e) => {
                if let Some(err) = conn.gave_up() {
                    return Err(err);
                }
                if e.kind() != PublishErrorKind::TimedOut {
                    // Disconnected for a moment (the client reconnects by itself).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The id a buffered value is claimed by: its `Nats-Msg-Id` (every ferrocsp write sets one),
/// else, for a message published without a usable one, its stream sequence.
pub(crate) fn value_id(m: &async_nats::Message) -> Option<String> {
    let own = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str());
    if let Some(id) = own.filter(|id| valid_id(id)) {
        return Some(id.to_owned());
    }
    seq_id(m.reply.as_ref()?.as_str())
}

/// `s<stream sequence>` from a delivery's ack subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`, or the newer form
/// with a domain and an account hash before the stream (and possibly more tokens after).
fn seq_id(reply: &str) -> Option<String> {
    let tokens: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
    let at = match tokens.len() {
        7 => 3,
        n if n >= 9 => 5,
        _ => return None,
    };
    let seq: u64 = tokens.get(at)?.parse().ok()?;
    Some(format!("s{seq}"))
}

#[cfg(test)]
mod tests {
    use super::{seq_id, valid_id};

    #[test]
    fn a_value_without_its_own_id_is_claimed_by_its_stream_sequence() {
        assert_eq!(seq_id("$JS.ACK.S.C.1.42.7.1700000000000000000.3").as_deref(), Some("s42"));
        assert_eq!(
            seq_id("$JS.ACK._.HASH.S.C.2.43.7.1700000000000000001.0.tok").as_deref(),
            Some("s43")
        );
        assert_eq!(seq_id("$JS.ACK.S.C.1.x.7.1.3"), None);
        assert_eq!(seq_id("_INBOX.x"), None);
    }

    #[test]
    fn ids_from_the_wire_are_one_subject_token() {
        assert!(valid_id("0123abcdef-42"));
        assert!(valid_id("a_B-9"));
        for bad in ["", "a.b", "a*", "a>", "a b", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
