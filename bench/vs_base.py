"""This checkout against a build of another commit, interleaved in one run: "no speed lost".

Runs, for ``--rounds`` rounds, each benchmark under this checkout's package and then under the
base's (``--base``: the ``python/`` folder of a worktree of the base commit with its native
module built, e.g. ``git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build
--release -p ferrocsp-py && cp target/release/lib_native.so python/ferrocsp/_native.abi3.so)``),
alternating so that a change of machine load hits both alike. Benchmarks (microseconds per
communication, each round's figure is the script's own median or minimum):

- commstime in one interpreter: thread, asyncio and greenlet backends (``bench/commstime``);
- commstime across 4 OS processes, and the same ring over ``multiprocessing.Pipe``
  rendezvous (``bench/os/run.py``);
- a parent waiting on an OS-process echo over shared channels from a thread, an asyncio
  task and a greenlet (``bench/os/aio.py``).

Prints each figure's median over the rounds for both builds and base/new (above 1: this
checkout is faster). Timings are never asserted anywhere: this is for the closing note.

Usage: ``python bench/vs_base.py --base /tmp/base/python [--rounds 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OS_SNIPPET = """
import json, statistics, sys
sys.path.insert(0, {bench!r})
import run
cycles, runs = {cycles}, {runs}
fer = [run.commstime_ferrocsp(cycles) for _ in range(runs)]
pipe = [run.commstime_pipe(cycles) for _ in range(runs)]
print(json.dumps({{"os": statistics.median(fer), "pipe": statistics.median(pipe)}}))
"""


def _env(pkg: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(pkg)}


def _run(args: list[str], pkg: Path, timeout: float = 900) -> str:
    p = subprocess.run(
        [sys.executable, *args],
        env=_env(pkg),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed under {pkg}:\n{p.stderr[-2000:]}")
    return p.stdout


def commstime(pkg: Path, cycles: int, runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "c.json"
        _run(
            [
                "bench/commstime/run.py",
                "--skip=rust",
                "--skip=pycsp",
                f"--cycles={cycles}",
                f"--runs={runs}",
                f"--json={out}",
            ],
            pkg,
        )
        doc = json.loads(out.read_text())
    keys = {
        "py-ferrocsp": "thread",
        "py-asyncio-ferrocsp": "asyncio",
        "py-greenlet-ferrocsp": "greenlet",
    }
    return {
        f"commstime {keys[r['key']]}": r["us_per_comm"]
        for r in doc["results"]
        if r["key"] in keys and r["us_per_comm"]
    }


def os_commstime(pkg: Path, cycles: int, runs: int) -> dict[str, float]:
    code = OS_SNIPPET.format(bench=str(ROOT / "bench" / "os"), cycles=cycles, runs=runs)
    d = json.loads(_run(["-c", code], pkg).strip().splitlines()[-1])
    return {"commstime 4 OS processes": d["os"], "commstime 4 OS, mp.Pipe": d["pipe"]}


def aio_echo(pkg: Path, n: int, runs: int) -> dict[str, float]:
    out = _run(["bench/os/aio.py", f"--n={n}", f"--runs={runs}"], pkg)
    found = {}
    for label, key in (
        ("thread parent", "thread"),
        ("asyncio parent", "asyncio"),
        ("greenlet parent", "greenlet"),
    ):
        m = re.search(rf"{label}[^:]*:\s+([0-9.]+) us", out)
        if m:
            found[f"OS echo, {key} parent"] = float(m.group(1))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the base build's python/ folder")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer cycles (a smoke run)")
    args = ap.parse_args()
    if not (args.base / "ferrocsp").is_dir():
        ap.error(f"{args.base} has no ferrocsp package")
    new = ROOT / "python"
    cycles = 2000 if args.quick else 10_000
    n = 500 if args.quick else 3000
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rnd in range(args.rounds):
        for which, pkg in (("new", new), ("base", args.base)):
            print(f"round {rnd + 1}/{args.rounds}: {which}", file=sys.stderr, flush=True)
            for bench in (
                lambda p: commstime(p, cycles, 3),
                lambda p: os_commstime(p, cycles, 3),
                lambda p: aio_echo(p, n, 3),
            ):
                for k, v in bench(pkg).items():
                    samples[k][which].append(v)
    print(f"\nus per communication, median of {args.rounds} rounds (new: {new}, base: {args.base})")
    print(f"{'benchmark':<30} {'new':>8} {'base':>8} {'base/new':>9}")
    for k, by in samples.items():
        a, b = statistics.median(by["new"]), statistics.median(by["base"])
        print(f"{k:<30} {a:>8.2f} {b:>8.2f} {b / a:>9.2f}")
    for which in ("new", "base"):
        o = statistics.median(samples["commstime 4 OS processes"][which])
        p = statistics.median(samples["commstime 4 OS, mp.Pipe"][which])
        print(f"mp.Pipe / ferrocsp across OS processes ({which}): {p / o:.2f}x")


if __name__ == "__main__":
    main()
