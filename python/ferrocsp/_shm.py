"""Channels shared with other OS processes: the move to shared memory, the payload codec, and
pickling channels and ends for another process.

Invariants:
- A channel moves to shared memory (``share``) the first time it is pickled for another OS
  process, with its buffered values, poison and end counts; from then on the native
  ``Channel`` hands every operation to its shared side (``Channel._shm``, the Rust
  ``_ShmSide``: ``crates/ferrocsp-py/src/shm_side.rs``), which calls ``encode``/``decode``
  here. A channel that never leaves its interpreter never pays for any of this.
- One segment is one channel object per interpreter (``_by_uuid``); one end slot is one end
  object per interpreter (``_ends``), so identity survives any number of trips.
- All copies of an end are one end: its state (live/retired) is the slot in the segment's end
  table, so retiring any copy, in any process, retires it.
- Dropping an end object retires it, as in process, if it never crossed processes (never
  pickled for another process, not unpickled from one); an end that crossed stays live when
  one copy is dropped, since the others may still be in use (retire it explicitly).
- Values are pickled with protocol 5; large buffers (``bytes``/``bytearray``/``memoryview``
  values, and out-of-band pickle buffers such as numpy arrays' of ``OOB_MIN`` bytes or more)
  travel as raw parts, copied once into the segment and once into an object the reader owns.
- A written loan (a ``LoanBuffer`` as the value itself) travels as ``[b"L", loan]`` with the
  part kind ``_LOAN``: on a rendezvous channel only its identity crosses and the reader maps
  the same memory (``shm_msg.rs``); otherwise its bytes are copied and arrive as ``bytes``.
- A value that cannot be pickled raises ``TypeError`` in the writer and nothing is sent.
- A greenlet process never blocks its scheduler on a shared channel, nor an asyncio task its
  event loop: their waits switch away and are woken by the process's futex watcher threads
  (``shm_coop.rs``, ``shm_aio.rs``), never one thread per waiting operation.
- An ``Alt`` over shared channels is one native ``_shm_select`` call (``select``): exactly one
  guard fires, output guards on rendezvous channels as conditional offers that readers in any
  process take by firing the selection's cell in shared memory (docs/design.md).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ._errors import ChannelRetired
from ._native import (
    Channel,
    LoanBuffer,
    Reader,
    Writer,
    _shared_wait,
    _shm_await,
    _shm_select,
    _ShmChannel,
    _ShmSide,
    _xtable_create,
)

__all__ = [
    "OOB_MIN",
    "aselect",
    "crossing",
    "dumps",
    "is_crossing",
    "loads",
    "select",
    "share",
    "shared_of",
]

#: Pickle buffers at least this large travel out of band (as raw parts of the message).
OOB_MIN = 64 * 1024
#: Bytes of ring per channel: the largest message it carries. Pages are allocated only as
#: they are used, so the default costs address space, not memory.
RING_BYTES = int(os.environ.get("FERROCSP_SHM_RING_BYTES", str(1 << 30)))

_BYTES, _BYTEARRAY, _LOAN = 0, 1, 2
_lock = threading.RLock()
_by_uuid: weakref.WeakValueDictionary[bytes, Channel] = weakref.WeakValueDictionary()
_ends: weakref.WeakValueDictionary[tuple[bytes, int], Reader | Writer] = (
    weakref.WeakValueDictionary()
)
_local = threading.local()


@contextlib.contextmanager
def crossing() -> Iterator[None]:
    """Pickling inside this block is for another OS process: channels move to shared memory."""
    depth = getattr(_local, "crossing", 0)
    _local.crossing = depth + 1
    try:
        yield
    finally:
        _local.crossing = depth


def is_crossing() -> bool:
    """Whether the current pickling is for another OS process."""
    return getattr(_local, "crossing", 0) > 0


def dumps(obj: Any) -> bytes:
    """Pickles ``obj`` for another OS process (channels and ends inside it move to shared
    memory)."""
    with crossing():
        return pickle.dumps(obj, protocol=5)


def loads(data: bytes) -> Any:
    """Unpickles what ``dumps`` made (in any process)."""
    return pickle.loads(data)


def share(chan: Channel) -> _ShmSide:
    """Moves ``chan`` to shared memory (once, atomically: ``Channel._share``); returns its
    shared side."""
    side = chan._share(RING_BYTES)
    with _lock:
        _by_uuid[side.uuid] = chan  # one channel object per segment in this interpreter
    # Every process that holds a shared channel is in a participant table (the OS backend
    # reserves its children's slots before they start), so waits on it are seen by deadlock
    # detection even before, or after, any OS child runs. Idempotent; none in a forked child.
    with contextlib.suppress(OSError):
        _xtable_create()
    return side


def reduce_channel(chan: Channel) -> tuple[Any, tuple[Any, ...]]:
    """Pickles a shared (or now moving) channel as a reference to its segment."""
    side = share(chan)
    return (restore_channel, (side.uuid, side.holders, chan.name, chan.capacity))


def reduce_end(end: Reader | Writer) -> tuple[Any, tuple[Any, ...]]:
    """Pickles an end of a shared (or now moving) channel as its slot in the end table."""
    chan = end.channel
    side = share(chan)
    kind = "reader" if isinstance(end, Reader) else "writer"
    slot = side.send_end(end._end_id, kind, end.retired)
    with _lock:
        _ends[(side.uuid, slot)] = end
    args = (side.uuid, side.holders, chan.name, chan.capacity, slot, kind)
    return (restore_end, args)


def restore_channel(
    uuid: bytes, holders: list[tuple[int, int]], name: str, capacity: int
) -> Channel:
    """Unpickles a shared channel: this interpreter's object for segment ``uuid``."""
    with _lock:
        chan = _by_uuid.get(uuid)
        if chan is not None:
            return chan
        chan = Channel(capacity, name=name)
        chan._attach_shm(uuid, holders)
        _by_uuid[uuid] = chan
        return chan


