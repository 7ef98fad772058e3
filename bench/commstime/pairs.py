"""Commstime, ferrocsp's coroutine backend against PyCSP 0.9.2's greenlets, in adjacent pairs.

``run.py`` measures every implementation once, one after the other; on a shared machine whose
speed changes from one minute to the next (the development VM's did by 1.5x within a
``ferrocsp bench`` run), a ratio of two rows measured a minute apart says more about the
machine than about the code. Here the two are measured in alternation, each in a fresh
process (coroutine first in even pairs, PyCSP first in odd ones), and every pair gives a
ratio of two measurements taken seconds apart; the report is the median of those ratios
(and its range), with each side's median.

Each measurement is the median of ``--runs`` runs of ``--cycles`` cycles (PyCSP:
``--pycsp-cycles``, default 2000 as in ``run.py``), in microseconds per communication.

Usage: ``python bench/commstime/pairs.py [--pairs N] [--cycles C] [--runs R]``; needs
``bench/.venv-pycsp`` (bench/setup-peers.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYCSP_PYTHON = HERE.parent / ".venv-pycsp" / "bin" / "python"


def coroutine(cycles: int, runs: int) -> float:
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import run; "
        f"import statistics; print(statistics.median(run.cmeasure({cycles}, {runs})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    return float(out.stdout.split()[-1])


def pycsp(cycles: int, runs: int) -> float:
    env = dict(os.environ, PYCSP_HOST=os.environ.get("PYCSP_HOST", "127.0.0.1"))
    cmd = [str(PYCSP_PYTHON), str(HERE / "pycsp_commstime.py"), "--module", "greenlets"]
    cmd += ["--cycles", str(cycles), "--runs", str(runs)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=600)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(statistics.median(data["samples_us_per_comm"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs of measurements (8)")
    parser.add_argument("--cycles", type=int, default=20_000, help="coroutine cycles (20000)")
    parser.add_argument("--pycsp-cycles", type=int, default=2_000, help="PyCSP cycles (2000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (3)")
    args = parser.parse_args()
    if not PYCSP_PYTHON.exists():
        sys.exit("bench/.venv-pycsp is missing: run bench/setup-peers.sh")
    ours, theirs, ratios = [], [], []
    for i in range(args.pairs):
        if i % 2 == 0:
            c = coroutine(args.cycles, args.runs)
            p = pycsp(args.pycsp_cycles, args.runs)
        else:
            p = pycsp(args.pycsp_cycles, args.runs)
            c = coroutine(args.cycles, args.runs)
        ours.append(c)
        theirs.append(p)
        ratios.append(p / c)
        print(f"pair {i}: coroutine {c:.3f} us, pycsp-greenlets {p:.3f} us, ratio {p / c:.2f}x")
    print(
        f"coroutine median {statistics.median(ours):.3f} us/comm, pycsp-greenlets median "
        f"{statistics.median(theirs):.3f} us/comm; pycsp-greenlets / coroutine: median "
        f"{statistics.median(ratios):.2f}x (pairs {min(ratios):.2f}x to {max(ratios):.2f}x)"
    )


if __name__ == "__main__":
    main()
