//! Bindings of the networked channels (`ferrocsp-net`): `ferrocsp.net` builds its Python API
//! on these three classes. Values cross this boundary as `bytes`; encoding is Python's.
//!
//! Invariants:
//! - Every wait goes through `net_wait.rs` (GIL released; Ctrl-C never loses a value).
//! - An `_NetOp`'s completion callback is called once, with the GIL, from the network runtime's
//!   thread (asyncio schedules its future through `call_soon_threadsafe`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ferrocsp_net::{
    Bytes, Chan, ChanOps, Connection, EndCount, EndKind, NetError, Offer, Op, Options, Status,
    TicketOp,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{parse_timeout, OpName};
use crate::net_wait::{net_err, wait_op};
use crate::pythread::{deadline, Value};

fn secs(name: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
        PyValueError::new_err(format!("{name} must be a positive number of seconds, got {v}"))
    })
}

/// The `EndCount` named `how` (see `NetChan::count_end`).
pub(crate) fn end_count(how: &str) -> PyResult<EndCount> {
    Ok(match how {
        "make" => EndCount::Made,
        "retire" => EndCount::Retired,
        "send" => EndCount::Sent,
        "unsend" => EndCount::Unsent,
        "receive" => EndCount::Received,
        "cross" => EndCount::Crossed,
        _ => return Err(PyValueError::new_err(format!("unknown end count {how:?}"))),
    })
}

/// A connection to a NATS server (use `ferrocsp.net.connect`).
#[pyclass(frozen, name = "_NetConnection", module = "ferrocsp._native")]
pub(crate) struct NetConnection {
    conn: Arc<Connection>,
}

/// Connects to `url`; blocks (GIL released) at most `connect_timeout` seconds.
#[pyfunction]
#[pyo3(signature = (url, *, user=None, password=None, token=None, nkey_seed=None, credentials=None,
    tls_ca=None, tls_cert=None, tls_key=None, tls_required=false, name=None, namespace=None,
    connect_timeout=5.0, ack_timeout=5.0, reconnect_timeout=30.0, lease_ttl=10.0,
    hold_acks=false, drop_commits=false, fresh_any_time=false, fresh_no_floor=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _net_connect(
    py: Python<'_>,
    url: String,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    nkey_seed: Option<String>,
    credentials: Option<std::path::PathBuf>,
    tls_ca: Option<std::path::PathBuf>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    tls_required: bool,
    name: Option<String>,
    namespace: Option<String>,
    connect_timeout: f64,
    ack_timeout: f64,
    reconnect_timeout: f64,
    lease_ttl: f64,
    hold_acks: bool,
    drop_commits: bool,
    fresh_any_time: bool,
    fresh_no_floor: bool,
) -> PyResult<NetConnection> {
    let mut o = Options::new(url);
    o.user = user;
    o.password = password;
    o.token = token;
    o.nkey_seed = nkey_seed;
    o.credentials_file = credentials;
    o.tls_ca = tls_ca;
    o.tls_cert = tls_cert;
    o.tls_key = tls_key;
    o.tls_required = tls_required;
    o.name = name;
    o.namespace = namespace.unwrap_or_default();
    o.connect_timeout = secs("connect_timeout", connect_timeout)?;
    o.ack_timeout = secs("ack_timeout", ack_timeout)?;
    o.reconnect_timeout = secs("reconnect_timeout", reconnect_timeout)?;
    o.lease_ttl = secs("lease_ttl", lease_ttl)?;
    o.hold_acks = hold_acks;
    o.drop_commits = drop_commits;
    o.fresh_any_time = fresh_any_time;
    o.fresh_no_floor = fresh_no_floor;
    let conn = crate::detach::detach(py, || Connection::connect(o))
        .map_err(|e| net_err(py, e, OpName::Read, ""))?;
    Ok(NetConnection { conn: Arc::new(conn) })
}

#[pymethods]
impl NetConnection {
    /// Opens the networked channel `name` (created on the server if new).
    fn channel(&self, py: Python<'_>, name: String, capacity: usize) -> PyResult<NetChan> {
        let chan = crate::detach::detach(py, || self.conn.channel(&name, capacity)).map_err(
            |e| match e {
                NetError::Invalid(m) => PyValueError::new_err(m),
                e => net_err(py, e, OpName::Read, &name),
            },
        )?;
        Ok(NetChan { conn: Arc::clone(&self.conn), chan, alt: OnceLock::new() })
    }

