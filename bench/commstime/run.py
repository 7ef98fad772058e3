"""Commstime: ferrocsp against the field, in one run.

The classic CSP benchmark (occam, JCSP, PyCSP): a ring of four processes on rendezvous
channels, Delta with sequential outputs::

    Prefix(0) --a--> Delta --b--> Consumer
       ^               |
       d               c
       +---- Succ <----+

Each cycle is four communications (a, b, c, d). The consumer times ``cycles`` values after the
first one arrives; the result is microseconds per communication, the median of ``runs`` runs
(after one short untimed warm-up run). Every process does a fixed number of communications, so
each run's network ends by itself and its threads are joined before the next run.

Measured here, one process per OS thread everywhere:

- rust:   crates/ferrocsp/benches/commstime.rs (``cargo bench -p ferrocsp --bench commstime``):
          the ferrocsp engine, crossbeam-channel ``bounded(0)``, std ``sync_channel(0)``;
- python: ``ferrocsp.Channel()``; a pure-Python rendezvous channel (two locks used as binary
          semaphores; correct for one reader and one writer); ``queue.Queue(maxsize=1)`` (a
          buffer of one, so *not* a rendezvous: a writer does not wait for its reader);
          PyCSP 0.9.2 (``pycsp.parallel``), run from ``bench/.venv-pycsp`` (bench/setup-peers.sh).

On one greenlet scheduler (four greenlets, one thread):

- greenlet: ferrocsp's greenlet backend (four plain-function processes in a
            ``Par(..., backend="greenlet")``, channels used through ``read``/``write``);
            PyCSP 0.9.2 ``pycsp.greenlets`` (needs greenlet in bench/.venv-pycsp); and the
            floor: a hand-written rendezvous on bare greenlets (a run queue and direct
            ``switch`` calls, no library; correct for one reader and one writer), i.e. what
            greenlet switching plus the least Python any channel needs costs here.

And on one asyncio event loop (four coroutines, one thread):

- asyncio: ferrocsp's asyncio backend (four ``async def`` processes in a ``Par``, channels
           used through ``aread``/``awrite``); a hand-written rendezvous on asyncio futures
           (correct for one reader and one writer), the cheapest baseline asyncio offers.

On ferrocsp's native coroutine scheduler (four ``async def`` processes, one thread, no event
loop): the same processes as the asyncio row, in a ``Par(..., backend="coroutine")``.

And Go: goroutines on unbuffered channels (bench/commstime/go/commstime.go, built with
Debian's ``golang`` by ``go run``), with Go's default GOMAXPROCS (every core) and with
GOMAXPROCS=1 (one thread, like the cooperative rows).

Usage: ``python bench/commstime/run.py [--cycles N] [--runs K] [--json PATH]``
(or ``make bench``, which installs everything first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/_common.py
from _common import reexec_in_venv, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYCSP_PYTHON = ROOT / "bench" / ".venv-pycsp" / "bin" / "python"


class Chan(Protocol):
    def read(self) -> Any: ...
    def write(self, value: Any, /) -> None: ...


@dataclass
class Result:
    key: str
    label: str
    us_per_comm: float | None = None
    samples: list[float] = field(default_factory=list)
    cycles: int | None = None
    note: str = ""


# --- the network --------------------------------------------------------------------------


def commstime(make: Callable[[], Chan], cycles: int) -> float:
    """One commstime run on four threads; returns microseconds per communication."""
    a, b, c, d = make(), make(), make(), make()
    total = cycles + 1  # values the consumer reads: one untimed, then `cycles` timed
    elapsed: list[float] = []
    errors: list[BaseException] = []

    def prefix() -> None:
        a.write(0)
        for _ in range(total - 1):
            a.write(d.read())
        d.read()  # the last value is not sent on, so every process ends

    def delta() -> None:
        for _ in range(total):
            v = a.read()
            b.write(v)
            c.write(v)

    def succ() -> None:
        for _ in range(total):
            d.write(c.read() + 1)

    def consumer() -> None:
        first = b.read()
        start = time.perf_counter()
        last = first
        for _ in range(cycles):
            last = b.read()
        elapsed.append(time.perf_counter() - start)
        if last != first + cycles:
            raise RuntimeError(f"values lost or reordered: expected {first + cycles}, got {last}")

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 (re-raised by the main thread)
                errors.append(exc)

        return run

    threads = [
        threading.Thread(target=guarded(fn), name=fn.__name__, daemon=True)
        for fn in (prefix, delta, succ, consumer)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120 + cycles * 0.01
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads) or not elapsed:
        raise RuntimeError("commstime: the network did not finish (hung?)")
    return elapsed[0] * 1e6 / (4 * cycles)


def measure(make: Callable[[], Chan], cycles: int, runs: int) -> list[float]:
    commstime(make, min(cycles, 200))  # warm-up
    return [commstime(make, cycles) for _ in range(runs)]


def gcommstime(cycles: int) -> float:
    """One commstime run as four greenlet processes of one ferrocsp Par; us per comm."""
    import ferrocsp

    a, b, c, d = (ferrocsp.Channel() for _ in range(4))
    total = cycles + 1

    def prefix() -> None:
        a.write(0)
        for _ in range(total - 1):
            a.write(d.read())
        d.read()

    def delta() -> None:
        for _ in range(total):
            v = a.read()
            b.write(v)
            c.write(v)

    def succ() -> None:
        for _ in range(total):
            d.write(c.read() + 1)

    def consumer() -> float:
        first = b.read()
        start = time.perf_counter()
        last = first
        for _ in range(cycles):
            last = b.read()
        elapsed = time.perf_counter() - start
        if last != first + cycles:
            raise RuntimeError(f"values lost or reordered: expected {first + cycles}, got {last}")
        return elapsed

    net = ferrocsp.Par(prefix, delta, succ, consumer, backend="greenlet")
    elapsed = net.start().join(timeout=120 + cycles * 0.01)[3]
    assert elapsed is not None  # the consumer returns; the others end by poison
    return elapsed * 1e6 / (4 * cycles)


class GreenletFloor:
    """The floor: a rendezvous on bare greenlets for one reader and one writer, no library.

    One run queue of ``(greenlet, value)`` pairs shared by the channels of one network. The
    party arriving second hands over (a reader takes the value and makes the writer runnable;
    a writer gives its value to the waiting reader's queue entry) and carries on; the first
    one switches to the next runnable greenlet, or to the hub when there is none.
    """

    __slots__ = ("_current", "_hub", "_reader", "_ready", "_value", "_writer")

    def __init__(self, ready: Any, hub: Any) -> None:
        from greenlet import getcurrent

        self._ready, self._hub, self._current = ready, hub, getcurrent
        self._reader: Any = None
        self._writer: Any = None
        self._value: Any = None

    def _block(self) -> Any:
        if self._ready:
            g, v = self._ready.popleft()
            return g.switch(v)
        return self._hub.switch()

    def write(self, value: Any, /) -> None:
        r = self._reader
        if r is not None:
            self._reader = None
            self._ready.append((r, value))
            return
        self._value, self._writer = value, self._current()
        self._block()

    def read(self) -> Any:
        w = self._writer
        if w is not None:
            self._writer = None
            v, self._value = self._value, None
            self._ready.append((w, None))
            return v
        self._reader = self._current()
        return self._block()


def floor_commstime(cycles: int) -> float:
    """Commstime on ``GreenletFloor`` channels, four bare greenlets; us per comm."""
    from collections import deque

    from greenlet import getcurrent, greenlet

    hub = getcurrent()
    ready: deque[tuple[Any, Any]] = deque()
    a, b, c, d = (GreenletFloor(ready, hub) for _ in range(4))
    total = cycles + 1
    elapsed: list[float] = []

    def prefix() -> None:
        a.write(0)
        for _ in range(total - 1):
            a.write(d.read())
        d.read()

    def delta() -> None:
        for _ in range(total):
            v = a.read()
            b.write(v)
            c.write(v)

    def succ() -> None:
        for _ in range(total):
            d.write(c.read() + 1)

    def consumer() -> None:
        first = b.read()
        start = time.perf_counter()
        last = first
        for _ in range(cycles):
            last = b.read()
        elapsed.append(time.perf_counter() - start)
        if last != first + cycles:
            raise RuntimeError(f"values lost or reordered: expected {first + cycles}, got {last}")

    def starter(fn: Callable[[], None]) -> Callable[..., None]:
        return lambda *_: fn()  # a queued start is switched to with one (ignored) value

    gs = [greenlet(starter(fn), parent=hub) for fn in (prefix, delta, succ, consumer)]
    ready.extend((g, None) for g in gs)
    while ready:
        g, v = ready.popleft()
        g.switch(v)
    if not all(g.dead for g in gs) or not elapsed:
        raise RuntimeError("floor commstime: the network did not finish")
    return elapsed[0] * 1e6 / (4 * cycles)


def switch_floor(hand_offs: int) -> float:
    """Two bare greenlets handing a value to each other with ``switch(v)``: us per hand-off.

    No run queue, no channel, no choice of whom to run: the least any greenlet rendezvous can
    cost, since every blocking communication needs at least this one switch.
    """
    from greenlet import greenlet

    def echo(v: int) -> None:
        while True:
            v = main.switch(v + 1)

    def drive() -> int:
        v = 0
        for _ in range(hand_offs // 2):
            v = other.switch(v)
        return v

    main = greenlet(drive)
    other = greenlet(echo, parent=main)
    start = time.perf_counter()
    last = main.switch()
    elapsed = time.perf_counter() - start
    if last != hand_offs // 2:
        raise RuntimeError(f"switch floor: expected {hand_offs // 2}, got {last}")
    return elapsed * 1e6 / (2 * (hand_offs // 2))


class AChan(Protocol):
    async def aread(self) -> Any: ...
    async def awrite(self, value: Any, /) -> None: ...


async def acommstime(make: Callable[[], AChan], cycles: int) -> float:
    """One commstime run as four coroutines on the running loop; microseconds per comm."""
    a, b, c, d = make(), make(), make(), make()
    total = cycles + 1
    elapsed: list[float] = []

    async def prefix() -> None:
        await a.awrite(0)
        for _ in range(total - 1):
            await a.awrite(await d.aread())
        await d.aread()

    async def delta() -> None:
        for _ in range(total):
            v = await a.aread()
            await b.awrite(v)
            await c.awrite(v)

    async def succ() -> None:
        for _ in range(total):
            await d.awrite(await c.aread() + 1)

    async def consumer() -> None:
        first = await b.aread()
        start = time.perf_counter()
        last = first
        for _ in range(cycles):
            last = await b.aread()
        elapsed.append(time.perf_counter() - start)
        if last != first + cycles:
            raise RuntimeError(f"values lost or reordered: expected {first + cycles}, got {last}")

    procs = (prefix, delta, succ, consumer)
    if make is _CoroutineBackend:
        import ferrocsp

        ferrocsp.Par(*(ferrocsp.process(p)() for p in procs), backend="coroutine").run()
    elif make is AioRendezvous:
        await asyncio.wait_for(asyncio.gather(*(p() for p in procs)), 120 + cycles * 0.01)
    else:
        import ferrocsp

        # The ferrocsp asyncio backend: the four coroutines as async processes of one Par.
        net = ferrocsp.Par(*(ferrocsp.process(p)() for p in procs))
        await asyncio.wait_for(net.arun(), 120 + cycles * 0.01)
    return elapsed[0] * 1e6 / (4 * cycles)


class _CoroutineBackend:
    """Marks the coroutine-backend rows: ferrocsp channels, processes on the native scheduler."""

    def __new__(cls) -> Any:
        import ferrocsp

        return ferrocsp.Channel()


def cmeasure(cycles: int, runs: int) -> list[float]:
    """Commstime on the native coroutine backend (each run its own ``Par.run``)."""

    def one(n: int) -> float:
        coro = acommstime(_CoroutineBackend, n)
        try:
            coro.send(None)  # runs the whole Par inside (no await suspends)
        except StopIteration as stop:
            result: float = stop.value
            return result
        coro.close()
        raise RuntimeError("the coroutine-backend commstime suspended outside its scheduler")

    one(min(cycles, 200))  # warm-up
    return [one(cycles) for _ in range(runs)]


def ameasure(make: Callable[[], AChan], cycles: int, runs: int) -> list[float]:
    async def all_runs() -> list[float]:
        await acommstime(make, min(cycles, 200))  # warm-up
        return [await acommstime(make, cycles) for _ in range(runs)]

    return asyncio.run(all_runs())


# --- the channels -------------------------------------------------------------------------


class AioRendezvous:
    """A rendezvous channel on asyncio futures, for exactly one reader and one writer.

    Whoever arrives second completes the first one's future: a writer finding the reader
    waiting hands it the value; otherwise it parks the value and waits until it is taken.
    """

    def __init__(self) -> None:
        self._value: Any = None
        self._reader: asyncio.Future[Any] | None = None
        self._writer: asyncio.Future[None] | None = None

    async def awrite(self, value: Any, /) -> None:
        r = self._reader
        if r is not None:
            self._reader = None
            r.set_result(value)
            return
        self._value = value
        self._writer = asyncio.get_running_loop().create_future()
        await self._writer

    async def aread(self) -> Any:
        w = self._writer
        if w is not None:
            self._writer = None
            value, self._value = self._value, None
            w.set_result(None)
            return value
        self._reader = asyncio.get_running_loop().create_future()
        return await self._reader


class PyRendezvous:
    """A rendezvous channel in pure Python for exactly one reader and one writer.

    Two ``threading.Lock`` objects serve as binary semaphores (a Lock may be released by a
    thread other than its holder): ``_full`` is released when a value is in the slot,
    ``_taken`` when the reader has taken it. The writer waits on ``_taken`` before it returns,
    so it cannot overwrite the slot, and each lock alternates strictly between one release and
    one acquire. This is the cheapest correct design in pure Python (``threading.Semaphore``
    and ``Condition`` are built from these locks in Python code).
    """

    def __init__(self) -> None:
        self._value: Any = None
        self._full = threading.Lock()
        self._taken = threading.Lock()
        self._full.acquire()
        self._taken.acquire()

    def write(self, value: Any, /) -> None:
        self._value = value
        self._full.release()
        self._taken.acquire()

    def read(self) -> Any:
        self._full.acquire()
        value = self._value
        self._taken.release()
        return value


class QueueChan:
    """``queue.Queue(maxsize=1)``: a one-slot buffer, so a write does not wait for its reader."""

    def __init__(self) -> None:
        q: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.read = q.get
        self.write = q.put


# --- the runners --------------------------------------------------------------------------


def run_python(args: argparse.Namespace) -> list[Result]:
    out = []
    try:
        import ferrocsp

        version = _dist_version("ferrocsp")
        fc = Result("py-ferrocsp", f"python: ferrocsp {version} Channel(), threads")
        try:
            fc.samples = measure(ferrocsp.Channel, args.cycles, args.runs)
        except Exception as exc:  # noqa: BLE001 (reported in the table)
            fc.note = f"failed: {type(exc).__name__}: {exc}"
    except ImportError as exc:
        fc = Result("py-ferrocsp", "python: ferrocsp Channel(), threads")
        fc.note = f"ferrocsp not importable ({exc}); run scripts/setup.sh"
    out.append(fc)

    peers: list[tuple[str, str, Callable[[], Chan]]] = [
        ("py-pure", "python: pure-Python rendezvous (2 locks)", PyRendezvous),
        ("py-queue", "python: queue.Queue(maxsize=1) [buffered]", QueueChan),
    ]
    for key, label, make in peers:
        r = Result(key, label, samples=measure(make, args.cycles, args.runs))
        out.append(r)
    for r in out:
        if r.samples:
            r.cycles = args.cycles
    return out


def run_asyncio(args: argparse.Namespace) -> list[Result]:
    out = []
    fa = Result("py-asyncio-ferrocsp", "asyncio: ferrocsp asyncio backend, 4 coroutines")
    try:
        import ferrocsp

        fa.samples = ameasure(ferrocsp.Channel, args.cycles, args.runs)
    except Exception as exc:  # noqa: BLE001 (reported in the table)
        fa.note = f"failed: {type(exc).__name__}: {exc}"
    out.append(fa)
    base = Result("py-asyncio-futures", "asyncio: futures rendezvous (hand-written)")
    base.samples = ameasure(AioRendezvous, args.cycles, args.runs)
    out.append(base)
    for r in out:
        if r.samples:
            r.cycles = args.cycles
    return out


def run_coroutine(args: argparse.Namespace) -> list[Result]:
    fc = Result("py-coroutine-ferrocsp", "coroutine: ferrocsp coroutine backend, 4 coroutines")
    try:
        fc.samples = cmeasure(args.cycles, args.runs)
        fc.cycles = args.cycles
    except Exception as exc:  # noqa: BLE001 (reported in the table)
        fc.note = f"failed: {type(exc).__name__}: {exc}"
    return [fc]


def run_go(args: argparse.Namespace) -> list[Result]:
    out = []
    for key, procs, label in (
        ("go", None, "go: goroutines, unbuffered channels, GOMAXPROCS=all"),
        ("go-1", "1", "go: goroutines, unbuffered channels, GOMAXPROCS=1"),
    ):
        r = Result(key, label)
        out.append(r)
        if shutil.which("go") is None:
            r.note = "go not found (Debian: apt-get install golang-go; bench/setup-peers.sh)"
            continue
        env = dict(os.environ)
        env.setdefault("GOCACHE", str(ROOT / "target" / "gocache"))
        env.setdefault("GOPATH", str(ROOT / "target" / "gopath"))
        if procs is not None:
            env["GOMAXPROCS"] = procs
        cycles = args.go_cycles or max(args.cycles, 100_000)
        cmd = ["go", "run", "commstime.go", "-cycles", str(cycles), "-runs", str(args.runs)]
        proc = subprocess.run(
            cmd, cwd=HERE / "go", env=env, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            r.note = f"go run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
            continue
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        r.samples = data["samples_us_per_comm"]
        r.cycles = cycles
        r.label = f"{label} ({data['version']}, {data['gomaxprocs']} procs)"
    return out


def run_greenlet(args: argparse.Namespace) -> list[Result]:
    fg = Result("py-greenlet-ferrocsp", "greenlet: ferrocsp greenlet backend, 4 greenlets")
    try:
        gcommstime(min(args.cycles, 200))  # warm-up
        fg.samples = [gcommstime(args.cycles) for _ in range(args.runs)]
        fg.cycles = args.cycles
    except Exception as exc:  # noqa: BLE001 (reported in the table)
        fg.note = f"failed: {type(exc).__name__}: {exc}"
    floor = Result("py-greenlet-floor", "greenlet: floor, bare greenlets (hand-written)")
    try:
        floor_commstime(min(args.cycles, 200))  # warm-up
        floor.samples = [floor_commstime(args.cycles) for _ in range(args.runs)]
        floor.cycles = args.cycles
    except Exception as exc:  # noqa: BLE001 (reported in the table)
        floor.note = f"failed: {type(exc).__name__}: {exc}"
    switch = Result("py-greenlet-switch", "greenlet: floor, 2 greenlets switch(v) only")
    try:
        switch_floor(400)  # warm-up
        switch.samples = [switch_floor(4 * args.cycles) for _ in range(args.runs)]
        switch.cycles = args.cycles
    except Exception as exc:  # noqa: BLE001 (reported in the table)
        switch.note = f"failed: {type(exc).__name__}: {exc}"
    return [fg, floor, switch, run_pycsp(args, "greenlets")]


def run_pycsp(args: argparse.Namespace, module: str = "parallel") -> Result:
    kind = "threads" if module == "parallel" else "greenlets"
    key = "pycsp" if module == "parallel" else "pycsp-greenlets"
    r = Result(key, f"python: PyCSP 0.9.2 (pycsp.{module}), {kind}")
    if not PYCSP_PYTHON.exists():
        r.note = "bench/.venv-pycsp missing; run bench/setup-peers.sh"
        return r
    cycles = args.pycsp_cycles or min(args.cycles, 2_000)
    # PyCSP 0.9.2 looks up a LAN address for its socket server on start-up with Python-2
    # code (struct.pack of a str) that fails on Python 3 when the hostname resolves to
    # 127.x; naming the host up front (its documented PYCSP_HOST setting) avoids that path.
    env = dict(os.environ, PYCSP_HOST=os.environ.get("PYCSP_HOST", "127.0.0.1"))
    cmd = [str(PYCSP_PYTHON), str(HERE / "pycsp_commstime.py")]
    cmd += ["--cycles", str(cycles), "--runs", str(args.runs), "--module", module]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        r.note = "timed out after 600 s"
        return r
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        r.note = f"does not run on this Python: {last}"
        return r
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    r.samples = data["samples_us_per_comm"]
    r.cycles = cycles
    r.label = f"python: PyCSP {data['version']} pycsp.{module}, {kind}"
    return r


RUST_LABELS = {
    "ferrocsp": "rust: ferrocsp engine Channel::new(0)",
    "crossbeam": "rust: crossbeam-channel bounded(0)",
    "std-sync-channel": "rust: std sync_channel(0)",
}
RUST_LINE = re.compile(r"^commstime impl=(\S+) us_per_comm=([0-9.]+).*? samples=([0-9.,]+)")


def run_rust(args: argparse.Namespace) -> list[Result]:
    results = {k: Result(f"rust-{k}", label) for k, label in RUST_LABELS.items()}
    if shutil.which("cargo") is None:
        for r in results.values():
            r.note = "cargo not found"
        return list(results.values())
    cycles = args.rust_cycles or args.cycles
    cmd = ["cargo", "bench", "--quiet", "-p", "ferrocsp", "--bench", "commstime", "--"]
    cmd += ["--cycles", str(cycles), "--runs", str(args.runs)]
    print(f"[rust] {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        for r in results.values():
            r.note = f"cargo bench failed: {tail}"
        return list(results.values())
    for line in proc.stdout.splitlines():
        m = RUST_LINE.match(line)
        if m and m.group(1) in results:
            r = results[m.group(1)]
            r.samples = [float(x) for x in m.group(3).split(",")]
            r.cycles = cycles
    for r in results.values():
        if not r.samples:
            r.note = "no result line in cargo bench output"
    return list(results.values())


# --- reporting ----------------------------------------------------------------------------


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _cmd_output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rustc": _cmd_output(["rustc", "-V"]),
        "loadavg_at_start": os.getloadavg(),
    }


def ratio(results: dict[str, Result], num: str, den: str) -> float | None:
    a, b = results.get(num), results.get(den)
    if a and b and a.us_per_comm and b.us_per_comm:
        return a.us_per_comm / b.us_per_comm
    return None


RATIOS = [
    ("rust engine / crossbeam", "rust-ferrocsp", "rust-crossbeam"),
    ("rust engine / std sync_channel", "rust-ferrocsp", "rust-std-sync-channel"),
    ("python-thread / rust-engine", "py-ferrocsp", "rust-ferrocsp"),
    ("pycsp / python-thread", "pycsp", "py-ferrocsp"),
    ("pure-python / python-thread", "py-pure", "py-ferrocsp"),
    ("queue.Queue / python-thread", "py-queue", "py-ferrocsp"),
    ("ferrocsp-asyncio / asyncio-futures", "py-asyncio-ferrocsp", "py-asyncio-futures"),
    ("ferrocsp-asyncio / python-thread", "py-asyncio-ferrocsp", "py-ferrocsp"),
    ("pycsp-greenlets / greenlet", "pycsp-greenlets", "py-greenlet-ferrocsp"),
    ("pycsp-greenlets / greenlet-floor", "pycsp-greenlets", "py-greenlet-floor"),
    ("greenlet / greenlet-floor", "py-greenlet-ferrocsp", "py-greenlet-floor"),
    ("pycsp-greenlets / switch-floor", "pycsp-greenlets", "py-greenlet-switch"),
    ("greenlet / switch-floor", "py-greenlet-ferrocsp", "py-greenlet-switch"),
    ("asyncio-futures / greenlet", "py-asyncio-futures", "py-greenlet-ferrocsp"),
    ("greenlet / python-thread", "py-greenlet-ferrocsp", "py-ferrocsp"),
    ("greenlet / ferrocsp-asyncio", "py-greenlet-ferrocsp", "py-asyncio-ferrocsp"),
    ("pycsp-greenlets / coroutine", "pycsp-greenlets", "py-coroutine-ferrocsp"),
    ("greenlet / coroutine", "py-greenlet-ferrocsp", "py-coroutine-ferrocsp"),
    ("ferrocsp-asyncio / coroutine", "py-asyncio-ferrocsp", "py-coroutine-ferrocsp"),
    ("coroutine / go", "py-coroutine-ferrocsp", "go"),
    ("coroutine / go GOMAXPROCS=1", "py-coroutine-ferrocsp", "go-1"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=10_000, help="cycles per run (10000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--rust-cycles", type=int, help="cycles for the Rust runs (--cycles)")
    parser.add_argument("--pycsp-cycles", type=int, help="cycles for PyCSP (min(--cycles, 2000))")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["rust", "python", "asyncio", "coroutine", "greenlet", "pycsp", "go"],
    )
    parser.add_argument("--go-cycles", type=int, help="cycles for Go (max(--cycles, 100000))")
    args = parser.parse_args()
    if args.cycles < 1 or args.runs < 1:
        parser.error("--cycles and --runs must be at least 1")

    info = machine_info()
    results: list[Result] = []
    if "rust" not in args.skip:
        results += run_rust(args)
    if "python" not in args.skip:
        print("[python] ferrocsp, pure Python, queue.Queue", file=sys.stderr, flush=True)
        results += run_python(args)
    if "asyncio" not in args.skip:
        print("[asyncio] ferrocsp asyncio backend, asyncio futures", file=sys.stderr, flush=True)
        results += run_asyncio(args)
    if "coroutine" not in args.skip:
        print("[coroutine] ferrocsp coroutine backend", file=sys.stderr, flush=True)
        results += run_coroutine(args)
    if "greenlet" not in args.skip:
        print("[greenlet] ferrocsp greenlet backend, PyCSP greenlets", file=sys.stderr, flush=True)
        results += run_greenlet(args)
    if "go" not in args.skip:
        print("[go] go run bench/commstime/go/commstime.go", file=sys.stderr, flush=True)
        results += run_go(args)
    if "pycsp" not in args.skip:
        print("[pycsp] bench/.venv-pycsp", file=sys.stderr, flush=True)
        results.append(run_pycsp(args))
    for r in results:
        if r.samples:
            r.us_per_comm = statistics.median(r.samples)
    by_key = {r.key: r for r in results}

    print()
    print(
        f"commstime (seq-delta), 4 communications per cycle, median of {args.runs} runs, "
        "one OS thread per process (asyncio rows: four coroutines on one loop)"
    )
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs, {info['platform']}")
    load = info["loadavg_at_start"][0]
    print(f"python {info['python']}, {info['rustc']}, load average {load:.2f}")
    print()
    ref = by_key.get("py-ferrocsp")
    print(f"{'implementation':<52} {'us/comm':>9} {'cycles':>8} {'x py-ferrocsp':>14}")
    for r in results:
        if r.us_per_comm is None:
            print(f"{r.label:<52} {'n/a':>9}   {r.note}")
            continue
        rel = f"{r.us_per_comm / ref.us_per_comm:.2f}" if ref and ref.us_per_comm else "n/a"
        print(f"{r.label:<52} {r.us_per_comm:>9.3f} {r.cycles:>8} {rel:>14}")
    print()
    ratios = {}
    for name, num, den in RATIOS:
        value = ratio(by_key, num, den)
        ratios[name] = value
        print(f"{name:<34} {'n/a' if value is None else f'{value:.2f}':>8}")

    if args.json:
        doc = {
            "benchmark": "commstime-seq-delta",
            "params": {"cycles": args.cycles, "runs": args.runs},
            "machine": info,
            "results": [asdict(r) for r in results],
            "ratios": ratios,
        }
        write_json(args.json, doc)


if __name__ == "__main__":
    reexec_in_venv(__file__)
    main()
