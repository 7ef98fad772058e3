"""Shutting a pipeline down: poison from the end, a failure in the middle, retire from the
start.

The pipeline is built from ``ferrocsp.builtins``::

    Generate --a--> Map(square) --b--> Filter(odd) --c--> Delta --d--> consumer
                                                            |
                                                            +--e--> Printer

1. **Poison.** The consumer takes what it needs and poisons its channel. Each process that
   touches a poisoned channel ends cleanly (result None) and poisons every channel it holds,
   so the poison spreads both ways until the whole network has ended: no process needs to
   know the others, nothing hangs.
2. **Failure.** A ``Map`` whose function raises on one value fails: its channels are
   poisoned so its neighbours stop, the rest of the network ends by poison as in 1, and
   ``Par`` raises an ``ExceptionGroup`` holding the one real error, noted with the name of
   the process that raised it.
3. **Retire.** With a finite source (``Count(stop=...)``) and ends, the stream ends
   politely: each process retires its ends when its input reaches end-of-stream, and every
   value written is delivered before that.

Run: ``python examples/poison_pipeline.py [--take N]``.
"""

from __future__ import annotations

import argparse
import io

import ferrocsp as csp
from ferrocsp.builtins import Count, Delta, Filter, Generate, Map, Printer, Sink


@csp.process
def consumer(cin: csp.Reader, n: int) -> list[int]:
    """Takes ``n`` values, then poisons: the whole network shuts down."""
    values = [cin.read() for _ in range(n)]
    cin.poison()
    return values


def square(x: int) -> int:
    return x * x


def odd(x: int) -> bool:
    return x % 2 == 1


def fragile(x: int) -> int:
    if x == 7:
        raise ValueError(f"cannot handle {x}")
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--take", type=int, default=8)
    args = parser.parse_args()

    print("1. poison from the end of the pipeline")
    a, b, c, d, e = (csp.Channel(name=n) for n in "abcde")
    log = io.StringIO()
    results = csp.Par(
        Generate(a),
        Map(a, b, square),
        Filter(b, c, odd),
        Delta(c, d, e, parallel=True),
        consumer(d.reader(), args.take),
        Printer(e, file=log, prefix="printer saw "),
    ).run()
    print(f"   consumer took {results[4]}")
    print(f"   the printer saw {len(log.getvalue().splitlines())} values before the poison")
    others = [r for i, r in enumerate(results) if i != 4]
    print(f"   the other five processes ended cleanly by poison (results {others})")
    poisoned = [ch.name for ch in (a, b, c, d, e) if ch.stats().poisoned]
    print(f"   poisoned channels: {', '.join(poisoned)}")
    assert results[4] == [(2 * k + 1) ** 2 for k in range(args.take)]
    assert len(poisoned) == 5

    print("2. a process that fails poisons its channels, and Par reports it")
    a, b, c = (csp.Channel(name=n) for n in "abc")
    try:
        csp.Par(Generate(a), Map(a, b, fragile), Sink(b)).run()
    except ExceptionGroup as group:
        [error] = group.exceptions
        print(f"   Par raised: {group.message}")
        print(f"   the error: {error!r}, {'; '.join(error.__notes__)}")
        assert isinstance(error, ValueError)
    else:
        raise AssertionError("the failure was not reported")
    assert all(ch.stats().poisoned for ch in (a, b))

    print("3. retire from the start: end-of-stream flows down the pipeline")
    a, b, c = (csp.Channel(name=n) for n in "abc")
    results = csp.Par(
        Count(a.writer(), stop=10),
        Map(a.reader(), b.writer(), square),
        Filter(b.reader(), c.writer(), odd),
        Sink(c.reader()),
    ).run()
    retired = [ch.name for ch in (a, b, c) if ch.stats().retired]
    print(f"   Sink counted {results[-1]} values; retired channels: {', '.join(retired)}")
    assert results[-1] == 5
    assert not any(ch.stats().poisoned for ch in (a, b, c))
    print("poison pipeline: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
