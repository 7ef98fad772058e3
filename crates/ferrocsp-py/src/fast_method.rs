//! Raw entries for the awaitable operations of the hot path, put in the classes' dictionaries
//! over PyO3's at import ([`install`]): `METH_FASTCALL | METH_KEYWORDS` for `Channel.aread`,
//! `Channel.awrite`, `Reader.aread` and `Writer.awrite`; `METH_NOARGS` for the Alt's
//! `aselect`, `apri_select` and `afair_select`.
//!
//! Why: every coroutine communication makes two of these calls, and PyO3's method trampoline
//! with its general argument parser (keyword-only `timeout`, the value's extraction, the
//! receiver's type check) cost about 280 instructions a call (callgrind, commstime on the
//! coroutine backend): an eighth of the whole communication. The usual shape (`aread()`,
//! `awrite(v)`) needs none of that parsing. `call_end.rs` does the same for the compat ends'
//! calls.
//!
//! Invariants:
//! - An entry behaves as the PyO3 method it replaces: the usual shape calls the same Rust
//!   function with `timeout=None`; any other shape (a `timeout`, another argument count, any
//!   keyword) calls PyO3's method itself, kept aside at install, so its checks and messages
//!   are PyO3's. The Alt's methods take no arguments (`METH_NOARGS`: CPython refuses any, as
//!   it did for PyO3's). Docstring and signature are copied from PyO3's method.
//! - The method descriptor checks the receiver's type before the call, so `slf` is an
//!   instance of the class: the channel and its ends cannot be subclassed; `_NativeAlt` is
//!   (the Python `Alt`), and an instance of a subclass keeps the base's layout (a subclass
//!   that defines the method itself finds its own first).
//! - No entry asks PyO3 to attach (the token is assumed, see [`entry`]), so none can panic
//!   while the interpreter finalizes (`slot.rs`); a Rust panic becomes a Python exception,
//!   never an unwind into CPython.

use std::ffi::{c_int, CStr, CString};
use std::ptr;

use ferrocsp::Policy;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyClass;

use crate::alt::NativeAlt;
use crate::channel::Channel;
use crate::ends::{Reader, Writer};
use crate::pythread::Value;

/// PyO3's methods, replaced in the classes' dictionaries, for the unusual call shapes.
static CHANNEL_AREAD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CHANNEL_AWRITE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static READER_AREAD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static WRITER_AWRITE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Puts the raw entries in the classes' dictionaries (at import, after `add_class`).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let fast = |f: ffi::PyCFunctionFastWithKeywords| {
        let how = ffi::METH_FASTCALL | ffi::METH_KEYWORDS;
        (ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: f }, how)
    };
    let noargs =
        |f: ffi::PyCFunction| (ffi::PyMethodDefPointer { PyCFunction: f }, ffi::METH_NOARGS);
    put::<Channel>(py, c"aread", fast(channel_aread), Some(&CHANNEL_AREAD))?;
    put::<Channel>(py, c"awrite", fast(channel_awrite), Some(&CHANNEL_AWRITE))?;
    put::<Reader>(py, c"aread", fast(reader_aread), Some(&READER_AREAD))?;
    put::<Writer>(py, c"awrite", fast(writer_awrite), Some(&WRITER_AWRITE))?;
    // A call without arguments never needs PyO3's method: it is not kept.
    put::<NativeAlt>(py, c"aselect", noargs(alt_aselect), None)?;
    put::<NativeAlt>(py, c"apri_select", noargs(alt_apri_select), None)?;
    put::<NativeAlt>(py, c"afair_select", noargs(alt_afair_select), None)
}

