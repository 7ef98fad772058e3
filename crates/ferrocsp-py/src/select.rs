//! The native half of `ferrocsp.Alt`: run one selection over prepared operations.
//!
//! `ferrocsp._alt` validates guards and turns them into `(kind, target, value)` triples; this
//! module maps them onto one engine `Select` and waits with the GIL released. Kinds: 0 read
//! (Channel or Reader), 1 write (Channel or Writer, value), 2 skip, 3 timeout (seconds).
//!
//! Invariant: exactly one operation fires; a write's value is sent iff its index is returned.

use std::time::Duration;

use ferrocsp::{Error, Policy, Select, SelectError};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::channel::Channel;
use crate::ends::{Reader, Writer};
use crate::errors::{to_pyerr, OpName};
use crate::wait::{select_blocking, Value};

/// Resolves a read/write target to (engine channel, channel name, retired end?).
fn target(
    obj: &Bound<'_, PyAny>,
    write: bool,
) -> PyResult<(ferrocsp::Channel<Value>, String, bool)> {
    if let Ok(c) = obj.cast::<Channel>() {
        let c = c.get();
        return Ok((c.inner.clone(), c.name.clone(), false));
    }
    if write {
        if let Ok(w) = obj.cast::<Writer>() {
            let (chan, retired) = w.get().parts();
            return Ok((chan.inner.clone(), chan.name.clone(), retired));
        }
    } else if let Ok(r) = obj.cast::<Reader>() {
        let (chan, retired) = r.get().parts();
        return Ok((chan.inner.clone(), chan.name.clone(), retired));
    }
    let want = if write { "a Channel or Writer" } else { "a Channel or Reader" };
    Err(PyTypeError::new_err(format!("alt operation needs {want}, not {}", obj.get_type().name()?)))
}

/// Runs one selection. `policy`: 0 random, 1 priority, 2 fair (starting after `last`).
/// Returns `(index, value)`; `value` is None except for reads.
#[pyfunction]
#[pyo3(signature = (ops, policy, last = None, timeout = None))]
pub(crate) fn _select(
    py: Python<'_>,
    ops: Vec<(u8, Option<Bound<'_, PyAny>>, Option<Value>)>,
    policy: u8,
    last: Option<usize>,
    timeout: Option<f64>,
) -> PyResult<(usize, Option<Value>)> {
    let policy = match policy {
        0 => Policy::Random,
        1 => Policy::Priority,
        2 => Policy::Fair,
        p => return Err(PyValueError::new_err(format!("unknown selection policy {p}"))),
    };
    let mut sel: Select<Value> = Select::new();
    // Engine index -> op index (retired ends are left out: they can never fire).
    let mut index_of: Vec<usize> = Vec::with_capacity(ops.len());
    let mut names: Vec<String> = Vec::with_capacity(ops.len());
    // Every channel named in the selection, retired ends included (for the Retired message).
    let mut all_names: Vec<String> = Vec::new();
    for (i, (kind, obj, value)) in ops.into_iter().enumerate() {
        let mut name = String::new();
        match kind {
            0 | 1 => {
                let obj =
                    obj.ok_or_else(|| PyTypeError::new_err("alt operation without a channel"))?;
                let (chan, n, retired) = target(&obj, kind == 1)?;
                if !all_names.contains(&n) {
                    all_names.push(n.clone());
                }
                name = n;
                if retired {
                    continue;
                }
                if kind == 0 {
                    sel.read(&chan);
                } else {
                    sel.write(&chan, value.unwrap_or_else(|| py.None()));
                }
            }
            2 => {
                sel.skip();
            }
            3 => {
                let secs: f64 = match obj {
                    Some(o) => o.extract()?,
                    None => 0.0,
                };
                let d = Duration::try_from_secs_f64(secs).map_err(|_| {
                    PyValueError::new_err(format!("timeout must be >= 0 seconds, got {secs}"))
                })?;
                sel.timeout(d);
            }
            k => return Err(PyValueError::new_err(format!("unknown alt operation kind {k}"))),
        }
        index_of.push(i);
        names.push(name);
    }
    if policy == Policy::Fair {
        sel.set_last_selected(last.and_then(|l| index_of.iter().position(|&i| i == l)));
    }
    let deadline = crate::wait::deadline(timeout);
    match select_blocking(py, &mut sel, policy, deadline)? {
        Ok(s) => Ok((index_of[s.index], s.value)),
        Err(SelectError::Poisoned { index }) => {
            Err(to_pyerr(py, Error::Poisoned, OpName::Select, &names[index]))
        }
        Err(SelectError::Retired) => {
            // to_pyerr quotes the name: "alt on channel 'a', 'b': channel is retired".
            Err(to_pyerr(py, Error::Retired, OpName::Select, &all_names.join("', '")))
        }
        Err(e) => Err(to_pyerr(py, e.error(), OpName::Select, "")),
    }
}
