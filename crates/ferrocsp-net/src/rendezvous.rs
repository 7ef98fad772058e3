//! Rendezvous (capacity 0) over NATS request/reply.
//!
//! Protocol, channel `N`:
//! - A writer sends its value as a request on `ferrocsp.N.w` with header `Csp-Id` (unique per
//!   value, kept across re-sends) and waits for the reply:
//!   `+` taken (the write completes), `-` the chosen reader has no read waiting any more,
//!   `P` poisoned. "No responders" means no reader is waiting anywhere yet: not a loss.
//!   After `-` or no responders it waits for a notice on `ferrocsp.N.ready` (a reader began
//!   waiting), with a backoff from 1 ms to 100 ms as a safety net, and sends again.
//!   No reply within `ack_timeout` (a reader died after receiving, before replying): it sends
//!   the same value again with the same id.
//! - A process subscribes to `ferrocsp.N.w` in queue group `r` only while it has reads
//!   waiting (plus a short linger), so NATS gives each request to one process that wants a
//!   value; it publishes `ferrocsp.N.ready` when it subscribes, and when a read starts
//!   waiting after it turned a writer away.
//! - A request is handed to the oldest waiting read of the process (waiting up to `GRACE`
//!   for one if none is there: a reader in a loop is about to ask again), else offered to a
//!   waiting Alt of the process (`Offer::hold`: the Alt is committed first), then the value's
//!   id is claimed on the server (`claim.rs`): won, it is handed on and answered `+`; lost
//!   (another process took this id: a re-send whose first reply was lost), the reserved
//!   reader is given back and the writer answered `+` all the same. An id this process handed
//!   on recently is answered `+` at once (`recent.rs`, a cache in front of the claims).
//! - Output guards (an Alt of this process offering a value): the *output pump*
//!   (`out_pump.rs`) sends a claim (`Csp-Claim`, no value) on `ferrocsp.N.w`; the reader
//!   process holds its oldest waiting read, or commits a waiting input Alt with a hold marker
//!   (its one CAS), and answers `R <its direct subject ferrocsp.N.d.<prefix>> <hold>` (or
//!   `-`). The pump queues the hold in `reads.won`, then tries to win a waiting Output Alt
//!   (`Offer::take_output`, the writer's one CAS); the winner takes a queued hold and sends its
//!   value there (`Csp-Hold`); with no winner, one queued hold is released (`Csp-Release`).
//!   Holds expire after `ack_timeout`. docs/design.md has the state machine.
//!
//! Invariants:
//! - A value is taken by at most one read in the whole channel: only after its reader won the
//!   claim of its id. In a process, the hand-off pops the read from `reads.pending` under its
//!   lock, and a read that times out or is cancelled removes itself under the same
//!   lock; if it is no longer there, a value is on its way and it takes it (no loss).
//! - A write completes only after a reader took the value (the `+` reply follows the
//!   hand-off). A write withdrawn by timeout or cancellation has no request in flight (it only
//!   stops between attempts), so it was not delivered, except when a reader died without
//!   answering: then the value was taken by a process that no longer exists.
//! - The queue subscription runs while `reads.running`; the task clears it under the lock
//!   only when no read, input Alt or hold is pending, and drains the subscription so that no
//!   request routed to it before the unsubscribe goes unanswered.
//! - An Output guard's value leaves the process only after its Alt won, and only to a reader
//!   held for it (or, if that reader is gone, as an ordinary write with the same id): a held
//!   read or Alt gets exactly the committed value, or is given back (`Hand::Back`, or a
//!   dropped sender) and waits or selects again.
//! - `reads.won` holds at least one hold per Output Alt that won and has not committed yet
//!   (queued before the win is tried), so a winner never lacks one.

mod reader;
mod serve;
mod wire;
mod writer;

pub(crate) use reader::{alt_demand, alt_take, read};
pub(crate) use serve::{give_back, hold_alt, to_hold};
pub(crate) use writer::{claim_reader, commit, release_claim, write, Claimed};
