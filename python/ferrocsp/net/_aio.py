"""asyncio on networked channels: ``aread``/``awrite``/``async for`` of the native ``Channel``,
``Reader`` and ``Writer`` when their channel is networked (``Channel(name=..., net=conn)``).

The transport runs each operation on the network runtime's thread and calls back when it is
done; a task awaits a future that the callback completes (no thread per waiting operation).

Invariants:
- Cancelling the awaiting task withdraws the operation; one that completed in the race is
  kept: its result is returned and the cancellation re-requested for the task's next
  suspension, so no value is lost or duplicated by cancellation.
- A message the codec rejects is logged on the ``ferrocsp.net`` logger and dropped; the read
  goes on waiting with what is left of its timeout.
- ``csp.dump()`` shows the wait while the task waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from .._errors import ChannelRetired
from .._native import Channel, _shared_wait
from ._codec import CodecError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["aread", "await_op", "awrite", "connection_of"]

log = logging.getLogger("ferrocsp.net")


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


async def await_op(op: Any, chan: str, mode: str) -> Any:
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


def connection_of(chan: Channel[Any]) -> Connection:
    """The connection of networked channel ``chan``."""
    conn = chan.connection
    if conn is None:
        raise TypeError(f"channel '{chan.name}' is not a networked channel")
    return conn


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


async def aread(chan: Channel[Any], timeout: float | None, anext: bool) -> Any:
    """``aread`` (``anext``: ``__anext__``, end-of-stream stops the iteration)."""
    core, conn = chan._net_core, connection_of(chan)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            op = core.start_read(_remaining(deadline))
            raw = await await_op(op, chan.name, "read")
            try:
                return conn._decode(chan.name, raw)
            except CodecError as e:
                log.warning("networked channel %r: rejected a message: %s", chan.name, e)
    except ChannelRetired:
        if anext:
            raise StopAsyncIteration from None
        raise


async def awrite(chan: Channel[Any], value: Any, timeout: float | None) -> None:
    """``awrite``: returns once a reader took the value (rendezvous) or the server stored it.
    Cancelled while waiting: nothing was sent, unless it completed in the race."""
    conn = connection_of(chan)
    data, ends = conn._encode(chan.name, value)
    try:
        await await_op(chan._net_core.start_write(data, timeout), chan.name, "write")
    except BaseException:
        conn._unsend_ends(ends)
        raise
