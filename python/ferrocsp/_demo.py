"""``python -m ferrocsp demo``: two small networks that show what ferrocsp does.

1. Commstime (the classic occam benchmark): Prefix -> Delta -> Succ -> Prefix, with Delta also
   feeding a consumer; four channel communications per cycle, on OS threads.
2. A pipeline generate -> square -> accumulate, shut down by poison from the last stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ._alt import Alt, Timeout
from ._native import Channel, Reader, Writer
from ._par import Par
from ._process import process

__all__ = ["commstime", "main", "poison_pipeline"]


@process(name="prefix")
def _prefix(inp: Reader, out: Writer, first: int) -> None:
    out.write(first)
    while True:
        out.write(inp.read())


@process(name="delta")
def _delta(inp: Reader, out_a: Writer, out_b: Writer) -> None:
    while True:
        x = inp.read()
        out_a.write(x)
        out_b.write(x)


@process(name="succ")
def _succ(inp: Reader, out: Writer) -> None:
    while True:
        out.write(inp.read() + 1)


@process(name="consumer")
def _consumer(inp: Reader, cycles: int) -> float:
    inp.read()  # warm up: the network is running
    t0 = time.perf_counter()
    for _ in range(cycles):
        inp.read()
    elapsed = time.perf_counter() - t0
    # Ending by poison stops the whole ring: every process holding one of its channels ends.
    inp.poison()
    return elapsed


def commstime(cycles: int = 20_000) -> float:
    """Runs commstime for ``cycles`` cycles; returns microseconds per communication."""
    a, b, c, d = (Channel(name=n) for n in ("a", "b", "c", "d"))
    results = Par(
        _prefix(c.reader(), a.writer(), 0),
        _delta(a.reader(), b.writer(), d.writer()),
        _succ(b.reader(), c.writer()),
        _consumer(d.reader(), cycles),
    ).run()
    elapsed: float = results[-1]
    return elapsed / (4 * cycles) * 1e6


@process(name="generate")
def _generate(out: Writer) -> None:
    n = 0
    while True:
        out.write(n)
        n += 1


@process(name="square")
def _square(inp: Reader, out: Writer) -> None:
    for x in inp:
        out.write(x * x)


@process(name="accumulate")
def _accumulate(inp: Reader, limit: int) -> tuple[int, int]:
    total, count = 0, 0
    while True:
        # An Alt with a Timeout guard: a stalled pipeline would be noticed, not hang.
        guard, value = Alt(inp, Timeout(5.0)).pri_select()
        if isinstance(guard, Timeout):
            raise RuntimeError("pipeline stalled")
        total += value
        count += 1
        if total > limit:
            inp.poison()  # stop everything upstream
            return count, total


def poison_pipeline(limit: int = 10_000) -> tuple[int, int]:
    """Sums squares 0, 1, 4, ... until the sum passes ``limit``; returns (count, total)."""
    numbers, squares = Channel(name="numbers"), Channel(4, name="squares")
    results = Par(
        _generate(numbers.writer()),
        _square(numbers.reader(), squares.writer()),
        _accumulate(squares.reader(), limit),
    ).run()
    count, total = results[-1]
    return count, total


def main(out: Callable[[str], None] = print, cycles: int = 20_000) -> None:
    """Runs both demos, printing what happened."""
    out("ferrocsp demo")
    out(f"1. commstime on OS threads, {cycles} cycles (4 communications each):")
    out(f"   {commstime(cycles):.2f} us per communication")
    count, total = poison_pipeline()
    out("2. generate -> square -> accumulate, stopped by poison when the sum passed 10000:")
    out(f"   {count} squares summed to {total}; every process ended cleanly")