def restore_end(
    uuid: bytes, holders: list[tuple[int, int]], name: str, capacity: int, slot: int, kind: str
) -> Reader | Writer:
    """Unpickles an end: this interpreter's object for end ``slot`` of segment ``uuid``."""
    with _lock:
        end = _ends.get((uuid, slot))
        if end is not None:
            return end
        chan = restore_channel(uuid, holders, name, capacity)
        end = chan._adopt_end(kind, slot)
        _ends[(uuid, slot)] = end
        return end


# -- payload codec --------------------------------------------------------------------------


_SCALARS = frozenset({int, float, str, bool, type(None), complex})
_TWO_BYTES = [_BYTES, _BYTES]


def check_travels(value: Any, chan: Channel[Any]) -> None:
    """Raises the ``TypeError`` ``encode`` would for ``value``, a value buffered in ``chan``
    that is about to move with it to shared memory. ``chan`` itself and its ends, wherever
    they are inside ``value``, are passed over: they travel once ``chan`` has moved, and
    pickling one now would move ``chan`` again, from inside its own move."""
    if type(value) in _SCALARS or isinstance(value, bytes | bytearray | LoanBuffer | memoryview):
        return

    class _Check(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, Channel):
                return 0 if obj == chan else None
            if isinstance(obj, Reader | Writer):
                return 0 if obj.channel == chan else None
            return None

    depth = getattr(_local, "crossing", 0)
    _local.crossing = depth + 1
    try:
        _Check(io.BytesIO(), protocol=5, buffer_callback=lambda _: False).dump(value)
    except Exception as exc:
        raise TypeError(
            f"cannot send a {type(value).__name__} over channel {chan.name!r} to another OS "
            f"process: it cannot be pickled ({exc})"
        ) from exc
    finally:
        _local.crossing = depth


