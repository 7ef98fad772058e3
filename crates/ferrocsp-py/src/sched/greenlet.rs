//! Greenlet itself: its type, `getcurrent`, and `PyGreenlet_Switch` from its C API capsule
//! (a switch without a bound method call or argument parsing).
//!
//! Invariant: a switch is made only with the GIL held, to a greenlet object, with a tuple of
//! arguments; `load_switch` checks once that the C API has the entry before any switch.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

static GREENLET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SWITCH: std::sync::OnceLock<SwitchFn> = std::sync::OnceLock::new();

/// `PyGreenlet_Switch(greenlet, args, kwargs)` from greenlet's C API capsule.
type SwitchFn = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *mut pyo3::ffi::PyObject,
    *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject;

/// Index of `PyGreenlet_Switch` in the `greenlet._C_API` table (greenlet.h,
/// `PyGreenlet_Switch_NUM`; stable since greenlet 0.4).
const SWITCH_NUM: usize = 6;

pub(super) fn load_switch(py: Python<'_>) -> PyResult<SwitchFn> {
    match SWITCH.get() {
        Some(f) => Ok(*f),
        None => import_switch(py),
    }
}

/// The first `load_switch`: kept out of line, so that the switch path's frames stay small
/// (every byte of them is saved and restored at each switch of a blocked task).
#[cold]
#[inline(never)]
fn import_switch(py: Python<'_>) -> PyResult<SwitchFn> {
    // SAFETY: we hold the GIL; PyCapsule_Import imports greenlet and returns the capsule's
    // pointer: greenlet's table of C API entry points (void*), or NULL with an exception set.
    let table = unsafe { pyo3::ffi::PyCapsule_Import(c"greenlet._C_API".as_ptr(), 0) };
    if table.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: the table has at least SWITCH_NUM + 1 entries (greenlet.h) and entry
    // SWITCH_NUM is `PyObject* PyGreenlet_Switch(PyGreenlet*, PyObject*, PyObject*)`.
    let f: SwitchFn = unsafe {
        let entry = *(table as *const *const std::ffi::c_void).add(SWITCH_NUM);
        if entry.is_null() {
            return Err(PyRuntimeError::new_err("greenlet's C API has no PyGreenlet_Switch"));
        }
        std::mem::transmute::<*const std::ffi::c_void, SwitchFn>(entry)
    };
    Ok(*SWITCH.get_or_init(|| f))
}

/// `g.switch()` through greenlet's C API (no bound method, no argument parsing). Inlined, as
/// `switch_to_with` is: a blocked task's switch saves every frame below it, one less here.
#[inline(always)]
pub(super) fn switch_to(py: Python<'_>, g: &Py<PyAny>) -> PyResult<()> {
    switch_to_with(py, g, None)
}

/// `g.switch(*args)` through greenlet's C API.
#[inline(always)]
pub(super) fn switch_to_with(
    py: Python<'_>,
    g: &Py<PyAny>,
    args: Option<&Py<PyTuple>>,
) -> PyResult<()> {
    let f = load_switch(py)?;
    let args = match args {
        Some(a) => a.bind(py).clone(),
        None => PyTuple::empty(py),
    };
    // SAFETY: `g` is a greenlet object (we made it, or it is the hub from getcurrent()),
    // `args` a tuple, kwargs may be NULL; we hold the GIL. The result is a new reference or
    // NULL with an exception set.
    let r = unsafe { f(g.as_ptr(), args.as_ptr(), std::ptr::null_mut()) };
    if r.is_null() {
        return Err(switch_error(py));
    }
    // SAFETY: `r` is an owned reference (not NULL), which we drop; we hold the GIL.
    unsafe { pyo3::ffi::Py_DECREF(r) };
    Ok(())
}

/// The exception a switch raised here (thrown into this greenlet): out of line, as
/// `import_switch` is.
#[cold]
#[inline(never)]
fn switch_error(py: Python<'_>) -> PyErr {
    PyErr::fetch(py)
}
/// `g.switch(*args)` through greenlet's C API, returning what the switch returns here (what
/// the next switch back to this greenlet passes). `g` must be a greenlet.
pub(crate) fn switch_returning<'py>(
    py: Python<'py>,
    g: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let f = load_switch(py)?;
    // SAFETY: `g` is a greenlet object (the caller's contract), `args` a tuple, kwargs NULL;
    // we hold the GIL. The result is a new reference or NULL with an exception set.
    let r = unsafe { f(g.as_ptr(), args.as_ptr(), std::ptr::null_mut()) };
    // SAFETY: as above.
    unsafe { Bound::from_owned_ptr_or_err(py, r) }
}

static GETCURRENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(crate) fn greenlet_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    GREENLET.import(py, "greenlet", "greenlet")
}

pub(crate) fn getcurrent(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    GETCURRENT.import(py, "greenlet", "getcurrent")?.call0()
}
