//! `Options`: how to reach and authenticate with the server.
//!
//! Invariants:
//! - Everything but `url` is optional; `Options::new` gives the default timeouts, so a caller
//!   never connects with a zero timeout by accident.
//! - Secrets never leave through formatting: `Debug` shows whether a password, token or nkey
//!   seed is set, never its value, and shows the URL without its user information
//!   (`redact_url`); every message that names the server uses `redacted_url` too.
//! - `namespace` keeps one application's subjects, streams and KV bucket apart from another's
//!   on the same server (`names`); the empty namespace gives the names of earlier versions.

use std::path::PathBuf;
use std::time::Duration;

/// How to reach and authenticate with the server; everything but `url` is optional.
#[derive(Clone, Default)]
pub struct Options {
    /// One or more server URLs separated by commas (`nats://host:4222,nats://other:4222`).
    pub url: String,
    /// User and password authentication.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// NKey seed (`SU...`) authentication.
    pub nkey_seed: Option<String>,
    /// A `.creds` file (JWT + NKey).
    pub credentials_file: Option<PathBuf>,
    /// CA certificate(s) to verify the server (PEM).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to the server without TLS.
    pub tls_required: bool,
    /// Client name shown by the server's monitoring.
    pub name: Option<String>,
    /// The application's namespace: 1-32 characters from `A-Z a-z 0-9 -`, or empty for the
    /// default (see [`Names`]).
    pub namespace: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long a writer waits for a reader's acknowledgement before it re-sends the value (a
    /// reader that died between receiving and acknowledging); also JetStream's `ack_wait`.
    pub ack_timeout: Duration,
    /// How long an operation keeps waiting for a lost server before it fails.
    pub reconnect_timeout: Duration,
    /// The lease on this connection's ends: refreshed every third of it; if no refresh reaches
    /// the server for this long (the process died), others drop the ends (`lease.rs`).
    /// 0.5 s to 1 hour.
    pub lease_ttl: Duration,
    /// Testing hook: readers of this connection take values but never acknowledge them
    /// (simulates a process that dies between the two).
    pub hold_acks: bool,
    /// Testing hook: an Output guard of this connection that fired sends nothing (simulates a
    /// process that dies after its Alt chose the guard, before the value left).
    pub drop_commits: bool,
    /// Testing hook: batch reads of this connection skip the claim of a first delivery
    /// whenever its confirmed ack is answered within `ack_timeout`, however late (the timing
    /// bound of `fresh.rs` removed: shows what the bound is for).
    pub fresh_any_time: bool,
    /// Testing hook: batch reads of this connection take the answer to a batch's last
    /// confirmed ack as proof for all of its first deliveries, without asking for the ack floor
    /// (`fresh.rs`: shows what the floor is for, when an earlier ack is lost).
    pub fresh_no_floor: bool,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Field by field on purpose: a new field must be added here, deciding whether it is a
        // secret (shown only as set / not set).
        let set = |v: &Option<String>| v.as_ref().map(|_| "<set>");
        f.debug_struct("Options")
            .field("url", &redact_url(&self.url))
            .field("user", &self.user)
            .field("password", &set(&self.password))
            .field("token", &set(&self.token))
            .field("nkey_seed", &set(&self.nkey_seed))
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("connect_timeout", &self.connect_timeout)
            .field("ack_timeout", &self.ack_timeout)
            .field("reconnect_timeout", &self.reconnect_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("hold_acks", &self.hold_acks)
            .field("drop_commits", &self.drop_commits)
            .field("fresh_any_time", &self.fresh_any_time)
            .field("fresh_no_floor", &self.fresh_no_floor)
            .finish()
    }
}

/// `url` (one or more comma-separated server URLs) with the user information of each
/// (`user:password@`, `token@`) replaced by `***@`: the form every message and `Debug` shows.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let (scheme, rest) = match u.find("://") {
                Some(i) => u.split_at(i + 3),
                None => ("", u),
            };
            // The user information ends at the last `@` before the path (a password may hold
            // `@` itself when written unescaped).
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}***{}", &rest[at..]),
                None => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The server-side names of one namespace (see the module invariants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Names {
    /// First subject token of every channel subject: `ferrocsp` (default) or `ferrocsp-<ns>`.
    pub(crate) root: String,
    /// Prefix of buffered channels' stream names: `FERROCSP_` or `FERROCSP-<ns>_`.
    pub(crate) stream_prefix: String,
    /// The KV bucket of channel state: `FERROCSP` or `FERROCSP-<ns>`.
    pub(crate) bucket: String,
}

impl Names {
    /// The names of namespace `ns` (checked: no `_` and no `.`, so that a namespace and a
    /// channel name never combine into another pair's names).
    pub(crate) fn new(ns: &str) -> Result<Names, crate::NetError> {
        if ns.is_empty() {
            return Ok(Names {
                root: "ferrocsp".to_owned(),
                stream_prefix: "FERROCSP_".to_owned(),
                bucket: "FERROCSP".to_owned(),
            });
        }
        let ok = ns.len() <= 32 && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(crate::NetError::Invalid(format!(
                "invalid namespace {ns:?}: use 1-32 characters from A-Z a-z 0-9 -"
            )));
        }
        Ok(Names {
            root: format!("ferrocsp-{ns}"),
            stream_prefix: format!("FERROCSP-{ns}_"),
            bucket: format!("FERROCSP-{ns}"),
        })
    }
}

impl Options {
    /// `url` as messages show it (see [`redact_url`]).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Options for `url` with the default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Options {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            reconnect_timeout: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(10),
            ..Options::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_user_information() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("nats://u:p@h:1,tls://tok@g:2/x"), "nats://***@h:1,tls://***@g:2/x");
        assert_eq!(redact_url("u:p@w@h:1"), "***@h:1");
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut o = Options::new("nats://alice:SECRET1@h:4222");
        o.user = Some("alice".into());
        o.password = Some("SECRET2".into());
        o.token = Some("SECRET3".into());
        o.nkey_seed = Some("SUSECRET4".into());
        let d = format!("{o:?}");
        assert!(!d.contains("SECRET"), "{d}");
        assert!(d.contains("<set>") && d.contains("alice"), "{d}");
    }

    #[test]
    fn namespaces_never_combine_into_each_other() {
        assert_eq!(Names::new("").ok().map(|n| n.bucket).as_deref(), Some("FERROCSP"));
        let app = Names::new("app-1").ok();
        assert_eq!(app.as_ref().map(|n| n.root.as_str()), Some("ferrocsp-app-1"));
        assert_eq!(app.as_ref().map(|n| n.stream_prefix.as_str()), Some("FERROCSP-app-1_"));
        for bad in ["a_b", "a.b", "a b", "*", &"x".repeat(33)] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }
}
