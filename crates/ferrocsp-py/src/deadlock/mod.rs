//! Who waits on what: the participant registry, and deadlock detection on top of it.
//!
//! Every blocked wait records who waits on what and since when (Go's wait reasons): that one
//! record powers `Deadlock` reports and `_participants()` (dump, graph).
//!
//! **Participants** are every ferrocsp process (a thread process from its start, a greenlet
//! task from its spawn, an asyncio process from its first step) and every other Python thread
//! from its first blocking channel operation on. A thread participant leaves the registry when
//! its thread ends (a thread-local destructor), a greenlet or asyncio one when its process ends.
//!
//! A participant is **stuck** while it waits for its own processes (`join`/`run` without a
//! timeout), or while it is blocked in a channel operation or Alt with no Timeout or deadline
//! pending, outside `io()`, and its selection cell is still `Waiting`. A **deadlock** is the
//! moment every participant is stuck, at least one of them in a channel operation, and nothing
//! else can run: every live Python thread hosts participants (or is an idle `io()` worker), and
//! every asyncio task on a loop hosting participants is a participant. Then nobody can ever
//! complete any of the selections, so each blocked operation raises `Deadlock`.
//!
//! Detection costs the fast path nothing: the non-blocking path never looks at the registry.
//! A blocking operation on a thread or in asyncio updates its own participant's record (an
//! uncontended mutex) and one global counter of participants that are not stuck; a greenlet
//! task only writes a [`LocalWait`] (no lock, no shared atomic), which its hub publishes when
//! the scheduler runs out of work. When the counter drops to zero the watchdog thread
//! (started lazily) waits [`GRACE`], looks without the GIL, and only then checks, with the
//! GIL:
//!
//! 1. snapshot every participant (record generation, stuck, cell still waiting);
//! 2. look at the Python threads and asyncio tasks (no registry lock held: Python code may
//!    release the GIL);
//! 3. snapshot again: if no record changed, every participant was stuck during the whole
//!    interval (a double collect), so nothing that ran in between could complete a wait.
//!
//! Then, for each blocked participant, it stores the report in the record, aborts the cell
//! (`Signal::try_abort`) and wakes the owner with its backend's waker. The owner's
//! `Select::resume` then gives `WouldBlock` while the selection is still registered, which
//! happens only for a cell aborted by someone else: [`Participant::deadlocked`] withdraws the
//! selection and raises `Deadlock`. If the cell was completed first (only a thread that is no
//! participant could have done it), the watchdog's abort fails, the report is dropped and the
//! operation's result stands. Aborting in the watchdog (not in the owner) means a peer that
//! raises first and poisons its channels cannot turn the others' reports into clean
//! `ChannelPoisoned` ends. A check that fails because some thread or task is not a participant
//! is retried with a backoff while the counter stays zero.
//!
//! **Across OS processes** (`cross.rs`): in a process of an OS-process network, a local
//! proof is not a verdict (a peer process may still run); it is published in the network's
//! participant table in shared memory (`ferrocsp::shm::Table`), and a deadlock is declared
//! when every process of the network has published one, each wait on a shared channel having
//! been confirmed still waiting since the last change anywhere (see `cross.rs`).
//!
//! `FERROCSP_DEADLOCK=off` (read once) disables detection; the registry still records waits.
//!
//! Modules: `record` (what a record holds), `participant` (the registry and its counter),
//! `caller` (who the caller is; the Python API), `watchdog` (the in-process proof and
//! declaration), `cross` (the participant table shared by an OS-process network),
//! `xwait` (confirming waits on shared channels for it), `slot_text` (what a process writes
//! in its slot, and the report made of them), `fork` (per-process state, so a child made by
//! `fork` starts clean). Imports point one way, down this list: `caller` -> `watchdog` ->
//! `xwait` -> `cross` -> `slot_text` -> `participant` -> `record`, `fork` (a module names only
//! modules after it;
//! `mod.rs` holds `lock` and the re-exports). Where a lower module must reach a higher one it
//! calls a function pointer the higher one set (`participant::on_running`, set by `cross`
//! when the process attaches to a table), and the watchdog thread is started by `caller`,
//! which registers participants.
//!
//! At interpreter exit `_stop_watchdog` (an `atexit` hook) waits until the watchdog is outside
//! Python and keeps it out: a thread that takes the GIL once the interpreter is finalizing is
//! ended by `pthread_exit`, whose forced unwind aborts the process when it meets Rust frames,
//! and a declared deadlock's asyncio wake-ups (`call_soon_threadsafe`, which writes to the
//! loop's socket with the GIL released) used to race the main thread's exit that way.
//!
//! Lock order: `IN_PYTHON` -> GIL (when held) -> `REGISTRY` -> one participant's `inner`. The
//! watchdog takes the GIL before any registry lock; owners never wait for the GIL while holding
//! one; `_stop_watchdog` releases the GIL before taking `IN_PYTHON`.

use std::sync::{Mutex, MutexGuard};

mod caller;
pub(crate) mod cross;
mod fork;
mod participant;
mod record;
mod slot_text;
mod watchdog;
mod xwait;

pub(crate) use caller::{
    _idle_thread, _ignore_thread, _participant_enter, _participant_exit, _participants,
    _stop_watchdog, async_participant, async_participant_in, coroutine_participant,
    greenlet_participant, leave_thread, thread_participant, ParticipantRef,
};
pub(crate) use participant::{deadlock_error, thread_ident, Participant};
pub(crate) use record::{Desc, LocalWait};
pub(crate) use watchdog::attach_unless_exiting;
pub(crate) use xwait::{CoopWait, SharedSleep};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
