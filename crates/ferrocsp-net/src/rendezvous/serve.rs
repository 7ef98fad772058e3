//! The queue subscription of a reading process: it answers writers' requests, claims,
//! commits and releases, handing values to the process's waiting reads and input Alts.
//!
//! Invariants:
//! - It runs while `reads.running`; it clears that under the lock only when no read, input Alt
//!   or hold is pending, and drains the subscription so that no request routed to it before
//!   the unsubscribe goes unanswered.
//! - A hand-off pops the read from `reads.pending` under its lock (or commits an Alt to a hold)
//!   and hands the value on only after it won the value's claim (`claim.rs`), so one value
//!   goes to one read in the whole channel; a hold reserved for a claim (`Hold::claiming`)
//!   is given its value or back only by the claim's outcome; a held read or Alt gets exactly the committed value, or is given back and waits or
//!   selects again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Message;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::wire::{HDR_CLAIM, HDR_ID, HDR_RELEASE, HDR_RESV};
use crate::chan::{Chan, Hand, Hold, Holder};
use crate::lock::lock;
use crate::wire::{check_id, parse_hold};

const LINGER: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_millis(2);

pub(super) fn spawn_serve(chan: Arc<Chan>) {
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
    // From now on a request reaches this process (`stats.rs` counts its reads only now).
    lock(&chan.reads).subscribed = true;
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
                    r.subscribed = false;
                    break;
                }
            }
        }
    }
    if closed {
        // The subscription ended under us (connection lost and closed): hand the waiting
        // reads to a fresh subscription after a pause, or let the next read start one. Holds
        // are given back: their commits can no longer reach us.
        lock(&chan.reads).subscribed = false;
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
/// value was already sent stays (its Alt is about to take it), and so does one whose value's
/// claim is in flight (`Hold::claiming`: `settle` gives it its value or back).
fn release(chan: &Chan, hold: u64) {
    give_back(chan, hold, false);
}

/// `release`, also of a hold whose claim is in flight when `claimed` (the claim's own outcome).
pub(crate) fn give_back(chan: &Chan, hold: u64, claimed: bool) {
    let h = {
        let mut r = lock(&chan.reads);
        match r.holds.get(&hold) {
            Some(Hold { holder: Holder::Alt(None, _), .. }) | None => None,
            Some(h) if h.claiming && !claimed => None,
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
pub(crate) fn to_hold(chan: &Chan, hold: u64, v: Bytes) -> Option<Bytes> {
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
    let old: Vec<u64> = r
        .holds
        .iter()
        .filter(|(_, h)| !h.claiming && h.since.elapsed() >= limit)
        .map(|(id, _)| *id)
        .collect();
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

/// Reserves a receiver of this process for one value: holds the oldest waiting read (taken
/// out of the queue, so no other value reaches it), else commits a waiting input Alt to this
/// channel (its one CAS: it then waits for the hold's value), waiting up to `GRACE` for a read
/// if neither is there. `claiming`: the hold is for a value whose claim is about to be made
/// (it does not expire, and only `settle` gives it back).
async fn hold_reader(chan: &Arc<Chan>, claiming: bool) -> Option<u64> {
    for attempt in 0..2 {
        {
            let mut r = lock(&chan.reads);
            if let Some((_, tx)) = r.pending.pop_front() {
                let id = r.next;
                r.next += 1;
                let since = Instant::now();
                r.holds.insert(id, Hold { holder: Holder::Read(tx), since, claiming });
                return Some(id);
            }
            if r.alt_demand > 0 {
                drop(r);
                if let Some(id) = hold_alt(chan, claiming) {
                    return Some(id);
                }
            }
        }
        if attempt == 1 || !grace(chan).await {
            break;
        }
    }
    None
}

/// Commits a waiting input Alt of this process to a new hold (see `hold_reader`): the hold,
/// or `None` if no Alt took it now.
pub(crate) fn hold_alt(chan: &Chan, claiming: bool) -> Option<u64> {
    let id = {
        let mut r = lock(&chan.reads);
        let id = r.next;
        r.next += 1;
        let (tx, rx) = oneshot::channel();
        // Registered before the Alt can wake and ask for it.
        let since = Instant::now();
        r.holds.insert(id, Hold { holder: Holder::Alt(Some(tx), Some(rx)), since, claiming });
        id
    };
    if chan.offer_hold(id) {
        Some(id)
    } else {
        lock(&chan.reads).holds.remove(&id);
        None
    }
}

/// A selecting writer claims a reader of this process: hold the oldest waiting read, else
/// commit a waiting input Alt to this channel; answer `R <direct subject> <hold>` or `-`.
async fn claim(chan: &Arc<Chan>, reply: async_nats::Subject) {
    let client = &chan.conn.client;
    let held = hold_reader(chan, false).await;
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
    if let Some(v) = header(&m, HDR_RELEASE) {
        if let Ok(hold) = parse_hold(v) {
            release(chan, hold);
        }
        return;
    }
    let Some(reply) = m.reply.clone() else { return };
    // A malformed id or hold is dropped unanswered (docs/wire.md): no conforming writer sends
    // one, and an id is remembered (`Recent`) only once it is known to be a short token.
    let id = header(&m, HDR_ID).map(str::to_owned);
    if id.as_deref().is_some_and(|id| check_id(id).is_err()) {
        return;
    }
    let resv = match header(&m, HDR_RESV).map(parse_hold) {
        None => None,
        Some(Ok(hold)) => Some(hold),
        Some(Err(_)) => return,
    };
    let client = &chan.conn.client;
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
    let Some(id) = id.filter(|id| crate::claim::valid_id(id)) else {
        // Every value carries a valid id (wire invariant): a message without one is not ours.
        return;
    };
    if lock(&chan.recent).contains(&id) {
        // Delivered here already (its reply was lost, or the frame came twice).
        let _ = client.publish(reply, Bytes::from_static(b"+")).await;
        return;
    }
    if !lock(&chan.recent).begin(&id) {
        // Another copy is being settled here: a duplicated frame's twin answers the same
        // inbox; a re-send (a new inbox) goes unanswered and comes again, to find it settled.
        return;
    }
    // The receiver first (a commit's own hold if it is still there), then the claim: a won
    // claim always has someone to hand the value to.
    let own = resv.filter(|h| {
        let mut r = lock(&chan.reads);
        match r.holds.get_mut(h) {
            Some(hold) if !hold.claiming && !matches!(hold.holder, Holder::Alt(None, _)) => {
                hold.claiming = true;
                true
            }
            _ => false,
        }
    });
    let hold = match own {
        Some(h) => Some(h),
        None => hold_reader(chan, true).await,
    };
    let Some(hold) = hold else {
        lock(&chan.recent).end(&id);
        lock(&chan.reads).turned_away = true;
        let _ = client.publish(reply, Bytes::from_static(b"-")).await;
        return;
    };
    if chan.conn.opts.hold_acks {
        // Testing hook: taken without a claim or an answer, exactly where a reader that dies
        // before its commit point leaves things (the writer re-sends; another reader wins).
        let _ = to_hold(chan, hold, m.payload);
        lock(&chan.recent).end(&id);
        return;
    }
    // Settled in a task of its own: the claim is a round trip, and this subscription serves
    // every writer of the channel.
    let chan = Arc::clone(chan);
    tokio::spawn(async move { settle(&chan, hold, id, m.payload, reply).await });
}

/// Claims value `id` (`claim.rs`) for the reserved receiver `hold`, then hands it on and
/// answers `+` (won), or gives the receiver back and answers `+` (another reader took it), or
/// gives it back without an answer (no server: the writer re-sends).
async fn settle(chan: &Arc<Chan>, hold: u64, id: String, value: Bytes, reply: async_nats::Subject) {
    let outcome = crate::claim::claim(chan, &id).await;
    match outcome {
        Ok(crate::claim::Claim::Won) => {
            if let Some(v) = to_hold(chan, hold, value) {
                // The receiver vanished (its task was torn down): another read of this
                // process, if any, else the value goes with the closing process.
                let _ = to_read(chan, v);
            }
            lock(&chan.recent).insert(id.clone());
        }
        Ok(crate::claim::Claim::Lost) => {
            give_back(chan, hold, true);
            lock(&chan.recent).insert(id.clone());
        }
        Err(_) => {
            give_back(chan, hold, true);
            lock(&chan.recent).end(&id);
            return;
        }
    }
    lock(&chan.recent).end(&id);
    let _ = chan.conn.client.publish(reply, Bytes::from_static(b"+")).await;
}
