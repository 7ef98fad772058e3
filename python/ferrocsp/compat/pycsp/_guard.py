"""PyCSP 0.9 guards: ``InputGuard``, ``OutputGuard``, ``SkipGuard`` (``Skip``) and
``TimeoutGuard`` (``Timeout``), each with an optional action.

Invariants:
- A guard is a value that describes one choice: ``g`` is PyCSP's guard tuple,
  ``(ch_end, action)`` for input, ``(ch_end, msg, action)`` for output and ``(guard, action)``
  for skip and timeout; ``Alternation`` takes these tuples, so both spellings meet there.
- Guards are checked when built: an input guard needs a reader end, an output guard a
  writer end, a timeout a non-negative number of seconds (TypeError/ValueError naming the
  guard otherwise).
"""

from __future__ import annotations

import math
from typing import Any

from ._channel import ChannelEndRead, ChannelEndWrite
from ._errors import misuse

__all__ = [
    "Guard",
    "InputGuard",
    "OutputGuard",
    "Skip",
    "SkipGuard",
    "Timeout",
    "TimeoutGuard",
]


class Guard:
    """What SkipGuard and TimeoutGuard share: ``g == (self, action)``."""

    def __init__(self, action: Any = None) -> None:
        self.g: tuple[Any, ...] = (self, action)


class SkipGuard(Guard):
    """``SkipGuard(action=None)``: always ready; an alternation holding one never blocks."""

    def __repr__(self) -> str:
        return "<pycsp SkipGuard>"


class TimeoutGuard(Guard):
    """``TimeoutGuard(seconds, action=None)``: ready ``seconds`` after the selection starts."""

    def __init__(self, seconds: float, action: Any = None) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise misuse("TimeoutGuard", f"seconds must be a number, got {seconds!r}")
        if math.isnan(seconds) or seconds < 0:
            raise misuse("TimeoutGuard", f"seconds must be >= 0, got {seconds}", ValueError)
        super().__init__(action)
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"<pycsp TimeoutGuard seconds={self.seconds}>"


Skip = SkipGuard
Timeout = TimeoutGuard


class InputGuard:
    """``InputGuard(ch_end_read, action=None)``: ready when a value can be read."""

    def __init__(self, ch_end_read: Any, action: Any = None) -> None:
        if not isinstance(ch_end_read, ChannelEndRead):
            what = (
                "a writer end (use +c or c.reader())"
                if isinstance(ch_end_read, ChannelEndWrite)
                else repr(ch_end_read)
            )
            raise misuse("InputGuard", f"needs a reader end (+c or c.reader()), got {what}")
        self.g: tuple[Any, ...] = (ch_end_read, action)


class OutputGuard:
    """``OutputGuard(ch_end_write, msg, action=None)``: ready when ``msg`` can be written;
    ``msg`` is sent if and only if this guard is chosen."""

    def __init__(self, ch_end_write: Any, msg: Any, action: Any = None) -> None:
        if not isinstance(ch_end_write, ChannelEndWrite):
            what = (
                "a reader end (use -c or c.writer())"
                if isinstance(ch_end_write, ChannelEndRead)
                else repr(ch_end_write)
            )
            raise misuse("OutputGuard", f"needs a writer end (-c or c.writer()), got {what}")
        self.g: tuple[Any, ...] = (ch_end_write, msg, action)
