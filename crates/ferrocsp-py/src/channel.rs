//! `ferrocsp.Channel`: the engine's channel holding Python objects by reference.
//!
//! Invariants:
//! - A value written is the very object read (a reference moves; nothing is copied or pickled).
//! - Every operation that may block goes through `wait::select_blocking`, which releases the GIL
//!   (in a process greenlet: `sched::plain_read`/`plain_write`, which switch to other
//!   greenlets).
//! - The non-blocking attempt runs with the GIL held: it never waits for anything but a channel
//!   lock, and no channel lock holder ever waits for the GIL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferrocsp::shm::EndKind;
use ferrocsp::{Error, Policy};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyInt, PyType};

use crate::aio_op;
use crate::deadlock::Desc;
use crate::errors::{parse_timeout, to_pyerr, OpName};
use crate::flavor::Flavors;
use crate::pythread::{deadline, Value};
use crate::sched;
use crate::shm_side::ShmSide;
use crate::trace;
use crate::wait::{pooled_select, select_pooled};

static NEXT_NAME: AtomicU64 = AtomicU64::new(1);
static STATS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static MOBILITY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Reads one value, blocking (GIL released) until it arrives, `timeout` passes, or an error.
pub(crate) fn read_value(
    py: Python<'_>,
    chan: &ferrocsp::Channel<Value>,
    name: &str,
    timeout: Option<f64>,
) -> PyResult<Value> {
    // Not while tracing, whose `block` event must come between the try and the registration.
    if !trace::on() {
        if let Some(r) = sched::plain_read(py, chan, deadline(timeout), Desc::read(name)) {
            return match r? {
                Ok(s) => s.value.ok_or_else(|| to_pyerr(py, Error::WouldBlock, OpName::Read, name)),
                Err(e) => Err(to_pyerr(py, e.error(), OpName::Read, name)),
            };
        }
    }
    read_value_thread(py, chan, name, timeout)
}

/// [`read_value`] outside a process greenlet (or while tracing). Out of line: its locals
/// would otherwise widen `read_value`'s frame, which a blocked greenlet saves at every switch.
#[inline(never)]
fn read_value_thread(
    py: Python<'_>,
    chan: &ferrocsp::Channel<Value>,
    name: &str,
    timeout: Option<f64>,
) -> PyResult<Value> {
    match chan.try_read() {
        Err(Error::WouldBlock) => {}
        Ok(v) => {
            trace::event(py, "read", "", name);
            return Ok(v);
        }
        Err(e) => return Err(to_pyerr(py, e, OpName::Read, name)),
    }
    trace::event(py, "block", "read", name);
    let mut sel = pooled_select();
    sel.read(chan);
    match select_pooled(py, &mut sel, Policy::Priority, deadline(timeout), || Desc::read(name))? {
        Ok(s) => {
            trace::event(py, "read", "", name);
            s.value.ok_or_else(|| to_pyerr(py, Error::WouldBlock, OpName::Read, name))
        }
        Err(e) => Err(to_pyerr(py, e.error(), OpName::Read, name)),
    }
}

/// Writes `value`, blocking (GIL released) until a reader takes it or it is buffered.
pub(crate) fn write_value(
    py: Python<'_>,
    chan: &ferrocsp::Channel<Value>,
    name: &str,
    value: Value,
    timeout: Option<f64>,
) -> PyResult<()> {
    let value = if trace::on() {
        value // as `read_value`
    } else {
        match sched::plain_write(py, chan, value, deadline(timeout), Desc::write(name)) {
            Ok(r) => return r?.map(drop).map_err(|e| to_pyerr(py, e.error(), OpName::Write, name)),
            Err(value) => value,
        }
    };
    write_value_thread(py, chan, name, value, timeout)
}

