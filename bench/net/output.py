"""bench/net/output.py: what an ``Output`` guard costs on a networked channel, one run.

Starts its own nats-server (scripts/nats.sh). For a rendezvous channel and a buffered one
(capacity 1000), a reader thread with its own connection reads everything, and this thread
sends N values twice: with plain ``write`` (the baseline), then each through an Alt whose only
ready guard is ``Output(channel, value)``. Prints values per second and the ratio of the two.

Usage: ``python bench/net/output.py [--n N]``
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from pathlib import Path

from _server import nats_server

import ferrocsp as csp
import ferrocsp.net as net

ROOT = Path(__file__).resolve().parents[2]


def rates(url: str, capacity: int, n: int) -> tuple[float, float]:
    """(plain writes/s, Output selections/s) on a fresh channel with a reader thread."""
    name = f"benchout{capacity}-{uuid.uuid4().hex[:8]}"
    with net.connect(url) as w, net.connect(url) as r:
        ch, rch = w.channel(name, capacity), r.channel(name, capacity)
        reader = threading.Thread(target=lambda: [rch.read(timeout=60) for _ in range(2 * n)])
        reader.start()
        never = csp.Channel()
        t0 = time.perf_counter()
        for i in range(n):
            ch.write(i)
        plain = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(n):
            csp.Alt(csp.Output(ch, i), never).select()
        out = n / (time.perf_counter() - t0)
        reader.join(timeout=120)
        return plain, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="values per measurement")
    n = ap.parse_args().n
    with nats_server() as url:
        rows = [
            (label, *rates(url, cap, n)) for label, cap in (("rendezvous", 0), ("buffered", 1000))
        ]
    print(f"n={n}")
    print("| channel | plain writes/s | Output selections/s | ratio |")
    print("|---|---:|---:|---:|")
    for label, plain, out in rows:
        print(f"| {label} | {plain:,.0f} | {out:,.0f} | {out / plain:.2f}x |")


if __name__ == "__main__":
    main()
