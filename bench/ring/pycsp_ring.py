"""Token ring on PyCSP 0.9.2 (``pycsp.greenlets`` or ``pycsp.parallel``), for ``run.py``.

Run with the interpreter of ``bench/.venv-pycsp`` (see ``bench/setup-peers.sh``): PyCSP is a
peer to compare against, not a dependency. The network is run.py's (every process forwards the
token a fixed number of times, so the ring ends by itself). Prints one JSON object on stdout:
``{"samples_us_per_hop": [...], "version": ..., "module": ...}``.
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


def first(cin: Any, cout: Any, rounds: int, result: list[float]) -> None:
    start = time.perf_counter()
    cout(0)
    for _ in range(rounds - 1):
        cout(cin() + 1)
    last = cin()
    result.append(time.perf_counter() - start)
    result.append(last)


def member(cin: Any, cout: Any, rounds: int) -> None:
    for _ in range(rounds):
        cout(cin() + 1)


def one_run(size: int, rounds: int) -> float:
    chans = [csp.Channel() for _ in range(size)]
    result: list[float] = []
    p = csp.process
    procs = [p(first)(+chans[size - 1], -chans[0], rounds, result)]
    procs += [p(member)(+chans[i - 1], -chans[i], rounds) for i in range(1, size)]
    csp.Parallel(*procs)
    hops = size * rounds
    if result[1] != hops - 1:
        raise RuntimeError(f"ring: expected token {hops - 1}, got {result[1]}")
    return result[0] * 1e6 / hops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=391)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--module", choices=["parallel", "greenlets"], default="greenlets")
    args = parser.parse_args()
    global csp
    csp = importlib.import_module(f"pycsp.{args.module}")
    one_run(args.size, 2)  # warm-up
    samples = [one_run(args.size, args.rounds) for _ in range(args.runs)]
    if hasattr(csp, "shutdown"):
        csp.shutdown()
    json.dump(
        {
            "samples_us_per_hop": samples,
            "version": version("pycsp"),
            "module": f"pycsp.{args.module}",
            "python": sys.version.split()[0],
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
