"""Commstime, the classic CSP benchmark, built from ``ferrocsp.builtins``.

A ring of three builtins counts 0, 1, 2, ... and a consumer times it::

    Prefix(0) --a--> Delta --b--> consumer
        ^              |
        d              c
        |              v
        +---- Succ <---+

Each cycle is four rendezvous communications (a, b, c, d). The consumer reads ``--cycles``
values, checks they count up, prints the time per communication and poisons its channel; the
poison spreads around the ring (each builtin poisons the channels it holds), so every process
ends. ``--parallel`` uses a Delta that writes its two outputs concurrently (an Alt over
Output guards) instead of one after the other.

Run: ``python examples/commstime.py [--cycles N] [--parallel] [--backend NAME]``.
"""

from __future__ import annotations

import argparse
import time

import ferrocsp as csp
from ferrocsp.builtins import Delta, Prefix, Succ


@csp.process
def consumer(cin: csp.Reader, cycles: int) -> float:
    """Reads ``cycles`` values after the first; returns microseconds per communication."""
    first = cin.read()
    start = time.perf_counter()
    for i in range(1, cycles + 1):
        value = cin.read()
        if value != first + i:
            raise RuntimeError(f"commstime: expected {first + i}, got {value}")
    elapsed = time.perf_counter() - start
    cin.poison()  # shut the ring down
    return elapsed * 1e6 / (4 * cycles)


def commstime(cycles: int, parallel: bool, backend: str) -> float:
    a, b, c, d = (csp.Channel(name=n) for n in "abcd")
    results = csp.Par(
        Prefix(d.reader(), a.writer(), 0),
        Delta(a.reader(), b.writer(), c.writer(), parallel=parallel),
        Succ(c.reader(), d.writer()),
        consumer(b.reader(), cycles),
        backend=backend,
    ).run()
    assert all(ch.stats().poisoned for ch in (a, b, c, d))
    us: float = results[-1]
    return us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--parallel", action="store_true", help="Delta with parallel outputs")
    parser.add_argument("--backend", default="thread", help="thread (default), greenlet, ...")
    args = parser.parse_args()

    commstime(min(args.cycles, 200), args.parallel, args.backend)  # warm-up
    us = commstime(args.cycles, args.parallel, args.backend)
    kind = "parallel" if args.parallel else "sequential"
    print(
        f"commstime ({args.backend} backend, {kind} Delta): {args.cycles} cycles, "
        f"{4 * args.cycles} communications, {us:.2f} µs per communication"
    )
    print("all four processes ended by poison")
    print("commstime: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
