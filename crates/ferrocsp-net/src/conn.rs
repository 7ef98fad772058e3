//! `Connection`: one NATS client and the tokio runtime that drives it, on background threads
//! owned by the connection.
//!
//! Invariants:
//! - Every networked operation runs as a task on this runtime; callers only wait on `Op`s, so
//!   a blocked Python thread never runs async code (and holds no GIL while it waits).
//! - One `Chan` per channel name per connection: every end and operation of a channel in this
//!   process shares its subscriptions, its status and its pending reads.
//! - Entries are kept for open channels only: a dropped channel's entry goes at the next open
//!   (a weak entry keeps the channel's whole allocation), so a long-lived process that opens a
//!   fresh name per task stays bounded by the channels it holds, not by the names it opened.
//! - Connecting is bounded by `connect_timeout` (a refused or silent server is a clear
//!   `Unreachable`, never a hang); after a loss of connection the client reconnects by
//!   itself, and operations that cannot make progress for `reconnect_timeout` fail with
//!   `Unreachable`.
//! - Closing gives up this connection's leases on ends (`lease.rs`): ends it still holds are
//!   the dead's from then on, dropped by the next waiter that looks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::runtime::Runtime;

use crate::chan::Chan;
use crate::error::{protocol, NetError};
use crate::link::{capacity_conflict, Inner};
use crate::op::Op;
use crate::options::{Names, Options};

/// A connection to a NATS server with JetStream.
pub struct Connection {
    pub(crate) inner: Arc<Inner>,
    rt: Mutex<Option<Runtime>>,
    /// One `Chan` per name (see the module doc), as long as anyone holds it.
    chans: Mutex<HashMap<String, Weak<Chan>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("url", &self.inner.shown_url).finish()
    }
}

impl Connection {
    /// Connects (bounded by `opts.connect_timeout`) and checks that JetStream is enabled.
    pub fn connect(opts: Options) -> Result<Connection, NetError> {
        let names = Names::new(&opts.namespace)?;
        crate::lease::check_ttl(opts.lease_ttl)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferrocsp-net")
            .enable_all()
            .build()
            .map_err(|e| protocol("cannot start the network runtime", e))?;
        let epoch = Instant::now();
        let lost = Arc::new(AtomicU64::new(0));
        let lost_cb = Arc::clone(&lost);
        let (reconnected, reconnects) = tokio::sync::watch::channel(0u64);
        let reconnected = Arc::new(reconnected);
        let mut o = async_nats::ConnectOptions::new()
            .connection_timeout(opts.connect_timeout)
            .request_timeout(Some(opts.ack_timeout))
            .event_callback(move |ev| {
                let lost = Arc::clone(&lost_cb);
                let reconnected = Arc::clone(&reconnected);
                async move {
                    match ev {
                        async_nats::Event::Disconnected => {
                            let ms = u64::try_from(epoch.elapsed().as_millis())
                                .unwrap_or(u64::MAX)
                                .max(1);
                            let _ =
                                lost.compare_exchange(0, ms, Ordering::AcqRel, Ordering::Acquire);
                        }
                        async_nats::Event::Connected => {
                            lost.store(0, Ordering::Release);
                            reconnected.send_modify(|n| *n = n.wrapping_add(1));
                        }
                        _ => {}
                    }
                }
            });
        if let (Some(u), Some(p)) = (&opts.user, &opts.password) {
            o = o.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &opts.token {
            o = o.token(t.clone());
        }
        if let Some(s) = &opts.nkey_seed {
            o = o.nkey(s.clone());
        }
        if let Some(ca) = &opts.tls_ca {
            o = o.add_root_certificates(ca.clone());
        }
        if let (Some(c), Some(k)) = (&opts.tls_cert, &opts.tls_key) {
            o = o.add_client_certificate(c.clone(), k.clone());
        }
        if opts.tls_required {
            o = o.require_tls(true);
        }
        if let Some(n) = &opts.name {
            o = o.name(n);
        }
        let creds = opts.credentials_file.clone();
        let url = opts.url.clone();
        let shown = opts.redacted_url();
        let limit = opts.connect_timeout;
        let client = rt.block_on(async move {
            let o = match creds {
                Some(path) => o
                    .credentials_file(path)
                    .await
                    .map_err(|e| NetError::Invalid(format!("cannot read credentials file: {e}")))?,
                None => o,
            };
            match tokio::time::timeout(limit + Duration::from_millis(100), o.connect(url.as_str()))
                .await
            {
                Ok(Ok(c)) => Ok(c),
                // The client's error may quote what it was given: it is shown redacted too.
                Ok(Err(e)) => {
                    let m =
                        format!("cannot connect to {shown}: {}", redact_in(&e.to_string(), &url));
                    Err(match e.kind() {
                        async_nats::ConnectErrorKind::Authentication
                        | async_nats::ConnectErrorKind::AuthorizationViolation => {
                            NetError::Refused(m)
                        }
                        async_nats::ConnectErrorKind::ServerParse => NetError::Invalid(m),
                        _ => NetError::Unreachable(m),
                    })
                }
                Err(_) => Err(NetError::Unreachable(format!(
                    "cannot connect to {shown}: no answer within {:.1} s",
                    limit.as_secs_f64()
                ))),
            }
        })?;
        // The JetStream context spawns its acker task: it must be made inside the runtime.
        let js = {
            let _in_rt = rt.enter();
            jetstream::new(client.clone())
        };
        let inner = Arc::new(Inner::new(client, js, opts, names, lost, epoch, reconnects));
        // Fail now, clearly, if the server runs without JetStream (`nats-server -js`); this
        // also creates the state bucket every channel needs.
        let probe = Arc::clone(&inner);
        let limit = inner.opts.connect_timeout;
        let url = inner.shown_url.clone();
        rt.block_on(async move {
            match tokio::time::timeout(limit, probe.kv()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(NetError::Unreachable(format!(
                    "connected to {url}, but JetStream is not usable ({e}); start nats-server with -js"
                ))),
                Err(_) => Err(NetError::Unreachable(format!(
                    "connected to {url}, but JetStream did not answer; start nats-server with -js"
                ))),
            }
        })?;
        Ok(Connection {
            inner,
            rt: Mutex::new(Some(rt)),
            chans: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        })
    }

    fn handle(&self) -> Result<tokio::runtime::Handle, NetError> {
        match &*self.rt.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(rt) if !self.closed.load(Ordering::Acquire) => Ok(rt.handle().clone()),
            _ => Err(NetError::Closed),
        }
    }

