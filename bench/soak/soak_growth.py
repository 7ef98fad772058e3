"""Memory growth per soak round, by transport: regular rounds (``soak_work.plan``) back to back
in one interpreter, as the soak's lane runs them, with resident memory, Python's allocated
blocks and live objects printed every ``--every`` rounds after ``gc.collect()``.

    python bench/soak/soak_growth.py --transport net --rounds 600     # starts its own NATS

It bisects an RSS creep seen by the soak: one transport at a time (and ``--backends`` to keep
one backend), no kills, short rounds. Growth in resident memory with flat block and object
counts is native (Rust) or allocator growth; growth in blocks is Python's (use tracemalloc).

Invariant: it reads and changes nothing outside its temporary folder and its own nats-server.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _common import reexec_in_venv  # noqa: E402

if __name__ == "__main__":
    reexec_in_venv(__file__)

import soak_work  # noqa: E402

import ferrocsp as csp  # noqa: E402
from ferrocsp._backends import _pool  # noqa: E402


def rss_kb() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", choices=["local", "shm", "net"], default="local")
    p.add_argument("--backends", default="", help="comma-separated: keep only these")
    p.add_argument("--rounds", type=int, default=600)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="ferrocsp-soak-growth-"))
    nats: Any = None
    conn: Any = None
    if args.transport == "net":
        import ferrocsp.net as net
        import soak

        nats = soak.Nats(base)
        conn = net.connect(nats.url, lease_ttl=soak.LEASE_TTL, ack_timeout=soak.ACK_TIMEOUT)
    keep = [b for b in args.backends.split(",") if b]
    first: tuple[int, int] | None = None
    try:
        for number in range(args.rounds):
            folder = base / str(number)
            folder.mkdir()
            r = soak_work.plan(rng, number, folder, [args.transport], kills=False, n_range=(5, 20))
            if keep:
                for w in r.workers:
                    if w.backend not in keep and w.backend != "os":
                        w.backend = rng.choice(keep)
            if r.transport == "net":
                ch = conn.channel(f"growth-{os.getpid()}-{number}", r.capacity)
            else:
                ch = csp.Channel(r.capacity, name=f"growth-{number}")
            csp.Par(*soak_work.processes(r, ch)).run()
            del ch
            shutil.rmtree(folder)
            if number % args.every == 0 or number == args.rounds - 1:
                gc.collect()
                _pool.release_idle(10.0)
                gc.collect()
                objs = collections.Counter(type(o).__name__ for o in gc.get_objects())
                rss = rss_kb()
                if first is None and number >= args.every:
                    first = (number, rss)  # after the first rounds' one-time allocations
                rate = ""
                if first is not None and number > first[0]:
                    rate = (
                        f"  {(rss - first[1]) / (number - first[0]):.2f} KB/round since #{first[0]}"
                    )
                print(
                    f"#{number:5d} rss {rss} KB  blocks {sys.getallocatedblocks()}  "
                    f"objects {sum(objs.values())}{rate}",
                    flush=True,
                )
    finally:
        if conn is not None:
            conn.close()
        if nats is not None:
            nats.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
