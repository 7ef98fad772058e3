"""Free-threaded CPython against a GIL build, in one run: thread-backend processes on both cores.

Two measurements, each made by a child process of every interpreter given (``--ft``: a
free-threaded CPython with ``PYTHON_GIL=0``, ``--base``: the GIL build, e.g. .venv's 3.11):

- pipeline: two CPU-bound processes on the thread backend (``Par(..., backend="thread")``)
  talking over a ``Channel(4)``: the producer computes each item (``--work`` steps of an
  integer recurrence) and writes it, the consumer reads it and computes as much again. The same
  computation run serially on one thread, without channels, is the baseline of each
  interpreter. Reported: wall time, the cores the process used (CPU time / wall time), the
  parallel speed-up (serial / pipeline, at most 2) and, across interpreters, the pipeline's
  speed-up of the free-threaded build against the GIL build.
- commstime on threads (bench/commstime/run.py's network, ``ferrocsp.Channel()``, four OS
  threads) under each interpreter, and the Rust engine's crossbeam-channel ``bounded(0)`` peer
  (``cargo bench -p ferrocsp --bench commstime -- --only crossbeam``) in the same run.

Every ratio is between numbers measured in this run. Usage::

    scripts/free-threaded.sh --bench          # builds what is missing, then runs this
    python bench/freethreaded/run.py --ft .venv-ft/bin/python --base .venv/bin/python
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def cpu(steps: int, seed: int) -> int:
    acc = seed
    for i in range(steps):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def pipeline(items: int, work: int) -> dict[str, float]:
    import ferrocsp as csp

    ch: csp.Channel[int] = csp.Channel(4)
    out, inp = ch.writer(), ch.reader()
    total: list[int] = []

    def producer() -> None:
        with out:
            for i in range(items):
                out.write(cpu(work, i))

    def consumer() -> None:
        s = 0
        for v in inp:
            s += cpu(work, v)
        total.append(s)

    c0, t0 = time.process_time(), time.perf_counter()
    csp.Par(producer, consumer, backend="thread").run()
    wall, used = time.perf_counter() - t0, time.process_time() - c0

    c1, t1 = time.process_time(), time.perf_counter()
    serial = sum(cpu(work, cpu(work, i)) for i in range(items))
    serial_wall, serial_cpu = time.perf_counter() - t1, time.process_time() - c1
    if total != [serial]:
        raise RuntimeError(f"pipeline lost or changed values: {total} != [{serial}]")
    return {
        "wall_s": wall,
        "cores_used": used / wall,
        "serial_wall_s": serial_wall,
        "serial_cores_used": serial_cpu / serial_wall,
        "parallel_speedup": serial_wall / wall,
    }


def commstime_threads(cycles: int, runs: int) -> list[float]:
    path = HERE.parent / "commstime" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_commstime", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_commstime"] = mod
    spec.loader.exec_module(mod)
    import ferrocsp as csp

    samples: list[float] = mod.measure(csp.Channel, cycles, runs)
    return samples


def child(args: argparse.Namespace) -> None:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    doc: dict[str, Any] = {
        "python": platform.python_version() + ("t" if not gil else ""),
        "gil_enabled": gil,
        "pipeline": [pipeline(args.items, args.work) for _ in range(args.runs)],
        "commstime_us": commstime_threads(args.cycles, args.runs),
    }
    print(json.dumps(doc))


def run_child(python: str, args: argparse.Namespace, ft: bool) -> dict[str, Any]:
    env = dict(os.environ)
    if ft:
        env["PYTHON_GIL"] = "0"
    cmd = [python, str(Path(__file__).resolve()), "--child"]
    cmd += ["--items", str(args.items), "--work", str(args.work)]
    cmd += ["--cycles", str(args.cycles), "--runs", str(args.runs)]
    print(f"[freethreaded] {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{python} failed:\n{proc.stderr[-3000:]}")
    doc: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if ft and doc["gil_enabled"]:
        raise SystemExit(f"{python}: the GIL is enabled (not a free-threaded run)")
    return doc


RUST_LINE = re.compile(r"^commstime impl=crossbeam us_per_comm=([0-9.]+).*? samples=([0-9.,]+)")


def crossbeam(cycles: int, runs: int) -> list[float]:
    if shutil.which("cargo") is None:
        return []
    cmd = ["cargo", "bench", "--quiet", "-p", "ferrocsp", "--bench", "commstime", "--"]
    cmd += ["--cycles", str(cycles), "--runs", str(runs), "--only", "crossbeam"]
    print(f"[freethreaded] {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        m = RUST_LINE.match(line)
        if m:
            return [float(x) for x in m.group(2).split(",")]
    tail = proc.stderr[-500:]
    print(f"[freethreaded] cargo bench gave no crossbeam line: {tail}", file=sys.stderr)
    return []


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ft", help="a free-threaded python with ferrocsp (e.g. .venv-ft/bin/python)")
    ap.add_argument("--base", help="a GIL build's python with ferrocsp (e.g. .venv/bin/python)")
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--work", type=int, default=20_000, help="recurrence steps per item and side")
    ap.add_argument("--cycles", type=int, default=20_000, help="commstime cycles")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if not args.ft or not args.base:
        ap.error("--ft and --base are both needed")
    ft = run_child(args.ft, args, ft=True)
    base = run_child(args.base, args, ft=False)
    rust = crossbeam(args.cycles, args.runs)

    print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    print(f"pipeline: 2 thread-backend processes, {args.items} items, {args.work} steps per item")
    print(f"and side; median of {args.runs} runs")
    print(f"{'':24}{'wall s':>9}{'cores':>7}{'serial s':>10}{'par. speed-up':>15}")
    for doc in (base, ft):
        p = doc["pipeline"]
        print(
            f"{'CPython ' + doc['python']:24}{med([r['wall_s'] for r in p]):9.3f}"
            f"{med([r['cores_used'] for r in p]):7.2f}{med([r['serial_wall_s'] for r in p]):10.3f}"
            f"{med([r['parallel_speedup'] for r in p]):15.2f}"
        )
    base_wall = med([r["wall_s"] for r in base["pipeline"]])
    speedup = base_wall / med([r["wall_s"] for r in ft["pipeline"]])
    print(f"pipeline speed-up, {ft['python']} against {base['python']}: {speedup:.2f}x")
    print(f"\ncommstime on threads, us per communication (median of {args.runs}):")
    rows = [(f"ferrocsp, CPython {d['python']}", med(d["commstime_us"])) for d in (base, ft)]
    if rust:
        rows.append(("Rust crossbeam bounded(0)", med(rust)))
    for label, us in rows:
        ratio = f"  ({us / med(rust):.1f}x crossbeam)" if rust else ""
        print(f"  {label:32}{us:8.3f}{ratio}")
    if args.json:
        doc = {
            "args": vars(args) | {"json": str(args.json)},
            "base": base,
            "ft": ft,
            "crossbeam_us": rust,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
