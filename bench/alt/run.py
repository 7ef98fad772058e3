"""The cost of choice: Alt against a plain read, from Python and in Rust, in one run.

Workloads, one consumer timed over ``n`` operations (after an untimed warm-up), the median of
``runs`` runs (Python runs are interleaved across workloads, and min/max printed: thread
wake-up latency on a shared machine is bimodal, and ratios need like conditions). Every
writer is blocked writing to a rendezvous channel (an *always-ready* writer) until the
consumer poisons its channel. On the thread backend the consumer is the main thread and the
writers OS threads; on the greenlet, asyncio and coroutine backends the consumer and its
writers are processes of one ``Par`` of that backend (one scheduler, one event loop; the
coroutine rows run the asyncio rows' ``async def`` processes on the native scheduler):

- ``select`` / ``pri`` / ``fair``: an Alt over two channels with an always-ready writer each
  (``Alt.select()`` / ``Alt.pri_select()`` / ``Alt.fair_select()``, ``aselect`` etc. on
  asyncio; in Rust ``Select`` with ``Policy::Random`` / ``Policy::Fair``): microseconds per
  selection;
- ``read``: a plain ``read()`` from one channel with one always-ready writer (the baseline);
- ``read2``: a plain ``read()`` from one channel with *two* always-ready writers: the same
  number of threads as ``select``, so ``select``/``read2`` isolates the cost of the Alt from
  the cost of one more thread competing for the CPUs (and, in Python, for the GIL);
- ``mux8``: Go's select-heavy shape, a multiplexer: 8 producers, each on its own rendezvous
  channel, one consumer ``fair_select``-ing over the 8: microseconds per message.

Python runs here, with ``ferrocsp`` as installed in this interpreter; Rust runs as
``cargo bench -p ferrocsp --bench alt`` (crates/ferrocsp/benches/alt.rs), whose lines
``alt impl=engine-select-random us_per_op=1.23 ...`` this script parses. Python lines are
``alt impl=python-WORKLOAD`` for threads and ``alt impl=python-BACKEND-WORKLOAD`` for the
others. The tables give each backend's selection/plain-read ratios (target: at most 1.5x)
and the Rust/Python ratio, by wall clock and by the CPU time of the process (steadier on a
loaded machine, where waiting for a CPU inflates wall-clock times unevenly).

Usage: ``python bench/alt/run.py [--n N] [--runs K] [--rust-n N] [--no-rust]
[--backends thread,greenlet,asyncio,coroutine]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ferrocsp as csp

ROOT = Path(__file__).resolve().parents[2]
TARGET_RATIO = 1.5
WORKLOADS = ("select", "pri", "fair", "read", "read2", "mux8")
BACKENDS = ("thread", "greenlet", "asyncio", "coroutine")
RUST_NAMES = {
    "engine-select-random": "select",
    "engine-select-fair": "fair",
    "engine-read": "read",
    "engine-read2": "read2",
    "engine-mux8-fair": "mux8",
}


# --- Python -------------------------------------------------------------------------------

#: One run's cost per operation: (wall-clock µs, CPU µs of the whole process).
Cost = tuple[float, float]


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _per_op(start: tuple[float, float], n: int) -> Cost:
    """µs per op since ``start``: wall clock, and CPU time of the process (every thread). On
    a loaded machine the CPU time is the steadier one: a process that waits for a CPU is not
    charged for it (on greenlet and asyncio, one thread does all the work)."""
    wall, cpu = _now()
    return (wall - start[0]) * 1e6 / n, (cpu - start[1]) * 1e6 / n


def _writer(ch: csp.Channel, value: int) -> None:
    try:
        while True:
            ch.write(value)
    except csp.ChannelPoisoned:
        pass


def _with_writers(
    k: int, consume: Callable[[list[csp.Channel], int], None], n: int, *, shared: bool = False
) -> Cost:
    """Starts ``k`` always-ready writers (on ``k`` channels, or all on one if ``shared``),
    times ``consume(chans, n)``; returns µs per op."""
    chans = [csp.Channel(name=f"w{i}") for i in range(1 if shared else k)]
    threads = [
        threading.Thread(target=_writer, args=(chans[0 if shared else i], i), daemon=True)
        for i in range(k)
    ]
    for t in threads:
        t.start()
    try:
        start = _now()
        consume(chans, n)
        cost = _per_op(start, n)
    finally:
        for ch in chans:
            ch.poison()
        for t in threads:
            t.join(30)
    if any(t.is_alive() for t in threads):
        raise RuntimeError("a writer thread did not stop after poison")
    return cost


def _select(chans: list[csp.Channel], n: int) -> None:
    alt = csp.Alt(*chans)
    for _ in range(n):
        alt.select()


def _pri(chans: list[csp.Channel], n: int) -> None:
    alt = csp.Alt(*chans)
    for _ in range(n):
        alt.pri_select()


def _fair(chans: list[csp.Channel], n: int) -> None:
    alt = csp.Alt(*chans)
    counts = [0] * len(chans)
    for _ in range(n):
        counts[alt.fair_select()[1]] += 1
    if min(counts) == 0:
        raise RuntimeError(f"fair_select starved a writer: {counts}")


def _read(chans: list[csp.Channel], n: int) -> None:
    read = chans[0].read
    for _ in range(n):
        read()


THREAD: dict[str, Callable[[int], Cost]] = {
    "select": lambda n: _with_writers(2, _select, n),
    "pri": lambda n: _with_writers(2, _pri, n),
    "fair": lambda n: _with_writers(2, _fair, n),
    "read": lambda n: _with_writers(1, _read, n),
    "read2": lambda n: _with_writers(2, _read, n, shared=True),
    "mux8": lambda n: _with_writers(8, _fair, n),
}

# --- greenlet and asyncio: the consumer and its writers in one Par of the backend ----------

#: Per workload: (writers, all on one channel?, what the consumer does per operation).
SHAPES: dict[str, tuple[int, bool, str]] = {
    "select": (2, False, "select"),
    "pri": (2, False, "pri_select"),
    "fair": (2, False, "fair_select"),
    "read": (1, False, "read"),
    "read2": (2, True, "read"),
    "mux8": (8, False, "fair_select"),
}


def _g_writer(ch: csp.Channel, value: int) -> None:
    try:
        while True:
            ch.write(value)
    except csp.ChannelPoisoned:
        pass


def _g_consumer(chans: list[csp.Channel], how: str, n: int) -> Cost:
    """Times ``n`` operations; returns µs per op, then poisons the writers' channels."""
    try:
        if how == "read":
            read = chans[0].read
            start = _now()
            for _ in range(n):
                read()
        else:
            choose = getattr(csp.Alt(*chans), how)
            start = _now()
            for _ in range(n):
                choose()
        return _per_op(start, n)
    finally:
        for ch in chans:
            ch.poison()


