//! Reply inboxes for buffered reads' pull requests, reused from read to read.
//!
//! Invariants (the pool's, stated on `Pulls` below): an inbox serves one pull at a time and
//! goes back to the pool only once its pull was answered; a read that gives up hands its
//! inbox to a task that waits for the answer and NAKs a value at once, so no value stays with
//! a process that is not reading.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::NetError;
use crate::link::Inner;
use crate::lock::lock;

/// How long past its expiry a read waits for its pull's answer before it pulls again. The
/// server answers every pull (values, then a status) as a rule, but a request is lost with its
/// connection, and nats-server 2.9 was seen to end a pull without any answer when a
/// redelivery fell due just as the pull expired (the value then waits for the next pull; see
/// `test_a_pull_the_server_never_answers_is_sent_again`). So the margin is short: a late
/// answer is not lost, it goes to the task that `abandon` starts, which hands a value back.
pub(crate) const PULL_MARGIN: Duration = Duration::from_secs(1);

/// How long after a read gave up on its pull the inbox still waits for the answer (`abandon`).
pub(crate) const LATE_ANSWER: Duration = Duration::from_secs(5);

/// Reply inboxes for pull requests, each with its subscription, reused from read to read: a
/// read costs a pull request and a confirmed ack, not also a subscription made and removed
/// (async-nats's `batch` subscribes a fresh inbox per pull).
///
/// Invariants: an inbox serves one pull at a time; it goes back to the pool only once its
/// pull was answered (a batch-1 pull has exactly one answer: a message or an expiry status),
/// so the next pull on it gets its own answer. A read that gives up before the answer leaves
/// its inbox to a task that waits for the answer and hands a value back at once (NAK), so no
/// value stays with a process that is not reading; an inbox whose answer never came is
/// dropped, not reused.
pub(crate) struct Pulls {
    next_subj: String,
    free: Mutex<Vec<Pull>>,
}

/// One reply inbox and its subscription.
pub(crate) struct Pull {
    inbox: String,
    pub(crate) sub: async_nats::Subscriber,
}

/// How many idle inboxes a channel keeps (more concurrent reads make more, then drop them).
const POOL_MAX: usize = 256;

impl Pulls {
    /// Pulls for the consumer whose next-message subject is `next_subj`.
    pub(crate) fn new(next_subj: String) -> Self {
        Pulls { next_subj, free: Mutex::new(Vec::new()) }
    }

    /// Sends a pull for one message (expiring after `wait`, or answered at once with
    /// `no_wait`) on a free inbox.
    pub(crate) async fn request(
        &self,
        conn: &Inner,
        no_wait: bool,
        wait: Duration,
    ) -> Result<Pull, NetError> {
        let free = lock(&self.free).pop();
        let pull = match free {
            Some(p) => p,
            None => {
                let inbox = conn.client.new_inbox();
                // Subscribed before the pull is sent: the client sends both in order on its
                // one connection, so the server knows the inbox when it answers.
                let sub = conn
                    .client
                    .subscribe(inbox.clone())
                    .await
                    .map_err(|e| conn.transport("subscribe", e))?;
                Pull { inbox, sub }
            }
        };
        let body = if no_wait {
            r#"{"batch":1,"no_wait":true}"#.to_owned()
        } else {
            format!(r#"{{"batch":1,"expires":{}}}"#, wait.as_nanos())
        };
        conn.client
            .publish_with_reply(self.next_subj.clone(), pull.inbox.clone(), body.into())
            .await
            .map_err(|e| conn.transport("pull", e))?;
        Ok(pull)
    }

    pub(crate) fn put_back(&self, pull: Pull) {
        let mut f = lock(&self.free);
        if f.len() < POOL_MAX {
            f.push(pull);
        }
    }

    /// The read gave up while its pull is open: wait for the answer elsewhere, hand a value
    /// back at once, then reuse the inbox.
    pub(crate) fn abandon(self: &Arc<Self>, conn: &Arc<Inner>, mut pull: Pull, wait: Duration) {
        let (me, conn) = (Arc::clone(self), Arc::clone(conn));
        tokio::spawn(async move {
            if let Ok(Some(m)) = tokio::time::timeout(wait + LATE_ANSWER, pull.sub.next()).await {
                if is_value(&m) {
                    nak(&conn, &m).await;
                }
                me.put_back(pull);
            }
        });
    }
}

pub(crate) fn is_value(m: &async_nats::Message) -> bool {
    m.status.is_none_or(|s| s == StatusCode::OK) && m.reply.is_some()
}

async fn nak(conn: &Inner, m: &async_nats::Message) {
    if let Some(r) = m.reply.clone() {
        let _ = conn.client.publish(r, Bytes::from_static(b"-NAK")).await;
    }
}
