"""Channels shared with other OS processes: the move to shared memory, the payload codec, and
pickling channels and ends for another process.

Invariants:
- A channel moves to shared memory (``share``) the first time it is pickled for another OS
  process, with its buffered values, poison and end counts; from then on the native
  ``Channel`` hands every operation to its ``SharedChannel`` (``Channel._shm``). A channel
  that never leaves its interpreter never pays for any of this.
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
- A value that cannot be pickled raises ``TypeError`` in the writer and nothing is sent.
- A greenlet process never blocks its scheduler on a shared channel, nor an asyncio task its
  event loop: their waits switch away and are woken by the process's futex watcher threads
  (``shm_coop.rs``, ``_shm_aio``), never one thread per waiting operation.
- An ``Alt`` over shared channels is one native ``_shm_select`` call (``select``): exactly one
  guard fires, output guards on rendezvous channels as conditional offers that readers in any
  process take by firing the selection's cell in shared memory (docs/design.md).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import threading
import weakref
from collections.abc import Iterator
from types import FrameType
from typing import Any

from ._errors import ChannelRetired, WouldBlock
from ._native import (
    Channel,
    Reader,
    Writer,
    _shared_wait,
    _shm_select,
    _ShmChannel,
)
from ._shm_aio import off_loop
from ._stats import ChannelStats

__all__ = [
    "OOB_MIN",
    "SharedChannel",
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

_BYTES, _BYTEARRAY = 0, 1
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


class SharedChannel:
    """The shared-memory side of a ``Channel``: what its operations turn into once it moved."""

    __slots__ = (
        "__weakref__",
        "_adopt",
        "_crossed",
        "_gate",
        "_moving",
        "_native",
        "_slots",
        "holders",
        "name",
        "uuid",
    )

    def __init__(self, native: _ShmChannel, name: str, holders: list[tuple[int, int]]) -> None:
        self._native = native
        self.name = name
        self.uuid: bytes = native.uuid
        # Processes known to hold the segment open: this one first, so a receiver reopens it
        # from the process that sent it (alive while it writes) or from older holders.
        me = (os.getpid(), native.fd)
        self.holders = [me, *[h for h in holders if h[0] != me[0]]][:4]
        self._slots: dict[int, int] = {}
        # Ends (by engine id) that were pickled for, or arrived from, another process: their
        # copies elsewhere keep them live when the object here is dropped.
        self._crossed: set[int] = set()
        self._adopt: int | None = None
        # While the channel is moving here, its operations wait until the values it held
        # in-process are in the shared buffer (so nothing overtakes them).
        self._moving = False
        self._gate = threading.Event()
        self._gate.set()

    def _wait_moved(self) -> None:
        if self._moving:
            self._gate.wait()

    # -- values ---------------------------------------------------------------------------

    def write(self, value: Any, timeout: Any = None) -> None:
        parts, kinds = encode(value, self.name)
        self._wait_moved()
        # Shown by csp.dump() while it waits (deadlock detection cannot see this wait). A
        # greenlet's wait switches to other greenlets (`shm_coop.rs`).
        _shared_wait([(self.name, "write")])
        try:
            self._native.write(parts, kinds, timeout)
        finally:
            _shared_wait(None)

    def read(self, timeout: Any = None) -> Any:
        self._wait_moved()
        _shared_wait([(self.name, "read")])
        try:
            parts = self._native.read(timeout)
        finally:
            _shared_wait(None)
        return decode(parts)

    def write_nowait(self, value: Any) -> None:
        parts, kinds = encode(value, self.name)
        self._wait_moved()
        self._native.write(parts, kinds, None, True)

    def read_nowait(self) -> Any:
        self._wait_moved()
        return decode(self._native.read(None, True))

    # -- asyncio (the waiting is in `_shm_aio`; see its module doc) ----------------------

    async def _aread(self, timeout: Any, root: FrameType | None) -> Any:
        if not self._moving:
            try:
                return decode(self._native.read(None, True))
            except WouldBlock:
                pass
        _shared_wait([(self.name, "read")])
        try:
            parts = await off_loop(root, self._wait_then_read, timeout)
        finally:
            _shared_wait(None)
        return decode(parts)

    def _wait_then_read(self, timeout: Any) -> list[Any]:
        self._wait_moved()
        return self._native.read(timeout)

    async def _awrite(self, value: Any, timeout: Any, root: FrameType | None) -> None:
        parts, kinds = encode(value, self.name)
        if not self._moving:
            try:
                self._native.write(parts, kinds, None, True)
                return
            except WouldBlock:
                pass
        _shared_wait([(self.name, "write")])
        try:
            await off_loop(root, self._wait_then_write, parts, kinds, timeout)
        finally:
            _shared_wait(None)

    def _wait_then_write(self, parts: list[Any], kinds: list[int], timeout: Any) -> None:
        self._wait_moved()
        self._native.write(parts, kinds, timeout)

    async def aread(self, timeout: Any = None) -> Any:
        """``Channel.aread`` once moved here."""
        return await self._aread(timeout, sys._getframe())

    async def awrite(self, value: Any, timeout: Any = None) -> None:
        """``Channel.awrite`` once moved here."""
        await self._awrite(value, timeout, sys._getframe())

    async def anext(self) -> Any:
        """``Channel.__anext__`` once moved here: end-of-stream stops the iteration."""
        try:
            return await self._aread(None, sys._getframe())
        except ChannelRetired:
            raise StopAsyncIteration from None

    async def end_aread(self, end_id: int, kind: str, retired_here: bool, timeout: Any) -> Any:
        """``Reader.aread`` once moved here."""
        self._live(end_id, kind, retired_here)
        return await self._aread(timeout, sys._getframe())

    async def end_awrite(
        self, end_id: int, kind: str, retired_here: bool, value: Any, timeout: Any
    ) -> None:
        """``Writer.awrite`` once moved here."""
        self._live(end_id, kind, retired_here)
        await self._awrite(value, timeout, sys._getframe())

    async def end_anext(self, end_id: int, kind: str, retired_here: bool) -> Any:
        """``Reader.__anext__`` once moved here."""
        try:
            self._live(end_id, kind, retired_here)
            return await self._aread(None, sys._getframe())
        except ChannelRetired:
            raise StopAsyncIteration from None

    def poison(self) -> None:
        self._native.poison()

    def stats(self) -> ChannelStats:
        return ChannelStats(*self._native.stats())

    # -- ends -----------------------------------------------------------------------------

    def register_end(self, end_id: int, kind: str) -> None:
        """A native end was just made: count it (or bind it to the slot being adopted)."""
        with _lock:
            slot = self._adopt
            self._adopt = None
            if slot is None:
                slot = self._native.new_end(kind)
            self._slots[end_id] = slot

    def slot(self, end_id: int, kind: str, retired_here: bool) -> int | None:
        """The end's slot; an end made before the move gets one now (already counted).
        None: it had retired before the move."""
        with _lock:
            slot = self._slots.get(end_id)
            if slot is None:
                if retired_here:
                    return None
                slot = self._native.new_end(kind, True)
                self._slots[end_id] = slot
            return slot

    def _live(self, end_id: int, kind: str, retired_here: bool) -> None:
        slot = self.slot(end_id, kind, retired_here)
        if slot is None or self._native.end_retired(slot):
            raise ChannelRetired(f"{kind} end of channel '{self.name}' is retired")

    def end_read(self, end_id: int, kind: str, retired_here: bool, timeout: Any) -> Any:
        self._live(end_id, kind, retired_here)
        return self.read(timeout)

    def end_read_nowait(self, end_id: int, kind: str, retired_here: bool) -> Any:
        self._live(end_id, kind, retired_here)
        return self.read_nowait()

    def end_write(
        self, end_id: int, kind: str, retired_here: bool, value: Any, timeout: Any
    ) -> None:
        self._live(end_id, kind, retired_here)
        self.write(value, timeout)

    def end_write_nowait(self, end_id: int, kind: str, retired_here: bool, value: Any) -> None:
        self._live(end_id, kind, retired_here)
        self.write_nowait(value)

    def end_retire(self, end_id: int, kind: str, retired_here: bool) -> None:
        slot = self.slot(end_id, kind, retired_here)
        if slot is not None:
            self._native.retire_end(slot)

    def end_dropped(self, end_id: int, kind: str) -> None:
        """A live end object here was dropped (its ``Drop``): it retires unless it crossed
        processes (the documented rule for copies; see the module doc)."""
        with _lock:
            if end_id in self._crossed:
                self._crossed.discard(end_id)
                self._slots.pop(end_id, None)
                return
            slot = self._slots.pop(end_id, None)
            if slot is None:  # made before the move and never used since: counted, no slot
                slot = self._native.new_end(kind, True)
        self._native.retire_end(slot)

    def end_retired(self, end_id: int, kind: str, retired_here: bool) -> bool:
        slot = self.slot(end_id, kind, retired_here)
        return slot is None or self._native.end_retired(slot)

    def hold_lock_for_test(self) -> None:
        """Takes the segment's lock forever (tests of a process dying while holding it)."""
        self._native._hold_lock_for_test()


