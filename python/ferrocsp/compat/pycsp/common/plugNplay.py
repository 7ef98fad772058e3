"""``pycsp.common.plugNplay``: PyCSP 0.9's small network components, as PyCSP processes on
the current implementation (``pycsp.current``).

``Identity``, ``Prefix``, ``Successor``, ``Delta2``, ``Plus``, ``Tail``, ``Pairs``,
``SkipProcess``, ``Mux2``: inputs first, then outputs, then parameters, as in PyCSP.

Invariants:
- Each runs until a channel it uses is poisoned or retired, and then ends cleanly (PyCSP's
  process rules then poison or retire its other ends).
- ``Delta2`` offers each value to both outputs at once and sends it to the other one after
  the first took it; ``Pairs`` is PyCSP's network of ``Delta2``, ``Plus`` and ``Tail``.
"""

# ruff: noqa: N999 - PyCSP's module name
from __future__ import annotations

from typing import Any

from .. import current

__all__ = [
    "Delta2",
    "Identity",
    "Mux2",
    "Pairs",
    "Plus",
    "Prefix",
    "SkipProcess",
    "Successor",
    "Tail",
]

_process: Any = current.__dict__["process"]


def _identity(cin: Any, cout: Any) -> None:
    while True:
        cout(cin())


def _prefix(cin: Any, cout: Any, prefix: Any = None) -> None:
    cout(prefix)
    while True:
        cout(cin())


def _successor(cin: Any, cout: Any) -> None:
    while True:
        cout(cin() + 1)


def _delta2(cin: Any, cout1: Any, cout2: Any) -> None:
    # Each value goes to both outputs, to whichever is ready first and then to the other.
    while True:
        msg = cin()
        g, _ = current.__dict__["Alternation"]([{(cout1, msg): None, (cout2, msg): None}]).select()
        (cout2 if g is cout1 else cout1)(msg)


def _plus(cin1: Any, cin2: Any, cout: Any) -> None:
    while True:
        cout(cin1() + cin2())


def _tail(cin: Any, cout: Any) -> None:
    cin()
    while True:
        cout(cin())


def _pairs(cin: Any, cout: Any) -> None:
    # PyCSP's network: Delta2 feeds Plus directly and through Tail, so it emits x[i] + x[i+1]
    # with the same buffering (one value held by each of the three) as PyCSP's.
    chan = current.__dict__["Channel"]
    pa, pb, pc = chan("pA"), chan("pB"), chan("pC")
    current.__dict__["Parallel"](
        Delta2(cin, pa.writer(), pb.writer()),
        Plus(pa.reader(), pc.reader(), cout),
        Tail(pb.reader(), pc.writer()),
    )


def _skip() -> None:
    return None


def _mux2(cin1: Any, cin2: Any, cout: Any) -> None:
    while True:
        _, msg = current.__dict__["AltSelect"](
            current.__dict__["InputGuard"](cin1), current.__dict__["InputGuard"](cin2)
        )
        cout(msg)


Identity = _process(_identity)
Prefix = _process(_prefix)
Successor = _process(_successor)
Delta2 = _process(_delta2)
Plus = _process(_plus)
Tail = _process(_tail)
Pairs = _process(_pairs)
SkipProcess = _process(_skip)
Mux2 = _process(_mux2)
