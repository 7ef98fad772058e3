//! `_shm_select`: the choice (`Alt`) over channels shared with OS processes, and over a mix
//! of shared and in-process channels (one decision word: `ferrocsp::shm::select_mixed`).
//!
//! Invariants:
//! - Exactly one guard fires; an output guard's message is sent iff its guard is returned.
//! - It waits through `shm::blocking` (GIL released; a cooperative caller switches away).

use ferrocsp::shm::{select_mixed, Local, LocalPart, SelOp, Selected};
use ferrocsp::{Error, Turn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::alt_map::AltMap;
use crate::errors::{parse_timeout, to_pyerr, OpName};
use crate::pythread::deadline;
use crate::shm::{blocking, PyShmChannel};
use crate::shm_msg as msg;

/// What `_shm_select` returns when no guard fired: every guard is dead (and no deadline).
const SELECT_RETIRED: isize = -1;
/// ... the deadline passed.
const SELECT_TIMEOUT: isize = -2;
/// ... `nowait` and nothing could fire at once.
const SELECT_WOULD_BLOCK: isize = -3;

/// ``_shm_select(channels, ends, messages, timeout=None, nowait=False, local=None,
/// order=None)``: fires exactly one guard of a choice over shared channels:
/// ``messages[i]`` is None for an input guard on ``channels[i]``,
/// ``(parts, kinds)`` for an output guard (as ``write``); ``ends[i]`` the end's slot (None:
/// the channel itself; a retired end is dead). ``local``: in-process read/write guards too,
/// as ``_select``'s ``(kind, target, value)`` triples; one of all of them fires
/// (``shm::select_mixed``). ``order``: the order every guard is tried in, each once, shared
/// guard ``i`` as ``i`` and local guard ``j`` as ``len(channels) + j`` (None: the shared ones,
/// then the local ones, each in the order given).
/// Returns ``(i, parts)`` for an input, ``(i, None)`` for an output, ``(len(channels) + j,
/// value)`` for local guard ``j``, or ``(-1, None)`` (every guard dead), ``(-2, None)``
/// (timeout), ``(-3, None)`` (``nowait``, nothing ready). A poisoned channel's guard raises
/// ``ChannelPoisoned``; a local channel that moved to shared memory meanwhile raises
/// ``_Moved`` (nothing fired). Waits with the GIL released.
#[pyfunction]
#[pyo3(signature = (channels, ends, messages, timeout = None, nowait = false, local = None,
    order = None))]
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub(crate) fn _shm_select<'py>(
    py: Python<'py>,
    channels: Vec<PyRef<'py, PyShmChannel>>,
    ends: Vec<Option<u32>>,
    messages: Vec<Option<(Bound<'py, PyList>, Vec<u8>)>>,
    timeout: Option<&Bound<'py, PyAny>>,
    nowait: bool,
    local: Option<Vec<(u8, Option<Bound<'py, PyAny>>, Option<crate::pythread::Value>)>>,
    order: Option<Vec<usize>>,
) -> PyResult<(isize, Option<Bound<'py, PyAny>>)> {
    if channels.len() != messages.len() || channels.len() != ends.len() {
        return Err(PyValueError::new_err("need one end and one message (or None) per channel"));
    }
    // Any number of channels (up to the engine's `MAX_GUARDS`): a wait on more futex words
    // than one `futex_waitv` takes goes through the futex watchers (`shm::Wait::block`).
    let n_local = local.as_ref().map_or(0, Vec::len);
    let order = order.unwrap_or_else(|| (0..channels.len() + n_local).collect());
    let mut seen = vec![false; channels.len() + n_local];
    if order.len() != seen.len()
        || !order.iter().all(|&k| k < seen.len() && !std::mem::replace(&mut seen[k], true))
    {
        return Err(PyValueError::new_err("order must name every guard exactly once"));
    }
    let mut local = match local {
        Some(ops) => Some(crate::select::prepare(py, ops, ferrocsp::Policy::Priority, None)?),
        None => None,
    };
    let turns = merged_order(&order, channels.len(), local.as_ref().map(|(_, m)| m));
    let dl = deadline(parse_timeout(timeout)?);
    let mut writes: Vec<Option<(Vec<msg::Part>, usize)>> = Vec::with_capacity(messages.len());
    for m in &messages {
        writes.push(match m {
            None => None,
            Some((parts, kinds)) => {
                let bufs = msg::parts(parts, kinds)?;
                let total = msg::inline_len(&bufs);
                Some((bufs, total))
            }
        });
    }
    // One closure type for every output guard: no boxes.
    let fills: Vec<Option<_>> = writes
        .iter()
        .map(|w| w.as_ref().map(|(bufs, _)| move |out: &mut [u8]| msg::fill_inline(out, bufs)))
        .collect();
    let ops: Vec<SelOp<'_>> = channels
        .iter()
        .zip(&ends)
        .zip(writes.iter().zip(&fills))
        .map(|((c, &end), (w, f))| SelOp {
            ch: c.engine(),
            end,
            write: match (w, f) {
                (Some((_, total)), Some(f)) => Some((*total, f as &ferrocsp::shm::Fill<'_>)),
                _ => None,
            },
        })
        .collect();
    let ops = &ops;
    let mut part = local.as_mut().map(|(sel, _)| Local::new(sel, ferrocsp::Policy::Priority));
    let part_ref = part.as_mut();
    let turns = &turns;
    // A fired output guard waits for its reader, who may be one of this thread's.
    let r = blocking(py, dl, nowait, true, move |w| {
        let local = part_ref.map(|p| (p as &mut dyn LocalPart, turns.as_slice()));
        select_mixed(ops, local, w)
    })?;
    let fired_local = part.and_then(|p| p.result);
    let (i, what) = match r {
        Ok(x) => x,
        Err(Error::Retired) => return Ok((SELECT_RETIRED, None)),
        Err(Error::Timeout) => return Ok((SELECT_TIMEOUT, None)),
        Err(Error::WouldBlock) => return Ok((SELECT_WOULD_BLOCK, None)),
        Err(e) => {
            let name = channels.first().map_or("", |c| c.name());
            return Err(to_pyerr(py, e, OpName::Read, name));
        }
    };
    if let Selected::Local = what {
        let (Some(r), Some((_, map))) = (fired_local, local.as_ref()) else {
            return Err(PyValueError::new_err("a local guard fired without its result"));
        };
        let (j, value) = map.map(py, r)?;
        let index = isize::try_from(channels.len() + j)
            .map_err(|_| PyValueError::new_err("guard index"))?;
        return Ok((index, value.map(|v| v.into_bound(py))));
    }
    let ch = &channels[i];
    let index = isize::try_from(i).map_err(|_| PyValueError::new_err("guard index"))?;
    match what {
        Selected::Wrote | Selected::Local => Ok((index, None)),
        Selected::Poisoned => {
            let op = if messages[i].is_some() { OpName::Write } else { OpName::Read };
            Err(to_pyerr(py, Error::Poisoned, op, ch.name()))
        }
        Selected::Read(slot) => match msg::take(py, slot, &|e| ch.err(py, e, OpName::Read))? {
            Some(parts) => Ok((index, Some(parts.into_any()))),
            // The input fired; its writer now sends the message inline: read it, whatever
            // the deadline (the communication is committed on both sides).
            None => Ok((index, Some(ch.read_parts(py, None, false)?.into_any()))),
        },
    }
}

/// The engine's order of a mixed choice: `order`'s shared guards as they are, its local guards
/// as their engine operations (`map`; a retired end has none, it can never fire).
fn merged_order(order: &[usize], shared: usize, map: Option<&AltMap>) -> Vec<Turn> {
    let Some(map) = map else { return (0..shared).map(Turn::Other).collect() };
    let mut engine_op = vec![None; order.len().saturating_sub(shared)];
    for (e, &j) in map.index_of.iter().enumerate() {
        if let Some(slot) = engine_op.get_mut(j) {
            *slot = Some(e);
        }
    }
    order
        .iter()
        .filter_map(|&k| match k.checked_sub(shared) {
            None => Some(Turn::Other(k)),
            Some(j) => engine_op.get(j).copied().flatten().map(Turn::Op),
        })
        .collect()
}