# -- the move to shared memory -------------------------------------------------------------


def share(chan: Channel) -> SharedChannel:
    """Moves ``chan`` to shared memory (once); returns its shared side."""
    with _lock:
        shared = chan._shm
        if shared is not None:
            return shared  # type: ignore[no-any-return]
        st = chan.stats()
        # In process, retirement is one state of the whole channel, whichever side's ends
        # retired: reads drain the buffer, then reads and writes raise ChannelRetired (and
        # `read_nowait` cannot tell the sides apart). The shared channel gets both sides
        # retired: its writers now (reads drain, then raise), its readers once the buffered
        # values are adopted (adopted writes would fail on a retired reader side).
        native = _ShmChannel(chan.capacity, RING_BYTES, chan.name)
        native.adopt_counts("reader", st.reader_ends, st.reader_ends)
        native.adopt_counts("writer", st.writer_ends + int(st.retired), st.writer_ends)
        if st.poisoned:
            native.poison()
        shared = SharedChannel(native, chan.name, [])
        shared._moving = True
        shared._gate.clear()
        try:
            # Atomic under the GIL: from here every operation goes to `shared`, and those
            # blocked in-process wake and retry there; they wait at the gate until the values
            # held in-process (in order) are in the shared buffer.
            values = chan._set_shm(shared)
            _by_uuid[shared.uuid] = chan
            for v in values:
                parts, kinds = encode(v, chan.name)
                native.write(parts, kinds, None, True, True)
            if st.retired:
                native.adopt_counts("reader", 1, 0)
        finally:
            shared._moving = False
            shared._gate.set()
        return shared


