"""A processor farm across OS processes (or machines) that find each other only through NATS.

A producer deals out jobs on the networked rendezvous channel ``<run>-jobs``; any number of
worker processes share it (each job goes to one worker, whichever is free); they send their
results on the buffered channel ``<run>-results`` to a collector::

                      +--> worker 0 --+
    producer --jobs---+--> worker 1 --+--results (buffered on the server)--> collector
                      +--> worker 2 --+

Every role is its own OS process and knows only the server URL and the run name: start them
in any order, on any machines connected to the same NATS server (or cluster). Shutdown is
retire: the producer retires its end of ``jobs`` when done, each worker then sees
end-of-stream and retires its end of ``results``; the collector stops after ``--jobs``
results. If anything fails, poisoning a channel stops everyone.

Run it all here (starts a private nats-server with scripts/nats.sh if no ``--url``)::

    python examples/net_farm.py [--workers 3] [--jobs 30] [--url nats://host:4222]

or each role by hand, on different machines::

    python examples/net_farm.py producer  --url nats://host:4222 --run demo --jobs 30
    python examples/net_farm.py worker    --url nats://host:4222 --run demo --id 1
    python examples/net_farm.py collector --url nats://host:4222 --run demo --jobs 30
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import ferrocsp as csp
import ferrocsp.net as net

ROOT = Path(__file__).resolve().parents[1]


def producer(url: str, run: str, jobs: int) -> None:
    with net.connect(url) as conn, conn.channel(f"{run}-jobs").writer() as out:
        for job in range(jobs):
            out.write(job)  # returns once some worker took it
    print(f"producer: dealt {jobs} jobs", flush=True)


def worker(url: str, run: str, ident: int) -> None:
    with net.connect(url) as conn:
        results = conn.channel(f"{run}-results", 8).writer()
        jobs = conn.channel(f"{run}-jobs").reader()
        done = 0
        with jobs, results:
            try:
                for job in jobs:  # until the producer retires its end
                    results.write({"job": job, "square": job * job, "worker": ident})
                    done += 1
            except csp.ChannelPoisoned:
                pass
    print(f"worker {ident}: {done} jobs", flush=True)


def collector(url: str, run: str, jobs: int) -> None:
    with net.connect(url) as conn, conn.channel(f"{run}-results", 8).reader() as inp:
        got = [inp.read(timeout=60) for _ in range(jobs)]
    seen = sorted(r["job"] for r in got)
    assert seen == list(range(jobs)), "every job exactly once"
    assert all(r["square"] == r["job"] ** 2 for r in got)
    per_worker = Counter(r["worker"] for r in got)
    print(
        f"collector: {jobs} results, each job exactly once, sum of squares "
        f"{sum(r['square'] for r in got)}",
        flush=True,
    )
    print("collector: per worker " + ", ".join(f"{w}: {n}" for w, n in sorted(per_worker.items())))


def run_all(url: str | None, workers: int, jobs: int) -> None:
    store = None
    if url is None:
        store = tempfile.mkdtemp(prefix="ferrocsp-farm-")
        url = subprocess.run(
            [str(ROOT / "scripts" / "nats.sh"), "start", store],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    run = "farm-" + uuid.uuid4().hex[:8]  # channel state is durable: a fresh name per run
    me = [sys.executable, os.path.abspath(__file__)]
    common = ["--url", url, "--run", run]
    try:
        procs = [subprocess.Popen([*me, "collector", *common, "--jobs", str(jobs)])]
        procs += [
            subprocess.Popen([*me, "worker", *common, "--id", str(i)]) for i in range(workers)
        ]
        procs.append(subprocess.Popen([*me, "producer", *common, "--jobs", str(jobs)]))
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        if store is not None:
            subprocess.run([str(ROOT / "scripts" / "nats.sh"), "stop", store], check=False)
            shutil.rmtree(store, ignore_errors=True)
    if any(codes):
        sys.exit(f"net_farm: a process failed: exit codes {codes}")
    print(f"net_farm: ok ({workers} workers, {jobs} jobs, {workers + 2} OS processes)")


def main() -> None:
    ap = argparse.ArgumentParser(description="A farm of OS processes over NATS.")
    ap.add_argument("role", nargs="?", choices=["producer", "worker", "collector"])
    ap.add_argument("--url", help="NATS server (default: start a private one)")
    ap.add_argument("--run", default="farm", help="run name, shared by all roles")
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--id", type=int, default=0)
    a = ap.parse_args()
    if a.role is None:
        run_all(a.url, a.workers, a.jobs)
    elif a.url is None:
        ap.error("--url is needed to run one role")
    elif a.role == "producer":
        producer(a.url, a.run, a.jobs)
    elif a.role == "worker":
        worker(a.url, a.run, a.id)
    else:
        collector(a.url, a.run, a.jobs)


if __name__ == "__main__":
    main()
