//! `Chan`: one networked channel as seen from one connection, and its shared state on the
//! server (capacity, poison, end counts).
//!
//! Server-side state, in the KV bucket `FERROCSP` (history 1, file storage; `FERROCSP-<ns>`
//! in namespace `<ns>`, whose subjects start `ferrocsp-<ns>.` and streams `FERROCSP-<ns>_`):
//! - `<name>.cap`: the capacity, written once with `create` (first opener wins; every other
//!   opener must agree).
//! - `<name>.poison`: present once the channel is poisoned (never removed).
//! - `<name>.w`, `<name>.r`: the counts of writer / reader ends: how many were made, how many
//!   travel, and how many each live connection holds (`counts.rs`), updated with
//!   compare-and-set on the entry's revision. All ends of a kind retired =
//!   `made > 0 && alive == 0`.
//! - `<name>.l.<holder>`: the lease of connection `<holder>` on the ends it holds; a holder
//!   whose lease stops being refreshed is dead and its ends are dropped (`lease.rs`,
//!   `reaper.rs`).
//!
//! - `<name>.t.<ticket>`: an end of kind `r`/`w` travelling in a message (`Chan::ticket_now`):
//!   issued by the sender with the count it makes on the receiver's behalf, claimed once by
//!   the receiver (compare-and-set, then purged), so a message that names an end without a
//!   live ticket (forged, or a copy) makes none. A ticket's key is purged from the bucket's
//!   stream, leaving no marker.
//!
//! Broadcast subject `ferrocsp.<name>.ctl`: after changing any of those keys a participant
//! publishes there; every `Chan` subscribes and re-reads the keys, so a poison or retire
//! reaches blocked participants on every machine at once. The KV keys are the truth (a late
//! joiner reads them at open); the subject is only the wake-up. A message there with a reply
//! inbox is a `stats()` survey instead (`stats.rs`): every `Chan` answers with its own counts.
//!
//! Invariants:
//! - `status` only moves forward (poisoned, writers retired and readers retired are never
//!   undone), so a waiter that saw it set may fail without re-checking.
//! - The control and ready subscriptions are registered (flushed) before the keys are first
//!   read, so no change between the read and the subscription is missed.
//! - After a notice the keys are read again until a read succeeds (`refresh_after_notice`):
//!   a notice is sent once, so a failed read must not end the wake-up. So they are after the
//!   client reconnects: notices published while the connection was down never arrive (core
//!   NATS delivers at most once).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer::PullConsumer};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use crate::busy::{Busy, STATS_ASK};
use crate::counts::{Counts, EndCount};
use crate::error::{protocol, NetError};
use crate::lease::Lease;
use crate::link::{capacity_conflict, Inner};
use crate::lock::lock;
use crate::pulls::Pulls;
use crate::recent::Recent;
use crate::wire::{check_ticket, parse_capacity};

/// What every participant agrees on about a channel's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Poisoned by someone, anywhere.
    pub poisoned: bool,
    /// Every writer end made so far is retired (and at least one was made).
    pub writers_retired: bool,
    /// Every reader end made so far is retired (and at least one was made).
    pub readers_retired: bool,
}

/// Which kind of end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// A reader end.
    Reader,
    /// A writer end.
    Writer,
}

/// What `Chan::ticket_now` does with a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketOp {
    /// The sender records it (before the message leaves).
    Issue,
    /// The receiver takes it (once; false if it is not live).
    Claim,
    /// The sender withdraws it (the message was not sent).
    Void,
}

/// What a waiting rendezvous read is handed (see `rendezvous.rs`).
#[derive(Debug)]
pub(crate) enum Hand {
    /// The value: the read completes with it.
    Value(Bytes),
    /// The read was held for a selecting writer that did not commit: it waits again (or ends
    /// with its own timeout/cancellation if that came meanwhile).
    Back,
}

/// Who a hold (a reader reserved for one selecting writer) belongs to.
pub(crate) enum Holder {
    /// A plain read of this process, taken out of `pending`.
    Read(oneshot::Sender<Hand>),
    /// A selecting reader (Alt) of this process that already chose this channel: it waits for
    /// the value on the receiver (taken by `alt_take`). The sender is gone once the value was
    /// sent; the entry stays until `alt_take` took the receiver (so the value cannot be
    /// dropped with it).
    Alt(Option<oneshot::Sender<Bytes>>, Option<oneshot::Receiver<Bytes>>),
}

