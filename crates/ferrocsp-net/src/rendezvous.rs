//! Rendezvous (capacity 0) over NATS request/reply.
//!
//! Protocol, channel `N`:
//! - A writer sends its value as a request on `ferrocsp.N.w` with header `Csp-Id` (unique per
//!   value, kept across re-sends) and waits for the reply:
//!   `+` taken (the write completes), `-` the chosen reader has no read waiting any more,
//!   `P` poisoned. "No responders" means no reader is waiting anywhere yet: not a loss.
//!   After `-` or no responders it waits for a notice on `ferrocsp.N.ready` (a reader began
//!   waiting), with a backoff from 1 ms to 100 ms as a safety net, and sends again.
//!   No reply within `ack_timeout` (a reader died after receiving, before replying): it sends
//!   the same value again with the same id.
//! - A process subscribes to `ferrocsp.N.w` in queue group `r` only while it has reads
//!   waiting (plus a short linger), so NATS gives each request to one process that wants a
//!   value; it publishes `ferrocsp.N.ready` when it subscribes, and when a read starts
//!   waiting after it turned a writer away.
//! - A request is handed to the oldest waiting read of the process (waiting up to `GRACE`
//!   for one if none is there: a reader in a loop is about to ask again), else offered to a
//!   waiting Alt of the process (`Offer`), then answered `+`.
//!   An id seen recently is answered `+` again without delivering (its first reply was lost).
//! - Output guards (an Alt of this process offering a value): the *output pump*
//!   (`out_pump.rs`) sends a claim (`Csp-Claim`, no value) on `ferrocsp.N.w`; the reader
//!   process holds its oldest waiting read, or commits a waiting input Alt with a hold marker
//!   (its one CAS), and answers `R <its direct subject ferrocsp.N.d.<prefix>> <hold>` (or
//!   `-`). The pump queues the hold in `reads.won`, then tries to win a waiting Output Alt
//!   (`Offer::take_output`, the writer's one CAS); the winner takes a queued hold and sends its
//!   value there (`Csp-Hold`); with no winner, one queued hold is released (`Csp-Release`).
//!   Holds expire after `ack_timeout`. docs/design.md has the state machine.
//!
//! Invariants:
//! - A value is taken by at most one read: the hand-off pops the read from `reads.pending`
//!   under its lock, and a read that times out or is cancelled removes itself under the same
//!   lock; if it is no longer there, a value is on its way and it takes it (no loss).
//! - A write completes only after a reader took the value (the `+` reply follows the
//!   hand-off). A write withdrawn by timeout or cancellation has no request in flight (it only
//!   stops between attempts), so it was not delivered, except when a reader died without
//!   answering: then the value was taken by a process that no longer exists.
//! - The queue subscription runs while `reads.running`; the task clears it under the lock
//!   only when no read, input Alt or hold is pending, and drains the subscription so that no
//!   request routed to it before the unsubscribe goes unanswered.
//! - An Output guard's value leaves the process only after its Alt won, and only to a reader
//!   held for it (or, if that reader is gone, as an ordinary write with the same id): a held
//!   read or Alt gets exactly the committed value, or is given back (`Hand::Back`, or a
//!   dropped sender) and waits or selects again.
//! - `reads.won` holds at least one hold per Output Alt that won and has not committed yet
//!   (queued before the win is tried), so a winner never lacks one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, Message, Request};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::chan::{Chan, Hand, Hold, Holder};
use crate::error::NetError;
use crate::lock::lock;
use crate::op::Cancel;
use crate::sleep_until_opt;
use crate::turn::Turn;

