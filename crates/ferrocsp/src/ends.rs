//! Counted channel ends: `Reader` and `Writer`.
//!
//! An end is an identity, not just a handle: clones of one end are the same end, and the end
//! retires once, either explicitly ([`Reader::retire`]) or when its last clone is dropped.
//! When every reader end made from a channel has retired, writers fail with `Retired`; when
//! every writer end has retired, readers drain the buffer and then see end-of-stream.
//!
//! Invariants:
//! - `retired` goes false -> true exactly once per end, and the channel's live-end count is
//!   decremented exactly then (the swap decides who does it).
//! - Operations through a retired end fail with `Error::Retired` without touching the channel.

use std::fmt;
use std::time::{Duration, Instant};

use crate::channel::{next_id, Channel};
use crate::error::{Error, WriteError};
use crate::sync::{Arc, AtomicBool, Ordering};

struct End<T> {
    chan: Channel<T>,
    retired: AtomicBool,
    id: u64,
    reader: bool,
}

impl<T> End<T> {
    fn new(chan: Channel<T>, reader: bool) -> Self {
        End { chan, retired: AtomicBool::new(false), id: next_id(), reader }
    }

    fn retire(&self) {
        if !self.retired.swap(true, Ordering::AcqRel) {
            if self.reader {
                self.chan.retire_reader_end();
            } else {
                self.chan.retire_writer_end();
            }
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.retired.load(Ordering::Acquire) {
            Err(Error::Retired)
        } else {
            Ok(())
        }
    }
}

impl<T> Drop for End<T> {
    fn drop(&mut self) {
        self.retire();
    }
}

macro_rules! end_common {
    ($ty:ident) => {
        impl<T> Clone for $ty<T> {
            /// Another handle to the *same* end (retiring either retires both).
            fn clone(&self) -> Self {
                $ty { end: Arc::clone(&self.end) }
            }
        }

        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("id", &self.end.id)
                    .field("channel", &self.end.chan.id())
                    .field("retired", &self.is_retired())
                    .finish()
            }
        }

        impl<T> PartialEq for $ty<T> {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.end, &other.end)
            }
        }

        impl<T> Eq for $ty<T> {}

        impl<T> $ty<T> {
            pub(crate) fn new(chan: Channel<T>) -> Self {
                $ty { end: Arc::new(End::new(chan, stringify!($ty) == "Reader")) }
            }

            /// Retires this end (idempotent; all clones are retired with it).
            pub fn retire(&self) {
                self.end.retire();
            }

            /// Whether this end has retired.
            pub fn is_retired(&self) -> bool {
                self.end.retired.load(Ordering::Acquire)
            }

            /// Poisons the channel (allowed through a retired end too: poison is for shutdown).
            pub fn poison(&self) {
                self.end.chan.poison();
            }

            /// The channel this end belongs to.
            pub fn channel(&self) -> &Channel<T> {
                &self.end.chan
            }

            /// A process-unique identifier of this end.
            pub fn id(&self) -> u64 {
                self.end.id
            }
        }
    };
}

/// A counted reading end of a [`Channel`].
///
/// ```
/// use ferrocsp::{Channel, Error};
/// let ch = Channel::new(2);
/// let (r, w) = (ch.reader(), ch.writer());
/// w.write(1).unwrap();
/// w.retire(); // the last writer end: end-of-stream after the buffer drains
/// assert_eq!(r.read(), Ok(1));
/// assert_eq!(r.read(), Err(Error::Retired));
/// ```
pub struct Reader<T> {
    end: Arc<End<T>>,
}

/// A counted writing end of a [`Channel`].
pub struct Writer<T> {
    end: Arc<End<T>>,
}

end_common!(Reader);
end_common!(Writer);

impl<T> Reader<T> {
    /// See [`Channel::read`]; fails with [`Error::Retired`] if this end retired.
    pub fn read(&self) -> Result<T, Error> {
        self.end.check()?;
        self.end.chan.read()
    }

    /// See [`Channel::read_timeout`].
    pub fn read_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.end.check()?;
        self.end.chan.read_timeout(timeout)
    }

    /// See [`Channel::read_deadline`].
    pub fn read_deadline(&self, deadline: Option<Instant>) -> Result<T, Error> {
        self.end.check()?;
        self.end.chan.read_deadline(deadline)
    }

    /// See [`Channel::try_read`].
    pub fn try_read(&self) -> Result<T, Error> {
        self.end.check()?;
        self.end.chan.try_read()
    }
}

impl<T> Writer<T> {
    fn checked(&self, value: T) -> Result<T, WriteError<T>> {
        match self.end.check() {
            Ok(()) => Ok(value),
            Err(error) => Err(WriteError { error, value }),
        }
    }

    /// See [`Channel::write`]; fails with [`Error::Retired`] if this end retired.
    pub fn write(&self, value: T) -> Result<(), WriteError<T>> {
        let value = self.checked(value)?;
        self.end.chan.write(value)
    }

    /// See [`Channel::write_timeout`].
    pub fn write_timeout(&self, value: T, timeout: Duration) -> Result<(), WriteError<T>> {
        let value = self.checked(value)?;
        self.end.chan.write_timeout(value, timeout)
    }

    /// See [`Channel::write_deadline`].
    pub fn write_deadline(&self, value: T, deadline: Option<Instant>) -> Result<(), WriteError<T>> {
        let value = self.checked(value)?;
        self.end.chan.write_deadline(value, deadline)
    }

    /// See [`Channel::try_write`].
    pub fn try_write(&self, value: T) -> Result<(), WriteError<T>> {
        let value = self.checked(value)?;
        self.end.chan.try_write(value)
    }
}
