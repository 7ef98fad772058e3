//! The reaper: finds holders of a channel's ends whose lease expired and drops their ends
//! (the protocol is in `lease.rs`'s doc).
//!
//! Invariants:
//! - It only runs while this process waits on the channel (only a waiter needs to learn of a
//!   death; an idle process costs nothing), every `ttl / 4` of this connection.
//! - A holder is dead when its lease's revision (0 if missing) stayed the same for longer
//!   than the lease's stated ttl, timed on this process's clock from the first pass that saw
//!   that revision: a stall of this process delays the verdict, never hastens it (the next
//!   pass reads the holder's newer revision first).
//! - Counts are changed by compare-and-set on the revisions this pass read: a holder that
//!   changed its count meanwhile is looked at again next pass; this connection never reaps
//!   itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Operation;

use crate::chan::Chan;
use crate::counts::{valid_holder, Counts};
use crate::error::NetError;
use crate::lease::{lease_key, stated_ttl};
use crate::lock::lock;

/// Runs the reaper of `chan` (see the module doc), every `ttl / 4`, until the channel is
/// dropped (on the current runtime).
pub(crate) fn spawn(chan: &Arc<Chan>) {
    let tick = (chan.conn.opts.lease_ttl / 4).max(Duration::from_millis(50));
    let weak = Arc::downgrade(chan);
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(c) = weak.upgrade() else { return };
            if waiting(&c) {
                // A failed pass (server unreachable) changes nothing; the next one retries.
                let _ = reap(&c).await;
            }
        }
    });
    *lock(&chan.lease.reaper) = Some(task.abort_handle());
}

/// Whether this process waits on the channel (only a waiter needs to learn of a death).
fn waiting(chan: &Chan) -> bool {
    if chan.status().poisoned {
        return false;
    }
    let (reads, writes) = chan.busy.now();
    let r = lock(&chan.reads);
    reads + writes + r.alt_demand + r.out_demand > 0
}

/// One reaper pass: drops the ends of holders whose lease expired; true if it dropped any.
pub(crate) async fn reap(chan: &Chan) -> Result<bool, NetError> {
    let conn = &chan.conn;
    let kv = conn.kv().await?;
    let me = conn.id_prefix.as_str();
    let mut keys = Vec::with_capacity(2);
    for k in ["w", "r"] {
        let key = format!("{}.{k}", chan.name);
        let entry = kv.entry(&key).await.map_err(|e| conn.transport("read end counts", e))?;
        if let Some(e) = entry.filter(|e| e.operation == Operation::Put) {
            keys.push((key, e.revision, Counts::parse(&e.value)));
        }
    }
    let holders: BTreeSet<String> = keys
        .iter()
        .flat_map(|(_, _, c)| c.held.keys())
        .filter(|h| h.as_str() != me && valid_holder(h))
        .cloned()
        .collect();
    let mut dead = Vec::new();
    for h in &holders {
        let entry = kv
            .entry(lease_key(&chan.name, h))
            .await
            .map_err(|e| conn.transport("read a lease", e))?;
        let (rev, ttl) = match entry.filter(|e| e.operation == Operation::Put) {
            Some(e) => (e.revision, stated_ttl(&e.value).unwrap_or(conn.opts.lease_ttl)),
            None => (0, conn.opts.lease_ttl),
        };
        let now = Instant::now();
        let mut seen = lock(&chan.lease.seen);
        let s = seen.entry(h.clone()).or_insert((rev, now));
        if s.0 != rev {
            *s = (rev, now);
        } else if now.duration_since(s.1) > ttl {
            dead.push(h.clone());
        }
    }
    lock(&chan.lease.seen).retain(|h, _| holders.contains(h));
    if dead.is_empty() {
        return Ok(false);
    }
    let (mut changed, mut all) = (false, true);
    for (key, rev, mut counts) in keys {
        if counts.drop_holders(dead.iter().map(String::as_str)) {
            if kv.update(&key, counts.encode(), rev).await.is_ok() {
                changed = true;
            } else {
                // Changed meanwhile: the next pass reads it again (the dead stay dead).
                all = false;
            }
        }
    }
    if all {
        for h in &dead {
            conn.purge_key(&kv, &lease_key(&chan.name, h)).await;
            lock(&chan.lease.seen).remove(h);
        }
    }
    if changed {
        chan.announce("ends").await?;
    }
    Ok(changed)
}