const LINGER: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_millis(2);
pub(crate) const HDR_ID: &str = "Csp-Id";
/// A selecting writer's claim of a reader (no value).
const HDR_CLAIM: &str = "Csp-Claim";
/// The hold a committed value is for.
const HDR_RESV: &str = "Csp-Hold";
/// A hold given back by a writer whose Alt chose another guard.
const HDR_RELEASE: &str = "Csp-Release";

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
            Ok(msg) => match msg.payload.first() {
                Some(b'+') => return Ok(()),
                Some(b'P') => return Err(NetError::Poisoned),
                Some(b'-') => {}
                _ => {
                    return Err(NetError::Protocol(format!("unexpected reply on '{}'", chan.name)))
                }
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

pub(crate) async fn read(
    chan: Arc<Chan>,
    deadline: Option<Instant>,
    mut cancel: Cancel,
) -> Result<Bytes, NetError> {
    let mut status = chan.status.subscribe();
    // A read handed back by a writer that held it and did not commit keeps its place.
    let mut front = false;
    loop {
        {
            let s = *status.borrow_and_update();
            if s.poisoned {
                return Err(NetError::Poisoned);
            }
            if s.writers_retired {
                return Err(NetError::Retired);
            }
        }
        let (tx, mut rx) = oneshot::channel();
        let me = {
            let mut r = lock(&chan.reads);
            let me = r.next;
            r.next += 1;
            if std::mem::take(&mut front) {
                r.pending.push_front((me, tx));
            } else {
                r.pending.push_back((me, tx));
            }
            chan.read_arrived.notify_waiters();
            if !r.running {
                r.running = true;
                spawn_serve(Arc::clone(&chan));
            } else if r.pending.len() == 1 && std::mem::take(&mut r.turned_away) {
                let c = chan.conn.client.clone();
                let subj = chan.subj_ready.clone();
                tokio::spawn(async move { c.publish(subj, Bytes::new()).await });
            }
            me
        };
        let why = tokio::select! {
            v = &mut rx => match v {
                Ok(Hand::Value(b)) => return Ok(b),
                Ok(Hand::Back) => { front = true; continue; }
                Err(_) => return Err(NetError::Closed),
            },
            () = sleep_until_opt(deadline) => NetError::Timeout,
            () = cancel.wait() => NetError::Cancelled,
            e = crate::lost(&chan.conn) => e,
            () = Chan::wait_status(&mut status, |s| s.poisoned || s.writers_retired) => {
                if status.borrow().poisoned { NetError::Poisoned } else { NetError::Retired }
            }
        };
        let removed = {
            let mut r = lock(&chan.reads);
            let before = r.pending.len();
            r.pending.retain(|(id, _)| *id != me);
            r.pending.len() != before
        };
        if removed {
            return Err(why);
        }
        // Popped by a hand-off (the value is on its way: it is ours) or held for a selecting
        // writer (its commit or release comes within a round trip, or the hold expires).
        return match rx.await {
            Ok(Hand::Value(b)) => Ok(b),
            Ok(Hand::Back) => Err(why),
            Err(_) => Err(NetError::Closed),
        };
    }
}

/// An Alt of this process starts (`up`) or stops waiting with this channel as a guard.
pub(crate) fn alt_demand(chan: &Arc<Chan>, up: bool) {
    let mut r = lock(&chan.reads);
    if !up {
        r.alt_demand = r.alt_demand.saturating_sub(1);
        return;
    }
    r.alt_demand += 1;
    if !r.running {
        r.running = true;
        spawn_serve(Arc::clone(chan));
    } else if r.alt_demand == 1 && r.pending.is_empty() && std::mem::take(&mut r.turned_away) {
        let c = chan.conn.client.clone();
        let subj = chan.subj_ready.clone();
        tokio::spawn(async move { c.publish(subj, Bytes::new()).await });
    }
}

fn spawn_serve(chan: Arc<Chan>) {
    // Boxed: `serve` spawns itself again, and a recursive future needs a known size.
    let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(serve(chan));
    tokio::spawn(fut);
}

/// The queue subscription of this process on `ferrocsp.N.w` (plus its direct subject for
/// commits and releases of holds), alive while reads, input Alts or holds wait.
async fn serve(chan: Arc<Chan>) {
    let conn = &chan.conn;
    let subs = async {
        let q = conn.client.queue_subscribe(chan.subj_w.clone(), "r".to_owned()).await?;
        let d = conn.client.subscribe(chan.subj_direct.clone()).await?;
        Ok::<_, async_nats::SubscribeError>((q, d))
    };
    let (mut sub, mut direct) = match subs.await {
        Ok(s) => s,
        Err(_) => {
            // Cannot subscribe (connection lost): let the next read try again.
            lock(&chan.reads).running = false;
            return;
        }
    };
    let _ = conn.client.flush().await;
    let _ = conn.client.publish(chan.subj_ready.clone(), Bytes::new()).await;
    let mut closed = false;
    loop {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) => handle(&chan, m).await,
                None => { closed = true; break; }
            },
            m = direct.next() => match m {
                Some(m) => handle(&chan, m).await,
                None => { closed = true; break; }
            },
            () = tokio::time::sleep(LINGER) => {
                expire_holds(&chan);
                let mut r = lock(&chan.reads);
                if r.pending.is_empty() && r.alt_demand == 0 && r.holds.is_empty() {
                    r.running = false;
                    break;
                }
            }
        }
    }
    if closed {
        // The subscription ended under us (connection lost and closed): hand the waiting
        // reads to a fresh subscription after a pause, or let the next read start one. Holds
        // are given back: their commits can no longer reach us.
        release_all(&chan);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut r = lock(&chan.reads);
        r.running = !r.pending.is_empty();
        if r.running {
            spawn_serve(Arc::clone(&chan));
        }
        return;
    }
    // Requests routed here before the server saw the unsubscribe still get an answer (a read
    // that arrived meanwhile found `running` false and started its own subscription).
    let _ = direct.unsubscribe().await;
    if sub.drain().await.is_ok() {
        while let Some(m) = sub.next().await {
            handle(&chan, m).await;
        }
    }
}

