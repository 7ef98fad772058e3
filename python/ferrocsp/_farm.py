"""``farm``: a multiplexed worker farm, N outer processes each running M greenlet workers.

Invariants:
- ``farm`` only builds a network (a named ``Par`` of ``Par(..., backend="greenlet")``); it
  starts nothing, so it runs with ``run()``/``start()`` or nests in another ``Par`` like any.
- Every worker gets its own reader end of ``jobs`` and its own writer end of ``results``:
  when the jobs channel ends (its last writer retires), each worker ends and retires its
  results end, so the reader of ``results`` sees end-of-stream after the last result.
- Arguments are checked at the call (TypeError/ValueError), before anything starts; a worker
  that cannot cross an OS process (a lambda, a closure) is refused there too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from . import _backends
from ._backends import Backend
from ._native import Channel, Reader, Writer
from ._par import Par
from ._process import Process, _Factory

__all__ = ["farm"]


def _apply(fn: Callable[..., Any], jobs: Reader, results: Writer, *args: Any) -> int:
    """The worker loop for a plain function: one result per job; returns the jobs done."""
    done = 0
    with results:
        for job in jobs:
            results.write(fn(job, *args))
            done += 1
    return done


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"farm: {name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"farm: {name} must be >= 1, got {value}")
    return value


def _movable(fn: Callable[..., Any], what: str) -> None:
    qualname = getattr(fn, "__qualname__", "")
    if "<lambda>" in qualname or "<locals>" in qualname:
        kind = "a lambda" if "<lambda>" in qualname else "a closure"
        raise TypeError(
            f"farm: {what} {qualname} is {kind}; with backend='os' it must cross OS "
            "processes, and functions do so by reference only: define it at module level"
        )


def farm(
    worker: Callable[..., Any],
    jobs: Channel,
    results: Channel,
    *,
    workers: int | None = None,
    per_worker: int = 1,
    backend: Backend = "os",
    name: str = "farm",
    args: tuple[Any, ...] = (),
) -> Par[list[Any]]:
    """A farm of ``workers`` x ``per_worker`` workers reading ``jobs`` and writing ``results``.

    ``workers`` outer processes (default: one per core) on ``backend`` (``"os"``, or
    ``"thread"`` for M:N on threads), each multiplexing ``per_worker`` greenlet workers on
    its own scheduler: ``farm(w, jobs, results, workers=N, per_worker=M)`` is
    ``Par(Par(M workers, backend="greenlet"), ... N times, backend=backend)``.

    ``worker`` is either a ``@process`` factory, called as ``worker(jobs_reader,
    results_writer, *args)`` for each worker (it loops over its jobs itself, and should
    retire its writer when done, e.g. ``with out:``), or a plain function called as
    ``worker(job, *args)`` returning its result (the farm writes one result per job).
    Greenlet workers that block on something other than a channel (sleep, I/O) should do it
    through ``csp.io`` so their scheduler keeps running the others. Results arrive in
    completion order, not job order.

    Returns the network, unstarted: ``farm(...).run()`` (or ``start()``, or nest it in a
    ``Par`` with the producer and the consumer). Its result is one list per outer process of
    what each worker returned (the number of jobs it did, for a plain function).

    Raises TypeError or ValueError at the call for a bad argument: ``jobs``/``results`` not
    channels (the farm makes one end per worker), ``workers``/``per_worker`` not positive
    ints, ``args`` not a tuple, an unknown backend or ``"asyncio"``, a worker that is not
    callable (or is a ``Process`` rather than its factory), or, with ``backend="os"``, a
    lambda or closure.
    """
    if isinstance(worker, Process):
        raise TypeError(
            "farm: worker must be a process factory or a function, not a Process (pass "
            "the @process function itself: the farm calls it once per worker)"
        )
    if not callable(worker):
        raise TypeError(f"farm: worker must be callable, not {type(worker).__name__}")
    for what, ch in (("jobs", jobs), ("results", results)):
        if not isinstance(ch, Channel):
            raise TypeError(
                f"farm: {what} must be a Channel (the farm makes one end per worker), not "
                f"{type(ch).__name__}"
            )
    n = _cores() if workers is None else _positive("workers", workers)
    m = _positive("per_worker", per_worker)
    _backends.check(backend)
    if backend == "asyncio":
        raise ValueError("farm: backend 'asyncio' runs async def processes; use 'os' or 'thread'")
    if not isinstance(name, str):
        raise TypeError(f"farm: name must be a str, not {type(name).__name__}")
    if not isinstance(args, tuple):
        raise TypeError(f"farm: args must be a tuple, not {type(args).__name__}")
    factory = isinstance(worker, _Factory)
    fn: Callable[..., Any] = worker._fn if factory else worker  # type: ignore[attr-defined]
    if backend == "os":
        _movable(fn, "worker")
    wname = getattr(fn, "__name__", "worker")

    def one(i: int, j: int) -> Process[Any]:
        if factory:
            proc: Process[Any] = worker(jobs.reader(), results.writer(), *args)
            if not isinstance(proc, Process):
                raise TypeError(f"farm: worker factory returned {type(proc).__name__}")
            return proc
        ends = (fn, jobs.reader(), results.writer(), *args)
        return Process(_apply, ends, name=f"{wname}[{i}.{j}]")

    outer = [
        Par(*(one(i, j) for j in range(m)), backend="greenlet", name=f"{name}[{i}]")
        for i in range(n)
    ]
    return Par(*outer, backend=backend, name=name)
