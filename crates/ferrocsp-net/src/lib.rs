//! Networked ferrocsp channels over NATS and JetStream.
//!
//! The same channel semantics as the in-process engine (rendezvous, buffered with a capacity,
//! any-to-any with each value delivered once, poison, retire, timeouts), between processes and
//! machines that share a NATS server. This crate is separate from the engine so that local
//! channels pay nothing for it; values are opaque bytes here (the Python package encodes them).
//!
//! - [`Connection`] owns an `async-nats` client and a small tokio runtime on background
//!   threads; every operation runs there as a task and the caller waits on an [`Op`].
//! - [`Chan`]: one channel per name per connection (`conn.rs`, `chan.rs`); rendezvous
//!   channels use request/reply (`rendezvous.rs`), buffered ones a JetStream work queue
//!   (`buffered.rs`, with slots reserved for Output guards in `reserve.rs`); Output guards of
//!   both kinds are served by `out_pump.rs`; a reader claims each value's id on the server
//!   before it takes it, so a value that reaches two readers is taken once (`claim.rs`;
//!   batch reads skip it for a delivery that provably has no copy, `fresh.rs`);
//!   poison and end counts live in a KV bucket with a broadcast subject (`chan.rs`, counts in
//!   `counts.rs`), and ends are leased so that a dead process's ends go away (`lease.rs`,
//!   `reaper.rs`); `stats()` adds the server's state to a survey of every
//!   participant over that subject (`stats.rs`). The protocol is written down in the project's
//!   docs/wire.md (every subject, header, key and payload) and docs/design.md; [`wire`] parses
//!   everything this crate reads from the wire.
//!
//! ```no_run
//! use ferrocsp_net::{ChanOps, Connection, Options};
//! let conn = Connection::connect(Options::new("nats://127.0.0.1:4222")).unwrap();
//! let ch = conn.channel("jobs", 0).unwrap();
//! let _w = ch.write(&conn, b"hello".to_vec().into(), None);
//! let r = ch.read(&conn, None);
//! r.wait(None);
//! assert_eq!(&r.take().unwrap().unwrap()[..], b"hello");
//! ```

#![warn(missing_docs)]

mod batch;
mod buffered;
mod busy;
mod chan;
mod claim;
mod conn;
mod counts;
mod error;
mod fresh;
mod lease;
mod link;
mod lock;
mod op;
mod options;
mod out_pump;
mod placeholder;
mod pulls;
mod reaper;
mod recent;
mod rendezvous;
mod reserve;
mod stats;
mod turn;
pub mod wire;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

pub use bytes::Bytes;
pub use chan::{Chan, EndKind, Offer, Status, TicketOp};
pub use conn::Connection;
pub use counts::EndCount;
pub use error::NetError;
pub use op::Op;
pub use options::Options;
pub use stats::Stats;

use stats::BusyGuard;

pub(crate) async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves once the connection gave up on its lost server (checked every 250 ms: a waiting
/// read has no request of its own in flight that could fail).
pub(crate) async fn lost(conn: &link::Inner) -> NetError {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if let Some(e) = conn.gave_up() {
            return e;
        }
    }
}

/// Operations on a channel; each runs on `conn`'s runtime.
pub trait ChanOps {
    /// Writes `value`, completing when a reader took it (rendezvous) or the server stored it
    /// (buffered), or failing by `deadline`.
    fn write(&self, conn: &Connection, value: Bytes, deadline: Option<Instant>) -> Op<()>;
    /// Reads one value, or fails by `deadline`.
    fn read(&self, conn: &Connection, deadline: Option<Instant>) -> Op<Bytes>;
    /// Writes `values` in order, many per round trip on a buffered channel (`batch.rs`: slots
    /// reserved together, then filled together; one by one on a rendezvous channel). `written`
    /// counts the values stored so far, always the first ones; on `Timeout` or `Cancelled`
    /// exactly those were sent. Fails by `deadline` only while no slot is free.
    fn write_many(
        &self,
        conn: &Connection,
        values: Vec<Bytes>,
        deadline: Option<Instant>,
        written: Arc<AtomicUsize>,
    ) -> Op<()>;
    /// Reads between 1 and `max` values (at most 1024): what is there at once, or, if nothing
    /// is, waits for one as `read` does and takes what came with it (a rendezvous channel
    /// reads one).
    fn read_many(&self, conn: &Connection, max: usize, deadline: Option<Instant>)
        -> Op<Vec<Bytes>>;
    /// Poisons the channel for every participant.
    fn poison(&self, conn: &Connection) -> Op<()>;
    /// The channel's stats, from the server and a survey of every participant (`stats.rs`).
    fn stats(&self, conn: &Connection) -> Op<Stats>;
    /// Counts, on the server, what happens to an end of `kind` (made, retired, sent, ...).
    fn count_end(&self, conn: &Connection, kind: EndKind, how: EndCount) -> Op<()>;
    /// Issues, claims or voids the ticket of an end of `kind` travelling in a message
    /// (`Chan`'s module doc); a claim resolves to whether it took a live ticket.
    fn ticket(&self, conn: &Connection, kind: EndKind, ticket: String, op: TicketOp) -> Op<bool>;
    /// Installs where values go for Alts of this process (see [`Offer`]).
    fn set_offer(&self, offer: Arc<dyn Offer>);
    /// An Alt of this process starts (`up`) or stops waiting with this channel as a guard.
    fn alt_demand(&self, conn: &Connection, up: bool) -> Result<(), NetError>;
    /// An Alt of this process starts (`up`) or stops waiting with an Output guard on this
    /// channel.
    fn alt_out_demand(&self, conn: &Connection, up: bool) -> Result<(), NetError>;
    /// A selecting reader of this process that won hold `hold` takes its value (`None`: the
    /// writer released it; select again).
    fn alt_take(&self, conn: &Connection, hold: u64) -> Op<Option<Bytes>>;
    /// Sends the value of a chosen Output guard to the reader held for it (rendezvous) or into
    /// the slot reserved for it (buffered); call once per Output guard of this process that
    /// fired.
    fn commit(&self, conn: &Connection, value: Bytes) -> Op<()>;
}

