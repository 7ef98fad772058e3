"""Commstime written against PyCSP 0.9's API: the program ``bench/compat/run.py`` times on
real PyCSP 0.9.2 and on ``ferrocsp.compat.pycsp``, unchanged.

    python commstime_pycsp.py [parallel|greenlets] [--cycles N] [--runs R]

It imports ``pycsp.parallel`` or ``pycsp.greenlets``: which library that is depends only on
``sys.path`` (run.py puts either the real package or a shim for the compat layer first).
Prefix, Delta2, Successor and Consumer form the classic ring; each run is a fresh network that
ends by poison from the consumer, as in PyCSP's own example. Prints one JSON line:
``{"module": ..., "version": ..., "us_per_comm": [...], "cpu_us_per_comm": [...]}`` (one
number per run: wall clock, and CPU time of the whole process, per communication).
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from typing import Any

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("module", nargs="?", choices=["parallel", "greenlets"], default="parallel")
parser.add_argument("--cycles", type=int, default=5_000)
parser.add_argument("--runs", type=int, default=3)
args = parser.parse_args()
pycsp: Any = importlib.import_module(f"pycsp.{args.module}")
process, Channel, Parallel, poison = pycsp.process, pycsp.Channel, pycsp.Parallel, pycsp.poison


@process
def Prefix(cin: Any, cout: Any, first: Any) -> None:  # noqa: N802 - PyCSP style
    value = first
    while True:
        cout(value)
        value = cin()


@process
def Delta2(cin: Any, cout1: Any, cout2: Any) -> None:  # noqa: N802
    while True:
        value = cin()
        cout1(value)
        cout2(value)


@process
def Successor(cin: Any, cout: Any) -> None:  # noqa: N802
    while True:
        cout(cin() + 1)


@process
def Consumer(cin: Any, cycles: int, out: list[tuple[float, float]]) -> None:  # noqa: N802
    cin()  # the ring is running
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(cycles):
        cin()
    comms = 4 * cycles  # 4 channels per cycle
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.append((wall * 1e6 / comms, cpu * 1e6 / comms))
    poison(cin)


def one_run(cycles: int) -> tuple[float, float]:
    """Microseconds per communication: (wall clock, CPU time of the whole process)."""
    a, b, c, d = Channel(), Channel(), Channel(), Channel()  # PyCSP: names unique per process
    out: list[tuple[float, float]] = []
    Parallel(
        Prefix(+c, -a, 0),
        Delta2(+a, -b, -d),
        Successor(+b, -c),
        Consumer(+d, cycles, out),
    )
    return out[0]


if __name__ == "__main__":
    one_run(min(args.cycles, 200))  # warm-up
    samples = [one_run(args.cycles) for _ in range(args.runs)]
    pycsp.shutdown()
    print(
        json.dumps(
            {
                "module": args.module,
                "version": list(pycsp.version),
                "us_per_comm": [w for w, _ in samples],
                "cpu_us_per_comm": [c for _, c in samples],
            }
        )
    )
