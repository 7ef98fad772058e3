"""Token ring: ``size`` processes in a ring of rendezvous channels pass one token around.

Process 0 sends the token (an int, incremented at every hop) and every process forwards it
``rounds`` times, so ``size * rounds`` hops happen and the ring ends by itself (no poison).
Process 0 times from its first write to its last read; the result is microseconds per hop,
the median of ``runs`` runs after one short warm-up. Unlike commstime, only one process is
runnable at any time and the run queue cycles through all of them, so this measures a
hand-off plus a switch to a process that has been asleep for a whole lap.

Rows, all in one run: ferrocsp's greenlet, asyncio, coroutine and thread backends, and PyCSP 0.9.2
``pycsp.greenlets`` from ``bench/.venv-pycsp`` (``bench/setup-peers.sh``) when it exists.
Ratios are against the greenlet backend.

Usage: ``python bench/ring/run.py [--size 256] [--hops 100000] [--runs 3] [--json PATH]``
(``--thread-hops`` defaults to a tenth of ``--hops``: each thread hop is a kernel wake-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/_common.py
from _common import reexec_in_venv, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYCSP_PYTHON = ROOT / "bench" / ".venv-pycsp" / "bin" / "python"


@dataclass
class Row:
    key: str
    label: str
    hops: int = 0
    samples: list[float] = field(default_factory=list)
    us_per_hop: float | None = None
    note: str = ""


def ring(backend: str, size: int, rounds: int) -> float:
    """One ferrocsp ring on ``backend``; microseconds per hop."""
    import ferrocsp

    chans = [ferrocsp.Channel() for _ in range(size)]
    if backend in ("asyncio", "coroutine"):

        async def afirst(cin: Any, cout: Any) -> tuple[float, int]:
            start = time.perf_counter()
            await cout.awrite(0)
            for _ in range(rounds - 1):
                await cout.awrite(await cin.aread() + 1)
            last = await cin.aread()
            return time.perf_counter() - start, last

        async def amember(cin: Any, cout: Any) -> None:
            for _ in range(rounds):
                await cout.awrite(await cin.aread() + 1)

        first = ferrocsp.process(afirst, backend=backend)
        member = ferrocsp.process(amember, backend=backend)
    else:

        def sfirst(cin: Any, cout: Any) -> tuple[float, int]:
            start = time.perf_counter()
            cout.write(0)
            for _ in range(rounds - 1):
                cout.write(cin.read() + 1)
            last = cin.read()
            return time.perf_counter() - start, last

        def smember(cin: Any, cout: Any) -> None:
            for _ in range(rounds):
                cout.write(cin.read() + 1)

        first = ferrocsp.process(sfirst, backend=backend)
        member = ferrocsp.process(smember, backend=backend)
    procs = [first(chans[size - 1], chans[0])]
    procs += [member(chans[i - 1], chans[i]) for i in range(1, size)]
    hops = size * rounds
    results = ferrocsp.Par(*procs).start().join(timeout=120 + hops * 1e-3)
    elapsed, last = results[0]
    if last != hops - 1:
        raise RuntimeError(f"ring: expected token {hops - 1}, got {last}")
    return elapsed * 1e6 / hops


def run_ferrocsp(backend: str, size: int, rounds: int, runs: int) -> Row:
    row = Row(backend, f"ferrocsp {backend} backend", hops=size * rounds)
    try:
        ring(backend, size, 2)  # warm-up
        row.samples = [ring(backend, size, rounds) for _ in range(runs)]
    except Exception as exc:  # noqa: BLE001 (reported in the table)
        row.note = f"failed: {type(exc).__name__}: {exc}"
    return row


def run_pycsp(size: int, rounds: int, runs: int) -> Row:
    row = Row("pycsp-greenlets", "PyCSP 0.9.2 pycsp.greenlets", hops=size * rounds)
    if not PYCSP_PYTHON.exists():
        row.note = "bench/.venv-pycsp missing; run bench/setup-peers.sh"
        return row
    # PyCSP's start-up needs its host named on machines whose hostname resolves to 127.x
    # (see bench/commstime/run.py).
    env = dict(os.environ, PYCSP_HOST=os.environ.get("PYCSP_HOST", "127.0.0.1"))
    cmd = [str(PYCSP_PYTHON), str(HERE / "pycsp_ring.py"), "--size", str(size)]
    cmd += ["--rounds", str(rounds), "--runs", str(runs), "--module", "greenlets"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        row.note = "timed out after 900 s"
        return row
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        row.note = f"failed: {last}"
        return row
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    row.samples = data["samples_us_per_hop"]
    row.label = f"PyCSP {data['version']} {data['module']}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="processes in the ring (256)")
    parser.add_argument("--hops", type=int, default=100_000, help="hops per run (100000)")
    parser.add_argument("--thread-hops", type=int, help="hops per thread run (hops / 10)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--skip", action="append", default=[], choices=["thread", "pycsp"])
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args()
    if args.size < 2 or args.hops < args.size or args.runs < 1:
        parser.error("--size must be >= 2, --hops >= --size, --runs >= 1")
    rounds = -(-args.hops // args.size)  # every process forwards the token this many times
    thread_rounds = max(2, -(-(args.thread_hops or args.hops // 10) // args.size))

    rows: list[Row] = []
    for backend in ("greenlet", "asyncio", "coroutine"):
        print(f"[ring] ferrocsp {backend}", file=sys.stderr, flush=True)
        rows.append(run_ferrocsp(backend, args.size, rounds, args.runs))
    if "thread" not in args.skip:
        print("[ring] ferrocsp thread", file=sys.stderr, flush=True)
        rows.append(run_ferrocsp("thread", args.size, thread_rounds, args.runs))
    if "pycsp" not in args.skip:
        print("[ring] PyCSP greenlets", file=sys.stderr, flush=True)
        rows.append(run_pycsp(args.size, rounds, args.runs))
    for r in rows:
        if r.samples:
            r.us_per_hop = statistics.median(r.samples)

    base = rows[0].us_per_hop
    print()
    print(f"token ring, {args.size} processes, median of {args.runs} runs, us per hop")
    print(f"{'implementation':<36} {'hops':>8} {'us/hop':>8} {'x greenlet':>11}")
    for r in rows:
        if r.us_per_hop is None:
            print(f"{r.label:<36} {'n/a':>8}   {r.note}")
            continue
        rel = f"{r.us_per_hop / base:.2f}" if base else "n/a"
        print(f"{r.label:<36} {r.hops:>8} {r.us_per_hop:>8.3f} {rel:>11}")
    if args.json:
        doc = {
            "benchmark": "ring",
            "params": {"size": args.size, "rounds": rounds, "runs": args.runs},
            "rows": [asdict(r) for r in rows],
        }
        write_json(args.json, doc)


if __name__ == "__main__":
    reexec_in_venv(__file__)
    main()