fn put<T: PyClass>(
    py: Python<'_>,
    name: &'static CStr,
    (entry, flags): (ffi::PyMethodDefPointer, c_int),
    original: Option<&'static PyOnceLock<Py<PyAny>>>,
) -> PyResult<()> {
    let ty = py.get_type::<T>();
    let name_str = name.to_str().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let old = ty.getattr(name_str)?;
    // The docstring CPython shows (`help`, `__text_signature__`): PyO3's, rebuilt in the
    // `name(signature)\n--\n\ndoc` form a method definition carries.
    let sig: Option<String> = old.getattr("__text_signature__")?.extract()?;
    let doc: Option<String> = old.getattr("__doc__")?.extract()?;
    let doc = match sig {
        Some(sig) => format!("{name_str}{sig}\n--\n\n{}", doc.unwrap_or_default()),
        None => doc.unwrap_or_default(),
    };
    let doc = CString::new(doc).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    if original.is_some_and(|o| o.set(py, old.unbind()).is_err()) {
        return Ok(()); // installed already (a second import of the module in this interpreter)
    }
    // Leaked: CPython keeps pointers to the definition and its strings for the type's life.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: entry,
        ml_flags: flags,
        ml_doc: doc.into_raw(),
    }));
    // SAFETY: `ty` is a live type object and `def` outlives it; PyDescr_NewMethod returns a
    // new reference or null with an exception.
    let descr =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_type_ptr(), def)) }?;
    ty.setattr(name_str, descr)
}

/// Runs an entry's body with the Python token: its result as a new reference, or null with
/// the exception set; a Rust panic becomes a `PanicException`.
///
/// The token is assumed, not counted with PyO3 (`in_slot`'s `try_attach`, 65 instructions
/// and a thread-local lookup a call, or `PyGILState_Ensure` where no PyO3 frame runs, as in
/// an asyncio event loop): CPython calls a method on an attached thread. A `Py` released
/// inside then goes at once where a PyO3 frame is on the stack (the coroutine scheduler's
/// `run`), and otherwise waits in PyO3's pool for its next call; the bodies release little
/// (the value goes into the channel, results and errors to CPython).
fn entry(f: impl for<'py> FnOnce(Python<'py>) -> PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    // SAFETY: every entry is a method CPython calls, on an attached thread.
    let py = unsafe { Python::assume_attached() };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(py))).unwrap_or_else(|_| {
        Err(pyo3::panic::PanicException::new_err("panic in a ferrocsp channel operation"))
    });
    match r {
        Ok(v) => v.into_ptr(),
        Err(e) => {
            e.restore(py);
            ptr::null_mut()
        }
    }
}

/// The body of a `METH_FASTCALL | METH_KEYWORDS` entry: the usual shape (`want` positional
/// arguments, no keyword) runs `fast` on the receiver and the arguments; any other calls
/// PyO3's method.
///
/// # Safety
/// The arguments of such a call as CPython passes them to a method of `T` (so `slf` is a live
/// instance of `T`), on an attached thread.
unsafe fn fastcall<T: PyClass>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    want: ffi::Py_ssize_t,
    original: &PyOnceLock<Py<PyAny>>,
    fast: impl for<'py> FnOnce(&Bound<'py, T>, &[*mut ffi::PyObject]) -> PyResult<Py<PyAny>>,
) -> *mut ffi::PyObject {
    entry(|py| {
        let n = usize::try_from(nargs).unwrap_or(0);
        // SAFETY: CPython passes `nargs` arguments at `args` (none null).
        let argv = if n == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(args, n) } };
        // SAFETY: per this function's contract; borrowed for the call.
        let me = unsafe { Bound::from_borrowed_ptr(py, slf) };
        if nargs == want && kwnames.is_null() {
            // SAFETY: the receiver is an instance of `T` (module invariants).
            return fast(unsafe { me.cast_unchecked::<T>() }, argv);
        }
        // SAFETY: `kwnames` is null or a tuple of the keywords' names, whose values follow
        // the positional arguments in `args` (the vectorcall protocol).
        unsafe { call_original(py, original, &me, args, argv, kwnames) }
    })
}

/// The body of a `METH_NOARGS` entry: `f` on the receiver.
///
/// # Safety
/// `slf` as CPython passes it to a method of `T` (a live instance), on an attached thread.
unsafe fn noargs<T: PyClass>(
    slf: *mut ffi::PyObject,
    f: impl for<'py> FnOnce(&Bound<'py, T>) -> PyResult<Py<PyAny>>,
) -> *mut ffi::PyObject {
    entry(|py| {
        // SAFETY: per this function's contract: borrowed for the call, an instance of `T`.
        f(unsafe { Bound::from_borrowed_ptr(py, slf).cast_unchecked::<T>() })
    })
}

