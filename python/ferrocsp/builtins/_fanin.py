"""Fan-in: several inputs, one output (``Merge`` by choice, ``Mux`` in turn, ``Zip`` and
``Plus`` one value from each input at a time).

Invariants:
- ``Merge`` forwards each value it reads; the choice among ready inputs is fair
  (``Alt.fair_select``): no input is starved while it stays ready.
- ``Zip`` and ``Plus`` read one value from every input per output value, in whatever order
  the inputs become ready (an ``Alt`` over the inputs not yet read this round), so the order
  in which the producers write cannot deadlock them.
- Shutdown follows the process rules: poison on any channel poisons all; when the stream
  ends (``ChannelRetired``), every end held is retired.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._alt import Alt, Guard
from ._builtin import In, Out, builtin, input_end, input_ends, output_end

__all__ = ["Merge", "Mux", "Plus", "Zip"]


@builtin(cins=input_ends, cout=output_end)
def Merge(cins: Sequence[In], cout: Out) -> None:  # noqa: N802 - CSP vocabulary
    """Forwards to ``cout`` every value read from any of ``cins``, as they come.

    Takes from the inputs that are ready by a fair choice (``Alt.fair_select``: the input
    taken last has the lowest priority next time), so no input is starved. The order of
    values from one input is kept; between inputs it is the order of arrival.

    Ends when all inputs are retired (end-of-stream on each): it retires its ends, so
    ``cout``'s readers see end-of-stream after the last value. An input that ends early
    is left out while the others go on. Also ends cleanly (result None) on poison of any of
    its channels, which it spreads to all, and when every reader of ``cout`` has retired (it
    retires all its ends). ``cins`` is a non-empty list or tuple; a plain ``Channel`` among
    them is never at end-of-stream, so then only poison ends a ``Merge``.
    """
    alt = Alt(*cins)
    while True:
        _, value = alt.fair_select()
        cout.write(value)


@builtin(cins=input_ends, cout=output_end)
def Mux(cins: Sequence[In], cout: Out) -> None:  # noqa: N802 - CSP vocabulary
    """Reads ``cins[0]``, ``cins[1]``, ... in turn (round robin) and forwards to ``cout``.

    The deterministic inverse of ``Demux``: ``Demux(cin, ws)`` -> workers ->
    ``Mux(rs, cout)`` gives back the stream in its order. For values in order of arrival use
    ``Merge``.

    Ends at end-of-stream on the input due next (it retires all its ends, so ``cout``'s
    readers see end-of-stream); cleanly on poison of any of its channels, which it spreads
    to all, and when every reader of ``cout`` has retired. ``cins`` is a non-empty list or
    tuple.
    """
    while True:
        for cin in cins:
            cout.write(cin.read())


def _gather(alt: Alt, guards: list[Guard], slot: dict[int, int]) -> list[Any]:
    """One value from every guard's input, read in whatever order they become ready."""
    values: list[Any] = [None] * len(guards)
    for g in guards:
        g.when = True
    for _ in guards:
        chosen, value = alt.pri_select()
        chosen.when = False
        values[slot[id(chosen)]] = value
    return values


@builtin(cins=input_ends, cout=output_end)
def Zip(cins: Sequence[In], cout: Out) -> None:  # noqa: N802 - CSP vocabulary
    """Reads one value from each of ``cins`` and writes them to ``cout`` as one tuple.

    The inputs of one tuple are read in parallel: whichever is ready first is read first (an
    ``Alt`` over the inputs still to read, JCSP's ``Paraplex``), so the order in which
    producers write does not matter. Tuple ``k`` holds the ``k``-th value of every input.

    Ends when every input still to read for the current tuple is at end-of-stream (so when
    all inputs end together, after the last full tuple; an incomplete tuple is dropped): it
    retires all its ends, and ``cout``'s readers see end-of-stream. Ends
    cleanly on poison of any of its channels, which it spreads to all, and when every reader
    of ``cout`` has retired. ``cins`` is a non-empty list or tuple.
    """
    guards = [Guard(cin) for cin in cins]
    slot = {id(g): i for i, g in enumerate(guards)}
    alt = Alt(*guards)
    while True:
        cout.write(tuple(_gather(alt, guards, slot)))


@builtin(cin1=input_end, cin2=input_end, cout=output_end)
def Plus(cin1: In, cin2: In, cout: Out) -> None:  # noqa: N802 - CSP vocabulary
    """Writes ``a + b`` to ``cout`` for each pair ``a`` from ``cin1``, ``b`` from ``cin2``.

    The two inputs are read in parallel, as ``Zip`` reads them. Ends as ``Zip`` does: at
    end-of-stream of an input (all its ends retired), on poison (spread to all channels), or
    when every reader of ``cout`` has retired.
    """
    guards = [Guard(cin1), Guard(cin2)]
    slot = {id(g): i for i, g in enumerate(guards)}
    alt = Alt(*guards)
    while True:
        a, b = _gather(alt, guards, slot)
        cout.write(a + b)
