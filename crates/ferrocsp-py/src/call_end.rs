//! `_native._CallEnd`: a channel end that is called to communicate (``end()`` reads from a
//! reader, ``end(value)`` writes to a writer), the base of the PyCSP compat layer's ends
//! (`ferrocsp.compat.pycsp._channel`).
//!
//! Why native: CPython 3.11 calls an instance of a Python class through its type's `tp_call`.
//! A `functools.partial` subclass over the end's bound `read`/`write` (what the compat ends
//! were) then goes `tp_call` -> partial -> bound method -> argument parsing; this type's
//! `tp_call` goes straight to the engine end's read or write.
//!
//! Invariants:
//! - Calling it does what calling the engine end's `read`/`write` with the same arguments
//!   does (same result, same exceptions and messages): the usual shape (no argument to a
//!   reader, one positional to a writer) calls the same Rust method, any other shape calls
//!   the Python method.
//! - It holds its engine end for its whole life (frozen).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyDict, PyTuple};

use crate::ends::{Reader, Writer};

enum End {
    Reader(Py<Reader>),
    Writer(Py<Writer>),
}

/// A channel end called to communicate: ``end()`` reads (a reader), ``end(value)`` writes (a
/// writer), as the engine end's ``read``/``write`` with the same arguments.
#[pyclass(frozen, subclass, module = "ferrocsp._native", name = "_CallEnd")]
pub(crate) struct CallEnd {
    end: End,
}

#[pymethods]
impl CallEnd {
    #[new]
    fn new(end: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(r) = end.cast::<Reader>() {
            return Ok(CallEnd { end: End::Reader(r.clone().unbind()) });
        }
        if let Ok(w) = end.cast::<Writer>() {
            return Ok(CallEnd { end: End::Writer(w.clone().unbind()) });
        }
        Err(PyTypeError::new_err(format!(
            "_CallEnd needs a ferrocsp Reader or Writer, got {}",
            end.get_type().name()?
        )))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let plain = kwargs.is_none_or(|k| k.is_empty());
        match &self.end {
            End::Reader(r) if plain && args.is_empty() => r.get().read(py, None),
            End::Writer(w) if plain && args.len() == 1 => {
                w.get().write(py, args.get_item(0)?.unbind(), None)?;
                Ok(py.None())
            }
            End::Reader(r) => r.bind(py).call_method("read", args, kwargs).map(Bound::unbind),
            End::Writer(w) => w.bind(py).call_method("write", args, kwargs).map(Bound::unbind),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match &self.end {
            End::Reader(r) => visit.call(r),
            End::Writer(w) => visit.call(w),
        }
    }
}
