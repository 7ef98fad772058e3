//! `AltMap`: how a prepared selection's engine result becomes Python's (the chosen guard's
//! index and value, or the exception), and what it waits on for deadlock detection and the
//! trace. Shared by the blocking Alt (`select.rs`), the native one (`alt.rs`) and the asyncio
//! one (`aio.rs`).
//!
//! Invariant: one entry per engine operation, in engine order; retired ends are not engine
//! operations (they can never fire) but are named in the retired message.

use std::sync::Arc;

use ferrocsp::{Error, SelectError, Selected};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::deadlock::Desc;
use crate::errors::{to_pyerr, OpName};
use crate::pythread::Value;
use crate::trace;

/// What a prepared selection needs to turn its engine result into Python's.
#[derive(Debug, Default)]
pub(crate) struct AltMap {
    /// Engine index -> op index (retired ends are left out: they can never fire).
    pub(crate) index_of: Vec<usize>,
    /// Channel name per engine op (empty for skip/timeout).
    pub(crate) names: Vec<Arc<str>>,
    /// Every channel named in the selection, retired ends included (for the Retired message).
    pub(crate) all_names: Vec<Arc<str>>,
    /// Operation kind per engine op (0 read, 1 write, 2 skip, 3 timeout), for the trace.
    pub(crate) kinds: Vec<u8>,
    /// For a native Alt's selection (`alt.rs`; `index_of` then gives guard indices): what
    /// `map_pair` returns instead of `(op index, value)`.
    pub(crate) owner: Option<Chosen>,
}

/// The native Alt whose selection this is (`alt.rs`): it turns `(guard index, value)` into
/// the `(guard, value)` tuple (updating its fair state when `fair`), and takes the finished
/// selection back to keep.
#[derive(Debug)]
pub(crate) struct Chosen {
    pub(crate) alt: Py<crate::alt::NativeAlt>,
    pub(crate) fair: bool,
}

impl AltMap {
    /// What the selection waits on, for deadlock detection: its channel operations.
    pub(crate) fn desc(&self) -> Desc<'_> {
        Desc::alt(&self.names, &self.kinds)
    }

    /// [`AltMap::map`] as the Python tuple `(op index, value)` an `aselect` await returns, or
    /// `(guard, value)` for a native Alt's (`owner`).
    pub(crate) fn map_pair(
        &self,
        py: Python<'_>,
        r: Result<Selected<Value>, SelectError>,
    ) -> PyResult<Py<PyAny>> {
        let (i, v) = self.map(py, r)?;
        if let Some(c) = &self.owner {
            return c.alt.get().chosen(py, i, c.fair, v);
        }
        Ok(PyTuple::new(py, [i.into_pyobject(py)?.into_any(), v.into_pyobject(py)?])?
            .into_any()
            .unbind())
    }

    /// `(op index, value)` for a fired selection, or the exception it ended with.
    pub(crate) fn map(
        &self,
        py: Python<'_>,
        r: Result<Selected<Value>, SelectError>,
    ) -> PyResult<(usize, Option<Value>)> {
        match r {
            Ok(s) => {
                self.trace_fired(py, s.index);
                Ok((self.index_of[s.index], s.value))
            }
            Err(SelectError::Poisoned { index }) => {
                Err(to_pyerr(py, Error::Poisoned, OpName::Select, &self.names[index]))
            }
            Err(SelectError::Retired) => {
                // to_pyerr quotes the name: "alt on channel 'a', 'b': channel is retired".
                Err(to_pyerr(py, Error::Retired, OpName::Select, &self.all_names.join("', '")))
            }
            Err(e) => Err(to_pyerr(py, e.error(), OpName::Select, "")),
        }
    }
}

impl AltMap {
    /// Traces the communication of a fired guard (a read or write, like a plain one's).
    fn trace_fired(&self, py: Python<'_>, index: usize) {
        if trace::on() {
            match self.kinds[index] {
                0 => trace::event(py, "read", "alt", &self.names[index]),
                1 => trace::event(py, "write", "alt", &self.names[index]),
                _ => {}
            }
        }
    }

    /// Traces that the selection blocks, on every channel it names.
    pub(crate) fn trace_block(&self, py: Python<'_>) {
        trace::event(py, "block", "alt", &self.all_names.join(","));
    }
}
