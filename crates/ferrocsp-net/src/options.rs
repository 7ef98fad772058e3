//! `Options`: how to reach and authenticate with the server.
//!
//! Invariant: everything but `url` is optional; `Options::new` gives the default timeouts, so
//! a caller never connects with a zero timeout by accident.

use std::path::PathBuf;
use std::time::Duration;

/// How to reach and authenticate with the server; everything but `url` is optional.
#[derive(Clone, Debug, Default)]
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
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long a writer waits for a reader's acknowledgement before it re-sends the value (a
    /// reader that died between receiving and acknowledging); also JetStream's `ack_wait`.
    pub ack_timeout: Duration,
    /// How long an operation keeps waiting for a lost server before it fails.
    pub reconnect_timeout: Duration,
    /// Testing hook: readers of this connection take values but never acknowledge them
    /// (simulates a process that dies between the two).
    pub hold_acks: bool,
    /// Testing hook: an Output guard of this connection that fired sends nothing (simulates a
    /// process that dies after its Alt chose the guard, before the value left).
    pub drop_commits: bool,
}

impl Options {
    /// Options for `url` with the default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Options {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            reconnect_timeout: Duration::from_secs(30),
            ..Options::default()
        }
    }
}