def encode(value: Any, name: str) -> tuple[list[Any], list[int]]:
    """``value`` as message parts and their arrival kinds (see the module docs)."""
    t = type(value)
    if t in _SCALARS:  # the common small case: no buffers, no channels inside
        return [b"P", pickle.dumps(value, 5)], _TWO_BYTES
    if t is bytes:
        return [b"B", value], [_BYTES, _BYTES]
    if t is bytearray:
        return [b"A", value], [_BYTES, _BYTEARRAY]
    if t is LoanBuffer:
        return [b"L", value], [_BYTES, _LOAN]
    if t is memoryview:
        mv: memoryview = value if value.c_contiguous else memoryview(value.tobytes())
        meta = pickle.dumps((mv.format, mv.shape, mv.readonly), protocol=5)
        kind = _BYTES if mv.readonly else _BYTEARRAY
        return [b"M" + meta, mv.cast("B") if mv.ndim else mv.tobytes()], [_BYTES, kind]
    bufs: list[memoryview] = []

    def out_of_band(pb: pickle.PickleBuffer) -> bool:
        try:
            raw = pb.raw()
        except BufferError:  # not contiguous: in-band
            return True
        if raw.nbytes < OOB_MIN:
            return True
        bufs.append(raw)
        return False

    depth = getattr(_local, "crossing", 0)
    _local.crossing = depth + 1
    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=out_of_band)
    except Exception as exc:
        raise TypeError(
            f"cannot send a {t.__name__} over channel {name!r} to another OS process: "
            f"it cannot be pickled ({exc})"
        ) from exc
    finally:
        _local.crossing = depth
    return [b"P", data, *bufs], [_BYTES, _BYTES, *([_BYTEARRAY] * len(bufs))]


def decode(parts: list[Any]) -> Any:
    """The value of a message made by ``encode``."""
    tag = parts[0]
    if tag in (b"B", b"A", b"L"):
        return parts[1]
    if tag[:1] == b"M":
        fmt, shape, _readonly = pickle.loads(tag[1:])
        mv = memoryview(parts[1])
        try:
            return mv.cast(fmt, shape) if shape else mv
        except (TypeError, ValueError):
            return mv
    return pickle.loads(parts[1], buffers=parts[2:])


# -- choice over shared channels -------------------------------------------------------------

_READ, _WRITE, _SKIP, _TIMEOUT = 0, 1, 2, 3
_RANDOM, _PRIORITY, _FAIR = 0, 1, 2
# What ``_shm_select`` returns when no guard fired.
_RETIRED, _TIMED_OUT, _WOULD_BLOCK = -1, -2, -3


def shared_of(target: Any) -> _ShmSide | None:
    """The shared side of a guard's channel (None: an in-process channel, or no channel)."""
    if isinstance(target, Channel):
        return target._shm
    if isinstance(target, Reader | Writer):
        return target.channel._shm
    return None


def _name(target: Any) -> str:
    """An in-process guard's channel name (for the retired message)."""
    chan = target.channel if isinstance(target, Reader | Writer) else target
    return str(getattr(chan, "name", repr(chan)))


