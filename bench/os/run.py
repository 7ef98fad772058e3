"""The OS-process backend against multiprocessing and python-csp, in one run (ratios).

Three measurements, each against baselines measured in the same run:

1. commstime (the classic CSP ring: Prefix -> Delta -> Succ -> Prefix, Delta -> Consumer; four
   rendezvous communications per cycle), four OS processes: ferrocsp ``backend="os"``;
   the same network on ``multiprocessing.Pipe`` made rendezvous (each channel a data pipe and
   an acknowledgement pipe); python-csp 0.1's process backend (from ``bench/.venv-pythoncsp``
   if ``pip install python-csp==0.1`` worked there). Microseconds per communication.
2. payload throughput: a child process sends ``bytes`` of 1 MiB and 64 MiB to the parent;
   ferrocsp (rendezvous channel), ``multiprocessing.Pipe`` (send_bytes/recv_bytes),
   ``multiprocessing.Queue``; the ceiling is an in-process copy into a new ``bytes``
   (``bytes(memoryview(data))``: what "the reader owns a copy" costs at best). GB/s.
3. a CPU-bound farm (Monte-Carlo pi in pure Python) on 1 and 2 worker OS processes: speed-up.

Usage: ``python bench/os/run.py [--cycles N] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import ferrocsp as csp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYTHONCSP = ROOT / "bench" / ".venv-pythoncsp" / "bin" / "python"

# -- commstime on ferrocsp ------------------------------------------------------------------


@csp.process(backend="os")
def prefix(cin: csp.Reader, cout: csp.Writer, n: int) -> None:
    cout.write(0)
    for _ in range(n):
        cout.write(cin.read())


@csp.process(backend="os")
def delta(cin: csp.Reader, out1: csp.Writer, out2: csp.Writer, n: int) -> None:
    for _ in range(n + 1):
        v = cin.read()
        out1.write(v)
        out2.write(v)


@csp.process(backend="os")
def succ(cin: csp.Reader, cout: csp.Writer, n: int) -> None:
    for _ in range(n + 1):
        v = cin.read()
        if _ < n:
            cout.write(v + 1)


@csp.process(backend="os")
def consumer(cin: csp.Reader, n: int) -> float:
    cin.read()
    t = time.perf_counter()
    for _ in range(n):
        cin.read()
    return time.perf_counter() - t


def commstime_ferrocsp(cycles: int) -> float:
    a, b, c, d = (csp.Channel() for _ in range(4))
    res = csp.Par(
        prefix(d.reader(), a.writer(), cycles),
        delta(a.reader(), b.writer(), c.writer(), cycles),
        succ(c.reader(), d.writer(), cycles),
        consumer(b.reader(), cycles),
    ).run()
    return float(res[3]) / (4 * cycles) * 1e6


def commstime_threads(cycles: int, shared: bool) -> float:
    from ferrocsp import _shm

    a, b, c, d = (csp.Channel() for _ in range(4))
    if shared:
        for ch in (a, b, c, d):
            _shm.share(ch)
    fns = [
        csp.Process(prefix.__wrapped__, (d.reader(), a.writer(), cycles)),
        csp.Process(delta.__wrapped__, (a.reader(), b.writer(), c.writer(), cycles)),
        csp.Process(succ.__wrapped__, (c.reader(), d.writer(), cycles)),
        csp.Process(consumer.__wrapped__, (b.reader(), cycles)),
    ]
    res = csp.Par(*fns, backend="thread").run()
    return float(res[3]) / (4 * cycles) * 1e6


# -- commstime on multiprocessing.Pipe (rendezvous: data + ack) -----------------------------


class PipeChan:
    """A rendezvous channel for one writer and one reader: the writer waits for the ack."""

    def __init__(self, ctx: Any) -> None:
        self.r, self.w = ctx.Pipe(duplex=False)
        self.ar, self.aw = ctx.Pipe(duplex=False)

    def write(self, v: Any) -> None:
        self.w.send(v)
        self.ar.recv()

    def read(self) -> Any:
        v = self.r.recv()
        self.aw.send(None)
        return v


def _p_prefix(cin: PipeChan, cout: PipeChan, n: int) -> None:
    cout.write(0)
    for _ in range(n):
        cout.write(cin.read())


def _p_delta(cin: PipeChan, o1: PipeChan, o2: PipeChan, n: int) -> None:
    for _ in range(n + 1):
        v = cin.read()
        o1.write(v)
        o2.write(v)


def _p_succ(cin: PipeChan, cout: PipeChan, n: int) -> None:
    for i in range(n + 1):
        v = cin.read()
        if i < n:
            cout.write(v + 1)


def _p_consumer(cin: PipeChan, n: int, out: Any) -> None:
    cin.read()
    t = time.perf_counter()
    for _ in range(n):
        cin.read()
    out.send(time.perf_counter() - t)


def commstime_pipe(cycles: int) -> float:
    ctx = mp.get_context("fork")
    a, b, c, d = (PipeChan(ctx) for _ in range(4))
    res_r, res_w = ctx.Pipe(duplex=False)
    procs = [
        ctx.Process(target=_p_prefix, args=(d, a, cycles)),
        ctx.Process(target=_p_delta, args=(a, b, c, cycles)),
        ctx.Process(target=_p_succ, args=(c, d, cycles)),
        ctx.Process(target=_p_consumer, args=(b, cycles, res_w)),
    ]
    for p in procs:
        p.start()
    elapsed = res_r.recv()
    for p in procs:
        p.join()
    return float(elapsed) / (4 * cycles) * 1e6


PYTHONCSP_SCRIPT = r"""
import sys, time
from csp.os_process import Channel, Par, process
N = int(sys.argv[1])