async def _a_writer(ch: csp.Channel, value: int) -> None:
    try:
        while True:
            await ch.awrite(value)
    except csp.ChannelPoisoned:
        pass


async def _a_consumer(chans: list[csp.Channel], how: str, n: int) -> Cost:
    """``_g_consumer`` with awaits."""
    try:
        if how == "read":
            aread = chans[0].aread
            start = _now()
            for _ in range(n):
                await aread()
        else:
            choose = getattr(csp.Alt(*chans), "a" + how)
            start = _now()
            for _ in range(n):
                await choose()
        return _per_op(start, n)
    finally:
        for ch in chans:
            ch.poison()


def _in_par(backend: str, workload: str, n: int) -> Cost:
    k, shared, how = SHAPES[workload]
    chans = [csp.Channel(name=f"w{i}") for i in range(1 if shared else k)]
    writer, consumer = (
        (_g_writer, _g_consumer) if backend == "greenlet" else (_a_writer, _a_consumer)
    )
    procs = [csp.process(writer)(chans[0 if shared else i], i) for i in range(k)]
    out = csp.Par(csp.process(consumer)(chans, how, n), *procs, backend=backend).run()
    cost = out[0]
    if not isinstance(cost, tuple):
        raise RuntimeError(f"{backend} {workload}: the consumer returned {cost!r}")
    return cost


def _python_workloads(backends: list[str]) -> dict[str, Callable[[int], Cost]]:
    """Each backend's workloads, keyed ``WORKLOAD`` (threads) or ``BACKEND-WORKLOAD``."""
    out: dict[str, Callable[[int], Cost]] = {}
    for b in backends:
        for w in WORKLOADS:
            if b == "thread":
                out[w] = THREAD[w]
            else:
                out[f"{b}-{w}"] = lambda n, b=b, w=w: _in_par(b, w, n)
    return out


