//! `ferrocsp._native._ShmChannel`: the engine's shared-memory channel for the Python layer
//! (`ferrocsp._shm`), which pickles values into parts; how those parts travel as one message
//! is `shm_msg.rs`; `blocking`, how a Python caller waits on it. The choice over shared
//! channels is `shm_select.rs`; what a `Channel` that moved here does, `shm_side.rs`.
//!
//! Invariants:
//! - A thread's wait releases the GIL; in the main thread it wakes every `SIGNAL_SLICE` to run
//!   Python's signal handlers, and an interrupt withdraws the operation (nothing sent/taken).
//!   A greenlet's or an asyncio task's wait switches away instead (`shm_coop.rs`): no thread
//!   of its own, whatever the number of waiting operations.

use std::time::{Duration, Instant};

use ferrocsp::shm::{PoisonCause, ShmChannel, Wait};
use ferrocsp::Error;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::errors::{to_pyerr_why, OpName};
use crate::pythread::{deadline, Interrupts};
use crate::shm_msg as msg;

/// Other threads also wake now and then: to take the segment's lock, which notices a peer
/// that died holding it (robust mutex) even when no live process will ever wake them.
const OWNER_CHECK: Duration = Duration::from_millis(500);
/// How long a `nowait` rendezvous write (or Output guard) that found a reader waiting waits
/// for that reader to take the value when it is called from a thread running an asyncio loop,
/// with no cooperative sleeper, while cooperative readers wait on the channel: the reader may
/// be a coroutine of that loop, which cannot run until the call returns (see `blocking`). A
/// reader elsewhere takes it within microseconds.
const NOWAIT_TAKE: Duration = Duration::from_millis(10);
/// A channel in a shared-memory segment (private: use ``Channel``, which moves there when it
/// is first sent to another OS process).
#[pyclass(frozen, module = "ferrocsp._native", name = "_ShmChannel")]
#[derive(Debug)]
pub struct PyShmChannel {
    inner: ShmChannel,
    name: String,
}

/// Runs `f` with a `Wait` for the caller. A greenlet task or an asyncio operation greenlet
/// sleeps cooperatively (`shm_coop.rs`: GIL held, it switches away while it waits). A thread
/// sleeps with the GIL released; in the main thread in 50 ms slices with Python's signal
/// handlers run between them (an exception they raise is left pending and reported as
/// `Interrupted`).
pub(crate) fn blocking<T: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    nowait: bool,
    coop_nowait: bool,
    f: impl for<'w> FnOnce(&mut Wait<'w>) -> Result<T, Error> + Send,
) -> PyResult<Result<T, Error>> {
    // Even a `nowait` operation may wait: a rendezvous write that found a reader waiting
    // waits for it to take the value. If that reader may be another greenlet or task of this
    // very thread (`coop_nowait`), a thread sleep would never let it run: sleep cooperatively.
    // Otherwise the take comes within microseconds, and a thread sleep (a spin first) is the
    // fast way.
    let coop = if nowait && !coop_nowait { None } else { crate::shm_coop::sleeper(py) };
    if let Some(mut coop) = coop {
        let mut never = || false;
        let r = f(&mut Wait {
            deadline,
            nowait,
            slice: None,
            interrupted: &mut never,
            sleeper: Some(&mut coop),
        });
        // Deadlock detection across OS processes (`deadlock/xwait.rs`); an exception thrown
        // in (a cancellation) wins over a verdict, as a signal does for a thread.
        if let Some(msg) = coop.x.finish(r.is_err() && coop.err.is_none()) {
            return Err(crate::deadlock::deadlock_error(py, msg));
        }
        return match (coop.err.take(), r) {
            (Some(e), Err(Error::Interrupted)) => Err(e),
            // Completed although an exception was thrown in: the result stands.
            (_, r) => Ok(r),
        };
    }
    // No cooperative sleeper here, yet this thread runs an asyncio event loop (an asyncio
    // task's plain `write_nowait`, say) whose coroutine may be the reader, which cannot run
    // until we return: wait for the take only briefly, then withdraw the value (nothing was
    // sent) and answer `WouldBlock`, rather than wait for ever.
    let own_loop = nowait && coop_nowait && running_loop(py);
    let (deadline, bounded) = match (own_loop, deadline) {
        (false, d) => (d, false),
        (true, Some(d)) if d <= Instant::now() + NOWAIT_TAKE => (Some(d), false),
        (true, _) => (Some(Instant::now() + NOWAIT_TAKE), true),
    };
    let mut interrupts = Interrupts::new(py)?;
    // Deadlock detection across OS processes sees this wait (`deadlock/xwait.rs`).
    let mut x = crate::deadlock::SharedSleep::enter(deadline.is_none() && !nowait);
    let mut dead: Option<String> = None;
    let slice = interrupts.slice(Some(x.slice(OWNER_CHECK)));
    let r = crate::detach::detach(py, || {
        let mut check = || {
            if let Some(msg) = x.tick() {
                dead = Some(msg);
                return true;
            }
            // Not `Python::attach`: taking the GIL back at exit would end this thread by an
            // unwind through these frames (`detach.rs`).
            crate::detach::attach(|py| interrupts.check(py))
        };
        let mut w = Wait { deadline, nowait, slice, interrupted: &mut check, sleeper: None };
        f(&mut w)
    });
    // A pending signal (Ctrl-C) wins over a verdict: it must not be lost.
    if let Some(msg) = x.finish(r.is_err() && !interrupts.raised(), dead) {
        return Err(crate::deadlock::deadlock_error(py, msg));
    }
    interrupts.finish(py, matches!(r, Err(Error::Interrupted)))?;
    Ok(match r {
        Err(Error::Timeout) if bounded => Err(Error::WouldBlock),
        r => r,
    })
}