    /// Opens (creating it on the server if needed) the channel `name` with `capacity`.
    ///
    /// Every participant must agree on the capacity: opening an existing channel with another
    /// capacity fails with `Invalid`.
    pub fn channel(&self, name: &str, capacity: usize) -> Result<Arc<Chan>, NetError> {
        check_name(name)?;
        let rt = self.handle()?;
        {
            let chans = self.chans.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = chans.get(name).and_then(Weak::upgrade) {
                if c.capacity != capacity {
                    return Err(capacity_conflict(name, c.capacity, capacity));
                }
                return Ok(c);
            }
        }
        let inner = Arc::clone(&self.inner);
        let n = name.to_owned();
        let chan = rt.block_on(async move {
            let chan = Chan::open(inner, rt_handle(), n, capacity).await?;
            crate::reaper::spawn(&chan);
            Ok::<_, NetError>(chan)
        })?;
        let mut chans = self.chans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = chans.get(name).and_then(Weak::upgrade) {
            // Opened by another thread meanwhile: keep one.
            return Ok(c);
        }
        // Entries of dropped channels go here: a weak entry keeps its channel's whole
        // allocation, so a process opening a fresh name per task would otherwise grow with
        // every name it ever opened (the soak's lane did). One pass over the open ones, beside
        // the server round trips of an open.
        chans.retain(|_, w| w.strong_count() > 0);
        chans.insert(name.to_owned(), Arc::downgrade(&chan));
        Ok(chan)
    }

    /// The runtime's handle (for entering it to spawn tasks).
    pub(crate) fn runtime(&self) -> Result<tokio::runtime::Handle, NetError> {
        self.handle()
    }