/// [`write_value`] outside a process greenlet (or while tracing); out of line as
/// [`read_value_thread`] is.
#[inline(never)]
fn write_value_thread(
    py: Python<'_>,
    chan: &ferrocsp::Channel<Value>,
    name: &str,
    value: Value,
    timeout: Option<f64>,
) -> PyResult<()> {
    let value = match chan.try_write(value) {
        Ok(()) => {
            trace::event(py, "write", "", name);
            return Ok(());
        }
        Err(e) if e.error == Error::WouldBlock => e.value,
        Err(e) => return Err(to_pyerr(py, e.error, OpName::Write, name)),
    };
    trace::event(py, "block", "write", name);
    let mut sel = pooled_select();
    sel.write(chan, value);
    match select_pooled(py, &mut sel, Policy::Priority, deadline(timeout), || Desc::write(name))? {
        Ok(_) => {
            trace::event(py, "write", "", name);
            Ok(())
        }
        Err(e) => Err(to_pyerr(py, e.error(), OpName::Write, name)),
    }
}

pub(crate) fn try_read_value(
    py: Python<'_>,
    chan: &ferrocsp::Channel<Value>,
    name: &str,
) -> PyResult<Value> {
    let v = chan.try_read().map_err(|e| to_pyerr(py, e, OpName::Read, name))?;
    trace::event(py, "read", "", name);
    Ok(v)
}

pub(crate) fn try_write_value(
    py: Python<'_>,
    chan: &ferrocsp::Channel<Value>,
    name: &str,
    value: Value,
) -> PyResult<()> {
    chan.try_write(value).map_err(|e| to_pyerr(py, e.error, OpName::Write, name))?;
    trace::event(py, "write", "", name);
    Ok(())
}

