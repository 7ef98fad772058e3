"""Commstime on PyCSP 0.9.2: ``pycsp.parallel`` (processes are OS threads) or, with
``--module greenlets``, ``pycsp.greenlets`` (processes are greenlets of one thread).

Run by ``run.py`` with the interpreter of ``bench/.venv-pycsp`` (see ``bench/setup-peers.sh``),
because PyCSP is a peer to compare against, not a dependency of ferrocsp. Prints one JSON
object on stdout: ``{"samples_us_per_comm": [...], "version": "0.9.2", "module": ...}``.

The network and its shutdown are the same as run.py's: every process does a fixed number of
communications, so the network ends without poison and each run is a fresh network.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from importlib.metadata import version
from types import ModuleType
from typing import Any

csp: ModuleType


def prefix(cin: Any, cout: Any, total: int) -> None:
    cout(0)
    for _ in range(total - 1):
        cout(cin())
    cin()  # the last value is not sent on, so every process ends


def delta(cin: Any, out_consumer: Any, out_succ: Any, total: int) -> None:
    for _ in range(total):
        v = cin()
        out_consumer(v)
        out_succ(v)


def succ(cin: Any, cout: Any, total: int) -> None:
    for _ in range(total):
        cout(cin() + 1)


def consumer(cin: Any, cycles: int, result: list[float]) -> None:
    first = cin()
    start = time.perf_counter()
    last = first
    for _ in range(cycles):
        last = cin()
    result.append(time.perf_counter() - start)
    if last != first + cycles:
        raise RuntimeError(f"commstime: expected {first + cycles}, got {last}")


def one_run(cycles: int) -> float:
    a, b, c, d = csp.Channel(), csp.Channel(), csp.Channel(), csp.Channel()
    total = cycles + 1
    result: list[float] = []
    p = csp.process
    csp.Parallel(
        p(prefix)(+d, -a, total),
        p(delta)(+a, -b, -c, total),
        p(succ)(+c, -d, total),
        p(consumer)(+b, cycles, result),
    )
    return result[0] * 1e6 / (4 * cycles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--module", choices=["parallel", "greenlets"], default="parallel")
    args = parser.parse_args()
    global csp
    csp = importlib.import_module(f"pycsp.{args.module}")
    one_run(min(args.cycles, 200))  # warm-up
    samples = [one_run(args.cycles) for _ in range(args.runs)]
    if hasattr(csp, "shutdown"):
        csp.shutdown()
    json.dump(
        {
            "samples_us_per_comm": samples,
            "version": version("pycsp"),
            "module": f"pycsp.{args.module}",
            "python": sys.version.split()[0],
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