    /// The capacity of channel `name` if it exists on the server, else None (creates nothing).
    fn capacity_of(&self, py: Python<'_>, name: String) -> PyResult<Option<usize>> {
        crate::detach::detach(py, || self.conn.capacity_of(&name)).map_err(|e| match e {
            NetError::Invalid(m) => PyValueError::new_err(m),
            e => net_err(py, e, OpName::Read, &name),
        })
    }

    /// Closes the connection (idempotent); operations in flight fail with ConnectionError.
    fn close(&self, py: Python<'_>) {
        crate::detach::detach(py, || self.conn.close());
    }

    /// (names with an entry, channels still open): for tests that the entries stay bounded.
    fn _chan_entries(&self) -> (usize, usize) {
        self.conn.chan_entries()
    }

    #[getter]
    fn url(&self) -> String {
        self.conn.url().to_owned()
    }
}

/// One networked channel of a connection: bytes in, bytes out.
#[pyclass(frozen, name = "_NetChan", module = "ferrocsp._native")]
pub(crate) struct NetChan {
    conn: Arc<Connection>,
    pub(crate) chan: Arc<Chan>,
    /// The local rendezvous channels an Alt waits on for this networked channel: as a
    /// reader (input guard) and as a writer (Output guard); made on first use (see `PyOffer`).
    alt: OnceLock<(ferrocsp::Channel<Value>, ferrocsp::Channel<Value>)>,
}

/// Hands network values to an Alt of this process: `try_write` into the local channel the
/// Alt waits on succeeds only if the Alt is waiting and wins its selection cell, so the Alt
/// decides once, exactly as between local channels. Output guards mirror it: the Alt waits
/// as a writer of `out_local` and `try_read` wins it. Poison, all readers retired and (for
/// rendezvous) all writers retired are mirrored onto the local channels so the Alt sees it.
struct PyOffer {
    local: ferrocsp::Channel<Py<PyAny>>,
    writer: Mutex<Option<ferrocsp::Writer<Py<PyAny>>>>,
    out_local: ferrocsp::Channel<Py<PyAny>>,
    out_reader: Mutex<Option<ferrocsp::Reader<Py<PyAny>>>>,
    rendezvous: bool,
}

impl Offer for PyOffer {
    fn offer(&self, v: Bytes) -> Result<(), Bytes> {
        Python::attach(|py| {
            let obj = PyBytes::new(py, &v).into_any().unbind();
            self.local.try_write(obj).map_err(|_| v)
        })
    }

    fn hold(&self, hold: u64) -> bool {
        // An int instead of bytes: the Alt's decoder then waits for the held value.
        Python::attach(|py| {
            let marker = hold.into_pyobject(py).map(|o| o.into_any().unbind());
            marker.is_ok_and(|m| self.local.try_write(m).is_ok())
        })
    }

    fn drained(&self) {
        Python::attach(|_py| {
            let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(w) = w {
                w.retire();
            }
        });
    }

    fn take_output(&self) -> bool {
        // The token (the value's bytes stay with the Alt, which sends them once it sees it
        // fired); dropped with the GIL held.
        Python::attach(|_py| self.out_local.try_read().is_ok())
    }

    fn status(&self, s: Status) {
        Python::attach(|_py| {
            if s.poisoned {
                self.local.poison();
                self.out_local.poison();
                return;
            }
            if s.writers_retired && self.rendezvous {
                let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(w) = w {
                    w.retire();
                }
            }
            // No reader left: an Output guard can never fire (a write would fail), whatever
            // the capacity.
            if s.readers_retired {
                let r = self.out_reader.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(r) = r {
                    r.retire();
                }
            }
        });
    }
}

