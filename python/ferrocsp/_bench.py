"""``ferrocsp bench``: run the benchmark suite in ``bench/`` and write a report.

Three measurements, each in the same run as its baselines (numbers from different runs, let
alone different machines, say little about each other):

1. commstime (``bench/commstime/run.py --json``): microseconds per rendezvous communication
   on every backend, against pure Python, ``queue.Queue``, asyncio futures, PyCSP and, in
   Rust, crossbeam-channel and std (PyCSP and the Rust rows need ``bench/setup-peers.sh``
   and ``cargo``; ``--quick`` leaves them out unless ``--pycsp``/``--rust`` ask for them);
2. the cost of choice (``bench/alt/run.py``): an ``Alt`` against a plain read;
3. spawn scaling (here, in this process): microseconds per process to run ``N`` processes
   that do nothing through ``Par``, on threads and as asyncio tasks, against bare
   ``threading.Thread`` and ``asyncio.gather``.

Output (``--out``, default: a new temporary folder, never a source tree): ``index.md``
(tables, machine, versions, date), ``results.json`` (everything measured) and, when
matplotlib is installed (``pip install 'ferrocsp[plot]'``), ``commstime.png``, ``alt.png``
and ``spawn.png``. The scripts come from ``bench/`` of the source tree when ferrocsp runs
from one, else from the copies installed with the package (``_benchsuite``), which run the
Python rows only (the Rust rows need the source tree and cargo, PyCSP its environment there).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["BenchOptions", "default_bench_dir", "run"]

#: Where ``bench/`` is when ferrocsp runs from its source tree (editable install).
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
#: The copies of the scripts an installed ferrocsp carries (links to bench/ in the source).
PACKAGED = Path(__file__).resolve().parent / "_benchsuite"


def default_bench_dir() -> Path | None:
    """``bench/`` of the source tree (this package's checkout, else the working directory),
    else the scripts installed with the package."""
    for root in (_SOURCE_ROOT, Path.cwd()):
        if (root / "bench" / "commstime" / "run.py").is_file():
            return root / "bench"
    if (PACKAGED / "commstime" / "run.py").is_file():
        return PACKAGED
    return None


def is_checkout(bench_dir: Path) -> bool:
    """Whether ``bench_dir`` is the ``bench/`` of a source tree (which has the Rust
    benchmarks and PyCSP's environment), not the scripts installed with the package."""
    return (bench_dir.parent / "crates" / "ferrocsp").is_dir()


@dataclass
class BenchOptions:
    """What ``ferrocsp bench`` runs; ``None`` for ``rust``/``pycsp`` means: when not quick
    and run from a source tree (the Rust benchmarks and PyCSP's environment live there)."""

    out: Path
    bench_dir: Path
    quick: bool = False
    rust: bool | None = None
    pycsp: bool | None = None
    plots: bool = True
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr, flush=True))
    #: Where the progress bar goes (None: stderr).
    stream: TextIO | None = None

    @property
    def with_rust(self) -> bool:
        if self.rust is None:
            return not self.quick and is_checkout(self.bench_dir)
        return self.rust

    @property
    def with_pycsp(self) -> bool:
        if self.pycsp is None:
            return not self.quick and is_checkout(self.bench_dir)
        return self.pycsp

    @property
    def with_go(self) -> bool:
        """The Go rows (full size from a source tree: they build with ``go run``)."""
        return not self.quick and is_checkout(self.bench_dir)


# Sizes: quick is for CI (seconds), full for the committed report.
QUICK: dict[str, Any] = {
    "cycles": 3_000,
    "runs": 3,
    "alt_n": 5_000,
    "alt_runs": 3,
    "spawn": (1, 10, 100),
}
FULL: dict[str, Any] = {
    "cycles": 10_000,
    "runs": 5,
    "alt_n": 20_000,
    "alt_runs": 5,
    "spawn": (1, 10, 100, 1_000),
}


# --- progress -----------------------------------------------------------------------------