/// `__next__` for channels and readers: end-of-stream (retired) stops the iteration.
pub(crate) fn next_value(
    py: Python<'_>,
    chan: &ferrocsp::Channel<Value>,
    name: &str,
) -> PyResult<Option<Value>> {
    match read_value(py, chan, name, None) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance(py, crate::errors::retired_type(py)?.as_any()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Calls `ferrocsp._mobility.<func>(obj)` to pickle channels and ends by identity.
pub(crate) fn mobility_reduce<'py>(
    py: Python<'py>,
    func: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let m = MOBILITY
        .get_or_try_init(py, || py.import("ferrocsp._mobility").map(|m| m.into_any().unbind()))?;
    m.bind(py).call_method1(func, (obj,))
}

/// A validated `capacity=` argument: an `int` (not `bool`) that is >= 0.
pub(crate) struct Capacity(usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Capacity {
    type Error = PyErr;

    fn extract(c: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if c.is_instance_of::<PyBool>() || !c.is_instance_of::<PyInt>() {
            let ty = c.get_type().name()?;
            return Err(PyTypeError::new_err(format!("capacity must be an int, not {ty}")));
        }
        let v: i128 = c.extract().map_err(|_| PyValueError::new_err("capacity is too large"))?;
        if v < 0 {
            return Err(PyValueError::new_err(format!("capacity must be >= 0, got {v}")));
        }
        usize::try_from(v)
            .map(Capacity)
            .map_err(|_| PyValueError::new_err(format!("capacity {v} is too large")))
    }
}

/// A CSP channel. ``Channel()`` is a rendezvous channel: a write completes only when a reader
/// has taken the value. ``Channel(n)`` buffers up to ``n`` values.
///
/// Any number of threads/processes may read and write (any-to-any); each value goes to exactly
/// one reader, first come first served. Values are passed by reference, never copied.
#[pyclass(frozen, module = "ferrocsp", name = "Channel", weakref)]
#[derive(Debug)]
pub struct Channel {
    pub(crate) inner: ferrocsp::Channel<Value>,
    /// Shared, not copied, by every asyncio operation on the channel.
    pub(crate) name: Arc<str>,
    /// Its shared-memory or networked side, if any (`flavor.rs`).
    pub(crate) flavors: Arc<Flavors>,
}

impl Channel {
    /// What the move to shared memory needs of it (`shm_move.rs`).
    fn parts(&self) -> crate::shm_move::Parts<'_> {
        crate::shm_move::Parts { inner: &self.inner, flavors: &self.flavors, name: &self.name }
    }

    /// A channel over an existing engine channel (a networked channel's Alt proxy).
    fn with_engine(inner: ferrocsp::Channel<Value>, name: String) -> Self {
        Channel { inner, name: name.into(), flavors: Arc::default() }
    }

    pub(crate) fn make(capacity: usize, name: Option<String>) -> Self {
        let name =
            name.unwrap_or_else(|| format!("chan-{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed)));
        Channel {
            inner: ferrocsp::Channel::new(capacity),
            name: name.into(),
            flavors: Arc::default(),
        }
    }

    /// `awrite` with its timeout parsed (`fast_method.rs` calls it for `awrite(v)`). A
    /// timeout is checked before a loan is spent.
    pub(crate) fn awrite_parsed(
        slf: &Bound<'_, Self>,
        value: Value,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if this.flavors.is_remote() {
            if crate::coro_op::in_coro_task() {
                return crate::coro_op::offload(py, "_offload_write", (slf, value, timeout));
            }
            let value = crate::loan::lend(py, value)?;
            if let Some(s) = this.flavors.shm.get() {
                return crate::shm_aio::awrite(py, s, None, EndKind::Writer, false, value, timeout);
            }
            return crate::net_side::net_aio(py, "awrite", (slf, value, timeout));
        }
        let value = crate::loan::lend(py, value)?;
        aio_op::write_op(py, slf.as_any(), &this.flavors, &this.inner, &this.name, value, timeout)
    }

    /// `aread` with its timeout parsed (`fast_method.rs` calls it for `aread()`).
    pub(crate) fn aread_parsed(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if this.flavors.is_remote() {
            if crate::coro_op::in_coro_task() {
                return crate::coro_op::offload(py, "_offload_read", (slf, timeout));
            }
            if let Some(s) = this.flavors.shm.get() {
                return crate::shm_aio::aread(py, s, None, EndKind::Reader, false, timeout, false);
            }
            return crate::net_side::net_aio(py, "aread", (slf, timeout, false));
        }
        aio_op::read_op(py, slf.as_any(), &this.flavors, &this.inner, &this.name, timeout, false)
    }
}

#[pymethods]
impl Channel {
    #[new]
    #[pyo3(signature = (capacity = Capacity(0), *, name = None, net = None), text_signature = "(capacity=0, *, name=None, net=None)")]
    fn new(
        py: Python<'_>,
        capacity: Capacity,
        name: Option<&Bound<'_, PyAny>>,
        net: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Self>> {
        let name = match name {
            None => None,
            Some(n) if n.is_none() => None,
            Some(n) => Some(n.extract::<String>().map_err(|_| {
                let ty = n.get_type().name().map(|s| s.to_string()).unwrap_or_default();
                PyTypeError::new_err(format!("name must be a str, not {ty}"))
            })?),
        };
        match net {
            Some(conn) if !conn.is_none() => {
                // The connection's channel of that name: one object per (connection, name).
                let Some(name) = name else {
                    return Err(PyTypeError::new_err(
                        "a networked channel needs a name: Channel(name=..., net=conn)",
                    ));
                };
                let ch = conn.call_method1("channel", (name, capacity.0)).map_err(|e| {
                    if conn.hasattr("channel").unwrap_or(false) {
                        e
                    } else {
                        let ty = conn.get_type().name().map(|s| s.to_string()).unwrap_or_default();
                        PyTypeError::new_err(format!(
                            "net must be a ferrocsp.net.Connection (from ferrocsp.net.connect), not {ty}"
                        ))
                    }
                })?;
                Ok(ch.cast_into::<Channel>()?.unbind())
            }
            _ => Py::new(py, Channel::make(capacity.0, name)),
        }
    }

    /// A networked channel over transport ``core`` (a ``_NetChan``) of connection ``conn``
    /// (``Connection.channel`` makes them; use that, or ``Channel(name=..., net=conn)``).
    #[staticmethod]
    fn _networked(core: &Bound<'_, PyAny>, conn: Py<PyAny>) -> PyResult<Self> {
        let (side, name, capacity) = crate::net_side::make(core, conn)?;
        let ch = Channel::make(capacity, Some(name));
        drop(ch.inner.close_moved()); // never used: see net_side.rs
        let _ = ch.flavors.net.set(side);
        Ok(ch)
    }

    /// The ``ferrocsp.net.Connection`` of a networked channel (None for other channels).
    #[getter]
    fn connection(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.flavors.net.get().map(|n| n.conn(py).unbind())
    }

    /// The local channel an Alt waits on for this networked channel: as a reader, or
    /// (``output``) as a writer for an Output guard (``net/_alt.py``).
    fn _net_alt(&self, py: Python<'_>, output: bool) -> PyResult<Py<PyAny>> {
        let Some(n) = self.flavors.net.get() else {
            return Err(PyValueError::new_err(format!(
                "channel '{}' is not a networked channel",
                self.name
            )));
        };
        // Named as the networked channel: an Alt's error names the channel the user gave it,
        // as a plain operation's does.
        let name = self.name.to_string();
        n.alt_channel(py, output, |engine| {
            Ok(Py::new(py, Channel::with_engine(engine, name.clone()))?.into_any())
        })
    }

    /// A networked channel's transport (``_NetChan``; None for other channels).
    #[getter]
    fn _net_core(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.flavors.net.get().map(|n| n.core(py).unbind())
    }

    /// `Channel[int]` in annotations: a `types.GenericAlias` (the stub's `Channel[T]`).
    #[classmethod]
    fn __class_getitem__<'py>(
        cls: &Bound<'py, PyType>,
        item: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        generic_alias(cls, item)
    }

    /// The channel's name (used in error messages, dumps and graphs).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The buffer size; 0 for a rendezvous channel.
    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// A writable buffer of ``nbytes`` bytes to fill and then ``write``: the reader gets it
    /// without a copy, as a read-only ``LoanBuffer`` (see ``Loan``). Never blocks.
    fn loan(&self, nbytes: &Bound<'_, PyAny>) -> PyResult<crate::loan::Loan> {
        crate::loan::Loan::make(nbytes)
    }

    /// Writes ``value``, blocking until a reader takes it (or, buffered, until there is room).
    ///
    /// Raises ``TimeoutError`` if ``timeout`` seconds pass first (nothing was sent),
    /// ``ChannelPoisoned`` or ``ChannelRetired``.
    #[pyo3(signature = (value, *, timeout = None))]
    fn write(
        &self,
        py: Python<'_>,
        value: Value,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let t = parse_timeout(timeout)?;
        crate::loan::lending(py, value, |value| {
            if let Some(s) = self.flavors.shm.get() {
                return s.get().write(py, value.bind(py), t, false);
            }
            if let Some(n) = self.flavors.net.get() {
                return n.write(py, &self.name, value.bind(py), t, false);
            }
            let keep = value.clone_ref(py);
            let r = write_value(py, &self.inner, &self.name, value, t);
            match moved(py, self, r) {
                Err(s) => s.write(py, keep.bind(py), t, false),
                Ok(r) => r,
            }
        })
    }

    /// Reads a value, blocking until one arrives.
    ///
    /// Raises ``TimeoutError`` if ``timeout`` seconds pass first (nothing was taken),
    /// ``ChannelPoisoned``, or ``ChannelRetired`` at end-of-stream.
    #[pyo3(signature = (*, timeout = None))]
    fn read(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Value> {
        let t = parse_timeout(timeout)?;
        if let Some(s) = self.flavors.shm.get() {
            return s.get().read(py, t, false);
        }
        if let Some(n) = self.flavors.net.get() {
            return n.read(py, &self.name, t, false);
        }
        let r = read_value(py, &self.inner, &self.name, t);
        match moved(py, self, r) {
            Err(s) => s.read(py, t, false),
            Ok(r) => r,
        }
    }

    /// Writes every value of ``values`` in order, as ``write`` would one by one; on a
    /// buffered networked channel many values go per round trip.
    ///
    /// One ``timeout`` bounds the whole call. Every exception it raises (``TimeoutError``,
    /// ``ChannelPoisoned``, ``ChannelRetired``, one raised by the iterable) has an attribute
    /// ``written``: how many values, from the start, were written; none after them was.
    #[pyo3(signature = (values, *, timeout = None))]
    fn write_many(
        slf: &Bound<'_, Self>,
        values: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let this = slf.get();
        let net = this.flavors.net.get();
        crate::batch::write_many(slf.py(), slf.as_any(), net, &this.name, values, timeout)
    }

    /// Reads between 1 and ``max_n`` values: waits (up to ``timeout``) for the first, as
    /// ``read`` does, then takes those that are there at once, in order.
    ///
    /// Raises as ``read`` does when not even one value comes; poison or end-of-stream after
    /// the first value ends the batch (the next read raises it).
    #[pyo3(signature = (max_n, *, timeout = None))]
    fn read_many<'py>(
        slf: &Bound<'py, Self>,
        max_n: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        let this = slf.get();
        let net = this.flavors.net.get();
        crate::batch::read_many(slf.py(), slf.as_any(), net, &this.name, max_n, timeout)
    }

    /// ``await ch.awrite(value)``: the asyncio twin of ``write`` (same errors and timeout).
    ///
    /// If a reader is waiting (or there is buffer room) the value is handed over by the call
    /// itself and the await returns at once (so await what this returns).
    /// Cancelled while waiting: if the value was taken in the race, the await returns normally
    /// and the cancellation is re-requested for the task's next suspension; otherwise
    /// ``CancelledError`` propagates and nothing was sent.
    #[pyo3(signature = (value, *, timeout = None))]
    fn awrite(
        slf: &Bound<'_, Self>,
        value: Value,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        Self::awrite_parsed(slf, value, parse_timeout(timeout)?)
    }

    /// ``await ch.aread()``: the asyncio twin of ``read`` (same errors and timeout).
    ///
    /// Cancelled while waiting: if a value arrived in the race, the await returns it and the
    /// cancellation is re-requested for the task's next suspension; otherwise
    /// ``CancelledError`` propagates and nothing was taken.
    #[pyo3(signature = (*, timeout = None))]
    fn aread(slf: &Bound<'_, Self>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        Self::aread_parsed(slf, parse_timeout(timeout)?)
    }

    /// Writes ``value`` if that is possible right now (a reader is waiting, or buffer room);
    /// otherwise raises ``WouldBlock`` and sends nothing.
    fn write_nowait(&self, py: Python<'_>, value: Value) -> PyResult<()> {
        crate::loan::lending(py, value, |value| {
            if let Some(s) = self.flavors.shm.get() {
                return s.get().write(py, value.bind(py), None, true);
            }
            if let Some(n) = self.flavors.net.get() {
                return n.write(py, &self.name, value.bind(py), None, true);
            }
            try_write_value(py, &self.inner, &self.name, value)
        })
    }

    /// Reads a value if one is available right now; otherwise raises ``WouldBlock``.
    fn read_nowait(&self, py: Python<'_>) -> PyResult<Value> {
        if let Some(s) = self.flavors.shm.get() {
            return s.get().read(py, None, true);
        }
        if let Some(n) = self.flavors.net.get() {
            return n.read(py, &self.name, None, true);
        }
        try_read_value(py, &self.inner, &self.name)
    }

    /// Poisons the channel: every blocked and later operation raises ``ChannelPoisoned``;
    /// buffered values are dropped. Idempotent.
    fn poison(&self, py: Python<'_>) -> PyResult<()> {
        trace::event(py, "poison", "", &self.name);
        self.inner.poison();
        if let Some(s) = self.flavors.shm.get() {
            s.get().poison(py)?;
        }
        if let Some(n) = self.flavors.net.get() {
            n.poison(py)?;
        }
        Ok(())
    }

    /// A snapshot of the channel's counters (``ChannelStats``).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = match (self.flavors.shm.get(), self.flavors.net.get()) {
            (Some(side), _) => side.get().stats(py)?,
            (None, Some(n)) => n.stats(py)?,
            (None, None) => self.inner.stats(),
        };
        let cls = STATS.import(py, "ferrocsp._stats", "ChannelStats")?;
        cls.call1((
            s.capacity,
            s.buffered,
            s.readers_waiting,
            s.writers_waiting,
            s.reader_ends,
            s.writer_ends,
            s.poisoned,
            s.retired,
        ))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Value>> {
        if let Some(s) = self.flavors.shm.get() {
            return s.get().next(py, None);
        }
        if let Some(n) = self.flavors.net.get() {
            return end_of_stream(py, n.read(py, &self.name, None, false));
        }
        let r = next_value(py, &self.inner, &self.name);
        match moved(py, self, r) {
            Err(s) => s.next(py, None),
            Ok(r) => r,
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if this.flavors.is_remote() && crate::coro_op::in_coro_task() {
            return crate::coro_op::offload(py, "_offload_next", (slf,));
        }
        if let Some(s) = this.flavors.shm.get() {
            return crate::shm_aio::aread(py, s, None, EndKind::Reader, false, None, true);
        }
        if this.flavors.net.get().is_some() {
            return crate::net_side::net_aio(py, "aread", (slf, py.None(), true));
        }
        aio_op::read_op(py, slf.as_any(), &this.flavors, &this.inner, &this.name, None, true)
    }

    /// The shared-memory side of a channel that moved there (``None`` while in-process).
    #[getter]
    fn _shm(&self, py: Python<'_>) -> Option<Py<ShmSide>> {
        self.flavors.shm.get().map(|s| s.clone_ref(py))
    }

    /// Moves the channel to shared memory (once; a ring of ``ring_bytes``) and returns its
    /// shared side: from then on every operation goes there (`shm_side.rs`).
    fn _share(slf: &Bound<'_, Self>, ring_bytes: usize) -> PyResult<Py<ShmSide>> {
        crate::shm_move::share(slf.py(), slf.as_any(), slf.get().parts(), ring_bytes)
    }

    /// Makes this channel (new, never used) the one of segment ``uuid`` in this process,
    /// opened from the first of ``holders`` (``(pid, fd)``) that is reachable.
    fn _attach_shm(slf: &Bound<'_, Self>, uuid: &[u8], holders: Vec<(u32, i32)>) -> PyResult<()> {
        crate::shm_move::attach(slf.py(), slf.get().parts(), uuid, &holders)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<Channel>() {
            Ok(o) => o.get().inner == self.inner,
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> u64 {
        self.inner.id()
    }

    fn __repr__(&self) -> String {
        if self.flavors.net.get().is_some() {
            let cap = self.inner.capacity();
            return format!("<Channel '{}' capacity={cap} networked>", self.name);
        }
        let s = self.inner.stats();
        let mut state = String::new();
        if s.poisoned {
            state.push_str(" poisoned");
        } else if s.retired {
            state.push_str(" retired");
        }
        format!(
            "<Channel '{}' capacity={} buffered={}{}>",
            self.name, s.capacity, s.buffered, state
        )
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        if slf.get().flavors.net.get().is_some() {
            return mobility_reduce(slf.py(), "reduce_net", slf.as_any());
        }
        mobility_reduce(slf.py(), "reduce_channel", slf.as_any())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let mut result = Ok(());
        // A locked channel is skipped: not visiting a reference only makes the collector keep
        // objects alive longer (it treats them as externally referenced), never free them early.
        self.inner.try_visit_buffered(|v| {
            if result.is_ok() {
                result = visit.call(v);
            }
        });
        result
    }

    fn __clear__(&self) {
        drop(self.inner.drain_buffered());
    }
}

/// `types.GenericAlias(cls, item)`: what `__class_getitem__` of a generic class returns.
pub(crate) fn generic_alias<'py>(
    cls: &Bound<'py, PyType>,
    item: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let alias = cls.py().import("types")?.getattr("GenericAlias")?;
    alias.call1((cls, item))
}

/// `__next__`'s view of a read: end-of-stream (retired) stops the iteration.
pub(crate) fn end_of_stream(py: Python<'_>, r: PyResult<Value>) -> PyResult<Option<Value>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance(py, crate::errors::retired_type(py)?.as_any()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An in-process operation's result `r`, unless it failed because its channel moved to shared
/// memory meanwhile (`Error::Moved`, raised as the private `_Moved`): then `Err(side)`, to retry
/// there. Nothing was sent or taken by the failed attempt.
pub(crate) fn moved<'a, T>(
    py: Python<'_>,
    chan: &'a Channel,
    r: PyResult<T>,
) -> Result<PyResult<T>, &'a ShmSide> {
    if let (Err(e), Some(s)) = (&r, chan.flavors.shm.get()) {
        if e.is_instance_of::<crate::errors::Moved>(py) {
            return Err(s.get());
        }
    }
    Ok(r)
}
