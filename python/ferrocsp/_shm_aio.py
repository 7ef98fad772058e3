"""asyncio on channels shared with OS processes: ``aread``/``awrite``/``async for``/``aselect``.

A shared channel's waits are futex waits in a segment that other processes change, so the
event loop cannot be woken by them directly. An operation that cannot complete at once waits
on a *waiter thread* instead, and the loop only ever makes non-blocking attempts.

Invariants:
- The event loop's thread never waits on a shared channel: it tries the operation without
  blocking (the segment's lock is held only for a bounded copy); if that cannot complete, the
  blocking operation runs on a pooled daemon waiter thread (GIL released while it sleeps),
  which hands its outcome to the loop with ``call_soon_threadsafe``. No polling: the waiter
  sleeps until the channel changes, as a blocked thread process would.
- One waiter thread per blocked operation, reused while idle (the pool grows to the number of
  operations blocked at once); a waiter never touches the task, only its ``_Wait`` record.
- Cancelling the awaiting task withdraws the operation: its ``_ShmCancel`` token is set and
  its channels nudged (every sleeper on them re-checks). The native wait gives up only where
  nothing was sent or taken; a communication already under way completes. The task waits for
  the waiter's outcome (without blocking the loop, through further cancellations) and then:
  withdrawn or failed -> the ``CancelledError`` propagates (nothing was sent or taken); a
  completed communication -> its result is returned and the cancellation re-requested for the
  task's next suspension (``uncancel``/``cancel``, as in-process), except for a task whose
  coroutine is the operation itself, which finishes with the result. So no value is lost or
  duplicated by cancellation.
- A nudge can miss a waiter that was between its last check of the token and its sleep, so
  the withdrawing task nudges again at growing intervals (1 ms, doubling, at most 100 ms)
  until the outcome is in; that happens only while a cancellation is being withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from ._native import _ignore_thread, _shm_nudge, _ShmCancel, _ShmChannel

__all__ = ["off_loop"]

_FIRST_NUDGE = 0.001
_MAX_NUDGE = 0.1

_jobs: queue.SimpleQueue[_Wait] = queue.SimpleQueue()
_idle = 0
_lock = threading.Lock()


def _worker() -> None:
    global _idle
    _ignore_thread()  # an idle waiter never keeps a deadlock from being reported
    while True:
        job = _jobs.get()
        job.run()
        del job
        with _lock:
            _idle += 1


def _submit(job: _Wait) -> None:
    global _idle
    with _lock:
        start = _idle == 0
        if not start:
            _idle -= 1
    _jobs.put(job)
    if start:
        threading.Thread(target=_worker, name="ferrocsp-shm-aio", daemon=True).start()


class _Wait:
    """One blocked operation: run on a waiter thread, its outcome handed to the loop."""

    __slots__ = ("args", "finished", "fn", "fut", "loop", "outcome", "token")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self.loop = loop
        self.fn = fn
        self.args = args
        self.token = _ShmCancel()
        #: Completed (on the loop's thread) when ``outcome`` is set; replaced by a fresh one
        #: when the task's cancellation cancelled it.
        self.fut: asyncio.Future[None] = loop.create_future()
        #: (True, result) or (False, exception); set on the loop's thread only.
        self.outcome: tuple[bool, Any] | None = None
        #: Whether the outcome arrived (it stays so once the task took ``outcome``).
        self.finished = False

    def run(self) -> None:
        """On the waiter thread."""
        outcome: tuple[bool, Any]
        try:
            outcome = (True, self.token.call(self.fn, *self.args))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # a closed loop: no task awaits this any more
            self.loop.call_soon_threadsafe(self._finish, outcome)
        self.fn = self.args = None  # type: ignore[assignment]

    def _finish(self, outcome: tuple[bool, Any]) -> None:
        """On the loop's thread."""
        self.outcome = outcome
        self.finished = True
        if not self.fut.done():
            self.fut.set_result(None)

    def nudge(self, natives: Sequence[_ShmChannel], delay: float) -> None:
        """Wakes the waiter's channels until its outcome is in (see the module doc)."""
        if self.finished:
            return
        for n in natives:
            # A failure here (a peer died holding the lock) is the waiter's to report.
            with contextlib.suppress(Exception):
                _shm_nudge(n)
        self.loop.call_later(delay, self.nudge, natives, min(delay * 2, _MAX_NUDGE))


async def off_loop(
    natives: Sequence[_ShmChannel],
    root: FrameType | None,
    fn: Callable[..., Any],
    *args: Any,
) -> Any:
    """``fn(*args)`` (a blocking operation on the shared channels ``natives``) on a waiter
    thread, withdrawn if the task is cancelled (see the module doc). ``root``: the frame of
    the coroutine that is the operation (a task made of it alone keeps a late result)."""
    w = _Wait(asyncio.get_running_loop(), fn, args)
    _submit(w)
    try:
        await w.fut
    except asyncio.CancelledError as exc:
        return await _withdraw(w, natives, root, exc)
    assert w.outcome is not None
    ok, value = w.outcome
    w.outcome = None
    if ok:
        return value
    raise value


async def _withdraw(
    w: _Wait,
    natives: Sequence[_ShmChannel],
    root: FrameType | None,
    cancel: asyncio.CancelledError,
) -> Any:
    if w.outcome is None:
        w.token.cancel()
        w.nudge(natives, _FIRST_NUDGE)
        while w.outcome is None:
            w.fut = w.loop.create_future()
            try:
                await w.fut
            except asyncio.CancelledError:
                continue  # cancelled again: the outcome is still to be collected
    ok, value = w.outcome
    w.outcome = None
    if not ok:
        # Withdrawn, or it failed (poison, retirement, timeout): nothing was sent or taken.
        del value
        raise cancel
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
        coro = task.get_coro()
        if root is None or getattr(coro, "cr_frame", None) is not root:
            task.cancel()
    return value
