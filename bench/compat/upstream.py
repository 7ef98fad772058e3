"""Runs PyCSP 0.9.2's and python-csp 0.1's own test scripts and examples, unchanged, on the
real libraries and on ferrocsp's compat layers, and prints a table of outcomes.

    python bench/compat/upstream.py [--only NAME ...] [--timeout S] [--json FILE]

The sdists are fetched with pip into a cache outside the repository
(``$FERROCSP_COMPAT_CACHE``, default ``~/.cache/ferrocsp-compat``) and never enter it. Each
script runs as a subprocess, from a copy of its sdist folder whose parent holds either the
real package (``original``) or a two-line shim package of the same name that calls
``ferrocsp.compat.alias`` (``compat``), so ``pycsp``/``csp`` and their submodules are
``ferrocsp.compat.pycsp`` / ``ferrocsp.compat.python_csp.csp``. The original runs
in a throwaway venv (``<cache>/venv-orig``, with greenlet) and gets a ``sitecustomize.py``
restoring ``collections.Callable``, which PyCSP 0.9.2 needs on Python 3.10+.

Outcomes: ``pass`` (exit status 0, no traceback, no failure line of the scripts' own checks),
``FAIL (...)`` or ``TIMEOUT``; scripts that need a network, ssh, a cluster, a C compiler or a
display are listed as not runnable with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("FERROCSP_COMPAT_CACHE", Path.home() / ".cache" / "ferrocsp-compat"))
SDISTS = {"pycsp": ("pycsp", "0.9.2"), "python-csp": ("python-csp", "0.1")}
REPO_PYTHON = Path(__file__).resolve().parents[2] / "python"

#: Lines the upstream scripts print when their own checks fail (check.Assert, autotest, ...).
FAILURE = re.compile(
    r"Traceback \(most recent call last\)|^Error - |Wrong number of values|not in vocabulary"
    r"|Exception in thread|^FAILED|^ERROR:",
    re.MULTILINE,
)

SHIM = """# Shim: `{name}` and `{name}.*` are the modules of ferrocsp's compat layer.
import ferrocsp.compat