impl NetChan {
    /// The two local channels of Alt guards on this networked channel, made on first use.
    /// The local rendezvous engine channels an Alt of this process waits on for this
    /// networked channel (as a reader, and as a writer for Output guards), fed by the
    /// transport through `PyOffer`; made on first use.
    pub(crate) fn alt_engines(
        &self,
    ) -> PyResult<&(ferrocsp::Channel<Value>, ferrocsp::Channel<Value>)> {
        if let Some(p) = self.alt.get() {
            return Ok(p);
        }
        let local = ferrocsp::Channel::new(0);
        let out_local = ferrocsp::Channel::new(0);
        let offer = PyOffer {
            local: local.clone(),
            writer: Mutex::new(Some(local.writer())),
            out_local: out_local.clone(),
            out_reader: Mutex::new(Some(out_local.reader())),
            rendezvous: self.chan.capacity == 0,
        };
        if self.alt.set((local, out_local)).is_err() {
            // Another thread made them first: use those.
            return self.alt.get().ok_or_else(|| PyRuntimeError::new_err("alt channels"));
        }
        let status = self.chan.status();
        let offer = Arc::new(offer);
        self.chan.set_offer(offer.clone());
        offer.status(status);
        self.alt.get().ok_or_else(|| PyRuntimeError::new_err("alt channels"))
    }
}

enum AnyOp {
    Unit(Op<()>),
    Bytes(Op<Bytes>),
    MaybeBytes(Op<Option<Bytes>>),
}

/// An operation in flight, for asyncio.
#[pyclass(frozen, name = "_NetOp", module = "ferrocsp._native")]
pub(crate) struct NetOp {
    op: AnyOp,
    chan: String,
    kind: OpName,
    taken: Mutex<bool>,
}

impl NetChan {
    /// `write`, for Rust callers (`net_side.rs`).
    pub(crate) fn write_data(
        &self,
        py: Python<'_>,
        data: &[u8],
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let op = self.chan.write(&self.conn, Bytes::copy_from_slice(data), deadline(timeout));
        wait_op(py, &op, Some((&self.chan.name, true)))?
            .map_err(|e| net_err(py, e, OpName::Write, &self.chan.name))
    }

    /// `read`, for Rust callers (`net_side.rs`).
    pub(crate) fn read_data<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let op = self.chan.read(&self.conn, deadline(timeout));
        let b = wait_op(py, &op, Some((&self.chan.name, false)))?
            .map_err(|e| net_err(py, e, OpName::Read, &self.chan.name))?;
        Ok(PyBytes::new(py, &b))
    }

    /// `write_many` of encoded values, for Rust callers (`net_side.rs`): `written` counts the
    /// values stored (the first ones), whatever the outcome.
    pub(crate) fn write_many_data(
        &self,
        py: Python<'_>,
        data: Vec<Bytes>,
        until: Option<std::time::Instant>,
        written: Arc<std::sync::atomic::AtomicUsize>,
    ) -> PyResult<()> {
        let op = self.chan.write_many(&self.conn, data, until, written);
        wait_op(py, &op, Some((&self.chan.name, true)))?
            .map_err(|e| net_err(py, e, OpName::Write, &self.chan.name))
    }

    /// `read_many` of up to `max` values' bytes, for Rust callers (`net_side.rs`).
    pub(crate) fn read_many_data<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        until: Option<std::time::Instant>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let op = self.chan.read_many(&self.conn, max, until);
        let v = wait_op(py, &op, Some((&self.chan.name, false)))?
            .map_err(|e| net_err(py, e, OpName::Read, &self.chan.name))?;
        Ok(v.iter().map(|b| PyBytes::new(py, b)).collect())
    }

    /// `poison`, for Rust callers.
    pub(crate) fn poison_now(&self, py: Python<'_>) -> PyResult<()> {
        let op = self.chan.poison(&self.conn);
        wait_op(py, &op, None)?.map_err(|e| net_err(py, e, OpName::Write, &self.chan.name))
    }

    /// `stats()` of the channel (the engine's snapshot type; see `ferrocsp_net`'s `stats.rs`
    /// for which fields are exact). Waits like an operation (GIL released, greenlets switch).
    pub(crate) fn stats_now(&self, py: Python<'_>) -> PyResult<ferrocsp::Stats> {
        let op = self.chan.stats(&self.conn);
        let s =
            wait_op(py, &op, None)?.map_err(|e| net_err(py, e, OpName::Read, &self.chan.name))?;
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Ok(ferrocsp::Stats {
            capacity: s.capacity,
            buffered: n(s.buffered),
            readers_waiting: n(s.readers_waiting),
            writers_waiting: n(s.writers_waiting),
            reader_ends: n(s.reader_ends),
            writer_ends: n(s.writer_ends),
            poisoned: s.poisoned,
            retired: s.retired,
        })
    }

    /// `count_end`, for Rust callers.
    pub(crate) fn count(
        &self,
        py: Python<'_>,
        reader: bool,
        how: EndCount,
        wait: bool,
    ) -> PyResult<()> {
        let kind = if reader { EndKind::Reader } else { EndKind::Writer };
        let op = self.chan.count_end(&self.conn, kind, how);
        if !wait {
            return Ok(());
        }
        wait_op(py, &op, None)?.map_err(|e| net_err(py, e, OpName::Write, &self.chan.name))
    }
}

