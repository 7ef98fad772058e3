//! Hooks for tests that fork while another thread of the process holds a process-wide lock
//! (`tests/test_shm_fork.py`): the instant a `fork` may land on, made certain.
//!
//! Invariants:
//! - A hook only takes a lock on a helper thread and lets it go after the time given: it
//!   changes no state, so a process that runs one goes on as before.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Holds lock `what` (``"cells"``: the shared selection cells' registry; ``"parked"``: the
/// parking lot of released thread-locals) on a helper thread for `seconds`; returns once it is
/// held.
#[pyfunction]
pub(crate) fn _hold_lock_for_test(py: Python<'_>, what: &str, seconds: f64) -> PyResult<()> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(PyValueError::new_err("seconds must be a finite number >= 0"));
    }
    match what {
        "cells" => crate::detach::detach(py, || {
            ferrocsp::shm::hold_cells_for_test(Duration::from_secs_f64(seconds))
        }),
        "parked" => crate::detach::detach(py, || crate::py_tls::hold_for_test(seconds)),
        _ => return Err(PyValueError::new_err(format!("no such lock: {what:?}"))),
    }
    Ok(())
}
