"""``io(fn, *args)``: a blocking call that is not a channel operation, made from a greenlet;
``await aio(fn, *args)``: the same from an ``async def`` process.

A greenlet process shares its OS thread with every greenlet of its scheduler, so a call that
blocks the thread (``time.sleep``, file or socket I/O, ``subprocess.run``, a lock, joining a
thread) stops all of them. ``io`` runs such a call on a worker thread and parks only the
calling greenlet (it waits on a private channel, so the scheduler runs the others meanwhile
and wakes it when the call returns). Outside a greenlet scheduler it simply calls ``fn``.
``aio`` does the same for a coroutine: it awaits the private channel, so it suits the native
coroutine backend (which has no event loop for ``asyncio.to_thread``) and asyncio alike. A
coroutine process also reaches channels shared with OS processes or networked this way
(``_offload_*``): their waits need an event loop or a greenlet, so the blocking operation
runs on a greenlet task of the process's own scheduler (``spawn``: it sleeps cooperatively
there, as a greenlet process does, and carries the process's name), or on a worker thread
when the coroutine runs on no native scheduler.

Invariants:
- ``io(fn, ...)`` returns what ``fn`` returned or raises what it raised, in the caller.
- Worker threads are daemons, reused while idle (the pool grows to the number of concurrent
  calls); a worker never touches the caller's greenlet, it only writes one outcome to a
  buffered channel (which never blocks).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from ._errors import ChannelRetired
from ._native import (
    Channel,
    _ignore_thread,
    _in_scheduler,
    _io_wait,
    _joining,
    _process_name,
    _set_process_name,
)

__all__ = ["aio", "io"]

P = ParamSpec("P")
R = TypeVar("R")

_jobs: queue.SimpleQueue[tuple[Callable[[], Any], Channel]] = queue.SimpleQueue()
#: ``scheduler``: the native scheduler running in this thread (``_backends._coroutine``).
_hub = threading.local()
_idle = 0
_lock = threading.Lock()


def _worker() -> None:
    global _idle
    _ignore_thread()  # an idle worker never keeps a deadlock from being reported
    while True:
        job, done = _jobs.get()
        try:
            outcome: tuple[bool, Any] = (True, job())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling greenlet
            outcome = (False, exc)
        done.write_nowait(outcome)
        del job, done, outcome
        with _lock:
            _idle += 1


def _submit(job: Callable[[], Any], done: Channel) -> None:
    global _idle
    with _lock:
        start = _idle == 0
        if not start:
            _idle -= 1
    _jobs.put((job, done))
    if start:
        threading.Thread(target=_worker, name="ferrocsp-io", daemon=True).start()


def _call(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    if not _in_scheduler():
        return fn(*args, **kwargs)
    done = Channel(1, name=f"io({getattr(fn, '__name__', 'fn')})")
    _submit(functools.partial(fn, *args, **kwargs), done)
    _io_wait(True)  # the caller waits for running code, not for a peer: never deadlocked
    try:
        ok, value = done.read()
    finally:
        _io_wait(False)
    if not ok:
        raise value
    result: R = value
    return result


@overload
def io(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def io(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R: ...
def io(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Any:
    """Runs a blocking call without blocking the other greenlets of the scheduler.

    ``csp.io(fn, *args, **kwargs)`` calls ``fn(*args, **kwargs)`` on a worker thread while
    the calling greenlet process waits (the other greenlets keep running), and returns its
    result or raises its exception. ``csp.io(fn)`` with nothing else returns ``fn`` wrapped
    so that every call goes through ``io``: use it as a decorator (``@csp.io``), and call a
    function that takes no arguments as ``csp.io(fn)()``. Outside a greenlet process
    (threads, asyncio, plain code) the call simply happens in place.

    Use it in greenlet processes for anything that blocks the OS thread and is not a ferrocsp
    channel operation: ``time.sleep``, file and socket I/O, ``subprocess``, waiting on
    ``threading`` primitives, CPU-heavy C calls that release the GIL. Channel operations
    (``read``, ``write``, ``Alt``) never need it.
    """
    if args or kwargs:
        return _call(fn, *args, **kwargs)
    if not callable(fn):
        raise TypeError(f"io needs a callable, not {type(fn).__name__}")

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> R:
        return _call(fn, *a, **kw)

    return wrapper


async def aio(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Runs a blocking call on a worker thread and awaits its result, from ``async def`` code.

    ``await csp.aio(fn, *args, **kwargs)`` is ``io`` for coroutines: ``fn`` runs on a worker
    thread while the calling coroutine waits (the other processes of its scheduler or event
    loop keep running); it returns ``fn``'s result or raises its exception. Use it in
    processes of the ``"coroutine"`` backend for ``time.sleep``, file and socket I/O and
    other blocking calls (that backend has no event loop, so ``asyncio.to_thread`` and
    ``asyncio.sleep`` are not available there); it works on asyncio too.
    """
    if not callable(fn):
        raise TypeError(f"aio needs a callable, not {type(fn).__name__}")
    # Waits for running code, not for a peer: never deadlocked.
    job = functools.partial(fn, *args, **kwargs)
    result: R = await _on_worker(job, getattr(fn, "__name__", "fn"), _io_wait)
    return result


