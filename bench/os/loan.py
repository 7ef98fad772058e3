"""Zero-copy loans across OS processes (issue #20): one-way crossing time against size.

What is timed, for each size from 4 KiB to 1 GiB, is the hand-over of data the writer has
already produced, the same interval for every way: from just before the writer's hand-over
call (``t0``) to just after the reader in another OS process holds a usable buffer of it
(``t1``: the reader's clock, read right after its call returns; both are
``time.perf_counter_ns``, CLOCK_MONOTONIC, one clock for every process of the machine).
Before ``t0`` every way does the same work: it makes ``n`` bytes of fresh memory (new pages)
and fills them from one source ``bytes``, then sleeps ``ASLEEP``. Releasing the memory happens
after ``t1`` (the writer learns ``t1`` from the reader over a second channel). The ways:

- ``loan``: ``w.loan(n)`` filled in place, then ``w.write(loan)`` on a rendezvous channel;
  the reader's ``read()`` returns a ``LoanBuffer`` mapping the same memory;
- ``copy``: a fresh ``bytearray(n)`` filled the same way, then ``w.write(data)`` on the same
  channel (ferrocsp's copying path: ``process_vm_readv`` into a new ``bytearray`` of the
  reader, one copy);
- ``shm+pipe``: ``multiprocessing.shared_memory``: a block created and filled, its name sent
  over a ``multiprocessing.Pipe``, the reader attaches (``SharedMemory(name)``) and takes a
  ``memoryview`` of it;
- ``memcpy``: in one process, copying ``n`` bytes into a buffer touched beforehand (what any
  copy of the data costs at least; no hand-over);
- ``ping``: a loan of ``n`` bytes made and filled exactly as for ``loan``, then released, and
  a small ``int`` written on the same channel: the rendezvous alone, after the same work;
- ``4k loan``: the same work (a loan of ``n`` bytes made, filled, released), then a loan of
  4 KiB made, filled and written: a hand-over of a loan whose size does not change, after
  the same memory work. ``loan / 4k loan`` is then what the loan's own size costs.

Why the last two: on the development VM any code that runs after ``n`` bytes of memory work
runs slower, more so the larger ``n`` up to a few tens of MiB (the caches, and the VM's page
tables, hold the filled memory instead of the code's), whatever it is; a hand-over's time
mixes that with its own. The loan's system calls are the same whatever the size (see
bench/os/results.md, "Where the time goes").

Before each hand-over the writer waits 2 ms, so that the reader is asleep in its wait, as a
reader waiting for big data is: every way pays one wake-up. Medians over repeats. The reader
never touches the data (a reader that does pays the page faults of its mapping, any way it
got it). Adds a markdown table to ``--md`` (bench/os/results.md by default, newest run
first) and writes an SVG plot (matplotlib, the ``plot`` extra) next to it.

``--last-drop`` measures something else instead, and records nothing: how long a reader's
``del`` of a received loan takes when its mapping is the loan's last one (the writer's was
unmapped meanwhile), the case that frees every page of it.

Usage: ``python bench/os/loan.py [--max-mib N] [--repeats N] [--no-plot] [--json PATH]
[--last-drop]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# A 1 GiB value must fit the copying path's ring (its largest message); pages are allocated
# only when used. Set before ferrocsp is first imported (reexec_in_venv imports it).
os.environ.setdefault("FERROCSP_SHM_RING_BYTES", str(2 << 30))

from _common import reexec_in_venv, write_json  # noqa: E402

reexec_in_venv(__file__)


import ferrocsp as csp  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
WAYS = ("loan", "copy", "shm+pipe", "memcpy", "ping", "4k loan")
#: The writer's own ways, in the order they take turns.
FC_WAYS = ("loan", "copy", "ping", "4k loan")
#: The writer waits this long before each hand-over, so that the reader is asleep (past
#: ferrocsp's 50 us spin) whatever the size: otherwise small sizes, quick to fill, would find
#: it still spinning and the time would measure the fill, not the size.
ASLEEP = 0.002


def sizes(max_mib: int) -> list[int]:
    out, n = [], 4 * KIB
    while n <= max_mib * MIB:
        out.append(n)
        n *= 4
    if out[-1] != max_mib * MIB and max_mib * MIB > out[-1]:
        out.append(max_mib * MIB)
    return out


def repeats_for(n: int, base: int) -> int:
    if n >= 512 * MIB:
        return max(5, base // 4)
    if n >= 64 * MIB:
        return max(9, base // 2)
    return base


# -- ferrocsp: loan and copy ------------------------------------------------------------------


@csp.process(backend="os")
def reader(data: csp.Reader, times: csp.Writer) -> None:
    """Takes each value, stamps the time its read returned, drops it, sends the stamp."""
    for v in data:
        t = time.perf_counter_ns()
        del v
        times.write(t)


def run_ferrocsp(plan: list[tuple[int, int]]) -> dict[str, dict[int, list[float]]]:
    data: csp.Channel[Any] = csp.Channel(name="data")
    times: csp.Channel[int] = csp.Channel(name="times")
    w = data.writer()
    h = csp.Spawn(reader(data.reader(), times.writer()))
    out: dict[str, dict[int, list[float]]] = {w: {} for w in (*FC_WAYS, "loan()")}
    try:
        for n, reps in plan:
            src = b"\xa5" * n
            src4k = src[: 4 * KIB] if n >= 4 * KIB else b"\xa5" * (4 * KIB)
            got: dict[str, list[float]] = {w: [] for w in (*FC_WAYS, "loan()")}
            # The ways take turns, repeat by repeat, so that the load of the moment (this
            # machine is shared) falls on all of them alike; the first round is a warm-up.
            for _ in range(reps + 1):
                for way in FC_WAYS:
                    value: Any
                    if way == "copy":
                        value = bytearray(n)
                        value[:] = src
                    else:
                        t = time.perf_counter_ns()
                        value = w.loan(n)
                        if way == "loan":
                            got["loan()"].append((time.perf_counter_ns() - t) / 1e3)
                        memoryview(value)[:] = src
                    if way == "ping":
                        value.release()
                        value = 0
                    elif way == "4k loan":
                        value.release()
                        value = w.loan(4 * KIB)
                        memoryview(value)[:] = src4k
                    time.sleep(ASLEEP)
                    t0 = time.perf_counter_ns()
                    w.write(value)
                    t1 = times.read()
                    got[way].append((t1 - t0) / 1e3)
                    del value
            for way, v in got.items():
                out[way][n] = v[1:]
            del src
            print(
                f"  {n // KIB:>8} KiB  loan {statistics.median(out['loan'][n]):9.1f} us"
                f"  copy {statistics.median(out['copy'][n]):9.1f} us"
                f"  ping {statistics.median(out['ping'][n]):9.1f} us"
                f"  4k loan {statistics.median(out['4k loan'][n]):9.1f} us",
                flush=True,
            )
    finally:
        w.retire()
        h.join(60)
    return out


# -- the reader's last drop ------------------------------------------------------------------


@csp.process(backend="os")
def last_dropper(data: csp.Reader, times: csp.Writer) -> None:
    """Holds each loan until the writer's mapping is surely gone, then times its ``del``."""
    for v in data:
        time.sleep(0.05)  # the writer unmaps 1 ms after the hand-over: this is the last one
        t = time.perf_counter_ns()
        del v
        times.write(time.perf_counter_ns() - t)