/// A reader reserved for one selecting writer until it commits (sends the value) or releases.
pub(crate) struct Hold {
    pub(crate) holder: Holder,
    pub(crate) since: std::time::Instant,
    /// Reserved for a value whose claim is in flight (`claim.rs`): it neither expires nor is
    /// released by anyone but the claim's outcome.
    pub(crate) claiming: bool,
}

/// Reads waiting in this process for a rendezvous value (see `rendezvous.rs`).
#[derive(Default)]
pub(crate) struct Reads {
    pub(crate) pending: VecDeque<(u64, oneshot::Sender<Hand>)>,
    pub(crate) next: u64,
    /// Readers reserved for selecting writers, by hold id (answered in a claim's reply).
    pub(crate) holds: HashMap<u64, Hold>,
    /// Alt selections of this process waiting with an Output guard on this channel.
    pub(crate) out_demand: usize,
    /// Output Alts the pump won that have not withdrawn their demand yet (they are committing,
    /// not waiting): the pump serves `out_demand - out_won` Alts. Lowered by every withdrawal,
    /// so it never exceeds the winners still counted in `out_demand` and the pump never
    /// under-serves a waiting Alt (it may at worst make one try too many).
    pub(crate) out_won: usize,
    /// Whether the output pump (claims for those Alts) is running.
    pub(crate) out_pump_running: bool,
    /// Holds won for Output Alts of this process and not yet used: `(direct subject, hold)`.
    /// Pushed before the pump tries to win an Alt, so a winner always finds one; holds are
    /// interchangeable (each is one reserved reader), so a winner takes any.
    pub(crate) won: VecDeque<(String, u64)>,
    /// Whether the queue subscription task is running.
    pub(crate) running: bool,
    /// Whether its subscription is registered with the server (requests reach this process).
    pub(crate) subscribed: bool,
    /// Alt selections of this process currently waiting with this channel as an input guard
    /// (values are then offered to them through `Chan::offer`).
    pub(crate) alt_demand: usize,
    /// Whether the buffered Alt pump task is running.
    pub(crate) pump_running: bool,
    /// A writer was turned away (`-`) since the last "ready" notice: the next read to start
    /// waiting must publish one (otherwise nobody is waiting for it, and it is skipped).
    pub(crate) turned_away: bool,
}

/// Where a value goes when no plain read waits but an Alt does: the bindings hand it to a
/// local engine channel on which the Alt waits as a reader (`try_write`: it succeeds only if
/// the Alt is waiting and wins, so the Alt's one-CAS decision stays the only decision).
/// Output guards work the same way from the other side: the Alt waits as a writer on a
/// second local channel, and `take_output` (`try_read`) wins it.
pub trait Offer: Send + Sync {
    /// Gives `v` to a waiting local selection, or hands it back if none takes it now.
    fn offer(&self, v: Bytes) -> Result<(), Bytes>;
    /// The channel's status changed (poisoned, all writers retired): mirror it locally.
    fn status(&self, s: Status);
    /// A selecting writer elsewhere claims a reader: commits a waiting input Alt of this
    /// process to this channel before the value exists (it then waits for hold `hold`'s value,
    /// or selects again if the writer releases it). False if no Alt took it now.
    fn hold(&self, _hold: u64) -> bool {
        false
    }
    /// A buffered channel is at end-of-stream (all writers retired, nothing left): retire the
    /// local input guard.
    fn drained(&self) {}
    /// A reader elsewhere is held for us: wins a waiting Output Alt of this process (its one
    /// CAS). False if none won.
    fn take_output(&self) -> bool {
        false
    }
}

