//! Engine errors as Python exceptions, with messages naming the channel and the process.
//!
//! The exception classes live in `ferrocsp._errors` (pure Python, so they document and pickle
//! like any other); this module imports them once and builds instances.

use ferrocsp::Error;
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::process::current_process_suffix;

pyo3::create_exception!(
    _native,
    Moved,
    pyo3::exceptions::PyException,
    "Internal: the operation's channel moved to another transport (shared memory) and nothing \
     was sent or taken; the caller retries there. Never reaches user code."
);

static POISONED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static RETIRED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static WOULD_BLOCK: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn class<'py>(
    py: Python<'py>,
    cell: &PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<Bound<'py, PyType>> {
    Ok(cell.import(py, "ferrocsp._errors", name)?.clone())
}

/// The `ChannelRetired` class (end-of-stream detection in iteration).
pub(crate) fn retired_type(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    class(py, &RETIRED, "ChannelRetired")
}

/// The `WouldBlock` class (a `nowait` attempt that must wait).
pub(crate) fn would_block_type(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    class(py, &WOULD_BLOCK, "WouldBlock")
}

/// What the failed operation was, for the message.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OpName {
    Read,
    Write,
    Select,
}

impl OpName {
    fn as_str(self) -> &'static str {
        match self {
            OpName::Read => "read",
            OpName::Write => "write",
            OpName::Select => "alt",
        }
    }
}

/// A Python exception for engine error `e` raised by `op` on the channel named `chan`.
/// Out of line: inlined, it widens the frames of the blocking path (see `sched::block`).
#[cold]
#[inline(never)]
pub(crate) fn to_pyerr(py: Python<'_>, e: Error, op: OpName, chan: &str) -> PyErr {
    to_pyerr_why(py, e, op, chan, None)
}

/// `to_pyerr`, saying why the channel was poisoned when that is known (`why`).
pub(crate) fn to_pyerr_why(
    py: Python<'_>,
    e: Error,
    op: OpName,
    chan: &str,
    why: Option<&str>,
) -> PyErr {
    let who = current_process_suffix(py);
    let op = op.as_str();
    let (cell, cls, msg) = match e {
        Error::Poisoned => (
            &POISONED,
            "ChannelPoisoned",
            match why {
                None => format!("{op} on channel '{chan}'{who}: channel is poisoned"),
                Some(why) => format!("{op} on channel '{chan}'{who}: channel is poisoned ({why})"),
            },
        ),
        Error::Retired => (
            &RETIRED,
            "ChannelRetired",
            format!("{op} on channel '{chan}'{who}: channel is retired"),
        ),
        Error::WouldBlock => {
            (&WOULD_BLOCK, "WouldBlock", format!("{op} on channel '{chan}'{who} would block"))
        }
        Error::Timeout => {
            return PyTimeoutError::new_err(format!("{op} on channel '{chan}'{who} timed out"));
        }
        // A signal handler's exception (Ctrl-C) is pending: that is what interrupted us.
        Error::Moved => return Moved::new_err(format!("{op} on channel '{chan}': channel moved")),
        Error::Interrupted => {
            return PyErr::take(py).unwrap_or_else(|| PyKeyboardInterrupt::new_err(()));
        }
        Error::TooLarge { len, max } => {
            return PyValueError::new_err(format!(
                "{op} on channel '{chan}'{who}: a message of {len} bytes is larger than the \
                 channel can carry ({max} bytes; set FERROCSP_SHM_RING_BYTES)"
            ));
        }
        Error::TooMany { what, max } => {
            return PyValueError::new_err(format!(
                "{op} on channel '{chan}'{who}: more than {max} {what}, the most a shared \
                 channel can have"
            ));
        }
        Error::Io { .. } => {
            return PyOSError::new_err(format!("{op} on channel '{chan}'{who}: {e}"));
        }
    };
    match class(py, cell, cls) {
        Ok(t) => PyErr::from_type(t, msg),
        Err(err) => err,
    }
}

/// An exception for using an end that was retired.
pub(crate) fn retired_end(py: Python<'_>, kind: &str, chan: &str) -> PyErr {
    let who = current_process_suffix(py);
    let msg = format!("{kind} end of channel '{chan}'{who} is retired");
    match class(py, &RETIRED, "ChannelRetired") {
        Ok(t) => PyErr::from_type(t, msg),
        Err(err) => err,
    }
}

/// Parses a `timeout=` argument: `None`, or a non-negative finite number of seconds.
pub(crate) fn parse_timeout(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    let Some(t) = timeout else { return Ok(None) };
    if t.is_none() {
        return Ok(None);
    }
    if t.is_instance_of::<pyo3::types::PyBool>()
        || !(t.is_instance_of::<pyo3::types::PyInt>() || t.is_instance_of::<pyo3::types::PyFloat>())
    {
        return Err(PyTypeError::new_err(format!(
            "timeout must be a number of seconds or None, not {}",
            t.get_type().name()?
        )));
    }
    let secs: f64 = t.extract()?;
    if secs.is_nan() || secs < 0.0 {
        return Err(PyValueError::new_err(format!("timeout must be >= 0 seconds, got {secs}")));
    }
    Ok(Some(secs))
}
