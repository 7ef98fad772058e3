//! `write_many` / `read_many` of `Channel`, `Reader` and `Writer`: many values per call, on
//! every transport. A buffered networked channel has a native batch (`net_side.rs`, and
//! `batch.rs` of `ferrocsp-net`: many values per round trip); every other transport runs the
//! single operations in a loop on the object itself (its `write` / `read` / `read_nowait`), so
//! the batch keeps whatever those do (ends checked, a move to shared memory followed, waits
//! shown by `dump()` and seen by deadlock detection).
//!
//! Invariants:
//! - Arguments are checked before anything is sent or taken: `TypeError` / `ValueError`.
//! - Every exception out of `write_many` carries `written`: the number of values, from the
//!   start of the iterable, that were written; the values after them were not (the iterator
//!   may have been advanced past them). One `timeout` bounds the whole call.
//! - `read_many` returns between 1 and `max_n` values and never drops one it took: it waits
//!   only for the first; a later value that is not there at once ends the batch, and so does
//!   poison or end-of-stream after the first (the next call raises it). An unexpected
//!   exception after values were taken carries them as `values`.

use std::time::Instant;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyInt, PyIterator, PyList, PyType};

use crate::errors::parse_timeout;
use crate::net_side::NetSide;
use crate::pythread::deadline;

static CSP_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The values of `write_many`, as an iterator (a clear `TypeError` for anything else).
fn iterate<'py>(values: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyIterator>> {
    values.try_iter().map_err(|_| {
        let ty = values.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!("write_many() takes an iterable of values, not {ty}"))
    })
}

/// `max_n` of `read_many`: an int >= 1.
fn parse_max(max_n: &Bound<'_, PyAny>) -> PyResult<usize> {
    if max_n.is_instance_of::<PyBool>() || !max_n.is_instance_of::<PyInt>() {
        let ty = max_n.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
        return Err(PyTypeError::new_err(format!("read_many() max_n must be an int, not {ty}")));
    }
    let n: i128 = max_n.extract()?;
    if n < 1 {
        return Err(PyValueError::new_err(format!("read_many() max_n must be >= 1, got {n}")));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Seconds left until `until` (`None`: no deadline), as a `timeout=` argument.
/// (A timeout too long to be a deadline is as good as none.)
pub(crate) fn left(until: Option<Instant>) -> Option<f64> {
    until.map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64())
}

/// `e` with attribute `written = n` (how many values of the batch were written).
pub(crate) fn with_written(py: Python<'_>, e: PyErr, n: usize) -> PyErr {
    // An exception type without a writable attribute dictionary keeps its own message only.
    let _ = e.value(py).setattr("written", n);
    e
}

/// `ch.write_many(values, timeout=...)` for `target` (a channel or writer end) whose
/// networked side is `net` (checked already where `target` is an end).
pub(crate) fn write_many(
    py: Python<'_>,
    target: &Bound<'_, PyAny>,
    net: Option<&NetSide>,
    name: &str,
    values: &Bound<'_, PyAny>,
    timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let t = parse_timeout(timeout)?;
    let it = iterate(values)?;
    if let Some(n) = net.filter(|n| n.buffered()) {
        return n.write_many(py, name, &it, deadline(t));
    }
    let until = deadline(t);
    // `n`: how many values were written before this one.
    for (n, v) in it.enumerate() {
        let v = v.map_err(|e| with_written(py, e, n))?;
        let kw = PyDict::new(py);
        kw.set_item("timeout", left(until))?;
        target.call_method("write", (v,), Some(&kw)).map_err(|e| with_written(py, e, n))?;
    }
    Ok(())
}

/// `ch.read_many(max_n, timeout=...)` for `target` (a channel or reader end) whose networked
/// side is `net` (checked already where `target` is an end).
pub(crate) fn read_many<'py>(
    py: Python<'py>,
    target: &Bound<'py, PyAny>,
    net: Option<&NetSide>,
    name: &str,
    max_n: &Bound<'py, PyAny>,
    timeout: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let max = parse_max(max_n)?;
    let t = parse_timeout(timeout)?;
    if let Some(n) = net.filter(|n| n.buffered()) {
        return n.read_many(py, name, max, deadline(t));
    }
    let kw = PyDict::new(py);
    kw.set_item("timeout", t)?;
    let out = PyList::new(py, [target.call_method("read", (), Some(&kw))?])?;
    let csp_error = CSP_ERROR.import(py, "ferrocsp._errors", "CSPError")?;
    while out.len() < max {
        match target.call_method0("read_nowait") {
            Ok(v) => out.append(v)?,
            // Nothing more at once (WouldBlock), or poison / end-of-stream: the batch ends
            // here with what it took; the next operation sees the rest.
            Err(e) if e.is_instance(py, csp_error.as_any()) => break,
            Err(e) => {
                let _ = e.value(py).setattr("values", &out);
                return Err(e);
            }
        }
    }
    Ok(out)
}