class Progress:
    """A progress bar over the suite's steps, on stderr.

    On a terminal one line is redrawn in place (bar, steps done, the step running, seconds
    spent on it, refreshed ten times a second); elsewhere (a log, a CI job) each step that
    starts prints one line with the bar, so the output stays readable.
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.total = max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self.what = ""
        self.tty = self.stream.isatty()
        self._since = self._began = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if self.tty:
            self._ticker = threading.Thread(target=self._tick, daemon=True, name="bench-progress")
            self._ticker.start()

    def _line(self) -> str:
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        pct = 100 * self.done // self.total
        now = time.monotonic()
        # On a terminal the line is redrawn: the time spent on this step so far; in a log,
        # each line is printed as its step starts: the time since the bar began.
        spent = now - (self._since if self.tty else self._began)
        return f"[bench] [{bar}] {pct:3d}% {self.done}/{self.total} {self.what} ({spent:.0f} s)"

    def _draw(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self._line())
        else:
            self.stream.write(self._line() + "\n")
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                self._draw()

    def step(self, what: str) -> None:
        """Step ``what`` starts; the one before it is done."""
        with self._lock:
            if self.what:
                self.done = min(self.total, self.done + 1)
            self.what, self._since = what, time.monotonic()
            self._draw()

    def log(self, text: str) -> None:
        """A message above the bar."""
        with self._lock:
            if self.tty:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            if self.tty:
                self.stream.write(self._line())
            self.stream.flush()

    def close(self) -> None:
        """All steps done: draws the full bar and ends its line."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self.done, self.what = self.total, "done"
            if self.tty:
                self.stream.write("\r\033[K" + self._line() + "\n")
            else:
                self.stream.write(self._line() + "\n")
            self.stream.flush()


# --- running the scripts ----------------------------------------------------------------

#: The section markers ``bench/commstime/run.py`` prints on stderr as it goes.
_SECTION = re.compile(r"^\[(rust|python|asyncio|coroutine|greenlet|go|pycsp)\] ")


def _script(
    opts: BenchOptions, cmd: list[str], what: str, timeout: float, progress: Progress
) -> str:
    """Runs ``python <cmd>``; returns its stdout. Section markers on its stderr advance the
    progress bar; its other stderr lines are shown above the bar."""
    full = [sys.executable, *cmd]
    progress.log(f"[bench] $ {' '.join(full)}")
    proc = subprocess.Popen(
        full,
        cwd=opts.bench_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def relay() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = _SECTION.match(line)
            if m:
                progress.step(f"{what}: {m[1]}")
            else:
                progress.log(line.rstrip("\n"))

    chunks: list[str] = []

    def collect() -> None:
        assert proc.stdout is not None
        chunks.append(proc.stdout.read())

    # Each pipe has its own reader (communicate() would read stderr too, and take the
    # section markers away from the relay).
    readers = [
        threading.Thread(target=relay, daemon=True, name="bench-stderr"),
        threading.Thread(target=collect, daemon=True, name="bench-stdout"),
    ]
    for t in readers:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what} took more than {timeout:.0f} s") from None
    finally:
        for t in readers:
            t.join()
    stdout = "".join(chunks)
    if proc.returncode != 0:
        tail = "\n".join(stdout.strip().splitlines()[-10:])
        raise RuntimeError(f"{what} failed (exit status {proc.returncode}):\n{tail}")
    return stdout


def _commstime_sections(opts: BenchOptions) -> list[str]:
    out = ["rust"] if opts.with_rust else []
    out += ["python", "asyncio", "coroutine", "greenlet"]
    out += ["go"] if opts.with_go else []
    return out + (["pycsp"] if opts.with_pycsp else [])


