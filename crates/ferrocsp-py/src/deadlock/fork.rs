//! Forking while detection runs: a child made by `fork` inherits every lock in whatever state
//! another thread held it, and has none of those threads to release it; it also inherits the
//! parent's participants (threads and tasks it does not have) and the watchdog's state without
//! the watchdog.
//!
//! So every lock and count of the registry, the watchdog and the publication is a
//! [`PerProcess`] value: the first use in a child made by `fork` finds that the fork
//! generation moved (a `pthread_atfork` child handler bumps it, inside `fork` itself) and
//! makes a fresh one, leaking the parent's (with whatever lock it held). A participant
//! remembers the generation it was registered in (`Participant::here`); one of the parent's
//! is never touched in the child (its lock may be held), nor counted.
//!
//! Invariants:
//! - The generation and `PerProcess` are the engine's (`ferrocsp::shm::PerProcess`), shared with
//!   its own per-process state (the futex watchers, the cells registry), so one child handler
//!   serves both.

pub(super) use ferrocsp::shm::{fork_generation as generation, PerProcess};
