//! Leases on ends: a connection's live ends of a channel count only while the connection is
//! alive, so ends held by a process that was killed (SIGKILL, power loss) go away by
//! themselves, for the participants waiting now and for later runs. This module is the
//! holder's side and the lease's format; `reaper.rs` is the side that finds dead holders.
//!
//! Protocol, channel `N`, connection with id `H` (its random id prefix) and lease `ttl`
//! (`Options::lease_ttl`):
//! - Before `H` first counts an end of `N` as its own (`counts.rs`: `Made`, `Received`), it
//!   puts its lease key `N.l.H` = `"<ttl in ms> <beat>"` in the state bucket; from then on a
//!   task re-puts it every `ttl / 3` (`beat` counts up) until the channel is dropped here.
//!   Closing the connection purges it.
//! - Every `ttl / 4` while this process waits on `N` (a read, a write, a selection), the
//!   *reaper* (`reaper.rs`) reads `N.w` and `N.r` and the lease of every other holder named
//!   there. A holder whose lease's revision (0 if the key is missing) did not change for
//!   longer than that lease's own ttl (this connection's if missing or malformed), as timed
//!   by this process's clock, is dead: its counts are removed from both keys (compare-and-set
//!   on the revision read, so a holder that changed its count meanwhile is looked at again
//!   next time), its lease key is purged, the status is re-read and the change broadcast on
//!   `N.ctl`.
//! - So after a holder dies, a participant waiting on `N` sees its ends gone within
//!   `ttl + 2 * tick` (tick = the waiter's `ttl / 4`) plus a few round trips: `1.5 * ttl` with
//!   the same ttl everywhere; a participant that starts waiting later, within that long of
//!   its start.
//!
//! Invariants:
//! - Only the passing of time on the observer's own clock, and the holder's revision, decide
//!   death: no clock is compared across machines, and nats-server 2.9 (no per-key TTL, no
//!   marker when an entry ages out) is enough.
//! - A live holder loses its lease only if none of its refreshes (`ttl / 3` apart, sent from
//!   the network thread, which Python's GIL and a busy process do not stop) reached the
//!   server for a whole `ttl`: three refreshes in a row.
//! - The lease key is on the server before the holder's count names it, and a count update
//!   is a compare-and-set on the revision the reaper read, so a holder is never dropped for a
//!   lease it was just putting.
//! - A holder never reaps itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::AbortHandle;

use crate::error::NetError;
use crate::link::Inner;
use crate::lock::lock;

/// The bounds of a lease's ttl (`Options::lease_ttl`; a peer's stated ttl is clamped to them).
pub(crate) const TTL_MIN: Duration = Duration::from_millis(500);
pub(crate) const TTL_MAX: Duration = Duration::from_secs(3600);
/// How soon a failed refresh is tried again.
const RETRY: Duration = Duration::from_millis(250);

/// One channel's lease state in this connection.
#[derive(Default)]
pub(crate) struct Lease {
    /// Set once this connection's lease key for the channel is on the server.
    started: tokio::sync::OnceCell<()>,
    refresher: Mutex<Option<AbortHandle>>,
    /// The channel's reaper task (`reaper.rs`).
    pub(crate) reaper: Mutex<Option<AbortHandle>>,
    /// Other holders as the reaper last saw them: lease revision, and since when (here).
    pub(crate) seen: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        for t in [&self.refresher, &self.reaper] {
            if let Some(t) = lock(t).take() {
                t.abort();
            }
        }
    }
}

/// The lease key of holder `holder` on channel `name`.
pub(crate) fn lease_key(name: &str, holder: &str) -> String {
    format!("{name}.l.{holder}")
}

fn lease_value(ttl: Duration, beat: u64) -> Bytes {
    Bytes::from(format!("{} {beat}", ttl.as_millis()))
}

/// The ttl a lease states, clamped; `None` if malformed.
pub(crate) fn stated_ttl(v: &[u8]) -> Option<Duration> {
    let ms = std::str::from_utf8(v).ok()?.split(' ').next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ms).clamp(TTL_MIN, TTL_MAX))
}

/// Checks a ttl given to `connect` (see `TTL_MIN`, `TTL_MAX`).
pub(crate) fn check_ttl(ttl: Duration) -> Result<(), NetError> {
    if (TTL_MIN..=TTL_MAX).contains(&ttl) {
        Ok(())
    } else {
        Err(NetError::Invalid(format!(
            "lease_ttl must be between {} and {} seconds, got {}",
            TTL_MIN.as_secs_f64(),
            TTL_MAX.as_secs_f64(),
            ttl.as_secs_f64()
        )))
    }
}

impl Lease {
    /// Puts connection `conn`'s lease on channel `name` (once) and starts refreshing it: call
    /// before counting an end as this connection's.
    pub(crate) async fn hold(&self, conn: &Arc<Inner>, name: &str) -> Result<(), NetError> {
        self.started
            .get_or_try_init(|| async {
                let key = lease_key(name, &conn.id_prefix);
                let kv = conn.kv().await?;
                kv.put(&key, lease_value(conn.opts.lease_ttl, 0))
                    .await
                    .map_err(|e| conn.transport("put a lease", e))?;
                let task = tokio::spawn(refresh(Arc::clone(conn), key));
                *lock(&self.refresher) = Some(task.abort_handle());
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Stops refreshing connection `conn`'s lease on channel `name` and purges it (the
    /// connection closes): ends it still holds are dropped by the next reaper that looks.
    pub(crate) async fn release(&self, conn: &Inner, name: &str) {
        if let Some(t) = lock(&self.refresher).take() {
            t.abort();
        }
        if self.started.initialized() {
            if let Ok(kv) = conn.kv().await {
                conn.purge_key(&kv, &lease_key(name, &conn.id_prefix)).await;
            }
        }
    }
}

/// Re-puts lease `key` every `ttl / 3` (sooner after a failure) until aborted.
async fn refresh(conn: Arc<Inner>, key: String) {
    let ttl = conn.opts.lease_ttl;
    let mut beat = 0u64;
    let mut wait = ttl / 3;
    loop {
        tokio::time::sleep(wait).await;
        beat += 1;
        let put = match conn.kv().await {
            Ok(kv) => kv.put(&key, lease_value(ttl, beat)).await.is_ok(),
            Err(_) => false,
        };
        wait = if put { ttl / 3 } else { RETRY };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_checked_and_clamped() {
        assert!(check_ttl(Duration::from_secs(10)).is_ok());
        assert!(check_ttl(Duration::from_millis(499)).is_err());
        assert!(check_ttl(Duration::from_secs(3601)).is_err());
        assert_eq!(stated_ttl(b"1000 7"), Some(Duration::from_secs(1)));
        assert_eq!(stated_ttl(b"1 7"), Some(TTL_MIN));
        assert_eq!(stated_ttl(b"99999999999 0"), Some(TTL_MAX));
        assert_eq!(stated_ttl(b"x"), None);
        assert_eq!(stated_ttl(b"\xff"), None);
    }
}