/// Hands `value` to the oldest waiting read of this process; gives it back if none waits.
fn to_read(chan: &Chan, mut value: Bytes) -> Option<Bytes> {
    loop {
        let next = lock(&chan.reads).pending.pop_front();
        match next {
            None => return Some(value),
            Some((_, tx)) => match tx.send(Hand::Value(value)) {
                Ok(()) => return None,
                // That read's task is gone (runtime shutting down): try the next one.
                Err(Hand::Value(v)) => value = v,
                Err(Hand::Back) => return None,
            },
        }
    }
}

fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// Gives a held reader back: a plain read waits again, a held Alt selects again. A hold whose
/// value was already sent stays (its Alt is about to take it).
fn release(chan: &Chan, hold: u64) {
    let h = {
        let mut r = lock(&chan.reads);
        match r.holds.get(&hold) {
            Some(Hold { holder: Holder::Alt(None, _), .. }) | None => None,
            Some(_) => r.holds.remove(&hold),
        }
    };
    if let Some(Hold { holder: Holder::Read(tx), .. }) = h {
        let _ = tx.send(Hand::Back);
    }
    // Holder::Alt: dropping its sender tells `alt_take` that nothing comes.
}

/// Delivers a committed value to hold `hold`; gives the value back if there is no such hold
/// (it expired) or its holder is gone.
fn to_hold(chan: &Chan, hold: u64, v: Bytes) -> Option<Bytes> {
    let mut r = lock(&chan.reads);
    let alt = match r.holds.get_mut(&hold) {
        None => return Some(v),
        Some(Hold { holder: Holder::Alt(tx, rx), .. }) => Some((tx.take(), rx.is_none())),
        Some(_) => None,
    };
    match alt {
        Some((tx, taken)) => {
            if taken {
                r.holds.remove(&hold);
            }
            drop(r);
            match tx {
                Some(tx) => tx.send(v).err(),
                None => Some(v),
            }
        }
        None => {
            let Some(Hold { holder: Holder::Read(tx), .. }) = r.holds.remove(&hold) else {
                return Some(v);
            };
            drop(r);
            match tx.send(Hand::Value(v)) {
                Ok(()) | Err(Hand::Back) => None,
                Err(Hand::Value(v)) => Some(v),
            }
        }
    }
}

fn release_all(chan: &Chan) {
    let ids: Vec<u64> = lock(&chan.reads).holds.keys().copied().collect();
    for id in ids {
        release(chan, id);
    }
}

/// Releases holds whose writer neither committed nor released within `ack_timeout` (it died,
/// or lost the server). A value sent to a held Alt that never came for it (interrupted in
/// between) is dropped after four times that.
fn expire_holds(chan: &Chan) {
    let limit = chan.conn.opts.ack_timeout;
    let mut r = lock(&chan.reads);
    r.holds.retain(|_, h| {
        !(matches!(h.holder, Holder::Alt(None, _)) && h.since.elapsed() >= limit * 4)
    });
    let old: Vec<u64> =
        r.holds.iter().filter(|(_, h)| h.since.elapsed() >= limit).map(|(id, _)| *id).collect();
    drop(r);
    for id in old {
        release(chan, id);
    }
}

/// Waits up to `GRACE` for a read to start waiting (a reader in a loop is about to ask
/// again); true if one is there.
async fn grace(chan: &Chan) -> bool {
    let arrived = chan.read_arrived.notified();
    tokio::pin!(arrived);
    arrived.as_mut().enable();
    if !lock(&chan.reads).pending.is_empty() {
        return true;
    }
    let _ = tokio::time::timeout(GRACE, arrived).await;
    !lock(&chan.reads).pending.is_empty()
}

/// A selecting writer claims a reader of this process: hold the oldest waiting read, else
/// commit a waiting input Alt to this channel; answer `R <direct subject> <hold>` or `-`.
async fn claim(chan: &Arc<Chan>, reply: async_nats::Subject) {
    let client = &chan.conn.client;
    let mut held = None;
    for attempt in 0..2 {
        {
            let mut r = lock(&chan.reads);
            if let Some((_, tx)) = r.pending.pop_front() {
                let id = r.next;
                r.next += 1;
                r.holds.insert(id, Hold { holder: Holder::Read(tx), since: Instant::now() });
                held = Some(id);
            } else if r.alt_demand > 0 {
                let id = r.next;
                r.next += 1;
                let (tx, rx) = oneshot::channel();
                // Registered before the Alt can wake and ask for it.
                r.holds.insert(
                    id,
                    Hold { holder: Holder::Alt(Some(tx), Some(rx)), since: Instant::now() },
                );
                drop(r);
                if chan.offer_hold(id) {
                    held = Some(id);
                } else {
                    lock(&chan.reads).holds.remove(&id);
                }
            }
        }
        if held.is_some() || attempt == 1 || !grace(chan).await {
            break;
        }
    }
    let answer = match held {
        Some(id) => Bytes::from(format!("R {} {id}", chan.subj_direct)),
        None => {
            lock(&chan.reads).turned_away = true;
            Bytes::from_static(b"-")
        }
    };
    if client.publish(reply, answer).await.is_err() {
        if let Some(id) = held {
            release(chan, id);
        }
    }
}

