"""The ``ferrocsp`` command line (also ``python -m ferrocsp``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import tempfile

    from ._bench import BenchOptions, default_bench_dir, is_checkout, run

    bench_dir = args.bench_dir if args.bench_dir is not None else default_bench_dir()
    if bench_dir is None or not (bench_dir / "commstime" / "run.py").is_file():
        where = "this installation" if args.bench_dir is None else str(args.bench_dir)
        parser.error(
            f"no benchmark scripts (commstime/run.py, alt/run.py) in {where}: reinstall "
            "ferrocsp, or pass --bench-dir PATH/bench of a source tree"
        )
    for flag in ("rust", "pycsp"):
        if getattr(args, flag) and not is_checkout(bench_dir):
            parser.error(
                f"--{flag} needs ferrocsp's source tree (the Rust benchmarks and PyCSP's "
                "environment live there): run from a checkout or pass --bench-dir PATH/bench"
            )
    if args.out is not None:
        out = args.out
    else:
        out = Path(tempfile.mkdtemp(prefix="ferrocsp-bench-"))
        print(f"ferrocsp bench: writing to {out} (choose with --out DIR)", file=sys.stderr)
    opts = BenchOptions(
        out=out,
        bench_dir=bench_dir,
        quick=args.quick,
        rust=args.rust,
        pycsp=args.pycsp,
        plots=not args.no_plots,
    )
    try:
        run(opts)
    except RuntimeError as exc:
        print(f"ferrocsp bench: {exc}", file=sys.stderr)
        return 1
    return 0


def _graph(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import contextlib
    import runpy
    import shutil
    import subprocess

    from ._graph import record, to_dot

    fmt = args.format or (args.out.suffix.lstrip(".") if args.out is not None else "dot")
    if fmt not in ("svg", "png", "dot"):
        parser.error(f"unknown format {fmt!r} (svg, png or dot)")
    dot = shutil.which("dot")
    if fmt != "dot" and dot is None:
        print(
            "ferrocsp graph: Graphviz's dot is not installed: install graphviz "
            "(apt-get install graphviz), or use --format dot",
            file=sys.stderr,
        )
        return 1
    script = str(args.script)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *args.args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    status = 0
    # DOT on stdout: the script's own output goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if fmt == "dot" and args.out is None else None
    with record() as rec, quiet or contextlib.nullcontext():
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - draw what ran, then report
            print(f"ferrocsp graph: {script} raised {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 1
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
    text = to_dot(rec.networks, title=Path(script).stem)
    if fmt == "dot":
        if args.out is None:
            sys.stdout.write(text)
        else:
            args.out.write_text(text, encoding="utf-8")
    else:
        assert dot is not None
        out = args.out if args.out is not None else Path(Path(script).stem + "." + fmt)
        done = subprocess.run(
            [dot, f"-T{fmt}", "-o", str(out)], input=text, text=True, capture_output=True
        )
        if done.returncode != 0:
            print(f"ferrocsp graph: dot failed: {done.stderr.strip()}", file=sys.stderr)
            return 1
        n = len(rec.networks)
        print(f"ferrocsp graph: {n} network{'s' if n != 1 else ''} drawn to {out}", file=sys.stderr)
    return status


def _trace_plot(args: argparse.Namespace) -> int:
    from ._timeline import plot

    if args.out.suffix == ".json":  # Chrome trace event format, for Perfetto
        import json

        from ._chrome import to_chrome
        from ._timeline import load

        try:
            doc = to_chrome(load(args.trace))
            args.out.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
        except (OSError, ValueError) as exc:
            print(f"ferrocsp trace: {exc}", file=sys.stderr)
            return 1
        n = sum(1 for e in doc["traceEvents"] if e["ph"] == "M")
        print(
            f"ferrocsp trace: {n} processes written to {args.out} (Chrome trace event "
            "format: open it in ui.perfetto.dev or chrome://tracing)",
            file=sys.stderr,
        )
        return 0
    try:
        lanes = plot(args.trace, args.out)
    except (OSError, ValueError) as exc:
        print(f"ferrocsp trace: {exc}", file=sys.stderr)
        return 1
    print(f"ferrocsp trace: {lanes} processes drawn to {args.out}", file=sys.stderr)
    return 0


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="ferrocsp", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"ferrocsp {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small network on each backend and print what it did")
    demo.add_argument("--cycles", type=int, default=20_000, help="commstime cycles (20000)")
    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite in bench/ and write tables and plots",
        description="Runs the commstime and Alt benchmarks (with their baselines) and a "
        "spawn benchmark, then writes index.md, results.json and PNG plots (matplotlib: "
        "pip install 'ferrocsp[plot]') into --out (default: a new temporary folder). "
        "From a source tree it also runs the Rust and PyCSP rows unless --quick.",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for CI (seconds); leaves out the Rust and PyCSP rows unless asked",
    )
    bench.add_argument(
        "--out", type=Path, help="output directory (default: a new temporary folder)"
    )
    bench.add_argument(
        "--bench-dir",
        type=Path,
        help="the bench/ directory of a source tree (default: the checkout ferrocsp runs "
        "from, else the scripts installed with it)",
    )
    bench.add_argument(
        "--rust",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the Rust baselines with cargo bench (default: from a source tree unless --quick)",
    )
    bench.add_argument(
        "--pycsp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run PyCSP from bench/.venv-pycsp (default: from a source tree unless --quick)",
    )
    bench.add_argument("--no-plots", action="store_true", help="write the tables only")
    graph = sub.add_parser(
        "graph",
        help="run a script and draw every network it started (Graphviz)",
        description="Runs SCRIPT (as __main__, with sys.argv = [SCRIPT, ARGS...]) while "
        "recording every Par and Spawn it starts, then draws them: processes as nodes, "
        "channels as edges from writer to reader. SVG and PNG need Graphviz's dot "
        "(apt-get install graphviz). Arguments for the script follow '--': "
        "ferrocsp graph run.py -o net.svg -- --size 3",
    )
    graph.add_argument("script", type=Path, help="the Python script to run")
    graph.add_argument(
        "-o", "--out", type=Path, help="output file (default: SCRIPT.svg; DOT on stdout)"
    )
    graph.add_argument(
        "--format", choices=("svg", "png", "dot"), help="default: from --out's suffix, else dot"
    )
    trace = sub.add_parser(
        "trace",
        help="plot a trace (FERROCSP_TRACE=trace.jsonl) as a per-process timeline",
        description="Draws one lane per process: alive from start to end, blocked "
        "intervals in red, reads and writes as ticks (matplotlib: pip install "
        "'ferrocsp[plot]'). With -o FILE.json it writes the trace in the Chrome trace "
        "event format instead, which ui.perfetto.dev and chrome://tracing open.",
    )
    trace.add_argument("trace", type=Path, help="the trace file (JSON lines)")
    trace.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("timeline.png"),
        help="the image (timeline.png), or FILE.json for the Chrome trace event format",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    script_args: list[str] = []
    if argv[:1] == ["graph"] and "--" in argv:  # what follows -- is the script's
        i = argv.index("--")
        argv, script_args = argv[:i], argv[i + 1 :]
    args = parser.parse_args(argv)
    args.args = script_args
    if args.command == "demo":
        from ._demo import main as demo_main

        if args.cycles <= 0:
            parser.error("--cycles must be positive")
        demo_main(cycles=args.cycles)
    elif args.command == "bench":
        return _bench(bench, args)
    elif args.command == "graph":
        return _graph(graph, args)
    elif args.command == "trace":
        return _trace_plot(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
