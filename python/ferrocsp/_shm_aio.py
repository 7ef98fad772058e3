"""asyncio on channels shared with OS processes: ``aread``/``awrite``/``async for``/``aselect``.

A shared channel's waits are futex waits in a segment that other processes change, so the
event loop cannot be woken by them directly. An operation that may wait runs on its own
*operation greenlet* on the loop's thread (kept in a per-thread pool between operations);
when it must sleep, the native sleeper
(``crates/ferrocsp-py/src/shm_coop.rs``) registers the futex words with the process's watcher
threads and switches back here with an ``asyncio.Future`` that the watcher completes when the
operation should look again. The task awaits it and switches back in. No thread per waiting
operation, no polling.

Invariants:
- The event loop's thread never sleeps on a shared channel: the operation greenlet runs only
  between two awaits of its task, and every wait in it switches back to the task.
- Cancelling the awaiting task withdraws the operation: the cancellation is thrown into the
  operation greenlet at its sleep, and the engine gives up only where nothing was sent or
  taken; a communication already under way completes. Then: withdrawn -> the
  ``CancelledError`` propagates; completed -> its result is returned and the cancellation
  re-requested for the task's next suspension (``uncancel``/``cancel``, as in-process),
  except for a task whose coroutine is the operation itself, which finishes with the result.
  So no value is lost or duplicated by cancellation.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import greenlet  # type: ignore[import-untyped]  # greenlet ships no type stubs

from ._errors import ChannelRetired, WouldBlock
from ._native import _shared_wait, _shm_coop_call, _ShmSide

__all__ = ["aread", "awrite", "off_loop"]


class _Withdraw(Exception):
    """Thrown into an operation greenlet when its task is cancelled: give up if you can."""


def _settle(fut: asyncio.Future[None]) -> None:
    """The watcher's wake-up of an operation greenlet's future (on the loop's thread)."""
    if not fut.done():
        fut.set_result(None)


class _Done:
    """One operation's outcome, handed by its operation greenlet to the awaiting task."""

    __slots__ = ("ok", "value")

    def __init__(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value


def _serve(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """An operation greenlet's body: runs one operation after another (kept in a per-thread
    pool between them: starting a greenlet costs about 15 times a switch), each outcome handed
    to the task that switched it in (its parent at the time)."""
    while True:
        try:
            done = _Done(True, _shm_coop_call(fn, *args))
        except greenlet.GreenletExit:
            raise  # collected while suspended (its loop is gone): the operation withdrew; die
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            done = _Done(False, exc)
        fn = args = None  # type: ignore[assignment]
        fn, args = greenlet.getcurrent().parent.switch(done)


_local = threading.local()
#: Idle operation greenlets kept per thread.
_POOL_MAX = 64


def _pool() -> list[Any]:
    pool: list[Any] | None = getattr(_local, "idle", None)
    if pool is None:
        pool = _local.idle = []
    return pool


def _thrower(g: Any) -> Callable[[], Any]:
    return lambda: g.throw(_Withdraw())


async def off_loop(root: FrameType | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` (an operation on shared channels that may wait) on an operation
    greenlet, withdrawn if the task is cancelled (see the module doc). ``root``: the frame of
    the coroutine that is the operation (a task made of it alone keeps a late result)."""
    pool = _pool()
    g: Any = pool.pop() if pool else greenlet.greenlet(_serve)
    g.parent = greenlet.getcurrent()
    out: Any = g.switch(fn, args)
    cancel: asyncio.CancelledError | None = None
    while not isinstance(out, _Done):
        try:
            await out
            resume = g.switch
        except asyncio.CancelledError as exc:
            if cancel is None:
                cancel = exc
                resume = _thrower(g)
            else:
                resume = g.switch  # cancelled again: the outcome is still to be collected
        out = resume()
    if len(pool) < _POOL_MAX:
        pool.append(g)
    if not out.ok:
        if cancel is not None:
            # Withdrawn, or it failed (poison, retirement, timeout): nothing was sent or taken.
            raise cancel from None
        raise out.value
    if cancel is not None:
        # The communication completed although the task was cancelled meanwhile.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
            coro = task.get_coro()
            if root is None or getattr(coro, "cr_frame", None) is not root:
                task.cancel()
    return out.value


async def aread(
    side: _ShmSide,
    end_id: int | None,
    kind: str,
    retired_here: bool,
    timeout: Any,
    anext: bool,
) -> Any:
    """``aread`` (``anext``: ``__anext__``) on a shared channel, or through its end
    ``end_id``: tries at once, else waits on an operation greenlet. The native ``Channel``,
    ``Reader`` return this coroutine."""
    try:
        side.live(end_id, kind, retired_here)
        try:
            return side.read(None, True)
        except WouldBlock:
            pass
        _shared_wait([(side.name, "read")])
        try:
            return await off_loop(sys._getframe(), side.read, timeout)
        finally:
            _shared_wait(None)
    except ChannelRetired:
        if anext:
            raise StopAsyncIteration from None
        raise


async def awrite(
    side: _ShmSide, end_id: int | None, kind: str, retired_here: bool, value: Any, timeout: Any
) -> None:
    """``awrite`` on a shared channel, or through its end ``end_id`` (as ``aread``)."""
    side.live(end_id, kind, retired_here)
    parts, kinds = side.encode(value)
    try:
        side.write_parts(parts, kinds, None, True)
        return
    except WouldBlock:
        pass
    _shared_wait([(side.name, "write")])
    try:
        await off_loop(sys._getframe(), side.write_parts, parts, kinds, timeout)
    finally:
        _shared_wait(None)
