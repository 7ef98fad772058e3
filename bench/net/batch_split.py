"""Where a batch's time goes (issue #17): the batch pair of ``run.py`` taken apart, each side
alone against its own server, all in one run so the ratios compare like with like.

- ``writer alone``: one ``write_many`` of ``n`` values into a channel with room for all of
  them, nobody reading (the writer's publishes and their acks only);
- ``reader alone``: ``read_many(b)`` in another OS process draining a channel already holding
  ``n`` values (pulls, acks, claims where made, decoding);
- ``reader alone, nothing acknowledged``: the same with the ``hold_acks`` testing hook (no
  claim, no ack: the pulls and Python only);
- ``pair``: ``run.py``'s batch row (capacity 1000, the reader in another process), and its
  one-by-one row for the ratio.

Usage: ``python bench/net/batch_split.py [--n N] [--batch B]``.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _server import nats_server  # noqa: E402
from run import ferrocsp_buffered_batch_per_s, ferrocsp_buffered_per_s  # noqa: E402

import ferrocsp.net as net  # noqa: E402

DRAIN = """
import sys, time
from ferrocsp.net._connection import Hooks, _connect
url, name, cap, n, b, hold = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
with _connect(url, hooks=Hooks(hold_acks=bool(hold)), ack_timeout=30.0) as c:
    ch = c.channel(name, cap)
    ch.read_many(1)
    t0 = time.perf_counter()
    got = 1
    while got < n:
        got += len(ch.read_many(min(b, n - got)))
    print(f"{(n - 1) / (time.perf_counter() - t0):.0f}")
"""


def writer_alone(url: str, n: int) -> float:
    with net.connect(url) as c:
        ch = c.channel("splitw", n)
        t0 = time.perf_counter()
        ch.write_many(itertools.repeat(b"x", n))
        return n / (time.perf_counter() - t0)


def reader_alone(url: str, n: int, b: int, hold: bool) -> float:
    name = f"splitr{int(hold)}"
    with net.connect(url, ack_timeout=30.0) as c:
        c.channel(name, n).write_many(itertools.repeat(b"x", n))
        out = subprocess.run(
            [sys.executable, "-c", DRAIN, url, name, str(n), str(n), str(b), str(int(hold))],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
        return float(out.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="values per measurement")
    ap.add_argument("--batch", type=int, default=256, help="values per read_many")
    args = ap.parse_args()
    n, b = args.n, args.batch
    with nats_server() as url:
        rows = [
            ("writer alone (write_many)", writer_alone(url, n)),
            (f"reader alone (read_many({b}))", reader_alone(url, n, b, False)),
            (f"reader alone, nothing acknowledged (read_many({b}))", reader_alone(url, n, b, True)),
            ("pair, one by one", ferrocsp_buffered_per_s(url, min(n, 3000))),
            (f"pair, write_many + read_many({b})", ferrocsp_buffered_batch_per_s(url, n, b)),
        ]
    for label, v in rows:
        print(f"{label}: {v:,.0f} values/s ({v / rows[3][1]:.1f}x one by one)")


if __name__ == "__main__":
    main()