ferrocsp.compat.alias("{name}")
"""

SITECUSTOMIZE = """import collections, collections.abc
collections.Callable = collections.abc.Callable  # PyCSP 0.9.2 on Python 3.10+
"""

SITECUSTOMIZE_CLOCK = """import time
time.clock = time.perf_counter  # python-csp 0.1's scripts on Python 3.8+
"""


@dataclass
class Script:
    """One upstream script: its path in the sdist, its arguments, and why it may not run."""

    lib: str
    path: str
    args: list[str] = field(default_factory=list)
    skip: str = ""
    timeout: float | None = None
    #: What to know when reading the outcomes.
    note: str = ""

    @property
    def label(self) -> str:
        return " ".join([self.path, *self.args])


PROBLEM_NOTES = {
    "greenlets_differentiate_between_deadlocking_and_all_executed_processes_pre_0.7.0": (
        "deadlocks on purpose: PyCSP's greenlets raise Exception('Deadlock'), its threads hang; "
        "compat raises ferrocsp's Deadlock naming process and channel (exit 1) in both modes"
    ),
}


def _pycsp_scripts() -> list[Script]:
    out: list[Script] = []
    for mode in ("parallel", "greenlets"):
        for t in (
            "autotest",
            "buffertest",
            "commtest",
            "guardtest",
            "iotest",
            "poisontest",
            "selecttest",
        ):
            out.append(Script("pycsp", f"test/{t}.py", [mode]))
        for ex in (
            "Commstime",
            "Commstime_Io",
            "Dining-Phil",
            "Fibonacci",
            "MCPi",
            "ParallelReturn_MCPi",
            "Sieve",
            "TerminationRacePoison",
            "TerminationRaceRetire",
            "TokenRing",
            "MultipleTokenRing",
        ):
            out.append(Script("pycsp", f"examples/{ex}.py", [mode]))
        for pb in (
            "deadlock_doing_alternation_on_input_and_output_pre_0.6.1",
            "greenlets_differentiate_between_deadlocking_and_all_executed_processes_pre_0.7.0",
            "greenlets_exception_propagation_from_io_functions_pre_0.7.1",
            "greenlets_unable_to_communicate_on_channels_from_main_namespace_pre_0.7.1",
            "parallel_leaking_mobile_channelend_garbage_collection_pre_0.9.2",
        ):
            note = PROBLEM_NOTES.get(pb, "")
            out.append(Script("pycsp", f"examples/problems/{pb}.py", [mode], note=note))
        out.append(
            Script(
                "pycsp",
                "examples/MCPiTrace.py",
                [mode],
                skip="needs pycsp.common.trace (PyCSP's tracer is not provided)",
            )
        )
    out += [
        Script("pycsp", "examples/Commstime_Multiprocesses.py", ["parallel"]),
        Script(
            "pycsp",
            "examples/problems/parallel_nesting_multiprocess_in_process.py",
            ["parallel"],
            note="PyCSP's own list of known problems; the original hangs here",
        ),
        Script(
            "pycsp",
            "examples/1MillionProcesses.py",
            timeout=300,
            note="one Spawn of a million greenlet processes",
        ),
        Script("pycsp", "test/unix/multiprocesstest.py", timeout=300),
        Script(
            "pycsp",
            "test/unix/remotetest.py",
            note="channels found through each interpreter's channel server, carried by "
            "shared memory (docs/compat.md)",
        ),
        Script("pycsp", "test/unix/sshprocesstest.py", skip="needs an ssh server (sshprocess)"),
        Script(
            "pycsp",
            "test/unix/clusterprocesstest.py",
            skip="needs a PBS cluster nodefile (clusterprocess)",
        ),
        Script("pycsp", "test/windows/remotetest.py", skip="Windows only"),
        Script("pycsp", "examples/WebServer.py", skip="serves HTTP until interrupted (network)"),
        Script(
            "pycsp",
            "examples/Mandelbrot/mandelbrot_ctypes.py",
            skip="needs the example's C kernel compiled as a shared library",
        ),
    ]
    return out


def _python_csp_scripts() -> list[Script]:
    forever = "runs forever by design (a server network nothing stops); TIMEOUT expected"
    py2 = "Python 2 syntax (print statement): fails to compile on Python 3 on both"
    out = [
        Script("python-csp", "test/testcsp.py", ["--all"]),
        Script(
            "python-csp",
            "test/test_builtins.py",
            note="each case runs Par(producer, builtin server, consumer).start() and only then "
            "reads the consumer's result: it cannot finish (compat reports the deadlock)",
        ),
        Script("python-csp", "test/test_contexts.py", note=py2),
        Script(
            "python-csp",
            "test/test_forever.py",
            timeout=10,
            note="prints factorials forever; after about 1700 of them the value exceeds "
            "Python 3.11's 4300-digit int-to-str limit and the Printer fails (so would "
            "python-csp's own)",
        ),
        Script("python-csp", "test/testpar.py", timeout=10, note=forever),
        Script("python-csp", "test/testrep.py", note=py2),
    ]
    out += [
        Script("python-csp", "test/test_tracer.py", skip="needs csp.tracer (not provided)"),
        Script("python-csp", "test/testsock.py", skip="a socket experiment (network), no CSP"),
    ]
    for t in ("commstime", "fulladder", "patterns", "simple", "tokenring"):
        out.append(
            Script(
                "python-csp",
                f"csp/cchannels/tests/{t}.py",
                skip="needs python-csp's C channel library (cchannels)",
            )
        )
    return out


def fetch() -> dict[str, Path]:
    """Downloads and unpacks the sdists (once); returns each library's source folder."""
    CACHE.mkdir(parents=True, exist_ok=True)
    roots = {}
    for lib, (dist, version) in SDISTS.items():
        root = CACHE / f"{dist}-{version}"
        if not root.exists():
            archive = CACHE / f"{dist}-{version}.tar.gz"
            if not archive.exists():
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "download",
                        "--no-deps",
                        "--no-binary",
                        ":all:",
                        f"{dist}=={version}",
                        "-d",
                        str(CACHE),
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            with tarfile.open(archive) as tar:
                tar.extractall(CACHE, filter="data")
        roots[lib] = root
    return roots


def original_python() -> Path:
    """A throwaway venv with greenlet for the real libraries (created once)."""
    venv = CACHE / "venv-orig"
    py = venv / "bin" / "python"
    if not py.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "greenlet"], check=True)
    return py