@process
def prefix(cin, cout):
    cout.write(0)
    for _ in range(N):
        cout.write(cin.read())

@process
def delta(cin, o1, o2):
    for _ in range(N + 1):
        v = cin.read(); o1.write(v); o2.write(v)

@process
def succ(cin, cout):
    for i in range(N + 1):
        v = cin.read()
        if i < N:
            cout.write(v + 1)

@process
def consumer(cin):
    cin.read()
    t = time.perf_counter()
    for _ in range(N):
        cin.read()
    print("RESULT", (time.perf_counter() - t) / (4 * N) * 1e6, flush=True)

a, b, c, d = Channel(), Channel(), Channel(), Channel()
Par(prefix(d, a), delta(a, b, c), succ(c, d), consumer(b)).start()
"""


def commstime_pythoncsp(cycles: int) -> tuple[float | None, str]:
    if not PYTHONCSP.exists():
        return None, "bench/.venv-pythoncsp missing (pip install python-csp==0.1 failed)"
    try:
        out = subprocess.run(
            [str(PYTHONCSP), "-c", PYTHONCSP_SCRIPT, str(cycles)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return None, "python-csp did not finish within 300 s"
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return float(line.split()[1]), ""
    tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
    return None, f"python-csp failed: {tail[0][:200]}"


# -- payload throughput ---------------------------------------------------------------------


@csp.process(backend="os")
def send_payloads(out: csp.Writer, size: int, count: int) -> None:
    data = os.urandom(size)
    for _ in range(count):
        out.write(data)


def _pipe_sender(conn: Any, size: int, count: int) -> None:
    data = os.urandom(size)
    for _ in range(count):
        conn.send_bytes(data)


def _queue_sender(q: Any, size: int, count: int) -> None:
    data = os.urandom(size)
    for _ in range(count):
        q.put(data)


def gbps(size: int, count: int, seconds: float) -> float:
    return size * count / seconds / 1e9


def throughput_ferrocsp(size: int, count: int) -> float:
    ch = csp.Channel()
    h = csp.Par(send_payloads(ch.writer(), size, count)).start()
    ch.read()  # the first one is the warm-up (segment pages, child start)
    t = time.perf_counter()
    for _ in range(count - 1):
        v = ch.read()
    dt = time.perf_counter() - t
    assert len(v) == size
    h.join()
    return gbps(size, count - 1, dt)


def throughput_pipe(size: int, count: int) -> float:
    ctx = mp.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_pipe_sender, args=(w, size, count))
    p.start()
    r.recv_bytes()
    t = time.perf_counter()
    for _ in range(count - 1):
        v = r.recv_bytes()
    dt = time.perf_counter() - t
    assert len(v) == size
    p.join()
    return gbps(size, count - 1, dt)


def throughput_queue(size: int, count: int) -> float:
    ctx = mp.get_context("fork")
    q = ctx.Queue(maxsize=2)
    p = ctx.Process(target=_queue_sender, args=(q, size, count))
    p.start()
    q.get()
    t = time.perf_counter()
    for _ in range(count - 1):
        v = q.get()
    dt = time.perf_counter() - t
    assert len(v) == size
    p.join()
    return gbps(size, count - 1, dt)


def throughput_memcpy(size: int, count: int) -> float:
    data = os.urandom(size)
    bytes(memoryview(data))
    t = time.perf_counter()
    for _ in range(count - 1):
        v = bytes(memoryview(data))
    dt = time.perf_counter() - t
    assert len(v) == size
    return gbps(size, count - 1, dt)


# -- CPU-bound farm ---------------------------------------------------------------------------


@csp.process(backend="os")
def pi_worker(samples: int, seed: int) -> int:
    rnd = random.Random(seed)
    hits = 0
    for _ in range(samples):
        x, y = rnd.random(), rnd.random()
        if x * x + y * y <= 1.0:
            hits += 1
    return hits


def farm(workers: int, samples: int) -> tuple[float, float]:
    t = time.perf_counter()
    hits = csp.Par(*(pi_worker(samples // workers, i) for i in range(workers))).run()
    dt = time.perf_counter() - t
    return dt, 4.0 * sum(hits) / (samples // workers * workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="fewer cycles and messages")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cycles = 2_000 if args.quick else args.cycles
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "start_method": os.environ.get("FERROCSP_START_METHOD", "forkserver"),
    }
    print(f"# ferrocsp OS-process backend, Python {results['python']}, {results['cpus']} CPUs")

    # Warm the forkserver up so that process start-up is not in any timing.
    csp.Par(pi_worker(1, 0)).run()

    ct_f = statistics.median(commstime_ferrocsp(cycles) for _ in range(3))
    ct_t = statistics.median(commstime_threads(cycles, False) for _ in range(3))
    ct_ts = statistics.median(commstime_threads(cycles, True) for _ in range(3))
    ct_p = statistics.median(commstime_pipe(cycles) for _ in range(3))
    ct_c, note = commstime_pythoncsp(min(cycles, 5_000))
    results["commstime_us"] = {
        "ferrocsp_os": ct_f,
        "mp_pipe": ct_p,
        "python_csp": ct_c,
        "threads_in_process": ct_t,
        "threads_shared": ct_ts,
    }
    print(f"\n## commstime, 4 OS processes, {cycles} cycles, us per communication")
    print("| implementation | us/comm | ferrocsp / it |")
    print("|---|---:|---:|")
    print(f"| ferrocsp backend='os' | {ct_f:.2f} | 1.00 |")
    print(f"| multiprocessing.Pipe rendezvous | {ct_p:.2f} | {ct_f / ct_p:.2f} |")
    if ct_c is None:
        print(f"| python-csp 0.1 processes | n/a | n/a ({note}) |")
    else:
        print(f"| python-csp 0.1 processes | {ct_c:.2f} | {ct_f / ct_c:.2f} |")
    print("\n## where a channel is born: commstime on 4 threads of one interpreter, us/comm")
    print("| channels | us/comm | ratio |")
    print("|---|---:|---:|")
    print(f"| in-process (born in process memory) | {ct_t:.2f} | 1.00 |")
    print(f"| moved to shared memory (pickled values) | {ct_ts:.2f} | {ct_ts / ct_t:.2f} |")

    print("\n## payload throughput, child -> parent, GB/s (the reader owns a new bytes)")
    print("| size | memcpy ceiling | ferrocsp | mp.Pipe | mp.Queue | ferrocsp/memcpy | "
          "ferrocsp/Pipe | ferrocsp/Queue |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    results["throughput_gbps"] = {}
    for size, count in ((1 << 20, 200 if not args.quick else 40), (64 << 20, 12)):
        row = {
            "memcpy": throughput_memcpy(size, count),
            "ferrocsp": throughput_ferrocsp(size, count),
            "mp_pipe": throughput_pipe(size, count),
            "mp_queue": throughput_queue(size, count),
        }
        results["throughput_gbps"][str(size)] = row
        f = row["ferrocsp"]
        print(
            f"| {size >> 20} MiB | {row['memcpy']:.2f} | {f:.2f} | {row['mp_pipe']:.2f} | "
            f"{row['mp_queue']:.2f} | {f / row['memcpy']:.2f} | {f / row['mp_pipe']:.2f} | "
            f"{f / row['mp_queue']:.2f} |"
        )

    samples = 400_000 if args.quick else 4_000_000
    t1, pi1 = farm(1, samples)
    t2, pi2 = farm(2, samples)
    results["farm"] = {"t1": t1, "t2": t2, "speedup": t1 / t2, "pi": [pi1, pi2]}
    print(f"\n## CPU-bound farm (Monte-Carlo pi, {samples} samples, pure Python)")
    print("| workers | seconds | speed-up |")
    print("|---:|---:|---:|")
    print(f"| 1 | {t1:.2f} | 1.00 |")
    print(f"| 2 | {t2:.2f} | {t1 / t2:.2f} |")
    print(f"\n(load average at the end: {os.getloadavg()[0]:.2f}; pi ~ {pi2:.4f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