def python_results(
    n: int, runs: int, backends: list[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Median µs per op of each workload, wall clock and CPU time. Runs are interleaved (one
    run of every workload per round) so that a change in machine load affects all workloads
    alike, not one of them."""
    workloads = _python_workloads(backends)
    for fn in workloads.values():
        fn(min(n, 500))  # warm-up
    samples: dict[str, list[Cost]] = {name: [] for name in workloads}
    for _ in range(runs):
        for name, fn in workloads.items():
            samples[name].append(fn(n))
    wall, cpu = {}, {}
    for name, xs in samples.items():
        walls, cpus = [x[0] for x in xs], [x[1] for x in xs]
        wall[name], cpu[name] = statistics.median(walls), statistics.median(cpus)
        print(
            f"alt impl=python-{name} us_per_op={wall[name]:.4f} n={n} runs={runs} "
            f"min={min(walls):.4f} max={max(walls):.4f} cpu_us_per_op={cpu[name]:.4f} "
            f"cpu_min={min(cpus):.4f} cpu_max={max(cpus):.4f}",
            flush=True,
        )
    return wall, cpu


# --- Rust ---------------------------------------------------------------------------------

LINE = re.compile(r"^alt impl=(?P<impl>\S+) us_per_op=(?P<us>[0-9.]+)")


def parse_rust(text: str) -> dict[str, float]:
    """Reads ``alt impl=NAME us_per_op=X`` lines; returns {impl: µs}."""
    out = {}
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            out[m["impl"]] = float(m["us"])
    return out


def rust_results(n: int, runs: int) -> dict[str, float]:
    cmd = ["cargo", "bench", "-p", "ferrocsp", "--bench", "alt", "--"]
    cmd += ["--n", str(n), "--runs", str(runs)]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"cargo bench failed with exit status {proc.returncode}")
    parsed = parse_rust(proc.stdout)
    for line in proc.stdout.splitlines():
        if line.startswith("alt "):
            print(line, flush=True)
    return parsed


# --- report -------------------------------------------------------------------------------


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:.3f}{unit}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def by_backend(python: dict[str, float]) -> dict[str, dict[str, float]]:
    """Python results ({"select": .., "greenlet-select": ..}) as {backend: {workload: µs}}."""
    out: dict[str, dict[str, float]] = {}
    for key, us in python.items():
        backend, _, workload = key.rpartition("-")
        out.setdefault(backend or "thread", {})[workload] = us
    return out


RATIOS = (("select", "read"), ("pri", "read"), ("fair", "read"), ("select", "read2"))


def table(python: dict[str, float], rust: dict[str, float]) -> str:
    engine = {RUST_NAMES[k]: v for k, v in rust.items() if k in RUST_NAMES}
    cross = {k.removeprefix("crossbeam-"): v for k, v in rust.items() if k.startswith("crossbeam")}
    head = [
        "backend",
        *(f"{w} µs" if w != "mux8" else "mux8 µs/msg" for w in WORKLOADS),
        *(f"{a}/{b}" for a, b in RATIOS),
    ]
    per = by_backend(python)
    labelled = [(f"python ({b})", per[b]) for b in BACKENDS if b in per]
    labelled.append(("rust engine (threads)", engine))
    rows: list[list[str]] = []
    for label, r in labelled:
        if r:
            rows.append(
                [
                    label,
                    *(_fmt(r.get(w)) for w in WORKLOADS),
                    *(_fmt(_ratio(r.get(a), r.get(b)), "x") for a, b in RATIOS),
                ]
            )
    threads = per.get("thread", {})
    if threads and engine:
        rp = (_ratio(engine.get(w), threads.get(w)) for w in WORKLOADS)
        rows.append(["rust/python (threads)", *(_fmt(x, "x") for x in rp), *[""] * len(RATIOS)])
    if cross:
        sel, read = cross.get("select"), cross.get("recv")
        cells = {"select": sel, "read": read, "mux8": cross.get("mux8")}
        rows.append(
            [
                "crossbeam (reference)",
                *(_fmt(cells.get(w)) for w in WORKLOADS),
                _fmt(_ratio(sel, read), "x"),
                *["-"] * (len(RATIOS) - 1),
            ]
        )
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return " | ".join(padded)

    out = [line(head), "-+-".join("-" * w for w in widths), *(line(r) for r in rows), ""]
    for label, r in [*((f"python {b}", per[b]) for b in BACKENDS if b in per), ("rust", engine)]:
        for w in ("select", "pri", "fair"):
            ratio = _ratio(r.get(w), r.get("read"))
            if ratio is not None:
                ok = "ok" if ratio <= TARGET_RATIO else "OVER TARGET"
                out.append(f"{label} {w}/read = {ratio:.2f}x ({ok}, target <= {TARGET_RATIO}x)")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per Python run")
    parser.add_argument("--runs", type=int, default=5, help="runs per workload (median)")
    parser.add_argument(
        "--rust-n", type=int, default=None, help="operations per Rust run (default: 10 * n)"
    )
    parser.add_argument("--no-rust", action="store_true", help="skip the cargo bench")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated Python backends to run (default: {','.join(BACKENDS)})",
    )
    args = parser.parse_args()
    if args.n < 1 or args.runs < 1:
        parser.error("--n and --runs must be at least 1")
    backends = [b for b in args.backends.split(",") if b]
    if not backends or any(b not in BACKENDS for b in backends):
        parser.error(f"--backends takes a comma-separated subset of {','.join(BACKENDS)}")
    rust_n = args.rust_n if args.rust_n is not None else 10 * args.n

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, {platform.system()} "
        f"{platform.release()}; python {platform.python_version()}; ferrocsp {csp.__version__}"
    )
    python, cpu = python_results(args.n, args.runs, backends)
    rust = {} if args.no_rust else rust_results(rust_n, args.runs)
    print("\nWall clock, µs per operation (median):")
    print(table(python, rust))
    print("\nCPU time of the process, µs per operation (median):")
    print(table(cpu, {}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