#[pymethods]
impl NetChan {
    #[getter]
    fn name(&self) -> String {
        self.chan.name.clone()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.chan.capacity
    }

    /// Writes `data`, blocking (GIL released) until taken/stored, or `timeout` passes.
    #[pyo3(signature = (data, timeout=None))]
    fn write(
        &self,
        py: Python<'_>,
        data: &[u8],
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.write_data(py, data, parse_timeout(timeout)?)
    }

    /// Reads one value's bytes, blocking (GIL released) until one comes or `timeout` passes.
    #[pyo3(signature = (timeout=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.read_data(py, parse_timeout(timeout)?)
    }

    /// Starts a write and returns its handle (asyncio).
    #[pyo3(signature = (data, timeout=None))]
    fn start_write(&self, data: &[u8], timeout: Option<&Bound<'_, PyAny>>) -> PyResult<NetOp> {
        let d = deadline(parse_timeout(timeout)?);
        let op = self.chan.write(&self.conn, Bytes::copy_from_slice(data), d);
        Ok(NetOp {
            op: AnyOp::Unit(op),
            chan: self.chan.name.clone(),
            kind: OpName::Write,
            taken: Mutex::new(false),
        })
    }

    /// Starts a read and returns its handle (asyncio).
    #[pyo3(signature = (timeout=None))]
    fn start_read(&self, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<NetOp> {
        let d = deadline(parse_timeout(timeout)?);
        let op = self.chan.read(&self.conn, d);
        Ok(NetOp {
            op: AnyOp::Bytes(op),
            chan: self.chan.name.clone(),
            kind: OpName::Read,
            taken: Mutex::new(false),
        })
    }

    /// Poisons the channel for every participant (blocks until the server has it).
    fn poison(&self, py: Python<'_>) -> PyResult<()> {
        self.poison_now(py)
    }

    /// Issues (`op="issue"`), claims (`"claim"`: whether it took a live ticket) or voids
    /// (`"void"`) the ticket of a reader (`reader=True`) or writer end travelling in a message.
    /// With `wait=False` it is sent in the background (and answers True).
    #[pyo3(signature = (reader, ticket, op, wait=true))]
    pub(crate) fn ticket(
        &self,
        py: Python<'_>,
        reader: bool,
        ticket: String,
        op: &str,
        wait: bool,
    ) -> PyResult<bool> {
        let op = match op {
            "issue" => TicketOp::Issue,
            "claim" => TicketOp::Claim,
            "void" => TicketOp::Void,
            _ => return Err(PyValueError::new_err(format!("unknown ticket operation {op:?}"))),
        };
        let kind = if reader { EndKind::Reader } else { EndKind::Writer };
        let op = self.chan.ticket(&self.conn, kind, ticket, op);
        if !wait {
            return Ok(true);
        }
        wait_op(py, &op, None)?.map_err(|e| match e {
            NetError::Invalid(m) => PyValueError::new_err(m),
            e => net_err(py, e, OpName::Read, &self.chan.name),
        })
    }

    /// Counts what happens to an end of a reader (`reader=True`) or writer: `how` is
    /// `"make"`, `"retire"`, `"send"` (made for a receiver, in transit), `"unsend"` (an end in
    /// transit is gone), `"receive"` or `"cross"` (now shared with another OS process).
    /// With `wait=False` the update is sent in the background (finalizers).
    #[pyo3(signature = (reader, how, wait=true))]
    fn count_end(&self, py: Python<'_>, reader: bool, how: &str, wait: bool) -> PyResult<()> {
        self.count(py, reader, end_count(how)?, wait)
    }

    /// An Alt of this process starts (`up=True`) or stops waiting on this channel.
    fn alt_demand(&self, py: Python<'_>, up: bool) -> PyResult<()> {
        self.chan
            .alt_demand(&self.conn, up)
            .map_err(|e| net_err(py, e, OpName::Select, &self.chan.name))
    }

    /// An Alt of this process starts (`up=True`) or stops waiting with an Output guard here.
    fn alt_out_demand(&self, py: Python<'_>, up: bool) -> PyResult<()> {
        self.chan
            .alt_out_demand(&self.conn, up)
            .map_err(|e| net_err(py, e, OpName::Select, &self.chan.name))
    }

    /// A held input Alt takes its value (blocking, GIL released): bytes, or None if the
    /// writer released the hold.
    fn alt_take<'py>(&self, py: Python<'py>, hold: u64) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let op = self.chan.alt_take(&self.conn, hold);
        let b = wait_op(py, &op, Some((&self.chan.name, false)))?
            .map_err(|e| net_err(py, e, OpName::Select, &self.chan.name))?;
        Ok(b.map(|b| PyBytes::new(py, &b)))
    }

    /// `alt_take` for asyncio: its handle.
    fn start_alt_take(&self, hold: u64) -> NetOp {
        NetOp {
            op: AnyOp::MaybeBytes(self.chan.alt_take(&self.conn, hold)),
            chan: self.chan.name.clone(),
            kind: OpName::Select,
            taken: Mutex::new(false),
        }
    }

    /// Sends a chosen Output guard's value to the reader held for it (blocking, GIL released).
    fn commit(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let op = self.chan.commit(&self.conn, Bytes::copy_from_slice(data));
        wait_op(py, &op, Some((&self.chan.name, true)))?
            .map_err(|e| net_err(py, e, OpName::Write, &self.chan.name))
    }

    /// `commit` for asyncio: its handle.
    fn start_commit(&self, data: &[u8]) -> NetOp {
        NetOp {
            op: AnyOp::Unit(self.chan.commit(&self.conn, Bytes::copy_from_slice(data))),
            chan: self.chan.name.clone(),
            kind: OpName::Write,
            taken: Mutex::new(false),
        }
    }

    /// `(poisoned, writers_retired, readers_retired)` as last seen.
    fn status(&self) -> (bool, bool, bool) {
        let s = self.chan.status();
        (s.poisoned, s.writers_retired, s.readers_retired)
    }
}