def select(ops: list[tuple[int, Any, Any]], policy: int, last: int | None) -> tuple[int, Any]:
    """A choice over guards on shared channels, and in-process ones: ``_native._select``'s
    twin for an Alt with at least one shared channel.

    Orders the guards by the policy, encodes the output values of shared channels, and makes
    one native ``_shm_select`` call, which fires exactly one guard: inputs take a message or
    another selection's conditional offer, outputs on rendezvous channels leave conditional
    offers that a reader in any process (plain or selecting) takes by firing this selection's
    cell in shared memory. In-process guards go with it as an engine selection linked to that
    cell (``shm::select_mixed``): one word decides for every guard. Every guard is tried in
    the policy's order, whatever its transport. A ``Skip``, or a ``Timeout`` already due, fires
    if no guard before it in the order can (the call does not block then).
    """
    import random

    n = len(ops)
    if policy == _PRIORITY:
        order = list(range(n))
    elif policy == _FAIR:
        # As in-process: after the guard chosen last; a fresh Alt starts at the first.
        first = 0 if last is None else last + 1
        order = [(first + k) % n for k in range(n)]
    else:
        order = random.sample(range(n), n)
    names: dict[Any, str] = {}
    natives: list[_ShmChannel] = []
    ends: list[int | None] = []
    messages: list[tuple[list[Any], list[int]] | None] = []
    index: list[int] = []
    local: list[tuple[int, Any, Any]] = []
    local_index: list[int] = []
    # The policy's order over both kinds: (True, j) for local[j], (False, i) for natives[i].
    merged: list[tuple[bool, int]] = []
    fallback: int | None = None  # the Skip or due Timeout that fires if nothing before it can
    timeout: float | None = None
    timeout_at: int | None = None
    for kind, target, _ in ops:  # names in guard order, for the retired message
        if kind in (_READ, _WRITE):
            s = shared_of(target)
            if s is not None:
                names[s.uuid] = s.name
            else:
                names[id(target.channel if isinstance(target, Reader | Writer) else target)] = (
                    _name(target)
                )
    for i in order:
        kind, target, value = ops[i]
        if kind == _SKIP or (kind == _TIMEOUT and float(target) <= 0.0):
            fallback = i
            break
        if kind == _TIMEOUT:
            if timeout is None or float(target) < timeout:
                timeout, timeout_at = float(target), i
            continue
        s = shared_of(target)
        if s is None:
            merged.append((True, len(local)))
            local.append((kind, target, value))
            local_index.append(i)
            continue
        end: int | None = None
        if isinstance(target, Reader | Writer):
            if target.retired:
                continue  # a retired end's guard can never fire
            role = "reader" if isinstance(target, Reader) else "writer"
            end = s.slot(target._end_id, role, False)
        s.wait_moved()
        merged.append((False, len(natives)))
        natives.append(s.native)
        ends.append(end)
        messages.append(None if kind == _READ else encode(value, s.name))
        index.append(i)
    chosen, parts = _shm_select(
        natives,
        ends,
        messages,
        timeout,
        fallback is not None,
        local if local else None,
        [len(natives) + j if is_local else j for is_local, j in merged],
    )
    if chosen >= len(natives):
        return local_index[chosen - len(natives)], parts
    if chosen >= 0:
        return index[chosen], (None if parts is None else decode(parts))
    if chosen == _WOULD_BLOCK and fallback is not None:
        return fallback, None
    if chosen == _TIMED_OUT and timeout_at is not None:
        return timeout_at, None
    # The in-process message: every channel of the Alt, by name, in guard order.
    listed = ", ".join(f"'{name}'" for name in names.values())
    raise ChannelRetired(f"alt on channel {listed}: channel is retired")


# -- asyncio choice over shared channels -----------------------------------------------------


async def aselect(
    ops: list[tuple[int, Any, Any]], policy: int, last: int | None
) -> tuple[int, Any]:
    """``select`` from asyncio code, on an operation greenlet whose waits switch back to the
    task (``_shm_await``, ``shm_aio.rs``): withdrawn if the task is cancelled (a guard that
    fired in the race is kept, and the cancellation re-requested)."""
    _shared_wait(alt_waits(ops))
    try:
        result: tuple[int, Any] = await _shm_await(select, ops, policy, last)
    finally:
        _shared_wait(None)
    return result


def alt_waits(ops: list[tuple[int, Any, Any]]) -> list[tuple[str, str]]:
    """What an Alt over shared channels waits on, for ``csp.dump()`` (``_shared_wait``)."""
    out = []
    for kind, target, _ in ops:
        s = shared_of(target) if kind in (_READ, _WRITE) else None
        if s is not None:
            out.append((s.name, "read" if kind == _READ else "write"))
    return out