def run_last_drop(plan: list[tuple[int, int]]) -> None:
    data: csp.Channel[Any] = csp.Channel(name="data")
    times: csp.Channel[int] = csp.Channel(name="times")
    w = data.writer()
    h = csp.Spawn(last_dropper(data.reader(), times.writer()))
    try:
        for n, reps in plan:
            src = b"\xa5" * n
            got = []
            for _ in range(reps + 1):
                loan = w.loan(n)
                memoryview(loan)[:] = src
                w.write(loan)
                got.append(times.read() / 1e3)
            print(
                f"  {label(n):>8}  reader's del of the last mapping: median "
                f"{statistics.median(got[1:]):9.1f} us",
                flush=True,
            )
    finally:
        w.retire()
        h.join(60)


# -- multiprocessing.shared_memory + Pipe -----------------------------------------------------


def shm_reader(conn: Connection) -> None:
    """Attaches each named block, stamps the time it holds a view, sends the stamp."""
    while True:
        name = conn.recv()
        if name is None:
            return
        shm = SharedMemory(name=name)
        view = shm.buf
        t = time.perf_counter_ns()
        # Attaching registers the block with the resource tracker (Python < 3.13), which this
        # process shares with the writer (forkserver children inherit it): the writer's
        # unlink unregisters it once. Unregistering here too made the tracker print a KeyError.
        del view
        shm.close()
        conn.send(t)


def run_shm_pipe(plan: list[tuple[int, int]]) -> dict[int, list[float]]:
    ctx = mp.get_context("forkserver")
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=shm_reader, args=(theirs,))
    p.start()
    out: dict[int, list[float]] = {}
    try:
        for n, reps in plan:
            src = b"\xa5" * n
            got = []
            for _ in range(reps + 1):
                shm = SharedMemory(create=True, size=n)
                shm.buf[:n] = src
                time.sleep(ASLEEP)
                t0 = time.perf_counter_ns()
                mine.send(shm.name)
                t1 = mine.recv()
                got.append((t1 - t0) / 1e3)
                shm.close()
                shm.unlink()
            out[n] = got[1:]
            del src
            print(f"  {n // KIB:>8} KiB  shm+pipe {statistics.median(out[n]):9.1f} us", flush=True)
    finally:
        mine.send(None)
        p.join(60)
    return out


# -- memcpy -----------------------------------------------------------------------------------


