//! How a Python caller waits for a networked operation (`ferrocsp_net::Op`), and the Python
//! exception of a network error.
//!
//! Invariants:
//! - A thread waits in `pythread::wait_thread` with the GIL released: the main thread in
//!   `SIGNAL_SLICE`s with Python's signal handlers run between them; an interrupt withdraws
//!   the operation (`Op::cancel`) and waits for its outcome: if it completed in the race, the
//!   result is kept and the interrupt re-armed, so no value is lost to Ctrl-C.
//! - A greenlet task switches to other greenlets instead and is woken by the operation's
//!   completion callback (no thread of its own).
//! - While it waits, the wait is shown by `csp.dump()` (`Shown`).

use std::sync::Arc;

use ferrocsp_net::{NetError, Op};
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::errors::{to_pyerr, OpName};
use crate::pythread::wait_thread;

pub(crate) fn net_err(py: Python<'_>, e: NetError, op: OpName, chan: &str) -> PyErr {
    match e {
        NetError::Poisoned => to_pyerr(py, ferrocsp::Error::Poisoned, op, chan),
        NetError::Retired => to_pyerr(py, ferrocsp::Error::Retired, op, chan),
        NetError::Timeout => to_pyerr(py, ferrocsp::Error::Timeout, op, chan),
        NetError::Cancelled => match py.import("asyncio").and_then(|m| m.getattr("CancelledError"))
        {
            Ok(t) => PyErr::from_type(
                t.cast_into().unwrap_or_else(|_| py.get_type::<PyRuntimeError>()),
                "cancelled",
            ),
            Err(e) => e,
        },
        NetError::Unreachable(_) | NetError::Refused(_) | NetError::Closed => {
            PyConnectionError::new_err(e.to_string())
        }
        NetError::Invalid(m) => PyValueError::new_err(m),
        NetError::Protocol(_) => PyRuntimeError::new_err(e.to_string()),
    }
}

/// Waits for `op`: a thread with the GIL released (see the module invariants); a greenlet
/// task switches to other greenlets and is woken by the operation's completion callback (no
/// thread of its own). `what` (channel, write?) is recorded for `csp.dump()` while it waits.
pub(crate) fn wait_op<T: Send + 'static>(
    py: Python<'_>,
    op: &Op<T>,
    what: Option<(&str, bool)>,
) -> PyResult<Result<T, NetError>> {
    if op.is_done() {
        return Ok(op.take().unwrap_or(Err(NetError::Closed)));
    }
    let _shown = match what {
        Some((chan, write)) => Some(Shown::new(py, chan, write)?),
        None => None,
    };
    if let Some(task) = crate::sched::current_task() {
        return wait_op_in_greenlet(py, &task, op);
    }
    let done = |op: &Op<T>| Some(op.take().unwrap_or(Err(NetError::Closed)));
    wait_thread(
        py,
        |py, slice| Ok(if crate::detach::detach(py, || op.wait(slice)) { done(op) } else { None }),
        |py| {
            op.cancel();
            crate::detach::detach(py, || op.wait(None));
            // Only a completed operation is kept; a withdrawn or failed one yields to the
            // interrupt.
            match op.take() {
                Some(Ok(v)) => Some(Ok(v)),
                _ => None,
            }
        },
    )
}

/// A networked wait as `csp.dump()` shows it (the participant's record), for as long as the
/// value lives.
struct Shown(std::sync::Arc<crate::deadlock::Participant>);

impl Shown {
    fn new(py: Python<'_>, chan: &str, write: bool) -> PyResult<Self> {
        let me = crate::process::current(py)?;
        me.set_shared(Some(vec![(chan.to_owned(), write)]), true);
        Ok(Shown(me))
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.0.set_shared(None, true);
    }
}

fn wait_op_in_greenlet<T: Send + 'static>(
    py: Python<'_>,
    task: &Arc<crate::sched::Task>,
    op: &Op<T>,
) -> PyResult<Result<T, NetError>> {
    let waker = Arc::clone(task);
    op.on_done(move || ferrocsp::Wake::wake(&*waker));
    while !op.is_done() {
        task.next_wait_gen();
        if let Err(interrupt) = task.switch_out(py) {
            // Thrown in (the network is ending): withdraw; a result that won stands.
            op.cancel();
            while !op.is_done() && task.switch_out(py).is_ok() {}
            if !op.is_done() {
                crate::detach::detach(py, || op.wait(None));
            }
            return match op.take() {
                Some(Ok(v)) => Ok(Ok(v)),
                _ => Err(interrupt),
            };
        }
    }
    Ok(op.take().unwrap_or(Err(NetError::Closed)))
}
