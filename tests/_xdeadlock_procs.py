"""Processes for tests/test_deadlock_os.py: module-level, so an OS child imports them by
reference (the test programs run with ``python -c``, whose ``__main__`` a child cannot
import)."""

from __future__ import annotations

import time

import ferrocsp as csp

__all__ = ["busy_then_write", "left", "relay_os", "waiter_os"]


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
