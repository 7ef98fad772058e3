//! The native half of `ferrocsp.Alt`: run one selection over prepared operations.
//!
//! `ferrocsp._alt` validates guards and turns them into `(kind, target, value)` triples; this
//! module maps them onto one engine `Select` and waits with the GIL released. Kinds: 0 read
//! (Channel or Reader), 1 write (Channel or Writer, value), 2 skip, 3 timeout (seconds).
//!
//! Invariant: exactly one operation fires; a write's value is sent iff its index is returned.

use std::time::Duration;

use ferrocsp::{Policy, Select, SelectError};
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::aio::AsyncOp;
use crate::alt_map::AltMap;
use crate::channel::Channel;
use crate::ends::{Reader, Writer};
use crate::pythread::Value;
use crate::trace;
use crate::wait::{select_blocking, PooledSelect};

/// Resolves a read/write target to (engine channel, channel name, retired end?).
fn target(
    obj: &Bound<'_, PyAny>,
    write: bool,
) -> PyResult<(ferrocsp::Channel<Value>, Arc<str>, bool)> {
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

/// Parses a policy code: 0 random, 1 priority, 2 fair.
pub(crate) fn policy(code: u8) -> PyResult<Policy> {
    match code {
        0 => Ok(Policy::Random),
        1 => Ok(Policy::Priority),
        2 => Ok(Policy::Fair),
        p => Err(PyValueError::new_err(format!("unknown selection policy {p}"))),
    }
}

/// Builds the engine selection for `ops` (see the module docs for the triples).
pub(crate) fn prepare(
    py: Python<'_>,
    ops: Vec<(u8, Option<Bound<'_, PyAny>>, Option<Value>)>,
    policy: Policy,
    last: Option<usize>,
) -> PyResult<(Select<Value>, AltMap)> {
    let mut sel: Select<Value> = Select::new();
    let mut index_of: Vec<usize> = Vec::with_capacity(ops.len());
    let mut names: Vec<Arc<str>> = Vec::with_capacity(ops.len());
    let mut all_names: Vec<Arc<str>> = Vec::new();
    let mut kinds: Vec<u8> = Vec::with_capacity(ops.len());
    for (i, (kind, obj, value)) in ops.into_iter().enumerate() {
        let mut name: Arc<str> = Arc::from("");
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
        kinds.push(kind);
    }
    if policy == Policy::Fair {
        sel.set_last_selected(last.and_then(|l| index_of.iter().position(|&i| i == l)));
    }
    Ok((sel, AltMap { index_of, names, all_names, kinds, owner: None }))
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
    let policy = self::policy(policy)?;
    let (mut sel, map) = prepare(py, ops, policy, last)?;
    let deadline = crate::pythread::deadline(timeout);
    if trace::on() {
        // Traced: try first, so a selection that must wait is reported as blocked.
        match sel.try_select(policy) {
            Err(SelectError::WouldBlock) => map.trace_block(py),
            r => return map.map(py, r),
        }
    }
    let r = select_blocking(py, &mut sel, policy, deadline, || map.desc())?;
    map.map(py, r)
}

/// The awaitable twin of `_select`: `await _aselect(...)` gives `(index, value)`.
#[pyfunction]
#[pyo3(signature = (ops, policy, last = None, timeout = None))]
pub(crate) fn _aselect(
    py: Python<'_>,
    ops: Vec<(u8, Option<Bound<'_, PyAny>>, Option<Value>)>,
    policy: u8,
    last: Option<usize>,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    let policy = self::policy(policy)?;
    let (mut sel, map) = prepare(py, ops, policy, last)?;
    // A ready Alt completes at the call (a `_Done`); one that must wait, or fails, does so
    // when awaited.
    match sel.try_select(policy) {
        r @ Ok(_) => crate::aio_op::done(py, map.map_pair(py, r)?),
        Err(_) => {
            let sel = PooledSelect::adopt(sel);
            crate::aio_op::pending(py, AsyncOp::alt(sel, map, policy, timeout, None))
        }
    }
}
