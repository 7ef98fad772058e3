//! Why a channel operation did not complete.
//!
//! Invariant: an operation that returns an error left the channel as it was, except for the
//! effect named by the error itself (a poisoned channel stays poisoned). A write that fails
//! always hands its value back in [`WriteError`], so nothing is ever lost silently.

use std::fmt;

/// Why a read, write or selection did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The channel was poisoned: every operation on it fails from now on.
    Poisoned,
    /// The channel (or the end used) is retired: no communication can ever happen on it again.
    Retired,
    /// The timeout or deadline passed before a counterpart arrived.
    Timeout,
    /// A non-blocking operation could not complete immediately.
    WouldBlock,
    /// The channel moved to another transport (shared memory, when it was first sent to
    /// another OS process): nothing was sent or taken; retry on the transport it moved to.
    Moved,
    /// The caller gave the wait up (Ctrl-C, a cancelled task); nothing was sent or taken.
    Interrupted,
    /// The message can never fit in the channel (a shared channel's ring).
    TooLarge {
        /// The message's size in bytes.
        len: usize,
        /// The largest message the channel can carry.
        max: usize,
    },
    /// A fixed-size table of the channel is full (`what`: "ends", "guards").
    TooMany {
        /// What ran out.
        what: &'static str,
        /// How many there may be.
        max: usize,
    },
    /// A system call failed (shared memory): its kind and OS error code.
    Io {
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The OS error number, if the error came from the OS.
        code: Option<i32>,
    },
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io { kind: e.kind(), code: e.raw_os_error() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Poisoned => "channel is poisoned",
            Error::Retired => "channel is retired",
            Error::Timeout => "timed out",
            Error::WouldBlock => "operation would block",
            Error::Moved => "channel moved to another transport",
            Error::Interrupted => "interrupted",
            Error::TooLarge { len, max } => {
                return write!(f, "message of {len} bytes is larger than the channel's {max}");
            }
            Error::TooMany { what, max } => return write!(f, "more than {max} {what}"),
            Error::Io { code: Some(c), .. } => {
                return fmt::Display::fmt(&std::io::Error::from_raw_os_error(*c), f);
            }
            Error::Io { kind, code: None } => return fmt::Display::fmt(kind, f),
        })
    }
}

impl std::error::Error for Error {}

/// A failed write: the reason and the value that was not sent.
pub struct WriteError<T> {
    /// Why the write failed.
    pub error: Error,
    /// The value, handed back untouched.
    pub value: T,
}

impl<T> WriteError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> fmt::Debug for WriteError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteError").field("error", &self.error).finish_non_exhaustive()
    }
}

impl<T> fmt::Display for WriteError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write failed: {}", self.error)
    }
}

impl<T> std::error::Error for WriteError<T> {}

/// Why a selection did not fire any operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectError {
    /// Operation `index` was chosen and its channel is poisoned.
    Poisoned {
        /// Index of the poisoned operation.
        index: usize,
    },
    /// No operation can ever fire: every channel is retired and there is no skip or timeout.
    Retired,
    /// The selection's deadline passed (see [`crate::Select::select_deadline`]).
    Timeout,
    /// [`crate::Select::try_select`] found nothing ready.
    WouldBlock,
    /// Operation `index`'s channel moved to another transport ([`Error::Moved`]); nothing
    /// fired.
    Moved {
        /// Index of the operation whose channel moved.
        index: usize,
    },
}

impl SelectError {
    /// The plain [`Error`] this corresponds to.
    pub fn error(&self) -> Error {
        match self {
            SelectError::Poisoned { .. } => Error::Poisoned,
            SelectError::Retired => Error::Retired,
            SelectError::Timeout => Error::Timeout,
            SelectError::WouldBlock => Error::WouldBlock,
            SelectError::Moved { .. } => Error::Moved,
        }
    }
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectError::Poisoned { index } => write!(f, "operation {index}: channel is poisoned"),
            SelectError::Retired => f.write_str("no operation can ever fire: all channels retired"),
            other => fmt::Display::fmt(&other.error(), f),
        }
    }
}

impl std::error::Error for SelectError {}