def prepare(roots: dict[str, Path], base: Path = CACHE / "run") -> dict[tuple[str, str], Path]:
    """Run folders under ``base``: a copy of each sdist's scripts with the real package or the
    shim. Each tool has its own ``base`` (they are recreated: a run must not pull the folders
    from under another's running scripts)."""
    runs: dict[tuple[str, str], Path] = {}
    for lib, root in roots.items():
        pkg = "pycsp" if lib == "pycsp" else "csp"
        for variant in ("original", "compat"):
            run = base / lib / variant
            if run.exists():
                shutil.rmtree(run)
            run.mkdir(parents=True)
            for sub in ("test", "examples"):
                if (root / sub).exists():
                    shutil.copytree(root / sub, run / sub)
            if lib == "python-csp":
                # The scripts themselves call time.clock (removed in Python 3.8): restored for
                # both runs, so that what differs is the library only.
                (run / "sitecustomize.py").write_text(SITECUSTOMIZE_CLOCK)
            if variant == "original":
                (run / pkg).symlink_to(root / pkg)
                if lib == "pycsp":
                    (run / "sitecustomize.py").write_text(SITECUSTOMIZE)
            else:
                (run / pkg).mkdir(exist_ok=True)
                (run / pkg / "__init__.py").write_text(SHIM.format(name=pkg))
            runs[(lib, variant)] = run
    return runs


def run_one(
    script: Script, run: Path, python: Path, variant: str, timeout: float
) -> tuple[str, float, str]:
    """Runs one script; returns (outcome, seconds, output tail)."""
    path = run / script.path
    env = dict(os.environ)
    extra = [str(run)] + ([str(REPO_PYTHON)] if variant == "compat" else [])
    env["PYTHONPATH"] = os.pathsep.join(extra)
    env.pop("FERROCSP_BACKEND", None)
    env["CSP"] = env.get("CSP", "THREADS")
    # PyCSP 0.9.2 crashes looking up a public address when the host name resolves to 127.x;
    # naming the host (its documented PYCSP_HOST setting) avoids that path.
    env.setdefault("PYCSP_HOST", "127.0.0.1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(python), path.name, *script.args],
            cwd=path.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=script.timeout or timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        return "TIMEOUT", time.perf_counter() - t0, text[-2000:]
    dt = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return f"FAIL (exit {proc.returncode})", dt, text[-2000:]
    m = FAILURE.search(text)
    if m:
        return f"FAIL ({m.group(0).strip()})", dt, text[-2000:]
    return "pass", dt, text[-2000:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=[], help="run scripts whose label has this")
    ap.add_argument("--variant", choices=["original", "compat", "both"], default="both")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per script")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print failing output")
    ap.add_argument("--write", action="store_true", help="write bench/compat/upstream.md")
    opts = ap.parse_args(argv)

    roots = fetch()
    runs = prepare(roots)
    variants = ["original", "compat"] if opts.variant == "both" else [opts.variant]
    pythons = {"compat": Path(sys.executable)}
    if "original" in variants:
        pythons["original"] = original_python()
    scripts = _pycsp_scripts() + _python_csp_scripts()
    if opts.only:
        scripts = [s for s in scripts if any(o in f"{s.lib} {s.label}" for o in opts.only)]
    rows = []
    lines = ["| library | script | original | compat | note |", "|---|---|---|---|---|"]
    print("\n".join(lines))
    for s in scripts:
        row = {"lib": s.lib, "script": s.label, "note": s.note}
        for v in ("original", "compat"):
            if s.skip:
                row[v] = f"not runnable: {s.skip}"
            elif v not in variants:
                row[v] = "-"
            else:
                outcome, dt, tail = run_one(s, runs[(s.lib, v)], pythons[v], v, opts.timeout)
                row[v] = f"{outcome} ({dt:.1f} s)"
                row[v + "_tail"] = tail
                if opts.verbose and outcome != "pass":
                    print(f"--- {v} {s.label}:\n{tail}", file=sys.stderr)
        rows.append(row)
        lines.append(f"| {s.lib} | {s.label} | {row['original']} | {row['compat']} | {s.note} |")
        print(lines[-1], flush=True)
    if opts.write:
        (Path(__file__).resolve().parent / "upstream.md").write_text(
            "# PyCSP 0.9.2 and python-csp 0.1 scripts: original against compat\n\n"
            "Each upstream test script and example, unchanged, on the real library (Python "
            f"{sys.version.split()[0]}, a throwaway venv) and on ferrocsp's compat layer.\n\n"
            f"- command: `python bench/compat/upstream.py --timeout {opts.timeout:g} --write`\n"
            f"- date: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; "
            f"{os.cpu_count()} CPUs\n\n" + "\n".join(lines) + "\n"
        )
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=1))
    regressions = [
        r
        for r in rows
        if r["original"].startswith("pass") and not r["compat"].startswith(("pass", "-"))
    ]
    for r in regressions:
        print(f"REGRESSION: {r['lib']} {r['script']}: compat {r['compat']}", file=sys.stderr)
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