def reduce_channel(chan: Channel) -> tuple[Any, tuple[Any, ...]]:
    """Pickles a shared (or now moving) channel as a reference to its segment."""
    shared = share(chan)
    return (restore_channel, (shared.uuid, shared.holders, chan.name, chan.capacity))


def reduce_end(end: Reader | Writer) -> tuple[Any, tuple[Any, ...]]:
    """Pickles an end of a shared (or now moving) channel as its slot in the end table."""
    chan = end.channel
    shared = share(chan)
    kind = "reader" if isinstance(end, Reader) else "writer"
    slot = shared.slot(_end_id(end), kind, end.retired)
    if slot is None:  # retired before the move: a fresh slot that is retired at once
        slot = shared._native.new_end(kind)
        shared._native.retire_end(slot)
    _ends[(shared.uuid, slot)] = end
    shared._crossed.add(_end_id(end))
    args = (shared.uuid, shared.holders, chan.name, chan.capacity, slot, kind)
    return (restore_end, args)


def _end_id(end: Reader | Writer) -> int:
    return end._end_id


def restore_channel(
    uuid: bytes, holders: list[tuple[int, int]], name: str, capacity: int
) -> Channel:
    """Unpickles a shared channel: this interpreter's object for segment ``uuid``."""
    with _lock:
        chan = _by_uuid.get(uuid)
        if chan is not None:
            return chan
        errors: list[str] = []
        native = None
        for pid, fd in holders:
            try:
                native = _ShmChannel.attach(pid, fd, uuid, name)
                break
            except OSError as exc:
                errors.append(str(exc))
        if native is None:
            raise ValueError(
                f"cannot attach to channel {name!r}: no process that held it is reachable "
                f"({'; '.join(errors)})"
            )
        chan = Channel(capacity, name=name)
        chan._set_shm(SharedChannel(native, name, holders))
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
        shared: SharedChannel = chan._shm
        shared._adopt = slot
        try:
            end = chan.reader() if kind == "reader" else chan.writer()
        finally:
            shared._adopt = None
        shared._crossed.add(_end_id(end))
        _ends[(uuid, slot)] = end
        return end


