"""Spawn: what it costs to start and join a network, per backend, against bare Python.

Rows, each the median over ``--reps`` rounds; the rounds interleave the rows (round r runs
every row once) so load changes on a shared machine hit every row alike:

- ``Par(p).run()`` of one do-nothing process on each backend (thread, greenlet, asyncio,
  coroutine), and
  its baselines: ``threading.Thread`` start+join of one do-nothing function, a bare greenlet
  spawned and switched to (no thread), and ``asyncio.run`` of one do-nothing coroutine;
- per process at ``N`` (default 1000): ``Par`` of N do-nothing processes on the thread
  backend against N ``threading.Thread`` started and then joined (the table of
  ``ferrocsp bench``'s spawn section at its largest N).
- the first ``Par(p).run()`` of a fresh interpreter per backend (its own process, this
  script with ``--first BACKEND``, median of 5 interpreters): what a program pays once, when
  its kept host thread, event loop or scheduler starts; beside the first bare
  ``threading.Thread`` start+join and the first ``asyncio.run`` of such an interpreter.

The verdicts are ratios measured in this one run: asyncio ``Par`` / ``asyncio.run``,
thread ``Par`` per process / ``Thread`` per process at N; greenlet and asyncio ``Par`` in µs.

Usage: ``python bench/spawn/run.py [--reps R] [--n N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/_common.py
from _common import reexec_in_venv, write_json


def _noop() -> None:
    return None


async def _anoop() -> None:
    return None


def _ways(n: int) -> dict[str, Callable[[], object]]:
    """Name -> one round's work (``@N`` rows run ``n`` processes)."""
    import greenlet

    import ferrocsp as csp

    noop, anoop = csp.process(_noop), csp.process(_anoop)

    def bare_thread() -> None:
        t = threading.Thread(target=_noop)
        t.start()
        t.join()

    def bare_greenlet() -> None:
        greenlet.greenlet(_noop).switch()

    def bare_threads() -> None:
        threads = [threading.Thread(target=_noop) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return {
        "Par(p).run(), thread": lambda: csp.Par(noop()).run(),
        "Par(p).run(), greenlet": lambda: csp.Par(noop(), backend="greenlet").run(),
        "Par(p).run(), asyncio": lambda: csp.Par(anoop()).run(),
        "Par(p).run(), coroutine": lambda: csp.Par(anoop(), backend="coroutine").run(),
        "threading.Thread start+join": bare_thread,
        "greenlet spawn+switch": bare_greenlet,
        "asyncio.run(coroutine)": lambda: asyncio.run(_anoop()),
        f"Par of {n}, thread": lambda: csp.Par(*(noop() for _ in range(n))).run(),
        f"{n} threading.Thread start+join": bare_threads,
    }


def measure(reps: int, n: int) -> dict[str, float]:
    """Median µs per round of each way (per process for the ``n``-process rows)."""
    ways = _ways(n)
    for fn in ways.values():
        fn()  # warm-up: kept threads and loops exist from here on, as in a running program
    samples: dict[str, list[float]] = {name: [] for name in ways}
    every = max(1, reps // 20)  # the N rows run in every `every`-th round: 20 are plenty
    for r in range(reps):
        for name, fn in ways.items():
            if _per_process(name, n) and r % every:
                continue
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e6)
    return {
        name: statistics.median(s) / (n if _per_process(name, n) else 1)
        for name, s in samples.items()
    }


def _per_process(name: str, n: int) -> bool:
    return name.startswith(("Par of", f"{n} "))


def first_run(backend: str) -> float:
    """µs of the first ``Par(p).run()`` in this (fresh) interpreter, or (``Thread``,
    ``asyncio.run``) of the first bare thread or event loop, with ferrocsp imported alike."""
    import ferrocsp as csp

    asyn = backend in ("asyncio", "coroutine")
    p = csp.process(_anoop)() if asyn else csp.process(_noop)()
    start = time.perf_counter()
    if backend == "Thread":
        t = threading.Thread(target=_noop)
        t.start()
        t.join()
    elif backend == "asyncio.run":
        asyncio.run(_anoop())
    else:
        csp.Par(p, backend=None if backend == "asyncio" else backend).run()
    return (time.perf_counter() - start) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=400, help="rounds per row (default 400)")
    ap.add_argument("--n", type=int, default=1000, help="processes of the N rows")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--first", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.first:
        print(f"{first_run(args.first):.1f}")
        return
    firsts: dict[str, float] = {}
    for b in ("thread", "greenlet", "asyncio", "coroutine", "Thread", "asyncio.run"):
        runs = [
            float(
                subprocess.run(
                    [sys.executable, __file__, "--first", b],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=120,
                ).stdout
            )
            for _ in range(5)
        ]
        firsts[b] = statistics.median(runs)
    rows = measure(args.reps, args.n)
    n = args.n
    print(f"load average: {os.getloadavg()[0]:.2f}, cores: {os.cpu_count()}")
    print(f"{'µs (median)':<40} {'':>10}")
    for name, us in rows.items():
        suffix = " per process" if _per_process(name, n) else ""
        print(f"{name + suffix:<40} {us:>10.1f}")
    for b, us in firsts.items():
        what = f"first {b}" if b[0].isupper() or "." in b else f"first Par(p).run(), {b}"
        print(f"{what + ' (median of 5)':<40} {us:>10.1f}")
    ratios = {
        "asyncio Par(p) / asyncio.run": rows["Par(p).run(), asyncio"]
        / rows["asyncio.run(coroutine)"],
        "thread Par(p) / Thread start+join": rows["Par(p).run(), thread"]
        / rows["threading.Thread start+join"],
        f"thread Par of {n} / {n} Threads (per process)": rows[f"Par of {n}, thread"]
        / rows[f"{n} threading.Thread start+join"],
    }
    print()
    for name, r in ratios.items():
        print(f"{name:<48} {r:>6.2f}x")
    if args.json:
        write_json(
            args.json,
            {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "load": os.getloadavg()[0],
                "cores": os.cpu_count(),
                "python": sys.version.split()[0],
                "reps": args.reps,
                "n": n,
                "us": rows,
                "first_us": firsts,
                "ratios": ratios,
            },
        )


if __name__ == "__main__":
    reexec_in_venv(__file__)
    main()
