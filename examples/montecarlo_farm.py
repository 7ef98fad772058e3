"""A processor farm estimating pi by Monte Carlo: farmer, N workers, harvester.

The farmer deals out jobs; the workers share one job channel, so each job goes to whichever
worker is free (no scheduling code: the channel's readers take turns as they come); the
harvester adds up what they find::

                 +--> worker 0 --+
    farmer --jobs+--> worker 1 --+results--> harvester
                 +--> worker 2 --+

A job is a seed; its worker throws ``--samples`` random points into the unit square and
counts those inside the quarter circle (pi / 4 of them, on average). The farmer is the
builtin ``Count`` (job numbers 0 .. jobs-1) and each worker the builtin ``Map``. Each
process has its own end of the shared channels: when the farmer is done it retires its end,
each worker sees end-of-stream on ``jobs`` and retires its end of ``results``, and when the
last worker has retired, the harvester sees end-of-stream and returns the total. Seeds make
the estimate the same whichever worker took which job.

Threads share the GIL, so this farm shows the structure, not a speed-up; the OS-process
backend (when it lands) runs the same network on several cores.

Run: ``python examples/montecarlo_farm.py [--workers N] [--jobs J] [--samples S]``.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
from collections import Counter

import ferrocsp as csp
from ferrocsp.builtins import Count, Map


def throw(job: int, *, samples: int, worker: int) -> tuple[int, int, int]:
    """One job: ``(worker, samples, hits)`` for ``samples`` points seeded by ``job``."""
    rng = random.Random(job)
    hits = 0
    for _ in range(samples):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            hits += 1
    return worker, samples, hits


@csp.process
def harvester(results: csp.Reader) -> tuple[int, int, Counter[int]]:
    """Adds up the results until end-of-stream: ``(samples, hits, jobs per worker)``."""
    samples = hits = 0
    per_worker: Counter[int] = Counter()
    for worker, n, h in results:
        samples += n
        hits += h
        per_worker[worker] += 1
    return samples, hits, per_worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--samples", type=int, default=5000, help="points per job")
    parser.add_argument("--backend", default="thread", help="thread (default), greenlet, ...")
    args = parser.parse_args()

    jobs, results = csp.Channel(name="jobs"), csp.Channel(name="results")
    job = functools.partial(throw, samples=args.samples)
    workers = [
        Map(jobs.reader(), results.writer(), functools.partial(job, worker=i))
        for i in range(args.workers)
    ]
    out = csp.Par(
        Count(jobs.writer(), stop=args.jobs),  # the farmer
        *workers,
        harvester(results.reader()),
        backend=args.backend,
    ).run()
    samples, hits, per_worker = out[-1]

    estimate = 4 * hits / samples
    print(f"{args.workers} workers did {args.jobs} jobs of {args.samples} points: {samples} points")
    print("jobs per worker: " + ", ".join(f"{i}={per_worker[i]}" for i in range(args.workers)))
    print(f"pi ~ {estimate:.5f} (error {abs(estimate - math.pi):.5f})")
    assert sum(per_worker.values()) == args.jobs
    assert samples == args.jobs * args.samples
    print("montecarlo farm: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
