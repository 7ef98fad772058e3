//! # ferrocsp — CSP channels
//!
//! The engine of ferrocsp: channels in the tradition of Hoare's CSP, occam-pi, JCSP and Go,
//! usable from Rust alone. It knows nothing about processes or Python: a blocked operation
//! registers a selection cell ([`Signal`]) and sleeps the way its [`Waker`] says (the calling
//! OS thread by default; backends plug in their own).
//!
//! ## Hello, channel
//! A channel is synchronous by default: a write completes only when a reader has taken the
//! value (a rendezvous).
//! ```
//! use ferrocsp::Channel;
//! let ch = Channel::new(0);
//! let tx = ch.clone();
//! std::thread::spawn(move || tx.write(42).unwrap());
//! assert_eq!(ch.read(), Ok(42));
//! ```
//!
//! ## Buffered channels
//! With a capacity, writes complete immediately while there is room.
//! ```
//! use ferrocsp::{Channel, Error};
//! let ch = Channel::new(2);
//! ch.write(1).unwrap();
//! ch.write(2).unwrap();
//! assert_eq!(ch.try_write(3).map_err(|e| e.error), Err(Error::WouldBlock));
//! assert_eq!(ch.stats().buffered, 2);
//! ```
//!
//! ## Ends, retire and iteration
//! Counted ends let a network end politely: when the last writer end retires, readers drain
//! the buffer and then see [`Error::Retired`] (end-of-stream).
//! ```
//! use ferrocsp::{Channel, Error};
//! let ch = Channel::new(0);
//! let (r, w) = (ch.reader(), ch.writer());
//! let producer = std::thread::spawn(move || {
//!     for i in 0..3 { w.write(i).unwrap(); }
//!     w.retire();
//! });
//! let got: Vec<i32> = std::iter::from_fn(|| r.read().ok()).collect();
//! assert_eq!(got, [0, 1, 2]);
//! producer.join().unwrap();
//! ```
//!
//! ## Poison
//! Poison kills a channel: every blocked and later operation fails with [`Error::Poisoned`].
//! ```
//! use ferrocsp::{Channel, Error};
//! let ch: Channel<u8> = Channel::new(0);
//! let r = ch.clone();
//! let blocked = std::thread::spawn(move || r.read());
//! ch.poison();
//! assert_eq!(blocked.join().unwrap(), Err(Error::Poisoned));
//! ```
//!
//! ## Timeouts
//! A timed-out operation takes or sends nothing.
//! ```
//! use std::time::Duration;
//! use ferrocsp::{Channel, Error};
//! let ch: Channel<u8> = Channel::new(0);
//! assert_eq!(ch.read_timeout(Duration::from_millis(10)), Err(Error::Timeout));
//! ```
//!
//! ## Choice (Alt)
//! A [`Select`] waits for the first of several reads, writes, timeouts or a skip; exactly one
//! fires, and a write's value is sent only if its operation fires.
//! ```
//! use std::time::Duration;
//! use ferrocsp::{Channel, Policy, Select};
//! let (a, b) = (Channel::new(0), Channel::new(0));
//! let b2 = b.clone();
//! std::thread::spawn(move || b2.write("from b").unwrap());
//! let mut alt = Select::new();
//! let ia = alt.read(&a);
//! let ib = alt.read(&b);
//! let it = alt.timeout(Duration::from_secs(10));
//! let fired = alt.select(Policy::Random).unwrap();
//! assert_eq!((fired.index, fired.value), (ib, Some("from b")));
//! # let _ = (ia, it);
//! ```
#![warn(missing_docs)]

mod channel;
mod ends;
mod error;
mod park;
#[doc(hidden)]
pub mod runq;
mod select;
#[cfg(target_os = "linux")]
pub mod shm;
mod signal;
mod stats;
mod sync;

pub use channel::Channel;
pub use ends::{Reader, Writer};
pub use error::{Error, SelectError, WriteError};
pub use park::{spin_budget, spin_until, DEFAULT_SPIN};
pub use select::{Policy, Poll, Select, Selected, Turn};
pub use signal::{Link, Outcome, Signal, State, Wake, Waker, MAX_OPS};
pub use stats::Stats;
