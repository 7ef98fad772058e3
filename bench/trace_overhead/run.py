"""What the tracing hooks cost while tracing is off.

Builds the extension twice from this checkout, with the hooks (as shipped) and with the cargo
feature ``no-trace-hooks`` (hooks compiled out), puts each next to a copy of the Python package,
and runs commstime (``ferrocsp._demo.commstime``) alternately with the two, ``--runs`` times per
backend. Prints medians and the ratio hooks/no-hooks per backend, all from the same run.

Usage: ``python bench/trace_overhead/run.py [--runs K] [--cycles N] [--backend thread ...]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build(dest: Path, features: list[str]) -> None:
    """Builds the bindings with ``features`` and lays out an importable package in ``dest``."""
    cmd = ["cargo", "build", "--quiet", "--release", "-p", "ferrocsp-py"]
    if features:
        cmd += ["--features", ",".join(features)]
    env = {**os.environ, "PYO3_PYTHON": sys.executable}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    shutil.copytree(
        ROOT / "python" / "ferrocsp",
        dest / "ferrocsp",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    built = ROOT / "target" / "release" / "lib_native.so"
    shutil.copy(built, dest / "ferrocsp" / "_native.abi3.so")


def once(pkg: Path, backend: str, cycles: int) -> float:
    code = f"from ferrocsp._demo import commstime; print(commstime({cycles}, backend={backend!r}))"
    env = {**os.environ, "PYTHONPATH": str(pkg), "FERROCSP_TRACE": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--backend", action="append", choices=["thread", "greenlet"])
    args = parser.parse_args()
    backends = args.backend or ["greenlet", "thread"]
    with tempfile.TemporaryDirectory() as tmp:
        hooks, bare = Path(tmp, "hooks"), Path(tmp, "bare")
        print("building with hooks, then without (cargo feature no-trace-hooks) ...", flush=True)
        build(hooks, [])
        build(bare, ["no-trace-hooks"])
        print(f"commstime, {args.cycles} cycles, {args.runs} alternating runs, µs per comm")
        print(f"{'backend':<10}{'hooks (off)':>14}{'no hooks':>12}{'ratio':>9}")
        for backend in backends:
            with_hooks: list[float] = []
            without: list[float] = []
            for i in range(args.runs):
                # ABBA order: neither build always runs first (thread timings drift).
                if i % 2 == 0:
                    with_hooks.append(once(hooks, backend, args.cycles))
                    without.append(once(bare, backend, args.cycles))
                else:
                    without.append(once(bare, backend, args.cycles))
                    with_hooks.append(once(hooks, backend, args.cycles))
            a, b = statistics.median(with_hooks), statistics.median(without)
            print(f"{backend:<10}{a:>14.3f}{b:>12.3f}{a / b:>9.3f}", flush=True)
    # Leave the shared build as the suite expects it (hooks compiled in).
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "-p", "ferrocsp-py"],
        cwd=ROOT,
        env={**os.environ, "PYO3_PYTHON": sys.executable},
        check=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
