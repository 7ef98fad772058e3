"""Pipes: one input, one output, one value out per value in (fewer for ``Filter`` and
``Tail``, one more for ``Prefix``): ``Id``, ``Succ``, ``Prefix``, ``Tail``, ``Mult``,
``Map``, ``Filter``.

Invariants:
- A pipe keeps the order of values and holds at most one at a time (a value read is written
  before the next is read).
- It ends only by poison or retire, through the process rules of ``_process``:
  ``ChannelPoisoned`` from either side poisons both channels; ``ChannelRetired``
  (end-of-stream on ``cin``, or every reader of ``cout`` gone) retires both of its ends, so
  end-of-stream flows downstream and "nobody listens any more" flows upstream. A value read
  but not yet written when the readers of ``cout`` retire is dropped.
- A user function (``Map``'s ``fn``, ``Filter``'s ``pred``) that raises makes the process
  fail: both channels are poisoned and ``Par`` reports the exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._builtin import In, Out, builtin, callable_arg, input_end, output_end

__all__ = ["Filter", "Id", "Map", "Mult", "Prefix", "Succ", "Tail"]


@builtin(cin=input_end, cout=output_end)
def Id(cin: In, cout: Out) -> None:  # noqa: N802 - CSP vocabulary
    """Copies every value from ``cin`` to ``cout`` (the identity; a one-place buffer).

    Ends cleanly (result None) on poison of either channel, which it spreads to the other,
    and on retire: at end-of-stream on ``cin``, or when every reader of ``cout`` has retired,
    it retires both of its ends. (Plain channels carry poison only: they have no end to
    retire.)
    """
    while True:
        cout.write(cin.read())


@builtin(cin=input_end, cout=output_end)
def Succ(cin: In, cout: Out) -> None:  # noqa: N802 - CSP vocabulary
    """Writes ``x + 1`` for every ``x`` read from ``cin`` (the successor).

    Ends as ``Id`` does: on poison (spread to both channels) or retire (both ends retired).
    """
    while True:
        cout.write(cin.read() + 1)


@builtin(cin=input_end, cout=output_end)
def Prefix(cin: In, cout: Out, first: Any) -> None:  # noqa: N802 - CSP vocabulary
    """Writes ``first``, then copies every value from ``cin`` to ``cout``.

    The seed of a feedback loop: ``Prefix`` -> ``Delta`` -> ``Succ`` -> back to ``Prefix``
    counts 0, 1, 2, ... (commstime). Ends as ``Id`` does: on poison (spread to both channels)
    or retire (both ends retired).
    """
    cout.write(first)
    while True:
        cout.write(cin.read())


@builtin(cin=input_end, cout=output_end)
def Tail(cin: In, cout: Out) -> None:  # noqa: N802 - CSP vocabulary
    """Drops the first value read from ``cin``, then copies the others to ``cout``.

    Ends as ``Id`` does: on poison (spread to both channels) or retire (both ends retired).
    """
    cin.read()
    while True:
        cout.write(cin.read())


@builtin(cin=input_end, cout=output_end)
def Mult(cin: In, cout: Out, factor: Any) -> None:  # noqa: N802 - CSP vocabulary
    """Writes ``x * factor`` for every ``x`` read from ``cin``: a scaled identity.

    This is JCSP's ``Mult`` (a stream times a constant). The product of two streams, value by
    value (JCSP's ``Times``), is ``Zip([a, b], pairs)`` then
    ``Map(pairs, cout, math.prod)``. Ends as ``Id`` does: on poison (spread to both channels)
    or retire (both ends retired).
    """
    while True:
        cout.write(cin.read() * factor)


@builtin(cin=input_end, cout=output_end, fn=callable_arg)
def Map(cin: In, cout: Out, fn: Callable[[Any], Any]) -> None:  # noqa: N802 - CSP vocabulary
    """Writes ``fn(x)`` for every ``x`` read from ``cin``.

    Ends as ``Id`` does: on poison (spread to both channels) or retire (both ends retired).
    If ``fn`` raises, the process fails: both channels are poisoned and ``Par`` reports the
    exception, noted with the process name ``'Map'``.
    """
    while True:
        cout.write(fn(cin.read()))


@builtin(cin=input_end, cout=output_end, pred=callable_arg)
def Filter(cin: In, cout: Out, pred: Callable[[Any], object]) -> None:  # noqa: N802
    """Copies to ``cout`` the values ``x`` read from ``cin`` for which ``pred(x)`` is true.

    Ends as ``Id`` does: on poison (spread to both channels) or retire (both ends retired).
    If ``pred`` raises, the process fails: both channels are poisoned and ``Par`` reports
    the exception.
    """
    while True:
        x = cin.read()
        if pred(x):
            cout.write(x)