    /// Runs `f` as an operation on this connection's runtime.
    pub(crate) fn spawn<T, F, Fut>(&self, make: F) -> Op<T>
    where
        T: Send + 'static,
        F: FnOnce(crate::op::Cancel) -> Fut,
        Fut: std::future::Future<Output = Result<T, NetError>> + Send + 'static,
    {
        match self.handle() {
            Ok(h) => Op::spawn(&h, make),
            Err(e) => Op::ready(Err(e)),
        }
    }

    /// Flushes pending messages and closes the connection; later operations fail with
    /// `Closed`. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let rt = self.rt.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(rt) = rt {
            let client = self.inner.client.clone();
            let chans: Vec<Arc<Chan>> = self
                .chans
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .filter_map(Weak::upgrade)
                .collect();
            let _ = rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(2), async move {
                    // Ends still held here are the dead's from now on (`lease.rs`).
                    for c in &chans {
                        c.lease.release(&c.conn, &c.name).await;
                    }
                    client.flush().await
                })
                .await
            });
            rt.shutdown_background();
        }
    }

    /// How many channel names this connection keeps an entry for, and how many of those
    /// channels are still open here (held by someone): the first may not outgrow the second
    /// by more than the names dropped since the last open (see `channel`).
    pub fn chan_entries(&self) -> (usize, usize) {
        let chans = self.chans.lock().unwrap_or_else(PoisonError::into_inner);
        (chans.len(), chans.values().filter(|w| w.strong_count() > 0).count())
    }

    /// The server URL(s) this connection was made with, without credentials.
    pub fn url(&self) -> &str {
        &self.inner.shown_url
    }

    /// The capacity of channel `name` if it exists on the server, else `None`; creates
    /// nothing (used to check an end received in a value before opening its channel).
    pub fn capacity_of(&self, name: &str) -> Result<Option<usize>, NetError> {
        check_name(name)?;
        let rt = self.handle()?;
        {
            let chans = self.chans.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = chans.get(name).and_then(Weak::upgrade) {
                return Ok(Some(c.capacity));
            }
        }
        let inner = Arc::clone(&self.inner);
        let key = format!("{name}.cap");
        rt.block_on(async move {
            let kv = inner.kv().await?;
            let v = kv.get(&key).await.map_err(|e| inner.transport("read channel capacity", e))?;
            Ok(v.map(|v| crate::wire::parse_capacity(&v)).transpose()?)
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// `text` with every occurrence of the URL(s) `url` and of their secrets replaced by the
/// redacted form.
fn redact_in(text: &str, url: &str) -> String {
    let mut t = text.replace(url, &crate::options::redact_url(url));
    for u in url.split(',') {
        t = t.replace(u, &crate::options::redact_url(u));
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            // The user information alone, and its parts (`user:password`).
            let info = &rest[..at];
            if !info.is_empty() {
                t = t.replace(info, "***");
            }
            for part in info.split(':').filter(|p| p.len() >= 4) {
                t = t.replace(part, "***");
            }
        }
    }
    t
}

fn rt_handle() -> tokio::runtime::Handle {
    tokio::runtime::Handle::current()
}

/// Channel names become parts of subjects, stream names and KV keys: keep them to a safe set.
fn check_name(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NetError::Invalid(format!(
            "invalid networked channel name {name:?}: use 1-64 characters from A-Z a-z 0-9 _ -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_checked() {
        assert!(check_name("jobs-1_A").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(matches!(check_name(bad), Err(NetError::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn errors_quote_no_credentials() {
        let t = redact_in("bad url nats://bob:hunter22@x:1 (hunter22)", "nats://bob:hunter22@x:1");
        assert!(!t.contains("hunter22"), "{t}");
    }

    #[test]
    fn lease_ttl_is_checked_before_connecting() {
        for bad in [Duration::ZERO, Duration::from_millis(100), Duration::from_secs(7200)] {
            let mut o = Options::new("nats://127.0.0.1:1");
            o.lease_ttl = bad;
            match Connection::connect(o) {
                Err(NetError::Invalid(m)) => assert!(m.contains("lease_ttl"), "{m}"),
                other => panic!("expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        let mut o = Options::new("nats://127.0.0.1:1");
        o.connect_timeout = Duration::from_millis(500);
        match Connection::connect(o) {
            Err(NetError::Unreachable(m)) => assert!(m.contains("127.0.0.1:1"), "{m}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
