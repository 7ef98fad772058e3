"""The ``ferrocsp`` command line (also ``python -m ferrocsp``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="ferrocsp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small network and print what it did")
    demo.add_argument("--cycles", type=int, default=20_000, help="commstime cycles")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import main as demo_main

        if args.cycles <= 0:
            parser.error("--cycles must be positive")
        demo_main(cycles=args.cycles)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