# -- payload codec --------------------------------------------------------------------------


_SCALARS = frozenset({int, float, str, bool, type(None), complex})
_TWO_BYTES = [_BYTES, _BYTES]


def encode(value: Any, name: str) -> tuple[list[Any], list[int]]:
    """``value`` as message parts and their arrival kinds (see the module docs)."""
    t = type(value)
    if t in _SCALARS:  # the common small case: no buffers, no channels inside
        return [b"P", pickle.dumps(value, 5)], _TWO_BYTES
    if t is bytes:
        return [b"B", value], [_BYTES, _BYTES]
    if t is bytearray:
        return [b"A", value], [_BYTES, _BYTEARRAY]
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
    if tag in (b"B", b"A"):
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


def shared_of(target: Any) -> SharedChannel | None:
    """The shared side of a guard's channel (None: an in-process channel, or no channel)."""
    if isinstance(target, Channel):
        return target._shm  # type: ignore[no-any-return]
    if isinstance(target, Reader | Writer):
        return target.channel._shm  # type: ignore[no-any-return]
    return None


def select(ops: list[tuple[int, Any, Any]], policy: int, last: int | None) -> tuple[int, Any]:
    """A choice over guards on shared channels: ``_native._select``'s twin for them.

    Orders the guards by the policy, encodes the output values, and makes one native
    ``_shm_select`` call, which fires exactly one guard: inputs take a message or another
    selection's conditional offer, outputs on rendezvous channels leave conditional offers that
    a reader in any process (plain or selecting) takes by firing this selection's cell in
    shared memory. A ``Skip``, or a ``Timeout`` already due, fires if no guard before it in the
    order can (the call does not block then).
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
    names: dict[bytes, str] = {}
    natives: list[_ShmChannel] = []
    ends: list[int | None] = []
    messages: list[tuple[list[Any], list[int]] | None] = []
    index: list[int] = []
    fallback: int | None = None  # the Skip or due Timeout that fires if nothing before it can
    timeout: float | None = None
    timeout_at: int | None = None
    for kind, target, _ in ops:  # names in guard order, for the retired message
        if kind in (_READ, _WRITE):
            s = shared_of(target)
            if s is None:
                raise ValueError(
                    f"an Alt cannot mix channels shared with OS processes and in-process "
                    f"channels ({target!r} is in-process); send every channel of the Alt to "
                    "an OS process first, or use separate Alts"
                )
            names[s.uuid] = s.name
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
        assert s is not None
        end: int | None = None
        if isinstance(target, Reader | Writer):
            if target.retired:
                continue  # a retired end's guard can never fire
            role = "reader" if isinstance(target, Reader) else "writer"
            end = s.slot(target._end_id, role, False)
        s._wait_moved()
        natives.append(s._native)
        ends.append(end)
        messages.append(None if kind == _READ else encode(value, s.name))
        index.append(i)
    chosen, parts = _shm_select(natives, ends, messages, timeout, fallback is not None)
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
    task (``_shm_aio``): withdrawn if the task is cancelled (a guard that fired in the race is
    kept, and the cancellation re-requested)."""
    _shared_wait(alt_waits(ops))
    try:
        result: tuple[int, Any] = await off_loop(None, select, ops, policy, last)
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
