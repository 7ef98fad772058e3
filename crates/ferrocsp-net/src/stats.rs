//! `stats()` of a networked channel: one answer for the whole channel, gathered from the
//! server (exact) and from every process that has the channel open (a survey).
//!
//! - Capacity, poison and the end counts are the KV keys of `chan.rs` (the truth every
//!   participant shares), read at the moment of the call: exact.
//! - `buffered` is the message count of the channel's stream (`StreamInfo.state.messages`),
//!   exact at the server's instant: values stored and not yet acknowledged by a reader, and
//!   Output guards' reserved slots (`reserve.rs`), which hold a slot like a value; 0 once the
//!   channel is poisoned (those values can never be read, as a local poison drops them).
//! - Waiting readers and writers exist only in the processes that run them, so the caller
//!   publishes a survey (payload `STATS_ASK`, with a reply inbox) on the channel's control
//!   subject `ferrocsp.N.ctl`, which every `Chan` already subscribes to; each answers with its
//!   own counts (`Busy`, plus its selections' demand) and the caller adds up what arrives
//!   until the answers go quiet. Eventually consistent: an operation that starts or ends
//!   while the survey runs may or may not be counted, and a process that does not answer in
//!   time (stalled, or cut off from the server) is not counted.
//!
//! Invariants:
//! - `Busy` counts an operation from the call that starts it until its task ends (a guard in
//!   the task, dropped on every path, also when a closing runtime drops the task), so a count
//!   never stays raised by an operation that is over.
//! - The caller's own process answers through the server like any other (its `Chan` is
//!   subscribed from `open`), so every answer is the state after the survey was sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::busy::STATS_ASK;
use crate::chan::Chan;
use crate::error::NetError;
use crate::wire::parse_survey_answer;

/// The answers are taken as complete once none arrived for this long after the previous
/// one, and at least `QUIET_RTT` times the first answer's round trip.
const QUIET_MIN: Duration = Duration::from_millis(25);
const QUIET_RTT: u32 = 3;

/// A snapshot of a networked channel (the bindings turn it into `ferrocsp.ChannelStats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The capacity (0: rendezvous).
    pub capacity: usize,
    /// Values stored on the server (and reserved slots); 0 once poisoned.
    pub buffered: u64,
    /// Reads and selecting readers in progress in every process that answered.
    pub readers_waiting: u64,
    /// Writes and selecting writers in progress in every process that answered.
    pub writers_waiting: u64,
    /// Reader ends made and not retired, on every machine.
    pub reader_ends: u64,
    /// Writer ends made and not retired, on every machine.
    pub writer_ends: u64,
    /// Poisoned by anyone.
    pub poisoned: bool,
    /// Every writer end, or every reader end, made so far is retired.
    pub retired: bool,
}

/// One operation counted in `Busy` while it lives.
pub(crate) struct BusyGuard {
    chan: Arc<Chan>,
    reader: bool,
}

impl BusyGuard {
    pub(crate) fn new(chan: &Arc<Chan>, reader: bool) -> BusyGuard {
        chan.busy.add(reader);
        BusyGuard { chan: Arc::clone(chan), reader }
    }

    /// `op`, counted until it ends (or is dropped).
    pub(crate) async fn during<T>(self, op: impl std::future::Future<Output = T>) -> T {
        let out = op.await;
        drop(self);
        out
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.chan.busy.sub(self.reader);
    }
}

/// The channel's stats (see the module doc); at most about `ack_timeout` long.
pub(crate) async fn stats(chan: Arc<Chan>) -> Result<Stats, NetError> {
    let conn = &chan.conn;
    let client = &conn.client;
    let inbox = client.new_inbox();
    let mut answers =
        client.subscribe(inbox.clone()).await.map_err(|e| conn.transport("subscribe", e))?;
    let sent = Instant::now();
    client
        .publish_with_reply(chan.subj_ctl.clone(), inbox, Bytes::from_static(STATS_ASK))
        .await
        .map_err(|e| conn.transport("publish", e))?;
    client.flush().await.map_err(|e| conn.transport("flush", e))?;

    // The server's side while the answers come in.
    let (poisoned, w, r) = chan.read_state().await?;
    let buffered = match (&chan.stream, poisoned) {
        (Some(stream), false) => {
            let info = stream
                .get_info()
                .await
                .map_err(|e| conn.transport("read the channel's stream", e))?;
            info.state.messages
        }
        _ => 0,
    };

    let limit = sent + conn.opts.ack_timeout;
    let (mut readers, mut writers) = (0u64, 0u64);
    let mut quiet: Option<Duration> = None;
    let mut last = sent;
    loop {
        let until = match quiet {
            Some(q) => (last + q).min(limit),
            None => limit,
        };
        let Ok(Some(msg)) = tokio::time::timeout_at(until.into(), answers.next()).await else {
            break;
        };
        last = Instant::now();
        if quiet.is_none() {
            quiet = Some(QUIET_MIN.max((last - sent) * QUIET_RTT));
        }
        // A malformed answer (someone else publishing on the inbox) counts for nothing.
        if let Ok((r, w)) = parse_survey_answer(&msg.payload) {
            readers = readers.saturating_add(r);
            writers = writers.saturating_add(w);
        }
    }
    Ok(Stats {
        capacity: chan.capacity,
        buffered,
        readers_waiting: readers,
        writers_waiting: writers,
        reader_ends: r.1,
        writer_ends: w.1,
        poisoned,
        retired: (w.0 > 0 && w.1 == 0) || (r.0 > 0 && r.1 == 0),
    })
}