impl ChanOps for Arc<Chan> {
    fn write(&self, conn: &Connection, value: Bytes, deadline: Option<Instant>) -> Op<()> {
        let chan = Arc::clone(self);
        let busy = BusyGuard::new(self, false);
        if chan.capacity == 0 {
            conn.spawn(move |c| busy.during(rendezvous::write(chan, value, deadline, c)))
        } else {
            conn.spawn(move |c| busy.during(buffered::write(chan, value, deadline, c)))
        }
    }

    fn read(&self, conn: &Connection, deadline: Option<Instant>) -> Op<Bytes> {
        let chan = Arc::clone(self);
        let busy = BusyGuard::new(self, true);
        if chan.capacity == 0 {
            conn.spawn(move |c| busy.during(rendezvous::read(chan, deadline, c)))
        } else {
            conn.spawn(move |c| busy.during(buffered::read(chan, deadline, c)))
        }
    }

    fn write_many(
        &self,
        conn: &Connection,
        values: Vec<Bytes>,
        deadline: Option<Instant>,
        written: Arc<AtomicUsize>,
    ) -> Op<()> {
        let chan = Arc::clone(self);
        let busy = BusyGuard::new(self, false);
        if chan.capacity > 0 {
            return conn.spawn(move |c| {
                busy.during(batch::write_many(chan, values, deadline, c, written))
            });
        }
        conn.spawn(move |c| {
            busy.during(async move {
                for v in values {
                    rendezvous::write(Arc::clone(&chan), v, deadline, c.clone()).await?;
                    written.fetch_add(1, std::sync::atomic::Ordering::Release);
                }
                Ok(())
            })
        })
    }

    fn read_many(
        &self,
        conn: &Connection,
        max: usize,
        deadline: Option<Instant>,
    ) -> Op<Vec<Bytes>> {
        let chan = Arc::clone(self);
        let busy = BusyGuard::new(self, true);
        if chan.capacity > 0 {
            return conn.spawn(move |c| busy.during(batch::read_many(chan, max, deadline, c)));
        }
        conn.spawn(move |c| {
            busy.during(async move { Ok(vec![rendezvous::read(chan, deadline, c).await?]) })
        })
    }

    fn poison(&self, conn: &Connection) -> Op<()> {
        let chan = Arc::clone(self);
        conn.spawn(move |_| async move { chan.poison_now().await })
    }

    fn stats(&self, conn: &Connection) -> Op<Stats> {
        let chan = Arc::clone(self);
        conn.spawn(move |_| stats::stats(chan))
    }

    fn count_end(&self, conn: &Connection, kind: EndKind, how: EndCount) -> Op<()> {
        let chan = Arc::clone(self);
        conn.spawn(move |_| async move { chan.count_end_now(kind, how).await })
    }

    fn ticket(&self, conn: &Connection, kind: EndKind, ticket: String, op: TicketOp) -> Op<bool> {
        let chan = Arc::clone(self);
        conn.spawn(move |_| async move { chan.ticket_now(kind, &ticket, op).await })
    }

    fn set_offer(&self, offer: Arc<dyn Offer>) {
        *lock::lock(&self.offer) = Some(offer);
    }

    fn alt_demand(&self, conn: &Connection, up: bool) -> Result<(), NetError> {
        let rt = conn.runtime()?;
        let _in_rt = rt.enter();
        if self.capacity == 0 {
            rendezvous::alt_demand(self, up);
        } else {
            buffered::alt_demand(self, up);
        }
        Ok(())
    }

    fn alt_out_demand(&self, conn: &Connection, up: bool) -> Result<(), NetError> {
        let rt = conn.runtime()?;
        let _in_rt = rt.enter();
        out_pump::alt_out_demand(self, up);
        Ok(())
    }

    fn alt_take(&self, conn: &Connection, hold: u64) -> Op<Option<Bytes>> {
        let chan = Arc::clone(self);
        let busy = BusyGuard::new(self, true);
        conn.spawn(move |c| busy.during(rendezvous::alt_take(chan, hold, c)))
    }

    fn commit(&self, conn: &Connection, value: Bytes) -> Op<()> {
        let chan = Arc::clone(self);
        let won = out_pump::take_won(&chan);
        if chan.conn.opts.drop_commits {
            return Op::ready(Ok(()));
        }
        let busy = BusyGuard::new(self, false);
        if chan.capacity == 0 {
            conn.spawn(move |c| busy.during(rendezvous::commit(chan, value, won, c)))
        } else {
            conn.spawn(move |c| busy.during(reserve::commit(chan, value, won, c)))
        }
    }
}
