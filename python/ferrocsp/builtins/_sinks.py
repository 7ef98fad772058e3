"""Sinks: processes with an input and no output (``Sink``, ``Printer``).

Invariants:
- A sink reads until end-of-stream and then returns how many values it took (it retires its
  reader end itself, so the result is a count, not the None of a process ended by
  ``ChannelRetired``); on poison it ends cleanly with result None.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .._shutdown import retire_ends
from ._builtin import In, builtin, input_end

__all__ = ["Printer", "Sink"]


def _text_file(what: str, value: Any) -> None:
    if value is not None and not callable(getattr(value, "write", None)):
        raise TypeError(
            f"{what} must be a text file (with write) or None, not {type(value).__name__}"
        )


def _str(what: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")


@builtin(cin=input_end)
def Sink(cin: In) -> int:  # noqa: N802 - CSP vocabulary
    """Reads and discards every value from ``cin`` (JCSP's ``BlackHole``).

    Ends at end-of-stream (every writer end of ``cin`` retired, buffer drained): retires its
    reader end and returns the number of values it read. Ends cleanly with result None when
    ``cin`` is poisoned. Given a plain ``Channel``, which never reaches end-of-stream unless
    it has writer ends, it reads until poisoned.
    """
    n = 0
    for _ in cin:
        n += 1
    retire_ends([cin])
    return n


@builtin(cin=input_end, file=_text_file, prefix=_str)
def Printer(cin: In, *, file: TextIO | None = None, prefix: str = "") -> int:  # noqa: N802
    """Prints every value read from ``cin`` on its own line, as ``f"{prefix}{value}"``.

    ``file`` defaults to ``sys.stdout`` (looked up at each line, so redirections apply);
    each line is flushed. Ends as ``Sink`` does: at end-of-stream it retires its reader end
    and returns the number of lines printed; on poison it ends cleanly with result None.
    """
    n = 0
    for value in cin:
        print(f"{prefix}{value}", file=sys.stdout if file is None else file, flush=True)
        n += 1
    retire_ends([cin])
    return n