/// A networked channel in this connection.
pub struct Chan {
    pub(crate) conn: Arc<Inner>,
    /// The channel's name (shared by every participant).
    pub name: String,
    /// 0: rendezvous; otherwise the number of values buffered on the server.
    pub capacity: usize,
    pub(crate) subj_w: String,
    pub(crate) subj_ready: String,
    pub(crate) subj_ctl: String,
    /// Prefix of the buffered channel's value subjects (`ferrocsp.N.b`; each value on
    /// `ferrocsp.N.b.<id>`).
    pub(crate) subj_b: String,
    /// This connection's own subject for commits/releases of holds (`ferrocsp.N.d.<prefix>`).
    pub(crate) subj_direct: String,
    /// Signalled when an Output Alt of this process starts waiting (wakes the output pump).
    pub(crate) out_wake: tokio::sync::Notify,
    pub(crate) status: watch::Sender<Status>,
    /// Bumped on every "a reader is waiting" / "a slot was freed" notice.
    pub(crate) ready: watch::Sender<u64>,
    pub(crate) reads: Mutex<Reads>,
    /// Signalled when a read starts waiting (ends a request's grace period early).
    pub(crate) read_arrived: tokio::sync::Notify,
    pub(crate) recent: Mutex<Recent>,
    pub(crate) consumer: Option<PullConsumer>,
    /// The buffered channel's stream (deletes given-back placeholders, `reserve.rs`).
    pub(crate) stream: Option<jetstream::stream::Stream>,
    /// Buffered reads' pull requests and their shared reply inbox (`buffered.rs`), made on
    /// first read.
    pub(crate) pulls: tokio::sync::OnceCell<Arc<Pulls>>,
    pub(crate) offer: Mutex<Option<Arc<dyn Offer>>>,
    /// Reads and writes of this process in progress (`stats()`'s survey, `stats.rs`).
    pub(crate) busy: Busy,
    /// This connection's lease on its ends of the channel, and the reaper's view of others'.
    pub(crate) lease: Lease,
    tasks: Vec<AbortHandle>,
}

impl std::fmt::Debug for Chan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chan").field("name", &self.name).field("capacity", &self.capacity).finish()
    }
}

impl Drop for Chan {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Chan {
    /// This process's answer to a survey: `"<readers> <writers>"` waiting here. A rendezvous
    /// reader counts only once the process's subscription is registered with the server, so a
    /// writer that starts after `stats()` counted it reaches it (`write_nowait` included): the
    /// subscription went to the server before this answer, on the same connection.
    ///
    /// A selection's demand stops counting once its guard can no longer fire (poisoned, or the
    /// other side all retired: the local engine withdrew the guard, although the selection still
    /// waits on its other guards); a buffered input guard still counts until poison, since its
    /// values may drain after the writers retired.
    pub(crate) fn survey_answer(&self) -> Bytes {
        let s = self.status();
        let in_live = !(s.poisoned || (s.writers_retired && self.capacity == 0));
        let out_live = !s.poisoned && !s.readers_retired;
        let (alt_in, alt_out, reachable) = {
            let r = lock(&self.reads);
            let alt_in = if in_live { r.alt_demand } else { 0 };
            let alt_out = if out_live { r.out_demand } else { 0 };
            (alt_in, alt_out, self.capacity > 0 || r.subscribed)
        };
        let (reads, writes) = self.busy.now();
        let readers = if reachable { reads + alt_in } else { 0 };
        let writers = writes + alt_out;
        Bytes::from(format!("{readers} {writers}"))
    }

