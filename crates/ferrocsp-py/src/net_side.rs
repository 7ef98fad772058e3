//! `NetSide`: the networked flavor of `Channel` (`Channel(name=..., net=conn)`,
//! `conn.channel(name, capacity)`): the same native `Channel`, `Reader` and `Writer` types as
//! in-process and shared-memory channels, with every operation going to the NATS transport
//! (`net.rs`, crate `ferrocsp-net`).
//!
//! Invariants:
//! - A networked channel's in-process engine channel is closed from birth (`close_moved`):
//!   nothing is ever sent through it; its engine ends only carry each end's local retired
//!   flag.
//! - Values go through the connection's safe codec (`ferrocsp.net.Connection._encode`/
//!   `_decode`, Python), called from here as mobility calls pickle. A message the codec
//!   rejects is logged on the `ferrocsp.net` logger and dropped; the read goes on waiting with
//!   what is left of its timeout.
//! - Ends are counted on the server: when made (`reader()`/`writer()`, or by the sender's
//!   codec on behalf of a receiver) and once more when retired (explicitly, on `with` exit, or
//!   when dropped, then in the background).
//! - An end that crossed into another OS process (`crossed`: pickled for a `backend="os"`
//!   child, or unpickled there) is one end in every process: its copies share a ticket on the
//!   server, and a retire uncounts it only if it claimed that ticket (once, whichever copy);
//!   dropping a crossed copy retires nothing (another copy may be in use).
//! - Without the cargo feature `net` the type is uninhabited: no channel has this flavor.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

#[cfg(feature = "net")]
pub(crate) use with_net::{make, NetSide};

static NET_AIO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The coroutine of `ferrocsp.net._aio.<func>(*args)`: an asyncio operation on a networked
/// channel (it awaits the transport's operation handle; see that module).
pub(crate) fn net_aio<'py>(
    py: Python<'py>,
    func: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Py<PyAny>> {
    let m = NET_AIO
        .get_or_try_init(py, || py.import("ferrocsp.net._aio").map(|m| m.into_any().unbind()))?;
    Ok(m.bind(py).call_method1(func, args)?.unbind())
}

/// Without networked channels in this build, no transport exists to make one over.
#[cfg(not(feature = "net"))]
pub(crate) fn make(_: &Bound<'_, PyAny>, _: Py<PyAny>) -> PyResult<(NetSide, String, usize)> {
    Err(pyo3::exceptions::PyRuntimeError::new_err(
        "this ferrocsp was built without networked channels (cargo feature 'net')",
    ))
}

#[cfg(not(feature = "net"))]
#[derive(Debug)]
pub(crate) enum NetSide {}

#[cfg(not(feature = "net"))]
impl NetSide {
    pub(crate) fn write(
        &self,
        _: Python<'_>,
        _: &str,
        _: &Bound<'_, PyAny>,
        _: Option<f64>,
        _: bool,
    ) -> PyResult<()> {
        match *self {}
    }
    pub(crate) fn read(
        &self,
        _: Python<'_>,
        _: &str,
        _: Option<f64>,
        _: bool,
    ) -> PyResult<Py<PyAny>> {
        match *self {}
    }
    pub(crate) fn poison(&self, _: Python<'_>) -> PyResult<()> {
        match *self {}
    }
    pub(crate) fn buffered(&self) -> bool {
        match *self {}
    }
    pub(crate) fn write_many(
        &self,
        _: Python<'_>,
        _: &str,
        _: &Bound<'_, pyo3::types::PyIterator>,
        _: Option<std::time::Instant>,
    ) -> PyResult<()> {
        match *self {}
    }
    pub(crate) fn read_many<'py>(
        &self,
        _: Python<'py>,
        _: &str,
        _: usize,
        _: Option<std::time::Instant>,
    ) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        match *self {}
    }
    pub(crate) fn stats(&self, _: Python<'_>) -> PyResult<ferrocsp::Stats> {
        match *self {}
    }
    pub(crate) fn alt_channel(
        &self,
        _: Python<'_>,
        _: bool,
        _: impl Fn(ferrocsp::Channel<crate::pythread::Value>) -> PyResult<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match *self {}
    }
    pub(crate) fn count_end(&self, _: Python<'_>, _: bool, _: bool, _: bool) -> PyResult<()> {
        match *self {}
    }
    pub(crate) fn conn<'py>(&self, _: Python<'py>) -> Bound<'py, PyAny> {
        match *self {}
    }
    pub(crate) fn end_retired(&self, _: Python<'_>, _: u64, _: bool, _: bool) -> PyResult<()> {
        match *self {}
    }
    pub(crate) fn cross_ticket(
        &self,
        _: Python<'_>,
        _: u64,
        _: bool,
        _: String,
    ) -> PyResult<String> {
        match *self {}
    }
    pub(crate) fn adopt(&self, _: u64, _: String) {
        match *self {}
    }
    pub(crate) fn core<'py>(&self, _: Python<'py>) -> Bound<'py, PyAny> {
        match *self {}
    }
}