/// PyO3's method with the call's arguments (the unusual shapes: rare, so a tuple and a dict).
///
/// # Safety
/// As [`fastcall`]: `argv` the positional arguments at `args`, `kwnames` null or the names of
/// the keyword values that follow them.
unsafe fn call_original(
    py: Python<'_>,
    original: &PyOnceLock<Py<PyAny>>,
    me: &Bound<'_, PyAny>,
    args: *const *mut ffi::PyObject,
    argv: &[*mut ffi::PyObject],
    kwnames: *mut ffi::PyObject,
) -> PyResult<Py<PyAny>> {
    let method =
        original.get(py).ok_or_else(|| PyRuntimeError::new_err("ferrocsp method not installed"))?;
    let mut positional = vec![me.clone()];
    // SAFETY: live borrowed references (the caller's contract).
    positional.extend(argv.iter().map(|&p| unsafe { Bound::from_borrowed_ptr(py, p) }));
    let kwargs = if kwnames.is_null() {
        None
    } else {
        // SAFETY: a tuple of str (the caller's contract).
        let names = unsafe { Bound::from_borrowed_ptr(py, kwnames) }.cast_into::<PyTuple>()?;
        let d = PyDict::new(py);
        for (i, k) in names.iter().enumerate() {
            // SAFETY: the keyword values follow the positional ones (the caller's contract).
            let v = unsafe { Bound::from_borrowed_ptr(py, *args.add(argv.len() + i)) };
            d.set_item(k, v)?;
        }
        Some(d)
    };
    Ok(method.bind(py).call(PyTuple::new(py, positional)?, kwargs.as_ref())?.unbind())
}

/// The value argument of an `awrite` (a new reference).
fn value(py: Python<'_>, argv: &[*mut ffi::PyObject]) -> PyResult<Value> {
    let p = argv.first().copied().ok_or_else(|| PyRuntimeError::new_err("awrite without value"))?;
    // SAFETY: a live borrowed argument of the call.
    Ok(unsafe { Bound::from_borrowed_ptr(py, p) }.unbind())
}

/// A `METH_FASTCALL | METH_KEYWORDS` entry of `$ty`: `|receiver, arguments| body` for the
/// usual shape (`$want` positional arguments), PyO3's method (`$original`) for any other.
macro_rules! fastcall_entry {
    ($name:ident, $ty:ty, $want:literal, $original:ident, |$s:ident, $a:pat_param| $body:expr) => {
        unsafe extern "C" fn $name(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython calls this as a method of `$ty` (module invariants).
            unsafe { fastcall::<$ty>(slf, args, nargs, kwnames, $want, &$original, |$s, $a| $body) }
        }
    };
}

/// A `METH_NOARGS` entry of `_NativeAlt`: its awaitable selection with `$policy`.
macro_rules! alt_entry {
    ($name:ident, $policy:expr) => {
        unsafe extern "C" fn $name(
            slf: *mut ffi::PyObject,
            _unused: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython calls this as a method of `_NativeAlt` (module invariants).
            unsafe { noargs::<NativeAlt>(slf, |s| NativeAlt::arun(s, $policy)) }
        }
    };
}

fastcall_entry!(channel_aread, Channel, 0, CHANNEL_AREAD, |s, _| Channel::aread_parsed(s, None));
fastcall_entry!(channel_awrite, Channel, 1, CHANNEL_AWRITE, |s, a| {
    Channel::awrite_parsed(s, value(s.py(), a)?, None)
});
fastcall_entry!(reader_aread, Reader, 0, READER_AREAD, |s, _| Reader::aread_parsed(s, None));
fastcall_entry!(writer_awrite, Writer, 1, WRITER_AWRITE, |s, a| {
    Writer::awrite_parsed(s, value(s.py(), a)?, None)
});
alt_entry!(alt_aselect, Policy::Random);
alt_entry!(alt_apri_select, Policy::Priority);
alt_entry!(alt_afair_select, Policy::Fair);
