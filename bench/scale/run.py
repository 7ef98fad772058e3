"""Scale: memory per blocked process and time per spawn, per backend, in one run.

Each row starts ``n`` processes in one ``Par(...).start()``; every process blocks at once
reading one shared rendezvous channel. The row's clock runs from building the ``Par`` until
the channel reports all ``n`` readers waiting (so it covers making, starting and blocking each
process), and its memory is the growth of the resident set (RSS) over the same interval,
divided by ``n``. Then the channel is poisoned and the network joined (not timed).

Rows:

- greenlet, thread, asyncio, coroutine: ferrocsp's backends (thread rows use fewer processes:
  each is an OS thread);
- ``floor: raw coroutines``: the same number of bare coroutine objects, no library, each
  suspended in one ``await`` of an object that yields once: a coroutine's own frame and
  object, what any ``async def`` process costs on this Python; the coroutine row minus this
  floor is what ferrocsp adds per process (its task, selection, operation, process record);
- ``floor: raw greenlets``: the same number of bare greenlets, no library, each blocked by a
  switch to its parent from inside three nested Python calls (the depth of a ferrocsp process
  body: host, ``execute``, the user function). Its RSS per greenlet is what any greenlet
  process costs on this Python (the greenlet object, its Python frames and their data-stack
  page, its saved C stack); the greenlet row minus this floor is what ferrocsp adds.

Each row runs in a fresh interpreter (this script with ``--row``), so no row inherits memory
that an earlier one freed (which would make its growth look smaller).

Usage: ``python bench/scale/run.py [--greenlets N] [--threads N] [--asyncio N] [--json PATH]``
(defaults 10^6, 10^3, 10^5). Needs about 10 GB of free memory at the default size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/_common.py
from _common import reexec_in_venv, write_json

ROOT = Path(__file__).resolve().parents[2]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@dataclass
class Row:
    key: str
    label: str
    n: int
    us_per_spawn: float
    bytes_per_blocked: float


def _wait_blocked(ch: Any, n: int, timeout: float) -> None:
    """Polls (a benchmark may sleep) until ``n`` readers wait on ``ch``."""
    deadline = time.monotonic() + timeout
    while ch.stats().readers_waiting < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ch.stats().readers_waiting} of {n} processes blocked")
        time.sleep(0.1)  # stats() counts the waiting readers under the channel lock


def measure_ferrocsp(backend: str, n: int) -> tuple[float, float]:
    """(us per spawn, bytes per blocked process) for ``n`` processes of ``backend``."""
    import ferrocsp

    gate = ferrocsp.Channel(name="gate")
    if backend in ("asyncio", "coroutine"):

        async def await_gate() -> None:
            await gate.aread()

        body: Callable[[], Any] = ferrocsp.process(await_gate, backend=backend)
    else:

        def read_gate() -> None:
            gate.read()

        body = ferrocsp.process(read_gate, backend=backend)
    gc.collect()
    gc.disable()  # a collection in the middle would only add noise to both numbers
    try:
        base, t0 = rss(), time.perf_counter()
        handle = ferrocsp.Par(*(body() for _ in range(n))).start()
        _wait_blocked(gate, n, 60 + n * 1e-3)
        elapsed, grown = time.perf_counter() - t0, rss() - base
    finally:
        gc.enable()
    gate.poison()
    handle.join(timeout=60 + n * 1e-3)
    return elapsed * 1e6 / n, grown / n


def measure_raw_greenlets(n: int) -> tuple[float, float]:
    """The floor: ``n`` bare greenlets, each blocked three Python calls deep."""
    from greenlet import getcurrent, greenlet

    hub = getcurrent()

    def block() -> None:
        hub.switch()

    def execute() -> None:
        block()

    def host() -> None:
        execute()

    gc.collect()
    gc.disable()
    try:
        base, t0 = rss(), time.perf_counter()
        gs = [greenlet(host, parent=hub) for _ in range(n)]
        for g in gs:
            g.switch()
        elapsed, grown = time.perf_counter() - t0, rss() - base
    finally:
        gc.enable()
    for g in gs:
        g.switch()  # returns from block(); the greenlet ends
    if not all(g.dead for g in gs):
        raise RuntimeError("raw greenlets did not finish")
    return elapsed * 1e6 / n, grown / n


class _Suspend:
    """Awaiting it suspends a bare coroutine once (what a blocked process's await does)."""

    def __await__(self) -> Any:
        yield


def measure_raw_coroutines(n: int) -> tuple[float, float]:
    """The floor: ``n`` bare coroutines, each suspended in one await."""

    async def blocked() -> None:
        await _Suspend()

    gc.collect()
    gc.disable()
    try:
        base, t0 = rss(), time.perf_counter()
        coros = [blocked() for _ in range(n)]
        for c in coros:
            c.send(None)
        elapsed, grown = time.perf_counter() - t0, rss() - base
    finally:
        gc.enable()
    for c in coros:
        try:
            c.send(None)
        except StopIteration:
            pass
        else:
            raise RuntimeError("a raw coroutine did not finish")
    return elapsed * 1e6 / n, grown / n


ROWS: dict[str, Callable[[int], tuple[float, float]]] = {
    "floor-greenlet": measure_raw_greenlets,
    "floor-coroutine": measure_raw_coroutines,
    "coroutine": lambda n: measure_ferrocsp("coroutine", n),
    "greenlet": lambda n: measure_ferrocsp("greenlet", n),
    "asyncio": lambda n: measure_ferrocsp("asyncio", n),
    "thread": lambda n: measure_ferrocsp("thread", n),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--greenlets", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1_000)
    parser.add_argument("--asyncio", type=int, default=100_000)
    parser.add_argument("--coroutines", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row, print JSON
    parser.add_argument("-n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.greenlets, args.threads, args.asyncio, args.coroutines) < 1:
        parser.error("process counts must be at least 1")
    if args.row:
        us, per = ROWS[args.row](args.n)
        print(json.dumps({"us_per_spawn": us, "bytes_per_blocked": per}))
        return

    rows: list[Row] = []
    plan = [
        ("floor-greenlet", "floor: raw greenlets (no library)", args.greenlets),
        ("greenlet", "ferrocsp greenlet backend", args.greenlets),
        ("asyncio", "ferrocsp asyncio backend", args.asyncio),
        ("floor-coroutine", "floor: raw coroutines (no library)", args.coroutines),
        ("coroutine", "ferrocsp coroutine backend", args.coroutines),
        ("thread", "ferrocsp thread backend", args.threads),
    ]
    for key, label, n in plan:
        print(f"[scale] {label}, n={n}", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--row", key, "-n", str(n)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        data = json.loads(out.strip().splitlines()[-1])
        rows.append(Row(key, label, n, data["us_per_spawn"], data["bytes_per_blocked"]))

    print()
    print("processes blocked on one channel read; RSS growth / n and wall time / n, one run")
    print(f"{'backend':<36} {'n':>9} {'us/spawn':>9} {'bytes/blocked':>14}")
    for r in rows:
        print(f"{r.label:<36} {r.n:>9} {r.us_per_spawn:>9.2f} {r.bytes_per_blocked:>14.0f}")
    by = {r.key: r for r in rows}
    beyond = by["greenlet"].bytes_per_blocked - by["floor-greenlet"].bytes_per_blocked
    print()
    print(f"greenlet backend beyond a raw greenlet (its Python frames): {beyond:.0f} bytes")
    cbeyond = by["coroutine"].bytes_per_blocked - by["floor-coroutine"].bytes_per_blocked
    print(f"coroutine backend beyond a raw coroutine (its own frame): {cbeyond:.0f} bytes")
    if args.json:
        doc = {
            "benchmark": "scale",
            "rows": [asdict(r) for r in rows],
            "greenlet_bytes_beyond_raw_greenlet": beyond,
            "coroutine_bytes_beyond_raw_coroutine": cbeyond,
        }
        write_json(args.json, doc)


if __name__ == "__main__":
    reexec_in_venv(__file__)
    main()
