"""Sources: processes with an output and no input (``Generate``, ``Count``, ``Clock``).

Invariants:
- A source ends when its output channel is poisoned (result None, the channel stays poisoned)
  or when every reader end of it has retired (the write raises ``ChannelRetired``; result
  None, its writer end is retired). ``Count`` with a ``stop`` also ends by itself, retiring
  its writer end so readers see end-of-stream.
- ``Clock`` waits with a ``Timeout`` guard, never ``time.sleep``, so it waits the way the
  backend it runs on waits (a greenlet yields to its scheduler).
"""

from __future__ import annotations

import time
from typing import Any

from .._alt import Alt, Timeout
from .._shutdown import retire_ends
from ._builtin import Out, builtin, output_end, positive_number

__all__ = ["Clock", "Count", "Generate"]


def _nonzero_step(what: str, value: Any) -> None:
    if value == 0:
        raise ValueError(f"{what} must not be zero")


@builtin(cout=output_end)
def Generate(cout: Out, start: int = 0) -> None:  # noqa: N802 - CSP vocabulary
    """Writes ``start``, ``start + 1``, ``start + 2``, ... to ``cout``, forever.

    JCSP's ``Numbers``. Ends cleanly (result None) when ``cout`` is poisoned, or when its
    readers have all retired (``ChannelRetired``: its writer end is retired too). For a stream
    that stops by itself, use ``Count(cout, start, stop=...)``.
    """
    n = start
    while True:
        cout.write(n)
        n += 1


@builtin(cout=output_end, step=_nonzero_step)
def Count(  # noqa: N802 - CSP vocabulary
    cout: Out, start: float = 0, step: float = 1, stop: float | None = None
) -> None:
    """Writes ``start``, ``start + step``, ... to ``cout``; with ``stop``, like ``range``.

    With ``stop=None`` it counts forever (``itertools.count``). With a ``stop`` it writes the
    values of ``range(start, stop, step)`` (numbers need not be ints) and then ends by
    retiring ``cout``: given a ``Writer`` end, the readers see end-of-stream after the last
    value. (A plain ``Channel`` has no end to retire: it is left as it is, and its readers are
    not told; give an end, or poison it when done.) Ends early, cleanly, on poison or when the
    readers have all retired, as ``Generate`` does. ``step=0`` is a ``ValueError``.
    """
    n = start
    while stop is None or (n < stop if step > 0 else n > stop):
        cout.write(n)
        n += step
    retire_ends([cout])


@builtin(cout=output_end, period=positive_number)
def Clock(cout: Out, period: float) -> None:  # noqa: N802 - CSP vocabulary
    """Writes a tick every ``period`` seconds: the tick numbers 0, 1, 2, ..., forever.

    Tick ``n`` is offered ``(n + 1) * period`` seconds after the start (no drift). A reader
    that takes a tick late does not get a burst of missed ticks: the next one follows one
    period after the previous deadline, or at once if that has passed too. Waits with a
    ``Timeout`` guard, never ``time.sleep``, so under any backend only this process waits.
    Ends cleanly on poison of ``cout`` or when its readers have all retired, as ``Generate``
    does; a poison that arrives while it waits for the next deadline is seen at that tick
    (within one ``period``). ``period`` must be a number > 0.
    """
    deadline = time.monotonic()
    tick = 0
    while True:
        deadline += period
        remaining = deadline - time.monotonic()
        if remaining > 0:
            Alt(Timeout(remaining)).select()
        else:
            deadline -= remaining  # late: restart the schedule from now
        cout.write(tick)
        tick += 1
