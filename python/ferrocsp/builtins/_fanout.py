"""Fan-out: one input, several outputs (``Delta`` copies each value to every output,
``Demux`` deals the values out in turn).

Invariants:
- Every value read is written before the next is read: ``Delta`` writes it to every output
  (in the order given, or concurrently with ``parallel=True``), ``Demux`` to exactly one.
- Shutdown follows the process rules: poison on any channel poisons all of them; retire
  (end-of-stream on ``cin``, or all readers of any one output gone) retires every end the
  process holds, so the other outputs see end-of-stream too.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._alt import Alt, Guard, Output
from ._builtin import In, Out, builtin, input_end, output_ends

__all__ = ["Delta", "Demux"]


@builtin(cin=input_end, couts=output_ends)
def Delta(cin: In, *couts: Out, parallel: bool = False) -> None:  # noqa: N802 - CSP vocabulary
    """Copies every value read from ``cin`` to each of ``couts`` (JCSP's ``Delta``).

    Sequential (the default): writes each value to ``couts[0]``, then ``couts[1]``, ...; a
    slow reader on one output holds up the others, and a network that expects the outputs
    in another order deadlocks. ``parallel=True``: the writes of one value happen
    concurrently, in whatever order the readers come. They are done by one ``Alt`` over
    ``Output`` guards, each disabled once its write happened, until every output has the
    value: one process and no thread per output (a ``Par`` of writers per value would start
    ``len(couts)`` processes per value). Either way, the next value is read only when every
    output has this one.

    Ends cleanly (result None) on poison of any of its channels, which it spreads to all;
    and on retire: at end-of-stream on ``cin``, or when every reader of any one output has
    retired, it retires all its ends (the other outputs see end-of-stream). Needs at least
    one output.
    """
    if not parallel or len(couts) == 1:
        while True:
            value = cin.read()
            for cout in couts:
                cout.write(value)
    outputs = [Output(cout, None) for cout in couts]
    guards = [Guard(o) for o in outputs]
    alt = Alt(*guards)
    while True:
        value = cin.read()
        for o, g in zip(outputs, guards, strict=True):
            o.value = value
            g.when = True
        for _ in guards:
            chosen, _ = alt.pri_select()
            chosen.when = False


@builtin(cin=input_end, couts=output_ends)
def Demux(cin: In, couts: Sequence[Out]) -> None:  # noqa: N802 - CSP vocabulary
    """Deals the values read from ``cin`` to ``couts`` in turn (round robin).

    Value ``i`` goes to ``couts[i % len(couts)]``; a write waits for that output's reader, so
    a slow reader holds up the others (for work that should go to whichever worker is free,
    let the workers share one channel instead). ``Mux`` undoes it: ``Demux`` -> workers ->
    ``Mux`` keeps the order of the stream.

    Ends cleanly (result None) on poison of any of its channels, which it spreads to all;
    and on retire: at end-of-stream on ``cin``, or when every reader of the output due next
    has retired, it retires all its ends. ``couts`` is a non-empty list or tuple.
    """
    while True:
        for cout in couts:
            cout.write(cin.read())
