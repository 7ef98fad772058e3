"""The ``ferrocsp`` command line (also ``python -m ferrocsp``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ._bench import BenchOptions, default_bench_dir, run

    bench_dir = args.bench_dir if args.bench_dir is not None else default_bench_dir()
    if bench_dir is None or not (bench_dir / "commstime" / "run.py").is_file():
        parser.error(
            "the benchmark scripts (bench/commstime/run.py, bench/alt/run.py) live in "
            "ferrocsp's source tree: run from a checkout or pass --bench-dir PATH/bench"
        )
    out = args.out if args.out is not None else bench_dir.parent / "docs" / "performance"
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


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="ferrocsp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small network on each backend and print what it did")
    demo.add_argument("--cycles", type=int, default=20_000, help="commstime cycles (20000)")
    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite in bench/ and write tables and plots",
        description="Runs bench/commstime and bench/alt (with their baselines) and a spawn "
        "benchmark, then writes index.md, results.json and PNG plots (matplotlib: "
        "pip install 'ferrocsp[bench]') into --out.",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for CI (seconds); leaves out the Rust and PyCSP rows unless asked",
    )
    bench.add_argument(
        "--out", type=Path, help="output directory (default: docs/performance of the checkout)"
    )
    bench.add_argument("--bench-dir", type=Path, help="the bench/ directory of a checkout")
    bench.add_argument(
        "--rust",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the Rust baselines with cargo bench (default: yes, no with --quick)",
    )
    bench.add_argument(
        "--pycsp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run PyCSP from bench/.venv-pycsp (default: yes, no with --quick)",
    )
    bench.add_argument("--no-plots", action="store_true", help="write the tables only")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import main as demo_main

        if args.cycles <= 0:
            parser.error("--cycles must be positive")
        demo_main(cycles=args.cycles)
    elif args.command == "bench":
        return _bench(bench, args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