def run_memcpy(plan: list[tuple[int, int]]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for n, reps in plan:
        src = b"\xa5" * n
        dst = bytearray(n)  # zero-filled: its pages are touched
        view = memoryview(dst)
        got = []
        for _ in range(reps + 1):
            t0 = time.perf_counter_ns()
            view[:] = src
            got.append((time.perf_counter_ns() - t0) / 1e3)
        out[n] = got[1:]
        view.release()
        del src, dst
    return out


# -- report -----------------------------------------------------------------------------------


def label(n: int) -> str:
    if n >= MIB:
        return f"{n // MIB} MiB" if n < 1 << 30 else f"{n >> 30} GiB"
    return f"{n // KIB} KiB"


def table(med: dict[str, dict[int, float]], ns: list[int]) -> str:
    rows = [
        "| size | loan (us) | copy (us) | shm+pipe (us) | memcpy (us) | ping (us) "
        "| 4k loan (us) | loan - ping (us) | loan / 4k loan | loan() call (us) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in ns:
        cells = [f"{med[w][n]:.1f}" for w in WAYS]
        cells += [
            f"{med['loan'][n] - med['ping'][n]:.1f}",
            f"{med['loan'][n] / med['4k loan'][n]:.2f}",
            f"{med['loan()'][n]:.1f}",
        ]
        rows.append(f"| {label(n)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(med: dict[str, dict[int, float]], ns: list[int], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'ferrocsp[plot]'): no plot")
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for w in WAYS:
        ax.plot(ns, [med[w][n] for n in ns], marker="o", label=w)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ns, [label(n) for n in ns], rotation=45)
    ax.set_xlabel("size")
    ax.set_ylabel("one-way crossing, median (us)")
    ax.set_title("A buffer crossing OS processes (bench/os/loan.py)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-mib", type=int, default=1024, help="largest size (MiB), default 1024")
    ap.add_argument("--repeats", type=int, default=30, help="repeats per size (fewer when big)")
    ap.add_argument(
        "--md", type=Path, default=HERE / "results.md", help="results file to add the run to"
    )
    ap.add_argument("--svg", type=Path, default=HERE / "loan.svg")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--last-drop", action="store_true", help="time a reader's last drop only")
    args = ap.parse_args()

    ns = sizes(args.max_mib)
    plan = [(n, repeats_for(n, args.repeats)) for n in ns]
    if args.last_drop:
        print(f"load average {os.getloadavg()[0]:.1f}")
        run_last_drop(plan)
        return
    print("ferrocsp loan / copy:")
    fc = run_ferrocsp(plan)
    print("multiprocessing.shared_memory + Pipe:")
    sp = run_shm_pipe(plan)
    mc = run_memcpy(plan)
    raw = {"loan": fc["loan"], "copy": fc["copy"], "shm+pipe": sp, "memcpy": mc}
    raw["ping"] = fc["ping"]
    raw["4k loan"] = fc["4k loan"]
    raw["loan()"] = fc["loan()"]
    med = {w: {n: statistics.median(v) for n, v in d.items()} for w, d in raw.items()}

    loans = [med["loan"][n] for n in ns]
    flat = max(loans) / min(loans)
    over = [med["loan"][n] - med["ping"][n] for n in ns]
    own = [med["loan"][n] / med["4k loan"][n] for n in ns]
    at64 = med["loan"].get(64 * MIB)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()
    head = (
        f"## Zero-copy loans (issue #20), {when}\n\n"
        f"Command: `python bench/os/loan.py {' '.join(sys.argv[1:])}`. "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average {load[0]:.1f} at the end. "
        "Medians of one-way crossing times, writer's call to the reader holding a buffer "
        "(see the script's docstring); repeats: "
        + ", ".join(f"{label(n)} {r}" for n, r in plan)
        + ".\n\n"
    )
    summary = (
        f"\n\nLoan, {label(ns[0])} to {label(ns[-1])}: max/min of the medians "
        f"{flat:.2f}x" + (f"; 64 MiB: {at64:.1f} us" if at64 is not None else "") + ". "
        f"Loan minus ping (what the loan adds to a bare rendezvous after the same memory work): "
        f"{min(over):.1f} to {max(over):.1f} us. "
        f"Loan over a 4 KiB loan after the same memory work: {min(own):.2f}x to {max(own):.2f}x; "
        f"the 4 KiB loan itself, max/min over the sizes: "
        f"{max(med['4k loan'].values()) / min(med['4k loan'].values()):.2f}x.\n"
    )
    text = head + table(med, ns) + summary
    print("\n" + text)
    if not args.no_plot and plot(med, ns, args.svg):
        text += f"\nPlot: [{args.svg.name}]({args.svg.name}).\n"
    if args.md and args.md.name:
        # Newest run first, as the file keeps them: before its first section.
        old = args.md.read_text() if args.md.exists() else ""
        at = old.find("\n## ")
        doc = old[: at + 1] + text + "\n" + old[at + 1 :] if at >= 0 else old + "\n" + text
        args.md.write_text(doc)
        print(f"added to {args.md}")
    if args.json:
        write_json(
            args.json,
            {"sizes": ns, "raw_us": {w: {str(n): v for n, v in d.items()} for w, d in raw.items()}},
        )


if __name__ == "__main__":
    main()