#[pymethods]
impl NetOp {
    /// Whether the outcome is available.
    fn done(&self) -> bool {
        match &self.op {
            AnyOp::Unit(o) => o.is_done(),
            AnyOp::Bytes(o) => o.is_done(),
            AnyOp::MaybeBytes(o) => o.is_done(),
        }
    }

    /// Asks the operation to withdraw; it still completes normally if it already happened.
    fn cancel(&self) {
        match &self.op {
            AnyOp::Unit(o) => o.cancel(),
            AnyOp::Bytes(o) => o.cancel(),
            AnyOp::MaybeBytes(o) => o.cancel(),
        }
    }

    /// Calls `fn()` once the outcome is available (from the network thread, with the GIL).
    fn add_done_callback(&self, callback: Py<PyAny>) {
        let f = move || {
            Python::attach(|py| {
                if let Err(e) = callback.call0(py) {
                    e.write_unraisable(py, None);
                }
            });
        };
        match &self.op {
            AnyOp::Unit(o) => o.on_done(f),
            AnyOp::Bytes(o) => o.on_done(f),
            AnyOp::MaybeBytes(o) => o.on_done(f),
        }
    }

    /// The outcome: `None` for a write, the bytes for a read; raises the operation's error
    /// (`asyncio.CancelledError` if it was withdrawn). Only once done; only once.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        {
            let mut t = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
            if *t {
                return Err(PyRuntimeError::new_err("the result was already taken"));
            }
            if !self.done() {
                return Err(PyRuntimeError::new_err("the operation is still running"));
            }
            *t = true;
        }
        let err = |e| net_err(py, e, self.kind, &self.chan);
        match &self.op {
            AnyOp::Unit(o) => {
                o.take().unwrap_or(Err(NetError::Closed)).map_err(err)?;
                Ok(py.None())
            }
            AnyOp::Bytes(o) => {
                let b = o.take().unwrap_or(Err(NetError::Closed)).map_err(err)?;
                Ok(PyBytes::new(py, &b).into_any().unbind())
            }
            AnyOp::MaybeBytes(o) => {
                let b = o.take().unwrap_or(Err(NetError::Closed)).map_err(err)?;
                Ok(b.map_or_else(|| py.None(), |b| PyBytes::new(py, &b).into_any().unbind()))
            }
        }
    }
}
