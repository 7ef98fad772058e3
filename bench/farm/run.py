"""``csp.farm`` (N OS processes x M greenlet workers) against multiprocessing.Pool and
concurrent.futures on the same jobs, in one run (times and ratios).

Three workloads, every one on every contender, each measured in this run:

1. CPU-bound: pure-Python arithmetic per job. ``csp.farm`` with N=1 and N=2 OS processes
   (M=1): the speed-up from N=1 to N=2 is the number to read (2 cores: at best 2x);
   ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` with 1 and 2 processes beside it.
2. I/O-bound: each job sleeps (``csp.io(time.sleep, t)``, which parks only its greenlet) and
   does a little arithmetic. ``csp.farm`` N=1 with M=1 and M=8: the speed-up from M=1 to
   M=8 is the number to read (at best 8x); ``Pool``/``ProcessPoolExecutor`` with 1 and 8
   processes, ``ThreadPoolExecutor`` with 8 threads.
3. Mixed: half sleep, half arithmetic. ``csp.farm`` N=2 x M=8 against ``Pool(2)``,
   ``Pool(16)``, ``ProcessPoolExecutor(2)`` and ``ThreadPoolExecutor(16)``.

Every figure includes starting the workers (a farm or pool is made per measurement), as a
user running one batch would pay it; the forkserver is warmed first. Jobs and results cross
OS processes over ferrocsp shared channels (the farm) or multiprocessing's pipes (the pools,
``chunksize=1`` so both hand out one job at a time).

Usage: ``python bench/farm/run.py [--quick] [--json PATH]`` (about 30 s; --quick: 10 s).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import reexec_in_venv, write_json

reexec_in_venv(__file__)

import ferrocsp as csp  # noqa: E402

# -- the jobs (module level: they cross OS processes by reference) ----------------------------


def spin(k: int) -> int:
    """Pure-Python arithmetic: about ``k`` loop iterations (holds the GIL throughout)."""
    acc = 0
    for i in range(k):
        acc = (acc + i * i) % 1_000_003
    return acc


def cpu_job(k: int) -> int:
    return spin(k)


def io_job(job: tuple[float, int]) -> int:
    """Sleeps ``t`` seconds (through ``csp.io``: in a greenlet it parks only that greenlet;
    anywhere else it simply sleeps), then computes a little."""
    t, k = job
    csp.io(time.sleep, t)
    return spin(k)


# -- the contenders ---------------------------------------------------------------------------


@csp.process
def _feed(out: csp.Writer, jobs: list[Any]) -> None:
    with out:
        for j in jobs:
            out.write(j)


@csp.process
def _count(inp: csp.Reader) -> int:
    return sum(1 for _ in inp)


def run_farm(fn: Callable[[Any], Any], jobs: list[Any], n: int, m: int) -> float:
    t0 = time.perf_counter()
    jc, rc = csp.Channel(), csp.Channel()
    net = csp.farm(fn, jc, rc, workers=n, per_worker=m, backend="os")
    _, _, got = csp.Par(_feed(jc.writer(), jobs), net, _count(rc.reader())).run()
    assert got == len(jobs), (got, len(jobs))
    return time.perf_counter() - t0


def run_pool(fn: Callable[[Any], Any], jobs: list[Any], n: int) -> float:
    t0 = time.perf_counter()
    with mp.get_context("forkserver").Pool(n) as pool:
        got = list(pool.imap_unordered(fn, jobs, chunksize=1))
    assert len(got) == len(jobs)
    return time.perf_counter() - t0


def run_ppe(fn: Callable[[Any], Any], jobs: list[Any], n: int) -> float:
    t0 = time.perf_counter()
    ctx = mp.get_context("forkserver")
    with cf.ProcessPoolExecutor(n, mp_context=ctx) as ex:
        got = list(ex.map(fn, jobs, chunksize=1))
    assert len(got) == len(jobs)
    return time.perf_counter() - t0


def run_tpe(fn: Callable[[Any], Any], jobs: list[Any], n: int) -> float:
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as ex:
        got = list(ex.map(fn, jobs))
    assert len(got) == len(jobs)
    return time.perf_counter() - t0


def best(f: Callable[[], float], repeat: int) -> float:
    return min(f() for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer jobs, one repeat")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    repeat = 1 if args.quick else 2
    cores = len(os.sched_getaffinity(0))
    scale = 1 if args.quick else 2

    # Calibrate the CPU job to ~20 ms on this machine, so the work, not the start-up,
    # dominates whatever the machine's speed.
    t0 = time.perf_counter()
    spin(200_000)
    per_iter = (time.perf_counter() - t0) / 200_000
    k20 = max(10_000, int(0.020 / per_iter))

    cpu_jobs = [k20] * (24 * scale)
    io_jobs = [(0.020, k20 // 50)] * (40 * scale)  # ~20 ms asleep, ~0.4 ms computing
    mix_jobs = [(0.010, k20 // 2)] * (32 * scale)  # ~10 ms asleep, ~10 ms computing

    run_farm(cpu_job, [1000] * 4, 2, 2)  # warm the forkserver and the imports
    run_pool(cpu_job, [1000] * 4, 2)

    rows: dict[str, dict[str, float]] = {}

    def measure(workload: str, label: str, f: Callable[[], float]) -> float:
        t = best(f, repeat)
        rows.setdefault(workload, {})[label] = t
        print(f"  {label:<34} {t * 1000:8.1f} ms", flush=True)
        return t

    print(f"ferrocsp farm benchmark: {cores} cores, Python {platform.python_version()}")
    print(f"\n1. CPU-bound: {len(cpu_jobs)} jobs of ~20 ms pure Python")
    f1 = measure("cpu", "farm N=1 M=1", lambda: run_farm(cpu_job, cpu_jobs, 1, 1))
    f2 = measure("cpu", "farm N=2 M=1", lambda: run_farm(cpu_job, cpu_jobs, 2, 1))
    p1 = measure("cpu", "multiprocessing.Pool(1)", lambda: run_pool(cpu_job, cpu_jobs, 1))
    p2 = measure("cpu", "multiprocessing.Pool(2)", lambda: run_pool(cpu_job, cpu_jobs, 2))
    e1 = measure("cpu", "ProcessPoolExecutor(1)", lambda: run_ppe(cpu_job, cpu_jobs, 1))
    e2 = measure("cpu", "ProcessPoolExecutor(2)", lambda: run_ppe(cpu_job, cpu_jobs, 2))
    measure("cpu", "ThreadPoolExecutor(2)", lambda: run_tpe(cpu_job, cpu_jobs, 2))

    print(f"\n2. I/O-bound: {len(io_jobs)} jobs sleeping 20 ms (+ ~0.4 ms of arithmetic)")
    i1 = measure("io", "farm N=1 M=1", lambda: run_farm(io_job, io_jobs, 1, 1))
    i8 = measure("io", "farm N=1 M=8", lambda: run_farm(io_job, io_jobs, 1, 8))
    measure("io", "farm N=2 M=8", lambda: run_farm(io_job, io_jobs, 2, 8))
    measure("io", "multiprocessing.Pool(1)", lambda: run_pool(io_job, io_jobs, 1))
    measure("io", "multiprocessing.Pool(8)", lambda: run_pool(io_job, io_jobs, 8))
    measure("io", "ProcessPoolExecutor(8)", lambda: run_ppe(io_job, io_jobs, 8))
    measure("io", "ThreadPoolExecutor(8)", lambda: run_tpe(io_job, io_jobs, 8))

    print(f"\n3. Mixed: {len(mix_jobs)} jobs of ~10 ms asleep + ~10 ms of arithmetic")
    m1 = measure("mixed", "farm N=1 M=8", lambda: run_farm(io_job, mix_jobs, 1, 8))
    m2 = measure("mixed", "farm N=2 M=8", lambda: run_farm(io_job, mix_jobs, 2, 8))
    measure("mixed", "farm N=2 M=1", lambda: run_farm(io_job, mix_jobs, 2, 1))
    measure("mixed", "multiprocessing.Pool(2)", lambda: run_pool(io_job, mix_jobs, 2))
    measure("mixed", "multiprocessing.Pool(16)", lambda: run_pool(io_job, mix_jobs, 16))
    measure("mixed", "ProcessPoolExecutor(2)", lambda: run_ppe(io_job, mix_jobs, 2))
    measure("mixed", "ThreadPoolExecutor(16)", lambda: run_tpe(io_job, mix_jobs, 16))

    mixed = rows["mixed"]
    ratios = {
        "cpu: farm N=2 / N=1 speed-up": f1 / f2,
        "cpu: Pool(2) / Pool(1) speed-up": p1 / p2,
        "cpu: ProcessPoolExecutor(2) / (1) speed-up": e1 / e2,
        "cpu: farm N=2 vs Pool(2) (time ratio, <1 = farm faster)": f2 / p2,
        "io: farm M=8 / M=1 speed-up (N=1)": i1 / i8,
        "mixed: farm N=2 / N=1 speed-up (M=8)": m1 / m2,
        "mixed: farm N=2 M=8 vs Pool(2) (time ratio)": m2 / mixed["multiprocessing.Pool(2)"],
        "mixed: farm N=2 M=8 vs Pool(16) (time ratio)": m2 / mixed["multiprocessing.Pool(16)"],
    }
    print("\nratios (same run):")
    for k, v in ratios.items():
        print(f"  {k:<58} {v:6.2f}")
    if args.json:
        write_json(
            args.json,
            {
                "cores": cores,
                "python": platform.python_version(),
                "seconds": rows,
                "ratios": ratios,
                "quick": args.quick,
            },
        )


if __name__ == "__main__":
    main()
