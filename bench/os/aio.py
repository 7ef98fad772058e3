"""asyncio and greenlets on channels shared with OS processes: what a cooperative wait costs.

A child OS process echoes values over two shared rendezvous channels; the parent sends and
receives ``--n`` values (one round trip: two communications):

1. baseline: the parent is a plain thread (``write``/``read``: a futex wait in the caller);
2. asyncio: the parent is a coroutine (``awrite``/``aread``: a try on the loop's thread, then
   an operation greenlet that sleeps through the process's futex watcher and a future the
   watcher completes with ``call_soon_threadsafe``);
3. greenlet: the parent is a greenlet process (a wait switches to the scheduler's hub, which
   the watcher wakes).

Also the cost of the record that makes a blocked shared operation visible to ``csp.dump()``
(one ``_shared_wait`` pair per operation that may wait), against the baseline's cost per
communication. Prints microseconds per communication and ratios against the baseline (the
minimum of ``--runs`` runs each, interleaved).

Usage: ``python bench/os/aio.py [--n N] [--runs R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import ferrocsp as csp
from ferrocsp._native import _shared_wait


@csp.process(backend="os")
def echo(inp: csp.Reader, out: csp.Writer) -> None:
    with out:
        for v in inp:
            out.write(v)


def _pair() -> tuple[csp.Writer, csp.Reader, csp.Handle[None]]:
    to_child, back = csp.Channel(), csp.Channel()
    w, r = to_child.writer(), back.reader()
    h = csp.Spawn(echo(to_child.reader(), back.writer()))
    return w, r, h


def thread_round_trips(n: int) -> float:
    w, r, h = _pair()
    w.write(-1)
    r.read()  # the child is up
    t0 = time.perf_counter()
    for i in range(n):
        w.write(i)
        r.read()
    dt = time.perf_counter() - t0
    w.retire()
    h.join()
    return dt / (2 * n) * 1e6


def async_round_trips(n: int) -> float:
    w, r, h = _pair()

    async def main() -> float:
        await w.awrite(-1)
        await r.aread()
        t0 = time.perf_counter()
        for i in range(n):
            await w.awrite(i)
            await r.aread()
        return time.perf_counter() - t0

    dt = asyncio.run(main())
    w.retire()
    h.join()
    return dt / (2 * n) * 1e6


def greenlet_round_trips(n: int) -> float:
    w, r, h = _pair()
    took: list[float] = []

    @csp.process(backend="greenlet")
    def parent() -> None:
        w.write(-1)
        r.read()
        t0 = time.perf_counter()
        for i in range(n):
            w.write(i)
            r.read()
        took.append(time.perf_counter() - t0)

    csp.Par(parent()).run()
    w.retire()
    h.join()
    return took[0] / (2 * n) * 1e6


def record_pair(n: int) -> float:
    waits = [("data", "read")]
    t0 = time.perf_counter()
    for _ in range(n):
        _shared_wait(waits)
        _shared_wait(None)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    base, aio, glet, rec = [], [], [], []
    for _ in range(a.runs):
        base.append(thread_round_trips(a.n))
        aio.append(async_round_trips(a.n))
        glet.append(greenlet_round_trips(a.n))
        rec.append(record_pair(10 * a.n))
    b, x, g, r = min(base), min(aio), min(glet), min(rec)
    print(f"thread parent (baseline): {b:8.2f} us per communication")
    print(f"asyncio parent:           {x:8.2f} us per communication  ({x / b:.2f}x baseline)")
    print(f"greenlet parent:          {g:8.2f} us per communication  ({g / b:.2f}x baseline)")
    print(f"dump record per op:       {r:8.3f} us  ({r / b:.1%} of a baseline communication)")


if __name__ == "__main__":
    main()
