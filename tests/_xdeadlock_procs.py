"""Processes for tests/test_deadlock_os.py: module-level, so an OS child imports them by
reference (the test programs run with ``python -c``, whose ``__main__`` a child cannot
import)."""

from __future__ import annotations

import time

import ferrocsp as csp

__all__ = [
    "busy_then_write",
    "die_after_start",
    "left",
    "read_with_timeout_then_write",
    "relay_os",
    "waiter_os",
]


@csp.process
def left(inp: csp.Reader, out: csp.Writer) -> None:
    out.write(inp.read())


@csp.process(backend="os")
def relay_os(inp: csp.Reader, out: csp.Writer) -> None:
    out.write(inp.read())


@csp.process(backend="os")
def busy_then_write(out: csp.Writer, seconds: float) -> int:
    # Computing, not waiting: the parent blocked on `out` must not be reported meanwhile.
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    out.write(n)
    return n


@csp.process(backend="os")
def waiter_os(inp: csp.Reader) -> object:
    return inp.read()


@csp.process(backend="os")
def read_with_timeout_then_write(inp: csp.Reader, out: csp.Writer, seconds: float) -> str:
    # Blocked with a deadline: never stuck, so the parent waiting for `out` is not reported.
    try:
        inp.read(timeout=seconds)
    except TimeoutError:
        out.write("timed out")
        return "timed out"
    return "read"


@csp.process(backend="os")
def die_after_start(out: csp.Writer) -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
