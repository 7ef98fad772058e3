//! The move of a channel to shared memory (`Channel._share`), and a channel made in this
//! process for a segment another process created (`Channel._attach_shm`).
//!
//! Invariants:
//! - The move happens once, under the channel's `MoveLock`: the side is set, the in-process
//!   side closed (`ferrocsp::Channel::close_moved`, under the engine channel's own lock: its
//!   blocked operations fail with `Moved` and retry on the side) and its end counts read, in
//!   one step. No reliance on the GIL.
//! - The values the in-process side held are written to the shared buffer, in order, before
//!   the side's gate opens; a poison made in process during the move is carried over.
//! - No value is lost to the move: a buffered value that cannot travel (cannot be pickled)
//!   stops the move before it starts (`TypeError`, the channel stays in process with all its
//!   values); one that arrived during the move and cannot travel poisons the shared channel,
//!   so its readers learn that a value went missing instead of never seeing it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferrocsp::shm::EndKind;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::flavor::Flavors;
use crate::pythread::Value;
use crate::shm::PyShmChannel;
use crate::shm_side::{lock, ShmSide};

/// What the move needs of a `Channel`: its engine channel, flavors and name.
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub(crate) inner: &'a ferrocsp::Channel<Value>,
    pub(crate) flavors: &'a Flavors,
    pub(crate) name: &'a Arc<str>,
}

/// `Channel._share`: moves `chan` (the Python channel `obj`) to shared memory (once) and
/// returns its side.
pub(crate) fn share(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    this: Parts<'_>,
    ring_bytes: usize,
) -> PyResult<Py<ShmSide>> {
    if let Some(s) = this.flavors.shm.get() {
        return Ok(s.clone_ref(py));
    }
    check_buffered(py, obj, this)?;
    let native = PyShmChannel::create(this.inner.capacity(), ring_bytes, this.name)?;
    let side = Py::new(py, ShmSide::new(py, native, this.name.clone(), &[])?)?;
    let s = side.get();
    s.moving.store(true, Ordering::Release);
    *lock(&s.gate) = true;
    let moved = {
        let _held = this.flavors.move_lock.hold(py);
        if this.flavors.shm.get().is_some() {
            None
        } else {
            // In process, retirement is one state of the whole channel, whichever side's ends
            // retired. The shared channel gets its writers retired now (reads drain, then
            // raise; writes raise), and its readers too, once the buffered values are adopted
            // (adopted writes would fail on a retired reader side), only if it was the readers
            // that retired (writer ends still live): reads there take nothing any more, and
            // the in-process buffer was dropped when they retired.
            let st = this.inner.stats();
            let e = s.engine();
            let made = count(st.writer_ends + usize::from(st.retired));
            e.adopt_counts(EndKind::Reader, count(st.reader_ends), count(st.reader_ends))
                .and_then(|()| e.adopt_counts(EndKind::Writer, made, count(st.writer_ends)))
                .map_err(|err| s.err(py, err))?;
            // From here every operation goes to the side; those blocked in-process wake with
            // `Moved` and retry there, waiting at the gate until the values are over.
            let _ = this.flavors.shm.set(side.clone_ref(py));
            let values = this.inner.close_moved();
            // A poison that did not see the side yet was made in process before the close.
            if this.inner.is_poisoned() {
                e.poison().map_err(|err| s.err(py, err))?;
            }
            Some((values, st.retired && st.writer_ends > 0))
        }
    };
    let Some((values, readers_retired)) = moved else {
        // Another thread moved it first: ours was never used.
        return this.flavors.shm.get().map(|s| s.clone_ref(py)).ok_or_else(|| {
            PyValueError::new_err(format!("channel '{}' lost its shared side", this.name))
        });
    };
    let carried = (|| {
        for v in values {
            let (parts, kinds) = s.encode(py, v.bind(py))?;
            s.native.get().write_parts(py, &parts, &kinds, None, true, true)?;
        }
        if readers_retired {
            s.engine().adopt_counts(EndKind::Reader, 1, 0).map_err(|e| s.err(py, e))?;
        }
        Ok(())
    })();
    if carried.is_err() {
        // A value that reached the channel during the move could not travel: the shared
        // channel must not look complete without it (module invariants).
        let _ = s.engine().poison(); // the TypeError below is what the caller must see
    }
    s.open_gate();
    carried.map(|()| side)
}

/// Checks that every value buffered in `chan` (`obj`) can travel (`_shm.check_travels`, which
/// pickles it as `encode` would, but passes over `chan` and its ends inside it: pickling those
/// would move `chan` again, from inside this move): the first that cannot raises its
/// `TypeError` before anything moves.
fn check_buffered(py: Python<'_>, obj: &Bound<'_, PyAny>, this: Parts<'_>) -> PyResult<()> {
    let mut held: Vec<Py<PyAny>> = Vec::new();
    // The engine lock's holders never wait for the GIL, so this ends; Python runs only after
    // the visit, outside the lock.
    while !this.inner.try_visit_buffered(|v| held.push(v.clone_ref(py))) {
        held.clear();
        std::thread::yield_now();
    }
    let check = py.import("ferrocsp._shm")?.getattr("check_travels")?;
    for v in held {
        check.call1((v, obj))?;
    }
    Ok(())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Attaches `chan` (just made, never used) to segment `uuid`, opened from the first of
/// `holders` that is reachable (unpickling a shared channel in this process).
pub(crate) fn attach(
    py: Python<'_>,
    this: Parts<'_>,
    uuid: &[u8],
    holders: &[(u32, i32)],
) -> PyResult<()> {
    let mut errors = Vec::new();
    let mut native = None;
    for &(pid, fd) in holders {
        match PyShmChannel::attach_to(pid, fd, uuid, this.name) {
            Ok(n) => {
                native = Some(n);
                break;
            }
            Err(e) => errors.push(e.value(py).to_string()),
        }
    }
    let Some(native) = native else {
        return Err(PyValueError::new_err(format!(
            "cannot attach to channel '{}': no process that held it is reachable ({})",
            this.name,
            errors.join("; ")
        )));
    };
    let side = Py::new(py, ShmSide::new(py, native, this.name.clone(), holders)?)?;
    let _held = this.flavors.move_lock.hold(py);
    this.flavors
        .shm
        .set(side)
        .map_err(|_| PyValueError::new_err(format!("channel '{}' is already shared", this.name)))?;
    drop(this.inner.close_moved());
    Ok(())
}
