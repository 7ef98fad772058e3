"""asyncio on channels shared with OS processes: ``aread``/``awrite``/``async for``/``aselect``.

A shared channel's waits are futex waits in a segment that other processes change, so the
event loop cannot be woken by them directly. An operation that may wait runs on its own
*operation greenlet* on the loop's thread; when it must sleep, the native sleeper
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
from collections.abc import Callable
from types import FrameType
from typing import Any

import greenlet  # type: ignore[import-untyped]  # greenlet ships no type stubs

from ._native import _shm_coop_call

__all__ = ["off_loop"]


class _Withdraw(Exception):
    """Thrown into an operation greenlet when its task is cancelled: give up if you can."""


def _settle(fut: asyncio.Future[None]) -> None:
    """The watcher's wake-up of an operation greenlet's future (on the loop's thread)."""
    if not fut.done():
        fut.set_result(None)


def _thrower(g: Any) -> Callable[[], Any]:
    return lambda: g.throw(_Withdraw())


async def off_loop(root: FrameType | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` (an operation on shared channels that may wait) on an operation
    greenlet, withdrawn if the task is cancelled (see the module doc). ``root``: the frame of
    the coroutine that is the operation (a task made of it alone keeps a late result)."""
    g: Any = greenlet.greenlet(_shm_coop_call)
    out: Any = g.switch(fn, *args)
    cancel: asyncio.CancelledError | None = None
    while not g.dead:
        try:
            await out
            resume = g.switch
        except asyncio.CancelledError as exc:
            if cancel is None:
                cancel = exc
                resume = _thrower(g)
            else:
                resume = g.switch  # cancelled again: the outcome is still to be collected
        if cancel is None:
            out = resume()
            continue
        try:
            out = resume()
        except Exception:  # noqa: BLE001 - any failure now means the cancellation stands
            # Withdrawn, or it failed (poison, retirement, timeout): nothing was sent or taken.
            raise cancel from None
    if cancel is not None:
        # The communication completed although the task was cancelled meanwhile.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
            coro = task.get_coro()
            if root is None or getattr(coro, "cr_frame", None) is not root:
                task.cancel()
    return out
