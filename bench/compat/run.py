"""Commstime on real PyCSP 0.9.2 and on ferrocsp's compat layer, same program, same run.

    python bench/compat/run.py [--cycles N] [--runs R] [--write]

Runs ``commstime_pycsp.py`` (written against PyCSP's API) four times: ``pycsp.parallel`` and
``pycsp.greenlets`` of the real library (in the throwaway venv and sdist cache that
``upstream.py`` manages, outside the repository), then the same two modes with ``pycsp``
resolving to ``ferrocsp.compat.pycsp``, and prints the median microseconds per communication
and the speed-up of each mode. ``--write`` records the table in ``bench/compat/results.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import upstream  # noqa: E402 - the sibling module that fetches the libraries

NOTES = """
## Reading these numbers

- The machine is small and shared (2 cores, other jobs running): thread numbers move by 2-5x
  from one minute to the next, for PyCSP and ferrocsp alike, and under heavy load (load
  average far above 2) greenlet numbers too. Each mode's two runs follow each other, so the
  ratio is more stable than either number; still, read one run's ratio with its load.
- `pycsp.greenlets`: PyCSP's greenlet scheduler is pure Python and already fast (about
  1.4-2 µs unloaded). The compat ends subclass `_native._CallEnd`, which is called by
  vectorcall (on CPython 3.11 too, where the compat layer sets the flag on its two end
  classes: see `crates/ferrocsp-py/src/call_end.rs`) and goes straight to the ferrocsp end's
  Rust `read`/`write`: no argument tuple, no argument parsing. Served through `tp_call`, as
  a `#[pyclass]` `__call__` is, it cost 35-40 ns more per write-and-read and 0.7 KB more of
  saved C stack per switch; by vectorcall PyCSP's commstime took 0.45 µs of CPU per
  communication instead of 0.50 (interleaved runs at load 3-5). In a process greenlet a
  call of the usual shape then goes, by a tail call, to one frame holding the end's checks
  and the scheduler's try-and-register (`sched::plain_read`/`plain_write`: one channel lock,
  the running task borrowed from the thread's current-task slot, not cloned); a call that
  must wait moves that slot's reference onto its frame for the switch (the switch would
  drop it, the resumer sets its own), so a communication makes four fewer reference count
  operations, and a slot's sole ownership is read from its count (no compare-and-swap).
  That round (interleaved CPU time, load 2-5): 0.50-0.57 to 0.42-0.46 µs per
  communication; callgrind 5,310 to 4,700 instructions per communication. Where the time
  goes now (perf, profiling build): about a sixth in greenlet's stack copies (memmove,
  malloc, free), a sixth in greenlet's switch, a third in the engine and bindings (mostly
  the locked instructions of the channel lock and of the hand-off's reference counts: an
  entry's signal and slot, the channel handle of a registered operation, the task's queue
  entry, the deadlock record's signal), the rest the Python loop. One switch per
  communication is the least a rendezvous needs.
- The saved stack of a blocked process was 3.3 KB with `functools.partial` ends; the process
  wrappers call the body with a fixed-arity call (`ferrocsp._flatcall`), which CPython 3.11
  runs without a C-level interpreter frame; the greenlet starts a plain function (no bound
  method's C frame); the native frames from the end's call to the switch are four (the
  vectorcall entry and the wait's, with the operation, the switch and the rare paths out of
  line or folded in): 2.1 KB (measured with `greenlet._stack_saved` and gdb), of which
  greenlet's own switch frames are 0.46 KB and the interpreter's and greenlet's start 0.86
  KB. A stack copy costs per switch (a malloc and a free of a buffer above glibc's tcache
  sizes, and the calls) more than per byte.
- Under heavy load the wall-clock numbers of a greenlet run vary by up to 3x between runs
  of the same build, since they include the time the process waits for a core: ferrocsp's
  own greenlet commstime used 0.4-0.7 µs of CPU per communication (getrusage) in runs whose
  wall clock said 1.5-2.2 µs.
"""


def run(python: Path, pythonpath: list[Path], module: str, cycles: int, runs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
    env.setdefault("PYCSP_HOST", "127.0.0.1")  # see upstream.run_one
    out = subprocess.run(
        [
            str(python),
            str(HERE / "commstime_pycsp.py"),
            module,
            "--cycles",
            str(cycles),
            "--runs",
            str(runs),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"commstime {module} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="write bench/compat/results.md")
    opts = ap.parse_args()
    roots = upstream.fetch()
    runs = upstream.prepare(roots, upstream.CACHE / "run-bench")
    orig_py = upstream.original_python()
    orig_path = [runs[("pycsp", "original")]]  # holds pycsp/ and sitecustomize.py
    compat_path = [runs[("pycsp", "compat")], upstream.REPO_PYTHON]
    load_before = os.getloadavg()[0]
    rows = []
    for module in ("parallel", "greenlets"):
        o = run(orig_py, orig_path, module, opts.cycles, opts.runs)
        c = run(Path(sys.executable), compat_path, module, opts.cycles, opts.runs)
        om, cm = statistics.median(o["us_per_comm"]), statistics.median(c["us_per_comm"])
        ocpu = statistics.median(o["cpu_us_per_comm"])
        ccpu = statistics.median(c["cpu_us_per_comm"])
        rows.append((module, om, cm, om / cm, ocpu, ccpu, ocpu / ccpu))
    lines = [
        "| mode | PyCSP 0.9.2 (µs/comm) | ferrocsp.compat.pycsp (µs/comm) | speed-up "
        "| CPU: PyCSP | CPU: compat | CPU speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| pycsp.{m} | {o:.2f} | {c:.2f} | {r:.1f}x | {oc:.2f} | {cc:.2f} | {rc:.1f}x |"
        for m, o, c, r, oc, cc, rc in rows
    ]
    table = "\n".join(lines)
    load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(table)
    print(f"load average (1 min): {load}")
    if opts.write:
        cmd = f"python bench/compat/run.py --cycles {opts.cycles} --runs {opts.runs} --write"
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
        (HERE / "results.md").write_text(
            "# Commstime: PyCSP 0.9.2 vs ferrocsp.compat.pycsp\n\n"
            "The same program (`bench/compat/commstime_pycsp.py`, written against PyCSP's API) "
            "on the real library and on the compat layer; median of the runs, microseconds "
            "per channel communication (lower is better): wall clock, and CPU time of the "
            "whole process (`time.process_time`, every thread), which a loaded machine "
            "disturbs less.\n\n"
            f"- command: `{cmd}`\n"
            f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\n"
            f"- machine: {machine}; Python {platform.python_version()}\n"
            f"- load average (1 min): {load}\n\n"
            f"{table}\n"
            f"{NOTES}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
