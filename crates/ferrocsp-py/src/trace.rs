//! Tracing hooks: channel events reported to a Python sink (`ferrocsp._trace`) while a trace
//! is being recorded (`FERROCSP_TRACE=path` or `ferrocsp.trace(path)`).
//!
//! Invariants:
//! - Tracing off, a hook costs one relaxed atomic load ([`on`]); the sink is only looked at
//!   after it says yes (a hook racing with `_set_trace(None)` may still find no sink: no event).
//! - Events are emitted with the GIL held and no channel lock held; a failing sink never
//!   fails the channel operation (its error is reported as unraisable).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;

static ON: AtomicBool = AtomicBool::new(false);
static SINK: Mutex<Option<Py<PyAny>>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Py<PyAny>>> {
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a trace is being recorded (one relaxed atomic load; a constant `false` with the
/// `no-trace-hooks` feature, which `bench/trace_overhead` uses as the baseline).
#[inline(always)]
pub(crate) fn on() -> bool {
    !cfg!(feature = "no-trace-hooks") && ON.load(Ordering::Relaxed)
}

/// Reports event `ev` (`"read"`, `"write"`, `"block"`, `"poison"`, `"retire"`) with detail
/// `op` on channel `chan`, if a trace is being recorded.
#[inline(always)]
pub(crate) fn event(py: Python<'_>, ev: &'static str, op: &'static str, chan: &str) {
    if on() {
        emit(py, ev, op, chan);
    }
}

#[cold]
#[inline(never)]
fn emit(py: Python<'_>, ev: &'static str, op: &'static str, chan: &str) {
    let sink = lock().as_ref().map(|s| s.clone_ref(py));
    if let Some(sink) = sink {
        if let Err(e) = sink.call1(py, (ev, op, chan)) {
            e.write_unraisable(py, None);
        }
    }
}

/// Installs (or with `None`, removes) the trace sink: `sink(ev, op, chan)` is then called on
/// every channel event, in the thread that performs the operation.
#[pyfunction]
#[pyo3(signature = (sink))]
pub(crate) fn _set_trace(sink: Option<Py<PyAny>>) {
    let enable = sink.is_some();
    let old = std::mem::replace(&mut *lock(), sink);
    ON.store(enable, Ordering::Relaxed);
    drop(old);
}