async def _on_worker(job: Callable[[], Any], label: str, waiting: Callable[[bool], None]) -> Any:
    """Runs ``job`` on a worker thread and awaits its outcome on a private channel, marked
    ``waiting`` meanwhile (``_io_wait``: never deadlocked; ``_joining``: waits on the worker)."""
    done = Channel(1, name=f"io({label})")
    _submit(job, done)
    waiting(True)
    try:
        ok, value = await done.aread()
    finally:
        waiting(False)
    if not ok:
        raise value
    return value


async def _offload(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Runs channel operation ``fn`` of a coroutine process on a greenlet task of its
    scheduler, or else a worker thread (see the module doc). The task or worker takes the
    process's name, so errors and deadlock reports name the process; the process itself waits
    as one joining its own processes, so a deadlock that the operation is part of is still
    found."""
    name = _process_name()
    sched = getattr(_hub, "scheduler", None)
    if sched is None:
        job = functools.partial(_as_process, name, fn, args, kwargs)
        result: R = await _on_worker(job, getattr(fn, "__name__", "fn"), _joining)
        return result
    done = Channel(1, name=f"io({getattr(fn, '__name__', 'fn')})")
    sched.spawn(_as_task, name, functools.partial(fn, *args, **kwargs), done, coroutine=True)
    _joining(True)
    try:
        ok, value = await done.aread()
    finally:
        _joining(False)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _as_task(name: str | None, job: Callable[[], Any], done: Channel) -> None:
    """The greenlet task of ``_offload``: runs ``job`` as process ``name``, and writes its
    outcome to ``done`` (buffered: never blocks)."""
    _set_process_name(name)
    try:
        outcome: tuple[bool, Any] = (True, job())
    except BaseException as exc:  # noqa: BLE001 - re-raised in the awaiting coroutine
        outcome = (False, exc)
    done.write_nowait(outcome)


def _as_process(name: str | None, fn: Callable[..., R], args: Any, kwargs: Any) -> R:
    previous = _set_process_name(name)
    try:
        return fn(*args, **kwargs)
    finally:
        _set_process_name(previous)
        _ignore_thread()  # idle again: never keeps a deadlock from being reported


async def _offload_read(end: Any, timeout: float | None) -> Any:
    """``aread`` of a shared or networked channel in a coroutine process (see the module doc)."""
    return await _offload(end.read, timeout=timeout)


async def _offload_next(end: Any) -> Any:
    """``__anext__`` of a shared or networked channel in a coroutine process."""
    try:
        return await _offload(end.read)
    except ChannelRetired:
        raise StopAsyncIteration from None


async def _offload_write(end: Any, value: Any, timeout: float | None) -> None:
    """``awrite`` of a shared or networked channel in a coroutine process."""
    await _offload(end.write, value, timeout=timeout)
