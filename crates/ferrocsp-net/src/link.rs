//! `Inner`: a connection's link to the server, shared by the connection and its channels:
//! the NATS client, JetStream, the state bucket, message ids, and whether the server is lost.
//!
//! Invariants:
//! - Message ids are unique per connection (a random prefix and a counter), so a re-sent value
//!   keeps its id and is told apart from every other value.
//! - The server counts as lost only after `reconnect_timeout` without it (`gave_up`); until
//!   then operations wait for the client to reconnect by itself.
//! - A failure is `Unreachable` when the client is not connected, a protocol error otherwise.
//! - Messages name the server by `shown_url` only (credentials removed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::error::{protocol, NetError};
use crate::options::{Names, Options};

pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) opts: Options,
    /// The server-side names of this connection's namespace.
    pub(crate) names: Names,
    /// `opts.url` without credentials: the only form messages show.
    pub(crate) shown_url: String,
    kv: tokio::sync::OnceCell<jetstream::kv::Store>,
    /// Set once the namespace's claims stream exists (`claim.rs`).
    pub(crate) claims: tokio::sync::OnceCell<()>,
    /// When the client lost its server (0: connected), in ms since `epoch`.
    lost_since_ms: Arc<AtomicU64>,
    epoch: Instant,
    next_id: AtomicU64,
    /// A random prefix for message ids, unique per connection.
    pub(crate) id_prefix: String,
    /// Counts the client's (re)connections: every `Chan` reads its channel's state again
    /// after one, since notices published while the connection was down are lost (core
    /// NATS delivers at most once; `chan.rs`).
    pub(crate) reconnects: tokio::sync::watch::Receiver<u64>,
}

fn random_prefix() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

impl Inner {
    pub(crate) fn new(
        client: async_nats::Client,
        js: jetstream::Context,
        opts: Options,
        names: Names,
        lost_since_ms: Arc<AtomicU64>,
        epoch: Instant,
        reconnects: tokio::sync::watch::Receiver<u64>,
    ) -> Inner {
        Inner {
            client,
            js,
            shown_url: opts.redacted_url(),
            opts,
            names,
            kv: tokio::sync::OnceCell::new(),
            claims: tokio::sync::OnceCell::new(),
            lost_since_ms,
            epoch,
            next_id: AtomicU64::new(1),
            id_prefix: random_prefix(),
            reconnects,
        }
    }

    /// The shared KV bucket (one per namespace, `names.bucket`), created on first use.
    pub(crate) async fn kv(&self) -> Result<jetstream::kv::Store, NetError> {
        self.kv
            .get_or_try_init(|| async {
                let bucket = &self.names.bucket;
                if let Ok(s) = self.js.get_key_value(bucket).await {
                    return Ok(s);
                }
                // The bucket's stream, made by hand with the KV conventions: async-nats's
                // create_key_value first queries account info in a shape that nats-server 2.9
                // does not send (reserved_memory/reserved_storage are 2.10+).
                let cfg = jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    discard: jetstream::stream::DiscardPolicy::New,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    num_replicas: 1,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                };
                // An error here may be another participant creating it at the same time: the
                // second get decides.
                let created = self.js.create_stream(cfg).await.err();
                self.js.get_key_value(bucket).await.map_err(|e| match &created {
                    Some(c) => self.transport("create the state bucket", c),
                    None => self.transport("open the state bucket", e),
                })
            })
            .await
            .cloned()
    }

    /// Removes `key` from the state bucket with no marker left (best effort: a ticket left
    /// claimed or issued-and-unsent is a few bytes that no claim can take again, or was never
    /// sent; a lease left over names a holder that no count names any more).
    pub(crate) async fn purge_key(&self, kv: &jetstream::kv::Store, key: &str) {
        let subject = format!("$KV.{}.{key}", self.names.bucket);
        let _ = kv.stream.purge().filter(subject).await;
    }

    /// A message id unique to this connection.
    pub(crate) fn new_id(&self) -> String {
        format!("{}-{}", self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether the server has been lost for longer than the reconnect timeout.
    pub(crate) fn gave_up(&self) -> Option<NetError> {
        let since = self.lost_since_ms.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let lost_for = Duration::from_millis(now.saturating_sub(since));
        (lost_for >= self.opts.reconnect_timeout).then(|| {
            NetError::Unreachable(format!(
                "lost the server {} and could not reconnect within {:.1} s",
                self.shown_url,
                self.opts.reconnect_timeout.as_secs_f64()
            ))
        })
    }

    /// A transport failure: `Unreachable` if the server is gone, else a protocol error.
    pub(crate) fn transport(&self, what: &str, e: impl std::fmt::Display) -> NetError {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            NetError::Unreachable(format!("{what}: {e} (server {} not connected)", self.shown_url))
        } else {
            protocol(what, e)
        }
    }
}

pub(crate) fn capacity_conflict(name: &str, have: usize, want: usize) -> NetError {
    NetError::Invalid(format!(
        "networked channel '{name}' exists with capacity {have}; cannot open it with capacity {want}"
    ))
}