/// Whether this thread runs an asyncio event loop now (`asyncio._get_running_loop`).
fn running_loop(py: Python<'_>) -> bool {
    static GET: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    GET.import(py, "asyncio", "_get_running_loop")
        .and_then(|f| f.call0())
        .is_ok_and(|l| !l.is_none())
}

impl PyShmChannel {
    pub(crate) fn create(capacity: usize, ring_bytes: usize, name: &str) -> PyResult<Self> {
        let inner = ShmChannel::create(capacity, ring_bytes)
            .map_err(|e| PyOSError::new_err(format!("cannot create shared channel: {e}")))?;
        Ok(PyShmChannel { inner, name: name.to_owned() })
    }

    /// Attaches to the channel `uuid` held by process `pid` as descriptor `fd`.
    pub(crate) fn attach_to(pid: u32, fd: i32, uuid: &[u8], name: &str) -> PyResult<Self> {
        let uuid: [u8; 16] =
            uuid.try_into().map_err(|_| PyValueError::new_err("uuid must be 16 bytes"))?;
        let inner = ShmChannel::attach(pid, fd, &uuid)
            .map_err(|e| PyOSError::new_err(format!("cannot attach to channel '{name}': {e}")))?;
        Ok(PyShmChannel { inner, name: name.to_owned() })
    }

    /// The engine channel.
    pub(crate) fn engine(&self) -> &ShmChannel {
        &self.inner
    }

    /// The channel's name (for messages).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `write`, for Rust callers (`shm_side.rs`).
    pub(crate) fn write_parts(
        &self,
        py: Python<'_>,
        parts: &Bound<'_, PyList>,
        kinds: &[u8],
        timeout: Option<f64>,
        nowait: bool,
        adopted: bool,
    ) -> PyResult<()> {
        let bufs_owned = msg::parts(parts, kinds)?;
        let total = msg::inline_len(&bufs_owned);
        let dl = deadline(timeout);
        let bufs = &bufs_owned;
        let remote = msg::goes_remote(&self.inner, bufs);
        let loan = msg::loan_of(&self.inner, bufs)
            .filter(|_| !adopted)
            .and_then(|l| Some((l, l.get().identity()?)));
        let loan_id = loan.as_ref().map(|l| l.1);
        // A cooperative reader anywhere may be one of this thread's (see `blocking`).
        let coop_nowait = self.inner.coop_waiting();
        let r = blocking(py, dl, nowait, coop_nowait, move |w| {
            if let Some((fd, uuid, len)) = loan_id {
                // No copy: the reader maps the loan itself while we stay blocked (our
                // descriptor stays open until it has taken the message).
                let mut slot = self.inner.begin_write(msg::loan_len(), w)?;
                msg::fill_loan(slot.buf(), fd, &uuid, len);
                let rejected = slot.commit_then(w, msg::rejected)?;
                if !rejected {
                    return Ok(true);
                }
                // The reader may not open our descriptors (ptrace rules): send the bytes.
            } else if remote {
                // One copy: the reader reads the parts straight out of this process's memory
                // (they stay exported, and we stay blocked, until it has taken them).
                let mut slot = self.inner.begin_write(msg::remote_len(bufs.len()), w)?;
                msg::fill_remote(slot.buf(), bufs);
                let rejected = slot.commit_then(w, msg::rejected)?;
                if !rejected {
                    return Ok(false);
                }
                // The reader may not read our memory (ptrace rules): send the bytes inline.
            }
            msg::write_inline(&self.inner, bufs, total, adopted, w).map(|()| false)
        })?;
        let handed = r.map_err(|e| self.err(py, e, OpName::Write))?;
        if let Some((l, _)) = loan.filter(|_| handed) {
            let l = l.clone_ref(py);
            // The reader has mapped the loan: let go of ours (no export of it is left once
            // the parts are dropped).
            drop(bufs_owned);
            l.get().handed_over();
        }
        Ok(())
    }

    /// The Python exception for `e` from `op` on this channel, saying why it is poisoned.
    pub(crate) fn err(&self, py: Python<'_>, e: Error, op: OpName) -> PyErr {
        let why = match self.inner.poison_cause() {
            Some(PoisonCause::OwnerDied) => Some("a process died holding its lock"),
            Some(PoisonCause::PeerDied) => {
                Some("a process died while taking a value from it: the value is lost with it")
            }
            Some(PoisonCause::Corrupt) => Some(
                "its shared segment is corrupt: another process wrote to it outside the \
                 protocol, or died half-way through an update",
            ),
            Some(PoisonCause::Poisoned) | None => None,
        };
        to_pyerr_why(py, e, op, &self.name, why)
    }

    /// `read`, for Rust callers (`shm_side.rs`).
    pub(crate) fn read_parts<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        nowait: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let dl = deadline(timeout);
        loop {
            // A `nowait` read never waits.
            let slot = blocking(py, dl, nowait, false, |w| self.inner.begin_read(w))?
                .map_err(|e| self.err(py, e, OpName::Read))?;
            if let Some(out) = msg::take(py, slot, &|e| self.err(py, e, OpName::Read))? {
                return Ok(out);
            }
            // The writer sends its message inline now: read that.
        }
    }
}

/// What Python sees of a shared channel's engine (`_ShmSide.native`): identity, for tests and
/// `_shm_select`; every operation goes through `shm_side.rs`.
#[pymethods]
impl PyShmChannel {
    /// The segment's identifier (16 bytes).
    #[getter]
    fn uuid<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.uuid())
    }

    /// This process's descriptor of the segment.
    #[getter]
    fn fd(&self) -> i32 {
        self.inner.fd()
    }

    /// The buffer size; 0 for rendezvous.
    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}
