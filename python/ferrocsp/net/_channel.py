"""Networked channels and their ends: the local channel API over ``_native._NetChan``.

Invariants:
- Every blocking call releases the GIL (in the native wait) or, in a greenlet scheduler,
  switches to the scheduler's other greenlets until the operation's completion callback
  wakes it (no thread per waiting operation).
- A message that fails to decode (garbage, unsigned or forged pickle) is logged on the
  ``ferrocsp.net`` logger and dropped; the read goes on waiting with what is left of its
  timeout, so the channel keeps working.
- End counting: an end is counted on the server when made (``reader()``/``writer()``, or when
  it is encoded into a message, on behalf of the receiver) and uncounted once when retired
  (explicitly, on ``with`` exit, or when garbage collected). All ends of a kind retired is
  seen by every participant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self

from .._errors import ChannelRetired, WouldBlock
from .._native import _shared_wait
from ._codec import CodecError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["NetChannel", "NetReader", "NetWriter"]

log = logging.getLogger("ferrocsp.net")


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


class _Waiter:
    """Completes an asyncio future from the network thread."""

    __slots__ = ("fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fut: asyncio.Future[None] = loop.create_future()

    def done(self) -> None:
        # A closed loop: nobody awaits any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        if not self.fut.done():
            self.fut.set_result(None)


async def _await_op(op: Any, chan: str, mode: str) -> Any:
    """Awaits a native ``_NetOp``; on cancellation withdraws it, keeping a result that won.
    ``csp.dump()`` shows the wait (``mode``: "read" or "write" on channel ``chan``)."""
    w = _Waiter(asyncio.get_running_loop())
    op.add_done_callback(w.done)
    if op.done():
        return op.result()
    _shared_wait([(chan, mode)], True)
    try:
        return await _awaited(op, w)
    finally:
        _shared_wait(None, True)


async def _awaited(op: Any, w: _Waiter) -> Any:
    try:
        await asyncio.shield(w.fut)
    except asyncio.CancelledError:
        op.cancel()
        await asyncio.shield(w.fut)
        result = op.result()  # raises CancelledError if it was withdrawn
        task = asyncio.current_task()
        if task is not None:  # it happened: keep it, and cancel at the next suspension
            task.uncancel()
            task.cancel()
        return result
    return op.result()


class _OutToken:
    """An Output guard's value for one selection (the Alt writes the token to the local
    channel; the network side only needs to win it; the guard that fired sends ``data``)."""

    __slots__ = ("data", "ends")

    def __init__(self, data: bytes, ends: Sequence[_End]) -> None:
        self.data = data
        self.ends = ends


class _Readable(Protocol):
    def read(self) -> Any: ...
    async def aread(self) -> Any: ...


class _Iterates:
    """Iteration over what ``read``/``aread`` return, ending at end-of-stream (retired) as a
    local channel or reader does; shared by ``NetChannel`` and ``NetReader``."""

    __slots__ = ()

    def __iter__(self) -> Self:
        return self

    def __next__(self: _Readable) -> Any:
        try:
            return self.read()
        except ChannelRetired:
            raise StopIteration from None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self: _Readable) -> Any:
        try:
            return await self.aread()
        except ChannelRetired:
            raise StopAsyncIteration from None


class NetChannel(_Iterates):
    """A channel shared through a NATS server (``Connection.channel(name, capacity)``).

    Same API as :class:`ferrocsp.Channel`: ``read``/``write`` (with ``timeout=``),
    ``read_nowait``/``write_nowait``, ``aread``/``awrite``, ``reader()``/``writer()``,
    ``poison()``, iteration until end-of-stream. Values go through the connection's codec.
    Rendezvous (``capacity=0``): a write completes once a reader on some machine took the value.
    Buffered: at most ``capacity`` values wait on the server (JetStream); writers block when
    it is full. Each value is read once, by one reader, wherever the readers are.
    """

    __slots__ = ("__weakref__", "_conn", "_core")

    def __init__(self, conn: Connection, core: Any) -> None:
        self._conn = conn
        self._core = core

    @property
    def name(self) -> str:
        """The channel's name on the server."""
        name: str = self._core.name
        return name

    @property
    def capacity(self) -> int:
        """0 for rendezvous, else the number of values the server buffers."""
        cap: int = self._core.capacity
        return cap

    @property
    def connection(self) -> Connection:
        """The connection this channel object belongs to."""
        return self._conn

    def __repr__(self) -> str:
        return f"NetChannel({self.name!r}, capacity={self.capacity})"

    # --- operations ----------------------------------------------------------------------
    def write(self, value: Any, *, timeout: float | None = None) -> None:
        """Sends ``value``; returns once a reader took it (rendezvous) or the server stored it.

        Raises ``TimeoutError`` (nothing sent), ``ChannelPoisoned``, ``ChannelRetired`` (all
        readers retired), ``TypeError`` for a value the codec cannot carry.
        """
        data, ends = self._conn._encode(self, value)
        try:
            self._core.write(data, timeout)
        except BaseException:
            self._conn._unsend_ends(ends)
            raise

    def read(self, *, timeout: float | None = None) -> Any:
        """Takes one value (waiting for a writer on any machine); ``TimeoutError``,
        ``ChannelPoisoned``, ``ChannelRetired`` (all writers retired, nothing left)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            raw = self._core.read(_remaining(deadline))
            try:
                return self._conn._decode(self, raw)
            except CodecError as e:
                log.warning("networked channel %r: rejected a message: %s", self.name, e)

    def write_nowait(self, value: Any) -> None:
        """``write`` that raises ``WouldBlock`` unless it can complete at once (one try)."""
        try:
            self.write(value, timeout=0)
        except TimeoutError:
            raise WouldBlock(f"write on networked channel '{self.name}' would block") from None

    def read_nowait(self) -> Any:
        """``read`` that raises ``WouldBlock`` unless a value is there at once (one try)."""
        try:
            return self.read(timeout=0)
        except TimeoutError:
            raise WouldBlock(f"read on networked channel '{self.name}' would block") from None

    async def awrite(self, value: Any, *, timeout: float | None = None) -> None:
        """``await ch.awrite(v)``: ``write`` from asyncio. Cancelled while waiting: nothing
        was sent, unless it completed in the race (then it returns and the cancellation is
        re-requested)."""
        data, ends = self._conn._encode(self, value)
        try:
            await _await_op(self._core.start_write(data, timeout), self.name, "write")
        except BaseException:
            self._conn._unsend_ends(ends)
            raise

    async def aread(self, *, timeout: float | None = None) -> Any:
        """``await ch.aread()``: ``read`` from asyncio (cancellation as for ``awrite``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            raw = await _await_op(self._core.start_read(_remaining(deadline)), self.name, "read")
            try:
                return self._conn._decode(self, raw)
            except CodecError as e:
                log.warning("networked channel %r: rejected a message: %s", self.name, e)

    def poison(self) -> None:
        """Poisons the channel for every participant on every machine (buffered values are
        dropped); blocked and later operations raise ``ChannelPoisoned``."""
        self._core.poison()

    # --- ends ----------------------------------------------------------------------------
    def reader(self) -> NetReader:
        """A new reader end (counted on the server, so every participant sees when all
        reader ends are retired)."""
        return NetReader(self)

    def writer(self) -> NetWriter:
        """A new writer end (retire them all to signal end-of-stream to every reader)."""
        return NetWriter(self)

    # --- Alt (input guard) -----------------------------------------------------------------
    def _csp_alt_input(self) -> Any:
        return self._core.alt_channel()

    def _csp_alt_demand(self, up: bool) -> None:
        self._core.alt_demand(up)

    def _csp_alt_decode(self, raw: bytes) -> Any:
        return self._conn._decode(self, raw)

    def _csp_alt_take(self, hold: int) -> bytes | None:
        raw: bytes | None = self._core.alt_take(hold)
        return raw

    async def _csp_alt_atake(self, hold: int) -> bytes | None:
        raw: bytes | None = await _await_op(self._core.start_alt_take(hold), self.name, "read")
        return raw

    # --- Alt (Output guard) ----------------------------------------------------------------
    def _csp_alt_output(self, value: Any) -> tuple[Any, _OutToken]:
        data, ends = self._conn._encode(self, value)
        return self._core.alt_out_channel(), _OutToken(data, ends)

    def _csp_alt_out_demand(self, up: bool) -> None:
        self._core.alt_out_demand(up)

    def _csp_alt_commit(self, token: _OutToken) -> None:
        # The native call takes the hold at once (before any wait), then sends.
        try:
            self._core.commit(token.data)
        except BaseException:
            self._conn._unsend_ends(token.ends)
            raise

    async def _csp_alt_acommit(self, token: _OutToken) -> None:
        try:
            await _await_op(self._core.start_commit(token.data), self.name, "write")
        except BaseException:
            self._conn._unsend_ends(token.ends)
            raise

    def _csp_alt_unsend(self, token: _OutToken) -> None:
        self._conn._unsend_ends(token.ends)

    def __reduce__(self) -> Any:
        raise TypeError(
            "a NetChannel does not pickle: send its ends over a networked channel, or open it "
            "by name with connect(url).channel(name, capacity) in the other process"
        )


class _End:
    __slots__ = ("__weakref__", "_chan", "_finalizer", "_retired")

    _kind = b"?"

    def __init__(self, chan: NetChannel, *, counted: bool = False) -> None:
        self._chan = chan
        self._retired = False
        reader = self._kind == b"r"
        if not counted:
            chan._core.count_end(reader, True)
        # Garbage collection retires an end not retired explicitly (in the background).
        self._finalizer = weakref.finalize(self, chan._core.count_end, reader, False, False)

    @property
    def channel(self) -> NetChannel:
        """The channel this end belongs to."""
        return self._chan

    @property
    def retired(self) -> bool:
        """Whether this end was retired."""
        return self._retired

    def retire(self) -> None:
        """Retires this end (idempotent). When every end of its kind is retired, readers see
        end-of-stream (after the buffer drains) or writers see ``ChannelRetired``."""
        if self._retired:
            return
        self._retired = True
        self._finalizer.detach()
        reader = self._kind == b"r"
        self._chan._core.count_end(reader, False)

    def poison(self) -> None:
        """Poisons the channel (see ``NetChannel.poison``)."""
        self._chan.poison()

    def _check(self) -> None:
        if self._retired:
            kind = "reader" if self._kind == b"r" else "writer"
            raise ChannelRetired(f"{kind} end of networked channel '{self._chan.name}' is retired")

    def __exit__(self, *_exc: object) -> None:
        self.retire()

    def __reduce__(self) -> Any:
        raise TypeError(
            "networked channel ends do not pickle: send them over a networked channel (the "
            "safe codec carries them)"
        )


class NetReader(_End, _Iterates):
    """The reading end of a networked channel."""

    __slots__ = ()
    _kind = b"r"

    def read(self, *, timeout: float | None = None) -> Any:
        """See ``NetChannel.read``."""
        self._check()
        return self._chan.read(timeout=timeout)

    def read_nowait(self) -> Any:
        """See ``NetChannel.read_nowait``."""
        self._check()
        return self._chan.read_nowait()

    async def aread(self, *, timeout: float | None = None) -> Any:
        """See ``NetChannel.aread``."""
        self._check()
        return await self._chan.aread(timeout=timeout)

    def _csp_alt_input(self) -> Any:
        self._check()
        return self._chan._csp_alt_input()

    def _csp_alt_demand(self, up: bool) -> None:
        self._chan._csp_alt_demand(up)

    def _csp_alt_decode(self, raw: bytes) -> Any:
        return self._chan._csp_alt_decode(raw)

    def _csp_alt_take(self, hold: int) -> bytes | None:
        return self._chan._csp_alt_take(hold)

    async def _csp_alt_atake(self, hold: int) -> bytes | None:
        return await self._chan._csp_alt_atake(hold)

    def __enter__(self) -> NetReader:
        return self

    def __repr__(self) -> str:
        return f"NetReader({self._chan.name!r})"


class NetWriter(_End):
    """The writing end of a networked channel."""

    __slots__ = ()
    _kind = b"w"

    def write(self, value: Any, *, timeout: float | None = None) -> None:
        """See ``NetChannel.write``."""
        self._check()
        self._chan.write(value, timeout=timeout)

    def write_nowait(self, value: Any) -> None:
        """See ``NetChannel.write_nowait``."""
        self._check()
        self._chan.write_nowait(value)

    async def awrite(self, value: Any, *, timeout: float | None = None) -> None:
        """See ``NetChannel.awrite``."""
        self._check()
        await self._chan.awrite(value, timeout=timeout)

    # --- Alt (Output guard): see NetChannel ---------------------------------------------------
    def _csp_alt_output(self, value: Any) -> tuple[Any, _OutToken]:
        self._check()
        return self._chan._csp_alt_output(value)

    def _csp_alt_out_demand(self, up: bool) -> None:
        self._chan._csp_alt_out_demand(up)

    def _csp_alt_commit(self, token: _OutToken) -> None:
        self._chan._csp_alt_commit(token)

    async def _csp_alt_acommit(self, token: _OutToken) -> None:
        await self._chan._csp_alt_acommit(token)

    def _csp_alt_unsend(self, token: _OutToken) -> None:
        self._chan._csp_alt_unsend(token)

    def __enter__(self) -> NetWriter:
        return self

    def __repr__(self) -> str:
        return f"NetWriter({self._chan.name!r})"