async fn handle(chan: &Arc<Chan>, m: Message) {
    if let Some(hold) = header(&m, HDR_RELEASE).and_then(|v| v.parse::<u64>().ok()) {
        release(chan, hold);
        return;
    }
    let Some(reply) = m.reply.clone() else { return };
    let id = header(&m, HDR_ID).map(str::to_owned);
    let client = &chan.conn.client;
    let resv = header(&m, HDR_RESV).and_then(|v| v.parse::<u64>().ok());
    if chan.status().poisoned {
        if let Some(hold) = resv {
            release(chan, hold);
        }
        let _ = client.publish(reply, Bytes::from_static(b"P")).await;
        return;
    }
    if header(&m, HDR_CLAIM).is_some() {
        claim(chan, reply).await;
        return;
    }
    if let Some(id) = &id {
        if lock(&chan.recent).contains(id) {
            let _ = client.publish(reply, Bytes::from_static(b"+")).await;
            return;
        }
    }
    // Some(value) while nobody took it.
    let mut left = match resv {
        // The commit of a selecting writer: to the reader held for it. No hold (it expired)
        // or its holder gave up: an ordinary write from here on.
        Some(hold) => to_hold(chan, hold, m.payload),
        None => Some(m.payload),
    };
    if let Some(v) = left.take() {
        left = to_read(chan, v);
    }
    if let Some(value) = left.take() {
        let alt = lock(&chan.reads).alt_demand > 0;
        left = if alt {
            chan.offer(value).err()
        } else {
            // A reader looping over the channel (`for v in ch`) is about to wait again: give
            // it a moment rather than turning the writer away (which costs the writer a
            // ready notice and a re-send). Bounded, so a value never waits on a process that
            // stopped reading.
            match to_read(chan, value) {
                None => None,
                Some(v) => {
                    grace(chan).await;
                    to_read(chan, v)
                }
            }
        };
    }
    let delivered = left.is_none();
    if !delivered {
        lock(&chan.reads).turned_away = true;
        let _ = client.publish(reply, Bytes::from_static(b"-")).await;
        return;
    }
    if let Some(id) = id {
        lock(&chan.recent).insert(id);
    }
    if chan.conn.opts.hold_acks {
        return;
    }
    let _ = client.publish(reply, Bytes::from_static(b"+")).await;
}

/// A held input Alt of this process takes its value: `Some` once the writer commits, `None`
/// if it released the hold (or it expired): the Alt then selects again.
pub(crate) async fn alt_take(
    chan: Arc<Chan>,
    hold: u64,
    mut cancel: Cancel,
) -> Result<Option<Bytes>, NetError> {
    let rx = {
        let mut r = lock(&chan.reads);
        let (rx, sent) = match r.holds.get_mut(&hold) {
            Some(Hold { holder: Holder::Alt(tx, rx), .. }) => (rx.take(), tx.is_none()),
            _ => (None, false),
        };
        if sent {
            // The value is already in the receiver: the entry has done its work.
            r.holds.remove(&hold);
        }
        rx
    };
    let Some(mut rx) = rx else { return Ok(None) };
    tokio::select! {
        v = &mut rx => Ok(v.ok()),
        () = cancel.wait() => {
            // A value sent before the close is ours; after it the writer's commit fails over
            // to an ordinary write (nothing is lost).
            rx.close();
            match rx.try_recv() {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(NetError::Cancelled),
            }
        }
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
        Ok(msg) if msg.payload.first() == Some(&b'R') => {
            let text = std::str::from_utf8(&msg.payload).unwrap_or("");
            let mut parts = text.split(' ').skip(1);
            let subj = parts.next().unwrap_or("").to_owned();
            let hold = parts.next().and_then(|h| h.parse::<u64>().ok());
            match hold.filter(|_| !subj.is_empty()) {
                Some(hold) => Claimed::Hold((subj, hold)),
                None => Claimed::Wait,
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
            Ok(msg) => match msg.payload.first() {
                Some(b'+') => return Ok(()),
                Some(b'P') => return Err(NetError::Poisoned),
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
