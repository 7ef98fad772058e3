"""python-csp's ``csp.guards``: the ``Timer`` guard (also exported as ``TimerGuard``).

``Timer()`` is always ready until ``set_alarm(seconds)`` makes it ready only that long after
the call; in an ``Alt`` it becomes a ferrocsp ``Timeout`` for the time left, so a selection
waits on it without polling. ``timer.sleep(s)`` sleeps (without stopping other greenlets),
``timer.read()`` is the current time.

Invariants:
- A Timer chosen by an Alt gives ``None``; its alarm stays set (python-csp's rule).
- python-csp's ``Barrier`` is not provided (see docs/compat.md).
"""

from __future__ import annotations

import math
import time
from typing import Any

import ferrocsp as csp

from ._channel import Guard, misuse

__all__ = ["Timer", "TimerGuard"]


class Timer(Guard):
    """A guard that is ready once its alarm time has passed (always, with no alarm set)."""

    def __init__(self) -> None:
        self.now = time.time()
        self.name = f"Timer guard created at:{self.now}"
        self.alarm: float | None = None

    def set_alarm(self, timeout: float) -> None:
        """Becomes ready ``timeout`` seconds from now."""
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise misuse("Timer.set_alarm", f"timeout must be a number, got {timeout!r}")
        if math.isnan(timeout) or timeout < 0:
            raise misuse("Timer.set_alarm", f"timeout must be >= 0, got {timeout}", ValueError)
        self.now = time.time()
        self.alarm = self.now + timeout

    def is_selectable(self) -> bool:
        """Whether the alarm has passed (or none is set)."""
        self.now = time.time()
        return self.alarm is None or self.now >= self.alarm

    def read(self) -> float:
        """The current time (``time.time()``)."""
        self.now = time.time()
        return self.now

    def sleep(self, timeout: float) -> None:
        """Sleeps ``timeout`` seconds (a greenlet process lets the others run meanwhile)."""
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise misuse("Timer.sleep", f"timeout must be a number >= 0, got {timeout!r}")
        csp.io(time.sleep, timeout)

    def engine_guard(self) -> Any:
        if self.alarm is None:
            return csp.Skip()
        return csp.Timeout(max(0.0, self.alarm - time.time()))

    def chosen(self, value: Any) -> Any:
        return None


TimerGuard = Timer