    pub(crate) async fn open(
        conn: Arc<Inner>,
        rt: tokio::runtime::Handle,
        name: String,
        capacity: usize,
    ) -> Result<Arc<Chan>, NetError> {
        let kv = conn.kv().await?;
        let cap_key = format!("{name}.cap");
        if kv.create(&cap_key, Bytes::from(capacity.to_string())).await.is_err() {
            let have = kv
                .get(&cap_key)
                .await
                .map_err(|e| conn.transport("read channel capacity", e))?
                .ok_or_else(|| protocol("read channel capacity", "missing"))
                .and_then(|v| Ok(parse_capacity(&v)?))?;
            if have != capacity {
                return Err(capacity_conflict(&name, have, capacity));
            }
        }
        let base = format!("{}.{name}", conn.names.root);
        let client = conn.client.clone();
        let mut ctl = client
            .subscribe(format!("{base}.ctl"))
            .await
            .map_err(|e| conn.transport("subscribe", e))?;
        let mut ready_sub = client
            .subscribe(format!("{base}.ready"))
            .await
            .map_err(|e| conn.transport("subscribe", e))?;
        client.flush().await.map_err(|e| conn.transport("flush", e))?;

        let consumer = if capacity > 0 {
            let stream_name = format!("{}{name}", conn.names.stream_prefix);
            let cfg = jetstream::stream::Config {
                name: stream_name.clone(),
                // One subject per value (`.b.<id>`), one message per subject: an Output
                // guard's placeholder is then replaced by its value in place (`reserve.rs`).
                subjects: vec![format!("{base}.b.*")],
                max_messages_per_subject: 1,
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                max_messages: i64::try_from(capacity).unwrap_or(i64::MAX),
                discard: jetstream::stream::DiscardPolicy::New,
                storage: jetstream::stream::StorageType::File,
                duplicate_window: std::time::Duration::from_secs(120),
                ..Default::default()
            };
            let stream = conn
                .js
                .get_or_create_stream(cfg)
                .await
                .map_err(|e| conn.transport("create the channel's stream", e))?;
            let have = &stream.cached_info().config;
            if have.subjects != [format!("{base}.b.*")] || have.max_messages_per_subject != 1 {
                return Err(protocol(
                    "open the channel's stream",
                    format!(
                        "stream {stream_name} has another layout (made by an older ferrocsp?): \
                         delete it to use channel '{name}'"
                    ),
                ));
            }
            let ccfg = jetstream::consumer::pull::Config {
                durable_name: Some("readers".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: conn.opts.ack_timeout,
                max_ack_pending: -1,
                ..Default::default()
            };
            let consumer: PullConsumer = stream
                .get_or_create_consumer("readers", ccfg)
                .await
                .map_err(|e| conn.transport("create the channel's consumer", e))?;
            Some((stream, consumer))
        } else {
            None
        };
        let (stream, consumer) = consumer.unzip();

        let (status, _) = watch::channel(Status::default());
        let (ready, _) = watch::channel(0u64);
        let mut chan = Chan {
            conn: Arc::clone(&conn),
            name: name.clone(),
            capacity,
            subj_w: format!("{base}.w"),
            subj_ready: format!("{base}.ready"),
            subj_ctl: format!("{base}.ctl"),
            subj_b: format!("{base}.b"),
            subj_direct: format!("{base}.d.{}", conn.id_prefix),
            out_wake: tokio::sync::Notify::new(),
            status,
            ready,
            reads: Mutex::new(Reads::default()),
            read_arrived: tokio::sync::Notify::new(),
            recent: Mutex::new(Recent::default()),
            consumer,
            stream,
            pulls: tokio::sync::OnceCell::new(),
            offer: Mutex::new(None),
            busy: Busy::default(),
            lease: Lease::default(),
            tasks: Vec::new(),
        };
        // Marked seen before the first read of the state: a reconnection after it is news.
        let mut reconnects = conn.reconnects.clone();
        reconnects.borrow_and_update();
        chan.refresh().await?;
        let chan = Arc::new_cyclic(|weak: &std::sync::Weak<Chan>| {
            let w = weak.clone();
            let ctl_task = rt.spawn(async move {
                let mut watching = true;
                loop {
                    tokio::select! {
                        msg = ctl.next() => {
                            let Some(msg) = msg else { return };
                            let Some(c) = w.upgrade() else { return };
                            if let (Some(reply), true) = (msg.reply, &msg.payload[..] == STATS_ASK) {
                                // A `stats()` survey (`stats.rs`): answer with this process's
                                // counts.
                                let _ = c.conn.client.publish(reply, c.survey_answer()).await;
                                continue;
                            }
                            drop(c);
                            refresh_after_notice(&w).await;
                        }
                        r = reconnects.changed(), if watching => {
                            // No sender: the connection is closing; notices still count.
                            watching = r.is_ok();
                            if watching {
                                refresh_after_notice(&w).await;
                            }
                        }
                    }
                }
            });
            let w = weak.clone();
            let ready_task = rt.spawn(async move {
                while ready_sub.next().await.is_some() {
                    let Some(c) = w.upgrade() else { return };
                    c.ready.send_modify(|g| *g = g.wrapping_add(1));
                }
            });
            chan.tasks.push(ctl_task.abort_handle());
            chan.tasks.push(ready_task.abort_handle());
            chan
        });
        Ok(chan)
    }

    /// The shared state in the KV bucket: (poisoned, writers' and readers' `(made, alive)`;
    /// alive: in transit or held by a connection whose lease was not found dead yet).
    pub(crate) async fn read_state(&self) -> Result<(bool, (u64, u64), (u64, u64)), NetError> {
        let kv = self.conn.kv().await?;
        let get = |k: String| {
            let kv = kv.clone();
            async move { kv.get(k).await.map_err(|e| self.conn.transport("read channel state", e)) }
        };
        let poisoned = get(format!("{}.poison", self.name)).await?.is_some();
        let counts = |v: Option<Bytes>| {
            v.map_or((0, 0), |v| {
                let c = Counts::parse(&v);
                (c.made, c.alive())
            })
        };
        let w = counts(get(format!("{}.w", self.name)).await?);
        let r = counts(get(format!("{}.r", self.name)).await?);
        Ok((poisoned, w, r))
    }

    /// Re-reads the shared state from the KV bucket.
    pub(crate) async fn refresh(&self) -> Result<(), NetError> {
        let (poisoned, w, r) = self.read_state().await?;
        let new = Status {
            poisoned,
            writers_retired: w.0 > 0 && w.1 == 0,
            readers_retired: r.0 > 0 && r.1 == 0,
        };
        let changed = self.status.send_if_modified(|s| {
            // Only forward: never undo a state another refresh already saw.
            let merged = Status {
                poisoned: s.poisoned || new.poisoned,
                writers_retired: s.writers_retired || new.writers_retired,
                readers_retired: s.readers_retired || new.readers_retired,
            };
            let changed = merged != *s;
            *s = merged;
            changed
        });
        if changed {
            self.status_to_offer();
        }
        Ok(())
    }

    fn status_to_offer(&self) {
        let o = lock(&self.offer).clone();
        if let Some(o) = o {
            o.status(self.status());
        }
    }

    /// The subject of a buffered value (or Output placeholder) with id `id`.
    pub(crate) fn value_subject(&self, id: &str) -> String {
        format!("{}.{id}", self.subj_b)
    }

    /// The channel's status as last seen.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    pub(crate) async fn notify_ctl(&self, what: &'static str) -> Result<(), NetError> {
        let c = &self.conn.client;
        c.publish(self.subj_ctl.clone(), Bytes::from_static(what.as_bytes()))
            .await
            .map_err(|e| self.conn.transport("publish", e))?;
        c.flush().await.map_err(|e| self.conn.transport("flush", e))
    }