#[cfg(feature = "net")]
mod with_net {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};
    use std::time::Instant;

    use ferrocsp_net::Bytes;

    use pyo3::exceptions::PyTimeoutError;
    use pyo3::intern;
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::types::{PyBytes, PyIterator, PyList, PyType};

    use ferrocsp_net::EndCount;

    use crate::batch::with_written;
    use crate::errors::{to_pyerr, OpName};
    use crate::net::NetChan;

    /// How many values `write_many` encodes before it hands them to the transport as one batch.
    const CHUNK: usize = 1024;

    static CODEC_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static LOG: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

    /// The networked side of a channel: its transport and the connection whose codec it uses.
    #[derive(Debug)]
    pub(crate) struct NetSide {
        core: Py<NetChan>,
        /// The Python `ferrocsp.net.Connection` (codec, pickle key, the channel of each name).
        conn: Py<PyAny>,
        /// The Python channels over the transport's Alt engine channels (input, output).
        alt: OnceLock<(Py<PyAny>, Py<PyAny>)>,
        /// This process's copies of ends that crossed OS processes: engine end id -> ticket.
        crossed: Mutex<HashMap<u64, String>>,
    }

    impl NetSide {
        pub(crate) fn new(core: Py<NetChan>, conn: Py<PyAny>) -> Self {
            NetSide { core, conn, alt: OnceLock::new(), crossed: Mutex::default() }
        }

        pub(crate) fn conn<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
            self.conn.bind(py).clone()
        }

        pub(crate) fn core<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
            self.core.bind(py).clone().into_any()
        }

        /// Sends `value` (`nowait`: only if that completes at once, else `WouldBlock`).
        pub(crate) fn write(
            &self,
            py: Python<'_>,
            name: &str,
            value: &Bound<'_, PyAny>,
            timeout: Option<f64>,
            nowait: bool,
        ) -> PyResult<()> {
            let conn = self.conn.bind(py);
            let (data, ends): (Bound<'_, PyBytes>, Bound<'_, PyAny>) =
                conn.call_method1(intern!(py, "_encode"), (name, value))?.extract()?;
            let timeout = if nowait { Some(0.0) } else { timeout };
            let r = self.core.get().write_data(py, data.as_bytes(), timeout);
            if r.is_err() {
                // Nothing was sent: the ends it carried were counted for nobody.
                conn.call_method1(intern!(py, "_unsend_ends"), (ends,))?;
            }
            r.map_err(|e| would_block(py, e, nowait, OpName::Write, name))
        }

        /// Takes one value (`nowait`: only if one is there at once, else `WouldBlock`).
        pub(crate) fn read(
            &self,
            py: Python<'_>,
            name: &str,
            timeout: Option<f64>,
            nowait: bool,
        ) -> PyResult<Py<PyAny>> {
            let timeout = if nowait { Some(0.0) } else { timeout };
            let deadline = timeout.and_then(|t| {
                Instant::now().checked_add(std::time::Duration::try_from_secs_f64(t).ok()?)
            });
            let codec_error = CODEC_ERROR.import(py, "ferrocsp.net._codec", "CodecError")?;
            loop {
                let left =
                    deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64());
                let raw = self
                    .core
                    .get()
                    .read_data(py, left.or(timeout))
                    .map_err(|e| would_block(py, e, nowait, OpName::Read, name))?;
                match self.conn.bind(py).call_method1(intern!(py, "_decode"), (name, raw)) {
                    Ok(v) => return Ok(v.unbind()),
                    Err(e) if e.is_instance(py, codec_error.as_any()) => {
                        log_rejected(py, name, &e)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        pub(crate) fn poison(&self, py: Python<'_>) -> PyResult<()> {
            self.core.get().poison_now(py)
        }

        /// Whether the channel has a buffer (and so a native batch: `batch.rs`).
        pub(crate) fn buffered(&self) -> bool {
            self.core.get().chan.capacity > 0
        }

        /// `write_many` on a buffered channel: values encoded in chunks of `CHUNK`, each
        /// chunk one transport batch (many values per round trip). Every error carries
        /// `written`; the ends carried by values not written are uncounted.
        pub(crate) fn write_many(
            &self,
            py: Python<'_>,
            name: &str,
            it: &Bound<'_, PyIterator>,
            until: Option<Instant>,
        ) -> PyResult<()> {
            let conn = self.conn.bind(py);
            let mut done = 0usize;
            loop {
                let mut data = Vec::new();
                let mut ends = Vec::new();
                let mut stop = None;
                let mut exhausted = false;
                while data.len() < CHUNK {
                    let v = match it.clone().next() {
                        None => {
                            exhausted = true;
                            break;
                        }
                        Some(v) => v,
                    };
                    let enc = v.and_then(|v| {
                        conn.call_method1(intern!(py, "_encode"), (name, v))?.extract::<(
                            Bound<'_, PyBytes>,
                            Bound<'_, PyAny>,
                        )>(
                        )
                    });
                    match enc {
                        Ok((d, e)) => {
                            data.push(Bytes::copy_from_slice(d.as_bytes()));
                            ends.push(e);
                        }
                        Err(e) => {
                            stop = Some(e);
                            break;
                        }
                    }
                }
                if !data.is_empty() {
                    let written = Arc::new(AtomicUsize::new(0));
                    let r = self.core.get().write_many_data(py, data, until, Arc::clone(&written));
                    let k = written.load(Ordering::Acquire);
                    if let Err(e) = r {
                        // Not sent: the ends those values carried were counted for nobody.
                        for e in ends.iter().skip(k) {
                            if let Err(u) = conn.call_method1(intern!(py, "_unsend_ends"), (e,)) {
                                return Err(with_written(py, u, done + k));
                            }
                        }
                        return Err(with_written(py, e, done + k));
                    }
                    done += k;
                }
                if let Some(e) = stop {
                    return Err(with_written(py, e, done));
                }
                if exhausted {
                    return Ok(());
                }
            }
        }

        /// `read_many` on a buffered channel: one transport batch, decoded. A message the
        /// codec rejects is logged and dropped as in `read`; if that leaves nothing, the read
        /// goes on with what is left of its timeout. Any other decoding error is raised with
        /// every value that did decode as its `values`.
        pub(crate) fn read_many<'py>(
            &self,
            py: Python<'py>,
            name: &str,
            max: usize,
            until: Option<Instant>,
        ) -> PyResult<Bound<'py, PyList>> {
            let codec_error = CODEC_ERROR.import(py, "ferrocsp.net._codec", "CodecError")?;
            loop {
                let raws = self.core.get().read_many_data(py, max, until)?;
                let out = PyList::empty(py);
                let mut failed = None;
                for raw in raws {
                    match self.conn.bind(py).call_method1(intern!(py, "_decode"), (name, raw)) {
                        Ok(v) => out.append(v)?,
                        Err(e) if e.is_instance(py, codec_error.as_any()) => {
                            log_rejected(py, name, &e)?
                        }
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = failed {
                    let _ = e.value(py).setattr("values", &out);
                    return Err(e);
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
        }

        /// The whole channel's stats: the server's state and a survey of its participants.
        pub(crate) fn stats(&self, py: Python<'_>) -> PyResult<ferrocsp::Stats> {
            self.core.get().stats_now(py)
        }

        /// The local channel an Alt waits on for this channel: as a reader (input guard), or
        /// (`output`) as a writer for an Output guard; `wrap` makes the Python channel of an
        /// engine channel (`channel.rs`, above this module).
        pub(crate) fn alt_channel(
            &self,
            py: Python<'_>,
            output: bool,
            wrap: impl Fn(ferrocsp::Channel<crate::pythread::Value>) -> PyResult<Py<PyAny>>,
        ) -> PyResult<Py<PyAny>> {
            let pair = match self.alt.get() {
                Some(p) => p,
                None => {
                    let (i, o) = self.core.get().alt_engines()?;
                    // A lost race leaves the first pair in place; both wrap the same engines.
                    let _ = self.alt.set((wrap(i.clone())?, wrap(o.clone())?));
                    self.alt
                        .get()
                        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("alt channels"))?
                }
            };
            Ok(if output { pair.1.clone_ref(py) } else { pair.0.clone_ref(py) })
        }

        /// End `id` (of a reader or writer) retires (`wait`: until the server has it; a
        /// finalizer does not wait). A crossed end is uncounted only by the copy that claims
        /// its ticket; a dropped crossed copy (`dropped`) leaves it to the others.
        pub(crate) fn end_retired(
            &self,
            py: Python<'_>,
            id: u64,
            reader: bool,
            dropped: bool,
        ) -> PyResult<()> {
            let crossed = || self.crossed.lock().unwrap_or_else(PoisonError::into_inner);
            let ticket = crossed().get(&id).cloned();
            match ticket {
                None => self.count_end(py, reader, false, !dropped),
                Some(_) if dropped => {
                    crossed().remove(&id);
                    Ok(())
                }
                Some(t) => {
                    // Forgotten only once the claim was answered: a retire that failed (the
                    // server unreachable) leaves this copy crossed, to be retired again.
                    let won = self.core.get().ticket(py, reader, t, "claim", true)?;
                    crossed().remove(&id);
                    if won {
                        // Counted in transit since it crossed (no process's lease holds it).
                        self.core.get().count(py, reader, EndCount::Unsent, true)?;
                    }
                    Ok(())
                }
            }
        }

        /// The ticket of end `id` crossing into another OS process: `fresh` (random, from the
        /// caller) issued on the server the first time this copy crosses; the same ticket for
        /// every later crossing.
        pub(crate) fn cross_ticket(
            &self,
            py: Python<'_>,
            id: u64,
            reader: bool,
            fresh: String,
        ) -> PyResult<String> {
            let have =
                self.crossed.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned();
            if let Some(t) = have {
                return Ok(t);
            }
            let t = fresh;
            self.core.get().ticket(py, reader, t.clone(), "issue", true)?;
            // Another thread pickling the same end meanwhile: the first ticket stays (the
            // second is a few bytes on the server that nothing claims).
            let (t, first) = {
                let mut m = self.crossed.lock().unwrap_or_else(PoisonError::into_inner);
                let first = !m.contains_key(&id);
                (m.entry(id).or_insert(t).clone(), first)
            };
            if first {
                // From now on copies in several processes share it: it is counted in transit,
                // not under this process's lease (which ends with this process).
                self.core.get().count(py, reader, EndCount::Crossed, true)?;
            }
            Ok(t)
        }

        /// End `id` is a copy of a crossed end with ticket `ticket` (made by unpickling).
        pub(crate) fn adopt(&self, id: u64, ticket: String) {
            self.crossed.lock().unwrap_or_else(PoisonError::into_inner).insert(id, ticket);
        }

        /// Counts an end made (`made`) or retired on the server; `wait`: until it has it.
        pub(crate) fn count_end(
            &self,
            py: Python<'_>,
            reader: bool,
            made: bool,
            wait: bool,
        ) -> PyResult<()> {
            let how = if made { EndCount::Made } else { EndCount::Retired };
            self.core.get().count(py, reader, how, wait)
        }
    }

    /// The side over transport `core` (a `_NetChan`) of `conn`, with the channel's name and
    /// capacity.
    pub(crate) fn make(
        core: &Bound<'_, PyAny>,
        conn: Py<PyAny>,
    ) -> PyResult<(NetSide, String, usize)> {
        let core = core.cast::<NetChan>()?;
        let (name, capacity) = (core.get().chan.name.clone(), core.get().chan.capacity);
        Ok((NetSide::new(core.clone().unbind(), conn), name, capacity))
    }

    /// Logs a message the codec rejected (it is dropped) on the `ferrocsp.net` logger.
    fn log_rejected(py: Python<'_>, name: &str, e: &PyErr) -> PyResult<()> {
        let log = LOG.get_or_try_init(py, || {
            let logging = py.import("logging")?;
            logging.call_method1("getLogger", ("ferrocsp.net",)).map(Bound::unbind)
        })?;
        let msg = "networked channel %r: rejected a message: %s";
        log.bind(py).call_method1("warning", (msg, name, e.value(py)))?;
        Ok(())
    }

    /// A `nowait` operation's timeout is `WouldBlock` (nothing was sent or taken).
    fn would_block(py: Python<'_>, e: PyErr, nowait: bool, op: OpName, name: &str) -> PyErr {
        if nowait && e.is_instance_of::<PyTimeoutError>(py) {
            return to_pyerr(py, ferrocsp::Error::WouldBlock, op, name);
        }
        e
    }
}