def run_commstime(opts: BenchOptions, size: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """``bench/commstime/run.py --json``; returns its JSON document."""
    script = opts.bench_dir / "commstime" / "run.py"
    with tempfile.TemporaryDirectory(prefix="ferrocsp-bench-") as tmp:
        out = Path(tmp) / "commstime.json"
        cmd = [str(script), "--cycles", str(size["cycles"]), "--runs", str(size["runs"])]
        cmd += ["--json", str(out)]
        if not opts.with_rust:
            cmd += ["--skip", "rust"]
        if not opts.with_pycsp:
            cmd += ["--skip", "pycsp"]
        if not opts.with_go:
            cmd += ["--skip", "go"]
        _script(opts, cmd, "commstime", timeout=3_600, progress=progress)
        doc: dict[str, Any] = json.loads(out.read_text())
    return doc


_ALT_LINE = re.compile(r"^alt impl=(?P<impl>\S+) us_per_op=(?P<us>[0-9.]+)")


def parse_alt(text: str) -> dict[str, float]:
    """``alt impl=NAME us_per_op=X ...`` lines (bench/alt/run.py) as {NAME: X}."""
    out = {}
    for line in text.splitlines():
        m = _ALT_LINE.match(line.strip())
        if m:
            out[m["impl"]] = float(m["us"])
    return out


def run_alt(opts: BenchOptions, size: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """``bench/alt/run.py``; returns {"params": ..., "python": {...}, "rust": {...}}."""
    script = opts.bench_dir / "alt" / "run.py"
    cmd = [str(script), "--n", str(size["alt_n"]), "--runs", str(size["alt_runs"])]
    if not opts.with_rust:
        cmd.append("--no-rust")
    progress.step("alt: Alt against a plain read" + (", and in Rust" if opts.with_rust else ""))
    lines = parse_alt(_script(opts, cmd, "alt", timeout=3_600, progress=progress))
    python = {k.removeprefix("python-"): v for k, v in lines.items() if k.startswith("python-")}
    rust = {k: v for k, v in lines.items() if not k.startswith("python-")}
    if not python:
        raise RuntimeError("alt: no 'alt impl=python-...' lines in bench/alt/run.py's output")
    return {
        "params": {"n": size["alt_n"], "runs": size["alt_runs"]},
        "python": python,
        "rust": rust,
    }


# --- spawn scaling (measured here) ------------------------------------------------------


def _noop() -> None:
    return None


async def _anoop() -> None:
    return None


def _time(fn: Callable[[], object], n: int, reps: int) -> float:
    """Median µs per process of ``fn()`` (which runs ``n`` of them) over ``reps`` runs."""
    fn()  # warm-up
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6 / n)
    return statistics.median(samples)


def _bare_threads(n: int) -> None:
    threads = [threading.Thread(target=_noop) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _bare_gather(n: int) -> None:
    async def main() -> None:
        await asyncio.gather(*(_anoop() for _ in range(n)))

    asyncio.run(main())


def _spawn_ways() -> dict[str, Callable[[int], object]]:
    from . import _backends
    from ._par import Par
    from ._process import process

    noop, anoop = process(_noop), process(_anoop)
    ways: dict[str, Callable[[int], object]] = {
        "ferrocsp Par, thread backend": lambda n: Par(*(noop() for _ in range(n))).run(),
        "threading.Thread start+join": _bare_threads,
        "ferrocsp Par, asyncio (async def)": lambda n: Par(*(anoop() for _ in range(n))).run(),
        "asyncio.run(gather(...))": _bare_gather,
        "ferrocsp Par, coroutine backend (async def)": lambda n: Par(
            *(anoop() for _ in range(n)), backend="coroutine"
        ).run(),
    }
    if "greenlet" in _backends.AVAILABLE:
        ways["ferrocsp Par, greenlet backend"] = lambda n: Par(
            *(noop() for _ in range(n)), backend="greenlet"
        ).run()
    return ways


def run_spawn(opts: BenchOptions, size: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """µs per process to run N do-nothing processes to the end, per way of running them."""
    ways = _spawn_ways()
    rows: dict[str, dict[str, float]] = {name: {} for name in ways}
    for n in size["spawn"]:
        reps = max(3, min(50, 2_000 // n))
        for name, fn in ways.items():
            progress.step(f"spawn: {name}, N = {n}")
            rows[name][str(n)] = _time(lambda fn=fn, n=n: fn(n), n, reps)  # type: ignore[misc]
    return {"ns": list(size["spawn"]), "us_per_process": rows}


# --- machine and versions ---------------------------------------------------------------


def _cmd(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info() -> dict[str, Any]:
    """CPU model, CPU count, OS, Python, Rust, ferrocsp version, load average."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        fc = version("ferrocsp")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        fc = "?"
    try:
        mpl = version("matplotlib")
    except PackageNotFoundError:
        mpl = None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rustc": _cmd(["rustc", "-V"]) if shutil.which("rustc") else "not installed",
        "ferrocsp": fc,
        "matplotlib": mpl,
        "loadavg": list(os.getloadavg()),
    }


# --- report -----------------------------------------------------------------------------


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _commstime_table(doc: dict[str, Any]) -> list[str]:
    results = doc["results"]
    ref = next((r["us_per_comm"] for r in results if r["key"] == "py-ferrocsp"), None)
    lines = [
        "| implementation | µs/communication | x ferrocsp (threads) | cycles | note |",
        "|---|---:|---:|---:|---|",
    ]
    for r in results:
        us = r.get("us_per_comm")
        rel = _f(us / ref) if us and ref else "n/a"
        note = (r.get("note") or "").replace("|", "/")
        lines.append(f"| {r['label']} | {_f(us)} | {rel} | {r.get('cycles') or ''} | {note} |")
    shown = [(k, v) for k, v in doc.get("ratios", {}).items() if k in _KEY_RATIOS and v]
    if shown:
        lines.append("")
        lines += [f"- {k}: **{v:.2f}x**" for k, v in shown]
    return lines


#: The ratios of bench/commstime/run.py that this page lists under its table.
_KEY_RATIOS = (
    "pycsp-greenlets / coroutine",
    "greenlet / coroutine",
    "coroutine / go",
    "coroutine / go GOMAXPROCS=1",
    "pycsp-greenlets / greenlet",
    "ferrocsp-asyncio / asyncio-futures",
)


_ALT_ROWS = (
    ("select", "Alt.select(), 2 ready writers", "engine-select-random", "crossbeam-select"),
    ("fair", "Alt.fair_select(), 2 ready writers", "engine-select-fair", None),
    ("read", "plain read(), 1 writer (baseline)", "engine-read", "crossbeam-recv"),
    ("read2", "plain read(), 2 writers on one channel", "engine-read2", None),
    ("mux8", "fair_select() over 8 producers, per message", "engine-mux8-fair", "crossbeam-mux8"),
)


def _alt_table(alt: dict[str, Any]) -> list[str]:
    py, rs = alt["python"], alt["rust"]
    lines = [
        "| workload | Python threads µs | Rust engine µs | crossbeam µs |",
        "|---|---:|---:|---:|",
    ]
    for key, label, engine, cross in _ALT_ROWS:
        cb = rs.get(cross) if cross else None
        lines.append(f"| {label} | {_f(py.get(key))} | {_f(rs.get(engine))} | {_f(cb)} |")
    lines.append("")
    for key in ("select", "fair"):
        if py.get(key) and py.get("read"):
            ratio = py[key] / py["read"]
            lines.append(f"- Python `{key}` / `read`: **{ratio:.2f}x**")
        if rs.get(f"engine-select-{'random' if key == 'select' else 'fair'}") and rs.get(
            "engine-read"
        ):
            r = rs[f"engine-select-{'random' if key == 'select' else 'fair'}"] / rs["engine-read"]
            lines.append(f"- Rust engine `{key}` / `read`: **{r:.2f}x**")
    for backend in ("greenlet", "asyncio", "coroutine"):
        read = py.get(f"{backend}-read")
        for key in ("select", "fair"):
            sel = py.get(f"{backend}-{key}")
            if sel and read:
                lines.append(
                    f"- Python on the {backend} backend `{key}` / `read`: **{sel / read:.2f}x** "
                    f"({sel:.2f} / {read:.2f} µs)"
                )
    return lines


def _spawn_table(spawn: dict[str, Any]) -> list[str]:
    ns = [str(n) for n in spawn["ns"]]
    lines = [
        "| µs per process | " + " | ".join(f"N = {n}" for n in ns) + " |",
        "|---|" + "---:|" * len(ns),
    ]
    for name, row in spawn["us_per_process"].items():
        lines.append(f"| {name} | " + " | ".join(_f(row.get(n), 1) for n in ns) + " |")
    return lines


def render_markdown(data: dict[str, Any], plots: list[str]) -> str:
    """The report page (``index.md``)."""
    m = data["machine"]
    quick = data["size"] == "quick"
    out = [
        "# Performance",
        "",
        "<!-- Generated by `ferrocsp bench`; do not edit by hand: rerun it instead. -->",
        "",
        f"Measured on {data['date']} by `ferrocsp bench{' --quick' if quick else ''}` "
        f"({data['size']} size). Every number in one table comes from the same run; numbers "
        "from one machine say little about another, so rerun `ferrocsp bench` on yours.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['cpu']}, {m['cpus']} CPUs |",
        f"| OS | {m['platform']} |",
        f"| load average at start | {m['loadavg'][0]:.2f} |",
        f"| Python | {m['python']} |",
        f"| ferrocsp | {m['ferrocsp']} |",
        f"| Rust | {m['rustc']} |",
        "",
        "## Commstime: µs per communication",
        "",
        "The classic CSP benchmark: a ring Prefix → Delta → Succ → Prefix, Delta also feeding "
        "a consumer; four rendezvous communications per cycle, one OS thread per process "
        "(asyncio, coroutine and greenlet rows: four coroutines or greenlets sharing one "
        "thread; Go rows: goroutines, built with `go run`). Median of "
        f"{data['commstime']['params']['runs']} run(s) of "
        f"{data['commstime']['params']['cycles']} cycles. `queue.Queue(maxsize=1)` is a "
        "one-slot buffer, not a rendezvous: a writer does not wait for its reader.",
        "",
        *_commstime_table(data["commstime"]),
        "",
    ]
    if "commstime.png" in plots:
        out += ["![commstime: µs per communication](commstime.png)", ""]
    out += [
        "## The cost of choice: Alt",
        "",
        "One consuming thread, writers that are always ready (each blocked writing to a "
        "rendezvous channel). `read2` has as many threads as `select`, so `select`/`read2` "
        "isolates the Alt from the cost of one more thread. Median of "
        f"{data['alt']['params']['runs']} run(s) of {data['alt']['params']['n']} operations "
        "(Rust: 10x as many).",
        "",
        *_alt_table(data["alt"]),
        "",
    ]
    if "alt.png" in plots:
        out += ["![Alt against a plain read](alt.png)", ""]
    out += [
        "## Spawning processes",
        "",
        "Microseconds per process to run N processes that return at once, start to end, "
        "through `Par(...).run()`, against the bare mechanism underneath. An asyncio `Par` "
        "runs on a kept host thread and its event loop, a greenlet or coroutine `Par` on a "
        "native scheduler in a kept host thread.",
        "",
        *_spawn_table(data["spawn"]),
        "",
    ]
    if "spawn.png" in plots:
        out += ["![µs per process against N](spawn.png)", ""]
    out += [
        "## Across OS processes",
        "",
        "Not part of `ferrocsp bench`: the OS-process backend is measured by "
        "`bench/os/run.py` in the source tree (commstime on four OS processes against a "
        "`multiprocessing.Pipe` rendezvous and python-csp; 1 and 64 MiB `bytes` against "
        "`multiprocessing.Pipe`/`Queue`; a CPU-bound farm on 1 and 2 workers), and "
        "`bench/os/loan.py` the zero-copy loans from 4 KiB to 1 GiB against the copying "
        "path, `multiprocessing.shared_memory` + `Pipe` and a memcpy; their tables are in "
        "`bench/os/results.md`.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "pip install 'ferrocsp[plot]'       # matplotlib, for the plots",
        "ferrocsp bench --quick --out perf  # seconds; no Rust or PyCSP rows",
        "# from a source tree, with the Rust and PyCSP rows:",
        "bench/setup-peers.sh               # PyCSP 0.9.2 in bench/.venv-pycsp (optional)",
        "ferrocsp bench --out docs/performance   # full size; this page",
        "```",
        "",
        "Raw numbers: [results.json](results.json).",
        "",
    ]
    if not plots:
        out += [
            "(No plots: matplotlib was not installed when this page was generated.)",
            "",
        ]
    return "\n".join(out)


def _plots(data: dict[str, Any], out: Path) -> list[str]:
    """Writes the PNG plots; returns their file names. Needs matplotlib."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    # commstime: horizontal bars, log scale (the rows span two orders of magnitude).
    rows = [r for r in data["commstime"]["results"] if r.get("us_per_comm")]
    if rows:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
        labels = [r["label"] for r in rows][::-1]
        values = [r["us_per_comm"] for r in rows][::-1]
        colors = ["tab:red" if "ferrocsp" in lab else "tab:gray" for lab in labels]
        ax.barh(labels, values, color=colors)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("µs per communication (log scale, lower is better)")
        ax.set_title(f"commstime, {data['machine']['cpus']} CPUs, {data['date']}")
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "commstime.png", dpi=100)
        plt.close(fig)
        made.append("commstime.png")

    # alt: grouped bars per workload.
    py, rs = data["alt"]["python"], data["alt"]["rust"]
    keys = [k for k, *_ in _ALT_ROWS]
    series = [("Python threads", [py.get(k) for k in keys], "tab:red")]
    if rs:
        series.append(("Rust engine", [rs.get(e) for _, _, e, _ in _ALT_ROWS], "tab:blue"))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(series)
    for i, (name, vals, color) in enumerate(series):
        xs = [j + i * width for j, v in enumerate(vals) if v is not None]
        ax.bar(xs, [v for v in vals if v is not None], width, label=name, color=color)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(keys))], keys)
    ax.set_ylabel("µs per operation (lower is better)")
    ax.set_title("Alt against a plain read")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "alt.png", dpi=100)
    plt.close(fig)
    made.append("alt.png")

    # spawn: µs per process against N, log-log.
    ns = data["spawn"]["ns"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, row in data["spawn"]["us_per_process"].items():
        style = "-o" if name.startswith("ferrocsp") else "--s"
        color = "tab:blue" if "thread" in name.lower() else "tab:green"
        if "greenlet" in name:
            color = "tab:purple"
        ax.plot(ns, [row[str(n)] for n in ns], style, label=name, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N processes")
    ax.set_ylabel("µs per process (log scale)")
    ax.set_title("Running N do-nothing processes to the end")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "spawn.png", dpi=100)
    plt.close(fig)
    made.append("spawn.png")
    return made


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the ``ferrocsp[plot]`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def run(opts: BenchOptions) -> dict[str, Any]:
    """Runs every benchmark and writes the report into ``opts.out``; returns the data."""
    size = QUICK if opts.quick else FULL
    opts.out.mkdir(parents=True, exist_ok=True)
    plots_wanted = opts.plots and have_matplotlib()
    if opts.plots and not plots_wanted:
        opts.log(
            "[bench] matplotlib is not installed: writing the tables without plots "
            "(install it with: pip install 'ferrocsp[plot]')"
        )
    data: dict[str, Any] = {
        "size": "quick" if opts.quick else "full",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
    }
    started = time.monotonic()
    sections = _commstime_sections(opts)
    steps = len(sections) + 1 + len(size["spawn"]) * len(_spawn_ways())
    progress = Progress(steps, stream=opts.stream)
    try:
        progress.log(f"[bench] (1/3) commstime ({data['size']} size): {', '.join(sections)}")
        data["commstime"] = run_commstime(opts, size, progress)
        progress.log("[bench] (2/3) alt: the cost of choice")
        data["alt"] = run_alt(opts, size, progress)
        progress.log(f"[bench] (3/3) spawn scaling, N = {', '.join(map(str, size['spawn']))}")
        data["spawn"] = run_spawn(opts, size, progress)
    finally:
        progress.close()
    plots = _plots(data, opts.out) if plots_wanted else []
    (opts.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (opts.out / "index.md").write_text(render_markdown(data, plots))
    opts.log(f"[bench] wrote {opts.out / 'index.md'}, results.json and {len(plots)} plot(s)")
    opts.log(f"[bench] total {time.monotonic() - started:.1f} s")
    return data