    /// Tells every participant (this one included) that this one changed the channel's state
    /// on the server: its own status first, then the notice on `ctl`. The notice goes out even
    /// if the read of the state fails: the change is made, and a notice withheld is one nobody
    /// else ever gets (this participant learns the state from its own notice, through
    /// `refresh_after_notice`).
    pub(crate) async fn announce(&self, what: &'static str) -> Result<(), NetError> {
        let _ = self.refresh().await;
        self.notify_ctl(what).await
    }

    /// Poisons the channel for every participant. Buffered values become unreachable.
    pub(crate) async fn poison_now(&self) -> Result<(), NetError> {
        let kv = self.conn.kv().await?;
        kv.put(format!("{}.poison", self.name), Bytes::from_static(b"1"))
            .await
            .map_err(|e| self.conn.transport("poison", e))?;
        if self.status.send_if_modified(|s| !std::mem::replace(&mut s.poisoned, true)) {
            self.status_to_offer();
        }
        // The buffered values stay in the stream, unreachable (every read fails from now on):
        // purging would free slots that a writer blocked on a full buffer could fill before it
        // learns of the poison, completing a write on a poisoned channel.
        self.notify_ctl("poison").await
    }

    /// Counts what happens to an end (`counts.rs`) on the server; when the last end of its
    /// kind is gone, every participant is told. An end this connection is to hold is leased
    /// first (`lease.rs`).
    pub(crate) async fn count_end_now(&self, kind: EndKind, how: EndCount) -> Result<(), NetError> {
        if matches!(how, EndCount::Made | EndCount::Received) {
            self.lease.hold(&self.conn, &self.name).await?;
        }
        let kv = self.conn.kv().await?;
        let key = match kind {
            EndKind::Reader => format!("{}.r", self.name),
            EndKind::Writer => format!("{}.w", self.name),
        };
        let now_zero = loop {
            let entry =
                kv.entry(key.clone()).await.map_err(|e| self.conn.transport("count ends", e))?;
            // A deleted key (a marker, not a count) counts from zero, as `kv.get` reads it.
            let mut c = match &entry {
                Some(e) if e.operation == jetstream::kv::Operation::Put => Counts::parse(&e.value),
                _ => Counts::default(),
            };
            c.apply(how, &self.conn.id_prefix);
            let v = c.encode();
            let ok = match &entry {
                Some(e) => kv.update(&key, v, e.revision).await.is_ok(),
                None => kv.create(&key, v).await.is_ok(),
            };
            if ok {
                break c.all_retired();
            }
            // Another participant changed the count meanwhile: read it again.
        };
        if now_zero {
            // All readers retired: the buffer is dropped in effect (writers fail from now on);
            // it is not purged, for the reason given in `poison_now`.
            self.announce("ends").await?;
        }
        Ok(())
    }

