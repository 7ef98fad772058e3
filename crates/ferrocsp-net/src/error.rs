//! Errors of networked channel operations.

use std::fmt;

/// Why a networked operation or connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The channel is poisoned (by any participant on any machine).
    Poisoned,
    /// The channel is retired for this operation (all writer ends retired and nothing is left
    /// to read, or all reader ends retired).
    Retired,
    /// The operation's deadline passed; nothing was sent or taken.
    Timeout,
    /// The operation was withdrawn by its owner (Ctrl-C, asyncio cancellation); nothing was
    /// sent or taken.
    Cancelled,
    /// The server cannot be reached (at connect, or for longer than the reconnect timeout).
    Unreachable(String),
    /// The server refused this client (bad or missing credentials, or not authorized).
    Refused(String),
    /// The connection was closed by its owner.
    Closed,
    /// Bad input at the call (a name that is not a valid channel name, a capacity conflict).
    Invalid(String),
    /// The server or a peer answered something this protocol does not expect.
    Protocol(String),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Poisoned => write!(f, "channel is poisoned"),
            NetError::Retired => write!(f, "channel is retired"),
            NetError::Timeout => write!(f, "timed out"),
            NetError::Cancelled => write!(f, "cancelled"),
            NetError::Unreachable(m) => write!(
                f,
                "NATS server unreachable: {m} (networked channels need a nats-server with \
                 JetStream: start one with `nats-server -js`; to install it: \
                 apt-get install nats-server, or a release from https://nats.io)"
            ),
            NetError::Refused(m) => write!(
                f,
                "NATS server refused the connection: {m} (check user/password, token, \
                 nkey_seed or credentials, and the user's permissions)"
            ),
            NetError::Closed => write!(f, "connection is closed"),
            NetError::Invalid(m) => write!(f, "{m}"),
            NetError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for NetError {}

pub(crate) fn protocol(what: &str, e: impl fmt::Display) -> NetError {
    NetError::Protocol(format!("{what}: {e}"))
}