    /// Issues, claims or voids ticket `ticket` for an end of `kind` travelling in a message
    /// (see the module doc). Claim: true iff this call took a live ticket of that kind; a
    /// ticket that is missing, of another kind or already claimed gives false.
    pub(crate) async fn ticket_now(
        &self,
        kind: EndKind,
        ticket: &str,
        op: TicketOp,
    ) -> Result<bool, NetError> {
        check_ticket(ticket).map_err(|e| NetError::Invalid(e.to_string()))?;
        let kv = self.conn.kv().await?;
        let key = format!("{}.t.{ticket}", self.name);
        let k = Bytes::from_static(if kind == EndKind::Reader { b"r" } else { b"w" });
        match op {
            TicketOp::Issue => {
                kv.create(&key, k).await.map_err(|e| self.conn.transport("issue a ticket", e))?;
                Ok(true)
            }
            TicketOp::Claim => {
                let entry =
                    kv.entry(&key).await.map_err(|e| self.conn.transport("claim a ticket", e))?;
                let Some(entry) = entry else { return Ok(false) };
                if entry.operation != jetstream::kv::Operation::Put || entry.value != k {
                    return Ok(false);
                }
                // Compare-and-set: of two claims of one ticket (a message and its copy) one wins.
                if kv.update(&key, Bytes::from_static(b"-"), entry.revision).await.is_err() {
                    return Ok(false);
                }
                self.conn.purge_key(&kv, &key).await;
                Ok(true)
            }
            TicketOp::Void => {
                self.conn.purge_key(&kv, &key).await;
                Ok(true)
            }
        }
    }

    /// Offers `v` to a waiting Alt of this process, if any.
    pub(crate) fn offer(&self, v: Bytes) -> Result<(), Bytes> {
        let o = lock(&self.offer).clone();
        match o {
            Some(o) => o.offer(v),
            None => Err(v),
        }
    }

    /// Tells the Alt side that this buffered channel reached end-of-stream.
    pub(crate) fn offer_drained(&self) {
        let o = lock(&self.offer).clone();
        if let Some(o) = o {
            o.drained();
        }
    }

    /// Commits a waiting input Alt of this process to hold `hold` (see [`Offer::hold`]).
    pub(crate) fn offer_hold(&self, hold: u64) -> bool {
        let o = lock(&self.offer).clone();
        o.is_some_and(|o| o.hold(hold))
    }

    /// Wins a waiting Output Alt of this process for a reader held elsewhere.
    pub(crate) fn take_output(&self) -> bool {
        let o = lock(&self.offer).clone();
        o.is_some_and(|o| o.take_output())
    }

    /// Waits until the status satisfies `pred` (or forever if it never does).
    pub(crate) async fn wait_status(
        rx: &mut watch::Receiver<Status>,
        pred: impl Fn(&Status) -> bool,
    ) {
        if rx.wait_for(|s| pred(s)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Reads the channel's keys again after a notice on `ctl`, until a read succeeds or the
/// channel is gone. The notice is the only wake-up (a poison or a retirement is announced
/// once): a read that failed (its reply lost, or slower than `ack_timeout` on a loaded server)
/// must not leave the old status for good, or a blocked participant never learns of the
/// change (`tests/test_net_state_notices.py`). Notices that arrive meanwhile wait in the
/// subscription; the read that succeeds covers them.
async fn refresh_after_notice(w: &std::sync::Weak<Chan>) {
    let mut pause = REFRESH_RETRY_FIRST;
    loop {
        let Some(c) = w.upgrade() else { return };
        if c.refresh().await.is_ok() {
            return;
        }
        drop(c); // not held while it waits: a closed channel ends the retries
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(REFRESH_RETRY_MAX);
    }
}

/// First pause before a failed state read is retried, doubled up to [`REFRESH_RETRY_MAX`].
const REFRESH_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(20);
/// Longest pause between retries of a failed state read.
const REFRESH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(1);
